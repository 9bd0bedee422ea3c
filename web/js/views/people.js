// People: search, suggestions, friends, profiles (follow / block / message), follower lists,
// and editing my own profile.
import { h, replace, clear, field, showFormErrors, clearFormErrors, debounce, toast, avatar, formatDate } from '../dom.js';
import { api, auth } from '../api.js';
import { store, fetchAll } from '../store.js';
import { emailSection } from './account.js';

function personRow(p, extra = null) {
  store.rememberProfile(p);
  return h('li', { class: 'person-row', testid: 'person-item', 'data-user-id': p.id },
    h('a', { href: `#/people/${p.id}`, class: 'person-link', testid: 'person-link' },
      avatar(p, 'md'),
      h('span', { class: 'person-names' },
        h('strong', { class: 'person-display', text: p.display_name || p.username }),
        h('span', { class: 'muted', text: `@${p.username}` }))),
    extra);
}

function errorText(err, fallback) {
  return err?.humanMessage ? err.humanMessage() : fallback;
}

export function mountPeople(main) {
  const cleanups = [];
  const input = h('input', { type: 'search', id: 'people-q', testid: 'people-search', autocomplete: 'off', placeholder: 'Name or username', 'aria-controls': 'people-results', 'data-autofocus': '' });
  const status = h('p', { class: 'muted', role: 'status', testid: 'people-search-status' });
  const results = h('ul', { id: 'people-results', class: 'person-list', testid: 'people-results', 'aria-label': 'Search results' });
  const suggested = h('ul', { class: 'person-list', testid: 'suggested-list', 'aria-label': 'Suggested people' });
  const friends = h('ul', { class: 'person-list', testid: 'friends-list', 'aria-label': 'Friends' });
  const browse = h('div', { class: 'people-browse' },
    h('section', { 'aria-labelledby': 'suggested-h' }, h('h2', { id: 'suggested-h', text: 'Suggested for you' }), suggested),
    h('section', { 'aria-labelledby': 'friends-h' }, h('h2', { id: 'friends-h', text: 'Friends' }), friends));
  main.appendChild(h('div', { class: 'page' },
    h('h1', { tabindex: '-1', text: 'People' }),
    h('div', { class: 'field search-field', role: 'search' },
      h('label', { for: 'people-q', text: 'Search people' }), input),
    status, results, browse));

  let controller = null;
  const search = async () => {
    const q = input.value.trim();
    controller?.abort();
    if (!q) {
      clear(results);
      status.textContent = '';
      browse.hidden = false;
      return;
    }
    browse.hidden = true;
    controller = new AbortController();
    try {
      const page = await api('/users/search', { query: { q, limit: 20 }, signal: controller.signal });
      const items = (page?.items || []).filter((p) => p.id !== store.me?.id);
      status.textContent = items.length ? `${items.length} ${items.length === 1 ? 'person' : 'people'} found` : `Nobody matches “${q}”.`;
      replace(results, items.map((p) => personRow(p)));
    } catch (err) {
      if (err.name === 'AbortError') return;
      status.textContent = errorText(err, 'Search failed.');
    }
  };
  const debounced = debounce(search, 150);
  input.addEventListener('input', debounced);
  input.addEventListener('keydown', (e) => {
    if (e.key === 'ArrowDown') {
      const first = results.querySelector('a');
      if (first) { e.preventDefault(); first.focus(); }
    }
  });
  results.addEventListener('keydown', (e) => {
    if (!['ArrowDown', 'ArrowUp'].includes(e.key)) return;
    const links = [...results.querySelectorAll('a.person-link')];
    const i = links.indexOf(document.activeElement);
    if (i < 0) return;
    e.preventDefault();
    if (e.key === 'ArrowUp' && i === 0) { input.focus(); return; }
    links[Math.max(0, Math.min(links.length - 1, i + (e.key === 'ArrowDown' ? 1 : -1)))].focus();
  });
  cleanups.push(() => { debounced.cancel(); controller?.abort(); });

  (async () => {
    try {
      const page = await api('/users/suggested', { query: { limit: 10 } });
      const items = (page?.items || []).filter((p) => p.id !== store.me?.id);
      replace(suggested, items.length ? items.map((p) => personRow(p)) : h('li', { class: 'muted', text: 'No suggestions yet — follow a few people first.' }));
    } catch (err) {
      replace(suggested, h('li', { class: 'muted', text: errorText(err, 'Suggestions are unavailable.') }));
    }
  })();
  (async () => {
    try {
      const items = await fetchAll('/users/me/friends', {}, 5);
      replace(friends, items.length ? items.map((p) => personRow(p)) : h('li', { class: 'muted', text: 'Friends are people you follow who follow you back.' }));
    } catch (err) {
      replace(friends, h('li', { class: 'muted', text: errorText(err, 'Friends are unavailable.') }));
    }
  })();
  return () => cleanups.forEach((fn) => fn());
}

export function mountProfile(main, userId) {
  const page = h('div', { class: 'page profile-page', testid: 'profile-page', 'data-user-id': userId },
    h('p', { class: 'loading', text: 'Loading profile…' }));
  main.appendChild(page);
  let disposed = false;

  const render = (p) => {
    const rel = p.relationship || {};
    const self = p.id === store.me?.id;
    const followBtn = h('button', { type: 'button', class: `btn ${rel.following ? '' : 'btn-primary'}`, testid: 'follow-button', 'data-following': String(!!rel.following), 'aria-pressed': String(!!rel.following), text: rel.following ? 'Unfollow' : 'Follow' });
    const blockBtn = h('button', { type: 'button', class: 'btn btn-danger-outline', testid: 'block-button', 'data-blocking': String(!!rel.blocking), 'aria-pressed': String(!!rel.blocking), text: rel.blocking ? 'Unblock' : 'Block' });
    const dmBtn = h('button', { type: 'button', class: 'btn', testid: 'dm-button', text: 'Message' });
    if (rel.blocking) { followBtn.disabled = true; dmBtn.disabled = true; }

    followBtn.addEventListener('click', async () => {
      followBtn.disabled = true;
      try {
        await api(`/users/me/following/${p.id}`, { method: rel.following ? 'DELETE' : 'PUT' });
        toast(rel.following ? `You unfollowed ${p.display_name || p.username}.` : `You follow ${p.display_name || p.username}.`);
        await reload('follow-button');
      } catch (err) {
        followBtn.disabled = false;
        toast(err.code === 'blocked' ? 'You cannot follow this person.' : errorText(err, 'Could not update follow.'), 'error');
      }
    });
    blockBtn.addEventListener('click', async () => {
      const name = p.display_name || p.username;
      if (!rel.blocking && !window.confirm(`Block ${name}? They will not be able to message you or find you, and follows between you are removed.`)) return;
      blockBtn.disabled = true;
      try {
        await api(`/users/me/blocks/${p.id}`, { method: rel.blocking ? 'DELETE' : 'PUT' });
        store.setBlocked(p.id, !rel.blocking);
        toast(rel.blocking ? `${name} is unblocked.` : `${name} is blocked.`);
        await reload('block-button');
      } catch (err) {
        blockBtn.disabled = false;
        toast(errorText(err, 'Could not update block.'), 'error');
      }
    });
    dmBtn.addEventListener('click', async () => {
      dmBtn.disabled = true;
      try {
        const room = await store.openDm(p.id);
        location.hash = `#/rooms/${room.id}`;
      } catch (err) {
        dmBtn.disabled = false;
        toast(err.code === 'blocked' ? 'You cannot message this person.' : errorText(err, 'Could not open the conversation.'), 'error');
      }
    });

    const relText = [
      rel.friends ? 'Friends' : null,
      !rel.friends && rel.followed_by ? 'Follows you' : null,
      rel.blocking ? 'Blocked' : null,
    ].filter(Boolean).join(' · ');

    replace(page,
      h('a', { href: '#/people', class: 'back-link', text: '← People' }),
      h('div', { class: 'profile-card card' },
        avatar(p, 'lg'),
        h('div', { class: 'profile-main' },
          h('h1', { tabindex: '-1', testid: 'profile-name', text: p.display_name || p.username }),
          h('p', { class: 'muted', testid: 'profile-username', text: `@${p.username}` }),
          relText ? h('p', { class: 'rel-badge', testid: 'relationship', text: relText }) : null,
          p.bio ? h('p', { class: 'bio', testid: 'profile-bio', text: p.bio }) : null,
          h('p', { class: 'counts' },
            h('a', { href: `#/people/${p.id}/followers`, testid: 'followers-link' }, h('strong', { text: String(p.followers_count ?? 0) }), ' followers'),
            ' · ',
            h('a', { href: `#/people/${p.id}/following`, testid: 'following-link' }, h('strong', { text: String(p.following_count ?? 0) }), ' following')),
          p.created_at ? h('p', { class: 'muted small', text: `Joined ${formatDate(p.created_at)}` }) : null,
          self
            ? h('p', {}, 'This is you. ', h('a', { href: '#/me', text: 'Edit your profile' }))
            : h('div', { class: 'profile-actions' }, followBtn, dmBtn, blockBtn))));
  };

  const reload = async (focusTestId) => {
    try {
      const p = await api(`/users/${userId}`);
      if (disposed) return;
      store.rememberProfile(p);
      render(p);
      if (focusTestId) page.querySelector(`[data-testid="${focusTestId}"]`)?.focus();
    } catch (err) {
      if (disposed) return;
      replace(page,
        h('a', { href: '#/people', class: 'back-link', text: '← People' }),
        h('h1', { tabindex: '-1', text: err.status === 404 ? 'Profile not available' : 'Could not load the profile' }),
        h('p', { role: 'alert', text: err.status === 404 ? 'This person does not exist or is not visible to you.' : errorText(err, '') }));
    }
  };
  reload().then(() => page.querySelector('h1')?.focus());
  return () => { disposed = true; };
}

export function mountFollowList(main, userId, which) {
  const list = h('ul', { class: 'person-list', testid: `${which}-list`, 'aria-busy': 'true' });
  const heading = h('h1', { tabindex: '-1', text: which === 'followers' ? 'Followers' : 'Following' });
  main.appendChild(h('div', { class: 'page' },
    h('a', { href: `#/people/${userId}`, class: 'back-link', text: '← Profile' }),
    heading, list));
  (async () => {
    try {
      const who = userId === store.me?.id ? store.me : await store.profile(userId);
      if (who) heading.textContent = `${which === 'followers' ? 'Followers of' : 'Followed by'} ${who.display_name || who.username}`;
      const items = await fetchAll(`/users/${userId}/${which}`, {}, 10);
      replace(list, items.length ? items.map((p) => personRow(p)) : h('li', { class: 'muted', text: which === 'followers' ? 'No followers yet.' : 'Not following anyone yet.' }));
    } catch (err) {
      replace(list, h('li', { role: 'alert', text: errorText(err, 'Could not load the list.') }));
    } finally {
      list.removeAttribute('aria-busy');
    }
  })();
}

export function mountMe(main) {
  const form = h('form', { class: 'card', testid: 'profile-form', novalidate: true, 'aria-labelledby': 'edit-h' },
    h('h2', { id: 'edit-h', text: 'Edit profile' }),
    h('p', { class: 'form-error', role: 'alert', tabindex: '-1', hidden: true }),
    h('p', { class: 'loading', text: 'Loading…' }));
  const blocks = h('ul', { class: 'person-list', testid: 'blocked-list', 'aria-label': 'Blocked people' });
  const summary = h('div', { class: 'me-summary' });
  main.appendChild(h('div', { class: 'page' },
    h('h1', { tabindex: '-1', text: 'Your profile' }),
    summary,
    form,
    emailSection(),
    h('section', { class: 'card', 'aria-labelledby': 'blocked-h' }, h('h2', { id: 'blocked-h', text: 'Blocked people' }), blocks)));

  const fill = (p) => {
    replace(summary, h('div', { class: 'profile-card' },
      avatar(p, 'lg'),
      h('div', { class: 'profile-main' },
        h('p', {}, h('strong', { text: p.display_name || p.username }), ' ', h('span', { class: 'muted', text: `@${p.username}` })),
        h('p', { class: 'counts' },
          h('a', { href: `#/people/${p.id}/followers` }, `${p.followers_count ?? 0} followers`), ' · ',
          h('a', { href: `#/people/${p.id}/following` }, `${p.following_count ?? 0} following`), ' · ',
          h('a', { href: `#/people/${p.id}`, text: 'View public profile' })))));
    replace(form,
      h('h2', { id: 'edit-h', text: 'Edit profile' }),
      h('p', { class: 'form-error', role: 'alert', tabindex: '-1', hidden: true }),
      field({ label: 'Display name', name: 'display_name', value: p.display_name || '', autocomplete: 'name', testid: 'profile-display-name', attrs: { maxlength: '64' } }),
      field({ label: 'Bio', name: 'bio', type: 'textarea', value: p.bio || '', hint: 'Up to 500 characters.', testid: 'profile-bio-input', attrs: { maxlength: '500', rows: '4' } }),
      field({ label: 'Avatar URL', name: 'avatar_url', type: 'url', value: p.avatar_url || '', hint: 'An https:// image address, or leave empty.', testid: 'profile-avatar-url', attrs: { inputmode: 'url' } }),
      h('button', { type: 'submit', class: 'btn btn-primary', testid: 'profile-save', text: 'Save profile' }));
  };

  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    clearFormErrors(form);
    const data = Object.fromEntries(new FormData(form));
    const errors = [];
    if ((data.bio || '').length > 500) errors.push({ field: 'bio', message: 'Keep your bio to 500 characters.' });
    if (data.avatar_url && !/^https:\/\//i.test(data.avatar_url.trim())) errors.push({ field: 'avatar_url', message: 'Use an https:// address.' });
    if (errors.length) { showFormErrors(form, { errors, humanMessage: () => 'Please fix the highlighted fields.' }); return; }
    const btn = form.querySelector('button[type=submit]');
    btn.disabled = true;
    try {
      const p = await api('/users/me', { method: 'PATCH', body: { display_name: data.display_name.trim(), bio: data.bio, avatar_url: data.avatar_url.trim() } });
      store.rememberProfile(p);
      if (auth.user) auth.user.display_name = p.display_name;
      fill(p);
      toast('Profile saved.');
      form.querySelector('[data-testid="profile-save"]')?.focus();
    } catch (err) {
      showFormErrors(form, err);
      btn.disabled = false;
    }
  });

  (async () => {
    try {
      fill(await api('/users/me'));
    } catch (err) {
      replace(form, h('p', { role: 'alert', text: errorText(err, 'Could not load your profile.') }));
    }
  })();
  (async () => {
    try {
      const items = await fetchAll('/users/me/blocks', {}, 5);
      store.blocked = new Set(items.map((p) => p.id));
      replace(blocks, items.length ? items.map((p) => {
        const btn = h('button', { type: 'button', class: 'btn btn-small', testid: 'unblock-button', text: 'Unblock' });
        btn.addEventListener('click', async () => {
          btn.disabled = true;
          try {
            await api(`/users/me/blocks/${p.id}`, { method: 'DELETE' });
            store.setBlocked(p.id, false);
            btn.closest('li').remove();
            toast(`${p.display_name || p.username} is unblocked.`);
          } catch (err) {
            btn.disabled = false;
            toast(errorText(err, 'Could not unblock.'), 'error');
          }
        });
        return personRow(p, btn);
      }) : h('li', { class: 'muted', text: 'You have not blocked anyone.' }));
    } catch (err) {
      replace(blocks, h('li', { class: 'muted', text: errorText(err, 'Could not load blocks.') }));
    }
  })();
}
