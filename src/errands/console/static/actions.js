// Retry, cancel and delete: asked for confirmation in a dialog, sent to
// POST /v1/admin/jobs/{action}, and reported in the page's result banner.

import { api } from "./api.js";
import { fill, h, plural, shortId } from "./dom.js";

/** What each action does, and to which states it applies (the others are skipped). */
export const ACTIONS = {
  retry: {
    label: "Retry",
    done: "Retried",
    states: ["failed", "cancelled"],
    explain: "Failed and cancelled jobs go back to the queue for one more attempt; their history is kept.",
  },
  cancel: {
    label: "Cancel",
    done: "Asked to cancel",
    states: ["queued", "running"],
    explain: "Queued jobs are cancelled at once; running ones are asked to stop.",
  },
  delete: {
    label: "Delete",
    done: "Deleted",
    states: ["queued", "running", "completed", "failed", "cancelled"],
    explain: "The jobs and their timelines are deleted for good; replicas drop them too.",
    danger: true,
  },
};

/** Whether `action` would change a job row (as the page knows it). */
export function appliesTo(action, job) {
  if (action === "cancel" && job.cancelled) return false;
  return ACTIONS[action].states.includes(job.state);
}

/**
 * Ask for confirmation: resolves true if the operator confirms. `lines` are shown as a
 * list (what the selection is, how many jobs each state contributes).
 */
export function confirm({ action, title, lines }) {
  const dialog = document.getElementById("confirm");
  const spec = ACTIONS[action];
  fill(dialog.querySelector("#confirm-title"), title);
  fill(dialog.querySelector("#confirm-body"), h("p", {}, spec.explain), h("ul", {}, lines.map((l) => h("li", {}, l))));
  const button = dialog.querySelector("#confirm-ok");
  button.textContent = spec.label;
  button.className = spec.danger ? "button danger" : "button primary";
  dialog.returnValue = "";
  dialog.showModal();
  button.focus();
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => resolve(dialog.returnValue === "confirm"), { once: true });
  });
}

/** Send an action for `ids` and/or a filter (`where`); the ids it changed. */
export async function perform(action, { ids, where }) {
  const body = {};
  if (ids) body.ids = ids;
  if (where) body.where = where;
  return (await api(`v1/admin/jobs/${action}`, { method: "POST", body })).ids;
}

/** Show what an action did in the banner at the top of the page. */
export function report(action, changed, selected) {
  const banner = document.getElementById("result");
  const skipped = selected - changed.length;
  const links = changed.slice(0, 12).map((id) => h("a", { href: `#/jobs/${id}`, class: "mono" }, shortId(id)));
  fill(
    banner,
    h(
      "div",
      { class: "result-text" },
      h("strong", {}, `${ACTIONS[action].done} ${plural(changed.length, "job")}.`),
      skipped > 0
        ? ` ${plural(skipped, "other selected job")} ${skipped === 1 ? "was" : "were"} not in a state to ${action}.`
        : "",
      links.length ? h("span", { class: "result-ids" }, links) : null,
      changed.length > links.length ? h("span", { class: "faint" }, ` and ${changed.length - links.length} more`) : null,
    ),
    h("button", { type: "button", class: "button ghost", onclick: () => (banner.hidden = true) }, "Dismiss"),
  );
  banner.dataset.action = action;
  banner.dataset.changed = String(changed.length);
  banner.className = "result";
  banner.hidden = false;
}

/** Show a refused action in the same banner. */
export function reportError(action, error) {
  const banner = document.getElementById("result");
  fill(
    banner,
    h("div", { class: "result-text" }, h("strong", {}, `Could not ${action}: `), error.message),
    h("button", { type: "button", class: "button ghost", onclick: () => (banner.hidden = true) }, "Dismiss"),
  );
  banner.className = "result result-error";
  banner.hidden = false;
}
