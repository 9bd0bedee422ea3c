// Attachments in a room (files v1.1): the composer's attach button, drag-and-drop and paste
// of files, upload progress and removable chips of the pending attachments; in messages,
// image thumbnails (a full-size view in a dialog, Escape closes) and file cards (name, size,
// download). `/files/...` needs the bearer token, so bytes are fetched and shown from blob
// URLs, revoked when the view (or the dialog) goes.
import { h, replace, toast } from '../../dom.js';
import { auth } from '../../api.js';
import { AttachmentDraft, BlobUrls, formatSize, isImage, pastedName, uploadFile } from '../../files.js';

/** The bytes of a `/files/...` URL (with the bearer token). */
async function fetchBlob(url) {
  const token = await auth.token();
  const res = await fetch(url, { headers: { Authorization: `Bearer ${token}` } });
  if (!res.ok) throw new Error(res.status === 404 ? 'This file is no longer available.' : `Could not load the file (${res.status}).`);
  return res.blob();
}

const SVG = 'http://www.w3.org/2000/svg';
const ICONS = {
  // Feather-style outlines (24×24, stroked): drawn the same on every system, unlike emoji.
  paperclip: 'M21.44 11.05l-9.19 9.19a6 6 0 0 1-8.49-8.49l9.19-9.19a4 4 0 0 1 5.66 5.66l-9.2 9.19a2 2 0 0 1-2.83-2.83l8.49-8.48',
  file: 'M14 2H6a2 2 0 0 0-2 2v16a2 2 0 0 0 2 2h12a2 2 0 0 0 2-2V8zM14 2v6h6M8 13h8M8 17h8',
};

function icon(name) {
  const svg = document.createElementNS(SVG, 'svg');
  for (const [k, v] of Object.entries({ viewBox: '0 0 24 24', width: '20', height: '20', fill: 'none', stroke: 'currentColor', 'stroke-width': '2', 'stroke-linecap': 'round', 'stroke-linejoin': 'round', 'aria-hidden': 'true', class: 'icon' })) svg.setAttribute(k, v);
  const path = document.createElementNS(SVG, 'path');
  path.setAttribute('d', ICONS[name]);
  svg.appendChild(path);
  return svg;
}

const caches = new WeakMap(); // room state -> BlobUrls

/** The room view's blob URLs (thumbnails), revoked when the view goes. */
function blobsFor(state) {
  if (!caches.has(state)) {
    const blobs = new BlobUrls(fetchBlob);
    caches.set(state, blobs);
    state.onDispose(() => blobs.revokeAll());
  }
  return caches.get(state);
}

/** Saves a file under its name: fetched with the token, handed to the browser as a download. */
export async function downloadFile(file) {
  try {
    const url = URL.createObjectURL(await fetchBlob(file.url));
    const a = h('a', { href: url, download: file.filename || 'download', hidden: true });
    document.body.appendChild(a);
    a.click();
    a.remove();
    // The download has started from the URL by then; a minute covers slow disks.
    setTimeout(() => URL.revokeObjectURL(url), 60_000);
  } catch (e) {
    toast(e.message || 'Download failed', 'error');
  }
}

/** The full-size image in a modal dialog (Escape or Close closes it; focus goes back). */
export function openImageViewer(file, opener) {
  const img = h('img', { class: 'viewer-image', testid: 'viewer-image', alt: file.filename });
  const status = h('p', { class: 'muted', text: 'Loading…' });
  const close = h('button', { type: 'button', class: 'btn', testid: 'viewer-close', text: 'Close' });
  const dialog = h('dialog', { class: 'image-viewer', testid: 'image-viewer', 'aria-label': file.filename },
    h('div', { class: 'viewer-body' }, status, img),
    h('div', { class: 'viewer-bar' },
      h('span', { class: 'viewer-name', text: `${file.filename} · ${formatSize(file.size)}${file.width ? ` · ${file.width}×${file.height}` : ''}` }),
      h('button', { type: 'button', class: 'btn', testid: 'viewer-download', on: { click: () => downloadFile(file) }, text: 'Download' }),
      close));
  let blobUrl = null;
  let closed = false;
  close.addEventListener('click', () => dialog.close());
  // A click on the backdrop (the dialog element itself, outside its content) closes too.
  dialog.addEventListener('click', (e) => { if (e.target === dialog) dialog.close(); });
  dialog.addEventListener('close', () => {
    closed = true;
    if (blobUrl) URL.revokeObjectURL(blobUrl);
    dialog.remove();
    opener?.focus();
  });
  document.body.appendChild(dialog);
  dialog.showModal();
  close.focus();
  fetchBlob(file.url).then((blob) => {
    if (closed) return;
    blobUrl = URL.createObjectURL(blob);
    img.src = blobUrl;
    status.remove();
  }).catch((e) => { status.textContent = e.message; });
  return dialog;
}

/** A message's attachments: thumbnails for images, cards for other files (null when none). */
export function attachmentList(state, m) {
  const files = m.deleted ? [] : (m.attachments || []);
  if (!files.length) return null;
  const blobs = blobsFor(state);
  return h('div', { class: 'attachments', testid: 'attachments' }, files.map((f) => {
    if (isImage(f)) {
      const img = h('img', { class: 'attachment-thumb-img', alt: f.filename, width: f.width && f.width < 320 ? f.width : null });
      const btn = h('button', { type: 'button', class: 'attachment-thumb msg-ctl', tabindex: '-1', testid: 'attachment-thumb', 'data-file-id': f.id, 'aria-label': `View ${f.filename} (${formatSize(f.size)})`, title: f.filename }, img);
      btn.addEventListener('click', () => openImageViewer(f, btn));
      blobs.get(f.thumbnail_url).then((u) => { img.src = u; btn.dataset.loaded = 'true'; }).catch(() => { btn.classList.add('broken'); });
      return btn;
    }
    return h('div', { class: 'file-card', testid: 'file-card', 'data-file-id': f.id },
      h('span', { class: 'file-icon' }, icon('file')),
      h('span', { class: 'file-info' },
        h('span', { class: 'file-name', text: f.filename }),
        h('span', { class: 'file-size muted small', text: formatSize(f.size) })),
      h('button', { type: 'button', class: 'btn-link msg-ctl', tabindex: '-1', testid: 'file-download', 'aria-label': `Download ${f.filename}`, on: { click: () => downloadFile(f) }, text: 'Download' }));
  }));
}

/** The names of a pending message's attachments (it shows them until acknowledged). */
export function pendingAttachments(p) {
  if (!p.attachments?.length) return null;
  return h('p', { class: 'attachments-pending muted small' }, icon('paperclip'), ` ${p.attachments.map((f) => f.filename).join(', ')}`);
}

/**
 * The composer's attachments: an attach button (and its hidden file input), drop and paste
 * on `form` / `input`, and the tray (chips, progress) to place above the box. `onChange()`
 * runs when the pending attachments change.
 */
export function mountAttachmentPicker(state, { form, input, onChange }) {
  const draft = new AttachmentDraft((blob, filename, onProgress) => {
    // The token is read when the upload starts (refreshed first when it is about to expire).
    let inner = null;
    let aborted = false;
    const promise = auth.token().then((token) => {
      if (aborted) throw new Error('Upload cancelled.');
      inner = uploadFile(blob, filename, onProgress, { token });
      return inner.promise;
    });
    return { promise, abort: () => { aborted = true; inner?.abort(); } };
  });
  const fileInput = h('input', { type: 'file', multiple: true, hidden: true, testid: 'attach-input', tabindex: '-1', 'aria-hidden': 'true' });
  const button = h('button', { type: 'button', class: 'btn btn-ghost attach-button', testid: 'attach-button', 'aria-label': 'Attach files', title: 'Attach files (or drop or paste them here)' }, icon('paperclip'));
  const chips = h('ul', { class: 'attachment-chips', testid: 'attachment-chips', 'aria-label': 'Attachments to send' });
  const bar = h('progress', { class: 'upload-progress', testid: 'upload-progress', max: '1', value: '0', 'aria-label': 'Upload progress', hidden: true });
  const tray = h('div', { class: 'attachment-tray', hidden: true }, chips, bar);

  function add(files) {
    for (const f of files) {
      const r = draft.add(f, f.name || pastedName(f.type));
      if (r.error) { toast(r.error, 'error'); break; }
    }
  }
  function render() {
    tray.hidden = draft.items.length === 0;
    replace(chips, draft.items.map((it) => h('li', { class: `attachment-chip ${it.state}`, testid: 'attachment-chip', 'data-state': it.state, title: it.error || it.filename },
      h('span', { class: 'chip-name', text: it.filename }),
      h('span', { class: 'chip-size muted small', text: it.state === 'failed' ? (it.error || 'failed') : it.state === 'uploading' ? `${Math.round((it.loaded / (it.size || 1)) * 100)}%` : formatSize(it.size) }),
      h('button', { type: 'button', class: 'chip-remove', testid: 'attachment-remove', 'aria-label': `Remove ${it.filename}`, on: { click: () => { draft.remove(it.key); input.focus(); } }, text: '×' }))));
    bar.hidden = !draft.busy;
    bar.value = draft.progress;
    onChange?.();
  }
  draft.addEventListener('change', render);
  state.onDispose(() => draft.clear());

  button.addEventListener('click', () => fileInput.click());
  fileInput.addEventListener('change', () => {
    add([...fileInput.files]);
    fileInput.value = '';
    input.focus();
  });
  // Drag and drop anywhere on the composer.
  form.addEventListener('dragover', (e) => {
    if (![...(e.dataTransfer?.types || [])].includes('Files')) return;
    e.preventDefault();
    form.classList.add('drop-target');
  });
  form.addEventListener('dragleave', (e) => { if (!form.contains(e.relatedTarget)) form.classList.remove('drop-target'); });
  form.addEventListener('drop', (e) => {
    form.classList.remove('drop-target');
    const files = [...(e.dataTransfer?.files || [])];
    if (!files.length) return;
    e.preventDefault();
    add(files);
    input.focus();
  });
  // Pasted images (screenshots); pasted text stays text.
  input.addEventListener('paste', (e) => {
    const files = [...(e.clipboardData?.files || [])].filter((f) => f.type.startsWith('image/'));
    if (!files.length) return;
    e.preventDefault();
    add(files);
  });

  return { button, fileInput, tray, draft };
}
