// errands: the Background Jobs page as `errands server` hosts it, on errands.js. The
// browser holds the replica (IndexedDB) and talks to the sync service itself; the view
// (view.js) is the one `errands ui` shows; a service worker (sw.js) keeps the page's
// files so that it opens offline.
//
// The replica belongs to the user the service verified, never to what a token claims:
// a token is kept only once the service has accepted it (a new token waits for the
// network), together with the user the service named, and that user names the replica.
// The sign-in is this tab's alone (sessionStorage) unless "Stay signed in" keeps it for
// the browser (localStorage). Signing out deletes the user's replica (after a warning if
// changes wait for upload) and signs out every tab of this page.
import { Client, Unauthorized } from "/v1/client/errands.js";
import { jobView, startPage } from "/static/view.js";

const SIGNED_IN = "errands.signed-in"; // {token, user}: a token the service accepted, and whose
const KINDS = "errands.kinds"; // the last kinds the server offered, for offline starts
const LIMIT = 50;
const tabs = new BroadcastChannel("errands page");

if ("serviceWorker" in navigator) {
  navigator.serviceWorker.register("/sw.js").catch((error) => console.warn(`errands: no offline page: ${error.message}`));
}
localStorage.removeItem("errands.token"); // an older page's token, never verified: sign in again

document.querySelector("#served-by").textContent =
  "Kept in this browser by errands.js and synced with the server that served this page.";

const signedIn = readSignIn();
if (signedIn === null) showSignIn();
else openPage(signedIn);

/** This tab's sign-in, else the browser's ("Stay signed in"), else null. */
function readSignIn() {
  for (const storage of [sessionStorage, localStorage]) {
    try {
      const { token, user } = JSON.parse(storage.getItem(SIGNED_IN));
      if (typeof token === "string" && typeof user === "string") return { token, user };
    } catch {} // absent, or not ours
  }
  return null;
}

function forgetSignIn() {
  sessionStorage.removeItem(SIGNED_IN);
  localStorage.removeItem(SIGNED_IN);
}

function showSignIn() {
  document.body.classList.add("signed-out");
  const section = document.querySelector("#sign-in");
  const field = document.querySelector("#token");
  const error = document.querySelector("#token-error");
  section.hidden = false;
  field.focus();
  const form = document.querySelector("#sign-in-form");
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const token = field.value.trim();
    error.hidden = true;
    let user;
    try {
      user = await verify(token);
    } catch (problem) {
      error.textContent = problem.message;
      error.hidden = false;
      // Offline: the token waits for the network, then is checked (never taken on trust).
      if (problem instanceof Unreachable) window.addEventListener("online", () => form.requestSubmit(), { once: true });
      return;
    }
    const stay = document.querySelector("#stay-signed-in").checked;
    (stay ? localStorage : sessionStorage).setItem(SIGNED_IN, JSON.stringify({ token, user }));
    location.reload();
  });
}

/** The service could not be asked (offline). */
class Unreachable extends Error {}

/** The user the service says `token` is; Unauthorized if it refuses it, and an error too
 * when it cannot be asked: a token is never taken on trust. */
async function verify(token) {
  let response;
  try {
    response = await fetch("/v1/me", { headers: token ? { Authorization: `Bearer ${token}` } : {}, cache: "no-store" });
  } catch {
    throw new Unreachable("The server cannot be reached, and a new token is only accepted once it has checked it: it will be checked when the network is back.");
  }
  const body = await response.json().catch(() => null);
  if (response.status === 401) throw new Unauthorized(`The server refused this token: ${body?.error?.message ?? "unauthorized"}`);
  if (!response.ok || typeof body?.user !== "string") {
    throw new Error(`The server could not check this token (HTTP ${response.status}): try again.`);
  }
  return body.user;
}

async function kinds() {
  try {
    const response = await fetch("/kinds.json");
    if (response.ok) {
      const { kinds: offered } = await response.json();
      localStorage.setItem(KINDS, JSON.stringify(offered));
      return offered;
    }
  } catch {} // offline, and no service worker yet: the kinds seen last time
  return JSON.parse(localStorage.getItem(KINDS) ?? '[{"name": "default", "example": {}}]');
}

function openPage({ token, user }) {
  const client = new Client({ token: token || null, user });
  client.connect();
  const leave = async () => {
    await client.close();
    forgetSignIn();
    location.reload();
  };
  tabs.onmessage = ({ data }) => {
    if (data?.type === "signed-out") leave();
  };
  const signOut = document.querySelector("#sign-out");
  signOut.hidden = false;
  signOut.addEventListener("click", async () => {
    const { pending } = client.status;
    const lost = `${pending} ${pending === 1 ? "change" : "changes"} made here ${pending === 1 ? "has" : "have"} not reached the server yet and will be lost.`;
    if (pending > 0 && !confirm(`${lost} Sign out anyway?`)) return;
    tabs.postMessage({ type: "signed-out" });
    await client.clearLocalData(); // this user's jobs leave this browser with them
    forgetSignIn();
    location.reload();
  });
  startPage({
    kinds,
    submit: async (kind, payload, options) => jobView(await client.submit(kind, payload, options)),
    cancel: (id) => client.cancel(id),
    setOnline: async (online) => (online ? client.connect() : client.disconnect()),
    listen({ jobs, status, live }) {
      client.subscribe((list) => {
        jobs(list.map(jobView));
        live(true, "Live");
      }, { limit: LIMIT });
      client.subscribeStatus(status);
    },
  });
  window.errands = client; // for the console, and the browser tests
}
