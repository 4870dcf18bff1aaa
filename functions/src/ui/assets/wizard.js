// New migration, as the portal's wizard: 1 source and target, 2 databases (with readiness; not-ready ones
// cannot be picked and open their issues), 3 settings with their defaults, 4 review and start. The start
// button disables itself on the first click, so a double click sends one request (and the server returns
// the same migration for a repeated start anyway). The settings step tests both connections the way the
// migration will reach them (POST /api/connections/{name}/test) and the review repeats what it found.
import { get, post } from './api.js';
import { h, replace, dialog, announce, errorText, table } from './dom.js';
import { readinessCell } from './assessment.js';

const SETTINGS = [
  ['readyLagBytes', 'Ready at lag of at most (bytes)', 1048576],
  ['drainTimeoutSeconds', 'Drain timeout at cutover (seconds, at most 600)', 30],
  ['drainStableSeconds', 'Drain stable for (seconds)', 0],
  ['stallAfterSeconds', 'Stalled after no progress for (seconds)', 300],
];
const FLAGS = [
  ['keepReverseLink', 'Keep a reverse link for failback (SQL Server 2022+ only)'],
  ['dropTargetOnCancel', 'Drop the target database if the migration is cancelled'],
];
const STEP_NAMES = ['Source and target', 'Databases', 'Settings', 'Review and start'];

function choose(label, id, options, value) {
  return [h('label', { for: id }, label), h('select', { id, name: id }, options.map((c) => h('option', { value: c.name, selected: c.name === value }, `${c.name} (${c.engine})`)))];
}

class Wizard {
  constructor(main, connections, assessments, params) {
    this.main = main;
    this.connections = connections;
    this.assessments = assessments;
    this.step = 0;
    this.source = params.get('source') || (connections[0] || {}).name;
    this.target = (connections.find((c) => c.name !== this.source) || {}).name;
    this.databases = new Set(params.get('database') ? [params.get('database')] : []);
    this.settings = Object.fromEntries([...SETTINGS.map(([key, , value]) => [key, value]), ...FLAGS.map(([key]) => [key, false])]);
    this.report = null;
    this.tests = null;
  }

  // Tests source and target side by side; the result table says what answered or what to fix.
  async testConnections(button, out) {
    button.disabled = true;
    replace(out, h('p', { role: 'status' }, `Testing ${this.source} and ${this.target}…`));
    const test = async (name) => {
      try { return await post(`/connections/${encodeURIComponent(name)}/test`, {}); } catch (error) {
        return { connection: name, ok: false, reachable: false, authenticated: false, error: { code: error.code || 'error', message: errorText(error), remediation: '' } };
      }
    };
    this.tests = await Promise.all([test(this.source), test(this.target)]);
    this.testedPair = `${this.source}>${this.target}`;
    button.disabled = false;
    this.showTests(out);
    const failed = this.tests.filter((t) => !t.ok && t.error.code !== 'test_connection_not_supported').map((t) => t.connection);
    announce(failed.length ? `Connection test failed for ${failed.join(' and ')}` : 'Both connections answered');
  }

  showTests(out) {
    if (!this.tests || this.testedPair !== `${this.source}>${this.target}`) { replace(out); return; }
    const result = (t) => {
      if (t.ok) return h('span', { class: 'badge badge-ready' }, 'Connected');
      if (t.error && t.error.code === 'test_connection_not_supported') return h('span', { class: 'badge' }, 'Tested at validation');
      const stage = !t.reachable ? 'Not reachable' : 'Refused';
      return h('span', { class: 'badge badge-notready' }, stage);
    };
    const tls = (t) => (t.tls === true ? `yes${t.tlsProtocol ? ` (${t.tlsProtocol})` : ''}` : t.tls === false ? 'no' : '–');
    replace(out, table('Connection test', ['Connection', 'Result', 'Version', 'TLS', 'Latency', 'What to fix'], this.tests.map((t) => [
      t.connection, result(t), t.serverVersion || '–', tls(t),
      typeof t.connectMs === 'number' ? `${t.connectMs} ms to connect, ${t.roundTripMs} ms per query` : '–',
      t.ok ? 'nothing' : h('span', {}, `${t.error.message} (${t.error.code})`, t.error.remediation ? h('span', { class: 'remediation' }, ` What to do: ${t.error.remediation}`) : ''),
    ])));
  }

  async loadReport() {
    const latest = this.assessments.find((a) => a.connection === this.source);
    this.report = latest ? await get(`/assessments/${encodeURIComponent(latest.id)}`) : null;
    const pickable = new Set((this.report ? this.report.databases : []).filter((d) => d.readiness !== 'NotReady').map((d) => d.name));
    this.databases = new Set([...this.databases].filter((d) => pickable.has(d)));
  }

  go(step) {
    this.step = step;
    this.render();
  }

  nav(nextLabel, onNext, nextDisabled) {
    return h('div', { class: 'actions' },
      this.step > 0 ? h('button', { type: 'button', onclick: () => this.go(this.step - 1) }, 'Back') : null,
      onNext ? h('button', { type: 'button', class: 'primary', id: 'next', disabled: nextDisabled, onclick: onNext }, nextLabel) : null);
  }

  sourceStep() {
    return [
      h('fieldset', {}, h('legend', {}, 'Source and target'),
        h('p', {}, 'Method: online migration over a replication link, cut over when you choose.'),
        ...choose('Source', 'source', this.connections, this.source),
        ...choose('Target', 'target', this.connections, this.target)),
      this.nav('Next: databases', async () => {
        this.source = this.main.querySelector('#source').value;
        this.target = this.main.querySelector('#target').value;
        if (this.source === this.target) { announce('Pick a target other than the source'); return; }
        await this.loadReport();
        this.go(1);
      }),
    ];
  }

  databaseRow(d) {
    const id = `db-${d.name}`;
    const box = h('input', { type: 'checkbox', id, name: 'database', value: d.name, checked: this.databases.has(d.name), disabled: d.readiness === 'NotReady' });
    box.addEventListener('change', () => {
      if (box.checked) this.databases.add(d.name); else this.databases.delete(d.name);
      // Only the Next button changes: re-rendering would lose the keyboard user's place in the list.
      this.main.querySelector('#next').disabled = this.databases.size === 0;
    });
    return h('tr', {}, h('td', {}, box), h('th', { scope: 'row' }, h('label', { for: id }, d.name)), h('td', {}, readinessCell(d)));
  }

  databasesStep() {
    if (!this.report) {
      const assess = h('a', { href: `#/assessment?connection=${encodeURIComponent(this.source)}` }, 'Assess it first');
      return [h('p', { role: 'alert' }, `${this.source} has no assessment yet. `, assess, '.'), this.nav()];
    }
    const header = h('tr', {}, ['Migrate', 'Database', 'Readiness'].map((name) => h('th', { scope: 'col' }, name)));
    return [
      h('fieldset', {}, h('legend', {}, `Databases on ${this.source}`),
        h('p', {}, 'Not-ready databases cannot be migrated until their blockers are fixed and the source is assessed again.'),
        h('div', { class: 'table-wrap' }, h('table', {}, h('caption', {}, 'Select source databases'),
          h('thead', {}, header), h('tbody', {}, this.report.databases.map((d) => this.databaseRow(d)))))),
      this.nav('Next: settings', () => this.go(2), this.databases.size === 0),
    ];
  }

  settingsStep() {
    const inputs = SETTINGS.map(([key, label]) => [h('label', { for: key }, label), h('input', { id: key, name: key, type: 'number', min: 0, value: this.settings[key], required: true })]);
    const flags = FLAGS.map(([key, label]) => h('div', { class: 'check' }, h('input', { type: 'checkbox', id: key, checked: this.settings[key] }), h('label', { for: key }, label)));
    const results = h('div', { id: 'connection-test', 'aria-live': 'polite' });
    const testButton = h('button', { type: 'button', id: 'test-connections' }, 'Test connections');
    testButton.addEventListener('click', () => this.testConnections(testButton, results));
    this.showTests(results);
    return [
      h('fieldset', {}, h('legend', {}, 'Link settings (defaults shown)'), inputs, flags),
      h('fieldset', {}, h('legend', {}, 'Test connection'),
        h('p', {}, `Connects to ${this.source} and ${this.target} the way the migration will (their urls, credentials and TLS settings) and runs one read-only query. Nothing is changed.`),
        testButton, results),
      this.nav('Next: review', () => {
        for (const [key] of SETTINGS) this.settings[key] = Number(this.main.querySelector(`#${key}`).value);
        for (const [key] of FLAGS) this.settings[key] = this.main.querySelector(`#${key}`).checked;
        this.go(3);
      }),
    ];
  }

  async start(button, message, request) {
    if (button.disabled) return;
    button.disabled = true;
    button.textContent = 'Starting…';
    try {
      const answer = await post('/migrations', request);
      announce(`Started ${answer.migrations.length} migration(s)`);
      button.textContent = 'Started';
      replace(message, h('p', {}, 'Started: '), h('ul', {}, answer.migrations.map((m) =>
        h('li', {}, h('a', { href: `#/migration/${encodeURIComponent(m.id)}` }, `${m.database} (${m.status}${m.existing ? ', already migrating' : ''})`)))),
      h('p', {}, h('a', { href: '#/monitor' }, 'Monitor and cutover')));
    } catch (error) {
      button.disabled = false;
      button.textContent = 'Start migration';
      const details = error.details ? h('button', { type: 'button', class: 'link', onclick: () => dialog('Why it was refused', h('pre', {}, JSON.stringify(error.details, null, 2))) }, 'Details') : null;
      replace(message, h('p', { class: 'error' }, errorText(error)), details);
    }
  }

  testWarning() {
    const current = this.tests && this.testedPair === `${this.source}>${this.target}`;
    if (!current) return h('p', { class: 'notice' }, 'Warning: the connections were not tested. Validation tests them at start; Back to settings to test them now.');
    const failed = this.tests.filter((t) => !t.ok && t.error.code !== 'test_connection_not_supported');
    if (failed.length) return h('p', { class: 'notice' }, `Warning: the connection test failed for ${failed.map((t) => t.connection).join(' and ')}: validation will stop this migration until it is fixed.`);
    return h('p', {}, `Connection test passed for ${this.tests.filter((t) => t.ok).map((t) => t.connection).join(' and ')}.`);
  }

  reviewStep() {
    const request = { source: this.source, target: this.target, databases: [...this.databases], settings: { ...this.settings } };
    const message = h('div', { role: 'alert' });
    const button = h('button', { type: 'button', class: 'primary', id: 'start' }, 'Start migration');
    button.addEventListener('click', () => this.start(button, message, request));
    const settings = Object.entries(request.settings).flatMap(([key, value]) => [h('dt', {}, key), h('dd', {}, String(value))]);
    return [
      h('section', { class: 'card' }, h('h2', {}, 'Review'),
        h('dl', {}, h('dt', {}, 'Source'), h('dd', {}, request.source), h('dt', {}, 'Target'), h('dd', {}, request.target),
          h('dt', {}, 'Databases'), h('dd', {}, request.databases.join(', ')), settings),
        this.testWarning(),
        h('p', {}, 'milink validates prerequisites and tests the connection in both directions first; the migration shows Validating, then Deploying.')),
      h('div', { class: 'actions' }, h('button', { type: 'button', onclick: () => this.go(2) }, 'Back'), button),
      message,
    ];
  }

  render() {
    const steps = [() => this.sourceStep(), () => this.databasesStep(), () => this.settingsStep(), () => this.reviewStep()];
    const rendered = this.main.querySelector('h1') !== null;
    const stepper = h('ol', { class: 'stepper' }, STEP_NAMES.map((name, i) => h('li', { 'aria-current': i === this.step ? 'step' : null, class: i < this.step ? 'done' : '' }, name)));
    replace(this.main, h('h1', {}, 'New migration'), stepper, h('form', { class: 'wizard', onsubmit: (e) => e.preventDefault() }, steps[this.step]()));
    // Moving between steps keeps keyboard users in the form, at the new step's first field.
    const first = this.main.querySelector('form input:not([disabled]), form select, form button');
    if (rendered && first) first.focus();
  }
}

export async function wizardPage(main, route) {
  const [{ connections }, { assessments }] = await Promise.all([get('/connections'), get('/overview')]);
  const wizard = new Wizard(main, connections, assessments, route.params);
  if (route.params.get('source')) { await wizard.loadReport(); wizard.step = 1; }
  wizard.render();
}
