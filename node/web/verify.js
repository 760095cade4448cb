// Verification and trust in the web client (SPEC §15.7.10, §29.5): the SAS screen (the seven
// emoji with their names and the decimals, compared on both devices, then confirmed, refused or
// cancelled on each), the peer's request shown live from the `verification` event, and the trust
// a user meets where they meet a contact: a verified badge, and a warning when the contact's
// device keys changed since they were verified. Owns the flows this page has seen, the trust it
// has read (GET /v1/trust for every verified user at once, GET /v1/users/{id}/trust for one
// after an event) and the verification dialog.

import { ApiError, call } from "./api.js";
import { h } from "./dom.js";

/** How far a flow got: a view of an earlier stage never replaces a later one (an HTTP answer
 * and the live event race). */
const STAGE = { started: 0, accepted: 0, key_sent: 1, showing: 2, confirmed: 3, done: 4,
  cancelled: 4 };
const ENDED = new Set(["done", "cancelled"]);
/** What the codes a flow ends with (SPEC §9, §29.3) mean to a person. */
const FAILURES = {
  2: "a message of the flow was malformed or out of order",
  10: "the other device is not the one its user's record names",
  41: "the keys did not match",
  42: "it was cancelled, or the emoji did not match",
};

function errorText(error) {
  return error instanceof ApiError && error.code
    ? `${error.message} (code ${error.code})` : error.message;
}

export class Verification {
  /** `ctx`: { nameOf(userId), known(userId): may their request open the dialog by itself (our
   * own user, a friend, an accepted chat: a stranger's START must not take over the screen),
   * say(text) on the status line, onTrust(userId) after a user's trust was (re)read, onFatal(error) for a refusal that ends
   * the session }. */
  constructor(ctx) {
    this.ctx = ctx;
    this.flows = new Map(); // flow id -> the newest view of it seen
    this.trust = new Map(); // user id -> trust view; a user not here has verified no key
    this.shown = null; // the flow id the dialog shows
    this.opener = null; // where the keyboard was before the dialog opened
    document.getElementById("verification")?.remove(); // a page paired again starts afresh
    this.dialog = h("dialog", { id: "verification", class: "verification",
      "aria-labelledby": "verification-title",
      oncancel: (event) => { event.preventDefault(); this.dismiss(); } });
    document.body.append(this.dialog);
  }

  // --- flows -----------------------------------------------------------------------------------

  /** Begin verifying `userId`'s device (on `peerId`, or their first home). */
  async start(userId, peerId) {
    this.open(null);
    this.render({ pending: `Reaching ${this.ctx.nameOf(userId)}'s device…` });
    try {
      const body = peerId ? { user_id: userId, peer_id: peerId } : { user_id: userId };
      const flow = await call("POST", "/v1/verifications", body);
      if (!this.dialog.open || this.shown !== null) { // given up (or replaced) while reaching
        this.update(flow);
        await call("POST", `/v1/verifications/${flow.flow_id}/cancel`);
        return;
      }
      this.shown = flow.flow_id;
      this.update(flow); // the live event may have brought a later stage already
      this.render({});
    } catch (error) {
      if (error instanceof ApiError && error.status === 401) this.ctx.onFatal(error);
      else this.render({ failure: `Could not start: ${errorText(error)}` });
    }
  }

  /** A `verification` frame, `device_verified` or `device_keys_changed`; false if not one. */
  onFrame(frame) {
    switch (frame.event) {
      case "verification": {
        const { event: _, ...flow } = frame;
        this.update(flow);
        return true;
      }
      case "device_verified":
      case "device_keys_changed":
        this.readTrust(frame.user_id);
        return true;
      default:
        return false;
    }
  }

  /** The socket (re)opened: events missed meanwhile are not replayed, so read the flows and
   * the trust of every verified user again. */
  async resume() {
    try {
      const [{ verifications }, { users }] = await Promise.all([
        call("GET", "/v1/verifications"), call("GET", "/v1/trust")]);
      this.trust = new Map(users.map((trust) => [trust.user_id, trust]));
      this.ctx.onTrust(null);
      for (const flow of verifications) this.update(flow);
    } catch (error) {
      if (error instanceof ApiError && error.status === 401) this.ctx.onFatal(error);
    }
  }

  update(flow) {
    const known = this.flows.get(flow.flow_id);
    if (known && STAGE[flow.state] < STAGE[known.state]) return;
    this.flows.set(flow.flow_id, flow);
    if (flow.verified && !known?.verified) this.readTrust(flow.user_id);
    const idle = this.shown === null || ENDED.has(this.flows.get(this.shown)?.state);
    const asked = !flow.initiator && !ENDED.has(flow.state);
    if (asked && !this.ctx.known(flow.user_id)) {
      if (!known) {
        this.ctx.say(`${this.ctx.nameOf(flow.user_id)} asked to verify this device; only`
          + " friends' and accepted chats' requests are shown.");
      }
    } else if (flow.flow_id !== this.shown && asked && idle) {
      this.open(flow.flow_id); // the peer asks: show it at once
    }
    if (flow.flow_id === this.shown) this.render({});
  }

  open(flowId) {
    this.shown = flowId;
    if (!this.dialog.open) {
      this.opener = document.activeElement;
      this.dialog.showModal();
    }
  }

  close() {
    this.shown = null;
    this.dialog.close();
    if (this.opener?.isConnected) this.opener.focus();
  }

  /** Escape or Close: an unfinished flow is cancelled (and its outcome shown), a finished one
   * closes. */
  dismiss() {
    const flow = this.flows.get(this.shown);
    if (flow && !ENDED.has(flow.state)) this.act("cancel");
    else this.close();
  }

  async act(what) {
    const id = this.shown;
    try {
      this.update(await call("POST", `/v1/verifications/${id}/${what}`));
    } catch (error) {
      if (error instanceof ApiError && error.status === 401) this.ctx.onFatal(error);
      else this.dialog.querySelector(".error").textContent = errorText(error);
    }
  }

  /** The dialog for the shown flow; `pending`/`failure`: before there is a flow. */
  render({ pending, failure }) {
    const flow = this.flows.get(this.shown);
    const name = flow?.user_id ? this.ctx.nameOf(flow.user_id) : "";
    const parts = [];
    let title = "Verify a device";
    if (!flow) {
      parts.push(h("p", { class: failure ? "error" : "" }, failure || pending));
    } else if (flow.state === "done" && flow.verified) {
      title = "Verified";
      parts.push(h("p", { class: "outcome verified", role: "status" },
        `✓ ${name}'s device is verified. Its messages are from the keys you checked.`));
    } else if (flow.state === "cancelled") {
      title = "Not verified";
      parts.push(h("p", { class: "outcome failed", role: "status",
        "data-code": flow.cancel_code },
        `Verification failed: ${FAILURES[flow.cancel_code] || "it ended"} ` +
        `(code ${flow.cancel_code}). Nothing was trusted.`));
    } else if (flow.emoji) {
      title = flow.initiator ? `Verify ${name}` : `${name} asks to verify`;
      parts.push(
        h("p", {}, `Compare with ${name}'s screen: do they show these emoji, in this order?`),
        h("ol", { class: "sas", "aria-label": "Emoji to compare" }, ...flow.emoji.map((e) =>
          h("li", { class: "emoji" }, h("span", { class: "symbol", "aria-hidden": "true" },
            e.symbol), h("span", { class: "emoji-name" }, e.name)))),
        h("p", { class: "decimals" }, "Or these numbers: ",
          h("strong", { id: "sas-decimals" }, flow.decimals.join(" "))));
      if (flow.state === "confirmed") {
        parts.push(h("p", { role: "status" }, `Waiting for ${name} to confirm…`));
      } else {
        parts.push(h("div", { class: "actions" },
          h("button", { type: "button", class: "confirm", onclick: () => this.act("confirm") },
            "They match"),
          h("button", { type: "button", class: "danger", onclick: () => this.act("cancel") },
            "They don't match")));
      }
    } else {
      title = flow.initiator ? `Verify ${name}` : `${name} asks to verify`;
      parts.push(h("p", { role: "status" }, `Exchanging keys with ${name}'s device…`));
    }
    const ended = !flow || ENDED.has(flow.state);
    this.dialog.replaceChildren(
      h("h2", { id: "verification-title" }, title), ...parts,
      h("p", { class: "error", role: "alert" }),
      h("button", { type: "button", class: "close", onclick: () => this.dismiss() },
        ended ? "Close" : "Cancel verification"));
    const focus = this.dialog.querySelector(".confirm") || this.dialog.querySelector(".close");
    if (!this.dialog.contains(document.activeElement)) focus.focus();
  }

  // --- trust -----------------------------------------------------------------------------------

  /** A user's trust as last read, or undefined (never verified, or not read yet). */
  trustOf(userId) {
    return this.trust.get(userId);
  }

  /** Read one user's trust again (a flow with them ended verified, or their keys changed). */
  async readTrust(userId) {
    try {
      this.trust.set(userId, await call("GET", `/v1/users/${userId}/trust`));
      this.ctx.onTrust(userId);
    } catch (error) {
      if (error instanceof ApiError && error.status === 401) this.ctx.onFatal(error);
    }
  }

  /** "✓ verified", "⚠ keys changed", or nothing (never verified). */
  badge(userId) {
    const trust = this.trustOf(userId);
    if (!trust) return "";
    if (trust.keys_changed) {
      return h("span", { class: "trust changed", title: "Device keys changed since verified" },
        "⚠ keys changed");
    }
    if (!trust.devices.some((d) => d.verified)) return "";
    return h("span", { class: "trust verified", title: "Device keys verified" }, "✓ verified");
  }

  /** A button that starts verifying `userId` (their device on `peerId`, if given). */
  button(userId, peerId, label = "Verify", what = this.ctx.nameOf(userId)) {
    return h("button", { type: "button", class: "small verify", "aria-label": `${label} ${what}`,
      onclick: () => this.start(userId, peerId) }, label);
  }

  /** Fill the open direct chat's trust slots (`#chat-trust`, `#trust-notice`) for `userId`. */
  renderChat(userId) {
    const slot = document.getElementById("chat-trust");
    const notice = document.getElementById("trust-notice");
    if (!slot || !notice) return;
    const trust = this.trustOf(userId);
    slot.replaceChildren(this.badge(userId));
    notice.replaceChildren(trust?.keys_changed ? h("div", { class: "trust-warning", role: "alert" },
      h("p", {}, `⚠ ${this.ctx.nameOf(userId)}'s device keys changed since you verified them:`,
        " a device you have not checked can read and send in this chat."),
      this.button(userId, undefined, "Verify again")) : "");
    notice.hidden = !trust?.keys_changed;
  }

  /** Our own device's row in settings: "✓ verified", or a button to verify it. */
  ownDevice(me, device) {
    const trust = this.trustOf(me);
    const verified = trust?.devices.some((d) => d.device_id === device.device_id && d.verified);
    return verified ? h("span", { class: "trust verified" }, "✓ verified")
      : this.button(me, device.peer_id, "Verify", `device ${device.device_id.slice(0, 16)}`);
  }
}
