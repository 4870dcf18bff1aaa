// The dashboard: the four steps with a tick when done, what to do next (the API's nextActions), the
// sources with their latest assessment, and migrations by status.
import { get, post } from './api.js';
import { h, replace, table, badge, when, announce, errorText } from './dom.js';

function actionLink(action) {
  const q = (params) => new URLSearchParams(Object.entries(params).filter(([, v]) => v !== undefined && v !== null)).toString();
  switch (action.kind) {
    case 'cutover':
    case 'investigate':
      return `#/migration/${encodeURIComponent(action.migrationId)}`;
    case 'fixBlockers':
      return `#/assessment/${encodeURIComponent(action.assessmentId)}?${q({ tab: 'databases', database: action.database })}`;
    case 'startMigration':
      return `#/new?${q({ source: action.connection, database: action.database })}`;
    case 'assess':
      return `#/assessment?${q({ connection: action.connection })}`;
    default:
      return null;
  }
}

async function assess(connection, button) {
  button.disabled = true;
  try {
    const started = await post('/assessments', { connection });
    announce(`Assessment of ${connection} started`);
    location.hash = `#/assessment/${encodeURIComponent(started.id)}`;
  } catch (error) {
    button.disabled = false;
    announce(`Assessment refused: ${errorText(error)}`);
  }
}

function steps(list) {
  return h('ol', { class: 'steps' }, list.map((step, i) => h('li', { class: step.done ? 'step done' : 'step' },
    h('span', { class: 'tick', 'aria-hidden': 'true' }, step.done ? '✓' : String(i + 1)),
    h('h3', {}, step.title),
    h('p', {}, h('span', { class: 'visually-hidden' }, step.done ? 'Done. ' : 'Not done yet. '), step.detail))));
}

function nextActions(actions) {
  if (!actions.length) return h('p', {}, 'Nothing to do: every migration is finished.');
  return h('ol', { class: 'next' }, actions.map((action) => {
    const href = actionLink(action);
    return h('li', {}, href ? h('a', { href }, action.title) : action.title);
  }));
}

function sources(overview) {
  const latest = Object.fromEntries(overview.assessments.map((a) => [a.connection, a]));
  return table('Connections', ['Name', 'Engine', 'Latest assessment', ''], overview.connections.map((c) => {
    const a = latest[c.name];
    const summary = a
      ? h('a', { href: `#/assessment/${encodeURIComponent(a.id)}` }, `${when(a.completedAt)}: ${a.ready} ready, ${a.readyWithWarnings} with warnings, ${a.notReady} not ready`)
      : 'never assessed';
    const button = h('button', { type: 'button' }, `Assess ${c.name}`);
    button.addEventListener('click', () => assess(c.name, button));
    return [c.name, c.engine, summary, button];
  }));
}

function byStatus(counts) {
  const entries = Object.entries(counts);
  if (!entries.length) return h('p', {}, 'No migration yet. ', h('a', { href: '#/new' }, 'Start one'), '.');
  return h('ul', { class: 'counts' }, entries.map(([status, n]) => h('li', {}, badge(status), ` ${n}`)));
}

export async function overviewPage(main) {
  const overview = await get('/overview');
  replace(main,
    h('h1', {}, 'Database migration'),
    h('section', { 'aria-labelledby': 'journey' }, h('h2', { id: 'journey' }, 'The journey'), steps(overview.steps)),
    h('section', { 'aria-labelledby': 'next' }, h('h2', { id: 'next' }, 'What to do next'), nextActions(overview.nextActions)),
    h('section', { 'aria-labelledby': 'sources' }, h('h2', { id: 'sources' }, 'Sources and targets'), sources(overview)),
    h('section', { 'aria-labelledby': 'migrations' }, h('h2', { id: 'migrations' }, 'Migrations by status'), byStatus(overview.migrationsByStatus),
      h('p', {}, h('a', { href: '#/monitor' }, 'Monitor and cutover'))));
}
