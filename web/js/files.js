// Attachments (files v1.1), the parts without a page: sizes for people, the pending
// attachments of a message box (uploads in progress, done, failed; removable), the upload
// itself (XMLHttpRequest: `fetch` reports no upload progress), authorised reads of file
// bytes (`/files/...` needs the bearer token, which an `<img src>` cannot send) and the blob
// URLs made of them. Nothing here touches the DOM at import time, so node tests it with fakes.

/** Files on one message (API.md: `attachment_ids` ≤ 10). */
export const MAX_ATTACHMENTS = 10;
/** The files service's default upload limit (API.md: 25 MiB): refused before sending. */
export const MAX_UPLOAD_BYTES = 25 * 1024 * 1024;

const UNITS = ['KB', 'MB', 'GB', 'TB'];

/**
 * A size for people: "0 B", "999 B", "1.5 KB", "12 KB", "25 MB" (units of 1024, one decimal
 * below 10 so small sizes keep their precision, none above, where it is noise).
 */
export function formatSize(bytes) {
  const n = Number(bytes);
  if (!Number.isFinite(n) || n < 0) return '';
  if (n < 1000) return `${Math.round(n)} B`;
  let value = n / 1024;
  let unit = 0;
  while (value >= 1000 && unit < UNITS.length - 1) {
    value /= 1024;
    unit += 1;
  }
  const shown = value < 10 ? value.toFixed(1) : String(Math.round(value));
  return `${shown.replace(/\.0$/, '')} ${UNITS[unit]}`;
}

/** Whether a `File` (the API's) is an image the files service made a thumbnail of. */
export const isImage = (file) => !!file?.thumbnail_url && String(file.content_type || '').startsWith('image/');

/** What a list shows of a message's text: its body, or the names of its attachments. */
export function attachmentSummary(m) {
  if (m?.body || !m?.attachments?.length) return m?.body || '';
  return `📎 ${m.attachments.map((f) => f.filename).join(', ')}`;
}

/** A name for a pasted image that has none ("image.png" for every paste otherwise). */
export function pastedName(type, now = new Date()) {
  const ext = { 'image/png': 'png', 'image/jpeg': 'jpg', 'image/gif': 'gif', 'image/webp': 'webp' }[type] || 'bin';
  const stamp = now.toISOString().slice(0, 19).replace(/[-:]/g, '').replace('T', '-');
  return `pasted-${stamp}.${ext}`;
}

let keySeq = 0;

/**
 * The attachments of a message being written. `upload(blob, filename, onProgress)` returns
 * `{promise, abort}` (the promise resolves with the API's `File`). Items are
 * `{key, filename, size, loaded, state: 'uploading'|'done'|'failed', file, error}`; every
 * change fires `change`. A removed upload is aborted, and its late answer is ignored.
 */
export class AttachmentDraft extends EventTarget {
  constructor(upload, { max = MAX_ATTACHMENTS, maxBytes = MAX_UPLOAD_BYTES } = {}) {
    super();
    this.upload = upload;
    this.max = max;
    this.maxBytes = maxBytes;
    this.items = [];
    this.aborts = new Map(); // key -> abort()
  }

  changed() { this.dispatchEvent(new Event('change')); }

  /**
   * Starts uploading `blob`. Returns the item, or `{error}` when it cannot be added (the
   * message is full, or the file is over the size limit) — nothing is uploaded then.
   */
  add(blob, filename) {
    if (this.items.length >= this.max) return { error: `A message can carry at most ${this.max} files.` };
    if (blob.size > this.maxBytes) return { error: `${filename} is too large (${formatSize(blob.size)}; at most ${formatSize(this.maxBytes)}).` };
    const item = { key: `a${++keySeq}`, filename, size: blob.size, loaded: 0, state: 'uploading', file: null, error: null };
    this.items.push(item);
    const { promise, abort } = this.upload(blob, filename, (loaded) => {
      if (!this.items.includes(item) || item.state !== 'uploading') return;
      item.loaded = Math.min(loaded, item.size);
      this.changed();
    });
    this.aborts.set(item.key, abort);
    promise.then((file) => {
      if (!this.items.includes(item)) return;
      item.state = 'done';
      item.loaded = item.size;
      item.file = file;
      this.changed();
    }, (e) => {
      if (!this.items.includes(item)) return;
      item.state = 'failed';
      item.error = e?.message || 'Upload failed';
      this.changed();
    }).finally(() => this.aborts.delete(item.key));
    this.changed();
    return item;
  }

  remove(key) {
    const i = this.items.findIndex((it) => it.key === key);
    if (i < 0) return;
    this.aborts.get(key)?.();
    this.aborts.delete(key);
    this.items.splice(i, 1);
    this.changed();
  }

  /** Forgets everything (after a send: the uploaded files now belong to the message). */
  clear() {
    for (const abort of this.aborts.values()) abort();
    this.aborts.clear();
    this.items = [];
    this.changed();
  }

  /** Uploads still running: the message cannot go yet. */
  get busy() { return this.items.some((it) => it.state === 'uploading'); }
  /** The uploaded files, in the order added (failed ones are left out). */
  get files() { return this.items.filter((it) => it.state === 'done').map((it) => it.file); }
  get ids() { return this.files.map((f) => f.id); }
  /** Overall progress 0..1 of the running uploads (1 when none). */
  get progress() {
    const running = this.items.filter((it) => it.state === 'uploading');
    const total = running.reduce((s, it) => s + it.size, 0);
    return total ? running.reduce((s, it) => s + it.loaded, 0) / total : 1;
  }
}

/**
 * `POST /files?filename=` with the raw bytes and the bearer token, reporting upload progress.
 * Returns `{promise, abort}`; the promise resolves with the API's `File` and rejects with an
 * Error whose message is the problem's `detail` (or a plain reason).
 */
export function uploadFile(blob, filename, onProgress, { token, XHR = globalThis.XMLHttpRequest } = {}) {
  const xhr = new XHR();
  const promise = new Promise((resolve, reject) => {
    xhr.open('POST', `/files?filename=${encodeURIComponent(filename)}`);
    xhr.setRequestHeader('Authorization', `Bearer ${token}`);
    xhr.setRequestHeader('Accept', 'application/json, application/problem+json');
    xhr.upload.onprogress = (e) => { if (e.lengthComputable) onProgress?.(e.loaded, e.total); };
    xhr.onload = () => {
      let body = null;
      try { body = JSON.parse(xhr.responseText); } catch { /* not JSON */ }
      if (xhr.status === 201 || xhr.status === 200) resolve(body);
      else reject(new Error(uploadError(xhr.status, body)));
    };
    xhr.onerror = () => reject(new Error('Network error: the file was not uploaded.'));
    xhr.onabort = () => reject(new Error('Upload cancelled.'));
    xhr.send(blob);
  });
  return { promise, abort: () => xhr.abort() };
}

function uploadError(status, body) {
  if (status === 413) return 'The file is too large.';
  if (body?.detail) return body.detail;
  if (status === 503) return 'File uploads are unavailable right now; try again later.';
  return `Upload failed (${status}).`;
}

/**
 * Blob URLs of file bytes fetched with `fetchBlob(url) → Promise<Blob>`, one per URL while
 * the cache lives (a message redrawn by a reaction does not download its thumbnail again).
 * `revokeAll()` frees them (when the room view goes).
 */
export class BlobUrls {
  constructor(fetchBlob, { create = (b) => URL.createObjectURL(b), revoke = (u) => URL.revokeObjectURL(u) } = {}) {
    this.fetchBlob = fetchBlob;
    this.create = create;
    this.revoke = revoke;
    this.urls = new Map(); // url -> Promise<blob url>
    this.made = new Set();
    this.closed = false;
  }

  get(url) {
    if (!this.urls.has(url)) {
      const p = this.fetchBlob(url).then((blob) => {
        const u = this.create(blob);
        // Made after revokeAll (the view went while it downloaded): freed at once.
        if (this.closed) { this.revoke(u); throw new Error('closed'); }
        this.made.add(u);
        return u;
      });
      // A failed fetch is not cached: the next drawing tries again.
      p.catch(() => this.urls.delete(url));
      this.urls.set(url, p);
    }
    return this.urls.get(url);
  }

  revokeAll() {
    this.closed = true;
    for (const u of this.made) this.revoke(u);
    this.made.clear();
    this.urls.clear();
  }
}
