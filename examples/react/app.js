// The seed recipe's Background Jobs page in React, on errands.js and errands-react.js:
// submit a job, watch its progress live, cancel it, go offline and back.
//
// Open index.html?server=SYNC_SERVICE_URL&token=TOKEN (served from an origin the sync
// service allows: `errands server --cors-origin ORIGIN`). No build step: React comes
// from the page's scripts, and no JSX (React.createElement as `h`).

const params = new URLSearchParams(location.search);
const server = params.get("server") ?? location.origin;
const token = params.get("token");

const { Client } = await import(`${server}/v1/client/errands.js`);
const { createHooks } = await import(`${server}/v1/client/errands-react.js`);

const React = globalThis.React;
const { createRoot } = globalThis.ReactDOM;
const { useJobs, useJob, useClientStatus } = createHooks(React);
const { useState } = React;
const h = React.createElement;

const EXAMPLES = {
  random_progress: { delay: 0.4 },
  primes: { n: 2000000 },
  fails: { message: "the printer is on fire" },
};

const client = new Client({ server, token });
client.connect();

function Connectivity() {
  const status = useClientStatus(client);
  const toggle = (event) => (event.target.checked ? client.connect() : client.disconnect());
  const words = status.connected ? "Connected" : `Offline (${status.reason})`;
  return h(
    "label",
    null,
    h("input", { type: "checkbox", checked: status.enabled, onChange: toggle, "aria-label": "Online" }),
    " ",
    h("span", { id: "status" }, words),
    status.pending ? h("span", { className: "pending" }, ` — ${status.pending} to upload`) : null,
  );
}

function SubmitForm({ onSubmitted }) {
  const [kind, setKind] = useState("random_progress");
  const [payload, setPayload] = useState(JSON.stringify(EXAMPLES.random_progress));
  const [error, setError] = useState(null);
  const choose = (event) => {
    setKind(event.target.value);
    setPayload(JSON.stringify(EXAMPLES[event.target.value]));
  };
  const submit = async (event) => {
    event.preventDefault();
    try {
      const job = await client.submit(kind, JSON.parse(payload));
      setError(null);
      onSubmitted(job.id);
    } catch (failure) {
      setError(failure.message);
    }
  };
  return h(
    "form",
    { onSubmit: submit },
    h("select", { value: kind, onChange: choose, "aria-label": "Kind" }, Object.keys(EXAMPLES).map((name) => h("option", { key: name }, name))),
    h("textarea", { value: payload, onChange: (event) => setPayload(event.target.value), "aria-label": "Payload" }),
    h("button", { type: "submit" }, "Submit job"),
    error ? h("span", { className: "error", role: "alert" }, error) : null,
  );
}

function JobRow({ job }) {
  const percent = Math.round(job.progress * 100);
  return h(
    "tr",
    { "data-job": job.id },
    h("td", null, job.id.slice(-8)),
    h("td", null, job.kind),
    h("td", { className: "state" }, job.state, job.pending ? h("span", { className: "pending" }, " (not uploaded)") : null),
    h("td", null, h("progress", { max: 100, value: percent }), ` ${percent}%`),
    h("td", null, job.error?.message ?? job.progress_message ?? ""),
    h("td", null, job.done || job.cancelled ? null : h("button", { onClick: () => client.cancel(job.id) }, "Cancel")),
  );
}

function LastJob({ jobId }) {
  const job = useJob(client, jobId);
  if (!job) return null;
  const detail = job.result ?? job.error?.message;
  const outcome = job.done && detail != null ? ` — ${JSON.stringify(detail)}` : "";
  return h("p", { id: "last" }, `Your last job is ${job.state}, ${Math.round(job.progress * 100)}%${outcome}`);
}

function App() {
  const jobs = useJobs(client, { limit: 20 });
  const [last, setLast] = useState(null);
  return h(
    React.Fragment,
    null,
    h("header", null, h("h1", null, "Background jobs"), h(Connectivity)),
    h(SubmitForm, { onSubmitted: setLast }),
    h(LastJob, { jobId: last }),
    h(
      "table",
      null,
      h("thead", null, h("tr", null, ["Job", "Kind", "State", "Progress", "Message", ""].map((title) => h("th", { key: title }, title)))),
      h("tbody", null, jobs.map((job) => h(JobRow, { key: job.id, job }))),
    ),
  );
}

createRoot(document.getElementById("root")).render(h(App));
