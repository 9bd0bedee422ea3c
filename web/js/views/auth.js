// Log in and register forms.
import { h, field, replace, showFormErrors, clearFormErrors } from '../dom.js';
import { login, loginMfa, register } from '../api.js';
import { loginWithPasskey, passkeysSupported, passkeyErrorMessage } from '../webauthn.js';

export function mountLogin(main, { notice } = {}) {
  const form = h('form', { class: 'card auth-card', testid: 'login-form', novalidate: true, 'aria-labelledby': 'login-title' },
    h('h1', { id: 'login-title', tabindex: '-1', text: 'Log in' }),
    notice ? h('p', { class: 'notice', role: 'status', testid: 'auth-notice', text: notice }) : null,
    h('p', { class: 'form-error', role: 'alert', tabindex: '-1', hidden: true, testid: 'form-error' }),
    field({ label: 'Username or email', name: 'login', autocomplete: 'username', required: true, testid: 'login-username', attrs: { 'data-autofocus': '' } }),
    field({ label: 'Password', name: 'password', type: 'password', autocomplete: 'current-password', required: true, testid: 'login-password' }),
    h('button', { type: 'submit', class: 'btn btn-primary btn-block', testid: 'login-submit', text: 'Log in' }),
    passkeyButton(),
    h('p', { class: 'muted' }, h('a', { href: '#/forgot-password', testid: 'goto-forgot-password', text: 'Forgot your password?' })),
    h('p', { class: 'muted' }, 'New here? ', h('a', { href: '#/register', testid: 'goto-register', text: 'Create an account' })));
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    clearFormErrors(form);
    const data = Object.fromEntries(new FormData(form));
    if (!data.login || !data.password) {
      showFormErrors(form, { humanMessage: () => 'Enter your username (or email) and password.', errors: [] });
      return;
    }
    const btn = form.querySelector('button[type=submit]');
    btn.disabled = true;
    btn.textContent = 'Logging in…';
    try {
      const result = await login({ login: data.login.trim(), password: data.password });
      if (result?.mfa) { mfaStep(form, result.mfa); return; }
      // The app switches to the room list on the auth "login" event.
    } catch (err) {
      if (err.status === 401) err.detail = err.detail || 'Wrong username or password.';
      showFormErrors(form, err);
      btn.disabled = false;
      btn.textContent = 'Log in';
    }
  });
  main.appendChild(h('div', { class: 'auth-page' }, intro(), form));
}

/** "Log in with a passkey": passwordless, and no second step (the passkey is both). */
function passkeyButton() {
  if (!passkeysSupported()) return null;
  const btn = h('button', { type: 'button', class: 'btn btn-block', testid: 'login-passkey', text: 'Log in with a passkey' });
  btn.addEventListener('click', async () => {
    const form = btn.closest('form');
    clearFormErrors(form);
    btn.disabled = true;
    try {
      await loginWithPasskey();
    } catch (err) {
      showFormErrors(form, { errors: [], humanMessage: () => (err?.code === 'passkey_clone_detected' || err?.code === 'invalid_passkey'
        ? `${err.detail || 'This passkey was refused.'}`
        : passkeyErrorMessage(err)) });
      btn.disabled = false;
    }
  });
  return btn;
}

/**
 * The second step when the account has two-factor login on: a code from the
 * authenticator app, or one of the recovery codes (API.md v1.1, `mfa_token` valid 5 min).
 */
function mfaStep(form, mfa) {
  let recovery = false;
  const input = () => field(recovery
    ? { label: 'Recovery code', name: 'code', autocomplete: 'off', required: true, testid: 'mfa-code',
      hint: 'One of the codes you saved when you set up two-factor login. Each works once.', attrs: { 'data-autofocus': '', autocapitalize: 'none', spellcheck: 'false' } }
    : { label: 'Code from your authenticator app', name: 'code', autocomplete: 'one-time-code', required: true, testid: 'mfa-code',
      hint: 'The 6 digits your app shows for IntelliColab.', attrs: { 'data-autofocus': '', inputmode: 'numeric', maxlength: '6', pattern: '[0-9]*' } });
  const slot = h('div', {}, input());
  const toggle = h('button', { type: 'button', class: 'btn btn-link', testid: 'mfa-use-recovery', text: 'Use a recovery code instead' });
  const submit = h('button', { type: 'submit', class: 'btn btn-primary btn-block', testid: 'mfa-submit', text: 'Verify' });
  const step = h('form', { class: 'card auth-card', testid: 'mfa-form', novalidate: true, 'aria-labelledby': 'mfa-title' },
    h('h1', { id: 'mfa-title', tabindex: '-1', text: 'Two-factor login' }),
    h('p', { class: 'form-error', role: 'alert', tabindex: '-1', hidden: true, testid: 'form-error' }),
    slot, submit, toggle,
    h('p', { class: 'muted' }, h('a', { href: '#/login', testid: 'mfa-cancel', text: 'Start again' })));
  toggle.addEventListener('click', () => {
    recovery = !recovery;
    replace(slot, input());
    toggle.textContent = recovery ? 'Use a code from the app instead' : 'Use a recovery code instead';
    slot.querySelector('input').focus();
  });
  step.addEventListener('submit', async (e) => {
    e.preventDefault();
    clearFormErrors(step);
    const value = String(new FormData(step).get('code') || '').replace(/\s+/g, '');
    if (!value) { showFormErrors(step, { errors: [{ field: 'code', message: 'Enter the code.' }], humanMessage: () => 'The code is missing.' }); return; }
    submit.disabled = true;
    try {
      await loginMfa(recovery ? { mfa_token: mfa.token, recovery_code: value } : { mfa_token: mfa.token, code: value });
    } catch (err) {
      if (err.code === 'invalid_code') err.detail = recovery ? 'That recovery code is not valid or was already used.' : 'That code is not valid. Wait for the next one and try again.';
      if (err.status === 401 && err.code !== 'invalid_code') err.detail = 'This login took too long. Start again.';
      showFormErrors(step, err);
      submit.disabled = false;
    }
  });
  form.replaceWith(step);
  step.querySelector('input').focus();
}

export function mountRegister(main) {
  const form = h('form', { class: 'card auth-card', testid: 'register-form', novalidate: true, 'aria-labelledby': 'register-title' },
    h('h1', { id: 'register-title', tabindex: '-1', text: 'Create your account' }),
    h('p', { class: 'form-error', role: 'alert', tabindex: '-1', hidden: true, testid: 'form-error' }),
    field({ label: 'Username', name: 'username', autocomplete: 'username', required: true, testid: 'register-username',
      hint: '3–32 characters: letters, digits, _ and .', attrs: { 'data-autofocus': '', minlength: '3', maxlength: '32', autocapitalize: 'none', spellcheck: 'false' } }),
    field({ label: 'Display name (optional)', name: 'display_name', autocomplete: 'name', testid: 'register-display-name' }),
    field({ label: 'Email', name: 'email', type: 'email', autocomplete: 'email', required: true, testid: 'register-email' }),
    field({ label: 'Password', name: 'password', type: 'password', autocomplete: 'new-password', required: true, testid: 'register-password',
      hint: 'At least 8 characters; avoid common passwords.', attrs: { minlength: '8', maxlength: '128' } }),
    h('button', { type: 'submit', class: 'btn btn-primary btn-block', testid: 'register-submit', text: 'Create account' }),
    h('p', { class: 'muted' }, 'Already have an account? ', h('a', { href: '#/login', testid: 'goto-login', text: 'Log in' })));
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    clearFormErrors(form);
    const data = Object.fromEntries(new FormData(form));
    const local = [];
    if (!data.username || data.username.trim().length < 3) local.push({ field: 'username', message: 'Choose a username of at least 3 characters.' });
    if (!data.email || !data.email.includes('@')) local.push({ field: 'email', message: 'Enter a valid email address.' });
    if (!data.password || data.password.length < 8) local.push({ field: 'password', message: 'Use at least 8 characters.' });
    if (local.length) {
      showFormErrors(form, { errors: local, humanMessage: () => 'Please fix the highlighted fields.' });
      return;
    }
    const btn = form.querySelector('button[type=submit]');
    btn.disabled = true;
    btn.textContent = 'Creating account…';
    try {
      await register({
        username: data.username.trim(),
        email: data.email.trim(),
        password: data.password,
        display_name: data.display_name?.trim() || undefined,
      });
    } catch (err) {
      if (err.code === 'username_taken') err.errors = [{ field: 'username', message: 'That username is taken.' }, ...err.errors];
      if (err.code === 'email_taken') err.errors = [{ field: 'email', message: 'An account with that email already exists.' }, ...err.errors];
      showFormErrors(form, err);
      btn.disabled = false;
      btn.textContent = 'Create account';
    }
  });
  main.appendChild(h('div', { class: 'auth-page' }, intro(), form));
}

function intro() {
  return h('section', { class: 'auth-intro', 'aria-label': 'About IntelliColab' },
    h('p', { class: 'auth-tagline', text: 'Rooms, direct messages and people — live.' }),
    h('ul', { class: 'auth-points' },
      h('li', { text: 'Messages arrive instantly and nothing is lost when your connection drops.' }),
      h('li', { text: 'Public and private rooms, direct messages, follows and friends.' }),
      h('li', { text: 'Works on your phone, with a keyboard and with a screen reader.' })));
}
