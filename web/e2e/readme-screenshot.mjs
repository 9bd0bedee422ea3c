// The README's picture: two users chatting (desktop and phone width side by side), as one PNG.
//
//   BASE_URL=http://127.0.0.1:8080 node readme-screenshot.mjs ../../docs/screenshot.png
//
// Needs a running system (any: it registers two fresh users) and playwright-core (install.sh).
import { chromium } from 'playwright-core';

const BASE_URL = (process.env.BASE_URL || 'http://127.0.0.1:8080').replace(/\/$/, '');
const OUT = process.argv[2] || 'screenshot.png';
const sfx = Date.now().toString(36).slice(-5);
const tid = (id) => `[data-testid="${id}"]`;

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium', headless: true,
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking', '--disable-sync'],
});
try {
  const mk = async (viewport) => {
    const page = await (await browser.newContext({ viewport, colorScheme: 'light' })).newPage();
    page.setDefaultTimeout(15000);
    return page;
  };
  const register = async (page, username, displayName) => {
    await page.goto(`${BASE_URL}/#/register`);
    await page.fill(tid('register-username'), username);
    await page.fill(tid('register-display-name'), displayName);
    await page.fill(tid('register-email'), `${username}@example.test`);
    await page.fill(tid('register-password'), `a-Long-passw0rd-${sfx}`);
    await page.click(tid('register-submit'));
    await page.locator(`${tid('connection-status')}[data-state="open"]`).waitFor();
  };
  const say = async (page, text) => {
    await page.fill(tid('composer-input'), text);
    await page.click(tid('send-button'));
    await page.locator(`${tid('message')}[data-state="sent"]:has-text("${text}")`).waitFor();
  };
  const alice = await mk({ width: 960, height: 600 });
  const bob = await mk({ width: 380, height: 600 });
  await register(alice, `alice_${sfx}`, 'Alice');
  await register(bob, `bob_${sfx}`, 'Bob');
  await alice.click(tid('new-room-button'));
  await alice.fill(tid('room-name-input'), 'design');
  await alice.fill(tid('room-topic-input'), 'Everything about the new look');
  await alice.click(tid('create-room-submit'));
  await alice.click(tid('members-toggle'));
  for (let i = 0; i < 10; i++) {
    await alice.fill(tid('invite-search'), '');
    await alice.fill(tid('invite-search'), `bob_${sfx}`);
    try { await alice.locator(tid('invite-button')).first().waitFor({ timeout: 2000 }); break; } catch { /* indexing */ }
  }
  await alice.locator(tid('invite-button')).first().click();
  await alice.locator(`${tid('member-item')} >> nth=1`).waitFor();
  await alice.click(tid('members-toggle'));
  const item = bob.locator(`${tid('room-item')}:has-text("design")`);
  await item.click();
  await say(alice, 'Morning! Shall we go over the new layout?');
  await say(bob, 'Yes. The room list looks much calmer now.');
  await say(alice, 'I also moved the members panel to the right.');
  await say(bob, 'Nice, and it works on my phone too.');
  await alice.locator(`${tid('message-body')}:text-is("Nice, and it works on my phone too.")`).waitFor();
  for (const page of [alice, bob]) {
    await page.evaluate(() => document.querySelectorAll('[data-testid="toast"]').forEach((t) => t.remove()));
  }
  const shots = await Promise.all([alice, bob].map(async (p) => (await p.screenshot()).toString('base64')));
  const frame = await mk({ width: 960 + 380 + 36, height: 600 + 24 });
  await frame.setContent(`<body style="margin:0;padding:12px;background:#cbd5e1;display:flex;gap:12px">
    ${shots.map((s) => `<img style="display:block;border-radius:6px" src="data:image/png;base64,${s}">`).join('')}</body>`);
  await frame.screenshot({ path: OUT });
  console.log(`wrote ${OUT}`);
} finally {
  await browser.close();
}
