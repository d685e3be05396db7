/** A small element builder: the widgets build their DOM from the model on each change. */

type Child = Node | string | null | undefined | false;

/**
 * Creates an element with attributes (`class`, `data-*`, `title`, ...) and children;
 * null, undefined and false children are left out.
 */
export function h<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  attributes: Record<string, string> = {},
  ...children: Child[]
): HTMLElementTagNameMap[K] {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    element.setAttribute(name, value);
  }
  for (const child of children) {
    if (child !== null && child !== undefined && child !== false) {
      element.append(child);
    }
  }
  return element;
}

/**
 * Calls `render` once for any number of model changes in the same task (a sync from the
 * kernel changes several traits at once).
 */
export function coalesce(render: () => void): () => void {
  let scheduled = false;
  return () => {
    if (scheduled) {
      return;
    }
    scheduled = true;
    queueMicrotask(() => {
      scheduled = false;
      render();
    });
  };
}
