// errands: the Background Jobs page served by `errands ui`, on the Python client's local
// API. The page server pushes the jobs and the client's status on every change (SSE);
// the view (view.js) renders them, and the user's actions go to the JSON API.
import { startPage } from "./view.js";

async function api(method, path, body) {
  const options = { method, headers: {} };
  if (body !== undefined) {
    options.headers["Content-Type"] = "application/json";
    options.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(path, options);
  } catch {
    throw new Error("The page server did not answer. Is `errands ui` still running?");
  }
  const data = await response.json().catch(() => null);
  if (!response.ok) {
    throw new Error(data?.error?.message || `The request failed (HTTP ${response.status}).`);
  }
  return data;
}

startPage({
  kinds: async () => (await api("GET", "/api/kinds")).kinds,
  submit: (kind, payload, options) => api("POST", "/api/jobs", { kind, payload, ...options }),
  cancel: (id) => api("POST", `/api/jobs/${id}/cancel`),
  answer: (id, value) => api("POST", `/api/jobs/${id}/answer`, { value }),
  setOnline: (online) => api("PUT", "/api/connectivity", { online }),
  listen({ jobs, status, live }) {
    const events = new EventSource("/api/events");
    events.addEventListener("jobs", (event) => {
      const view = JSON.parse(event.data);
      jobs(view.jobs);
      status(view.status);
      live(true, "Live");
    });
    events.addEventListener("open", () => live(true, "Live"));
    events.addEventListener("error", () => live(false, "Page server unreachable, retrying…"));
  },
});
