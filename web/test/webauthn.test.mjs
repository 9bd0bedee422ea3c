// js/webauthn.js (passkeys in the browser) and the MFA branch of login() in js/api.js,
// under node's test runner: base64url <-> ArrayBuffer, the server's JSON options turned
// into what navigator.credentials takes, a credential turned back into the JSON the
// server's finish takes, and a login answered with `mfa_required` finished by a code.
import { test } from 'node:test';
import assert from 'node:assert/strict';

const storage = new Map();
globalThis.localStorage = {
  getItem: (k) => (storage.has(k) ? storage.get(k) : null),
  setItem: (k, v) => storage.set(k, String(v)),
  removeItem: (k) => storage.delete(k),
};
const requests = [];
const user = { id: 'u1', username: 'ada', email: 'ada@example.com', display_name: 'Ada' };
globalThis.fetch = async (url, init) => {
  const body = init?.body ? JSON.parse(init.body) : null;
  requests.push({ url, body });
  const answer = url === '/auth/login'
    ? { mfa_required: true, mfa_token: 'mfa-1', methods: ['totp', 'recovery_code'] }
    : { access_token: 'a', refresh_token: 'r', token_type: 'Bearer', expires_in: 900, user };
  return new Response(JSON.stringify(answer), { status: 200, headers: { 'Content-Type': 'application/json' } });
};

const { b64urlToBuffer, bufferToB64url, creationOptions, requestOptions, credentialToJSON } = await import('../js/webauthn.js');
const { login, loginMfa, auth } = await import('../js/api.js');

const bytes = (buf) => Array.from(new Uint8Array(buf));

test('base64url round-trips every byte value, without padding', () => {
  const all = Uint8Array.from({ length: 256 }, (_, i) => i);
  const s = bufferToB64url(all.buffer);
  assert.doesNotMatch(s, /[+/=]/);
  assert.deepEqual(bytes(b64urlToBuffer(s)), Array.from(all));
  for (let n = 0; n < 5; n++) {
    const part = all.slice(250 - n);
    assert.deepEqual(bytes(b64urlToBuffer(bufferToB64url(part))), Array.from(part), `length ${part.length}`);
  }
  // A view into a larger buffer encodes only its own bytes.
  assert.equal(bufferToB64url(all.subarray(1, 4)), bufferToB64url(Uint8Array.of(1, 2, 3).buffer));
});

test('creation and request options: binary fields become ArrayBuffers, the rest is kept', () => {
  const json = {
    rp: { id: 'localhost', name: 'IntelliColab' },
    user: { id: 'AQID', name: 'ada', displayName: 'Ada' },
    challenge: '_-8',
    pubKeyCredParams: [{ type: 'public-key', alg: -7 }],
    excludeCredentials: [{ type: 'public-key', id: 'BAU' }],
    authenticatorSelection: { residentKey: 'required', userVerification: 'preferred' },
    attestation: 'none',
  };
  const o = creationOptions(json);
  assert.deepEqual(bytes(o.user.id), [1, 2, 3]);
  assert.equal(o.user.name, 'ada');
  assert.deepEqual(bytes(o.challenge), [0xff, 0xef]);
  assert.deepEqual(bytes(o.excludeCredentials[0].id), [4, 5]);
  assert.equal(o.excludeCredentials[0].type, 'public-key');
  assert.equal(o.authenticatorSelection.residentKey, 'required');
  const r = requestOptions({ challenge: 'AQID', rpId: 'localhost', allowCredentials: [], userVerification: 'preferred' });
  assert.deepEqual(bytes(r.challenge), [1, 2, 3]);
  assert.deepEqual(r.allowCredentials, []);
  assert.equal(r.rpId, 'localhost');
});

test('a credential becomes the JSON the finish endpoints take', () => {
  const buf = (...b) => Uint8Array.from(b).buffer;
  const created = credentialToJSON({
    id: 'CQo', rawId: buf(9, 10), type: 'public-key', authenticatorAttachment: 'platform',
    getClientExtensionResults: () => ({ credProps: { rk: true } }),
    response: { clientDataJSON: buf(1), attestationObject: buf(2, 3), getTransports: () => ['internal'] },
  });
  assert.deepEqual(created, {
    id: 'CQo', rawId: 'CQo', type: 'public-key', authenticatorAttachment: 'platform',
    clientExtensionResults: { credProps: { rk: true } },
    response: { clientDataJSON: 'AQ', attestationObject: 'AgM', transports: ['internal'] },
  });
  const asserted = credentialToJSON({
    id: 'CQo', rawId: buf(9, 10), type: 'public-key',
    response: { clientDataJSON: buf(1), authenticatorData: buf(5), signature: buf(6), userHandle: buf(7) },
  });
  assert.deepEqual(asserted.response, { clientDataJSON: 'AQ', authenticatorData: 'BQ', signature: 'Bg', userHandle: 'Bw' });
  assert.equal(asserted.authenticatorAttachment, null);
  assert.deepEqual(asserted.clientExtensionResults, {});
});

test('a login with two-factor on returns the MFA step; the code finishes it', async () => {
  auth.clear();
  const result = await login({ login: 'ada', password: 'pw' });
  assert.deepEqual(result, { mfa: { token: 'mfa-1', methods: ['totp', 'recovery_code'] } });
  assert.equal(auth.loggedIn, false, 'no tokens before the second step');
  await loginMfa({ mfa_token: 'mfa-1', code: '123456' });
  assert.deepEqual(requests.at(-1), { url: '/auth/login/mfa', body: { mfa_token: 'mfa-1', code: '123456' } });
  assert.equal(auth.loggedIn, true);
  auth.clear();
  await loginMfa({ mfa_token: 'mfa-2', recovery_code: 'abcd-efgh' });
  assert.deepEqual(requests.at(-1).body, { mfa_token: 'mfa-2', recovery_code: 'abcd-efgh' });
  auth.clear();
});
