// Device tokens in js/api.js, under node's test runner with an in-memory localStorage and a
// fake fetch standing in for POST /auth/login (no browser, no server).
import { test, beforeEach } from 'node:test';
import assert from 'node:assert/strict';

const storage = new Map();
globalThis.localStorage = {
  getItem: (k) => (storage.has(k) ? storage.get(k) : null),
  setItem: (k, v) => storage.set(k, String(v)),
  removeItem: (k) => storage.delete(k),
};
const requests = [];
let issued = 0;
globalThis.fetch = async (url, init) => {
  const body = init?.body ? JSON.parse(init.body) : null;
  requests.push({ url, body });
  const [, name] = /^(\w+)/.exec(body.login) || [];
  const user = { id: `id-${name}`, username: name, email: `${name}@example.com`, display_name: name };
  const answer = { access_token: 'a', refresh_token: `r${++issued}`, token_type: 'Bearer', expires_in: 900, user, device_token: `device-${name}-${issued}` };
  return new Response(JSON.stringify(answer), { status: 200, headers: { 'Content-Type': 'application/json' } });
};

const { login, auth, deviceTokenFor } = await import('../js/api.js');

beforeEach(() => {
  storage.clear();
  requests.length = 0;
  auth.clear();
});

test('a first login sends no device token and keeps the one it gets, found by username and email', async () => {
  await login({ login: 'alice', password: 'pw' });
  assert.equal(requests[0].body.device_token, undefined);
  const token = deviceTokenFor('alice');
  assert.match(token, /^device-alice-/);
  assert.equal(deviceTokenFor('ALICE@example.com'), token, 'by email, case-insensitively');
  assert.equal(deviceTokenFor('bob'), null, 'account-bound');
  auth.clear();
});

test('the next login of the account presents its token and stores the new one', async () => {
  await login({ login: 'alice', password: 'pw' });
  const first = deviceTokenFor('alice');
  auth.clear();
  await login({ login: 'alice@example.com', password: 'pw' });
  assert.equal(requests[1].body.device_token, first);
  const second = deviceTokenFor('alice');
  assert.ok(second && second !== first, 'replaced after the success');
  await login({ login: 'bob', password: 'pw' });
  assert.equal(requests[2].body.device_token, undefined, "alice's token is not sent for bob");
  assert.equal(deviceTokenFor('alice'), second, "bob's login leaves alice's token");
  auth.clear();
});

test('at most 10 accounts are remembered: the least recently used is forgotten', async () => {
  for (let i = 0; i < 11; i++) {
    await login({ login: `user${i}`, password: 'pw' });
    await new Promise((r) => setTimeout(r, 2)); // distinct timestamps
  }
  assert.equal(deviceTokenFor('user0'), null);
  assert.ok(deviceTokenFor('user1'));
  assert.ok(deviceTokenFor('user10'));
  auth.clear();
});
