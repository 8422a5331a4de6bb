// errands: the Background Jobs page as `errands server` hosts it, on errands.js. The
// browser holds the replica (IndexedDB) and talks to the sync service itself; the view
// (view.js) is the one `errands ui` shows. Sign-in is a pasted token, kept in this
// browser (localStorage) so that the page opens offline too; a service worker (sw.js)
// keeps the page's files for that.
import { Client, Unauthorized } from "/v1/client/errands.js";
import { jobView, startPage } from "/static/view.js";

const TOKEN = "errands.token"; // absent: signed out; "" signed in without a token (--insecure)
const KINDS = "errands.kinds"; // the last kinds the server offered, for offline starts
const LIMIT = 50;

if ("serviceWorker" in navigator) {
  navigator.serviceWorker.register("/sw.js").catch((error) => console.warn(`errands: no offline page: ${error.message}`));
}

document.querySelector("#served-by").textContent =
  "Kept in this browser by errands.js and synced with the server that served this page.";

const token = localStorage.getItem(TOKEN);
if (token === null) showSignIn();
else openPage(token);

function showSignIn() {
  document.body.classList.add("signed-out");
  const section = document.querySelector("#sign-in");
  const field = document.querySelector("#token");
  const error = document.querySelector("#token-error");
  section.hidden = false;
  field.focus();
  document.querySelector("#sign-in-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const value = field.value.trim();
    error.hidden = true;
    try {
      await checkToken(value);
    } catch (problem) {
      error.textContent = problem.message;
      error.hidden = false;
      return;
    }
    localStorage.setItem(TOKEN, value);
    location.reload();
  });
}

/** Refuse a token the server refuses; with the server out of reach, take it on trust (the
 * client stops and says so if the server refuses it later). */
async function checkToken(value) {
  let response;
  try {
    response = await fetch("/v1/me", { headers: value ? { Authorization: `Bearer ${value}` } : {} });
  } catch {
    return;
  }
  if (response.status === 401) {
    const body = await response.json().catch(() => null);
    throw new Unauthorized(`The server refused this token: ${body?.error?.message ?? "unauthorized"}`);
  }
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

function openPage(value) {
  const client = new Client({ token: value || null });
  client.connect();
  const signOut = document.querySelector("#sign-out");
  signOut.hidden = false;
  signOut.addEventListener("click", async () => {
    await client.close(); // the replica stays: jobs waiting to upload go when this user is back
    localStorage.removeItem(TOKEN);
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
