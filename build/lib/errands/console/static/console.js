// The errands console: sign-in, the views (#/jobs, #/jobs/ID, #/queues, #/workers,
// #/charts) and
// the header's status. An operator's token is needed; it never travels in a URL sent to
// the server (a sign-in link carries it in the fragment, see api.js).

import { api, session } from "./api.js";
import { ChartsView } from "./charts.js";
import { JobView } from "./job.js";
import { JobsView } from "./jobs.js";
import { QueuesView } from "./queues.js";
import { WorkersView } from "./workers.js";

const $ = (selector) => document.querySelector(selector);

const STATUS = {
  connecting: "Connecting…",
  live: "Live",
  offline: "Offline, retrying",
};

function setStatus(status) {
  const element = $("#live");
  element.dataset.status = status;
  element.querySelector(".live-text").textContent = STATUS[status];
}

function showError(error) {
  if (error.status === 401 || error.status === 403) {
    signOut(error.message);
    return;
  }
  const banner = $("#result");
  banner.className = "result result-error";
  banner.replaceChildren(error.message);
  banner.hidden = false;
}

const views = {};

function createViews() {
  const common = { onError: showError, onAuthError: (error) => signOut(error.message) };
  views.jobs = new JobsView($("#view-jobs"), { ...common, onStatus: setStatus });
  views.job = new JobView($("#view-job"), common);
  views.queues = new QueuesView($("#view-queues"), common);
  views.workers = new WorkersView($("#view-workers"), common);
  views.charts = new ChartsView($("#view-charts"), common);
}

/** Show the view the address names; the jobs' live shape keeps running behind others. */
function route() {
  if (!session.token) return;
  const [path, query] = location.hash.slice(1).split("?");
  const params = new URLSearchParams(query || "");
  const parts = path.split("/").filter(Boolean);
  let name = parts[0] || "jobs";
  if (name === "jobs" && parts[1]) name = "job";
  if (!(name in views)) name = "jobs";
  for (const [other, view] of Object.entries(views)) {
    if (other !== name) view.hide();
    $(`#view-${other}`).hidden = other !== name;
  }
  for (const tab of document.querySelectorAll(".tabs a")) {
    tab.setAttribute("aria-current", String(tab.dataset.view === (name === "job" ? "jobs" : name)));
  }
  if (name === "jobs") views.jobs.show(params);
  else if (name === "job") views.job.show(decodeURIComponent(parts[1]));
  else views[name].show();
}

function signOut(message) {
  session.forget();
  for (const view of Object.values(views)) view.hide();
  sessionStorage.setItem("errands.console.message", message || "");
  location.reload(); // a clean page: no rows, no timers, no token in memory
}

/** Check a token with the service: it must be valid and an operator's. */
async function check(token) {
  const me = await api("v1/me", { token });
  if (!me.operator) {
    throw new Error(
      `This token is for ${me.user}, who is not an operator. Make an operator's token with: errands token --operator`,
    );
  }
  return me;
}

function showSignIn(message) {
  $("#signin").hidden = false;
  $("#app").hidden = true;
  const note = $("#signin-error");
  note.textContent = message || "";
  note.hidden = !message;
  $("#token").focus();
}

async function start(me) {
  $("#signin").hidden = true;
  $("#app").hidden = false;
  $("#user").textContent = me.user;
  // A read-only operator is offered no action (the service refuses them anyway).
  const admin = await api("v1/admin/me");
  document.body.classList.toggle("read-only", admin.read_only);
  $("#read-only").hidden = !admin.read_only;
  createViews();
  addEventListener("hashchange", route);
  if (!location.hash.startsWith("#/")) history.replaceState(null, "", "#/jobs");
  route();
}

function setupTheme() {
  const button = $("#theme");
  const apply = (theme) => {
    if (theme) document.documentElement.dataset.theme = theme;
    else delete document.documentElement.dataset.theme;
    button.textContent = theme === "dark" ? "Dark" : theme === "light" ? "Light" : "Auto";
  };
  apply(localStorage.getItem("errands.console.theme"));
  button.addEventListener("click", () => {
    const next = { "": "dark", dark: "light", light: "" }[localStorage.getItem("errands.console.theme") || ""];
    localStorage.setItem("errands.console.theme", next);
    apply(next);
  });
}

async function main() {
  setupTheme();
  $("#signout").addEventListener("click", () => signOut(""));
  $("#signin-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const token = $("#token").value.trim();
    try {
      const me = await check(token);
      session.save(token, $("#remember").checked);
      start(me);
    } catch (error) {
      showSignIn(error.message);
    }
  });
  const message = sessionStorage.getItem("errands.console.message");
  sessionStorage.removeItem("errands.console.message");
  const handed = session.takeFromFragment();
  if (handed) session.save(handed, false);
  if (!session.token) return showSignIn(message);
  try {
    start(await check(session.token));
  } catch (error) {
    session.forget();
    showSignIn(error.message);
  }
}

main();
