// Unit tests of the attachment logic (files v1.1), under node with fakes: sizes for people,
// the pending attachments of a message box (progress, done, failed, removal aborting the
// upload, the limits), the upload request (XMLHttpRequest fake), the blob URL cache
// (one fetch per URL, revoked once, failures not cached) and the send frame's attachment_ids.
import { test } from 'node:test';
import assert from 'node:assert/strict';

import {
  formatSize, AttachmentDraft, BlobUrls, uploadFile, isImage, pastedName, attachmentSummary, MAX_ATTACHMENTS,
} from '../js/files.js';
import { sendFrame } from '../js/store.js';

test('formatSize: bytes, one decimal below 10, units of 1024', () => {
  assert.equal(formatSize(0), '0 B');
  assert.equal(formatSize(999), '999 B');
  assert.equal(formatSize(1000), '1 KB');
  assert.equal(formatSize(1536), '1.5 KB');
  assert.equal(formatSize(12 * 1024 + 300), '12 KB');
  assert.equal(formatSize(25 * 1024 * 1024), '25 MB');
  assert.equal(formatSize(1.25 * 1024 ** 3), '1.3 GB');
  // Never four digits of a unit: 1023 KB shows as 1 MB.
  assert.equal(formatSize(1023 * 1024), '1 MB');
  assert.equal(formatSize(-1), '');
  assert.equal(formatSize('x'), '');
});

test('isImage, pasted names, the list summary of a message of files only', () => {
  assert.equal(attachmentSummary({ body: 'hi', attachments: [{ filename: 'a.png' }] }), 'hi');
  assert.equal(attachmentSummary({ body: '', attachments: [{ filename: 'a.png' }, { filename: 'b.pdf' }] }), '📎 a.png, b.pdf');
  assert.equal(attachmentSummary({ body: '' }), '');
  assert.equal(isImage({ content_type: 'image/png', thumbnail_url: '/files/a/thumbnail' }), true);
  assert.equal(isImage({ content_type: 'image/svg+xml', thumbnail_url: null }), false);
  assert.equal(isImage({ content_type: 'application/pdf', thumbnail_url: null }), false);
  assert.equal(pastedName('image/png', new Date('2026-12-03T15:04:05Z')), 'pasted-20261203-150405.png');
  assert.equal(pastedName('application/x-unknown').endsWith('.bin'), true);
});

/** An uploader whose uploads the test finishes by hand. */
function fakeUploader() {
  const uploads = [];
  const upload = (blob, filename, onProgress) => {
    let resolve;
    let reject;
    const promise = new Promise((res, rej) => { resolve = res; reject = rej; });
    const u = { blob, filename, onProgress, resolve, reject, aborted: false };
    uploads.push(u);
    return { promise, abort: () => { u.aborted = true; reject(new Error('Upload cancelled.')); } };
  };
  return { upload, uploads };
}

const blob = (size) => ({ size, type: 'image/png' });
const settle = () => new Promise((resolve) => setImmediate(resolve));

test('draft: progress, done files in order, failures left out, busy while uploading', async () => {
  const { upload, uploads } = fakeUploader();
  const d = new AttachmentDraft(upload);
  let changes = 0;
  d.addEventListener('change', () => { changes += 1; });
  const a = d.add(blob(100), 'a.png');
  const b = d.add(blob(300), 'b.png');
  const c = d.add(blob(50), 'c.txt');
  assert.equal(d.busy, true);
  assert.deepEqual(d.ids, []);
  uploads[0].onProgress(50);
  uploads[1].onProgress(100);
  assert.equal(a.loaded, 50);
  assert.equal(d.progress, (50 + 100 + 0) / 450);
  uploads[1].resolve({ id: 'B' });
  uploads[0].resolve({ id: 'A' });
  uploads[2].reject(new Error('The file is too large.'));
  await settle();
  assert.equal(d.busy, false);
  assert.equal(d.progress, 1);
  assert.deepEqual(d.ids, ['A', 'B'], 'the order added, not the order finished');
  assert.equal(c.state, 'failed');
  assert.equal(c.error, 'The file is too large.');
  assert.equal(b.loaded, 300);
  assert.ok(changes >= 6);
  d.clear();
  assert.deepEqual(d.items, []);
});

test('draft: removing an upload aborts it and ignores its late answer', async () => {
  const { upload, uploads } = fakeUploader();
  const d = new AttachmentDraft(upload);
  const a = d.add(blob(10), 'a.png');
  d.add(blob(10), 'b.png');
  d.remove(a.key);
  assert.equal(uploads[0].aborted, true);
  uploads[0].resolve({ id: 'late' });
  uploads[1].resolve({ id: 'B' });
  await settle();
  assert.deepEqual(d.ids, ['B']);
  assert.equal(d.items.length, 1);
  d.remove('nope');
  assert.equal(d.items.length, 1);
});

test('draft: at most 10 files and the size limit, refused before uploading', () => {
  const { upload, uploads } = fakeUploader();
  const d = new AttachmentDraft(upload, { maxBytes: 1000 });
  assert.match(d.add(blob(1001), 'big.bin').error, /too large/);
  assert.equal(uploads.length, 0);
  for (let i = 0; i < MAX_ATTACHMENTS; i++) assert.equal(d.add(blob(1), `${i}.png`).state, 'uploading');
  assert.match(d.add(blob(1), 'eleven.png').error, /at most 10/);
  assert.equal(uploads.length, MAX_ATTACHMENTS);
  // clear() aborts what is still running.
  d.clear();
  assert.ok(uploads.every((u) => u.aborted));
});

test('uploadFile: POST /files?filename= with the raw body, bearer token and progress', async () => {
  const made = [];
  class FakeXHR {
    constructor() { this.headers = {}; this.upload = {}; made.push(this); }
    open(method, url) { this.method = method; this.url = url; }
    setRequestHeader(k, v) { this.headers[k] = v; }
    send(body) { this.body = body; }
    abort() { this.onabort?.(); }
  }
  const progress = [];
  const body = { size: 3 };
  const { promise } = uploadFile(body, 'my photo #1.png', (loaded, total) => progress.push([loaded, total]), { token: 'T', XHR: FakeXHR });
  const x = made[0];
  assert.equal(x.method, 'POST');
  assert.equal(x.url, '/files?filename=my%20photo%20%231.png');
  assert.equal(x.headers.Authorization, 'Bearer T');
  assert.equal(x.body, body, 'the raw bytes, not a form');
  x.upload.onprogress({ lengthComputable: true, loaded: 2, total: 3 });
  assert.deepEqual(progress, [[2, 3]]);
  x.status = 201;
  x.responseText = JSON.stringify({ id: 'F', filename: 'my photo #1.png' });
  x.onload();
  assert.equal((await promise).id, 'F');

  const second = uploadFile(body, 'x', null, { token: 'T', XHR: FakeXHR });
  made[1].status = 413;
  made[1].responseText = '';
  made[1].onload();
  await assert.rejects(second.promise, /too large/);
  const third = uploadFile(body, 'x', null, { token: 'T', XHR: FakeXHR });
  made[2].status = 400;
  made[2].responseText = JSON.stringify({ detail: 'filename is required', code: 'validation_failed' });
  made[2].onload();
  await assert.rejects(third.promise, /filename is required/);
  const fourth = uploadFile(body, 'x', null, { token: 'T', XHR: FakeXHR });
  fourth.abort();
  await assert.rejects(fourth.promise, /cancelled/);
});

test('BlobUrls: one fetch per URL, failures retried, everything revoked once, late ones freed', async () => {
  const fetched = [];
  let fail = true;
  const revoked = [];
  let n = 0;
  const pending = [];
  const blobs = new BlobUrls(async (url) => {
    fetched.push(url);
    if (url === '/files/x' && fail) { fail = false; throw new Error('503'); }
    if (url === '/files/slow') await new Promise((resolve) => pending.push(resolve));
    return { url };
  }, { create: () => `blob:${++n}`, revoke: (u) => revoked.push(u) });
  const [a1, a2] = await Promise.all([blobs.get('/files/a'), blobs.get('/files/a')]);
  assert.equal(a1, a2);
  assert.deepEqual(fetched, ['/files/a']);
  await assert.rejects(blobs.get('/files/x'));
  await settle();
  assert.equal(await blobs.get('/files/x'), 'blob:2', 'a failure is not cached');
  const slow = blobs.get('/files/slow');
  await settle();
  blobs.revokeAll();
  assert.deepEqual(revoked.sort(), ['blob:1', 'blob:2']);
  pending[0]();
  await assert.rejects(slow);
  assert.deepEqual(revoked.sort(), ['blob:1', 'blob:2', 'blob:3'], 'made after the view went: freed at once');
});

test('send frame: attachment_ids only when there are attachments', () => {
  const base = { room_id: 'r', body: '', client_msg_id: 'c' };
  assert.deepEqual(sendFrame({ ...base, attachments: [{ id: 'A' }, { id: 'B' }] }), { ...base, attachment_ids: ['A', 'B'] });
  assert.deepEqual(sendFrame({ ...base, body: 'hi', attachments: [] }), { ...base, body: 'hi' });
  assert.deepEqual(sendFrame({ ...base, body: 'hi' }), { ...base, body: 'hi' });
});
