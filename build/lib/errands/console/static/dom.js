// Small DOM and formatting helpers for the console. Everything the server sends is put
// on the page as text (textContent, attributes), never parsed as HTML.

/** An element: h("a", {href: "#"}, "text", child, ...). */
export function h(tag, attributes = {}, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === null || value === undefined || value === false) continue;
    if (name === "class") element.className = value;
    else if (name === "style") Object.assign(element.style, value); // CSSOM: allowed by the CSP
    else if (name.startsWith("on")) element.addEventListener(name.slice(2), value);
    else element.setAttribute(name, value === true ? "" : String(value));
  }
  element.append(...children.flat().filter((c) => c !== null && c !== undefined && c !== false));
  return element;
}

const SVG = "http://www.w3.org/2000/svg";

/** An SVG element with attributes. */
export function s(tag, attributes = {}, ...children) {
  const element = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value !== null && value !== undefined) element.setAttribute(name, String(value));
  }
  element.append(...children.flat().filter((c) => c !== null && c !== undefined));
  return element;
}

export const STATES = ["queued", "running", "completed", "failed", "cancelled"];

/** The coloured badge of a job state. */
export function badge(state, extra = "") {
  return h("span", { class: `badge badge-${state}`, "data-state": state }, state + extra);
}

/** The last 8 characters of a job id: what `errands jobs` shows too. */
export const shortId = (id) => id.slice(-8);

const UNITS = [
  [86400, "d"],
  [3600, "h"],
  [60, "min"],
  [1, "s"],
];

/** "3 min ago" / "in 12 s" for an ISO timestamp, from the browser's clock. */
export function relative(iso, now = Date.now()) {
  if (!iso) return "—";
  const seconds = (Date.parse(iso) - now) / 1000;
  const size = Math.abs(seconds);
  if (size < 1) return "now";
  for (const [unit, name] of UNITS) {
    if (size >= unit) {
      const amount = Math.floor(size / unit);
      return seconds < 0 ? `${amount} ${name} ago` : `in ${amount} ${name}`;
    }
  }
  return "now";
}

/** An ISO timestamp in the viewer's locale, with seconds. */
export function absolute(iso) {
  if (!iso) return "—";
  return new Date(iso).toLocaleString(undefined, {
    year: "numeric",
    month: "short",
    day: "numeric",
    hour: "2-digit",
    minute: "2-digit",
    second: "2-digit",
  });
}

/** A <time> showing a relative time, the exact one on hover. */
export function when(iso) {
  if (!iso) return h("span", { class: "faint" }, "—");
  return h("time", { datetime: iso, title: absolute(iso) }, relative(iso));
}

/** Seconds as "850 ms", "4.2 s", "3 min 5 s", "2 h 10 min". */
export function duration(seconds) {
  if (seconds === null || seconds === undefined || Number.isNaN(seconds)) return "—";
  if (seconds < 1) return `${Math.round(seconds * 1000)} ms`;
  if (seconds < 60) return `${seconds.toFixed(seconds < 10 ? 1 : 0)} s`;
  const minutes = Math.floor(seconds / 60);
  if (minutes < 60) return `${minutes} min ${Math.round(seconds % 60)} s`;
  return `${Math.floor(minutes / 60)} h ${minutes % 60} min`;
}

/** Seconds between two ISO timestamps, or null. */
export function between(start, end) {
  if (!start || !end) return null;
  return (Date.parse(end) - Date.parse(start)) / 1000;
}

/** Pretty JSON in a <pre>, or a faint dash for null. */
export function json(value) {
  if (value === null || value === undefined) return h("p", { class: "faint" }, "—");
  return h("pre", { class: "code" }, JSON.stringify(value, null, 2));
}

/** "1 job" / "3 jobs". */
export const plural = (count, word) => `${count.toLocaleString()} ${word}${count === 1 ? "" : "s"}`;

/** Replace the children of an element. */
export function fill(element, ...children) {
  element.replaceChildren(...children.flat().filter((c) => c !== null && c !== undefined));
}

/** Set an element's text only if it changed: a live update never replaces a node the
 * pointer may be on. */
export function setText(element, text) {
  const value = String(text);
  if (element.textContent !== value) element.textContent = value;
}

/** Set (or, for null, remove) an attribute only if it changed. */
export function setAttr(element, name, value) {
  if (value === null || value === undefined || value === false) {
    if (element.hasAttribute(name)) element.removeAttribute(name);
    return;
  }
  const text = value === true ? "" : String(value);
  if (element.getAttribute(name) !== text) element.setAttribute(name, text);
}

/** Keep `parent`'s children as `nodes`, in order, moving only those out of place. */
export function arrange(parent, nodes) {
  let cursor = parent.firstChild;
  for (const node of nodes) {
    if (node === cursor) {
      cursor = cursor.nextSibling;
    } else {
      parent.insertBefore(node, cursor);
    }
  }
  while (cursor) {
    const next = cursor.nextSibling;
    cursor.remove();
    cursor = next;
  }
}
