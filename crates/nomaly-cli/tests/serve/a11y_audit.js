// An accessibility audit of the page as it stands, run in the browser by the dashboard tests.
// It checks the WCAG 2.1 AA rules a page built from text, tables, links, buttons and SVG charts
// can break (the subset axe-core's default rules cover for such a page): names for everything
// operable, labelled form fields, text contrast, headings in order, unique ids, tables with
// headers, images with text, progress bars with values, and nothing reachable only by mouse.
// Returns a list of violations, each "rule: element — detail"; an empty list passes.
const problems = [];
const describe = (e) => {
  let s = e.tagName.toLowerCase();
  if (e.id) s += "#" + e.id;
  const cls = (e.getAttribute("class") || "").trim();
  if (cls) s += "." + cls.split(/\s+/).join(".");
  const text = (e.textContent || "").trim().slice(0, 30);
  return text ? s + ' "' + text + '"' : s;
};
const visible = (e) => {
  if (e.closest("[hidden]") || e.closest("[aria-hidden=true]")) return false;
  const dialog = e.closest("dialog");
  if (dialog && !dialog.open) return false;
  const r = e.getBoundingClientRect();
  const st = getComputedStyle(e);
  return r.width > 0 && r.height > 0 && st.visibility !== "hidden" && st.display !== "none";
};
const nameOf = (e) => {
  const by = e.getAttribute("aria-labelledby");
  if (by) return by.split(/\s+/).map((id) => (document.getElementById(id) || {}).textContent || "").join(" ").trim();
  const aria = e.getAttribute("aria-label");
  if (aria && aria.trim()) return aria.trim();
  if (e.labels && e.labels.length) return Array.from(e.labels).map((l) => l.textContent).join(" ").trim();
  const alt = e.getAttribute("alt");
  if (alt) return alt.trim();
  const t = e.querySelector && e.querySelector(":scope > title");
  if (t && t.textContent.trim()) return t.textContent.trim();
  const text = (e.innerText || e.textContent || "").trim();
  if (text) return text;
  return (e.getAttribute("title") || "").trim();
};

// The document.
if (!document.documentElement.lang) problems.push("html-has-lang: <html> has no lang");
if (!document.title.trim()) problems.push("document-title: the page has no title");
if (!document.querySelector("main")) problems.push("landmark-one-main: no <main>");

// Unique ids (labels and aria references point at them).
const seen = new Map();
for (const e of document.querySelectorAll("[id]")) {
  if (seen.has(e.id)) problems.push("duplicate-id: " + describe(e) + " — id also on " + describe(seen.get(e.id)));
  else seen.set(e.id, e);
}

// Headings: one h1 in view, no level skipped.
const headings = Array.from(document.querySelectorAll("h1,h2,h3,h4,h5,h6")).filter(visible);
const h1s = headings.filter((h) => h.tagName === "H1");
if (h1s.length !== 1) problems.push("page-has-heading-one: " + h1s.length + " visible h1 elements");
let level = 0;
for (const h of headings) {
  const l = Number(h.tagName[1]);
  if (level && l > level + 1) problems.push("heading-order: " + describe(h) + " — h" + l + " after h" + level);
  if (!h.textContent.trim()) problems.push("empty-heading: " + describe(h));
  level = l;
}

// Everything operable has a name and is reachable from the keyboard.
const operable = "a[href], button, input, select, textarea, [role=button], [role=link], [tabindex]";
for (const e of document.querySelectorAll(operable)) {
  if (!visible(e) || e.tagName === "MAIN") continue;
  if (!nameOf(e)) problems.push("name: " + describe(e) + " — operable but has no accessible name");
  const ti = e.getAttribute("tabindex");
  if (ti !== null && Number(ti) < 0) problems.push("keyboard: " + describe(e) + " — tabindex " + ti + " keeps it out of the Tab order");
  if (e.matches("a:not([href])[onclick], div[onclick], span[onclick]")) problems.push("keyboard: " + describe(e) + " — clickable but not a link or button");
}
for (const e of document.querySelectorAll("input, select, textarea")) {
  if (!visible(e) || e.type === "hidden") continue;
  if (!(e.labels && e.labels.length) && !e.getAttribute("aria-label") && !e.getAttribute("aria-labelledby")) {
    problems.push("label: " + describe(e) + " — form field without a label");
  }
}

// Pictures carry text.
for (const e of document.querySelectorAll("img, svg, [role=img]")) {
  // Only outermost pictures: the parts of a chart are described by the chart.
  if (!visible(e) || (e.parentElement && e.parentElement.closest("svg"))) continue;
  if (!nameOf(e)) problems.push("image-alt: " + describe(e) + " — an image without a text alternative");
  if (e.tagName.toLowerCase() === "svg" && e.getAttribute("role") !== "img" && e.getAttribute("aria-hidden") !== "true") {
    problems.push("svg-img-role: " + describe(e) + " — an svg needs role=img (or aria-hidden)");
  }
}
for (const e of document.querySelectorAll("[role=progressbar]")) {
  if (!visible(e)) continue;
  for (const a of ["aria-valuenow", "aria-valuemin", "aria-valuemax"]) {
    if (e.getAttribute(a) === null) problems.push("aria-required-attr: " + describe(e) + " — progressbar without " + a);
  }
  if (!nameOf(e)) problems.push("aria-progressbar-name: " + describe(e));
}
for (const e of document.querySelectorAll("[role=list]")) {
  if (!visible(e)) continue;
  const kids = Array.from(e.children);
  if (kids.some((k) => k.getAttribute("role") !== "listitem")) problems.push("list: " + describe(e) + " — a role=list whose children are not role=listitem");
}

// Tables have header cells.
for (const t of document.querySelectorAll("table")) {
  if (!visible(t)) continue;
  if (!t.querySelector("th")) problems.push("table-header: " + describe(t) + " — a data table without <th>");
  if (!nameOf(t) && !t.querySelector("caption")) problems.push("table-name: " + describe(t));
}

// Text contrast (WCAG 1.4.3): 4.5:1, or 3:1 for large text.
const rgba = (s) => {
  const m = s.match(/rgba?\(([^)]+)\)/);
  if (!m) return null;
  const p = m[1].split(/[ ,/]+/).filter(Boolean).map(Number);
  return { r: p[0], g: p[1], b: p[2], a: p.length > 3 ? p[3] : 1 };
};
const lum = (c) => {
  const f = (v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4); };
  return 0.2126 * f(c.r) + 0.7152 * f(c.g) + 0.0722 * f(c.b);
};
const background = (e) => {
  // The first opaque background behind the element (a translucent one is blended in).
  let layers = [];
  for (let n = e; n && n.nodeType === 1; n = n.parentElement) {
    const c = rgba(getComputedStyle(n).backgroundColor);
    if (c && c.a > 0) { layers.push(c); if (c.a >= 1) break; }
  }
  let out = { r: 255, g: 255, b: 255 };
  for (const c of layers.reverse()) out = { r: c.r * c.a + out.r * (1 - c.a), g: c.g * c.a + out.g * (1 - c.a), b: c.b * c.a + out.b * (1 - c.a) };
  return out;
};
const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
const checked = new Set();
for (let t = walker.nextNode(); t; t = walker.nextNode()) {
  const e = t.parentElement;
  if (!t.textContent.trim() || !e || checked.has(e) || !visible(e)) continue;
  checked.add(e);
  const st = getComputedStyle(e);
  const isSvgText = e instanceof SVGElement;
  const fg = rgba(isSvgText ? st.fill : st.color);
  if (!fg) continue;
  const bg = background(isSvgText ? e.closest("svg") : e);
  const l1 = lum(fg), l2 = lum(bg);
  const ratio = (Math.max(l1, l2) + 0.05) / (Math.min(l1, l2) + 0.05);
  const px = parseFloat(st.fontSize);
  const large = px >= 24 || (px >= 18.66 && Number(st.fontWeight) >= 700);
  const need = large ? 3 : 4.5;
  if (ratio < need) problems.push("color-contrast: " + describe(e) + " — " + ratio.toFixed(2) + ":1, needs " + need + ":1");
}
return problems;
