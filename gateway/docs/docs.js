// docs.js builds the human-readable API reference at /docs from the
// gateway's /openapi.json, in the browser. It is our own code and loads
// nothing else: the page's Content-Security-Policy allows only this origin.
// Text from the document is always set with textContent, never as HTML.
"use strict";

// SERVICES gives each service its Chinese and English title. A service
// missing here is shown with its English name only.
const SERVICES = {
  DirectoryService: ["社区目录", "Directory"],
  FeedService: ["机构事件订阅", "Facility feed and webhooks"],
  LabService: ["医学检验中心", "Lab center"],
  ImagingService: ["医学影像中心", "Imaging center"],
  EcgService: ["心电诊断中心", "ECG center"],
  PathologyService: ["病理诊断中心", "Pathology center"],
  SterilizationService: ["消毒供应中心", "Sterilization supply center"],
  ReferralService: ["双向转诊", "Two-way referral"],
  RecognitionService: ["检查检验结果互认", "Result recognition"],
  AdminService: ["运维管理", "Administration"],
};

// LABELS are the page's own bilingual headings.
const LABELS = {
  services: ["服务", "Services"],
  schemas: ["数据结构", "Schemas"],
  parameters: ["参数", "Parameters"],
  body: ["请求体", "Request body"],
  response: ["响应", "Response"],
  name: ["名称", "Name"],
  in: ["位置", "In"],
  type: ["类型", "Type"],
  required: ["必填", "Required"],
  description: ["说明", "Description"],
  field: ["字段", "Field"],
  stream: ["流式响应", "streamed"],
  auth: ["每个请求都需要 Authorization: Bearer <token>；机构与医共体来自令牌。",
    "Every call needs Authorization: Bearer <token>; the facility and community come from the token."],
  error: ["无法加载 /openapi.json", "Could not load /openapi.json"],
};

const METHODS = ["get", "post", "put", "patch", "delete"];

// el makes an element with attributes and children (strings become text).
function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v !== undefined && v !== null) node.setAttribute(k, v);
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null) continue;
    node.append(typeof c === "string" ? document.createTextNode(c) : c);
  }
  return node;
}

// bilingual renders a [zh, en] pair.
function bilingual(pair) {
  return [el("span", { lang: "zh-CN" }, pair[0]), " ", el("span", { lang: "en" }, pair[1])];
}

function serviceTitle(tag) {
  const known = SERVICES[tag];
  if (known) return bilingual(known);
  return [el("span", { lang: "en" }, tag.replace(/Service$/, ""))];
}

// prose joins the hard-wrapped lines of a proto comment, keeping its
// paragraphs.
function prose(text) {
  return (text || "").replace(/([^\n])\n(?!\n)/g, "$1 ");
}

function refName(ref) {
  return ref.replace(/^#\/definitions\//, "");
}

function schemaLink(name) {
  return el("a", { href: "#schema-" + name, class: "schema-name" }, name);
}

// typeOf describes a schema in a few words, linking referenced schemas.
function typeOf(schema) {
  if (!schema) return "";
  if (schema.$ref) return schemaLink(refName(schema.$ref));
  if (schema.type === "array") {
    const inner = typeOf(schema.items);
    return el("span", {}, "array of ", inner);
  }
  let text = schema.type || "object";
  if (schema.format) text += " (" + schema.format + ")";
  if (schema.enum) text += ": " + schema.enum.join(" | ");
  return text;
}

function table(head, rows) {
  return el("table", {},
    el("thead", {}, el("tr", {}, head.map((h) => el("th", {}, bilingual(h))))),
    el("tbody", {}, rows));
}

function propertiesTable(schema, doc) {
  if (schema && schema.$ref) schema = doc.definitions[refName(schema.$ref)] || {};
  const props = (schema && schema.properties) || {};
  const required = new Set((schema && schema.required) || []);
  const rows = Object.entries(props).map(([name, p]) =>
    el("tr", {},
      el("td", {}, el("code", {}, name)),
      el("td", {}, typeOf(p)),
      el("td", {}, required.has(name) ? "✓" : ""),
      el("td", { class: "desc" }, prose(p.description || p.title))));
  if (rows.length === 0) return null;
  return table([LABELS.field, LABELS.type, LABELS.required, LABELS.description], rows);
}

function operation(path, method, op, doc) {
  const params = (op.parameters || []).filter((p) => p.in !== "body");
  const body = (op.parameters || []).find((p) => p.in === "body");
  const ok = (op.responses || {})["200"];
  const streamed = ok && ok.schema && ok.schema.properties && ok.schema.properties.result;
  const summary = (op.summary || "").split("\n\n")[0];
  const article = el("article", { class: "op", id: "op-" + op.operationId, "data-operation-id": op.operationId },
    el("h3", {}, el("span", { class: "method " + method }, method.toUpperCase()), path,
      streamed ? el("span", { class: "stream" }, bilingual(LABELS.stream)) : null),
    el("div", { class: "opid" }, op.operationId),
    el("p", { class: "op-description" }, prose(summary + (op.description ? "\n\n" + op.description : ""))));
  if (params.length > 0) {
    article.append(el("h4", {}, bilingual(LABELS.parameters)), table(
      [LABELS.name, LABELS.in, LABELS.type, LABELS.required, LABELS.description],
      params.map((p) => el("tr", {},
        el("td", {}, el("code", {}, p.name)),
        el("td", {}, p.in),
        el("td", {}, typeOf(p.schema || p)),
        el("td", {}, p.required ? "✓" : ""),
        el("td", { class: "desc" }, prose(p.description))))));
  }
  if (body) {
    article.append(el("h4", {}, bilingual(LABELS.body), " ", body.schema && body.schema.$ref ? schemaLink(refName(body.schema.$ref)) : ""));
    const t = propertiesTable(body.schema, doc);
    if (t) article.append(t);
  }
  if (ok && ok.schema) {
    const schema = streamed ? ok.schema.properties.result : ok.schema;
    article.append(el("h4", {}, bilingual(LABELS.response), " ", typeOf(schema)));
  }
  article.dataset.search = [method, path, op.operationId, op.summary || ""].join(" ").toLowerCase();
  return article;
}

function render(doc) {
  const content = document.getElementById("content");
  const toc = document.getElementById("toc");
  content.replaceChildren();
  const tags = (doc.tags || []).map((t) => t.name);
  const byTag = new Map(tags.map((t) => [t, []]));
  for (const [path, item] of Object.entries(doc.paths || {})) {
    for (const method of METHODS) {
      const op = item[method];
      if (!op) continue;
      const tag = (op.tags && op.tags[0]) || "Other";
      if (!byTag.has(tag)) byTag.set(tag, []);
      byTag.get(tag).push(operation(path, method, op, doc));
    }
  }
  const list = el("ul");
  content.append(el("p", { class: "auth" }, bilingual(LABELS.auth)));
  for (const [tag, ops] of byTag) {
    const info = (doc.tags || []).find((t) => t.name === tag) || {};
    const section = el("section", { class: "service", id: "service-" + tag, "data-service": tag },
      el("h2", {}, serviceTitle(tag)),
      el("p", { class: "service-description" }, prose(info.description)),
      ops);
    content.append(section);
    list.append(el("li", {}, el("a", { href: "#service-" + tag }, serviceTitle(tag)), " ", el("span", { class: "count" }, "(" + ops.length + ")")));
  }
  const schemas = el("section", { class: "schemas", id: "schemas" }, el("h2", {}, bilingual(LABELS.schemas)));
  for (const [name, schema] of Object.entries(doc.definitions || {}).sort(([a], [b]) => a.localeCompare(b))) {
    schemas.append(el("div", { id: "schema-" + name, class: "schema" },
      el("h4", {}, el("span", { class: "schema-name" }, name)),
      schema.description ? el("p", { class: "service-description" }, prose(schema.description)) : null,
      schema.enum ? el("p", {}, schema.enum.join(" | ")) : null,
      propertiesTable(schema, doc)));
  }
  content.append(schemas);
  toc.replaceChildren(el("h2", {}, bilingual(LABELS.services)), list,
    el("p", {}, el("a", { href: "#schemas" }, bilingual(LABELS.schemas))));
}

function filter(text) {
  const q = text.trim().toLowerCase();
  for (const op of document.querySelectorAll("article.op")) {
    op.classList.toggle("hidden", q !== "" && !op.dataset.search.includes(q));
  }
}

async function main() {
  try {
    const resp = await fetch("openapi.json", { headers: { Accept: "application/json" } });
    if (!resp.ok) throw new Error("HTTP " + resp.status);
    render(await resp.json());
    document.getElementById("filter").addEventListener("input", (e) => filter(e.target.value));
    if (location.hash) {
      const target = document.getElementById(location.hash.slice(1));
      if (target) target.scrollIntoView();
    }
    document.body.dataset.state = "ready";
  } catch (err) {
    const status = el("p", { id: "status", class: "error" }, bilingual(LABELS.error), ": " + err.message);
    document.getElementById("content").replaceChildren(status);
    document.body.dataset.state = "error";
  }
}

main();
