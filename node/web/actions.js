// Message actions in the chat view (SPEC §31): reply, edit, react and recall, and what a bubble
// shows of them (the quote it answers, "edited", reaction chips, a recalled placeholder).
// All text from the network is set with textContent (dom.js `h`), never parsed as HTML.

import { call } from "./api.js";
import { h } from "./dom.js";

export const QUICK_REACTIONS = ["👍", "❤️", "😂"];
const QUOTE_CHARS = 80;

export function recall(messageId) {
  return call("POST", `/v1/messages/${messageId}/recall`);
}

export function edit(messageId, text) {
  return call("POST", `/v1/messages/${messageId}/edit`, { message: text });
}

export function react(messageId, emoji, active) {
  return call("POST", `/v1/messages/${messageId}/reactions`, { emoji, active });
}

/** The original a reply answers: the server's quote, or the copy this chat holds. */
export function quoteBlock(message, lookup, nameOf) {
  if (!message.reply_to) return "";
  const original = message.quote || lookup(message.reply_to) || {};
  const text = original.is_deleted ? "This message was recalled"
    : (original.message || (original.found === false ? "an earlier message" : "…"));
  return h("blockquote", { class: "quote", "data-reply-to": message.reply_to },
    original.sender_id ? h("span", { class: "sender" }, nameOf(original.sender_id)) : "",
    h("span", { class: "quoted" }, text.slice(0, QUOTE_CHARS)));
}

/** Reaction chips: each emoji with its count; ours is pressed, and a click takes it back. */
export function reactionChips(message, me, onToggle) {
  const reactions = Object.entries(message.reactions || {});
  if (!reactions.length) return "";
  return h("div", { class: "reactions", "aria-label": "Reactions" },
    ...reactions.map(([emoji, users]) => {
      const mine = users.includes(me);
      return h("button", { type: "button", class: "reaction", "aria-pressed": String(mine),
        "aria-label": `${emoji} ${users.length}`, onclick: () => onToggle(emoji, !mine) },
      `${emoji} ${users.length}`);
    }));
}

/** The buttons under a bubble: reply and react for any message; edit and recall for ours. */
export function actionButtons(message, { mine, onReply, onEdit, onRecall, onReact }) {
  if (!message.message_id) return ""; // still pending
  return h("div", { class: "message-actions" },
    h("button", { type: "button", class: "reply", onclick: onReply,
      "aria-label": "Reply" }, "↩"),
    ...QUICK_REACTIONS.map((emoji) => h("button", { type: "button", class: "react",
      "aria-label": `React ${emoji}`, onclick: () => onReact(emoji) }, emoji)),
    mine && message.type === "text" ? h("button", { type: "button", class: "edit",
      onclick: onEdit, "aria-label": "Edit" }, "✎") : "",
    mine ? h("button", { type: "button", class: "recall", onclick: onRecall,
      "aria-label": "Recall" }, "⌫") : "");
}

/** A recalled message: its place in the chat, no content (SPEC §31.1). */
export function recalledBubble(message, mine) {
  return h("li", { class: `message ${mine ? "mine" : "theirs"} recalled`,
    "data-message-id": message.message_id || "" },
  h("p", { class: "text" }, mine ? "You recalled this message" : "This message was recalled"));
}
