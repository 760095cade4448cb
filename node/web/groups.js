// Group screens of the web client (SPEC §30.5): join by an invite link, the members with their
// roles, promote/demote/remove for those who outrank them, an invite link with its QR code, and
// what new members are given of the history (SPEC §30.6).
// The node decides every rule; a refusal shows its message and code, never a silent no-op.

import { ApiError, call } from "./api.js";
import { h } from "./dom.js";

const RANK = { member: 0, admin: 1, owner: 2 };

function errorText(error) {
  return error instanceof ApiError && error.code ? `${error.message} (code ${error.code})` : error.message;
}

/** The "Join a group" form of the list: an invite link or code. `onJoined(group)` after. */
export function joinGroupForm(onJoined, onFatal) {
  const input = h("input", { id: "join-group-link", required: true, spellcheck: "false",
    placeholder: "hearthmesh:join/…", maxlength: "4096" });
  const failure = h("p", { id: "join-group-error", class: "error", role: "alert" });
  const submit = h("button", { type: "submit" }, "Join");
  return h("form", { id: "join-group", class: "new-chat", hidden: true,
    onsubmit: async (event) => {
      event.preventDefault();
      failure.textContent = "";
      submit.disabled = true;
      try {
        const group = await call("POST", "/v1/groups/join", { link: input.value.trim() });
        input.value = "";
        await onJoined(group);
      } catch (error) {
        if (error instanceof ApiError && error.status === 401) onFatal(error);
        else failure.textContent = errorText(error);
      } finally {
        submit.disabled = false;
      }
    } },
    h("label", { for: "join-group-link" }, "Invite link"), input, submit, failure);
}

/**
 * The members panel of an open group. `ctx`: { me, nameOf(userId), onChanged(), onLeave(),
 * onAddMember(event), onFatal(error) }.
 */
export function membersPanel(room, ctx) {
  const mine = room.my_role || "member";
  const admin = RANK[mine] >= RANK.admin;
  const failure = h("p", { id: "members-error", class: "error", role: "alert" });
  const list = h("ul", { id: "member-list", class: "people" });
  const panel = h("section", { id: "members", class: "members", hidden: true,
    "aria-label": "Members" },
    room.topic ? h("p", { class: "topic" }, room.topic) : "",
    list,
    admin ? inviteSection(room.id, failure, ctx) : "",
    admin ? historySetting(room, failure, ctx) : "",
    admin ? h("form", { id: "add-member", onsubmit: ctx.onAddMember },
      h("label", { for: "add-member-user" }, "Add a member by user id"),
      h("input", { id: "add-member-user", required: true, spellcheck: "false" }),
      h("button", { type: "submit" }, "Add member")) : "",
    h("button", { type: "button", class: "danger", onclick: ctx.onLeave }, "Leave group"),
    failure);
  loadMembers(room.id, mine, list, failure, ctx);
  return panel;
}

async function loadMembers(roomId, mine, list, failure, ctx) {
  try {
    const page = await call("GET", `/v1/groups/${roomId}/members?page_size=1024`);
    list.replaceChildren(...page.members.map((member) => memberRow(roomId, mine, member,
      failure, ctx)));
  } catch (error) {
    if (error instanceof ApiError && error.status === 401) ctx.onFatal(error);
    else failure.textContent = errorText(error);
  }
}

function memberRow(roomId, mine, member, failure, ctx) {
  const outranked = RANK[member.role] < RANK[mine] && member.user_id !== ctx.me;
  const act = (label, path, body) => h("button", { type: "button", class: "small",
    "aria-label": `${label} ${ctx.nameOf(member.user_id)}`,
    onclick: async () => {
      failure.textContent = "";
      try {
        await call("POST", `/v1/groups/${roomId}/${path}`, body);
        await ctx.onChanged();
      } catch (error) {
        if (error instanceof ApiError && error.status === 401) ctx.onFatal(error);
        else failure.textContent = errorText(error);
      }
    } }, label);
  const user = { user_id: member.user_id };
  return h("li", { class: "person", "data-user": member.user_id, "data-role": member.role },
    h("span", { class: "name" }, member.user_id === ctx.me ? "You" : ctx.nameOf(member.user_id)),
    member.role !== "member" ? h("span", { class: "role" }, member.role) : "",
    outranked && member.role === "member"
      ? act("Promote", "role", { ...user, role: "admin" }) : "",
    outranked && member.role === "admin"
      ? act("Demote", "role", { ...user, role: "member" }) : "",
    outranked ? act("Remove", "kick", user) : "");
}

/** What new members are given (SPEC §30.6): nothing before they joined, or the last 50. */
function historySetting(room, failure, ctx) {
  const choice = h("select", { id: "history-setting" },
    h("option", { value: "joined" }, "Nothing from before they joined"),
    h("option", { value: "shared" }, "The last 50 messages"));
  choice.value = room.history === "shared" ? "shared" : "joined";
  return h("form", { id: "history-form", onsubmit: async (event) => {
    event.preventDefault();
    failure.textContent = "";
    const body = choice.value === "shared"
      ? { history: "shared", history_limit: 50 } : { history: "joined" };
    try {
      await call("PATCH", `/v1/groups/${room.id}`, body);
      await ctx.onChanged();
    } catch (error) {
      if (error instanceof ApiError && error.status === 401) ctx.onFatal(error);
      else failure.textContent = errorText(error);
    }
  } },
  h("label", { for: "history-setting" }, "New members see"), choice,
  h("button", { type: "submit" }, "Save"));
}

function inviteSection(roomId, failure, ctx) {
  const shown = h("div", { id: "invite", class: "invite", hidden: true },
    h("label", { for: "invite-link" }, "Invite link (works once, for 7 days)"),
    h("input", { id: "invite-link", readonly: true, spellcheck: "false" }),
    h("img", { id: "invite-qr", class: "qr", alt: "Invite QR code", width: "160",
      height: "160" }));
  return h("section", { class: "invites", "aria-label": "Invite" },
    h("button", { id: "invite-create", type: "button", onclick: async () => {
      failure.textContent = "";
      try {
        const invite = await call("POST", `/v1/groups/${roomId}/invites`, {});
        shown.querySelector("#invite-link").value = invite.link;
        shown.querySelector("#invite-qr").src = invite.qr;
        shown.hidden = false;
        shown.querySelector("#invite-link").select();
      } catch (error) {
        if (error instanceof ApiError && error.status === 401) ctx.onFatal(error);
        else failure.textContent = errorText(error);
      }
    } }, "Create invite link"),
    shown);
}
