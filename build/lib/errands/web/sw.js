// errands: the hosted Background Jobs page's service worker. It keeps the page's files so
// that the page opens with the network off (its jobs are in IndexedDB, kept by errands.js).
// Network first, so a new version is picked up whenever the server answers; the cache
// only when it does not. It never touches the sync protocol's requests.
const CACHE = "errands-page";
const CLIENT = ["errands.js", "model.js", "replica.js", "session.js", "rules.js"].map((name) => `/v1/client/${name}`);
const VIEW = ["view.js", "hosted.js", "model.js", "rules.js", "style.css"].map((name) => `/static/${name}`);
const PAGE = ["/", "/kinds.json", ...VIEW, ...CLIENT];

self.addEventListener("install", (event) => {
  event.waitUntil(caches.open(CACHE).then((cache) => cache.addAll(PAGE)).then(() => self.skipWaiting()));
});

self.addEventListener("activate", (event) => event.waitUntil(self.clients.claim()));

self.addEventListener("fetch", (event) => {
  const url = new URL(event.request.url);
  if (event.request.method === "GET" && url.origin === location.origin && PAGE.includes(url.pathname)) {
    event.respondWith(networkElseCache(event.request, url.pathname));
  }
});

async function networkElseCache(request, path) {
  const cache = await caches.open(CACHE);
  try {
    const response = await fetch(request);
    if (response.ok) await cache.put(path, response.clone());
    return response;
  } catch (error) {
    const kept = await cache.match(path);
    if (kept) return kept;
    throw error;
  }
}
