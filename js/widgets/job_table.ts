/**
 * The job table's front end (Python: remotecell.widgets.JobTable): recent jobs with their
 * state, GPUs, duration and cost; queued and running jobs have a cancel button.
 */

import type { AnyModel, RenderProps } from "@anywidget/types";

import { coalesce, h } from "./dom";
import { formatClock, formatMoney, formatSeconds } from "./format";

/** One job (remotecell/widgets/_rows.py: job_row). */
export interface JobRow {
  job_id: string;
  state: string;
  created: number;
  started: number;
  finished: number;
  runner_id: string;
  gpu_type: string;
  gpu_count: number;
  price_per_second: number | null;
  summary: string;
  message: string;
  cancellable: boolean;
}

/** The synced traits of JobTable. */
export interface JobTableModel {
  jobs: JobRow[];
  notice: string;
  error: string;
}

/** Seconds a job has run: to its end, or to now while it runs. */
function duration(job: JobRow, now: number): number | null {
  if (!job.started) {
    return null;
  }
  return Math.max(0, (job.finished || now) - job.started);
}

function row(job: JobRow, now: number, cancelling: Set<string>, cancel: (id: string) => void): HTMLElement {
  const seconds = duration(job, now);
  const gpu = job.gpu_count > 0 ? `${job.gpu_count}× ${job.gpu_type}` : "-";
  // A CPU-only job is free unless the control plane prices it.
  const priced = job.gpu_count > 0 || (job.price_per_second ?? 0) > 0;
  const cost =
    seconds === null || !priced
      ? "-"
      : formatMoney(job.price_per_second === null ? null : job.price_per_second * seconds);
  let action: HTMLElement | string = "";
  if (job.cancellable) {
    const pending = cancelling.has(job.job_id);
    const button = h(
      "button",
      { class: "rc-button rc-cancel", type: "button", "data-job": job.job_id },
      pending ? "cancelling…" : "cancel",
    );
    button.disabled = pending;
    button.addEventListener("click", () => cancel(job.job_id));
    action = button;
  }
  return h(
    "tr",
    { "data-job": job.job_id, "data-state": job.state },
    h("td", { class: "rc-mono" }, job.job_id),
    h("td", { title: job.message }, h("span", { class: `rc-badge rc-${job.state}` }, job.state)),
    h("td", {}, gpu),
    h("td", {}, formatClock(job.started || job.created)),
    h("td", { class: "rc-num", "data-field": "duration" }, seconds === null ? "-" : formatSeconds(seconds)),
    h("td", { class: "rc-num", "data-field": "cost" }, cost),
    h("td", { class: "rc-code", title: job.summary }, job.summary),
    h("td", {}, action),
  );
}

function view(
  model: AnyModel<JobTableModel>,
  cancelling: Set<string>,
  cancel: (id: string) => void,
  refresh: () => void,
): HTMLElement {
  const jobs = model.get("jobs");
  const now = Date.now() / 1000;
  const button = h("button", { class: "rc-button", type: "button" }, "refresh");
  button.addEventListener("click", refresh);
  return h(
    "div",
    { class: "rc-jobs" },
    h(
      "div",
      { class: "rc-head" },
      h("span", { class: "rc-title" }, "Jobs"),
      h("span", { class: "rc-where" }, model.get("notice")),
      button,
    ),
    model.get("error") ? h("div", { class: "rc-error" }, model.get("error")) : null,
    jobs.length === 0
      ? h("div", { class: "rc-note" }, "no jobs yet")
      : h(
          "table",
          { class: "rc-table" },
          h(
            "thead",
            {},
            h(
              "tr",
              {},
              ...["job", "state", "GPU", "started", "duration", "cost", "code", ""].map((name) =>
                h("th", {}, name),
              ),
            ),
          ),
          h("tbody", {}, ...jobs.map((job) => row(job, now, cancelling, cancel))),
        ),
  );
}

function render({ model, el }: RenderProps<JobTableModel>): () => void {
  // Jobs whose cancel was sent; the kernel answers when it is idle.
  const cancelling = new Set<string>();
  const draw = (): void => el.replaceChildren(view(model, cancelling, cancel, refresh));
  const update = coalesce(draw);
  function cancel(jobId: string): void {
    cancelling.add(jobId);
    model.send({ action: "cancel", job_id: jobId });
    update();
  }
  function refresh(): void {
    model.send({ action: "refresh" });
  }
  const onJobs = (): void => {
    for (const job of model.get("jobs")) {
      if (!job.cancellable) {
        cancelling.delete(job.job_id);
      }
    }
    update();
  };
  model.on("change:jobs", onJobs);
  model.on("change:notice", update);
  const onError = (): void => {
    cancelling.clear();
    update();
  };
  model.on("change:error", onError);
  draw();
  // Running jobs' durations and costs move on between refreshes.
  const ticker = window.setInterval(() => {
    if (model.get("jobs").some((job) => job.started && !job.finished)) {
      update();
    }
  }, 1000);
  return () => {
    window.clearInterval(ticker);
    model.off("change:jobs", onJobs);
    model.off("change:notice", update);
    model.off("change:error", onError);
  };
}

export default { render };
