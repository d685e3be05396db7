/**
 * The GPU inventory's front end (Python: remotecell.widgets.GPUInventory): each GPU with
 * its type, memory and price, and the runner and job holding it.
 */

import type { AnyModel, RenderProps } from "@anywidget/types";

import { coalesce, h } from "./dom";
import { formatBytes, formatHourly } from "./format";

/** One GPU (remotecell/widgets/_rows.py: gpu_row). */
export interface GPURow {
  index: number;
  uuid: string;
  name: string;
  type: string;
  memory_total: number;
  runner_id: string;
  job_id: string;
  state: "free" | "idle" | "busy";
  price_per_second: number | null;
}

/** The synced traits of GPUInventory. */
export interface InventoryModel {
  gpus: GPURow[];
  note: string;
  error: string;
}

function row(gpu: GPURow): HTMLElement {
  return h(
    "tr",
    { "data-gpu": gpu.uuid, "data-state": gpu.state },
    h("td", {}, String(gpu.index)),
    h("td", {}, gpu.type),
    h("td", { title: gpu.uuid }, gpu.name),
    h("td", { class: "rc-num" }, formatBytes(gpu.memory_total)),
    h("td", { class: "rc-num" }, formatHourly(gpu.price_per_second)),
    h("td", {}, h("span", { class: `rc-badge rc-${gpu.state}` }, gpu.state)),
    h("td", {}, gpu.runner_id || "-"),
    h("td", {}, gpu.job_id || "-"),
  );
}

function view(model: AnyModel<InventoryModel>, refresh: () => void): HTMLElement {
  const gpus = model.get("gpus");
  const busy = gpus.filter((gpu) => gpu.state === "busy").length;
  const button = h("button", { class: "rc-button", type: "button" }, "refresh");
  button.addEventListener("click", refresh);
  return h(
    "div",
    { class: "rc-inventory" },
    h(
      "div",
      { class: "rc-head" },
      h("span", { class: "rc-title" }, "GPUs"),
      h(
        "span",
        { class: "rc-where", "data-field": "count" },
        gpus.length ? `${gpus.length} GPUs, ${busy} busy` : "",
      ),
      button,
    ),
    model.get("error") ? h("div", { class: "rc-error" }, model.get("error")) : null,
    gpus.length === 0
      ? h("div", { class: "rc-note", "data-field": "note" }, `no GPUs${model.get("note") ? `: ${model.get("note")}` : ""}`)
      : h(
          "table",
          { class: "rc-table" },
          h(
            "thead",
            {},
            h(
              "tr",
              {},
              ...["GPU", "type", "name", "memory", "price", "state", "runner", "job"].map((name) =>
                h("th", {}, name),
              ),
            ),
          ),
          h("tbody", {}, ...gpus.map(row)),
        ),
  );
}

function render({ model, el }: RenderProps<InventoryModel>): () => void {
  const refresh = (): void => model.send({ action: "refresh" });
  const update = coalesce(() => el.replaceChildren(view(model, refresh)));
  const traits: (keyof InventoryModel)[] = ["gpus", "note", "error"];
  for (const trait of traits) {
    model.on(`change:${trait}`, update);
  }
  el.replaceChildren(view(model, refresh));
  return () => {
    for (const trait of traits) {
      model.off(`change:${trait}`, update);
    }
  };
}

export default { render };
