// The page router: the hash names the page (#/, #/assessment/<id>, #/new, #/monitor, #/migration/<id>).
// Each page renders into <main> and may return a function that stops its polling when the user leaves.
import { h, replace, errorText } from './dom.js';
import { overviewPage } from './overview.js';
import { assessmentPage } from './assessment.js';
import { wizardPage } from './wizard.js';
import { monitorPage } from './monitor.js';
import { migrationPage } from './migration.js';

const PAGES = {
  '': { nav: 'overview', render: overviewPage },
  assessment: { nav: 'assessment', render: assessmentPage },
  new: { nav: 'new', render: wizardPage },
  monitor: { nav: 'monitor', render: monitorPage },
  migration: { nav: 'monitor', render: migrationPage },
};

let leave = null;

function parse() {
  const [path, query] = location.hash.replace(/^#\/?/, '').split('?');
  const [name, ...rest] = path.split('/');
  return { name, id: rest.length ? decodeURIComponent(rest.join('/')) : null, params: new URLSearchParams(query || '') };
}

async function show() {
  if (leave) { leave(); leave = null; }
  const route = parse();
  const page = PAGES[route.name] || PAGES[''];
  for (const link of document.querySelectorAll('[data-nav]')) {
    if (link.dataset.nav === page.nav) link.setAttribute('aria-current', 'page');
    else link.removeAttribute('aria-current');
  }
  const main = document.getElementById('main');
  replace(main, h('p', {}, 'Loading…'));
  try {
    leave = (await page.render(main, route)) || null;
  } catch (error) {
    replace(main, h('h1', {}, 'Something went wrong'), h('p', { role: 'alert' }, errorText(error)));
  }
  const heading = main.querySelector('h1');
  document.title = `${heading ? heading.textContent : 'milink'} – milink`;
  // Move focus to the new page so keyboard and screen reader users start at its top.
  if (heading) { heading.setAttribute('tabindex', '-1'); heading.focus({ preventScroll: true }); }
}

// The skip link moves focus to the page without touching the hash, which names the page.
document.querySelector('.skip').addEventListener('click', (event) => {
  event.preventDefault();
  document.getElementById('main').focus();
});
window.addEventListener('hashchange', show);
show();
