// One migration's blade: status, progress, lag (with a chart of what this page has seen), reason and
// remediation, the actions (cutover through a dialog that needs the "traffic stopped" confirmation,
// verify, fail back, cancel), the cutover timeline, the verification reports and the history.
// Refreshed every 2 seconds; the parts are updated in place so focus and open dialogs survive a refresh.
import { get, post } from './api.js';
import { h, replace, badge, bytes, when, announce, errorText, table, words } from './dom.js';
import { lagChart } from './chart.js';
import { progressCell, lagText } from './monitor.js';

const SYNCING = ['Seeding', 'CatchingUp', 'ReadyForCutover', 'Stalled', 'Blocked'];
const CANCELLABLE = ['Validating', 'Queued', 'Deploying', 'Seeding', 'CatchingUp', 'ReadyForCutover', 'Stalled', 'Blocked'];

function confirmDialog(title, explanation, confirmLabel, actionLabel, onConfirm, extra) {
  const box = h('dialog', { 'aria-labelledby': 'confirm-title' });
  const check = h('input', { type: 'checkbox', id: 'confirm-check' });
  const go = h('button', { type: 'button', class: 'primary', disabled: true }, actionLabel);
  const message = h('p', { role: 'alert' });
  check.addEventListener('change', () => { go.disabled = !check.checked; });
  go.addEventListener('click', async () => {
    go.disabled = true;
    message.textContent = '';
    try { await onConfirm(); box.close(); } catch (error) { message.textContent = errorText(error); go.disabled = !check.checked; }
  });
  replace(box, h('h2', { id: 'confirm-title' }, title), h('p', {}, explanation), extra || null,
    confirmLabel ? h('div', { class: 'check' }, check, h('label', { for: 'confirm-check' }, confirmLabel)) : null,
    message,
    h('div', { class: 'actions' }, h('button', { type: 'button', onclick: () => box.close() }, 'Close'), go));
  if (!confirmLabel) go.disabled = false;
  box.addEventListener('close', () => box.remove());
  document.body.append(box);
  box.showModal();
}

const has = (value) => value !== null && value !== undefined;

// Who was connected to this database when its source was last assessed: the sessions to stop before the
// cutover. A reminder from the assessment, dated, not a live count; nothing when there is no summary.
async function connectedAtAssessment(m) {
  try {
    const { assessments } = await get('/overview');
    const latest = assessments.find((a) => a.connection === m.source && a.status === 'Completed');
    if (!latest) return null;
    const report = await get(`/assessments/${encodeURIComponent(latest.id)}`);
    const summary = report.connectionSummary;
    if (!summary) return null;
    const groups = summary.groups.filter((g) => g.database === m.database);
    const total = groups.reduce((sum, g) => sum + g.sessions, 0);
    const at = `When ${m.source} was assessed (${when(report.completedAt)})`;
    if (!total) return h('p', { id: 'connected-sessions' }, `${at}, no other session was connected to ${m.database}.`);
    return h('div', { id: 'connected-sessions', class: 'notice' },
      h('p', {}, `${at}, ${total} session(s) were connected to ${m.database}:`),
      h('ul', {}, groups.map((g) => h('li', {}, `${g.sessions} from ${g.application || 'an application that gave no name'} on ${g.host} as ${g.login}`))),
      h('p', {}, 'Stop them before you confirm; the fence ends any session still open, and its writes fail from then on.'));
  } catch {
    return null;
  }
}

function timeline(m) {
  const c = m.cutover || {};
  if (!c.requestedAt) return h('p', {}, 'No cutover requested yet.');
  const took = Object.fromEntries((c.steps || []).map((s) => [s.step, s.ms]));
  const v = c.verification;
  const steps = [
    ['Cutover requested', c.requestedAt, c.attempt ? `attempt ${c.attempt}` : '', null],
    ['Fence the source', c.fencedAt, has(c.fencePosition) ? `writes stopped at position ${c.fencePosition}` : '', 'Fencing'],
    ['Drain: the target holds every committed change', has(c.drainedPosition), has(c.drainedPosition) ? `target reached position ${c.drainedPosition}` : '', 'Draining'],
    ['Finalize and verify', Boolean(v), v ? `${v.complete ? 'complete' : 'incomplete'}, ${(v.tables || []).length} table(s), ${v.sequencesSet || 0} sequence(s) set` : '', 'Finalizing'],
    ['Switch: the target is primary', c.switchedAt, typeof c.writeDowntimeMs === 'number' ? `write downtime ${c.writeDowntimeMs} ms` : '', 'Switching'],
  ];
  return h('ol', { class: 'timeline' }, steps.map(([name, done, detail, key]) => h('li', { class: done ? 'done' : '' },
    h('span', { class: 'visually-hidden' }, done ? 'Done: ' : 'Pending: '), h('strong', {}, name),
    typeof done === 'string' ? ` ${when(done)}` : '', detail ? ` — ${detail}` : '',
    key && has(took[key]) ? ` (step took ${took[key]} ms)` : '')),
  c.abandonedReason ? h('li', { class: 'error' }, `Abandoned: ${c.abandonedReason}`) : null);
}

function verificationReport(title, v) {
  if (!v) return h('section', {}, h('h3', {}, title), h('p', {}, 'None yet.'));
  const clean = v.complete && !(v.differences || []).length && (v.tables || []).every((t) => !(t.differing || []).length && t.sourceRows === t.targetRows);
  return h('section', { class: 'verification' }, h('h3', {}, title),
    h('p', {}, badge(clean ? 'Equal' : 'Differs'), ` ${v.method || ''}, ${v.complete ? 'every table compared' : `incomplete${v.incompleteReason ? `: ${v.incompleteReason}` : ''}`}, ${v.rowsCompared || 0} rows compared, finished ${when(v.finishedAt)}`),
    table(`${title}: tables`, ['Table', 'Source rows', 'Target rows', 'Differing keys'], (v.tables || []).map((t) => [t.table, String(t.sourceRows), String(t.targetRows),
      (t.differing || []).length ? h('ul', {}, t.differing.map((d) => h('li', {}, `${d.fromKey} … ${d.toKey}: ${d.sourceRows} vs ${d.targetRows} rows`, (d.keys || []).length ? `; keys ${d.keys.join(', ')}` : ''))) : 'none'])),
    (v.differences || []).length ? h('ul', {}, v.differences.map((d) => h('li', {}, `${d.kind} ${d.object}: ${d.detail}`))) : null);
}

export async function migrationPage(main, route) {
  const id = route.id;
  const path = `/migrations/${encodeURIComponent(id)}`;
  const parts = Object.fromEntries(['summary', 'chart', 'reason', 'timeline', 'verification', 'history'].map((k) => [k, h('div', { id: `part-${k}` })]));
  const buttons = {
    cutover: h('button', { type: 'button', class: 'primary', id: 'cutover' }, 'Complete cutover'),
    verify: h('button', { type: 'button', id: 'verify' }, 'Verify now'),
    failback: h('button', { type: 'button', id: 'failback' }, 'Fail back'),
    cancel: h('button', { type: 'button', id: 'cancel' }, 'Cancel migration'),
  };
  const heading = h('h1', {}, 'Migration');
  replace(main, heading, parts.summary, h('div', { class: 'actions' }, Object.values(buttons)), parts.reason,
    h('h2', {}, 'Lag'), parts.chart,
    h('h2', {}, 'Cutover timeline'), parts.timeline,
    h('h2', {}, 'Verification'), parts.verification,
    h('h2', {}, 'History'), parts.history);
  const samples = [];
  let current = null;
  const act = async (what, body) => {
    const answer = await post(`${path}/${what}`, body);
    announce(`${words(answer.status)}: ${what} requested`);
    await load();
  };
  buttons.cutover.addEventListener('click', async () => confirmDialog('Complete cutover',
    `milink stops writes on the source, waits until the target holds every committed change, verifies, and makes the target the primary. Stop the application's traffic to ${current.database} first.`,
    'I confirm that I have stopped all incoming traffic to the source database', 'Complete cutover',
    () => act('cutover', { confirmTrafficStopped: true }), await connectedAtAssessment(current)));
  buttons.failback.addEventListener('click', () => confirmDialog('Fail back to the source',
    'The source becomes the primary again over the reverse link.', 'I confirm that I have stopped all incoming traffic to the target database', 'Fail back',
    () => act('failback', { confirmTrafficStopped: true })));
  buttons.cancel.addEventListener('click', () => confirmDialog('Cancel this migration',
    'The source gets its writes back if it was fenced and the link is removed. The target database stays unless the migration drops it on cancel.', null, 'Cancel migration',
    () => act('cancel', {})));
  buttons.verify.addEventListener('click', async () => {
    buttons.verify.disabled = true;
    try { await act('verify', {}); } catch (error) { announce(`Verify refused: ${errorText(error)}`); }
  });

  async function load() {
    let m;
    try { m = await get(path); } catch (error) { replace(parts.reason, h('p', { role: 'alert' }, errorText(error))); return; }
    if (current && current.status !== m.status) announce(`${m.database} is now ${words(m.status)}`);
    current = m;
    heading.textContent = `Migration of ${m.database}`;
    samples.push({ at: Date.now(), lag: typeof m.lagBytes === 'number' ? m.lagBytes : null });
    if (samples.length > 300) samples.shift();
    replace(parts.summary, h('dl', { class: 'summary' },
      h('dt', {}, 'Status'), h('dd', { id: 'status' }, badge(m.status), m.step ? ` ${m.step}` : ''),
      h('dt', {}, 'Source → target'), h('dd', {}, `${m.source} → ${m.target}`),
      h('dt', {}, 'Progress'), h('dd', {}, progressCell(m)),
      h('dt', {}, 'Lag'), h('dd', {}, lagText(m)),
      h('dt', {}, 'Started'), h('dd', {}, when(m.createdAt))));
    replace(parts.chart, lagChart(samples));
    replace(parts.reason, m.reason ? h('div', { class: 'notice' }, h('p', {}, h('strong', {}, 'Reason: '), m.reason),
      m.remediation ? h('p', {}, h('strong', {}, 'What to do: '), m.remediation) : null) : null);
    replace(parts.timeline, timeline(m));
    const v = m.verification || {};
    replace(parts.verification,
      v.running ? h('p', { role: 'status' }, 'A verification is running…') : null,
      v.lastError ? h('p', { class: 'error' }, `The last verification could not run: ${v.lastError}`) : null,
      verificationReport('Latest verification', v.last),
      verificationReport('Cutover verification', (m.cutover || {}).verification));
    replace(parts.history, table('History', ['When', 'Status', 'What happened'], (m.history || []).slice().reverse().map((e) => [when(e.at), words(e.status), e.message])));
    buttons.cutover.disabled = m.status !== 'ReadyForCutover';
    buttons.verify.disabled = !SYNCING.includes(m.status) || Boolean(v.running);
    buttons.failback.disabled = !(m.status === 'Completed' && m.settings && m.settings.keepReverseLink);
    buttons.cancel.disabled = !CANCELLABLE.includes(m.status);
  }
  await load();
  const timer = setInterval(load, 2000);
  return () => clearInterval(timer);
}
