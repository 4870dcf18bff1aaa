// The assessment report: run one, then its tabs (Overview, Source properties, User databases, SKU
// recommendation, Connection summary) as an ARIA tab list that arrow keys move through. A Not ready
// database opens its findings (objects and remediation) in a dialog.
import { get, post } from './api.js';
import { h, replace, table, badge, when, bytes, dialog, announce, errorText, words } from './dom.js';

export function findingsDialog(title, findings) {
  return dialog(title, findings.length ? findings.map((f) => h('section', { class: `finding finding-${String(f.severity).toLowerCase()}` },
    h('h3', {}, `${f.severity}: ${f.message}`),
    f.objects && f.objects.length ? [h('p', {}, 'Impacted objects:'), h('ul', {}, f.objects.map((o) => h('li', {}, h('code', {}, o))))] : null,
    h('p', {}, h('strong', {}, 'Remediation: '), f.remediation))) : h('p', {}, 'No findings.'));
}

export function readinessCell(database) {
  if (database.readiness !== 'NotReady' && !(database.findings || []).length) return badge(database.readiness);
  const label = database.readiness === 'NotReady' ? 'Not ready: view issues' : `${words(database.readiness)}: view findings`;
  return h('button', { type: 'button', class: `link badge-${database.readiness.toLowerCase()}`,
    onclick: () => findingsDialog(`Readiness issues: ${database.name}`, database.findings || []) }, label);
}

async function pickConnection(main, params) {
  const { connections } = await get('/connections');
  const select = h('select', { id: 'connection', name: 'connection' }, connections.map((c) =>
    h('option', { value: c.name, selected: c.name === params.get('connection') }, `${c.name} (${c.engine})`)));
  const button = h('button', { type: 'submit', class: 'primary' }, 'Run assessment');
  const message = h('p', { role: 'alert' });
  const form = h('form', { class: 'card' }, h('label', { for: 'connection' }, 'Source connection'), select, button, message);
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    button.disabled = true;
    try {
      const started = await post('/assessments', { connection: select.value });
      location.hash = `#/assessment/${encodeURIComponent(started.id)}`;
    } catch (error) {
      button.disabled = false;
      message.textContent = errorText(error);
    }
  });
  const { assessments } = await get('/overview');
  replace(main, h('h1', {}, 'Assessments'),
    h('p', {}, 'An assessment reads the source (never writes): instance findings, each database\'s readiness, and a size recommendation. Run it again at any time.'),
    form,
    assessments.length ? table('Latest assessments', ['Connection', 'Completed', 'Ready', 'With warnings', 'Not ready'], assessments.map((a) =>
      [h('a', { href: `#/assessment/${encodeURIComponent(a.id)}` }, a.connection), when(a.completedAt), a.ready, a.readyWithWarnings, a.notReady])) : null);
}

function overviewTab(report, engine) {
  const count = (r) => report.databases.filter((d) => d.readiness === r).length;
  const strategy = engine === 'postgres' ? 'Online: logical replication (publication on the source, subscription on the target)'
    : 'Online: Managed Instance link (distributed availability group)';
  return [
    h('dl', {},
      h('dt', {}, 'Migration strategy'), h('dd', {}, strategy),
      h('dt', {}, 'Recommended target'), h('dd', {}, report.recommendation ? report.recommendation.sku : 'no recommendation'),
      h('dt', {}, 'Databases'), h('dd', {}, `${count('Ready')} ready, ${count('ReadyWithWarnings')} ready with warnings, ${count('NotReady')} not ready`),
      h('dt', {}, 'Assessed'), h('dd', {}, when(report.completedAt))),
    h('h3', {}, 'Instance findings'),
    report.instance.findings.length ? h('ul', {}, report.instance.findings.map((f) => h('li', {},
      h('button', { type: 'button', class: 'link', onclick: () => findingsDialog(f.message, [f]) }, `${f.severity}: ${f.message}`))))
      : h('p', {}, 'No instance findings.'),
  ];
}

function sourceTab(report, engine) {
  const size = report.databases.reduce((sum, d) => sum + (d.sizeBytes || 0), 0);
  return h('dl', {},
    h('dt', {}, 'Connection'), h('dd', {}, report.connection),
    h('dt', {}, 'Engine'), h('dd', {}, engine || 'unknown'),
    h('dt', {}, 'Version'), h('dd', {}, report.instance.version || 'not reported'),
    h('dt', {}, 'User databases'), h('dd', {}, String(report.databases.length)),
    h('dt', {}, 'Total size'), h('dd', {}, bytes(size)));
}

function databasesTab(report) {
  return table('User databases and their readiness', ['Database', 'Readiness', 'Size', 'Findings'], report.databases.map((d) =>
    [d.name, readinessCell(d), bytes(d.sizeBytes), String((d.findings || []).length)]));
}

// Where the monthly cost comes from, said plainly: a built-in table is a dated snapshot, not a quote.
function priceSource(r) {
  const p = r.priceList;
  if (typeof r.monthlyCostUsd !== 'number') return 'No cost: milink has no price list for this kind of target, so it does not estimate one.';
  if (!p) return 'This assessment does not say where its prices come from (it predates price sources): run it again.';
  const origin = p.origin === 'builtIn'
    ? `A price table built into milink, dated ${p.asOf} (${p.region}, ${p.currency}). milink asks no price service: prices may have changed since.`
    : `The price file this connection names (price_file), dated ${p.asOf} (${p.region}, ${p.currency}).`;
  return [origin, p.estimate ? ' The table says its figures are estimates: check them with the Azure pricing calculator or the Retail Prices API before budgeting.' : '',
    h('br'), h('span', { class: 'muted' }, `Source: ${p.source}`)];
}

function skuTab(report) {
  const r = report.recommendation;
  if (!r) return h('p', {}, 'This assessment has no size recommendation.');
  const p = r.priceList;
  const cost = typeof r.monthlyCostUsd === 'number' ? `${r.monthlyCostUsd.toFixed(2)} USD per month${p && p.estimate ? ' (estimate)' : ''}${p ? `, prices as of ${p.asOf}` : ''}` : 'not estimated';
  return [
    h('dl', {},
      h('dt', {}, 'Recommended SKU'), h('dd', {}, r.sku),
      h('dt', {}, 'Size'), h('dd', {}, `${r.vcores} vCores, ${r.memoryGib} GiB memory, ${r.storageGib} GiB storage`),
      h('dt', {}, 'Monthly cost'), h('dd', { id: 'monthly-cost' }, cost),
      h('dt', {}, 'Price source and date'), h('dd', { id: 'price-source' }, priceSource(r)),
      h('dt', {}, 'Confidence'), h('dd', {}, r.confidence || '–')),
    h('h3', {}, 'Why'), h('ul', {}, (r.reasons || []).map((reason) => h('li', {}, reason))),
  ];
}

// Who is connected: the sessions to stop before cutover, as the source listed them when it was assessed.
function connectionsTab(report, engine) {
  const summary = report.connectionSummary;
  if (!summary) return h('p', {}, 'This assessment has no connection summary: the engine could not list who is connected (see the instance findings), or the report predates connection summaries. Run the assessment again.');
  const login = engine === 'postgres' ? 'Role' : 'Login';
  const intro = h('p', {}, `${summary.totalSessions} session(s) were connected when the source was assessed (${when(report.completedAt)}). `,
    'milink\'s own sessions and the server\'s background processes are not counted. Stop these applications before you cut over their database; run the assessment again to see who is connected now.');
  if (!summary.totalSessions) return [intro, h('p', {}, 'Nobody else was connected.')];
  return [
    intro,
    table('Sessions per database', ['Database', 'Sessions'], summary.databases.map((d) => [d.database, String(d.sessions)])),
    table('Who is connected', ['Application', 'Host', login, 'Database', 'Sessions'], summary.groups.map((g) =>
      [g.application || '(none announced)', g.host, g.login, g.database, String(g.sessions)])),
    summary.groupsLeftOut ? h('p', {}, `${summary.groupsLeftOut} smaller group(s) are not listed; every session is counted above.`) : null,
  ];
}

function tabs(panels, selected) {
  const buttons = [];
  const list = h('div', { role: 'tablist', 'aria-label': 'Assessment report' });
  const bodies = [];
  const select = (index, focus) => {
    buttons.forEach((b, i) => { b.setAttribute('aria-selected', String(i === index)); b.tabIndex = i === index ? 0 : -1; bodies[i].hidden = i !== index; });
    if (focus) buttons[index].focus();
  };
  panels.forEach(([key, title, content], i) => {
    const button = h('button', { type: 'button', role: 'tab', id: `tab-${key}`, 'aria-controls': `panel-${key}` }, title);
    button.addEventListener('click', () => select(i, false));
    button.addEventListener('keydown', (event) => {
      const step = { ArrowRight: 1, ArrowLeft: -1 }[event.key];
      if (step) { event.preventDefault(); select((i + step + panels.length) % panels.length, true); }
      if (event.key === 'Home') { event.preventDefault(); select(0, true); }
      if (event.key === 'End') { event.preventDefault(); select(panels.length - 1, true); }
    });
    buttons.push(button);
    list.append(button);
    bodies.push(h('div', { role: 'tabpanel', id: `panel-${key}`, 'aria-labelledby': `tab-${key}`, tabindex: 0, class: 'panel' }, content));
  });
  select(Math.max(0, panels.findIndex(([key]) => key === selected)), false);
  return [list, ...bodies];
}

export async function assessmentPage(main, route) {
  if (!route.id) return pickConnection(main, route.params);
  // The router waits for this page while the assessment runs; the user may leave meanwhile.
  const here = location.hash;
  const left = () => location.hash !== here;
  let report = await get(`/assessments/${encodeURIComponent(route.id)}`);
  if (report.status === 'Running') {
    replace(main, h('h1', {}, `Assessment of ${report.connection}`), h('p', { role: 'status' }, 'Running… the report appears here when it is done.'));
    while (report.status === 'Running' && !left()) {
      await new Promise((resolve) => setTimeout(resolve, 1000));
      report = await get(`/assessments/${encodeURIComponent(route.id)}`);
    }
    if (left()) return undefined;
    announce(`Assessment of ${report.connection} ${report.status === 'Completed' ? 'completed' : 'failed'}`);
  }
  const { connections } = await get('/connections');
  const engine = (connections.find((c) => c.name === report.connection) || {}).engine;
  const rerun = h('button', { type: 'button' }, 'Run assessment again');
  rerun.addEventListener('click', async () => {
    rerun.disabled = true;
    try { location.hash = `#/assessment/${encodeURIComponent((await post('/assessments', { connection: report.connection })).id)}`; } catch (error) { rerun.disabled = false; announce(errorText(error)); }
  });
  if (report.status === 'Failed') {
    replace(main, h('h1', {}, `Assessment of ${report.connection}`), badge('Failed'),
      h('p', { role: 'alert' }, report.error ? `${report.error.message} (${report.error.code})` : 'The assessment failed.'),
      report.error && report.error.remediation ? h('p', {}, h('strong', {}, 'What to do: '), report.error.remediation) : null,
      h('p', {}, 'It may fail while the source is unreachable or still starting: try again in a few minutes.'), rerun);
    return undefined;
  }
  replace(main, h('h1', {}, `Assessment of ${report.connection}`),
    h('p', { class: 'toolbar' }, badge(report.status), ` Completed ${when(report.completedAt)} `, rerun, ' ',
      h('a', { href: `#/new?${new URLSearchParams({ source: report.connection })}` }, 'New migration from this source')),
    ...tabs([
      ['overview', 'Overview', overviewTab(report, engine)],
      ['source', 'Source properties', sourceTab(report, engine)],
      ['databases', 'User databases', databasesTab(report)],
      ['sku', 'SKU recommendation', skuTab(report)],
      ['connections', 'Connection summary', connectionsTab(report, engine)],
    ], route.params.get('tab')));
  const focusDatabase = route.params.get('database');
  if (focusDatabase) {
    const row = [...main.querySelectorAll('#panel-databases tbody tr')].find((tr) => tr.firstChild.textContent === focusDatabase);
    if (row) row.classList.add('highlight');
  }
  return undefined;
}
