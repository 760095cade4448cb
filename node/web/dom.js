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

/** The day heading of a separator in a chat: "Today", "Yesterday", or the date. */
export function dayLabel(ms) {
  const date = new Date(ms);
  const today = new Date();
  const yesterday = new Date(today);
  yesterday.setDate(today.getDate() - 1);
  if (date.toDateString() === today.toDateString()) return "Today";
  if (date.toDateString() === yesterday.toDateString()) return "Yesterday";
  return date.toLocaleDateString([], { weekday: "short", day: "numeric", month: "short",
    year: date.getFullYear() === today.getFullYear() ? undefined : "numeric" });
}

/** "online", or when the user was last seen (SPEC §17). */
export function presenceText(user) {
  if (!user) return "";
  if (user.online) return "online";
  if (!user.last_seen_ms) return "offline";
  return `last seen ${formatTime(user.last_seen_ms)}`;
}

/** A message's media (SPEC §15.5.3/4): images in place, anything else as a download link. */
export function mediaElement(message) {
  const media = message.media;
  const url = `/v1/media/${media.digest}`;
  if (media.content_type.startsWith("image/")) {
    return h("a", { href: url, target: "_blank", rel: "noopener", class: "media" },
      h("img", { src: url, alt: message.message || "image", loading: "lazy" }));
  }
  const name = message.message || "file";
  return h("a", { href: url, download: name, class: "media file" },
    `⬇ ${name} (${formatSize(media.size)})`);
}

export function formatSize(bytes) {
  if (bytes < 1024) return `${bytes} B`;
  if (bytes < 1024 * 1024) return `${(bytes / 1024).toFixed(1)} KiB`;
  return `${(bytes / 1024 / 1024).toFixed(1)} MiB`;
}
