// Log in and register forms.
import { h, field, showFormErrors, clearFormErrors } from '../dom.js';
import { login, register } from '../api.js';

export function mountLogin(main, { notice } = {}) {
  const form = h('form', { class: 'card auth-card', testid: 'login-form', novalidate: true, 'aria-labelledby': 'login-title' },
    h('h1', { id: 'login-title', tabindex: '-1', text: 'Log in' }),
    notice ? h('p', { class: 'notice', role: 'status', testid: 'auth-notice', text: notice }) : null,
    h('p', { class: 'form-error', role: 'alert', tabindex: '-1', hidden: true, testid: 'form-error' }),
    field({ label: 'Username or email', name: 'login', autocomplete: 'username', required: true, testid: 'login-username', attrs: { 'data-autofocus': '' } }),
    field({ label: 'Password', name: 'password', type: 'password', autocomplete: 'current-password', required: true, testid: 'login-password' }),
    h('button', { type: 'submit', class: 'btn btn-primary btn-block', testid: 'login-submit', text: 'Log in' }),
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
      await login({ login: data.login.trim(), password: data.password });
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
