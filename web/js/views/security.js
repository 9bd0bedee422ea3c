// The Security page (`#/security`, API.md "Auth additions — v1.1"): email address and its
// verification, two-factor login with an authenticator app (TOTP: QR code, recovery codes
// shown once), passkeys, and deleting the account. Also the "verify your email" banner.
import { h, field, replace, toast, announce, formatDate, showFormErrors, clearFormErrors } from '../dom.js';
import { api, auth } from '../api.js';
import { emailSection } from './account.js';
import { registerPasskey, passkeysSupported, passkeyErrorMessage } from '../webauthn.js';
// qrcode-generator 2.0.4, vendored (web/vendor/qrcode-generator/README.md).
import qrcode from '../../vendor/qrcode-generator/qrcode.mjs';

const message = (err, fallback) => (err?.humanMessage ? err.humanMessage() : fallback);

/** The account as `GET /auth/me` says now (`email_verified`, `mfa_enabled` change here). */
async function reloadMe() {
  const me = await api('/auth/me');
  auth.user = { ...(auth.user || {}), ...me };
  refreshVerifyBanner();
  return auth.user;
}

// ---- "verify your email" banner ---------------------------------------------------------

let banner = null;

/** Shows or hides the banner from what `auth.user` says; called at each navigation. */
export function refreshVerifyBanner() {
  const show = auth.loggedIn && auth.user && auth.user.email_verified === false;
  if (!show) { banner?.remove(); banner = null; return; }
  if (banner) return;
  const resend = h('button', { type: 'button', class: 'btn btn-small', testid: 'verify-resend', text: 'Send the link again' });
  banner = h('div', { class: 'banner', role: 'region', 'aria-label': 'Email not verified', testid: 'verify-banner' },
    h('span', { text: `Please verify your email address${auth.user.email ? ` (${auth.user.email})` : ''}: open the link we mailed you.` }),
    resend);
  resend.addEventListener('click', async () => {
    resend.disabled = true;
    try {
      await api('/auth/email/verify/request', { method: 'POST' });
      toast('A new verification link is on its way.');
      announce('A new verification link is on its way.');
    } catch (err) {
      toast(message(err, 'Could not send the link.'), 'error');
    } finally {
      resend.disabled = false;
    }
  });
  document.getElementById('main')?.insertAdjacentElement('beforebegin', banner);
}

// ---- the page -------------------------------------------------------------------------

export function mountSecurity(main) {
  const totp = h('section', { class: 'card', 'aria-labelledby': 'totp-h', testid: 'totp-section' });
  const passkeys = h('section', { class: 'card', 'aria-labelledby': 'passkeys-h', testid: 'passkeys-section' });
  main.appendChild(h('div', { class: 'page' },
    h('h1', { tabindex: '-1', text: 'Security' }),
    emailSection(),
    totp,
    passkeys,
    deleteSection()));
  let disposed = false;
  reloadMe()
    .then((me) => { if (!disposed) renderTotp(totp, me); })
    .catch((err) => replace(totp, h('p', { role: 'alert', text: message(err, 'Could not load your account.') })));
  renderPasskeys(passkeys);
  return () => { disposed = true; };
}

// ---- two-factor (TOTP) ----------------------------------------------------------------

function renderTotp(section, me) {
  const heading = h('h2', { id: 'totp-h', text: 'Two-factor login' });
  if (me.mfa_enabled) {
    replace(section, heading,
      h('p', { testid: 'totp-status', text: 'On: logging in with your password also asks for a code from your authenticator app.' }),
      disableForm(section));
  } else {
    const start = h('button', { type: 'button', class: 'btn btn-primary', testid: 'totp-start', text: 'Set up an authenticator app' });
    start.addEventListener('click', () => replace(section, heading, setupForm(section)));
    replace(section, heading,
      h('p', { testid: 'totp-status', text: 'Off. With an authenticator app, a stolen password is not enough to log in as you.' }),
      start);
  }
}

/** Step 1: the current password → a secret, shown as a QR code and as text. */
function setupForm(section) {
  const form = h('form', { novalidate: true, testid: 'totp-setup-form' },
    h('p', { class: 'form-error', role: 'alert', tabindex: '-1', hidden: true }),
    field({ label: 'Current password', name: 'current_password', type: 'password', autocomplete: 'current-password', required: true, testid: 'totp-password', attrs: { 'data-autofocus': '' } }),
    h('button', { type: 'submit', class: 'btn btn-primary', testid: 'totp-setup-submit', text: 'Continue' }));
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    clearFormErrors(form);
    const password = String(new FormData(form).get('current_password') || '');
    if (!password) { showFormErrors(form, { errors: [{ field: 'current_password', message: 'Enter your current password.' }], humanMessage: () => 'The password is missing.' }); return; }
    try {
      const setup = await api('/auth/mfa/totp/setup', { method: 'POST', body: { current_password: password } });
      form.replaceWith(enableForm(section, setup));
    } catch (err) {
      form.querySelector('[name="current_password"]').value = '';
      if (err.code === 'invalid_credentials') err.detail = 'Your current password is incorrect.';
      showFormErrors(form, err);
    }
  });
  setTimeout(() => form.querySelector('input')?.focus(), 0);
  return form;
}

/** An `otpauth://` URI as an SVG QR code (one path; no markup strings, no inline style). */
export function qrSvg(text) {
  const qr = qrcode(0, 'M');
  qr.addData(text);
  qr.make();
  const n = qr.getModuleCount();
  const quiet = 4;
  let d = '';
  for (let r = 0; r < n; r++) for (let c = 0; c < n; c++) if (qr.isDark(r, c)) d += `M${c + quiet},${r + quiet}h1v1h-1z`;
  const ns = 'http://www.w3.org/2000/svg';
  const svg = document.createElementNS(ns, 'svg');
  const size = n + 2 * quiet;
  svg.setAttribute('viewBox', `0 0 ${size} ${size}`);
  svg.setAttribute('width', '200');
  svg.setAttribute('height', '200');
  svg.setAttribute('role', 'img');
  svg.setAttribute('aria-label', 'QR code for your authenticator app');
  svg.setAttribute('shape-rendering', 'crispEdges');
  svg.setAttribute('class', 'qr');
  const bg = document.createElementNS(ns, 'rect');
  bg.setAttribute('width', String(size));
  bg.setAttribute('height', String(size));
  bg.setAttribute('fill', '#fff');
  const path = document.createElementNS(ns, 'path');
  path.setAttribute('d', d);
  path.setAttribute('fill', '#000');
  svg.append(bg, path);
  return svg;
}

/** Step 2: scan, then enter a code → 10 recovery codes, shown once. */
function enableForm(section, setup) {
  const form = h('form', { novalidate: true, testid: 'totp-enable-form' },
    h('p', { text: 'Scan this code with your authenticator app (or enter the key by hand), then type the 6-digit code it shows.' }),
    h('div', { class: 'qr-box', testid: 'totp-qr' }, qrSvg(setup.otpauth_uri)),
    h('p', { class: 'muted small' }, 'Key: ', h('code', { class: 'secret', testid: 'totp-secret', text: setup.secret })),
    h('p', { class: 'form-error', role: 'alert', tabindex: '-1', hidden: true }),
    field({ label: 'Code from the app', name: 'code', autocomplete: 'one-time-code', required: true, testid: 'totp-code', attrs: { inputmode: 'numeric', maxlength: '6' } }),
    h('button', { type: 'submit', class: 'btn btn-primary', testid: 'totp-enable-submit', text: 'Turn on two-factor login' }));
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    clearFormErrors(form);
    const code = String(new FormData(form).get('code') || '').replace(/\s+/g, '');
    if (!/^\d{6}$/.test(code)) { showFormErrors(form, { errors: [{ field: 'code', message: 'Enter the 6 digits the app shows.' }], humanMessage: () => 'The code needs 6 digits.' }); return; }
    try {
      const { recovery_codes: codes } = await api('/auth/mfa/totp/enable', { method: 'POST', body: { code } });
      form.replaceWith(recoveryCodes(section, codes || []));
      announce('Two-factor login is on. Save your recovery codes.');
    } catch (err) {
      if (err.code === 'invalid_code') err.detail = 'That code is not valid. Check the clock of your device and try the next code.';
      showFormErrors(form, err);
    }
  });
  setTimeout(() => form.querySelector('input')?.focus(), 0);
  return form;
}

/** The recovery codes, once: copy, download, then done. */
function recoveryCodes(section, codes) {
  const text = `IntelliColab recovery codes (each works once)\n\n${codes.join('\n')}\n`;
  const copy = h('button', { type: 'button', class: 'btn', testid: 'recovery-copy', text: 'Copy' });
  const download = h('button', { type: 'button', class: 'btn', testid: 'recovery-download', text: 'Download' });
  const done = h('button', { type: 'button', class: 'btn btn-primary', testid: 'recovery-done', text: 'I have saved them' });
  copy.addEventListener('click', async () => {
    try { await navigator.clipboard.writeText(text); toast('Recovery codes copied.'); } catch { toast('Could not copy: select the codes and copy them.', 'error'); }
  });
  download.addEventListener('click', () => {
    const url = URL.createObjectURL(new Blob([text], { type: 'text/plain' }));
    const a = h('a', { href: url, download: 'intellicolab-recovery-codes.txt' });
    document.body.appendChild(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 1000);
  });
  done.addEventListener('click', async () => {
    try { renderTotp(section, await reloadMe()); } catch { renderTotp(section, { ...auth.user, mfa_enabled: true }); }
    section.querySelector('h2')?.focus?.();
  });
  const box = h('div', { testid: 'recovery-codes-box' },
    h('p', { class: 'notice', role: 'status', text: 'Two-factor login is on. If you lose your device, these codes let you log in — each once. Save them now: they are not shown again.' }),
    h('ol', { class: 'recovery-codes', testid: 'recovery-codes' }, codes.map((c) => h('li', {}, h('code', { text: c })))),
    h('div', { class: 'actions' }, copy, download, done));
  setTimeout(() => done.focus(), 0);
  return box;
}

function disableForm(section) {
  const form = h('form', { novalidate: true, testid: 'totp-disable-form' },
    h('h3', { text: 'Turn off two-factor login' }),
    h('p', { class: 'form-error', role: 'alert', tabindex: '-1', hidden: true }),
    field({ label: 'Current password', name: 'current_password', type: 'password', autocomplete: 'current-password', required: true, testid: 'totp-disable-password' }),
    field({ label: 'Code from the app, or a recovery code', name: 'code', autocomplete: 'one-time-code', required: true, testid: 'totp-disable-code' }),
    h('button', { type: 'submit', class: 'btn btn-danger-outline', testid: 'totp-disable-submit', text: 'Turn off' }));
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    clearFormErrors(form);
    const data = Object.fromEntries(new FormData(form));
    const code = String(data.code || '').replace(/\s+/g, '');
    if (!data.current_password || !code) { showFormErrors(form, { errors: [], humanMessage: () => 'Enter your password and a code.' }); return; }
    try {
      await api('/auth/mfa/totp/disable', { method: 'POST', body: { current_password: data.current_password, code } });
      toast('Two-factor login is off.');
      renderTotp(section, await reloadMe());
    } catch (err) {
      form.querySelector('[name="current_password"]').value = '';
      if (err.code === 'invalid_credentials') err.detail = 'Your current password is incorrect.';
      if (err.code === 'invalid_code') err.detail = 'That code is not valid.';
      showFormErrors(form, err);
    }
  });
  return form;
}

// ---- passkeys -------------------------------------------------------------------------

function renderPasskeys(section) {
  const list = h('ul', { class: 'card-list', testid: 'passkey-list', 'aria-label': 'Your passkeys', 'aria-busy': 'true' });
  const form = h('form', { novalidate: true, testid: 'passkey-add-form', class: 'inline-form' },
    h('p', { class: 'form-error', role: 'alert', tabindex: '-1', hidden: true }),
    field({ label: 'Name for the new passkey (optional)', name: 'name', testid: 'passkey-name', hint: 'e.g. "Laptop" or "Phone", to tell them apart.', attrs: { maxlength: '64' } }),
    h('button', { type: 'submit', class: 'btn btn-primary', testid: 'passkey-add', text: 'Add a passkey' }));
  replace(section,
    h('h2', { id: 'passkeys-h', text: 'Passkeys' }),
    h('p', { class: 'muted', text: 'Log in without a password, with your fingerprint, face, device PIN or security key. A passkey login needs no two-factor code.' }),
    list,
    passkeysSupported() ? form : h('p', { class: 'notice', text: 'This browser cannot use passkeys.' }));

  const load = async () => {
    try {
      const { items = [] } = (await api('/auth/passkeys')) || {};
      replace(list, items.length ? items.map((p) => passkeyRow(p, load)) : h('li', { class: 'muted', testid: 'passkey-none', text: 'No passkeys yet.' }));
    } catch (err) {
      replace(list, h('li', { role: 'alert', text: message(err, 'Could not load your passkeys.') }));
    } finally {
      list.removeAttribute('aria-busy');
    }
  };
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    clearFormErrors(form);
    const btn = form.querySelector('button[type=submit]');
    btn.disabled = true;
    try {
      const created = await registerPasskey(String(new FormData(form).get('name') || '').trim());
      form.reset();
      toast(`Passkey "${created.name}" added.`);
      announce(`Passkey ${created.name} added.`);
      await load();
    } catch (err) {
      showFormErrors(form, { errors: err?.errors || [], humanMessage: () => passkeyErrorMessage(err) });
    } finally {
      btn.disabled = false;
    }
  });
  load();
}

function passkeyRow(p, reload) {
  const remove = h('button', { type: 'button', class: 'btn btn-small btn-danger-outline', testid: 'passkey-delete', text: 'Remove',
    'aria-label': `Remove passkey ${p.name}` });
  remove.addEventListener('click', async () => {
    if (!window.confirm(`Remove the passkey "${p.name}"? It will no longer log you in.`)) return;
    remove.disabled = true;
    try {
      await api(`/auth/passkeys/${encodeURIComponent(p.id)}`, { method: 'DELETE' });
      toast('Passkey removed.');
      await reload();
    } catch (err) {
      remove.disabled = false;
      toast(message(err, 'Could not remove the passkey.'), 'error');
    }
  });
  return h('li', { class: 'card-row', testid: 'passkey-item', 'data-passkey-id': p.id },
    h('div', { class: 'card-row-main' },
      h('strong', { text: p.name }),
      h('p', { class: 'muted small', text: `added ${formatDate(p.created_at)} · ${p.last_used_at ? `last used ${formatDate(p.last_used_at)}` : 'never used'}` })),
    remove);
}

// ---- delete the account ---------------------------------------------------------------

function deleteSection() {
  const form = h('form', { novalidate: true, testid: 'delete-account-form' },
    h('p', { class: 'form-error', role: 'alert', tabindex: '-1', hidden: true }),
    field({ label: 'Current password', name: 'current_password', type: 'password', autocomplete: 'current-password', required: true, testid: 'delete-password' }),
    h('div', { class: 'field checkbox' },
      h('label', {}, h('input', { type: 'checkbox', name: 'confirm', value: 'yes', testid: 'delete-confirm' }),
        ' I understand: my profile, follows, memberships and files go; my messages stay, shown as from a deleted user.')),
    h('button', { type: 'submit', class: 'btn btn-danger', testid: 'delete-submit', text: 'Delete my account' }));
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    clearFormErrors(form);
    const data = Object.fromEntries(new FormData(form));
    const local = [];
    if (!data.current_password) local.push({ field: 'current_password', message: 'Enter your current password.' });
    if (data.confirm !== 'yes') local.push({ field: 'confirm', message: 'Tick the box to confirm.' });
    if (local.length) { showFormErrors(form, { errors: local, humanMessage: () => 'Please confirm with your password.' }); return; }
    const btn = form.querySelector('button[type=submit]');
    btn.disabled = true;
    try {
      await api('/auth/me', { method: 'DELETE', body: { current_password: data.current_password } });
    } catch (err) {
      btn.disabled = false;
      form.querySelector('[name="current_password"]').value = '';
      if (err.code === 'invalid_credentials') err.detail = 'Your current password is incorrect.';
      showFormErrors(form, err);
      return;
    }
    // Every session of the account ended with it.
    auth._endSession('account_deleted');
  });
  return h('section', { class: 'card danger-zone', 'aria-labelledby': 'delete-h', testid: 'delete-account-section' },
    h('h2', { id: 'delete-h', text: 'Delete your account' }),
    h('p', { class: 'muted', text: 'This cannot be undone. Your username and email become free for others after 30 days.' }),
    form);
}
