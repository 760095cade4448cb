// Small DOM helpers: build elements without ever parsing text as HTML.

/** An element with attributes (on* are listeners; true/false toggle) and children. */
export function h(tag, attributes, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes || {})) {
    if (name.startsWith("on")) element.addEventListener(name.slice(2), value);
    else if (value === true) element.setAttribute(name, "");
    else if (value !== false && value !== null && value !== undefined) {
      element.setAttribute(name, String(value));
    }
  }
  for (const child of children) {
    if (child === "" || child === null || child === undefined) continue;
    element.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return element;
}

export function formatTime(ms) {
  const date = new Date(ms);
  const today = new Date();
  if (date.toDateString() === today.toDateString()) {
    return date.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  }
  return date.toLocaleDateString([], { day: "numeric", month: "short" });
}

const TICKS = { pending: "🕓", sent: "✓", delivered: "✓✓", read: "✓✓" };
const LABELS = { pending: "sending", sent: "sent", delivered: "delivered", read: "read" };

export function ticks(status) {
  return TICKS[status] || "";
}

export function statusLabel(status) {
  return LABELS[status] || "";
}
