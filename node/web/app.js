// The hearthmesh web client (SPEC §15.7): pairing, the conversation list (message requests
// apart), a chat view with live messages, ticks, history, day separators, media, presence and
// typing; groups, friends (requests, links, blocking, others' pictures). Plain DOM; all text from the network is set with textContent,
// never parsed as HTML.

import {
  actionButtons, edit, quoteBlock, reactionChips, react, recall, recalledBubble,
} from "./actions.js";
import { ApiError, Live, call, looksPaired, setCsrfToken, upload } from "./api.js";
import { joinGroupForm, membersPanel } from "./groups.js";
import { Verification } from "./verify.js";
import {
  h, dayLabel, formatTime, mediaElement, presenceText, statusLabel, ticks,
} from "./dom.js";

const RANK = { pending: 0, sent: 1, delivered: 2, read: 3 };
const PAGE = 50;
const TYPING_REFRESH_MS = 3_000;
const UNREAD_COUNTED = 50;
const LIST_LOAD_COALESCE_MS = 100; // frames that each call for a list load, one load

const state = {
  me: null,
  rooms: new Map(), // room id -> {id, name, latest, latestMs, unread}
  chats: new Map(), // room id -> {messages: Map(key -> message), older: cursor|null|undefined}
  pending: new Map(), // client_id -> room id
  open: null,
  live: null,
  users: new Map(), // user id -> profile view with presence (GET /v1/users/{id}, presence frames)
  friends: new Set(), // user ids
  requests: [], // incoming friend requests
  blocked: [], // profile views of the users we blocked
  typing: new Map(), // room id -> Set of user ids typing there
  typingSentMs: 0,
  listLoad: Promise.resolve(), // the latest load of the conversation list
  listLoadSoon: null, // a list load waiting for a burst of frames to end
  composing: null, // {mode: "reply"|"edit", message} while the composer answers or edits
};

const app = document.getElementById("app");
const statusLine = document.getElementById("status");

function say(text) {
  statusLine.textContent = text;
}

// --- pairing ----------------------------------------------------------------------------------

function showPairing(message) {
  app.replaceChildren(
    h("main", { class: "pairing" },
      h("h1", {}, "Pair this browser"),
      h("p", {}, "On the node's machine, run ", h("code", {}, "hearthmesh client pair"),
        " and type the code it shows (or open the link of its QR code)."),
      h("form", { id: "pair-form", onsubmit: onPair },
        h("label", { for: "pair-code" }, "Pairing code"),
        h("input", { id: "pair-code", name: "code", autocomplete: "one-time-code",
          autocapitalize: "characters", spellcheck: "false", required: true, maxlength: "64" }),
        h("button", { type: "submit" }, "Pair")),
      h("p", { id: "pair-error", class: "error", role: "alert" }, message || "")));
  app.setAttribute("aria-busy", "false");
  document.getElementById("pair-code").focus();
}

async function onPair(event) {
  event.preventDefault();
  await pairWith(document.getElementById("pair-code").value.trim());
}

async function pairWith(code) {
  try {
    const session = await call("POST", "/v1/pair", { code, name: browserName() });
    await startApp(session);
  } catch (error) {
    showPairing(error instanceof ApiError ? error.message : "The node did not answer.");
  }
}

function browserName() {
  const agent = navigator.userAgent;
  const browser = /Firefox/.test(agent) ? "Firefox" : /Chrom/.test(agent) ? "Chromium" : "Browser";
  const system = /Android/.test(agent) ? "Android" : /iPhone|iPad/.test(agent) ? "iOS"
    : /Mac/.test(agent) ? "macOS" : /Windows/.test(agent) ? "Windows" : "Linux";
  return `${browser} on ${system}`;
}

// --- the app shell ----------------------------------------------------------------------------

async function startApp(session) {
  setCsrfToken(session.csrf_token);
  state.me = session.user_id;
  state.clientId = session.client_id;
  app.replaceChildren(
    h("aside", { class: "list", "aria-label": "Conversations" },
      h("header", { class: "bar" },
        h("h1", {}, "Chats"),
        h("span", { id: "connection", class: "connection", "data-state": "closed",
          title: "connection to your node" }, "offline"),
        h("button", { id: "new-chat-toggle", type: "button", "aria-expanded": "false",
          "aria-controls": "new-chat", onclick: toggleNewChat }, "New chat"),
        h("button", { id: "new-group-toggle", type: "button", "aria-expanded": "false",
          "aria-controls": "new-group", onclick: () => toggle("new-group") }, "New group"),
        h("button", { id: "join-group-toggle", type: "button", "aria-expanded": "false",
          "aria-controls": "join-group", onclick: () => toggle("join-group") }, "Join group"),
        h("button", { id: "friends-toggle", type: "button", "aria-expanded": "false",
          "aria-controls": "friends", onclick: () => toggle("friends") },
          "Friends", h("span", { id: "request-count", class: "unread", hidden: true })),
        h("button", { id: "pair-another", type: "button", onclick: pairAnother },
          "Pair a device"),
        h("button", { id: "settings-toggle", type: "button", "aria-expanded": "false",
          "aria-controls": "settings", onclick: toggleSettings }, "Settings")),
      h("section", { id: "settings", class: "new-chat", hidden: true,
        "aria-label": "Profile and devices" },
        h("h2", {}, "Profile"),
        h("form", { id: "profile", onsubmit: onSaveProfile },
          h("img", { id: "profile-picture", class: "picture", alt: "Your picture", hidden: true,
            width: "64", height: "64" }),
          h("label", { for: "profile-name" }, "Name"),
          h("input", { id: "profile-name", maxlength: "128" }),
          h("label", { for: "profile-bio" }, "Bio"),
          h("textarea", { id: "profile-bio", rows: "2", maxlength: "1024" }),
          h("label", { for: "profile-picture-file" }, "Picture"),
          h("input", { id: "profile-picture-file", type: "file", accept: "image/*" }),
          h("button", { type: "submit" }, "Save profile")),
        h("p", { id: "profile-error", class: "error", role: "alert" }),
        h("h2", {}, "Devices"),
        h("ul", { id: "devices", class: "people" }),
        h("button", { type: "button", onclick: linkDevice }, "Link a new device"),
        h("p", { id: "link-code", class: "link-code" }),
        h("h2", {}, "Paired browsers"),
        h("ul", { id: "browsers", class: "people" }),
        h("h2", {}, "Notifications"),
        h("button", { id: "notifications", type: "button", onclick: enableNotifications },
          "Turn on notifications"),
        h("p", { id: "notifications-state", role: "status" })),
      h("form", { id: "new-chat", class: "new-chat", hidden: true, onsubmit: onNewChat },
        h("label", { for: "new-chat-user" }, "Friend's user id"),
        h("input", { id: "new-chat-user", required: true, spellcheck: "false",
          pattern: USER_PATTERN, placeholder: "u…" }),
        h("button", { type: "submit" }, "Start chat"),
        h("p", { id: "new-chat-error", class: "error", role: "alert" })),
      h("form", { id: "new-group", class: "new-chat", hidden: true, onsubmit: onNewGroup },
        h("label", { for: "new-group-name" }, "Group name"),
        h("input", { id: "new-group-name", required: true, maxlength: "64" }),
        h("label", { for: "new-group-members" }, "Members' user ids (one per line)"),
        h("textarea", { id: "new-group-members", rows: "2", spellcheck: "false" }),
        h("button", { type: "submit" }, "Create group"),
        h("p", { id: "new-group-error", class: "error", role: "alert" })),
      joinGroupForm(onJoinedGroup, handleError),
      h("section", { id: "friends", class: "new-chat", hidden: true, "aria-label": "Friends" },
        h("h2", {}, "Friend requests"),
        h("ul", { id: "friend-requests", class: "people" }),
        h("form", { id: "add-friend", onsubmit: onAddFriend },
          h("label", { for: "add-friend-user" }, "Add a friend by user id or hearthmesh: link"),
          h("input", { id: "add-friend-user", required: true, spellcheck: "false",
            pattern: `${USER_PATTERN}|hearthmesh:friend/.+`, placeholder: "u… or hearthmesh:…" }),
          h("button", { type: "submit" }, "Send request")),
        h("p", { id: "friends-error", class: "error", role: "alert" }),
        h("button", { id: "friend-invite", type: "button", onclick: showInvite },
          "Show my friend code"),
        h("div", { id: "invite-offer", class: "pair-offer", hidden: true }),
        h("h2", {}, "Friends"),
        h("ul", { id: "friend-list", class: "people" }),
        h("h2", {}, "Blocked"),
        h("ul", { id: "blocked-list", class: "people" }),
        h("label", { for: "presence-visibility" }, "Who sees when I am online and typing"),
        h("select", { id: "presence-visibility", onchange: onVisibility },
          h("option", { value: "contacts" }, "My friends"),
          h("option", { value: "nobody" }, "Nobody"))),
      h("div", { id: "pair-offer", class: "pair-offer", hidden: true }),
      h("p", { class: "me" }, "You: ", h("code", { id: "my-id" }, state.me)),
      h("ul", { id: "conversations", class: "conversations", "aria-label": "Chats" }),
      h("h2", { id: "requests-heading", class: "section", hidden: true }, "Message requests"),
      h("ul", { id: "message-requests", class: "conversations",
        "aria-labelledby": "requests-heading" })),
    h("section", { id: "chat", class: "chat", "aria-label": "Chat" },
      h("p", { class: "empty" }, "Choose a conversation.")));
  app.setAttribute("aria-busy", "false");
  state.verify = new Verification({ nameOf: (id) => displayName(state.users.get(id) || {
    user_id: id }), known: isKnown, say, onTrust: onTrustRead, onFatal: handleError });
  state.live = new Live({ onFrame, onState });
  state.live.start();
}

function onState(connection, ready) {
  const badge = document.getElementById("connection");
  if (badge) {
    badge.dataset.state = connection;
    badge.textContent = connection === "open" ? "online" : "offline";
  }
  // Friends after the list, so the list's first paint waits for nothing else; until they
  // are known, no chat is set apart as a message request.
  if (connection === "open" && !ready.resumed) {
    reload().then(() => loadFriends()).catch(handleError);
  }
  if (connection === "open") state.verify.resume();
  // A dropped socket may mean this browser was revoked: ask once, show pairing if so.
  if (connection === "closed" && !state.live.stopped) {
    call("GET", "/v1/session").catch(handleError);
  }
}

async function reload() {
  try {
    await loadConversations();
    if (state.open) await openChat(state.open, { refresh: true });
  } catch (error) {
    handleError(error);
  }
}

function handleError(error) {
  if (error instanceof ApiError && error.status === 401) {
    state.live?.stop();
    document.cookie = "hearthmesh_paired=; Max-Age=0; Path=/; SameSite=Strict";
    showPairing("This browser is no longer paired.");
    return;
  }
  say(error.message);
}

// --- conversation list ------------------------------------------------------------------------

function readMark(room) {
  return Number(localStorage.getItem(`hearthmesh.read.${room}`) || 0);
}

function setReadMark(room, wallMs) {
  if (wallMs > readMark(room)) localStorage.setItem(`hearthmesh.read.${room}`, String(wallMs));
}

/** Loads run one after another, so an older snapshot never lands after a newer one. */
function loadConversations() {
  const run = state.listLoad.catch(() => {}).then(fetchConversations);
  state.listLoad = run;
  return run;
}

async function fetchConversations() {
  const page = await call("GET", "/v1/conversation?page_size=100");
  const known = state.rooms;
  state.rooms = new Map(); // the node's list is the truth: a left group goes
  for (const row of page.conversations) {
    const room = known.get(row.id) || { id: row.id, unread: 0 };
    room.name = row.RecipientName || row.name || row.id.slice(0, 12);
    room.recipient = row.RecipientId || null;
    room.type = row.type;
    room.members = row.members || [];
    room.admins = row.admins || [];
    room.my_role = row.my_role || null; // groups: owner, admin or member (SPEC §30.5)
    room.topic = row.topic || "";
    room.latest = row.LatestMessage;
    room.latestMs = row.latest_activity_ms;
    room.unread = readHere(row) ? 0 : row.unread; // the node counts from our read receipts
    room.request = Boolean(row.request); // a message request (SPEC §32.5)
    room.picture = row.RecipientProfilePic || null;
    state.rooms.set(row.id, room);
  }
  renderList();
}

/** This client read the room's latest message. The node counts unread from the read receipts
 * it has stored (SPEC §15.5.1), and ours go out batched: a list loaded just after reading
 * would show as unread what is already read here. */
function readHere(row) {
  const latest = row.LatestMessage;
  return Boolean(latest) && latest.sender_id !== state.me && latest.sent_ms <= readMark(row.id);
}

/** A direct chat a stranger opened and we have not accepted: listed apart (SPEC §32.5). */
function isRequest(room) {
  return Boolean(room.request);
}

function renderList() {
  const list = document.getElementById("conversations");
  if (!list) return;
  const rooms = [...state.rooms.values()].sort((a, b) => (b.latestMs || 0) - (a.latestMs || 0));
  const blocked = new Set(state.blocked.map((user) => user.user_id));
  const requests = rooms.filter((room) => isRequest(room) && !blocked.has(room.recipient));
  // Redrawing replaces the rows: keep the keyboard's place on the row it was on.
  const focused = document.activeElement?.closest(".conversation")?.dataset.room;
  keepUnchangedRows(list, rooms.filter((room) => !isRequest(room)).map(renderRow));
  // a blocked stranger's request is gone; a blocked friend's chat stays, silent
  keepUnchangedRows(document.getElementById("message-requests"), requests.map(renderRequest));
  document.getElementById("requests-heading").hidden = requests.length === 0;
  if (focused) document.querySelector(`.conversation[data-room="${focused}"]`)?.focus();
}

/** Put `rows` in `parent`, keeping each row drawn before that looks the same, where it is: a
 * press and release on a row replaced in between make no click, and the list is drawn again on
 * every message, presence and `read` frame. */
function keepUnchangedRows(parent, rows) {
  const drawn = new Map([...parent.children].map((child) => [child.outerHTML, child]));
  const next = rows.map((row) => {
    const same = drawn.get(row.outerHTML);
    drawn.delete(row.outerHTML);
    return same || row;
  });
  for (const gone of drawn.values()) gone.remove(); // first, so kept rows need not move
  next.forEach((row, i) => {
    if (parent.children[i] !== row) parent.insertBefore(row, parent.children[i] || null);
  });
}

/** A message request: its row, and what to do with it (accept, or block its sender). */
function renderRequest(room) {
  const row = renderRow(room);
  row.append(
    h("button", { type: "button", class: "accept-request", onclick: () => acceptRequest(room.id),
      "aria-label": `Accept the chat with ${room.name}` }, "Accept chat"),
    h("button", { type: "button", class: "block-user",
      onclick: () => setBlocked(room.recipient, true),
      "aria-label": `Block ${room.name}` }, "Block"));
  return row;
}

async function acceptRequest(roomId) {
  try {
    await call("POST", `/v1/conversation/${roomId}/accept`);
    await loadConversations();
  } catch (error) {
    handleError(error);
  }
}

/** The avatar of a conversation or a person: their picture when they shared one. */
function avatar(name, picture, extra) {
  if (!picture) return h("span", { class: "avatar", "aria-hidden": "true" }, initials(name), extra);
  return h("span", { class: "avatar", "aria-hidden": "true" },
    h("img", { class: "picture", src: `/v1/media/${picture}`, alt: "" }), extra);
}

function renderRow(room) {
  const latest = room.latest;
  const user = room.recipient && state.users.get(room.recipient);
  const preview = latest ? (latest.sender_id === state.me ? "You: " : "") +
    (latest.type === "text" ? latest.message : `[${latest.type}] ${latest.message || ""}`)
    : "No messages yet";
  return h("li", {},
    h("button", { type: "button", class: "conversation", "data-room": room.id,
      "aria-current": room.id === state.open ? "true" : "false",
      onclick: () => openChat(room.id) },
      avatar(room.name, room.picture,
        user ? h("span", { class: `dot ${user.online ? "online" : ""}` }) : ""),
      h("span", { class: "name" }, h("span", { class: "label" }, room.name),
        room.recipient ? state.verify.badge(room.recipient) : ""),
      h("span", { class: "preview" }, preview),
      h("span", { class: "time" }, latest ? formatTime(latest.sent_ms) : ""),
      room.unread ? h("span", { class: "unread", "aria-label": `${unreadText(room)} unread` },
        unreadText(room)) : ""));
}

/** The node counts at most 50 back (MAX_UNREAD_COUNTED); live arrivals may add to that. */
function unreadText(room) {
  return room.unread >= UNREAD_COUNTED ? `${UNREAD_COUNTED}+` : String(room.unread);
}

function initials(name) {
  return (name || "?").trim().slice(0, 2).toUpperCase();
}

const USER_PATTERN = "u[a-z2-7]{51}[aq]";

function toggleNewChat() {
  toggle("new-chat");
}

/** Show or hide one of the list's panels (its toggle button says which is open). */
function toggle(id) {
  const panel = document.getElementById(id);
  panel.hidden = !panel.hidden;
  document.getElementById(`${id}-toggle`).setAttribute("aria-expanded", String(!panel.hidden));
  if (!panel.hidden) panel.querySelector("input")?.focus();
}

// --- profile and devices (SPEC §15.5.1, §15.7.3) -------------------------------------------------

async function toggleSettings() {
  toggle("settings");
  if (!document.getElementById("settings").hidden) await loadSettings().catch(handleError);
}

async function loadSettings() {
  // The profile form is read-only until the stored profile fills it: what someone typed
  // before the answer came would be overwritten, and a save then stores the blanks.
  const controls = [...document.getElementById("profile").elements];
  for (const control of controls) control.disabled = true;
  let profile, devices, clients;
  try {
    [profile, devices, clients] = await Promise.all([
      call("GET", "/v1/profile"), call("GET", "/v1/devices"), call("GET", "/v1/clients")]);
    document.getElementById("profile-name").value = profile.display_name;
    document.getElementById("profile-bio").value = profile.bio;
  } finally {
    for (const control of controls) control.disabled = false;
  }
  const picture = document.getElementById("profile-picture");
  picture.hidden = !profile.profile_pic;
  if (profile.profile_pic) picture.src = `/v1/media/${profile.profile_pic}`;
  document.getElementById("devices").replaceChildren(...devices.devices.map((device) =>
    h("li", { class: "person" },
      h("code", { class: "name" }, device.device_id.slice(0, 16)),
      device.this_device ? h("span", { class: "role" }, "this node")
        : state.verify.ownDevice(state.me, device),
      devices.primary && !device.this_device ? h("button", { type: "button",
        onclick: () => revoke(`/v1/devices/${device.device_id}`) }, "Revoke") : "")));
  document.getElementById("browsers").replaceChildren(...clients.clients.map((client) =>
    h("li", { class: "person", "data-client": client.client_id },
      h("span", { class: "name" }, client.name),
      client.client_id === state.clientId ? h("span", { class: "role" }, "this browser") : "",
      h("button", { type: "button", onclick: () => revoke(`/v1/clients/${client.client_id}`),
        "aria-label": `Revoke ${client.name}` }, "Revoke"))));
}

async function revoke(path) {
  try {
    await call("DELETE", path);
    await loadSettings();
  } catch (error) {
    handleError(error);
  }
}

async function onSaveProfile(event) {
  event.preventDefault();
  const file = document.getElementById("profile-picture-file").files[0];
  const error = document.getElementById("profile-error");
  try {
    const profile = {
      display_name: document.getElementById("profile-name").value.trim(),
      bio: document.getElementById("profile-bio").value,
    };
    if (file) profile.profile_pic = (await upload(file, () => {})).digest;
    await call("PUT", "/v1/profile", profile);
    document.getElementById("profile-picture-file").value = "";
    error.textContent = "";
    say("Profile saved.");
    await loadSettings();
  } catch (failure) {
    if (failure instanceof ApiError && failure.status === 401) handleError(failure);
    else error.textContent = failure.message;
  }
}

/** A code the new device's `hearthmesh device link` takes (only the primary links, §7). */
async function linkDevice() {
  try {
    const link = await call("POST", "/v1/devices/link");
    document.getElementById("link-code").replaceChildren(
      h("img", { src: link.qr, alt: "QR code of the device link code", width: "180",
        height: "180" }),
      h("span", {}, "On the new device: ", h("code", {}, `hearthmesh init --link ${link.code}`),
        ". Both screens show ", h("strong", {}, link.short_code), "; the code works once."));
  } catch (error) {
    if (error instanceof ApiError && error.status === 401) handleError(error);
    else document.getElementById("link-code").textContent = error.message;
  }
}

// --- Web Push (SPEC §19) ----------------------------------------------------------------------

/** Register the service worker and this browser's push subscription with the node. */
async function enableNotifications() {
  const line = document.getElementById("notifications-state");
  if (!("serviceWorker" in navigator) || !("PushManager" in window)) {
    line.textContent = "This browser cannot receive push notifications.";
    return;
  }
  try {
    if (await Notification.requestPermission() !== "granted") {
      line.textContent = "Notifications are blocked for this page.";
      return;
    }
    const registration = await navigator.serviceWorker.register("/web/sw.js", { scope: "/" });
    await navigator.serviceWorker.ready;
    const { public_key: key } = await call("GET", "/v1/push/vapid");
    const subscription = await registration.pushManager.subscribe({
      userVisibleOnly: true, applicationServerKey: base64UrlBytes(key) });
    const { endpoint, keys } = subscription.toJSON();
    await call("POST", "/v1/push/subscriptions", { kind: "webpush", endpoint, keys });
    line.textContent = "Notifications are on.";
  } catch (error) {
    if (error instanceof ApiError && error.status === 401) handleError(error);
    // No push service reachable (a browser without one, offline): say so, quietly.
    else line.textContent = `Notifications are off: ${error.message}`;
  }
}

function base64UrlBytes(text) {
  const binary = atob(text.replace(/-/g, "+").replace(/_/g, "/"));
  return Uint8Array.from(binary, (c) => c.charCodeAt(0));
}

async function onNewGroup(event) {
  event.preventDefault();
  const name = document.getElementById("new-group-name");
  const members = document.getElementById("new-group-members");
  try {
    const group = await call("POST", "/v1/groups", {
      name: name.value.trim(),
      members: members.value.split(/\s+/).filter(Boolean),
    });
    name.value = "";
    members.value = "";
    toggle("new-group");
    await loadConversations();
    await openChat(group.id);
  } catch (error) {
    if (error instanceof ApiError && error.status === 401) handleError(error);
    else document.getElementById("new-group-error").textContent = error.message;
  }
}

// --- friends (SPEC §18) -------------------------------------------------------------------------

async function loadFriends() {
  const asked = performance.now();
  const [friends, requests, blocked, privacy] = await Promise.all([
    call("GET", "/v1/friends"), call("GET", "/v1/friends/requests"),
    call("GET", "/v1/friends/blocked"), call("GET", "/v1/privacy")]);
  state.friends = new Set(friends.friends.map((f) => f.user_id));
  for (const friend of friends.friends) rememberUser(friend, asked);
  state.requests = requests.requests;
  state.blocked = blocked.blocked;
  document.getElementById("presence-visibility").value = privacy.presence;
  renderFriends();
  await loadConversations(); // a new friend's chat is no longer a message request
}

/** A user as an answer to a request made at `asked` describes them. A presence frame that came
 * after the request was made is kept: the answer may have been worked out before that change,
 * and no frame follows until their presence changes again (a friend shown offline for good). */
function rememberUser(user, asked) {
  const known = state.users.get(user.user_id);
  const newer = known?.presenceAt > asked
    ? { online: known.online, last_seen_ms: known.last_seen_ms, presenceAt: known.presenceAt }
    : {};
  state.users.set(user.user_id, { ...known, ...user, ...newer });
}

/** Block or unblock a user (SPEC §32.3): nothing they send reaches us while blocked. */
async function setBlocked(user, blocked) {
  try {
    await call(blocked ? "PUT" : "DELETE", `/v1/friends/blocked/${user}`);
    say(blocked ? "Blocked." : "Unblocked.");
    await loadFriends();
  } catch (error) {
    handleError(error);
  }
}

async function onVisibility(event) {
  try {
    await call("PUT", "/v1/privacy", { presence: event.target.value });
    say(event.target.value === "nobody" ? "No one sees when you are online." :
      "Your friends see when you are online.");
  } catch (error) {
    handleError(error);
  }
}

/** Our friend link and its QR code, for someone to add us (SPEC §32.2). */
async function showInvite() {
  try {
    const invite = await call("GET", "/v1/friends/invite");
    const offer = document.getElementById("invite-offer");
    offer.replaceChildren(
      h("img", { src: invite.qr, alt: "Friend code as a QR code", width: "180", height: "180" }),
      h("code", { id: "invite-link" }, invite.link));
    offer.hidden = false;
  } catch (error) {
    handleError(error);
  }
}

function displayName(user) {
  return user.display_name || user.handle || user.user_id.slice(0, 12);
}

function renderFriends() {
  const count = document.getElementById("request-count");
  if (!count) return;
  count.hidden = state.requests.length === 0;
  count.textContent = String(state.requests.length);
  count.setAttribute("aria-label", `${state.requests.length} friend requests`);
  document.getElementById("friend-requests").replaceChildren(...state.requests.map((r) =>
    h("li", { class: "person", "data-user": r.user_id },
      h("span", { class: "name" }, displayName(r)),
      r.note ? h("span", { class: "preview" }, r.note) : "",
      h("button", { type: "button", onclick: () => answerRequest(r.user_id, "accept") },
        "Accept"),
      h("button", { type: "button", onclick: () => answerRequest(r.user_id, "decline") },
        "Decline"))));
  document.getElementById("friend-list").replaceChildren(...[...state.friends].map((id) => {
    const user = state.users.get(id) || { user_id: id };
    return h("li", { class: "person", "data-user": id },
      avatar(displayName(user), user.profile_pic,
        h("span", { class: `dot ${user.online ? "online" : ""}` })),
      h("span", { class: "name" }, displayName(user)),
      state.verify.badge(id), state.verify.button(id),
      h("span", { class: "preview" }, presenceText(user)),
      h("button", { type: "button", class: "block-user", onclick: () => setBlocked(id, true),
        "aria-label": `Block ${displayName(user)}` }, "Block"));
  }));
  document.getElementById("blocked-list").replaceChildren(...(state.blocked || []).map((user) =>
    h("li", { class: "person", "data-user": user.user_id },
      h("span", { class: "name" }, displayName(user)),
      h("button", { type: "button", class: "unblock-user",
        onclick: () => setBlocked(user.user_id, false),
        "aria-label": `Unblock ${displayName(user)}` }, "Unblock"))));
}

async function answerRequest(user, answer) {
  try {
    await call("POST", `/v1/friends/requests/${user}/${answer}`);
    await loadFriends();
  } catch (error) {
    handleError(error);
  }
}

async function onAddFriend(event) {
  event.preventDefault();
  const input = document.getElementById("add-friend-user");
  const error = document.getElementById("friends-error");
  try {
    const target = input.value.trim();
    await call("POST", "/v1/friends/requests",
      target.startsWith("hearthmesh:") ? { link: target } : { user_id: target });
    input.value = "";
    error.textContent = "";
    say("Friend request sent.");
  } catch (failure) {
    if (failure instanceof ApiError && failure.status === 401) handleError(failure);
    else error.textContent = failure.message;
  }
}

async function onNewChat(event) {
  event.preventDefault();
  const input = document.getElementById("new-chat-user");
  try {
    const created = await call("POST", "/v1/conversation", { recipient_id: input.value.trim() });
    input.value = "";
    toggleNewChat();
    await loadConversations();
    if (!state.rooms.has(created.room_id)) {
      state.rooms.set(created.room_id, { id: created.room_id, name: created.recipient_id,
        unread: 0, latestMs: Date.now() });
    }
    await openChat(created.room_id);
  } catch (error) {
    if (error instanceof ApiError && error.status === 401) handleError(error);
    else document.getElementById("new-chat-error").textContent = error.message;
  }
}

async function pairAnother() {
  const box = document.getElementById("pair-offer");
  try {
    const offer = await call("POST", "/v1/clients/pair");
    box.replaceChildren(
      h("p", {}, "On the other device, open the link of this QR code, or type ",
        h("strong", { class: "code" }, offer.code), ". It works once, for 5 minutes."),
      h("img", { src: offer.qr, alt: `QR code of ${offer.url}`, width: "180", height: "180" }),
      h("button", { type: "button", onclick: () => { box.hidden = true; } }, "Done"));
    box.hidden = false;
  } catch (error) {
    handleError(error);
  }
}

// --- chat view --------------------------------------------------------------------------------

function chatOf(room) {
  let chat = state.chats.get(room);
  if (!chat) {
    chat = { messages: new Map(), older: undefined };
    state.chats.set(room, chat);
  }
  return chat;
}

async function openChat(roomId, { refresh = false } = {}) {
  const room = state.rooms.get(roomId) || { id: roomId, name: roomId.slice(0, 12), unread: 0 };
  state.open = roomId;
  app.classList.add("chat-open");
  const section = document.getElementById("chat");
  section.setAttribute("aria-label", `Chat with ${room.name}`);
  section.replaceChildren(
    h("header", { class: "bar" },
      h("button", { type: "button", class: "back", "aria-label": "Back to conversations",
        onclick: closeChat }, "←"),
      avatar(room.name, room.picture, ""),
      h("div", { class: "title" },
        h("h2", {}, room.name),
        h("p", { id: "presence", class: "subtitle" }),
        h("p", { id: "typing", class: "subtitle typing", "aria-live": "polite" })),
      room.recipient ? h("span", { id: "chat-trust" }) : "",
      room.recipient ? state.verify.button(room.recipient) : "",
      room.type === "group" ? h("button", { id: "members-toggle", type: "button",
        "aria-expanded": "false", "aria-controls": "members", onclick: () => toggle("members") },
        "Members") : ""),
    room.type === "group" ? membersPanel(room, groupContext()) : "",
    h("div", { id: "trust-notice", hidden: true }),
    h("div", { id: "messages", class: "messages", role: "log", "aria-live": "polite",
      tabindex: "0", "aria-label": "Messages" },
      h("button", { id: "older", type: "button", class: "older", hidden: true,
        onclick: loadOlder }, "Load older messages"),
      h("ol", { id: "message-list" })),
    h("div", { id: "composing", class: "composing", hidden: true },
      h("span", { id: "composing-what" }),
      h("button", { type: "button", "aria-label": "Cancel", onclick: () => compose(null) },
        "✕")),
    h("form", { id: "composer", class: "composer", onsubmit: onSend },
      h("label", { for: "composer-text", class: "visually-hidden" }, "Message"),
      h("textarea", { id: "composer-text", rows: "1", placeholder: "Message",
        onkeydown: onComposerKey, oninput: onComposerInput, onblur: () => sendTyping(false) }),
      h("label", { class: "attach", title: "Attach an image or file" },
        h("span", { class: "visually-hidden" }, "Attach a file"),
        h("span", { "aria-hidden": "true" }, "📎"),
        h("input", { id: "attach", type: "file", class: "visually-hidden", onchange: onAttach })),
      h("progress", { id: "upload-progress", max: "1", value: "0", hidden: true,
        "aria-label": "Upload" }),
      h("button", { type: "submit" }, "Send")));
  renderTyping();
  if (room.recipient) state.verify.renderChat(room.recipient);
  document.getElementById("messages").addEventListener("scroll", onScroll);
  renderList();
  const chat = chatOf(roomId);
  if (refresh || chat.older === undefined) {
    try {
      const asked = performance.now();
      const page = await call("GET", `/v1/conversation/${roomId}/details?limit=${PAGE}`);
      for (const person of page.people || []) rememberUser(person, asked);
      for (const message of page.messages) addMessage(message);
      chat.older = page.next_cursor;
      const panel = document.getElementById("members");
      const room = state.rooms.get(roomId);
      if (panel && room && state.open === roomId) { // names from the members' profiles
        const fresh = membersPanel(room, groupContext());
        fresh.hidden = panel.hidden;
        panel.replaceWith(fresh);
      }
    } catch (error) {
      handleError(error);
    }
  }
  renderMessages({ toBottom: true });
  markOpenChatRead();
  document.getElementById("composer-text").focus();
  renderPresence().catch(handleError); // after the messages: their page comes first
}

/** The open group again, from the list just loaded: its header and members (the members panel
 * stays as it was). A group we are no longer in (we left, or were removed) closes. */
async function redrawGroup() {
  const room = state.rooms.get(state.open);
  if (!room || (room.type === "group" && !room.members.includes(state.me))) {
    closeChat();
    return;
  }
  const panelOpen = document.getElementById("members")?.hidden === false;
  await openChat(state.open);
  if (panelOpen) toggle("members");
}

/** A group joined by invite: list it and open it (SPEC §30.5). */
async function onJoinedGroup(group) {
  toggle("join-group");
  await loadConversations();
  await openChat(group.id);
}

function groupContext() {
  return {
    me: state.me,
    nameOf: (id) => displayName(state.users.get(id) || { user_id: id }),
    onChanged: async () => {
      await loadConversations();
      await redrawGroup();
    },
    onLeave,
    onAddMember,
    onFatal: handleError,
  };
}

async function onAddMember(event) {
  event.preventDefault();
  const input = document.getElementById("add-member-user");
  try {
    await call("POST", `/v1/groups/${state.open}/members`, { user_id: input.value.trim() });
    await loadConversations();
    await openChat(state.open);
    toggle("members");
  } catch (error) {
    if (error instanceof ApiError && error.status === 401) handleError(error);
    else document.getElementById("members-error").textContent = error.message;
  }
}

async function onLeave() {
  const room = state.open;
  try {
    await call("POST", `/v1/groups/${room}/leave`);
    state.rooms.delete(room);
    state.chats.delete(room);
    closeChat();
    await loadConversations();
  } catch (error) {
    handleError(error);
  }
}

/** The open direct chat's other user: presence dot and last seen (SPEC §17). */
async function renderPresence() {
  const room = state.rooms.get(state.open);
  const line = document.getElementById("presence");
  if (!room || !line) return;
  if (!room.recipient) {
    line.textContent = `${(room.members || []).length} members`;
    return;
  }
  if (!state.users.has(room.recipient)) {
    const asked = performance.now();
    rememberUser(await call("GET", `/v1/users/${room.recipient}`), asked);
  }
  const user = state.users.get(room.recipient);
  line.textContent = presenceText(user);
  line.dataset.online = String(Boolean(user.online));
}

function renderTyping() {
  const line = document.getElementById("typing");
  if (!line) return;
  const typing = [...(state.typing.get(state.open) || [])];
  const direct = Boolean(state.rooms.get(state.open)?.recipient);
  const names = typing.map((id) => displayName(state.users.get(id) || { user_id: id }));
  line.textContent = typing.length === 0 ? "" : direct ? "typing…" : `${names.join(", ")} typing…`;
}

/** Tell the room we type, at most every few seconds; the node ends it if we stop (§17). */
function sendTyping(active) {
  if (!state.open) return;
  const now = Date.now();
  if (active && now - state.typingSentMs < TYPING_REFRESH_MS) return;
  if (!active && state.typingSentMs === 0) return;
  state.typingSentMs = active ? now : 0;
  state.live.send({ event: "typing", room_id: state.open, active });
}

function onComposerInput(event) {
  sendTyping(event.target.value.trim() !== "");
}

async function onAttach(event) {
  const file = event.target.files[0];
  event.target.value = "";
  if (!file) return;
  const room = state.open;
  const progress = document.getElementById("upload-progress");
  progress.hidden = false;
  progress.value = 0;
  try {
    const blob = await upload(file, (fraction) => { progress.value = fraction; });
    const type = blob.content_type.startsWith("image/") ? "image"
      : blob.content_type.startsWith("video/") ? "video"
        : blob.content_type.startsWith("audio/") ? "audio" : "file";
    sendMessage(room, { message: file.name, type, media: blob });
  } catch (error) {
    handleError(error);
  } finally {
    progress.hidden = true;
  }
}

function closeChat() {
  sendTyping(false);
  state.open = null;
  app.classList.remove("chat-open");
  renderList();
  document.querySelector(".conversation")?.focus();
}

async function loadOlder() {
  const chat = chatOf(state.open);
  if (!chat.older) return;
  const box = document.getElementById("messages");
  const fromBottom = box.scrollHeight - box.scrollTop;
  const page = await call("GET",
    `/v1/conversation/${state.open}/details?limit=${PAGE}&cursor=${encodeURIComponent(chat.older)}`);
  for (const message of page.messages) addMessage(message);
  chat.older = page.next_cursor;
  renderMessages({});
  box.scrollTop = box.scrollHeight - fromBottom;
}

function onScroll(event) {
  const chat = chatOf(state.open);
  if (event.target.scrollTop < 40 && chat.older && !chat.loading) {
    chat.loading = true;
    loadOlder().catch(handleError).finally(() => { chat.loading = false; });
  }
}

function onComposerKey(event) {
  if (event.key === "Enter" && !event.shiftKey) {
    event.preventDefault();
    document.getElementById("composer").requestSubmit();
  } else if (event.key === "Escape") {
    closeChat();
  }
}

function onSend(event) {
  event.preventDefault();
  const input = document.getElementById("composer-text");
  const text = input.value.trim();
  if (!text) return;
  input.value = "";
  sendTyping(false);
  const composing = state.composing;
  compose(null);
  if (composing?.mode === "edit") {
    edit(composing.message.message_id, text).catch((error) => say(`Not edited: ${error.message}`));
    return;
  }
  const reply = composing?.mode === "reply" ? { reply_to: composing.message.message_id } : {};
  sendMessage(state.open, { message: text, type: "text", ...reply });
}

/** Answer or edit a message with the composer (SPEC §31.2, §31.4); null: back to plain. */
function compose(composing) {
  state.composing = composing;
  const bar = document.getElementById("composing");
  if (!bar) return;
  bar.hidden = !composing;
  const input = document.getElementById("composer-text");
  if (!composing) return;
  const text = composing.message.message || `[${composing.message.type}]`;
  document.getElementById("composing-what").textContent =
    `${composing.mode === "edit" ? "Editing" : "Replying to"}: ${text.slice(0, 60)}`;
  if (composing.mode === "edit") input.value = composing.message.message;
  input.focus();
}

function onAction(promise, what) {
  promise.catch((error) => say(`${what}: ${error.message}`));
}

/** Show a message as pending and send it; `message_sent` confirms it (SPEC §15.4.1). */
function sendMessage(room, content) {
  const clientId = crypto.randomUUID();
  state.pending.set(clientId, room);
  addMessage({ ...content, client_id: clientId, room_id: room, sender_id: state.me,
    sent_ms: Date.now(), hlc: [Date.now(), 0], status: "pending" });
  if (room === state.open) renderMessages({ toBottom: true });
  state.live.send({ event: "send", room_id: room, ...content, client_id: clientId });
}

/** Put a message in its chat, once: by message id, or by client id while it is pending. */
function addMessage(message) {
  const chat = chatOf(message.room_id);
  const pendingKey = message.client_id ? `pending:${message.client_id}` : null;
  let status = message.status || (message.sender_id === state.me ? "sent" : undefined);
  if (message.message_id) {
    const pending = pendingKey && chat.messages.get(pendingKey);
    if (pending) chat.messages.delete(pendingKey);
    const known = chat.messages.get(message.message_id);
    for (const old of [pending, known]) {
      if (old && old.status && RANK[old.status] > RANK[status]) status = old.status;
    }
    const merged = { ...pending, ...known, ...message, status };
    merged.sent_ms = merged.sent_ms ?? merged.hlc[0];
    chat.messages.set(message.message_id, merged);
    if (message.client_id) state.pending.delete(message.client_id);
  } else if (pendingKey) {
    chat.messages.set(pendingKey, { ...message, status });
  }
}

function setStatus(room, messageId, status) {
  const message = chatOf(room).messages.get(messageId);
  if (message && RANK[status] > RANK[message.status ?? "pending"]) {
    message.status = status;
    return true;
  }
  return false;
}

function sortedMessages(room) {
  return [...chatOf(room).messages.values()].sort((a, b) =>
    a.hlc[0] - b.hlc[0] || a.hlc[1] - b.hlc[1] ||
    String(a.message_id).localeCompare(String(b.message_id)));
}

function renderMessages({ toBottom }) {
  const list = document.getElementById("message-list");
  if (!list) return;
  const box = document.getElementById("messages");
  const nearBottom = box.scrollHeight - box.scrollTop - box.clientHeight < 80;
  const items = [];
  let day = null;
  for (const message of sortedMessages(state.open)) {
    const label = dayLabel(message.sent_ms);
    if (label !== day) {
      day = label;
      items.push(h("li", { class: "day", role: "separator" }, label));
    }
    items.push(renderMessage(message));
  }
  list.replaceChildren(...items);
  document.getElementById("older").hidden = !chatOf(state.open).older;
  if (toBottom || nearBottom) box.scrollTop = box.scrollHeight;
}

function renderMessage(message) {
  const mine = message.sender_id === state.me;
  if (message.is_deleted) return recalledBubble(message, mine);
  const text = message.message || `[${message.type}]`;
  const group = state.rooms.get(message.room_id)?.type === "group";
  const nameOf = (user) => (user === state.me ? "You"
    : displayName(state.users.get(user) || { user_id: user }));
  const id = message.message_id;
  return h("li", { class: `message ${mine ? "mine" : "theirs"}`,
    "data-message-id": id || "", "data-status": mine ? message.status : "" },
    group && !mine ? h("span", { class: "sender" }, nameOf(message.sender_id)) : "",
    quoteBlock(message, (original) => chatOf(message.room_id).messages.get(original), nameOf),
    message.media ? mediaElement(message) : h("p", { class: "text" }, text),
    reactionChips(message, state.me,
      (emoji, active) => onAction(react(id, emoji, active), "Not reacted")),
    h("span", { class: "meta" },
      message.edited ? h("span", { class: "edited" }, "edited") : "",
      h("time", { datetime: new Date(message.sent_ms).toISOString() },
        formatTime(message.sent_ms)),
      mine ? h("span", { class: `ticks ${message.status}`, "aria-label": statusLabel(message.status),
        title: statusLabel(message.status) }, ticks(message.status)) : ""),
    actionButtons(message, {
      mine,
      onReply: () => compose({ mode: "reply", message }),
      onEdit: () => compose({ mode: "edit", message }),
      onRecall: () => onAction(recall(id), "Not recalled"),
      onReact: (emoji) => onAction(react(id, emoji, !(message.reactions?.[emoji] || [])
        .includes(state.me)), "Not reacted"),
    }));
}

/** A message as it is now after an edit, reaction or recall (`message_updated`, SPEC §31.8). */
function onMessageUpdated(frame) {
  const chat = chatOf(frame.room_id);
  const known = chat.messages.get(frame.message_id);
  if (!known && !frame.is_deleted) return; // not loaded here: its page will show it folded
  const { event: _, ...view } = frame;
  chat.messages.set(frame.message_id, { ...view, status: known?.status ?? view.status,
    sent_ms: known?.sent_ms ?? view.sent_ms ?? Date.now(), hlc: known?.hlc ?? view.hlc ?? [0, 0] });
  const room = state.rooms.get(frame.room_id);
  if (room?.latest?.message_id === frame.message_id) {
    room.latest = chat.messages.get(frame.message_id);
    renderList();
  }
  if (frame.room_id === state.open) renderMessages({});
}

/** Tell the senders that what is on screen has been read (SPEC §16). */
function markOpenChatRead() {
  if (!state.open || document.visibilityState !== "visible") return;
  const mark = readMark(state.open);
  let newest = mark;
  for (const message of chatOf(state.open).messages.values()) {
    if (message.sender_id !== state.me && message.message_id && message.sent_ms > mark) {
      state.live.send({ event: "ack", message_id: message.message_id, status: "read" });
      newest = Math.max(newest, message.sent_ms);
    }
  }
  setReadMark(state.open, newest);
  const room = state.rooms.get(state.open);
  if (room && room.unread) {
    room.unread = 0;
    renderList();
  }
}

// --- live frames --------------------------------------------------------------------------------

function onFrame(frame) {
  switch (frame.event) {
    case "message":
      return onMessage(frame);
    case "message_updated":
      return onMessageUpdated(frame);
    case "message_sent":
      addMessage({ ...frame, sender_id: state.me, status: "sent" });
      if (frame.room_id === state.open) renderMessages({});
      return;
    case "read":
      return onRead(frame);
    case "receipt":
      if (setStatus(frame.room_id, frame.message_id, frame.aggregate)
          && frame.room_id === state.open) {
        renderMessages({});
      }
      return;
    case "presence":
      state.users.set(frame.user_id, { ...state.users.get(frame.user_id), user_id: frame.user_id,
        online: frame.online, last_seen_ms: frame.last_seen_ms, presenceAt: performance.now() });
      renderPresence().catch(handleError);
      renderList();
      renderFriends();
      return;
    case "typing":
      return onTyping(frame);
    case "membership":
      // an invite issued or revoked changes no member and nothing the chat shows (SPEC §30.3):
      // a redraw would take away the invite link just shown
      if (frame.action === "invite" || frame.action === "revoke") return;
      loadConversations()
        .then(() => (frame.room_id === state.open ? redrawGroup() : undefined))
        .catch(handleError);
      return;
    case "friend_request":
    case "friend_accepted":
    case "friend_declined":
      loadFriends().catch(handleError);
      return;
    case "profile": { // a contact or co-member changed their profile (SPEC §32.1)
      const { event: _, ...profile } = frame;
      state.users.set(profile.user_id, { ...state.users.get(profile.user_id), ...profile });
      renderFriends();
      loadConversations().catch(handleError);
      return;
    }
    case "resync":
      state.chats.clear();
      reload();
      return;
    case "error":
      if (frame.client_id && state.pending.has(frame.client_id)) {
        say(`Not sent: ${frame.error.message}`);
      } else if (frame.error) {
        say(frame.error.message);
      }
      return;
    default:
      state.verify.onFrame(frame); // verification, device_verified, device_keys_changed
      return;
  }
}

/** Our own user, a friend, or the other user of a chat we accepted (not a message request). */
function isKnown(userId) {
  return userId === state.me || state.friends.has(userId)
    || [...state.rooms.values()].some((room) => room.recipient === userId && !isRequest(room));
}

/** A user's trust was read (null: everyone's): redraw where it shows (SPEC §15.7.10). */
function onTrustRead(userId) {
  renderList();
  renderFriends();
  const room = state.rooms.get(state.open);
  if (room?.recipient && [null, room.recipient].includes(userId)) {
    state.verify.renderChat(room.recipient);
  }
  if ([null, state.me].includes(userId) && !document.getElementById("settings").hidden) {
    loadSettings().catch(handleError);
  }
}

function onTyping(frame) {
  if (frame.user_id === state.me) return;
  const typing = state.typing.get(frame.room_id) || new Set();
  if (frame.active) typing.add(frame.user_id);
  else typing.delete(frame.user_id);
  state.typing.set(frame.room_id, typing);
  if (frame.room_id === state.open) renderTyping();
}

/** Our user read these messages, here or on another of its clients or devices (SPEC §15.4.1):
 * they are read here too, and the node's unread count, which now counts them, is taken. */
function onRead(frame) {
  const chat = state.chats.get(frame.room_id);
  for (const id of frame.message_ids) {
    const message = chat?.messages.get(id);
    if (message) setReadMark(frame.room_id, message.sent_ms);
  }
  if (frame.room_id !== state.open) loadConversationsSoon();
}

/** One list load for a burst of frames that each call for one (a resumed feed replays many). */
function loadConversationsSoon() {
  if (state.listLoadSoon) return;
  state.listLoadSoon = setTimeout(() => {
    state.listLoadSoon = null;
    loadConversations().catch(handleError);
  }, LIST_LOAD_COALESCE_MS);
}

function onMessage(frame) {
  const mine = frame.sender_id === state.me;
  state.typing.get(frame.room_id)?.delete(frame.sender_id); // a sent message ends its typing
  if (frame.room_id === state.open) renderTyping();
  addMessage(frame);
  let room = state.rooms.get(frame.room_id);
  if (!room) {
    loadConversations().catch(handleError);
    room = { id: frame.room_id, name: frame.sender_id.slice(0, 12), unread: 0 };
    state.rooms.set(frame.room_id, room);
  }
  room.latest = frame;
  room.latestMs = frame.sent_ms;
  if (!mine) {
    state.live.send({ event: "ack", message_id: frame.message_id, status: "delivered" });
    if (frame.room_id === state.open && document.visibilityState === "visible") {
      markOpenChatRead();
    } else if (frame.sent_ms > readMark(frame.room_id)) {
      room.unread += 1;
    }
  }
  if (frame.room_id === state.open) renderMessages({});
  renderList();
}

// --- start ----------------------------------------------------------------------------------------

async function main() {
  const code = new URLSearchParams(location.hash.slice(1)).get("pair");
  if (code) {
    history.replaceState(null, "", location.pathname);
    await pairWith(code);
    return;
  }
  if (!looksPaired()) {
    showPairing();
    return;
  }
  try {
    await startApp(await call("GET", "/v1/session"));
  } catch (error) {
    handleError(error);
  }
}

document.addEventListener("visibilitychange", markOpenChatRead);
main();
