// Retry, cancel, delete and run now: asked for confirmation in a dialog, sent to
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
  reschedule: {
    label: "Run now",
    done: "Made runnable now:",
    states: ["queued"],
    explain: "The job stops waiting for its run time or its retry's backoff: the next free worker takes it.",
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

/** Send an action: `request` has `ids` and/or a filter (`where`, with `all: true` for
 * one that selects every job). What it did: `{ids, held}`. */
export async function perform(action, request) {
  return api(`v1/admin/jobs/${action}`, { method: "POST", body: request });
}

/** Show what an action did in the banner at the top of the page. */
export function report(action, { ids: changed, held }, selected) {
  const banner = document.getElementById("result");
  const heldIds = Object.keys(held || {});
  const skipped = selected - changed.length - heldIds.length;
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
      heldIds.length
        ? h(
            "span",
            { class: "held" },
            ` ${plural(heldIds.length, "job")} left alone: an unfinished job holds ${heldIds.length === 1 ? "its" : "their"} unique key (`,
            heldIds.slice(0, 6).flatMap((id, i) => [i ? ", " : "", h("a", { href: `#/jobs/${id}`, class: "mono" }, shortId(id)), ` ${held[id]}`]),
            heldIds.length > 6 ? ", …" : "",
            ").",
          )
        : "",
      links.length ? h("span", { class: "result-ids" }, links) : null,
      changed.length > links.length ? h("span", { class: "faint" }, ` and ${changed.length - links.length} more`) : null,
    ),
    h("button", { type: "button", class: "button ghost", onclick: () => (banner.hidden = true) }, "Dismiss"),
  );
  banner.dataset.action = action;
  banner.dataset.changed = String(changed.length);
  banner.dataset.held = String(heldIds.length);
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
