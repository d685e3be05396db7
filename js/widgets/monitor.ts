/**
 * The job monitor's front end (Python: remotecell.widgets.JobMonitor): where the job is,
 * its GPUs' (or, for a CPU-only job, its CPU's and RAM's) readings as sparklines, elapsed
 * time, GPU-seconds and cost; at the end, a summary.
 */

import type { AnyModel, RenderProps } from "@anywidget/types";

import { coalesce, h } from "./dom";
import { formatBytes, formatMoney, formatSeconds, last } from "./format";
import { sparkline, type Scale } from "./sparkline";

/** One GPU's readings, aligned with {@link MonitorModel.times}. */
export interface GPUSeries {
  uuid: string;
  label: string;
  name: string;
  memory_total: number;
  utilization: (number | null)[];
  memory_used: (number | null)[];
  power_w: (number | null)[];
  temperature_c: (number | null)[];
}

/** One GPU over the whole job. */
export interface GPUSummary {
  label: string;
  name: string;
  peak_memory_used: number;
  memory_total: number;
  mean_utilization: number | null;
}

/** The job's totals, set once it has finished. */
export interface Summary {
  state: string;
  elapsed: number;
  gpu_seconds: number;
  cost_usd: number | null;
  samples: number;
  peak_ram_used: number;
  peak_cpu_percent: number;
  mean_cpu_percent: number | null;
  gpus: GPUSummary[];
}

/** The synced traits of JobMonitor. */
export interface MonitorModel {
  job_id: string;
  phase: "starting" | "waiting" | "running" | "finished";
  state: string;
  message: string;
  runner_id: string;
  attempt: number;
  gpu_type: string;
  gpu_count: number;
  elapsed: number;
  waited: number;
  gpu_seconds: number;
  cost_usd: number | null;
  times: number[];
  cpu_percent: number[];
  ram_used: number[];
  ram_total: number;
  gpus: GPUSeries[];
  summary: Summary | Record<string, never>;
}

const TRAITS: (keyof MonitorModel)[] = [
  "job_id",
  "phase",
  "state",
  "message",
  "runner_id",
  "attempt",
  "gpu_type",
  "gpu_count",
  "elapsed",
  "waited",
  "gpu_seconds",
  "cost_usd",
  "times",
  "cpu_percent",
  "ram_used",
  "ram_total",
  "gpus",
  "summary",
];

function metric(
  name: string,
  label: string,
  times: number[],
  values: (number | null)[],
  scale: Scale,
  shown: (value: number) => string,
): HTMLElement {
  const now = last(values);
  return h(
    "div",
    { class: "rc-metric", "data-metric": name },
    h("span", { class: "rc-metric-label" }, label),
    sparkline(times, values, scale),
    h("span", { class: "rc-metric-value" }, now === null ? "n/a" : shown(now)),
  );
}

function gpuRow(gpu: GPUSeries, times: number[]): HTMLElement {
  const total = gpu.memory_total;
  return h(
    "div",
    { class: "rc-row", "data-gpu": gpu.uuid },
    h(
      "div",
      { class: "rc-row-name", title: gpu.uuid },
      h("b", {}, gpu.label),
      gpu.name ? ` ${gpu.name}` : "",
    ),
    metric("utilization", "util", times, gpu.utilization, { max: 100 }, (v) => `${v.toFixed(0)}%`),
    metric(
      "memory",
      "mem",
      times,
      gpu.memory_used,
      total ? { max: total } : {},
      (v) => (total ? `${formatBytes(v)} / ${formatBytes(total)}` : formatBytes(v)),
    ),
    metric("power", "power", times, gpu.power_w, {}, (v) => `${v.toFixed(0)} W`),
    metric("temperature", "temp", times, gpu.temperature_c, { max: 100 }, (v) => `${v.toFixed(0)} °C`),
  );
}

function hostRow(model: AnyModel<MonitorModel>): HTMLElement {
  const times = model.get("times");
  const total = model.get("ram_total");
  return h(
    "div",
    { class: "rc-row", "data-host": "" },
    h("div", { class: "rc-row-name" }, h("b", {}, "CPU"), " and RAM"),
    metric("cpu", "cpu", times, model.get("cpu_percent"), {}, (v) => `${v.toFixed(0)}%`),
    metric(
      "ram",
      "ram",
      times,
      model.get("ram_used"),
      {},
      (v) => (total ? `${formatBytes(v)} / ${formatBytes(total)}` : formatBytes(v)),
    ),
  );
}

/** A CPU-only job is free unless the control plane prices it: no cost shown then. */
function showsCost(gpuCount: number, cost: number | null): boolean {
  return gpuCount > 0 || (cost !== null && cost > 0);
}

function facts(model: AnyModel<MonitorModel>): HTMLElement {
  const gpus = model.get("gpu_count");
  return h(
    "span",
    { class: "rc-facts" },
    h("span", { "data-field": "elapsed", title: "time running" }, formatSeconds(model.get("elapsed"))),
    gpus > 0 &&
      h("span", { "data-field": "gpu-seconds" }, `${model.get("gpu_seconds").toFixed(1)} GPU-s`),
    showsCost(gpus, model.get("cost_usd")) &&
      h("span", { "data-field": "cost", title: "estimated cost" }, formatMoney(model.get("cost_usd"))),
  );
}

function summary(model: AnyModel<MonitorModel>): HTMLElement | null {
  const done = model.get("summary");
  if (!("state" in done)) {
    return null;
  }
  const parts: HTMLElement[] = done.gpus.map((gpu) =>
    h(
      "div",
      { class: "rc-summary-line" },
      h("b", {}, gpu.label),
      gpu.name ? ` ${gpu.name}` : "",
      `: peak memory ${formatBytes(gpu.peak_memory_used)} of ${formatBytes(gpu.memory_total)}`,
      ` · mean utilisation ${gpu.mean_utilization === null ? "n/a" : `${gpu.mean_utilization.toFixed(0)}%`}`,
    ),
  );
  if (done.samples > 0) {
    parts.push(
      h(
        "div",
        { class: "rc-summary-line" },
        `peak RAM ${formatBytes(done.peak_ram_used)}`,
        ` · mean CPU ${done.mean_cpu_percent === null ? "n/a" : `${done.mean_cpu_percent.toFixed(0)}%`}`,
        ` · peak CPU ${done.peak_cpu_percent.toFixed(0)}%`,
      ),
    );
  }
  return h(
    "div",
    { class: "rc-summary", "data-field": "summary" },
    h(
      "div",
      { class: "rc-summary-line" },
      h("b", {}, done.state),
      ` in ${formatSeconds(done.elapsed)}`,
      model.get("gpu_count") > 0 ? ` · ${done.gpu_seconds.toFixed(1)} GPU-s` : "",
      showsCost(model.get("gpu_count"), done.cost_usd) ? ` · ${formatMoney(done.cost_usd)}` : "",
    ),
    ...parts,
  );
}

function view(model: AnyModel<MonitorModel>): HTMLElement {
  const phase = model.get("phase");
  const state = model.get("state");
  const gpus = model.get("gpus");
  const gpuCount = model.get("gpu_count");
  const runner = model.get("runner_id");
  const held = gpuCount > 0 && model.get("gpu_type") ? `${gpuCount}× ${model.get("gpu_type")}` : "";
  const where = [phase === "finished" ? state : phase, runner ? `on ${runner}` : "", held]
    .filter(Boolean)
    .join(" · ");
  const waiting = phase === "waiting" || phase === "starting";
  const message = model.get("message");
  const waited = model.get("waited");
  return h(
    "div",
    { class: `rc-monitor rc-${phase === "finished" ? state : phase}`, "data-phase": phase },
    h(
      "div",
      { class: "rc-head" },
      h("span", { class: "rc-dot" }),
      h("span", { class: "rc-title", "data-field": "job" }, model.get("job_id") || "job"),
      h("span", { class: "rc-where", "data-field": "where" }, where),
      !waiting && facts(model),
    ),
    waiting &&
      h(
        "div",
        { class: "rc-note", "data-field": "message" },
        message || "submitted",
        waited >= 1 ? h("span", { class: "rc-waited" }, ` · ${formatSeconds(waited)}`) : null,
      ),
    phase === "finished" && state !== "succeeded" && message
      ? h("div", { class: "rc-message", "data-field": "message" }, message)
      : null,
    !waiting && model.get("times").length > 0
      ? h(
          "div",
          { class: "rc-rows" },
          ...(gpus.length > 0
            ? gpus.map((gpu) => gpuRow(gpu, model.get("times")))
            : [hostRow(model)]),
        )
      : null,
    summary(model),
  );
}

function render({ model, el }: RenderProps<MonitorModel>): () => void {
  const update = coalesce(() => el.replaceChildren(view(model)));
  for (const trait of TRAITS) {
    model.on(`change:${trait}`, update);
  }
  el.replaceChildren(view(model));
  return () => {
    for (const trait of TRAITS) {
      model.off(`change:${trait}`, update);
    }
  };
}

export default { render };
