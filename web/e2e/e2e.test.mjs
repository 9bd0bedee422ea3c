// End-to-end test of the IntelliColab web client in headless Chromium, two users at once.
//
//   BASE_URL=http://127.0.0.1:8080 node --test e2e.test.mjs     (or ./run.sh)
//
// Needs a running system at BASE_URL (the gateway serving web/ and the API).
// Screenshots of both users' pages are written to output/ when a step fails.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import zlib from 'node:zlib';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const BASE_URL = (process.env.BASE_URL || 'http://127.0.0.1:8080').replace(/\/$/, '');
const EXECUTABLE = process.env.CHROMIUM || '/usr/bin/chromium';
const OUT = process.env.E2E_OUTPUT || path.join(path.dirname(fileURLToPath(import.meta.url)), 'output');
const TIMEOUT = Number(process.env.E2E_TIMEOUT_MS || 15000);
const SUFFIX = `${Date.now().toString(36)}${Math.random().toString(36).slice(2, 6)}`;
const PASSWORD = `Corr3ct-Horse-${SUFFIX}`;
// The system's data directory: auth writes its mails as .eml files to <data dir>/outbox/
// (no SMTP configured). The mail steps are skipped without it (a system started elsewhere).
const DATA_DIR = process.env.E2E_DATA_DIR || '';

let browser;
const pages = {}; // name -> page
const problems = []; // page errors and CSP violations

before(async () => {
  fs.mkdirSync(OUT, { recursive: true });
  browser = await chromium.launch({
    executablePath: EXECUTABLE,
    headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
});

after(async () => {
  await browser?.close();
});

async function newUser(name, contextOptions = {}) {
  const context = await browser.newContext({ viewport: { width: 1200, height: 800 }, ...contextOptions });
  const page = await context.newPage();
  page.setDefaultTimeout(TIMEOUT);
  page.on('pageerror', (err) => problems.push(`${name}: page error: ${err.message}`));
  page.on('console', (msg) => {
    const text = msg.text();
    if (msg.type() === 'error' && /Content Security Policy|Refused to/i.test(text)) problems.push(`${name}: ${text}`);
    if (process.env.E2E_VERBOSE) console.log(`[${name} console.${msg.type()}] ${text}`);
  });
  page.on('dialog', (d) => d.accept());
  pages[name] = page;
  return page;
}

/** Run one step; on failure screenshot every page into output/ and rethrow. */
async function step(name, fn) {
  const started = Date.now();
  try {
    await fn();
    console.log(`  ✓ ${name} (${Date.now() - started} ms)`);
  } catch (err) {
    const slug = name.replace(/[^a-z0-9]+/gi, '-').toLowerCase();
    for (const [who, page] of Object.entries(pages)) {
      try {
        await page.screenshot({ path: path.join(OUT, `failure-${slug}-${who}.png`), fullPage: true, timeout: 10_000 });
        fs.writeFileSync(path.join(OUT, `failure-${slug}-${who}.html`), await page.content());
      } catch { /* the page may be gone */ }
    }
    console.log(`  ✗ ${name}: screenshots in ${OUT}`);
    err.message = `step "${name}" failed (screenshots and HTML of both pages in ${OUT}): ${err.message}`;
    throw err;
  }
}

const tid = (id) => `[data-testid="${id}"]`;

async function register(page, username, base = BASE_URL) {
  await page.goto(`${base}/#/register`);
  await page.locator(tid('register-form')).waitFor();
  await page.fill(tid('register-username'), username);
  await page.fill(tid('register-display-name'), `${username[0].toUpperCase()}${username.slice(1, 5)} E2E`);
  await page.fill(tid('register-email'), `${username}@example.com`);
  await page.fill(tid('register-password'), PASSWORD);
  await page.click(tid('register-submit'));
  await page.locator(tid('room-list')).waitFor();
  await waitConnected(page);
}

async function waitConnected(page) {
  await page.locator(`${tid('connection-status')}[data-state="open"]`).waitFor();
}

async function send(page, text) {
  await page.fill(tid('composer-input'), text);
  await page.click(tid('send-button'));
}

/** Wait until exactly one message with this body is shown and it is acknowledged. */
async function expectMessageOnce(page, text) {
  const items = page.locator(`${tid('message')}:has(${tid('message-body')}:text-is("${text}"))`);
  await items.first().waitFor();
  await page.locator(`${tid('message')}[data-state="sent"]:has(${tid('message-body')}:text-is("${text}"))`).first().waitFor();
  // A duplicate (a resent frame, a replayed event) would be shown by the time the page has
  // applied every event the server stored for the room.
  await caughtUp(page);
  assert.equal(await items.count(), 1, `"${text}" should be shown exactly once`);
}

/** Wait until the page has applied every event of its open room that the server has stored. */
async function caughtUp(page) {
  const deadline = Date.now() + TIMEOUT;
  for (;;) {
    const state = await page.evaluate(async () => {
      const { store, auth } = window.intellicolab;
      const room = store.rooms.get(store.activeRoomId);
      if (!room) return { done: true };
      const res = await fetch(`/chat/rooms/${room.id}`, { headers: { Authorization: `Bearer ${await auth.token()}` } });
      const server = res.ok ? (await res.json()).last_seq : Infinity;
      return { done: room.lastSeq >= server, applied: room.lastSeq, server };
    });
    if (state.done) return;
    if (Date.now() > deadline) throw new Error(`the page applied events up to seq ${state.applied}, the server has ${state.server}`);
    await page.waitForTimeout(100); // poll interval
  }
}

async function openRoom(page, roomName) {
  const item = page.locator(`${tid('room-item')}:has(${tid('room-name')}:text-is("${roomName}"))`);
  await item.waitFor();
  await item.click();
  await page.locator(`${tid('room-title')}:text-is("${roomName}")`).waitFor();
}

/**
 * Type `query` into a search box until `result` shows up: profiles and the search index are
 * filled from events, so a user registered a moment ago may take a moment to be found.
 */
async function searchUntil(page, inputTestId, query, result, tries = 8) {
  for (let i = 1; ; i++) {
    await page.fill(tid(inputTestId), '');
    await page.fill(tid(inputTestId), query);
    try {
      await result.first().waitFor({ timeout: 2000 });
      return;
    } catch (err) {
      if (i >= tries) throw err;
    }
  }
}

/**
 * The link of the newest mail to `to` matching `pattern` (its first group is the path after
 * the host), from the outbox directory; mails are sent in the background, so poll.
 */
async function mailedLink(to, pattern) {
  const dir = path.join(DATA_DIR, 'outbox');
  const deadline = Date.now() + TIMEOUT;
  for (;;) {
    const files = fs.existsSync(dir) ? fs.readdirSync(dir).filter((f) => f.endsWith('.eml')).sort().reverse() : [];
    for (const file of files) {
      let text = fs.readFileSync(path.join(dir, file), 'utf8');
      // Quoted-printable (used for non-ASCII bodies): soft line breaks and =XX escapes.
      if (/^Content-Transfer-Encoding: quoted-printable/im.test(text)) {
        text = text.replace(/=\r?\n/g, '').replace(/=([0-9A-F]{2})/g, (_, hex) => String.fromCharCode(parseInt(hex, 16)));
      }
      if (!text.split(/\r?\n/).some((line) => /^To:/i.test(line) && line.toLowerCase().includes(to.toLowerCase()))) continue;
      const m = text.match(pattern);
      if (m) return m[0];
    }
    if (Date.now() > deadline) throw new Error(`no mail to ${to} matching ${pattern} in ${dir} (${files.length} mails)`);
    await new Promise((r) => setTimeout(r, 100)); // poll interval
  }
}

const storedDeviceToken = (page, login) => page.evaluate((who) => {
  const all = JSON.parse(localStorage.getItem('intellicolab.device_tokens') || '{}');
  return Object.values(all).find((e) => e.logins.includes(who))?.token ?? null;
}, login);

async function searchPerson(page, username) {
  await page.click(tid('nav-people'));
  const hit = page.locator(`${tid('person-item')}:has-text("@${username}")`);
  await searchUntil(page, 'people-search', username, hit);
  await hit.first().locator(tid('person-link')).click();
  await page.locator(tid('profile-page')).waitFor();
  await page.locator(`${tid('profile-username')}:text-is("@${username}")`).waitFor();
}

test('two users chat live, survive a dropped connection, follow and block', async () => {
  const alice = await newUser('alice');
  const bob = await newUser('bob');
  const aliceName = `alice_${SUFFIX}`;
  const bobName = `bob_${SUFFIX}`;
  const room = `e2e room ${SUFFIX}`;

  await step('both users register', async () => {
    await register(alice, aliceName);
    await register(bob, bobName);
  });

  await step('alice creates a private room', async () => {
    await alice.click(tid('new-room-button'));
    await alice.fill(tid('room-name-input'), room);
    await alice.fill(tid('room-topic-input'), 'end-to-end test room');
    await alice.check(tid('room-visibility-private'));
    await alice.click(tid('create-room-submit'));
    await alice.locator(`${tid('room-title')}:text-is("${room}")`).waitFor();
  });

  await step('alice invites bob from the members panel', async () => {
    await alice.click(tid('members-toggle'));
    const invite = alice.locator(`${tid('invite-item')}:has-text("@${bobName}") ${tid('invite-button')}`);
    await searchUntil(alice, 'invite-search', bobName, invite);
    await invite.click();
    await alice.locator(`${tid('member-list')} ${tid('member-item')}`).nth(1).waitFor();
    assert.equal(await alice.locator(`${tid('member-list')} ${tid('member-item')}`).count(), 2);
    await alice.click(tid('members-toggle'));
  });

  await step('bob sees the room appear live and opens it', async () => {
    await openRoom(bob, room);
  });

  await step('messages go both ways live', async () => {
    await send(alice, 'Hello Bob, from Alice');
    await expectMessageOnce(alice, 'Hello Bob, from Alice');
    await expectMessageOnce(bob, 'Hello Bob, from Alice');
    await send(bob, 'Hi Alice! Bob here');
    await expectMessageOnce(bob, 'Hi Alice! Bob here');
    await expectMessageOnce(alice, 'Hi Alice! Bob here');
  });

  await step('an edit and a deletion show live on the other side', async () => {
    const mine = bob.locator(`${tid('message')}:has(${tid('message-body')}:text-is("Hi Alice! Bob here"))`);
    await mine.hover();
    await mine.locator(tid('edit-button')).click();
    await bob.fill(tid('edit-input'), 'Hi Alice! Bob here, edited');
    await bob.click(tid('edit-save'));
    await expectMessageOnce(alice, 'Hi Alice! Bob here, edited');
    await expectMessageOnce(bob, 'Hi Alice! Bob here, edited');
    await send(alice, 'Oops, wrong room');
    await expectMessageOnce(bob, 'Oops, wrong room');
    const oops = alice.locator(`${tid('message')}:has(${tid('message-body')}:text-is("Oops, wrong room"))`);
    await oops.hover();
    await oops.locator(tid('delete-button')).click(); // the confirm dialog is accepted
    await bob.locator(`${tid('message')}.deleted`).first().waitFor();
    await bob.locator(`${tid('message-body')}:text-is("Oops, wrong room")`).waitFor({ state: 'detached' });
    assert.equal(await alice.locator(`${tid('message-body')}:text-is("Oops, wrong room")`).count(), 0);
  });

  await step('typing indicator shows to the other user', async () => {
    await bob.locator(tid('composer-input')).pressSequentially('typing…', { delay: 20 });
    await alice.locator(`${tid('typing-indicator')}:has-text("is typing")`).waitFor();
    await bob.fill(tid('composer-input'), '');
  });

  await step('unread counts: a message to a room bob is not looking at is counted, opening it clears it', async () => {
    await bob.click(tid('nav-people'));
    await bob.locator(tid('people-search')).waitFor();
    await send(alice, 'Are you there, Bob?');
    await expectMessageOnce(alice, 'Are you there, Bob?');
    await bob.click(tid('nav-rooms'));
    const item = bob.locator(`${tid('room-item')}:has(${tid('room-name')}:text-is("${room}"))`);
    await item.locator(`${tid('unread-count')}:text-is("1")`).waitFor();
    assert.match(await item.locator(tid('room-preview')).innerText(), /Are you there, Bob\?/);
    await openRoom(bob, room);
    await expectMessageOnce(bob, 'Are you there, Bob?');
    await bob.locator(`${tid('room-item')}:has(${tid('room-name')}:text-is("${room}")) ${tid('unread-count')}`).waitFor({ state: 'detached' });
  });

  await step('after a dropped connection, missed messages arrive once and pending ones are resent once', async () => {
    await alice.evaluate(() => window.intellicolab.simulateOffline(60_000));
    await alice.locator(`${tid('connection-status')}:not([data-state="open"])`).waitFor();
    await send(bob, 'Missed message one');
    await send(bob, 'Missed message two');
    await expectMessageOnce(bob, 'Missed message two');
    await send(alice, 'Written while offline');
    await alice.locator(`${tid('message')}[data-state="pending"]:has-text("Written while offline")`).waitFor();
    assert.equal(await alice.locator(`${tid('message-body')}:text-is("Missed message one")`).count(), 0, 'offline: nothing arrives');
    await alice.evaluate(() => window.intellicolab.reconnectNow());
    await waitConnected(alice);
    await expectMessageOnce(alice, 'Missed message one');
    await expectMessageOnce(alice, 'Missed message two');
    await expectMessageOnce(alice, 'Written while offline');
    await expectMessageOnce(bob, 'Written while offline');
  });

  await step('a plain socket drop reconnects by itself without duplicates', async () => {
    // Close the raw WebSocket behind the client's back, as a network drop would: the client
    // only learns of it from its onclose, and must reconnect and resume by itself.
    await bob.evaluate(() => window.intellicolab.ws.socket.close());
    await bob.locator(`${tid('connection-status')}:not([data-state="open"])`).waitFor();
    await send(alice, 'After the blip');
    await waitConnected(bob);
    await expectMessageOnce(bob, 'After the blip');
    for (const text of ['Hello Bob, from Alice', 'Hi Alice! Bob here, edited', 'Missed message one', 'Missed message two', 'Written while offline']) {
      assert.equal(await bob.locator(`${tid('message-body')}:text-is("${text}")`).count(), 1, `bob sees "${text}" once`);
      assert.equal(await alice.locator(`${tid('message-body')}:text-is("${text}")`).count(), 1, `alice sees "${text}" once`);
    }
    // Seqs are unique in the list.
    const seqs = await bob.locator(`${tid('message')}[data-seq]`).evaluateAll((els) => els.map((e) => e.dataset.seq));
    assert.equal(new Set(seqs).size, seqs.length, 'no seq shown twice');
  });

  await step('a reload restores the session and the history', async () => {
    await alice.reload();
    await waitConnected(alice);
    await openRoom(alice, room);
    await expectMessageOnce(alice, 'After the blip');
    await expectMessageOnce(alice, 'Missed message one');
  });

  await step('bob discovers and joins a public room of alice', async () => {
    const lobby = `e2e lobby ${SUFFIX}`;
    await alice.click(tid('new-room-button'));
    await alice.fill(tid('room-name-input'), lobby);
    await alice.check(tid('room-visibility-public'));
    await alice.click(tid('create-room-submit'));
    await alice.locator(`${tid('room-title')}:text-is("${lobby}")`).waitFor();
    await bob.click(tid('discover-button'));
    const join = bob.locator(`${tid('discover-item')}:has-text("${lobby}") ${tid('join-button')}`);
    await searchUntil(bob, 'discover-search', lobby, join);
    await join.click();
    await bob.locator(`${tid('room-title')}:text-is("${lobby}")`).waitFor();
    await send(bob, 'Joined the lobby');
    await expectMessageOnce(alice, 'Joined the lobby');
  });

  await step('bob finds alice by search and follows her', async () => {
    await searchPerson(bob, aliceName);
    await bob.click(tid('follow-button'));
    await bob.locator(`${tid('follow-button')}[data-following="true"]`).waitFor();
    await bob.locator(`${tid('followers-link')}:has-text("1")`).waitFor();
  });

  await step('bob opens a DM with alice; alice gets it', async () => {
    await bob.click(tid('dm-button'));
    await bob.locator(tid('composer-input')).waitFor();
    await send(bob, 'A private word');
    await expectMessageOnce(bob, 'A private word');
    await alice.click(tid('nav-rooms'));
    const dm = alice.locator(`${tid('room-item')}[data-room-kind="dm"]`);
    await dm.waitFor();
    await dm.click();
    await expectMessageOnce(alice, 'A private word');
  });

  await step('alice blocks bob: the DM is hidden and bob cannot reach her', async () => {
    await searchPerson(alice, bobName);
    await alice.click(tid('block-button'));
    await alice.locator(`${tid('block-button')}[data-blocking="true"]`).waitFor();
    await alice.click(tid('nav-rooms'));
    await alice.locator(`${tid('room-item')}:has-text("${room}")`).waitFor();
    assert.equal(await alice.locator(`${tid('room-item')}[data-room-kind="dm"]`).count(), 0, 'DM hidden after block');
    await alice.reload();
    await alice.locator(`${tid('room-item')}:has-text("${room}")`).waitFor();
    assert.equal(await alice.locator(`${tid('room-item')}[data-room-kind="dm"]`).count(), 0, 'DM still hidden after reload');
    // Bob no longer sees alice in search, and her profile is not available.
    await bob.click(tid('nav-people'));
    await bob.fill(tid('people-search'), aliceName);
    await bob.locator(`${tid('people-search-status')}:text-matches("found|Nobody matches")`).waitFor();
    assert.equal(await bob.locator(`${tid('person-item')}:has-text("@${aliceName}")`).count(), 0, 'alice is not found by bob');
    const aliceId = await alice.evaluate(() => window.intellicolab.auth.user.id);
    await bob.evaluate((id) => { location.hash = `#/people/${id}`; }, aliceId);
    await bob.locator('h1:text-is("Profile not available")').waitFor();
    // Nor can bob open a DM with her: the chat service asks the user service and refuses.
    const dm = await bob.evaluate(async (id) => {
      const token = await window.intellicolab.auth.token();
      const res = await fetch('/chat/dms', {
        method: 'POST',
        headers: { Authorization: `Bearer ${token}`, 'Content-Type': 'application/json' },
        body: JSON.stringify({ user_id: id }),
      });
      return { status: res.status, code: (await res.json().catch(() => ({}))).code };
    }, aliceId);
    assert.deepEqual(dm, { status: 403, code: 'blocked' }, 'POST /chat/dms to a blocker is refused');
  });

  await step('a reused refresh token ends the session cleanly', async () => {
    await bob.evaluate(async () => {
      const key = 'intellicolab.refresh_token';
      const old = localStorage.getItem(key);
      await window.intellicolab.auth.refresh(); // rotates: the old token stops working
      localStorage.setItem(key, old);
      await window.intellicolab.auth.refresh().catch(() => {}); // reuse: 401 refresh_token_reused
    });
    await bob.locator(tid('login-form')).waitFor();
    await bob.locator(tid('auth-notice')).waitFor();
    assert.equal(await bob.evaluate(() => localStorage.getItem('intellicolab.refresh_token')), null);
    // The device token from bob's registration outlives the session and goes with the login.
    const device = await storedDeviceToken(bob, bobName);
    assert.ok(device, 'registration left a device token for bob');
    const loginRequest = bob.waitForRequest((r) => r.url().endsWith('/auth/login') && r.method() === 'POST');
    await bob.fill(tid('login-username'), bobName);
    await bob.fill(tid('login-password'), PASSWORD);
    await bob.click(tid('login-submit'));
    assert.equal((await loginRequest).postDataJSON().device_token, device, 'the login presents the device token');
    await waitConnected(bob);
    const renewed = await storedDeviceToken(bob, bobName);
    assert.ok(renewed && renewed !== device, 'the login replaced the device token with a new one');
    assert.equal(await storedDeviceToken(bob, `${bobName}@example.com`), renewed, 'found by email too');
  });

  await step('alice changes her email on her profile and confirms it from the mailed link, logged out', async () => {
    if (!DATA_DIR) { console.log('    (skipped: E2E_DATA_DIR not set, no outbox to read)'); return; }
    const oldEmail = `${aliceName}@example.com`;
    const newEmail = `${aliceName}.new@example.org`;
    await alice.click(tid('nav-profile'));
    await alice.locator(`${tid('current-email-value')}:text-is("${oldEmail}")`).waitFor();
    // A wrong current password is refused (403) and said so at the field.
    await alice.fill(tid('email-new'), newEmail);
    await alice.fill(tid('email-password'), `not-${PASSWORD}`);
    await alice.click(tid('email-submit'));
    await alice.locator(`${tid('email-form-error')}:has-text("incorrect")`).waitFor();
    assert.equal(await alice.getAttribute(tid('email-password'), 'aria-invalid'), 'true');
    await alice.fill(tid('email-password'), PASSWORD);
    await alice.click(tid('email-submit'));
    await alice.locator(`${tid('email-change-status')}:has-text("${newEmail}")`).waitFor();
    assert.equal(await alice.locator(tid('email-form-error')).isHidden(), true);
    // Nothing changes before the link is opened.
    await alice.click(tid('nav-rooms'));
    await alice.click(tid('nav-profile'));
    await alice.locator(`${tid('current-email-value')}:text-is("${oldEmail}")`).waitFor();

    const link = await mailedLink(newEmail, /http\S+\/#\/confirm-email\?token=[A-Za-z0-9_-]+/);
    assert.ok(link.startsWith(`${BASE_URL}/#/confirm-email?token=`), `link ${link} points at this system`);
    // A mail client elsewhere: a browser that is not logged in.
    const mail = await newUser('mail');
    await mail.goto(link);
    await mail.locator(tid('confirm-email-success')).waitFor();
    assert.equal(new URL(mail.url()).hash, '#/confirm-email', 'the token is taken out of the address bar');
    // The link is single-use.
    await mail.goto('about:blank');
    await mail.goto(link);
    await mail.locator(`${tid('confirm-email-error')}:has-text("already used")`).waitFor();
    await mail.context().close();
    delete pages.mail;

    await alice.click(tid('nav-rooms'));
    await alice.click(tid('nav-profile'));
    await alice.locator(`${tid('current-email-value')}:text-is("${newEmail}")`).waitFor();
    // A later login by the new address presents alice's device token too.
    assert.ok(await storedDeviceToken(alice, newEmail), 'the device token is found by the new email');
    assert.equal(await storedDeviceToken(alice, oldEmail), null, 'and no longer by the old one');
  });

  await step('bob resets a forgotten password from the mailed link and logs in with the new one', async () => {
    if (!DATA_DIR) { console.log('    (skipped: E2E_DATA_DIR not set, no outbox to read)'); return; }
    const bobEmail = `${bobName}@example.com`;
    const newPassword = `N3w-Battery-${SUFFIX}`;
    await bob.click(tid('logout-button'));
    await bob.click(tid('goto-forgot-password'));
    await bob.fill(tid('forgot-email'), bobEmail);
    await bob.click(tid('forgot-submit'));
    await bob.locator(`${tid('forgot-status')}:has-text("${bobEmail}")`).waitFor();
    const link = await mailedLink(bobEmail, /http\S+\/#\/reset\?token=[A-Za-z0-9_-]+/);
    await bob.goto(link);
    await bob.locator(tid('reset-form')).waitFor();
    assert.equal(new URL(bob.url()).hash, '#/reset', 'the token is taken out of the address bar');
    await bob.fill(tid('reset-password'), newPassword);
    await bob.fill(tid('reset-password-repeat'), `${newPassword}x`);
    await bob.click(tid('reset-submit'));
    await bob.locator(`${tid('reset-form')} .field-error:has-text("differ")`).waitFor();
    await bob.fill(tid('reset-password-repeat'), newPassword);
    await bob.click(tid('reset-submit'));
    await bob.locator(tid('reset-success')).waitFor();
    await bob.click(tid('goto-login'));
    await bob.fill(tid('login-username'), bobName);
    await bob.fill(tid('login-password'), PASSWORD);
    await bob.click(tid('login-submit'));
    await bob.locator(`${tid('form-error')}:visible`).waitFor();
    await bob.fill(tid('login-password'), newPassword);
    await bob.click(tid('login-submit'));
    await waitConnected(bob);
  });

  await step('no page errors or CSP violations', async () => {
    assert.deepEqual(problems, []);
  });

  await alice.screenshot({ path: path.join(OUT, 'alice-rooms.png') });
  await bob.click(tid('nav-rooms'));
  await openRoom(bob, room);
  await bob.screenshot({ path: path.join(OUT, 'bob-room.png') });
});

/** The message of the main timeline whose body contains `text`. */
const messageWith = (page, text) => page.locator(`${tid('message-list')} ${tid('message')}:has(${tid('message-body')}:has-text("${text}"))`);
/** Hover a message (its actions show on hover or focus) and click one of its action buttons. */
async function messageAction(page, text, action) {
  const m = messageWith(page, text).first();
  await m.hover();
  await m.locator(tid(action)).click();
}
/**
 * Post `n` messages `<prefix> 1` … `<prefix> n` to the room named `roomName` over HTTP, as
 * `page`'s user. The chat service limits sends per user (10/s, burst 20): wait as told on 429.
 */
async function postMessages(page, roomName, prefix, n) {
  await page.evaluate(async ({ roomName: name, prefix: p, n: count }) => {
    const { store, auth } = window.intellicolab;
    const r = [...store.rooms.values()].find((x) => x.name === name);
    for (let i = 1; i <= count; i++) {
      for (let attempt = 0; attempt < 20; attempt++) {
        const res = await fetch(`/chat/rooms/${r.id}/messages`, {
          method: 'POST',
          headers: { Authorization: `Bearer ${await auth.token()}`, 'Content-Type': 'application/json' },
          body: JSON.stringify({ body: `${p} ${i}`, client_msg_id: `${p}-${i}-${r.id}` }),
        });
        if (res.status !== 429) { if (!res.ok) throw new Error(`${p} ${i}: HTTP ${res.status}`); break; }
        await new Promise((done) => setTimeout(done, 1000 * Number(res.headers.get('Retry-After') || 1)));
      }
    }
  }, { roomName, prefix, n });
}
/** expectMessageOnce for bodies with mentions (elements inside: `:text-is` does not see through them). */
async function expectOnce(page, text) {
  await page.locator(`${tid('message')}[data-state="sent"]:has(${tid('message-body')}:has-text("${text}"))`).first().waitFor();
  await caughtUp(page);
  assert.equal(await messageWith(page, text).count(), 1, `"${text}" should be shown exactly once`);
}
const chip = (page, text, emoji) => messageWith(page, text).locator(`${tid('reaction-chip')}[data-emoji="${emoji}"]`);

test('chat v1.1: mentions, replies, threads, reactions, pins, seen by, presence and search, for two users', async () => {
  const ann = await newUser('ann');
  const ben = await newUser('ben');
  const annName = `ann_${SUFFIX}`;
  const benName = `ben_${SUFFIX}`;
  const room = `v11 room ${SUFFIX}`;
  // Each feature's step runs even when an earlier one failed (a server feature may be
  // missing): the test fails at the end, naming every feature that did.
  const failedFeatures = [];
  const feature = async (name, fn) => {
    try {
      await step(name, fn);
    } catch (err) {
      failedFeatures.push(`${name}: ${err.message.split('\n')[0]}`);
      for (const page of [ann, ben]) await page.keyboard.press('Escape').catch(() => {});
    }
  };

  await step('v1.1: two users share a private room', async () => {
    await register(ann, annName);
    await register(ben, benName);
    await ann.click(tid('new-room-button'));
    await ann.fill(tid('room-name-input'), room);
    await ann.check(tid('room-visibility-private'));
    await ann.click(tid('create-room-submit'));
    await ann.locator(`${tid('room-title')}:text-is("${room}")`).waitFor();
    await ann.click(tid('members-toggle'));
    const invite = ann.locator(`${tid('invite-item')}:has-text("@${benName}") ${tid('invite-button')}`);
    await searchUntil(ann, 'invite-search', benName, invite);
    await invite.click();
    await ann.locator(`${tid('member-list')} ${tid('member-item')}`).nth(1).waitFor();
    await ann.click(tid('members-toggle'));
    await openRoom(ben, room);
    await send(ann, 'Welcome to the v1.1 room');
    await expectOnce(ben, 'Welcome to the v1.1 room');
  });

  await feature('mentions: @ autocomplete by keyboard, the mention highlighted, a mention of me stands out', async () => {
    await ben.reload(); // the member list (and so the autocomplete) now has both
    await waitConnected(ben);
    await openRoom(ben, room);
    const input = ben.locator(tid('composer-input'));
    await input.focus();
    await input.pressSequentially(`Hi @${annName.slice(0, 3)}`, { delay: 15 });
    const option = ben.locator(`${tid('mention-list')}:visible ${tid('mention-option')}[data-username="${annName}"]`);
    await option.waitFor();
    assert.equal(await input.getAttribute('aria-expanded'), 'true');
    await ben.keyboard.press('Enter'); // picks, does not send
    assert.equal(await input.inputValue(), `Hi @${annName} `);
    await input.pressSequentially('have a look', { delay: 10 });
    await ben.keyboard.press('Enter');
    const text = `Hi @${annName} have a look`;
    await expectOnce(ben, text);
    await expectOnce(ann, text);
    await messageWith(ann, text).locator(`${tid('mention')}.mention-me:text-is("@${annName}")`).waitFor();
    assert.match(await messageWith(ann, text).getAttribute('class'), /mentions-me/);
    await messageWith(ben, text).locator(`${tid('mention')}:text-is("@${annName}")`).waitFor();
    assert.equal(await messageWith(ben, text).locator('.mention-me').count(), 0, 'not a mention of ben');
    // Escape closes the list without sending; @room by the owner mentions ben.
    await input.pressSequentially(`@${annName.slice(0, 3)}`, { delay: 10 });
    await option.waitFor();
    await ben.keyboard.press('Escape');
    await ben.locator(`${tid('mention-list')}:visible`).waitFor({ state: 'detached' }).catch(() => {});
    assert.equal(await ben.locator(`${tid('composer')} ${tid('mention-list')}`).isHidden(), true);
    await ben.fill(tid('composer-input'), '');
    await send(ann, '@room standup in five');
    await expectOnce(ben, '@room standup in five');
    await messageWith(ben, '@room standup in five').locator(`${tid('mention')}.mention-me:text-is("@room")`).waitFor();
  });

  await feature('replies quote the replied-to message on both sides', async () => {
    await messageAction(ann, 'have a look', 'reply-button');
    await ann.locator(`${tid('reply-bar')}:has-text("have a look")`).waitFor();
    await send(ann, 'Looking now');
    await expectOnce(ben, 'Looking now');
    await messageWith(ben, 'Looking now').locator('.reply-quote:has-text("have a look")').waitFor();
    await messageWith(ann, 'Looking now').locator('.reply-quote:has-text("have a look")').waitFor();
  });

  await feature('threads: a reply in a thread updates the root live, stays out of the timeline, and shows in both panels', async () => {
    await messageAction(ben, 'Welcome to the v1.1 room', 'thread-button');
    await ben.locator(`${tid('thread-panel')}:visible ${tid('thread-root')}:has-text("Welcome to the v1.1 room")`).waitFor();
    await ben.locator(`${tid('thread-status')}:has-text("No replies")`).waitFor();
    await ben.fill(tid('thread-input'), 'First thread reply');
    await ben.keyboard.press('Enter');
    await ben.locator(`${tid('thread-list')} ${tid('thread-message')}[data-state="sent"]:has-text("First thread reply")`).waitFor();
    const summary = messageWith(ann, 'Welcome to the v1.1 room').locator(tid('thread-summary'));
    await summary.locator(':text("1 reply")').waitFor();
    assert.match(await summary.innerText(), /last reply/);
    assert.equal(await ann.locator(`${tid('message-list')} ${tid('message-body')}:has-text("First thread reply")`).count(), 0, 'not in the timeline');
    await summary.click();
    await ann.locator(`${tid('thread-list')} ${tid('thread-message')}:has-text("First thread reply")`).waitFor();
    await ann.fill(tid('thread-input'), 'Second thread reply');
    await ann.click(tid('thread-send'));
    await ben.locator(`${tid('thread-list')} ${tid('thread-message')}:has-text("Second thread reply")`).waitFor();
    await messageWith(ben, 'Welcome to the v1.1 room').locator(`${tid('thread-summary')}:has-text("2 replies")`).waitFor();
    assert.equal(await ben.locator(`${tid('thread-list')} ${tid('thread-message')}`).count(), 2);
    // Escape closes the panel and gives focus back to the root.
    await ben.locator(tid('thread-input')).focus();
    await ben.keyboard.press('Escape');
    await ben.locator(tid('thread-panel')).waitFor({ state: 'hidden' });
    await ann.click(tid('thread-close'));
    // After a reload the counts come from the server.
    await ben.reload();
    await waitConnected(ben);
    await openRoom(ben, room);
    await messageWith(ben, 'Welcome to the v1.1 room').locator(`${tid('thread-summary')}:has-text("2 replies")`).waitFor();
    assert.equal(await ben.locator(`${tid('message-list')} ${tid('message-body')}:has-text("thread reply")`).count(), 0);
  });

  await feature('reactions: picker, shortcode, chips with counts, mine highlighted, toggle, who reacted, live', async () => {
    const text = 'Looking now';
    await messageAction(ann, text, 'react-button');
    await ann.locator(`${tid('reaction-picker')} ${tid('picker-emoji')}[data-emoji="👍"]`).click();
    await chip(ann, text, '👍').and(ann.locator('[data-count="1"][aria-pressed="true"]')).waitFor();
    await chip(ben, text, '👍').and(ben.locator('[data-count="1"][aria-pressed="false"]')).waitFor();
    await chip(ben, text, '👍').click(); // ben reacts too
    await chip(ben, text, '👍').and(ben.locator('[data-count="2"][aria-pressed="true"]')).waitFor();
    await chip(ann, text, '👍').and(ann.locator('[data-count="2"][aria-pressed="true"]')).waitFor();
    await chip(ann, text, '👍').hover();
    const who = messageWith(ann, text).locator(`${tid('reaction-who')}:visible`);
    await ann.waitForFunction(() => /reacted with/.test(document.querySelector('[data-testid="reaction-who"]:not([hidden])')?.textContent || ''));
    const whoText = await who.innerText();
    assert.match(whoText, /Ann_/);
    assert.match(whoText, /Ben_/);
    // A shortcode typed into the picker.
    await messageAction(ben, text, 'react-button');
    await ben.fill(tid('picker-shortcode'), ':tada:');
    await ben.keyboard.press('Enter');
    await chip(ann, text, ':tada:').and(ann.locator('[data-count="1"][aria-pressed="false"]')).waitFor();
    // Toggle off: the count goes down on both sides.
    await chip(ben, text, '👍').click();
    await chip(ben, text, '👍').and(ben.locator('[data-count="1"][aria-pressed="false"]')).waitFor();
    await chip(ann, text, '👍').and(ann.locator('[data-count="1"][aria-pressed="true"]')).waitFor();
    // By keyboard: focus the React button, the picker takes focus, arrows move, Enter picks.
    const m = messageWith(ben, text);
    await m.focus();
    await m.locator(tid('react-button')).focus();
    await ben.keyboard.press('Enter');
    await ben.locator(`${tid('picker-emoji')}[data-emoji="👍"]:focus`).waitFor();
    await ben.keyboard.press('ArrowRight');
    await ben.keyboard.press('Enter');
    await chip(ann, text, '❤️').and(ann.locator('[data-count="1"]')).waitFor();
    assert.equal(await ben.locator(tid('reaction-picker')).count(), 0, 'the picker closed');
    // The counts hold after a reload (from the server, with `me`).
    await ann.reload();
    await waitConnected(ann);
    await openRoom(ann, room);
    await chip(ann, text, '👍').and(ann.locator('[data-count="1"][aria-pressed="true"]')).waitFor();
    await chip(ann, text, '❤️').and(ann.locator('[data-count="1"][aria-pressed="false"]')).waitFor();
  });

  await feature('pins: the owner pins from the message menu, members see it live and in the pins panel', async () => {
    assert.equal(await messageWith(ben, 'Welcome to the v1.1 room').locator(tid('pin-button')).count(), 0, 'members cannot pin');
    await ben.click(tid('pins-toggle'));
    await ben.locator(`${tid('pins-status')}:has-text("Nothing is pinned")`).waitFor();
    await messageAction(ann, 'Welcome to the v1.1 room', 'pin-button');
    await messageWith(ben, 'Welcome to the v1.1 room').locator(tid('pin-mark')).waitFor();
    await ben.locator(`${tid('pins-list')} ${tid('pin-item')}:has-text("Welcome to the v1.1 room")`).waitFor();
    await ann.click(tid('pins-toggle'));
    await ann.locator(`${tid('pins-list')} ${tid('pin-item')}:has-text("Welcome to the v1.1 room")`).waitFor();
    await ann.click(tid('pin-remove'));
    await ben.locator(`${tid('pins-status')}:has-text("Nothing is pinned")`).waitFor();
    await messageWith(ben, 'Welcome to the v1.1 room').locator(tid('pin-mark')).waitFor({ state: 'detached' });
    await ann.keyboard.press('Escape');
    await ben.locator(tid('pins-toggle')).click();
    await ben.locator(tid('pins-panel')).waitFor({ state: 'hidden' });
  });

  await feature('seen by: the other member reading the last message shows under it', async () => {
    await send(ann, 'Did you see this?');
    await expectOnce(ben, 'Did you see this?');
    await ann.locator(`${tid('seen-by')}:visible:has-text("Ben_")`).waitFor();
    // After a reload it comes from GET …/read-markers.
    await ann.reload();
    await waitConnected(ann);
    await openRoom(ann, room);
    await ann.locator(`${tid('seen-by')}:visible:has-text("Ben_")`).waitFor();
    await ann.screenshot({ path: path.join(OUT, 'ann-v11-features.png') });
  });

  await feature('presence: dots on members, idle and back live, again after a reconnect', async () => {
    const benId = await ben.evaluate(() => window.intellicolab.auth.user.id);
    await ann.click(tid('members-toggle'));
    const dot = ann.locator(`${tid('member-item')}[data-user-id="${benId}"] ${tid('presence-dot')}`);
    await dot.and(ann.locator('[data-status="online"]')).waitFor();
    await ben.evaluate(() => window.intellicolab.setIdle(true));
    await dot.and(ann.locator('[data-status="idle"]')).waitFor();
    await ben.evaluate(() => window.intellicolab.setIdle(false));
    await dot.and(ann.locator('[data-status="online"]')).waitFor();
    // The subscription is sent again after a reconnect.
    await ann.evaluate(() => window.intellicolab.dropConnection());
    await waitConnected(ann);
    await ben.evaluate(() => window.intellicolab.setIdle(true));
    await dot.and(ann.locator('[data-status="idle"]')).waitFor();
    await ben.evaluate(() => window.intellicolab.setIdle(false));
    await dot.and(ann.locator('[data-status="online"]')).waitFor();
    await ann.click(tid('members-toggle'));
  });

  await feature('search: highlighted snippet (astral characters before the match), the room opened around the result', async () => {
    const target = `🎉✨ zebrafish ${SUFFIX} party`;
    await send(ben, target);
    await expectOnce(ann, target);
    // Sixty newer messages: opening around the result must not load them all.
    await postMessages(ben, room, 'filler', 60);
    await expectOnce(ann, 'filler 60');
    await ann.fill(tid('sidebar-search'), `zebrafish ${SUFFIX}`);
    await ann.keyboard.press('Enter');
    const result = ann.locator(`${tid('message-search-result')}:has-text("zebrafish")`);
    await searchUntil(ann, 'message-search-input', `zebrafish ${SUFFIX}`, result);
    const hits = await result.first().locator(tid('search-hit')).allInnerTexts();
    assert.ok(hits.map((x) => x.toLowerCase()).includes('zebrafish'), `"zebrafish" is highlighted (${JSON.stringify(hits)})`);
    assert.ok(hits.every((x) => !/[🎉✨]/u.test(x)), `the highlights cover the words, not the emoji before them (${JSON.stringify(hits)})`);
    assert.match(await result.first().locator(tid('message-search-snippet')).innerText(), /^🎉✨ zebrafish/);
    // By keyboard: ArrowDown from the box to the first result, Enter opens it.
    await ann.locator(tid('message-search-input')).focus();
    await ann.keyboard.press('ArrowDown');
    await ann.keyboard.press('Enter');
    await ann.locator(`${tid('room-title')}:text-is("${room}")`).waitFor();
    const hit = ann.locator(`${tid('message')}[data-highlighted="true"]`);
    await hit.locator(`${tid('message-body')}:has-text("zebrafish")`).waitFor();
    assert.ok(await hit.isVisible());
    const inView = await hit.evaluate((el) => {
      const box = el.getBoundingClientRect();
      const sc = el.closest('[data-testid="message-scroller"]').getBoundingClientRect();
      return box.top >= sc.top - 1 && box.bottom <= sc.bottom + 1;
    });
    assert.ok(inView, 'the result is scrolled into view');
    assert.equal(await ann.locator(`${tid('message-body')}:text-is("filler 60")`).count(), 0, 'newer messages load on the way down');
    // Scrolling down to the button loads the newer messages by itself (the way down) and
    // replaces the button under the click: then there is nothing left to click.
    const newer = ann.locator(tid('load-newer'));
    await newer.click({ timeout: 3000 }).catch(async (err) => { if (await newer.count()) throw err; });
    await ann.locator(`${tid('message-body')}:text-is("filler 60")`).waitFor();
  });

  await feature('phone width: panels become full-screen overlays', async () => {
    await ann.setViewportSize({ width: 390, height: 800 });
    await ann.goto(`${BASE_URL}/#/rooms`);
    await waitConnected(ann);
    await openRoom(ann, room);
    await messageAction(ann, 'filler 60', 'thread-button');
    const panel = ann.locator(tid('thread-panel'));
    await panel.locator(`${tid('thread-root')}:has-text("filler 60")`).waitFor();
    const box = await panel.boundingBox();
    assert.ok(box.x <= 1 && box.width >= 388, `the thread panel covers the width (${JSON.stringify(box)})`);
    await ann.click(tid('thread-close'));
    await ann.click(tid('pins-toggle'));
    const pins = await ann.locator(tid('pins-panel')).boundingBox();
    assert.ok(pins.x <= 1 && pins.width >= 388, `the pins panel covers the width (${JSON.stringify(pins)})`);
    await ann.keyboard.press('Escape');
    await ann.locator(tid('pins-panel')).waitFor({ state: 'hidden' });
    await ann.setViewportSize({ width: 1200, height: 800 });
  });

  // A picture of the v1.1 features for people reviewing a run (output/ann-v11-room.png).
  try {
    await ann.goto(`${BASE_URL}/#/rooms`);
    await openRoom(ann, room);
    await messageAction(ann, 'filler 60', 'thread-button');
    await ann.locator(`${tid('thread-root')}:has-text("filler 60")`).waitFor();
    await ann.screenshot({ path: path.join(OUT, 'ann-v11-room.png') });
  } catch (err) {
    console.log(`    (no v1.1 screenshot: ${err.message.split('\n')[0]})`);
  }

  await step('v1.1: no page errors or CSP violations', async () => {
    assert.deepEqual(problems, []);
  });
  assert.deepEqual(failedFeatures, [], `v1.1 features that failed: ${failedFeatures.join('; ')}`);
  await ann.context().close();
  await ben.context().close();
  delete pages.ann;
  delete pages.ben;
});

// ---------- notifications (v1.1) ----------

/**
 * Headless Chromium has no push service (`pushManager.subscribe` fails), so the page gets a
 * stand-in PushManager: a real P-256 key pair and auth secret (the server checks them), an
 * endpoint on a reserved name (https://push.invalid, never reached: the user stays connected,
 * and the subscription is deleted before the end), kept in localStorage across reloads. The
 * service worker itself is the real one (registered from /sw.js): a push is delivered to it
 * through the DevTools protocol. Its click handler is unit-tested in
 * web/test/notifications.test.mjs (a click on a notification cannot be made headless).
 */
function stubPushManager() {
  const KEY = 'e2e.push_stub';
  const b64u = (bytes) => btoa(String.fromCharCode(...bytes)).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
  const fromStored = (j) => j && {
    endpoint: j.endpoint,
    options: { applicationServerKey: Uint8Array.from(j.serverKey).buffer, userVisibleOnly: true },
    toJSON: () => ({ endpoint: j.endpoint, expirationTime: null, keys: j.keys }),
    unsubscribe: async () => { localStorage.removeItem(KEY); return true; },
  };
  PushManager.prototype.getSubscription = async function getSubscription() {
    return fromStored(JSON.parse(localStorage.getItem(KEY) || 'null'));
  };
  PushManager.prototype.subscribe = async function subscribe(opts) {
    const pair = await crypto.subtle.generateKey({ name: 'ECDH', namedCurve: 'P-256' }, true, ['deriveBits']);
    const raw = new Uint8Array(await crypto.subtle.exportKey('raw', pair.publicKey));
    const j = {
      endpoint: `https://push.invalid/e2e/${crypto.randomUUID()}`,
      serverKey: [...new Uint8Array(opts.applicationServerKey)],
      keys: { p256dh: b64u(raw), auth: b64u(crypto.getRandomValues(new Uint8Array(16))) },
    };
    localStorage.setItem(KEY, JSON.stringify(j));
    return fromStored(j);
  };
}

test('notifications v1.1: the bell, the inbox, room levels, settings and the push opt-in, for two users', async () => {
  const contextOptions = { timezoneId: 'Europe/Paris' };
  const cat = await newUser('cat', contextOptions);
  const dan = await newUser('dan');
  await cat.context().grantPermissions(['notifications'], { origin: BASE_URL });
  await cat.context().addInitScript(stubPushManager);
  const catName = `cat_${SUFFIX}`;
  const danName = `dan_${SUFFIX}`;
  const room = `notif room ${SUFFIX}`;
  const room2 = `notif room two ${SUFFIX}`;
  const failedFeatures = [];
  const feature = async (name, fn) => {
    try {
      await step(name, fn);
    } catch (err) {
      failedFeatures.push(`${name}: ${err.message.split('\n')[0]}`);
      for (const page of [cat, dan]) await page.keyboard.press('Escape').catch(() => {});
    }
  };
  const badge = cat.locator(tid('notif-badge'));
  /** The badge's number, or 0 when it is hidden. */
  const badgeCount = async () => ((await badge.isVisible()) ? Number(await badge.textContent()) : 0);
  const serverCount = () => cat.evaluate(async () => {
    const res = await fetch('/notifications/unread-count', { headers: { Authorization: `Bearer ${await window.intellicolab.auth.token()}` } });
    return (await res.json()).count;
  });

  await step('notifications: two users share two private rooms; cat looks elsewhere', async () => {
    await register(cat, catName);
    await register(dan, danName);
    for (const name of [room, room2]) {
      await cat.click(tid('new-room-button'));
      await cat.fill(tid('room-name-input'), name);
      await cat.check(tid('room-visibility-private'));
      await cat.click(tid('create-room-submit'));
      await cat.locator(`${tid('room-title')}:text-is("${name}")`).waitFor();
      await cat.click(tid('members-toggle'));
      const invite = cat.locator(`${tid('invite-item')}:has-text("@${danName}") ${tid('invite-button')}`);
      await searchUntil(cat, 'invite-search', danName, invite);
      await invite.click();
      await cat.locator(`${tid('member-list')} ${tid('member-item')}`).nth(1).waitFor();
      await cat.click(tid('members-toggle'));
    }
    await openRoom(dan, room);
    await cat.goto(`${BASE_URL}/#/people`); // not in the room: reading it would read the notification
    await waitConnected(cat);
    assert.equal(await badgeCount(), 0);
  });

  await feature('a mention shows on the bell live; the inbox item opens the room at the message and reads it', async () => {
    const text = `@${catName} please check the numbers`;
    await send(dan, text);
    await expectOnce(dan, 'please check the numbers');
    await cat.locator(`${tid('notif-badge')}:text-is("1")`).waitFor();
    assert.equal(await cat.locator(tid('notif-bell')).getAttribute('aria-label'), 'Notifications, 1 unread');
    // Enough newer messages that the mention is not on the room's latest page.
    await postMessages(dan, room, 'later', 60);
    await cat.click(tid('notif-bell'));
    const item = cat.locator(`${tid('inbox-item')}[data-kind="mention"]`);
    await item.waitFor();
    assert.equal(await item.count(), 1);
    assert.equal(await item.getAttribute('data-unread'), 'true');
    await item.locator(`${tid('inbox-preview')}:has-text("please check the numbers")`).waitFor();
    await item.locator(`${tid('inbox-room')}:text-is("${room}")`).waitFor();
    await item.locator(`text=/Dan_/`).first().waitFor(); // the actor's display name
    // A picture of the bell and the inbox for people reviewing a run (output/cat-inbox.png).
    await cat.screenshot({ path: path.join(OUT, 'cat-inbox.png') });
    await item.click();
    await cat.locator(`${tid('room-title')}:text-is("${room}")`).waitFor();
    const hit = cat.locator(`${tid('message')}[data-highlighted="true"]`);
    await hit.locator(`${tid('message-body')}:has-text("please check the numbers")`).waitFor();
    assert.ok(await hit.isVisible());
    assert.equal(await cat.locator(`${tid('message-body')}:text-is("later 60")`).count(), 0, 'opened around the mention, not at the latest');
    await badge.waitFor({ state: 'hidden' });
    assert.equal(await serverCount(), 0);
    assert.ok(cat.url().includes('around='), 'opened around the message');
  });

  await feature('the inbox: unread and all, mark all read', async () => {
    await cat.goto(`${BASE_URL}/#/people`);
    await waitConnected(cat);
    await send(dan, `@${catName} second ping`);
    await cat.locator(`${tid('notif-badge')}:text-is("1")`).waitFor();
    await cat.click(tid('notif-bell'));
    await cat.locator(`${tid('inbox-item')}[data-unread="true"]:has-text("second ping")`).waitFor();
    assert.equal(await cat.locator(tid('inbox-item')).count(), 1, 'unread only: the first one was read');
    await cat.click(tid('inbox-filter-all'));
    await cat.locator(`${tid('inbox-item')}[data-unread="false"]:has-text("please check the numbers")`).waitFor();
    assert.equal(await cat.locator(tid('inbox-item')).count(), 2);
    await cat.click(tid('inbox-mark-all'));
    await badge.waitFor({ state: 'hidden' });
    await cat.locator(`${tid('inbox-item')}[data-unread="false"]:has-text("second ping")`).waitFor();
    assert.equal(await serverCount(), 0);
    await cat.keyboard.press('Escape');
    await cat.locator(tid('inbox-panel')).waitFor({ state: 'hidden' });
    assert.equal(await cat.evaluate(() => document.activeElement?.dataset.testid), 'notif-bell', 'Escape returns to the bell');
  });

  await feature('the room menu: "nothing" silences a room, other rooms still notify; mute and unmute', async () => {
    await cat.click(tid('nav-rooms'));
    await openRoom(cat, room);
    const menuButton = cat.locator(tid('room-notif-button'));
    await cat.locator(`${tid('room-notif-button')}[data-level="mentions"]`).waitFor(); // a channel's default
    // By keyboard: the menu opens on the checked level, arrows move, Enter picks.
    await menuButton.focus();
    await cat.keyboard.press('Enter');
    await cat.locator(`${tid('room-notif-option')}[data-value="mentions"]:focus`).waitFor();
    await cat.keyboard.press('ArrowDown');
    await cat.keyboard.press('Enter');
    await cat.locator(`${tid('room-notif-button')}[data-level="none"]`).waitFor();
    await cat.goto(`${BASE_URL}/#/people`);
    await waitConnected(cat);
    await send(dan, `@${catName} silenced here`);
    await expectOnce(dan, 'silenced here');
    // The second room (default level) still notifies: once its badge shows, the first
    // room's message (sent before) has been processed too.
    await openRoom(dan, room2);
    await send(dan, `@${catName} over in room two`);
    await cat.locator(`${tid('notif-badge')}:text-is("1")`).waitFor();
    await cat.waitForTimeout(1500); // anything late for the silenced room would show by now
    assert.equal(await badgeCount(), 1);
    await cat.click(tid('notif-bell'));
    await cat.locator(`${tid('inbox-item')}:has-text("over in room two")`).waitFor();
    assert.equal(await cat.locator(`${tid('inbox-item')}:has-text("silenced here")`).count(), 0);
    await cat.keyboard.press('Escape');
    // Mute for 1 hour, shown on the button (also after a reload), then unmute.
    await cat.click(tid('nav-rooms'));
    await openRoom(cat, room2);
    await cat.click(tid('room-notif-button'));
    await cat.click(`${tid('room-notif-option')}[data-value="mute-1h"]`);
    await cat.locator(`${tid('room-notif-button')}[data-muted="true"]:has-text("Muted until")`).waitFor();
    await cat.reload();
    await waitConnected(cat);
    await cat.locator(`${tid('room-notif-button')}[data-muted="true"]`).waitFor();
    await cat.click(tid('room-notif-button'));
    await cat.click(`${tid('room-notif-option')}[data-value="unmute"]`);
    await cat.locator(`${tid('room-notif-button')}[data-muted="false"][data-level="mentions"]`).waitFor();
  });

  await feature('settings: prefilled time zone, an unknown one refused at the field, saved and shown after a reload', async () => {
    await cat.click(tid('notif-bell'));
    await cat.click(tid('inbox-settings'));
    const tz = cat.locator(tid('notif-timezone'));
    await tz.waitFor();
    assert.equal(await tz.inputValue(), 'Europe/Paris', 'prefilled with the browser\'s zone');
    await tz.fill('Mars/Olympus_Mons');
    await cat.click(tid('notif-settings-save'));
    await cat.locator(`${tid('notif-timezone')}[aria-invalid="true"]`).waitFor();
    await tz.fill('Europe/Paris');
    await cat.check(tid('notif-email-daily'));
    await cat.uncheck(tid('notif-previews'));
    await cat.click(tid('notif-settings-save'));
    await cat.locator(`${tid('notif-settings-status')}:text-is("Saved.")`).waitFor();
    await cat.reload();
    await waitConnected(cat);
    await tz.waitFor();
    assert.equal(await tz.inputValue(), 'Europe/Paris');
    assert.equal(await cat.locator(tid('notif-email-daily')).isChecked(), true);
    assert.equal(await cat.locator(tid('notif-previews')).isChecked(), false);
    assert.equal(await cat.locator(tid('notif-web_push')).isChecked(), true);
    const prefs = await cat.evaluate(() => window.intellicolab.store.api('/notifications/preferences'));
    assert.deepEqual(prefs, { email: 'daily', web_push: true, previews: false, timezone: 'Europe/Paris' });
  });

  await feature('browser push: the service worker registers, shows a pushed notification, the subscription is sent and deleted (stubbed PushManager)', async () => {
    await cat.goto(`${BASE_URL}/#/settings/notifications`);
    await waitConnected(cat);
    await cat.locator(`${tid('push-state')}[data-state="off"]`).waitFor();
    await cat.click(tid('push-toggle'));
    await cat.locator(`${tid('push-state')}[data-state="on"]`).waitFor();
    const state = await cat.evaluate(async () => {
      const reg = await navigator.serviceWorker.getRegistration('/');
      const { key } = await window.intellicolab.store.api('/notifications/push/vapid-public-key');
      const stub = JSON.parse(localStorage.getItem('e2e.push_stub'));
      const b64u = btoa(String.fromCharCode(...stub.serverKey)).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
      return {
        scope: reg?.scope,
        script: (reg?.active || reg?.waiting || reg?.installing)?.scriptURL,
        keyMatches: b64u === key.replace(/=+$/, ''),
        stored: JSON.parse(localStorage.getItem('intellicolab.push_subscription')),
        endpoint: stub.endpoint,
      };
    });
    assert.equal(state.scope, `${BASE_URL}/`);
    assert.equal(state.script, `${BASE_URL}/sw.js`);
    assert.ok(state.keyMatches, 'subscribed with the server\'s VAPID key');
    assert.equal(state.stored.endpoint, state.endpoint);
    assert.match(state.stored.id, /^[0-9a-f-]{36}$/);
    // A push as the server would send it, delivered to the real worker through the DevTools
    // protocol (no push service needed): it shows the notification, titled with the names
    // the page posted to the worker.
    const [latest] = (await cat.evaluate(() => window.intellicolab.store.api('/notifications', { query: { limit: 1 } }))).items;
    const cdp = await cat.context().newCDPSession(cat);
    const registrationId = await new Promise((resolve) => {
      cdp.on('ServiceWorker.workerRegistrationUpdated', ({ registrations }) => {
        const r = registrations.find((x) => x.scopeURL === `${BASE_URL}/` && !x.isDeleted);
        if (r) resolve(r.registrationId);
      });
      cdp.send('ServiceWorker.enable');
    });
    await cdp.send('ServiceWorker.deliverPushMessage', { origin: BASE_URL, registrationId, data: JSON.stringify(latest) });
    const shown = await cat.evaluate(async (tag) => {
      const reg = await navigator.serviceWorker.getRegistration('/');
      for (let i = 0; i < 100; i++) {
        const found = (await reg.getNotifications({ tag })).map((x) => ({ title: x.title, body: x.body, tag: x.tag, data: x.data }));
        if (found.length) return found;
        await new Promise((r) => setTimeout(r, 100)); // poll interval
      }
      return [];
    }, latest.id);
    assert.equal(shown.length, 1, 'the worker showed the pushed notification');
    assert.equal(shown[0].title, `Dan_m E2E mentioned you in ${room2}`);
    assert.equal(shown[0].body, latest.preview);
    assert.match(latest.preview, /over in room two/, 'made before previews were turned off');
    assert.equal(shown[0].data.href, `#/rooms/${latest.room_id}?around=${latest.seq}&msg=${latest.message_id}`);
    await cdp.detach();
    await cat.reload();
    await waitConnected(cat);
    await cat.locator(`${tid('push-state')}[data-state="on"]`).waitFor();
    const id = state.stored.id;
    await cat.click(tid('push-toggle'));
    await cat.locator(`${tid('push-state')}[data-state="off"]`).waitFor();
    // Deleted on the server: deleting it again is a 404.
    const again = await cat.evaluate(async (subId) => {
      const res = await fetch(`/notifications/push/subscriptions/${subId}`, { method: 'DELETE', headers: { Authorization: `Bearer ${await window.intellicolab.auth.token()}` } });
      return res.status;
    }, id);
    assert.equal(again, 404);
    assert.equal(await cat.evaluate(() => localStorage.getItem('intellicolab.push_subscription')), null);
  });

  await feature('phone width: the inbox covers the screen', async () => {
    await cat.setViewportSize({ width: 390, height: 800 });
    await cat.click(tid('notif-bell'));
    const box = await cat.locator(tid('inbox-panel')).boundingBox();
    assert.ok(box.x <= 1 && box.width >= 388, `the inbox covers the width (${JSON.stringify(box)})`);
    await cat.keyboard.press('Escape');
    await cat.setViewportSize({ width: 1200, height: 800 });
  });

  await step('notifications: no page errors or CSP violations', async () => {
    assert.deepEqual(problems, []);
  });
  assert.deepEqual(failedFeatures, [], `notification features that failed: ${failedFeatures.join('; ')}`);
  await cat.context().close();
  await dan.context().close();
  delete pages.cat;
  delete pages.dan;
});

/** A small RGB PNG (`width`×`height`, a gradient), made here: no image files in the repository. */
function makePng(width, height) {
  const crcTable = Array.from({ length: 256 }, (_, n) => {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    return c >>> 0;
  });
  const crc32 = (buf) => {
    let c = 0xffffffff;
    for (const b of buf) c = crcTable[(c ^ b) & 0xff] ^ (c >>> 8);
    return (c ^ 0xffffffff) >>> 0;
  };
  const chunk = (type, data) => {
    const len = Buffer.alloc(4);
    len.writeUInt32BE(data.length);
    const body = Buffer.concat([Buffer.from(type, 'ascii'), data]);
    const crc = Buffer.alloc(4);
    crc.writeUInt32BE(crc32(body));
    return Buffer.concat([len, body, crc]);
  };
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(width, 0);
  ihdr.writeUInt32BE(height, 4);
  ihdr.set([8, 2, 0, 0, 0], 8); // 8 bits, truecolour, deflate, no filter, no interlace
  const rows = [];
  for (let y = 0; y < height; y++) {
    const row = Buffer.alloc(1 + width * 3); // filter byte 0, then RGB
    for (let x = 0; x < width; x++) row.set([Math.round((255 * x) / width), 80, Math.round((255 * y) / height)], 1 + x * 3);
    rows.push(row);
  }
  return Buffer.concat([
    Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
    chunk('IHDR', ihdr),
    chunk('IDAT', zlib.deflateSync(Buffer.concat(rows))),
    chunk('IEND', Buffer.alloc(0)),
  ]);
}

test('files: an image and a document attached, the thumbnail and full-size view on the other side', async () => {
  const cal = await newUser('cal');
  const dee = await newUser('dee');
  const calName = `cal_${SUFFIX}`;
  const deeName = `dee_${SUFFIX}`;
  const room = `files room ${SUFFIX}`;
  const png = makePng(48, 36);
  const text = 'Notes for the files test\n'.repeat(40);

  await step('files: two users share a private room', async () => {
    await register(cal, calName);
    await register(dee, deeName);
    await cal.click(tid('new-room-button'));
    await cal.fill(tid('room-name-input'), room);
    await cal.check(tid('room-visibility-private'));
    await cal.click(tid('create-room-submit'));
    await cal.locator(`${tid('room-title')}:text-is("${room}")`).waitFor();
    await cal.click(tid('members-toggle'));
    const invite = cal.locator(`${tid('invite-item')}:has-text("@${deeName}") ${tid('invite-button')}`);
    await searchUntil(cal, 'invite-search', deeName, invite);
    await invite.click();
    await cal.locator(`${tid('member-list')} ${tid('member-item')}`).nth(1).waitFor();
    await cal.click(tid('members-toggle'));
    await openRoom(dee, room);
  });

  await step('files: a chip can be removed before sending', async () => {
    await cal.setInputFiles(tid('attach-input'), { name: 'unwanted.txt', mimeType: 'text/plain', buffer: Buffer.from('no') });
    const chipEl = cal.locator(`${tid('attachment-chip')}:has-text("unwanted.txt")`);
    await chipEl.waitFor();
    await chipEl.locator(tid('attachment-remove')).click();
    await chipEl.waitFor({ state: 'detached' });
  });

  await step('files: cal attaches a PNG and a text file (upload progress, chips) and sends them', async () => {
    await cal.setInputFiles(tid('attach-input'), [
      { name: 'gradient.png', mimeType: 'image/png', buffer: png },
      { name: 'notes.txt', mimeType: 'text/plain', buffer: Buffer.from(text) },
    ]);
    await cal.locator(`${tid('attachment-chip')}[data-state="done"]:has-text("gradient.png")`).waitFor();
    await cal.locator(`${tid('attachment-chip')}[data-state="done"]:has-text("notes.txt")`).waitFor();
    assert.equal(await cal.locator(tid('upload-progress')).isHidden(), true, 'no progress bar once uploaded');
    await send(cal, 'Two files for you');
    await cal.locator(`${tid('attachment-chip')}`).first().waitFor({ state: 'detached' });
    await expectOnce(cal, 'Two files for you');
  });

  await step('files: dee sees the thumbnail, opens the full-size image and closes it with Escape', async () => {
    const m = messageWith(dee, 'Two files for you');
    await m.waitFor();
    const thumb = m.locator(`${tid('attachment-thumb')}[data-loaded="true"]`);
    await thumb.waitFor();
    const shown = await thumb.locator('img').evaluate((img) => ({ w: img.naturalWidth, src: img.src }));
    assert.ok(shown.w > 0 && shown.src.startsWith('blob:'), `the thumbnail is drawn from a blob URL (${JSON.stringify(shown)})`);
    await thumb.click();
    const viewer = dee.locator(tid('image-viewer'));
    await viewer.waitFor();
    await dee.waitForFunction(() => document.querySelector('[data-testid="viewer-image"]')?.naturalWidth > 0);
    assert.equal(await viewer.locator(tid('viewer-image')).evaluate((img) => img.naturalWidth), 48, 'the full-size image');
    await dee.keyboard.press('Escape');
    await viewer.waitFor({ state: 'detached' });
  });

  await step('files: dee sees the document card and downloads it under its name', async () => {
    const card = messageWith(dee, 'Two files for you').locator(`${tid('file-card')}:has-text("notes.txt")`);
    await card.waitFor();
    assert.match(await card.innerText(), /1 KB/);
    const [download] = await Promise.all([dee.waitForEvent('download'), card.hover().then(() => card.locator(tid('file-download')).click())]);
    assert.equal(download.suggestedFilename(), 'notes.txt');
    const saved = await download.path();
    assert.equal(fs.readFileSync(saved, 'utf8'), text);
  });

  await step('files: an image alone, without text, is a message too', async () => {
    await cal.setInputFiles(tid('attach-input'), { name: 'alone.png', mimeType: 'image/png', buffer: makePng(8, 8) });
    await cal.locator(`${tid('attachment-chip')}[data-state="done"]:has-text("alone.png")`).waitFor();
    await cal.click(tid('send-button'));
    await dee.locator(`${tid('attachment-thumb')}[data-loaded="true"][aria-label^="View alone.png"]`).waitFor();
  });

  // A picture of the attachments for people reviewing a run (output/dee-files.png).
  await dee.screenshot({ path: path.join(OUT, 'dee-files.png') }).catch(() => {});

  await step('files: no page errors or CSP violations', async () => {
    assert.deepEqual(problems, []);
  });
  await cal.context().close();
  await dee.context().close();
  delete pages.cal;
  delete pages.dee;
});

/** RFC 6238 TOTP (SHA-1, 6 digits, 30 s) of a base32 secret at `ms`, in node's crypto. */
function totp(secret, ms = Date.now()) {
  const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567';
  let bits = '';
  for (const ch of secret.replace(/=+$/, '').toUpperCase()) bits += alphabet.indexOf(ch).toString(2).padStart(5, '0');
  const key = Buffer.from(bits.match(/.{8}/g).map((b) => parseInt(b, 2)));
  const counter = Buffer.alloc(8);
  counter.writeBigUInt64BE(BigInt(Math.floor(ms / 30_000)));
  const mac = crypto.createHmac('sha1', key).update(counter).digest();
  const offset = mac[mac.length - 1] & 0x0f;
  return String((mac.readUInt32BE(offset) & 0x7fffffff) % 1_000_000).padStart(6, '0');
}

test('auth v1.1: the Security page — passkeys (virtual authenticator), two-factor login, verify banner, account deletion', async () => {
  // WebAuthn refuses IP addresses as relying-party ids: passkeys need the app at a name.
  // web_e2e.rs configures auth's passkey origin as http://localhost:<gateway port>.
  const APP = BASE_URL.replace('://127.0.0.1', '://localhost');
  const cleo = await newUser('cleo');
  const cleoName = `cleo_${SUFFIX}`;
  const logOut = async () => {
    await cleo.click(tid('logout-button'));
    await cleo.locator(tid('login-form')).waitFor();
  };
  const logInWithPassword = async () => {
    await cleo.fill(tid('login-username'), cleoName);
    await cleo.fill(tid('login-password'), PASSWORD);
    await cleo.click(tid('login-submit'));
  };
  const failedFeatures = [];
  const feature = async (name, fn) => {
    try { await step(name, fn); } catch (err) { failedFeatures.push(`${name}: ${err.message.split('\n')[0]}`); }
  };
  // The two-factor, verification and deletion backend is the v1.1 `user` with `mfa_enabled`.
  let v11Auth = false;

  await step('auth v1.1: cleo registers at the app\'s name (localhost)', async () => {
    await register(cleo, cleoName, APP);
    v11Auth = await cleo.evaluate(() => 'mfa_enabled' in (window.intellicolab.auth.user || {}));
    if (!v11Auth) console.log('    (the server has no two-factor login yet: the TOTP, banner and deletion steps are skipped)');
  });

  await feature('auth v1.1: the "verify your email" banner goes once the mailed link is opened', async () => {
    if (!v11Auth || !DATA_DIR) { console.log('    (skipped)'); return; }
    await cleo.locator(tid('verify-banner')).waitFor();
    await cleo.click(tid('verify-resend'));
    const link = await mailedLink(`${cleoName}@example.com`, /http\S+\/#\/(verify|confirm)-email\?token=[A-Za-z0-9_-]+/);
    await cleo.goto(link.replace('://127.0.0.1', '://localhost'));
    await cleo.locator(tid('confirm-email-success')).waitFor();
    await cleo.click(tid('nav-rooms'));
    await cleo.locator(tid('verify-banner')).waitFor({ state: 'detached' });
  });

  await feature('auth v1.1: a passkey is added with Chromium\'s virtual authenticator, then logs in without a password', async () => {
    const cdp = await cleo.context().newCDPSession(cleo);
    await cdp.send('WebAuthn.enable');
    const { authenticatorId } = await cdp.send('WebAuthn.addVirtualAuthenticator', {
      options: { protocol: 'ctap2', transport: 'internal', hasResidentKey: true, hasUserVerification: true, isUserVerified: true, automaticPresenceSimulation: true },
    });
    await cleo.click(tid('nav-security'));
    await cleo.locator(tid('passkey-none')).waitFor();
    await cleo.fill(tid('passkey-name'), 'Laptop');
    await cleo.click(tid('passkey-add'));
    await cleo.locator(`${tid('passkey-item')}:has-text("Laptop")`).waitFor();
    await cleo.locator(`${tid('passkey-item')}:has-text("never used")`).waitFor();
    const { credentials } = await cdp.send('WebAuthn.getCredentials', { authenticatorId });
    assert.equal(credentials.length, 1, 'one credential on the authenticator');
    assert.equal(credentials[0].isResidentCredential, true, 'a discoverable (resident) credential');
    await logOut();
    await cleo.click(tid('login-passkey'));
    await cleo.locator(tid('room-list')).waitFor();
    assert.equal(await cleo.evaluate(() => window.intellicolab.auth.user.username), cleoName);
    await cleo.click(tid('nav-security'));
    await cleo.locator(`${tid('passkey-item')}:has-text("last used")`).waitFor();
  });

  let enrolledAt = 0;
  let recovery = [];
  let secret = '';
  await feature('auth v1.1: two-factor login is set up from the QR page with a code computed here', async () => {
    if (!v11Auth) { console.log('    (skipped)'); return; }
    await cleo.click(tid('nav-security'));
    await cleo.click(tid('totp-start'));
    await cleo.fill(tid('totp-password'), PASSWORD);
    await cleo.click(tid('totp-setup-submit'));
    await cleo.locator(`${tid('totp-qr')} svg path`).waitFor();
    secret = (await cleo.locator(tid('totp-secret')).innerText()).trim();
    enrolledAt = Date.now();
    await cleo.fill(tid('totp-code'), totp(secret, enrolledAt));
    await cleo.click(tid('totp-enable-submit'));
    await cleo.locator(tid('recovery-codes')).waitFor();
    recovery = (await cleo.locator(`${tid('recovery-codes')} li`).allInnerTexts()).map((c) => c.trim());
    assert.equal(recovery.length, 10, `ten recovery codes (${recovery.length})`);
    await cleo.click(tid('recovery-done'));
    await cleo.locator(`${tid('totp-status')}:has-text("On")`).waitFor();
  });

  await feature('auth v1.1: a password login asks for the code; a recovery code and then an app code let cleo in', async () => {
    if (!v11Auth || !recovery.length) { console.log('    (skipped)'); return; }
    await logOut();
    await logInWithPassword();
    await cleo.locator(tid('mfa-form')).waitFor();
    await cleo.click(tid('mfa-use-recovery'));
    await cleo.fill(tid('mfa-code'), recovery[0]);
    await cleo.click(tid('mfa-submit'));
    await cleo.locator(tid('room-list')).waitFor();
    await logOut();
    await logInWithPassword();
    await cleo.locator(tid('mfa-form')).waitFor();
    // The enrolment's code was used: wait for the next 30-second step.
    const next = (Math.floor(enrolledAt / 30_000) + 1) * 30_000;
    if (Date.now() < next) await new Promise((r) => setTimeout(r, next - Date.now() + 200));
    await cleo.fill(tid('mfa-code'), totp(secret));
    await cleo.click(tid('mfa-submit'));
    await cleo.locator(tid('room-list')).waitFor();
  });

  await feature('auth v1.1: a passkey login needs no two-factor step; the passkey is then removed', async () => {
    await logOut();
    await cleo.click(tid('login-passkey'));
    await cleo.locator(tid('room-list')).waitFor();
    await cleo.click(tid('nav-security'));
    await cleo.click(`${tid('passkey-item')}:has-text("Laptop") ${tid('passkey-delete')}`);
    await cleo.locator(tid('passkey-none')).waitFor();
  });

  await feature('auth v1.1: cleo deletes her account with her password and is logged out', async () => {
    if (!v11Auth) { console.log('    (skipped)'); return; }
    await cleo.click(tid('nav-security'));
    await cleo.fill(tid('delete-password'), PASSWORD);
    await cleo.check(tid('delete-confirm'));
    await cleo.click(tid('delete-submit'));
    await cleo.locator(`${tid('auth-notice')}:has-text("deleted")`).waitFor();
    await logInWithPassword();
    await cleo.locator(`${tid('form-error')}:not([hidden])`).waitFor();
  });

  await step('auth v1.1: no page errors or CSP violations', async () => {
    assert.deepEqual(problems, []);
  });
  assert.deepEqual(failedFeatures, [], `auth v1.1 features that failed: ${failedFeatures.join('; ')}`);
  await cleo.context().close();
  delete pages.cleo;
});
