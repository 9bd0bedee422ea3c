// Passkeys in the browser: the WebAuthn options the server sends are JSON (binary fields as
// base64url strings, API.md v1.1); navigator.credentials wants ArrayBuffers, and the
// credential it returns goes back as JSON. Plain functions, unit-tested in node
// (test/webauthn.test.mjs); the ceremonies themselves need a browser.
import { api, auth } from './api.js';

/** base64url (no padding) → ArrayBuffer. */
export function b64urlToBuffer(s) {
  const b64 = String(s).replace(/-/g, '+').replace(/_/g, '/');
  const bin = atob(b64 + '='.repeat((4 - (b64.length % 4)) % 4));
  const bytes = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
  return bytes.buffer;
}

/** ArrayBuffer or view → base64url without padding. */
export function bufferToB64url(buf) {
  const bytes = buf instanceof ArrayBuffer ? new Uint8Array(buf) : new Uint8Array(buf.buffer, buf.byteOffset, buf.byteLength);
  let bin = '';
  for (let i = 0; i < bytes.length; i++) bin += String.fromCharCode(bytes[i]);
  return btoa(bin).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
}

const descriptors = (list) => (list || []).map((d) => ({ ...d, id: b64urlToBuffer(d.id) }));

/** `POST /auth/passkeys/register/start`'s JSON → `PublicKeyCredentialCreationOptions`. */
export function creationOptions(json) {
  return {
    ...json,
    challenge: b64urlToBuffer(json.challenge),
    user: { ...json.user, id: b64urlToBuffer(json.user.id) },
    excludeCredentials: descriptors(json.excludeCredentials),
  };
}

/** `POST /auth/passkeys/login/start`'s JSON → `PublicKeyCredentialRequestOptions`. */
export function requestOptions(json) {
  return { ...json, challenge: b64urlToBuffer(json.challenge), allowCredentials: descriptors(json.allowCredentials) };
}

/** A `PublicKeyCredential` (either ceremony) → the JSON `…/finish` takes (as `toJSON()`). */
export function credentialToJSON(cred) {
  const r = cred.response;
  const response = { clientDataJSON: bufferToB64url(r.clientDataJSON) };
  if (r.attestationObject) {
    response.attestationObject = bufferToB64url(r.attestationObject);
    if (typeof r.getTransports === 'function') response.transports = r.getTransports();
  }
  if (r.authenticatorData) response.authenticatorData = bufferToB64url(r.authenticatorData);
  if (r.signature) response.signature = bufferToB64url(r.signature);
  if (r.userHandle) response.userHandle = bufferToB64url(r.userHandle);
  return {
    id: cred.id,
    rawId: bufferToB64url(cred.rawId),
    type: cred.type,
    authenticatorAttachment: cred.authenticatorAttachment ?? null,
    clientExtensionResults: typeof cred.getClientExtensionResults === 'function' ? cred.getClientExtensionResults() : {},
    response,
  };
}

/** Whether this browser can use passkeys at all. */
export const passkeysSupported = () => typeof window !== 'undefined' && !!window.PublicKeyCredential && !!navigator.credentials;

/** Registers a passkey for the logged-in user; resolves with `{id, name, created_at}`. */
export async function registerPasskey(name) {
  const options = await api('/auth/passkeys/register/start', { method: 'POST', body: {} });
  const cred = await navigator.credentials.create({ publicKey: creationOptions(options) });
  const body = credentialToJSON(cred);
  if (name) body.name = name;
  return api('/auth/passkeys/register/finish', { method: 'POST', body });
}

/** Passwordless login with a passkey this device (or a nearby phone) holds. */
export async function loginWithPasskey() {
  const options = await api('/auth/passkeys/login/start', { method: 'POST', body: {}, auth: false });
  const cred = await navigator.credentials.get({ publicKey: requestOptions(options), mediation: 'optional' });
  const tokens = await api('/auth/passkeys/login/finish', { method: 'POST', body: credentialToJSON(cred), auth: false });
  auth.accept(tokens);
  if (!auth.user) auth.user = await api('/auth/me');
  return auth.user;
}

/** A sentence for a failed ceremony: the browser's DOMExceptions name what happened. */
export function passkeyErrorMessage(err) {
  if (err?.humanMessage) return err.humanMessage();
  switch (err?.name) {
    case 'NotAllowedError': return 'The passkey request was cancelled or timed out.';
    case 'InvalidStateError': return 'This device already holds a passkey for your account.';
    case 'SecurityError': return 'Passkeys need the app opened at its configured address (a domain name such as localhost, not an IP address).';
    case 'NotSupportedError': return 'This browser or device cannot create a suitable passkey.';
    default: return 'The passkey could not be used.';
  }
}
