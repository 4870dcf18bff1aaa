// New migration, as the portal's wizard: 1 source and target, 2 databases (with readiness; not-ready ones
// cannot be picked and open their issues), 3 settings with their defaults, 4 review and start. The start
// button disables itself on the first click, so a double click sends one request (and the server returns
// the same migration for a repeated start anyway).
import { get, post } from './api.js';
import { h, replace, dialog, announce, errorText } from './dom.js';
import { readinessCell } from './assessment.js';

const SETTINGS = [
  ['readyLagBytes', 'Ready at lag of at most (bytes)', 1048576],
  ['drainTimeoutSeconds', 'Drain timeout at cutover (seconds, at most 600)', 30],
  ['drainStableSeconds', 'Drain stable for (seconds)', 0],
  ['stallAfterSeconds', 'Stalled after no progress for (seconds)', 300],
];

function stepper(current) {
  const names = ['Source and target', 'Databases', 'Settings', 'Review and start'];
  return h('ol', { class: 'stepper' }, names.map((name, i) => h('li', { 'aria-current': i === current ? 'step' : null, class: i < current ? 'done' : '' }, name)));
}

function choose(label, id, options, value) {
  return [h('label', { for: id }, label), h('select', { id, name: id }, options.map((c) => h('option', { value: c.name, selected: c.name === value }, `${c.name} (${c.engine})`)))];
}

export async function wizardPage(main, route) {
  const [{ connections }, overview] = await Promise.all([get('/connections'), get('/overview')]);
  const state = {
    step: 0,
    source: route.params.get('source') || (connections[0] || {}).name,
    target: null,
    databases: new Set(route.params.get('database') ? [route.params.get('database')] : []),
    settings: Object.fromEntries(SETTINGS.map(([key, , value]) => [key, value])),
    keepReverseLink: false,
    dropTargetOnCancel: false,
    report: null,
    started: null,
  };
  state.target = (connections.find((c) => c.name !== state.source) || {}).name;

  async function loadReport() {
    const latest = overview.assessments.find((a) => a.connection === state.source);
    state.report = latest ? await get(`/assessments/${encodeURIComponent(latest.id)}`) : null;
    if (state.report) {
      const pickable = new Set(state.report.databases.filter((d) => d.readiness !== 'NotReady').map((d) => d.name));
      state.databases = new Set([...state.databases].filter((d) => pickable.has(d)));
    }
  }

  function nav(back, nextLabel, onNext, nextDisabled) {
    return h('div', { class: 'actions' },
      back ? h('button', { type: 'button', onclick: () => { state.step -= 1; render(); } }, 'Back') : null,
      onNext ? h('button', { type: 'button', class: 'primary', id: 'next', disabled: nextDisabled, onclick: onNext }, nextLabel) : null);
  }

  function sourceStep() {
    return [
      h('fieldset', {}, h('legend', {}, 'Source and target'),
        h('p', {}, 'Method: online migration over a replication link, cut over when you choose.'),
        ...choose('Source', 'source', connections, state.source),
        ...choose('Target', 'target', connections, state.target)),
      nav(false, 'Next: databases', async () => {
        state.source = main.querySelector('#source').value;
        state.target = main.querySelector('#target').value;
        if (state.source === state.target) { announce('Pick a target other than the source'); return; }
        await loadReport();
        state.step = 1;
        render();
      }),
    ];
  }

  function databasesStep() {
    if (!state.report) {
      return [h('p', { role: 'alert' }, `${state.source} has no assessment yet. `, h('a', { href: `#/assessment?connection=${encodeURIComponent(state.source)}` }, 'Assess it first'), '.'), nav(true)];
    }
    const rows = state.report.databases.map((d) => {
      const id = `db-${d.name}`;
      const box = h('input', { type: 'checkbox', id, name: 'database', value: d.name, checked: state.databases.has(d.name), disabled: d.readiness === 'NotReady' });
      box.addEventListener('change', () => {
        if (box.checked) state.databases.add(d.name); else state.databases.delete(d.name);
        main.querySelector('#next').disabled = state.databases.size === 0;
      });
      return h('tr', {}, h('td', {}, box), h('th', { scope: 'row' }, h('label', { for: id }, d.name)), h('td', {}, readinessCell(d)));
    });
    return [
      h('fieldset', {}, h('legend', {}, `Databases on ${state.source}`),
        h('p', {}, 'Not-ready databases cannot be migrated until their blockers are fixed and the source is assessed again.'),
        h('div', { class: 'table-wrap' }, h('table', {}, h('caption', {}, 'Select source databases'),
          h('thead', {}, h('tr', {}, h('th', { scope: 'col' }, 'Migrate'), h('th', { scope: 'col' }, 'Database'), h('th', { scope: 'col' }, 'Readiness'))),
          h('tbody', {}, rows)))),
      nav(true, 'Next: settings', () => { state.step = 2; render(); }, state.databases.size === 0),
    ];
  }

  function settingsStep() {
    const inputs = SETTINGS.map(([key, label]) => [h('label', { for: key }, label), h('input', { id: key, name: key, type: 'number', min: 0, value: state.settings[key], required: true })]);
    const flag = (key, label) => h('div', { class: 'check' }, h('input', { type: 'checkbox', id: key, checked: state[key] }), h('label', { for: key }, label));
    return [
      h('fieldset', {}, h('legend', {}, 'Link settings (defaults shown)'), inputs,
        flag('keepReverseLink', 'Keep a reverse link for failback (SQL Server 2022+ only)'),
        flag('dropTargetOnCancel', 'Drop the target database if the migration is cancelled')),
      nav(true, 'Next: review', () => {
        for (const [key] of SETTINGS) state.settings[key] = Number(main.querySelector(`#${key}`).value);
        state.keepReverseLink = main.querySelector('#keepReverseLink').checked;
        state.dropTargetOnCancel = main.querySelector('#dropTargetOnCancel').checked;
        state.step = 3;
        render();
      }),
    ];
  }

  function body() {
    return { source: state.source, target: state.target, databases: [...state.databases],
      settings: { ...state.settings, keepReverseLink: state.keepReverseLink, dropTargetOnCancel: state.dropTargetOnCancel } };
  }

  function reviewStep() {
    const request = body();
    const message = h('div', { role: 'alert' });
    const start = h('button', { type: 'button', class: 'primary', id: 'start' }, 'Start migration');
    start.addEventListener('click', async () => {
      if (start.disabled) return;
      start.disabled = true;
      start.textContent = 'Starting…';
      try {
        const answer = await post('/migrations', request);
        state.started = answer.migrations;
        announce(`Started ${answer.migrations.length} migration(s)`);
        start.textContent = 'Started';
        replace(message, h('p', {}, 'Started: '), h('ul', {}, answer.migrations.map((m) =>
          h('li', {}, h('a', { href: `#/migration/${encodeURIComponent(m.id)}` }, `${m.database} (${m.status}${m.existing ? ', already migrating' : ''})`)))),
          h('p', {}, h('a', { href: '#/monitor' }, 'Monitor and cutover')));
      } catch (error) {
        start.disabled = false;
        start.textContent = 'Start migration';
        replace(message, h('p', { class: 'error' }, errorText(error)),
          error.details ? h('button', { type: 'button', class: 'link', onclick: () => dialog('Why it was refused', h('pre', {}, JSON.stringify(error.details, null, 2))) }, 'Details') : null);
      }
    });
    return [
      h('section', { class: 'card' }, h('h2', {}, 'Review'),
        h('dl', {},
          h('dt', {}, 'Source'), h('dd', {}, request.source),
          h('dt', {}, 'Target'), h('dd', {}, request.target),
          h('dt', {}, 'Databases'), h('dd', {}, request.databases.join(', ')),
          ...Object.entries(request.settings).flatMap(([key, value]) => [h('dt', {}, key), h('dd', {}, String(value))])),
        h('p', {}, 'milink validates prerequisites and tests the connection in both directions first; the migration shows Validating, then Deploying.')),
      h('div', { class: 'actions' }, h('button', { type: 'button', onclick: () => { state.step -= 1; render(); } }, 'Back'), start),
      message,
    ];
  }

  function render() {
    const steps = [sourceStep, databasesStep, settingsStep, reviewStep];
    const rendered = main.querySelector('h1') !== null;
    replace(main, h('h1', {}, 'New migration'), stepper(state.step), h('form', { class: 'wizard', onsubmit: (e) => e.preventDefault() }, steps[state.step]()));
    // Moving between steps keeps keyboard users in the form, at the new step's first field.
    const first = main.querySelector('form input:not([disabled]), form select, form button');
    if (rendered && first) first.focus();
  }

  if (route.params.get('source')) { await loadReport(); state.step = 1; }
  render();
}
