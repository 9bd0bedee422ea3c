// Account: the email section of the profile page (change with the current password and a
// link mailed to the new address), and the pages of the mailed links — confirm an email
// change, reset a forgotten password — which work logged in or out.
import { h, field, replace, showFormErrors, clearFormErrors, announce } from '../dom.js';
import { api, auth, rememberDevice, requestEmailChange, confirmEmail, requestPasswordReset, confirmPasswordReset } from '../api.js';

const message = (err, fallback) => (err?.humanMessage ? err.humanMessage() : fallback);

/** The "Email" card of `#/me`: the current address and the change form. */
export function emailSection() {
  const current = h('p', { testid: 'current-email' }, h('span', { class: 'muted', text: 'Loading…' }));
  const status = h('p', { class: 'notice', role: 'status', testid: 'email-change-status', hidden: true });
  const form = h('form', { testid: 'email-form', novalidate: true, 'aria-labelledby': 'email-change-h' },
    h('h3', { id: 'email-change-h', text: 'Change your email' }),
    h('p', { class: 'form-error', role: 'alert', tabindex: '-1', hidden: true, testid: 'email-form-error' }),
    field({ label: 'New email', name: 'email', type: 'email', autocomplete: 'email', required: true, testid: 'email-new',
      hint: 'We mail a confirmation link to this address; your email changes once you open it.', attrs: { maxlength: '254', autocapitalize: 'none', spellcheck: 'false' } }),
    field({ label: 'Current password', name: 'current_password', type: 'password', autocomplete: 'current-password', required: true, testid: 'email-password' }),
    h('button', { type: 'submit', class: 'btn btn-primary', testid: 'email-submit', text: 'Send confirmation link' }));
  const section = h('section', { class: 'card', 'aria-labelledby': 'email-h', testid: 'email-section' },
    h('h2', { id: 'email-h', text: 'Email' }), current, status, form);

  const showCurrent = (email) => replace(current, 'Your email address: ', h('strong', { testid: 'current-email-value', text: email }));
  const load = async () => {
    try {
      const me = await api('/auth/me');
      if (auth.user) auth.user.email = me.email;
      rememberDevice(me); // a login by the new address finds this account's device token
      showCurrent(me.email);
    } catch (err) {
      replace(current, h('span', { role: 'alert', text: message(err, 'Could not load your email address.') }));
    }
  };

  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    clearFormErrors(form);
    status.hidden = true;
    const data = Object.fromEntries(new FormData(form));
    const email = (data.email || '').trim();
    const local = [];
    if (!email || !email.includes('@')) local.push({ field: 'email', message: 'Enter a valid email address.' });
    if (!data.current_password) local.push({ field: 'current_password', message: 'Enter your current password.' });
    if (local.length) { showFormErrors(form, { errors: local, humanMessage: () => 'Please fix the highlighted fields.' }); return; }
    const btn = form.querySelector('button[type=submit]');
    btn.disabled = true;
    btn.textContent = 'Sending…';
    try {
      await requestEmailChange({ email, current_password: data.current_password });
      form.reset();
      status.textContent = `We sent a confirmation link to ${email}. Open it to finish the change; until then your email stays ${auth.user?.email || 'as it is'}.`;
      status.hidden = false;
      announce(status.textContent);
    } catch (err) {
      // The password field is never kept filled after an answer.
      form.querySelector('[name="current_password"]').value = '';
      if (err.code === 'invalid_credentials') {
        err.errors = [{ field: 'current_password', message: 'That is not your current password.' }, ...err.errors];
        err.detail = 'Your current password is incorrect.';
      } else if (err.code === 'email_taken') {
        err.errors = [{ field: 'email', message: 'Another account uses this address.' }, ...err.errors];
      }
      showFormErrors(form, err);
    } finally {
      btn.disabled = false;
      btn.textContent = 'Send confirmation link';
    }
  });

  load();
  return section;
}

/** A token form for when the page was opened without one (the mail also gives it as text). */
function tokenField(testid) {
  return field({ label: 'Token from the email', name: 'token', required: true, testid, attrs: { autocomplete: 'off', autocapitalize: 'none', spellcheck: 'false' } });
}

function backLink() {
  return auth.loggedIn
    ? h('a', { href: '#/me', testid: 'goto-profile', text: 'Go to your profile' })
    : h('a', { href: '#/login', testid: 'goto-login', text: 'Log in' });
}

/** `#/confirm-email?token=…`: confirms at once when the link carried a token. */
export function mountConfirmEmail(main, { token } = {}) {
  const body = h('div', { testid: 'confirm-email-result' });
  const card = h('div', { class: 'card auth-card', testid: 'confirm-email-page' },
    h('h1', { tabindex: '-1', text: 'Confirm your email' }), body);
  main.appendChild(h('div', { class: 'page narrow-page' }, card));
  let disposed = false;

  const confirm = async (value) => {
    replace(body, h('p', { class: 'loading', role: 'status', text: 'Confirming…' }));
    try {
      await confirmEmail(value);
    } catch (err) {
      if (disposed) return;
      const text = err.code === 'invalid_token'
        ? 'This link is invalid, expired or was already used. Ask for a new one from your profile.'
        : err.code === 'email_taken'
          ? 'Another account now uses this address, so it cannot become yours.'
          : message(err, 'Could not confirm the address.');
      replace(body, h('p', { class: 'form-error', role: 'alert', testid: 'confirm-email-error', text }), h('p', {}, backLink()));
      return;
    }
    if (disposed) return;
    let email = null;
    if (auth.loggedIn) {
      try {
        const me = await api('/auth/me');
        email = me.email;
        // `email_verified` too: the verification link lands here (#/verify-email).
        if (auth.user) Object.assign(auth.user, me);
        rememberDevice(me); // a login by the new address finds this account's device token
      } catch { /* the confirmation stands; the profile shows the address */ }
    }
    if (disposed) return;
    replace(body,
      h('p', { class: 'notice', role: 'status', testid: 'confirm-email-success',
        text: email ? `Your email address is now ${email}.` : 'Your new email address is confirmed.' }),
      h('p', {}, backLink()));
  };

  if (token) {
    confirm(token);
  } else {
    const form = h('form', { novalidate: true, testid: 'confirm-email-form' },
      h('p', { class: 'form-error', role: 'alert', tabindex: '-1', hidden: true }),
      tokenField('confirm-email-token'),
      h('button', { type: 'submit', class: 'btn btn-primary btn-block', text: 'Confirm' }));
    form.addEventListener('submit', (e) => {
      e.preventDefault();
      const value = new FormData(form).get('token')?.trim();
      if (!value) { showFormErrors(form, { errors: [{ field: 'token', message: 'Paste the token from the email.' }], humanMessage: () => 'The token is missing.' }); return; }
      confirm(value);
    });
    replace(body, h('p', { class: 'muted', text: 'Open the link in the email we sent to your new address, or paste its token here.' }), form);
  }
  return () => { disposed = true; };
}

/** `#/reset?token=…` (the link of the reset mail): choose a new password. */
export function mountResetPassword(main, { token } = {}) {
  const form = h('form', { class: 'card auth-card', testid: 'reset-form', novalidate: true, 'aria-labelledby': 'reset-title' },
    h('h1', { id: 'reset-title', tabindex: '-1', text: 'Choose a new password' }),
    h('p', { class: 'form-error', role: 'alert', tabindex: '-1', hidden: true, testid: 'form-error' }),
    token ? null : tokenField('reset-token'),
    field({ label: 'New password', name: 'new_password', type: 'password', autocomplete: 'new-password', required: true, testid: 'reset-password',
      hint: 'At least 8 characters; avoid common passwords. Every session of your account ends.', attrs: { minlength: '8', maxlength: '128', 'data-autofocus': '' } }),
    field({ label: 'Repeat the new password', name: 'repeat', type: 'password', autocomplete: 'new-password', required: true, testid: 'reset-password-repeat' }),
    h('button', { type: 'submit', class: 'btn btn-primary btn-block', testid: 'reset-submit', text: 'Set new password' }));
  const page = h('div', { class: 'page narrow-page' }, form);
  main.appendChild(page);

  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    clearFormErrors(form);
    const data = Object.fromEntries(new FormData(form));
    const value = token || data.token?.trim();
    const local = [];
    if (!value) local.push({ field: 'token', message: 'Paste the token from the email.' });
    if (!data.new_password || data.new_password.length < 8) local.push({ field: 'new_password', message: 'Use at least 8 characters.' });
    else if (data.new_password !== data.repeat) local.push({ field: 'repeat', message: 'The two passwords differ.' });
    if (local.length) { showFormErrors(form, { errors: local, humanMessage: () => 'Please fix the highlighted fields.' }); return; }
    const btn = form.querySelector('button[type=submit]');
    btn.disabled = true;
    try {
      await confirmPasswordReset({ token: value, new_password: data.new_password });
    } catch (err) {
      btn.disabled = false;
      if (err.code === 'invalid_token') {
        err.detail = 'This reset link is invalid, expired or was already used.';
        showFormErrors(form, err);
        form.querySelector('[data-testid="reset-again"]')?.remove();
        const again = h('p', { testid: 'reset-again' }, h('a', { href: '#/forgot-password', text: 'Ask for a new reset link' }));
        form.querySelector('.form-error').insertAdjacentElement('afterend', again);
        return;
      }
      // validation_failed names `new_password` (too short, too common).
      showFormErrors(form, err);
      return;
    }
    // The reset ended every session, this one included.
    if (auth.loggedIn) { auth._endSession('password_reset'); return; }
    replace(page, h('div', { class: 'card auth-card' },
      h('h1', { tabindex: '-1', text: 'Password changed' }),
      h('p', { class: 'notice', role: 'status', testid: 'reset-success', text: 'Your password was changed and every session of your account ended. Log in with your new password.' }),
      h('p', {}, h('a', { href: '#/login', testid: 'goto-login', text: 'Log in' }))));
    page.querySelector('h1').focus();
  });
}

/** `#/forgot-password`: ask for a reset link by email. */
export function mountForgotPassword(main) {
  const status = h('p', { class: 'notice', role: 'status', testid: 'forgot-status', hidden: true });
  const form = h('form', { class: 'card auth-card', testid: 'forgot-form', novalidate: true, 'aria-labelledby': 'forgot-title' },
    h('h1', { id: 'forgot-title', tabindex: '-1', text: 'Reset your password' }),
    h('p', { class: 'muted', text: 'Enter the email address of your account; we mail you a link to choose a new password.' }),
    h('p', { class: 'form-error', role: 'alert', tabindex: '-1', hidden: true, testid: 'form-error' }),
    status,
    field({ label: 'Email', name: 'email', type: 'email', autocomplete: 'email', required: true, testid: 'forgot-email', attrs: { 'data-autofocus': '', autocapitalize: 'none', spellcheck: 'false' } }),
    h('button', { type: 'submit', class: 'btn btn-primary btn-block', testid: 'forgot-submit', text: 'Send reset link' }),
    h('p', { class: 'muted' }, h('a', { href: auth.loggedIn ? '#/me' : '#/login', text: auth.loggedIn ? 'Back to your profile' : 'Back to log in' })));
  main.appendChild(h('div', { class: 'page narrow-page' }, form));
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    clearFormErrors(form);
    status.hidden = true;
    const email = String(new FormData(form).get('email') || '').trim();
    if (!email.includes('@')) { showFormErrors(form, { errors: [{ field: 'email', message: 'Enter a valid email address.' }], humanMessage: () => 'Please fix the highlighted field.' }); return; }
    const btn = form.querySelector('button[type=submit]');
    btn.disabled = true;
    try {
      await requestPasswordReset(email);
      // The server answers the same whether the address has an account or not.
      status.textContent = `If ${email} belongs to an account, a reset link is on its way.`;
      status.hidden = false;
      announce(status.textContent);
    } catch (err) {
      showFormErrors(form, err);
    } finally {
      btn.disabled = false;
    }
  });
}
