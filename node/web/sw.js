// The web client's service worker (SPEC §19, §15.7.9): it only shows Web Push notifications.
// A push carries ids, never text (§19.1), so the notification says that a message came and
// opens the client; it caches nothing and sees no request.

self.addEventListener("push", (event) => {
  let body = {};
  try {
    body = event.data ? event.data.json() : {};
  } catch {
    body = {};
  }
  event.waitUntil(self.registration.showNotification("New message", {
    body: "Open hearthmesh to read it.",
    tag: body.room_id || "hearthmesh",
    data: { room_id: body.room_id || null },
  }));
});

self.addEventListener("notificationclick", (event) => {
  event.notification.close();
  event.waitUntil((async () => {
    const windows = await self.clients.matchAll({ type: "window", includeUncontrolled: true });
    if (windows.length > 0) return windows[0].focus();
    return self.clients.openWindow("/");
  })());
});
