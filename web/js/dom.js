// Tiny DOM helpers: no framework, no innerHTML with data (everything goes through textContent).

/**
 * Create an element. `attrs` keys: `class`, `text`, `dataset` (object), `on` (object of
 * event listeners), `aria-*`/other attributes as strings, booleans toggle boolean attributes.
 */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key === 'class') el.className = value;
    else if (key === 'text') el.textContent = value;
    else if (key === 'dataset') Object.assign(el.dataset, value);
    else if (key === 'on') for (const [ev, fn] of Object.entries(value)) el.addEventListener(ev, fn);
    else if (key === 'testid') el.dataset.testid = value;
    else if (key === 'value') el.value = value;
    else if (value === true) el.setAttribute(key, '');
    else el.setAttribute(key, String(value));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    if (Array.isArray(child)) append(el, child);
    else if (child instanceof Node) el.appendChild(child);
    else el.appendChild(document.createTextNode(String(child)));
  }
}

export function clear(el) {
  while (el.firstChild) el.removeChild(el.firstChild);
  return el;
}

export function replace(el, ...children) {
  clear(el);
  append(el, children);
  return el;
}

let liveTimer = null;
/** Announce a message to screen readers through the polite live region. */
export function announce(text) {
  const region = document.getElementById('live-polite');
  if (!region) return;
  // Clearing first makes repeated identical announcements audible.
  region.textContent = '';
  clearTimeout(liveTimer);
  liveTimer = setTimeout(() => { region.textContent = text; }, 50);
}

let toastSeq = 0;
/** Show a transient notification (also read out: the toast area is a live region). */
export function toast(text, kind = 'info') {
  const area = document.getElementById('toasts');
  if (!area) return;
  const id = `toast-${++toastSeq}`;
  const item = h('div', { class: `toast toast-${kind}`, id, role: kind === 'error' ? 'alert' : null, testid: 'toast' },
    h('span', { text }),
    h('button', { type: 'button', class: 'toast-close', 'aria-label': 'Dismiss notification', on: { click: () => item.remove() } }, '×'));
  area.appendChild(item);
  setTimeout(() => item.remove(), kind === 'error' ? 8000 : 4000);
}

export function formatTime(iso) {
  if (!iso) return '';
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return '';
  const now = new Date();
  const sameDay = d.toDateString() === now.toDateString();
  return sameDay
    ? d.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' })
    : d.toLocaleString([], { month: 'short', day: 'numeric', hour: '2-digit', minute: '2-digit' });
}

export function formatDate(iso) {
  if (!iso) return '';
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? '' : d.toLocaleString();
}

export function debounce(fn, ms) {
  let t = null;
  const wrapped = (...args) => {
    clearTimeout(t);
    t = setTimeout(() => fn(...args), ms);
  };
  wrapped.cancel = () => clearTimeout(t);
  return wrapped;
}

/** Initials for an avatar placeholder. */
export function initials(name) {
  const parts = String(name || '?').trim().split(/[\s._]+/).filter(Boolean);
  return ((parts[0]?.[0] || '?') + (parts[1]?.[0] || '')).toUpperCase();
}

/** An avatar: the image if it is an https URL, otherwise initials. */
export function avatar(profile, size = 'md') {
  const name = profile?.display_name || profile?.username || '?';
  const url = profile?.avatar_url;
  if (url && /^https:\/\//i.test(url)) {
    const img = h('img', { class: `avatar avatar-${size}`, src: url, alt: '', referrerpolicy: 'no-referrer', loading: 'lazy' });
    img.addEventListener('error', () => img.replaceWith(h('span', { class: `avatar avatar-${size}`, 'aria-hidden': 'true', text: initials(name) })));
    return img;
  }
  return h('span', { class: `avatar avatar-${size}`, 'aria-hidden': 'true', text: initials(name) });
}

/**
 * Show field errors from an ApiError on a form: inputs get aria-invalid and a message
 * element linked with aria-describedby; the form-level alert gets the detail.
 */
export function showFormErrors(form, err) {
  clearFormErrors(form);
  const alertBox = form.querySelector('.form-error');
  const fields = err?.errors || [];
  let firstInvalid = null;
  for (const fe of fields) {
    const input = form.querySelector(`[name="${CSS.escape(fe.field || '')}"]`);
    if (!input) continue;
    const msgId = `${input.id || input.name}-error`;
    const msg = h('p', { class: 'field-error', id: msgId, text: fe.message || 'Invalid value' });
    input.setAttribute('aria-invalid', 'true');
    const described = (input.getAttribute('aria-describedby') || '').split(' ').filter(Boolean);
    if (!described.includes(msgId)) described.push(msgId);
    input.setAttribute('aria-describedby', described.join(' '));
    input.insertAdjacentElement('afterend', msg);
    firstInvalid ||= input;
  }
  if (alertBox) {
    alertBox.textContent = err?.humanMessage ? err.humanMessage() : String(err?.message || err);
    alertBox.hidden = false;
  }
  (firstInvalid || alertBox)?.focus?.();
}

export function clearFormErrors(form) {
  form.querySelectorAll('.field-error').forEach((el) => {
    const input = form.querySelector(`[aria-describedby~="${el.id}"]`);
    if (input) {
      input.removeAttribute('aria-invalid');
      const rest = (input.getAttribute('aria-describedby') || '').split(' ').filter((x) => x && x !== el.id);
      if (rest.length) input.setAttribute('aria-describedby', rest.join(' '));
      else input.removeAttribute('aria-describedby');
    }
    el.remove();
  });
  const alertBox = form.querySelector('.form-error');
  if (alertBox) { alertBox.textContent = ''; alertBox.hidden = true; }
}

/** A labelled form field. */
export function field({ label, name, type = 'text', id, value = '', required = false, autocomplete, hint, testid, attrs = {} }) {
  const inputId = id || `f-${name}-${Math.random().toString(36).slice(2, 8)}`;
  const hintId = hint ? `${inputId}-hint` : null;
  const input = type === 'textarea'
    ? h('textarea', { id: inputId, name, required, autocomplete, 'aria-describedby': hintId, testid, ...attrs })
    : h('input', { id: inputId, name, type, required, autocomplete, 'aria-describedby': hintId, testid, ...attrs });
  input.value = value ?? '';
  return h('div', { class: 'field' },
    h('label', { for: inputId, text: label }),
    hint ? h('p', { class: 'hint', id: hintId, text: hint }) : null,
    input);
}
