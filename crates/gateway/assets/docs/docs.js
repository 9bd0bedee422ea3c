// API explorer: renders the merged OpenAPI document served by the gateway and lets a
// developer try operations against it. No inline scripts (CSP), no external resources.
"use strict";

const el = (tag, attrs = {}, ...children) => {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v; else node.setAttribute(k, v);
  }
  for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return node;
};

// Follows a local `$ref` of any component kind: schemas, and the shared responses
// (`#/components/responses/RateLimited`) the gateway adds to every operation.
const deref = (spec, node) => {
  const m = node && typeof node.$ref === "string" && node.$ref.match(/^#\/components\/([^/]+)\/([^/]+)$/);
  if (m) {
    const kind = spec.components && spec.components[m[1]];
    return (kind && kind[m[2]]) || node;
  }
  return node;
};

const example = (spec, schema, depth = 0) => {
  schema = deref(spec, schema);
  if (!schema || depth > 4) return null;
  if (schema.example !== undefined) return schema.example;
  if (schema.enum) return schema.enum[0];
  const type = Array.isArray(schema.type) ? schema.type.find((t) => t !== "null") : schema.type;
  if (type === "object" || schema.properties) {
    const out = {};
    for (const [k, v] of Object.entries(schema.properties || {})) out[k] = example(spec, v, depth + 1);
    return out;
  }
  if (type === "array") return [example(spec, schema.items, depth + 1)];
  if (type === "integer" || type === "number") return 0;
  if (type === "boolean") return false;
  if (type === "string") return schema.format === "uuid" ? "00000000-0000-0000-0000-000000000000" : "";
  return null;
};

function renderOperation(spec, path, method, op, pathParams = []) {
  // Parameters declared for the whole path (`/auth/sessions/{id}`) apply too.
  const params = [...pathParams, ...(op.parameters || [])].map((p) => deref(spec, p));
  const inputs = {};
  const body = el("div", { class: "body" });
  if (op.description) body.append(el("p", {}, op.description));
  if (params.length) {
    const table = el("table", {}, el("tr", {}, el("th", {}, "name"), el("th", {}, "in"), el("th", {}, "value")));
    for (const p of params) {
      const input = el("input", { placeholder: (p.schema && p.schema.type) || "" });
      inputs[p.in + ":" + p.name] = input;
      table.append(el("tr", {}, el("td", {}, p.name + (p.required ? " *" : "")), el("td", {}, p.in), el("td", {}, input)));
    }
    body.append(table);
  }
  let bodyInput = null;
  const media = op.requestBody && op.requestBody.content && op.requestBody.content["application/json"];
  if (media) {
    bodyInput = el("textarea", {});
    bodyInput.value = JSON.stringify(example(spec, media.schema), null, 2);
    body.append(el("div", {}, "Request body (application/json)"), bodyInput);
  }
  const responses = el("table", {}, el("tr", {}, el("th", {}, "status"), el("th", {}, "meaning")));
  for (const [code, r] of Object.entries(op.responses || {})) {
    responses.append(el("tr", {}, el("td", {}, code), el("td", {}, (deref(spec, r) || {}).description || "")));
  }
  body.append(responses);
  const output = el("pre", {});
  const button = el("button", { type: "button" }, "Try it");
  button.addEventListener("click", async () => {
    let url = path.replace(/\{([^}]+)\}/g, (_, name) => encodeURIComponent((inputs["path:" + name] || {}).value || ""));
    const query = new URLSearchParams();
    for (const p of params.filter((p) => p.in === "query")) {
      const v = inputs["query:" + p.name].value;
      if (v) query.set(p.name, v);
    }
    if ([...query].length) url += "?" + query;
    const headers = {};
    const token = document.getElementById("token").value.trim();
    if (token) headers["Authorization"] = "Bearer " + token;
    const init = { method: method.toUpperCase(), headers };
    if (bodyInput && bodyInput.value.trim()) {
      headers["Content-Type"] = "application/json";
      init.body = bodyInput.value;
    }
    output.textContent = "…";
    try {
      const res = await fetch(url, init);
      const text = await res.text();
      let pretty = text;
      try { pretty = JSON.stringify(JSON.parse(text), null, 2); } catch (_) { /* not JSON */ }
      output.textContent = `${res.status} ${res.statusText}\nx-request-id: ${res.headers.get("x-request-id")}\n\n${pretty}`;
    } catch (e) {
      output.textContent = String(e);
    }
  });
  body.append(button, output);
  const secured = (op.security || spec.security || []).length > 0;
  return el("details", { "data-search": (path + " " + (op.summary || "")).toLowerCase() },
    el("summary", {},
      el("span", { class: "method " + method }, method.toUpperCase()),
      el("span", { class: "path" }, path),
      el("span", { class: "summary" }, op.summary || ""),
      secured ? el("span", { class: "lock" }, "🔒 bearer") : ""),
    body);
}

async function main() {
  const ops = document.getElementById("ops");
  let spec;
  try {
    spec = await (await fetch("/openapi.json")).json();
  } catch (e) {
    ops.textContent = "Cannot load /openapi.json: " + e;
    return;
  }
  document.getElementById("title").textContent = `${spec.info.title} ${spec.info.version}`;
  document.getElementById("description").textContent = spec.info.description || "";
  const groups = new Map();
  for (const [path, item] of Object.entries(spec.paths || {}).sort()) {
    for (const method of ["get", "post", "put", "patch", "delete", "head", "options"]) {
      const op = item[method];
      if (!op) continue;
      const tag = (op.tags && op.tags[0]) || path.split("/")[1] || "other";
      if (!groups.has(tag)) groups.set(tag, []);
      groups.get(tag).push(renderOperation(spec, path, method, op, item.parameters || []));
    }
  }
  ops.replaceChildren();
  for (const [tag, nodes] of groups) ops.append(el("section", {}, el("h2", {}, tag), ...nodes));
  document.getElementById("filter").addEventListener("input", (ev) => {
    const q = ev.target.value.toLowerCase();
    for (const d of ops.querySelectorAll("details")) d.hidden = q && !d.dataset.search.includes(q);
  });
}

main();
