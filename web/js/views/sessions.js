// Sessions: where I am logged in; end one, or all.
import { h, replace, toast, formatDate } from '../dom.js';
import { api, auth } from '../api.js';

function describeAgent(ua) {
  if (!ua) return 'Unknown device';
  const browser = /Edg\//.test(ua) ? 'Edge' : /Chrom(e|ium)\//.test(ua) ? 'Chromium/Chrome' : /Firefox\//.test(ua) ? 'Firefox' : /Safari\//.test(ua) ? 'Safari' : null;
  const os = /Android/.test(ua) ? 'Android' : /iPhone|iPad/.test(ua) ? 'iOS' : /Windows/.test(ua) ? 'Windows' : /Mac OS X/.test(ua) ? 'macOS' : /Linux/.test(ua) ? 'Linux' : null;
  return browser || os ? [browser, os].filter(Boolean).join(' on ') : ua.slice(0, 80);
}

export function mountSessions(main) {
  const list = h('ul', { class: 'card-list', testid: 'session-list', 'aria-label': 'Active sessions', 'aria-busy': 'true' });
  const endAll = h('button', { type: 'button', class: 'btn btn-danger-outline', testid: 'logout-all', text: 'Log out everywhere' });
  main.appendChild(h('div', { class: 'page' },
    h('h1', { tabindex: '-1', text: 'Sessions' }),
    h('p', { class: 'muted', text: 'These are the devices and browsers where you are logged in. End any you do not recognise.' }),
    list, endAll));

  const load = async () => {
    try {
      const page = await api('/auth/sessions');
      const items = page?.items || [];
      replace(list, items.map((s) => {
        const end = s.current ? null : h('button', { type: 'button', class: 'btn btn-small btn-danger-outline', testid: 'end-session', text: 'End session' });
        end?.addEventListener('click', async () => {
          end.disabled = true;
          try {
            await api(`/auth/sessions/${s.id}`, { method: 'DELETE' });
            toast('Session ended.');
            const next = end.closest('li')?.nextElementSibling?.querySelector('button') || endAll;
            await load();
            (list.querySelector('[data-testid="end-session"]') || next)?.focus?.();
          } catch (err) {
            end.disabled = false;
            toast(err.humanMessage ? err.humanMessage() : 'Could not end the session.', 'error');
          }
        });
        return h('li', { class: 'card-row', testid: 'session-item', 'data-session-id': s.id, 'data-current': String(!!s.current) },
          h('div', { class: 'card-row-main' },
            h('strong', { text: describeAgent(s.user_agent) }),
            s.current ? h('span', { class: 'role-badge', text: 'this browser' }) : null,
            h('p', { class: 'muted small', text: `${s.ip ? `IP ${s.ip} · ` : ''}started ${formatDate(s.created_at)} · last used ${formatDate(s.last_used_at)}` })),
          end);
      }));
    } catch (err) {
      replace(list, h('li', { role: 'alert', text: err.humanMessage ? err.humanMessage() : 'Could not load sessions.' }));
    } finally {
      list.removeAttribute('aria-busy');
    }
  };
  endAll.addEventListener('click', async () => {
    if (!window.confirm('Log out on every device, including this one?')) return;
    try {
      await api('/auth/logout-all', { method: 'POST' });
    } catch (err) {
      toast(err.humanMessage ? err.humanMessage() : 'Could not log out everywhere.', 'error');
      return;
    }
    auth._endSession('logout');
  });
  load();
}
