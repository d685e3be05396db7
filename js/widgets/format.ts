/**
 * How the widgets write numbers: the same units and roundings as the plain-text repr
 * (remotecell/widgets/_monitor_state.py), so a notebook reads alike with or without widgets.
 */

/** `12.3 s`, `4 min 05 s`, `2 h 03 min`. */
export function formatSeconds(seconds: number): string {
  if (seconds < 60) {
    return `${seconds.toFixed(1)} s`;
  }
  const whole = Math.floor(seconds);
  if (whole < 3600) {
    return `${Math.floor(whole / 60)} min ${String(whole % 60).padStart(2, "0")} s`;
  }
  return `${Math.floor(whole / 3600)} h ${String(Math.floor((whole % 3600) / 60)).padStart(2, "0")} min`;
}

/** Binary units: `512 MiB`, `40.0 GiB`. */
export function formatBytes(count: number): string {
  if (count >= 2 ** 30) {
    return `${(count / 2 ** 30).toFixed(1)} GiB`;
  }
  if (count >= 2 ** 20) {
    return `${(count / 2 ** 20).toFixed(0)} MiB`;
  }
  return `${(count / 2 ** 10).toFixed(0)} KiB`;
}

/** Cents from a dollar up, four decimals below it; `unknown` where nothing prices the job. */
export function formatMoney(usd: number | null): string {
  if (usd === null) {
    return "cost unknown";
  }
  return usd >= 1 ? `$${usd.toFixed(2)}` : `$${usd.toFixed(4)}`;
}

/** A price per second as a price per hour: `$3.95/h`. */
export function formatHourly(perSecond: number | null): string {
  return perSecond === null ? "-" : `$${(perSecond * 3600).toFixed(2)}/h`;
}

/** A unix time as the local clock time, with the date when it is not today. */
export function formatClock(unixSeconds: number): string {
  if (!unixSeconds) {
    return "-";
  }
  const when = new Date(unixSeconds * 1000);
  const time = when.toLocaleTimeString([], { hour12: false });
  return when.toDateString() === new Date().toDateString()
    ? time
    : `${when.toLocaleDateString()} ${time}`;
}

/** The last non-null value of a series. */
export function last(values: readonly (number | null)[]): number | null {
  for (let i = values.length - 1; i >= 0; i--) {
    const value = values[i];
    if (value !== null && value !== undefined) {
      return value;
    }
  }
  return null;
}
