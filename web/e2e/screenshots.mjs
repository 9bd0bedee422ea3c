// Takes screenshots of the main views (desktop and phone width) into output/screens/,
// e.g. for the README or a visual check:  BASE_URL=... node screenshots.mjs
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const BASE_URL = (process.env.BASE_URL || 'http://127.0.0.1:8080').replace(/\/$/, '');
const OUT = path.join(process.env.E2E_OUTPUT || path.join(path.dirname(fileURLToPath(import.meta.url)), 'output'), 'screens');
fs.mkdirSync(OUT, { recursive: true });
const sfx = Date.now().toString(36);
const tid = (id) => `[data-testid="${id}"]`;

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium', headless: true,
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});
try {
  const mk = async (vw) => {
    const ctx = await browser.newContext({ viewport: vw });
    const page = await ctx.newPage();
    page.setDefaultTimeout(10000);
    page.on('dialog', (d) => d.accept());
    page.on('console', (m) => { if (m.type() === 'error') console.log('console error:', m.text()); });
    page.on('pageerror', (e) => console.log('page error:', e.message));
    return page;
  };
  const reg = async (page, name) => {
    await page.goto(`${BASE_URL}/#/register`);
    await page.fill(tid('register-username'), name);
    await page.fill(tid('register-display-name'), name.split('_')[0].replace(/^./, (c) => c.toUpperCase()));
    await page.fill(tid('register-email'), `${name}@example.test`);
    await page.fill(tid('register-password'), 'a-Long-passw0rd-x');
    await page.click(tid('register-submit'));
    await page.locator(`${tid('connection-status')}[data-state="open"]`).waitFor();
  };
  const a = await mk({ width: 1280, height: 800 });
  await a.goto(`${BASE_URL}/#/login`);
  await a.screenshot({ path: path.join(OUT, 'login.png') });
  await a.goto(`${BASE_URL}/#/register`);
  await a.click(tid('register-submit'));
  await a.screenshot({ path: path.join(OUT, 'register-errors.png') });
  await reg(a, `alice_${sfx}`);
  const b = await mk({ width: 390, height: 780 });
  await reg(b, `bob_${sfx}`);
  await a.click(tid('new-room-button'));
  await a.fill(tid('room-name-input'), 'design');
  await a.fill(tid('room-topic-input'), 'Everything about the new look');
  await a.click(tid('create-room-submit'));
  await a.locator(tid('composer-input')).waitFor();
  await a.click(tid('members-toggle'));
  await a.fill(tid('invite-search'), `bob_${sfx}`);
  await a.click(tid('invite-button'));
  await a.locator(`${tid('member-item')} >> nth=1`).waitFor();
  await a.evaluate(() => document.querySelectorAll('[data-testid="toast"]').forEach((t) => t.remove()));
  await a.screenshot({ path: path.join(OUT, 'members.png') });
  await a.click(tid('members-toggle'));
  for (const t of ['Morning! Shall we go over the new layout?', 'I pushed the sidebar changes.']) {
    await a.fill(tid('composer-input'), t); await a.click(tid('send-button'));
  }
  await b.locator(tid('room-item')).first().click();
  await b.locator(tid('composer-input')).waitFor();
  await b.fill(tid('composer-input'), 'Looks great on my phone'); await b.click(tid('send-button'));
  await a.locator(`${tid('message-body')}:has-text("Looks great")`).waitFor();
  await a.locator(`${tid('message')} >> nth=1`).hover();
  await a.locator(`${tid('message')} >> nth=1`).locator(tid('reply-button')).click();
  await a.fill(tid('composer-input'), 'Thanks!');
  await b.fill(tid('composer-input'), 'typing');
  await b.locator(tid('composer-input')).press('Space');
  await a.waitForTimeout(300);
  const noToasts = (page) => page.evaluate(() => document.querySelectorAll('[data-testid="toast"]').forEach((t) => t.remove()));
  await noToasts(a);
  await a.screenshot({ path: path.join(OUT, 'chat.png') });
  await a.click(tid('send-button'));
  await b.locator(`${tid('message-body')}:text-is("Thanks!")`).waitFor();
  await b.screenshot({ path: path.join(OUT, 'phone-chat.png') });
  await b.click(tid('nav-rooms'));
  await b.screenshot({ path: path.join(OUT, 'phone-rooms.png') });
  await a.click(tid('nav-people'));
  await a.waitForTimeout(300);
  await a.screenshot({ path: path.join(OUT, 'people.png') });
  await a.fill(tid('people-search'), 'bob');
  await a.locator(tid('person-link')).first().click();
  await a.locator(tid('follow-button')).click();
  await a.locator(`${tid('follow-button')}[data-following="true"]`).waitFor();
  await noToasts(a);
  await a.screenshot({ path: path.join(OUT, 'profile.png') });
  await a.click(tid('nav-profile'));
  await a.locator(tid('profile-save')).waitFor();
  await a.screenshot({ path: path.join(OUT, 'me.png') });
  await a.click(tid('nav-sessions'));
  await a.locator(tid('session-item')).first().waitFor();
  await a.screenshot({ path: path.join(OUT, 'sessions.png') });
  await b.click(tid('nav-people'));
  await b.screenshot({ path: path.join(OUT, 'phone-people.png') });
  console.log(`screenshots in ${OUT}`);
} finally {
  await browser.close();
}
