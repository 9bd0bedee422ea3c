// Parses every ```mermaid block of the Markdown files given as arguments with the
// real Mermaid parser (in jsdom, no browser). Used by deploy/check.sh, which runs
// it from a directory holding node_modules/{mermaid,jsdom}.
import fs from 'node:fs';
import { JSDOM } from 'jsdom';

const dom = new JSDOM('<!doctype html><html><body></body></html>', { pretendToBeVisual: true });
globalThis.window = dom.window;
globalThis.document = dom.window.document;
for (const k of ['Element', 'HTMLElement', 'SVGElement', 'DOMParser', 'MutationObserver', 'getComputedStyle']) {
  if (!(k in globalThis)) globalThis[k] = dom.window[k];
}
const { default: mermaid } = await import('mermaid');
mermaid.initialize({ startOnLoad: false });

let bad = 0;
let count = 0;
for (const file of process.argv.slice(2)) {
  const md = fs.readFileSync(file, 'utf8');
  for (const m of md.matchAll(/^```mermaid\n([\s\S]*?)^```/gm)) {
    count++;
    const line = md.slice(0, m.index).split('\n').length;
    try {
      await mermaid.parse(m[1]);
    } catch (e) {
      bad++;
      console.error(`${file}:${line}: ${String(e.message || e).split('\n').slice(0, 4).join('\n')}`);
    }
  }
}
console.log(`  ${count} mermaid diagrams parsed, ${bad} with errors`);
process.exit(bad ? 1 : 0);
