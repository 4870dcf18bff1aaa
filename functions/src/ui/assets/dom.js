// Small helpers to build the pages with DOM calls (no innerHTML: names from the server are text, never markup).

export function h(tag, attributes = {}, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith('on') && typeof value === 'function') element.addEventListener(name.slice(2), value);
    else if (name === 'class') element.className = value;
    else if (value === true) element.setAttribute(name, '');
    else element.setAttribute(name, String(value));
  }
  append(element, children);
  return element;
}

function append(element, children) {
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    element.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

export function replace(element, ...children) {
  element.replaceChildren();
  append(element, children);
}

// Says something to screen readers through the page's polite live region.
export function announce(message) {
  const region = document.getElementById('announcer');
  region.textContent = '';
  setTimeout(() => { region.textContent = message; }, 50);
}

export function bytes(value) {
  if (value === null || value === undefined) return '–';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let n = Number(value);
  let unit = 0;
  while (n >= 1024 && unit < units.length - 1) { n /= 1024; unit += 1; }
  return `${n.toFixed(unit === 0 ? 0 : 1)} ${units[unit]}`;
}

export function when(value) {
  if (!value) return '–';
  const date = new Date(value);
  return Number.isNaN(date.getTime()) ? String(value) : date.toLocaleString();
}

const STATUS_WORDS = {
  ReadyForCutover: 'Ready for cutover', CatchingUp: 'Catching up', CuttingOver: 'Cutting over',
  FailingBack: 'Failing back', FailedBack: 'Failed back', NotReady: 'Not ready', ReadyWithWarnings: 'Ready with warnings',
};

export function words(status) {
  return STATUS_WORDS[status] || status || '–';
}

export function badge(status) {
  return h('span', { class: `badge badge-${String(status || 'none').toLowerCase()}` }, words(status));
}

// A modal dialog (native <dialog>: focus stays inside, Escape closes it) with a heading and a Close button.
export function dialog(title, ...content) {
  const id = `dialog-${Math.random().toString(36).slice(2)}`;
  const box = h('dialog', { 'aria-labelledby': id },
    h('h2', { id }, title),
    h('div', { class: 'dialog-body' }, content),
    h('div', { class: 'actions' }, h('button', { type: 'button', onclick: () => box.close() }, 'Close')));
  box.addEventListener('close', () => box.remove());
  document.body.append(box);
  box.showModal();
  return box;
}

export function errorText(error) {
  return error && error.code ? `${error.message} (${error.code})` : String(error && error.message ? error.message : error);
}

// A table with a caption, column headers and one row per item.
export function table(caption, headers, rows) {
  return h('div', { class: 'table-wrap' },
    h('table', {},
      h('caption', {}, caption),
      h('thead', {}, h('tr', {}, headers.map((name) => h('th', { scope: 'col' }, name)))),
      h('tbody', {}, rows.map((cells) => h('tr', {}, cells.map((cell, i) => (i === 0 ? h('th', { scope: 'row' }, cell) : h('td', {}, cell))))))));
}
