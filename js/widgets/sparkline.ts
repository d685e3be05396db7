/** A sparkline: one series over time as a small SVG line with a light fill under it. */

const SVG = "http://www.w3.org/2000/svg";
const WIDTH = 120;
const HEIGHT = 28;

/** How a sparkline scales its values: a fixed top (percent, memory total) or the data's. */
export interface Scale {
  /** The value at the top edge; when absent, the largest value in the series (times 1.1). */
  max?: number;
}

/**
 * Draws `values` (aligned with `times`; null where a reading lacks the value) as an SVG
 * element. Gaps break the line. `data-points` says how many points were drawn.
 */
export function sparkline(
  times: readonly number[],
  values: readonly (number | null)[],
  scale: Scale = {},
): SVGSVGElement {
  const svg = document.createElementNS(SVG, "svg");
  svg.setAttribute("class", "rc-spark");
  svg.setAttribute("viewBox", `0 0 ${WIDTH} ${HEIGHT}`);
  svg.setAttribute("preserveAspectRatio", "none");
  const points: [number, number][] = [];
  const present = values.filter((v): v is number => v !== null && v !== undefined);
  const top = scale.max ?? Math.max(1e-9, ...present) * 1.1;
  const start = times[0] ?? 0;
  const span = Math.max(1e-9, (times[times.length - 1] ?? 0) - start);
  let line = "";
  let moving = true;
  values.forEach((value, i) => {
    if (value === null || value === undefined) {
      moving = true;
      return;
    }
    const x = times.length > 1 ? (((times[i] ?? start) - start) / span) * WIDTH : WIDTH;
    const y = HEIGHT - 1 - (Math.min(value, top) / top) * (HEIGHT - 2);
    line += `${moving ? "M" : "L"}${x.toFixed(1)} ${y.toFixed(1)}`;
    moving = false;
    points.push([x, y]);
  });
  svg.setAttribute("data-points", String(points.length));
  const first = points[0];
  const lastPoint = points[points.length - 1];
  if (first && lastPoint && points.length > 1) {
    const area = document.createElementNS(SVG, "path");
    area.setAttribute("class", "rc-spark-area");
    const body = points.map(([x, y]) => `L${x.toFixed(1)} ${y.toFixed(1)}`).join("");
    area.setAttribute("d", `M${first[0].toFixed(1)} ${HEIGHT}${body}L${lastPoint[0].toFixed(1)} ${HEIGHT}Z`);
    svg.append(area);
  }
  const path = document.createElementNS(SVG, "path");
  path.setAttribute("class", "rc-spark-line");
  path.setAttribute("d", line);
  svg.append(path);
  if (lastPoint) {
    const dot = document.createElementNS(SVG, "circle");
    dot.setAttribute("class", "rc-spark-dot");
    dot.setAttribute("cx", lastPoint[0].toFixed(1));
    dot.setAttribute("cy", lastPoint[1].toFixed(1));
    dot.setAttribute("r", "1.8");
    svg.append(dot);
  }
  return svg;
}
