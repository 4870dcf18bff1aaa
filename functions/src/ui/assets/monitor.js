// Monitor and cutover: every migration, refreshed every 2 seconds, with status changes announced to
// screen readers; the fleet plans with their waves (approve a waiting wave here); and the dead letters
// (steps that ran out of retries).
import { get, post } from './api.js';
import { h, replace, table, badge, bytes, announce, errorText, when, words } from './dom.js';

export function progressCell(m) {
  if (typeof m.progress !== 'number') return '–';
  return h('span', { class: 'progress' }, h('progress', { max: 100, value: m.progress, 'aria-label': `${m.database} progress` }), ` ${m.progress.toFixed(0)} %`, seedText(m));
}

// "312.4 MiB of 755.0 MiB, about 1 min 20 s left" while seeding (the API's seed), else nothing.
export function seedText(m) {
  const seed = m.status === 'Seeding' ? m.seed : null;
  if (!seed) return '';
  let text = ` (${bytes(seed.copiedBytes)} of ${bytes(seed.totalBytes)}`;
  if (typeof seed.etaSeconds === 'number') text += `, about ${durationText(seed.etaSeconds)} left`;
  return h('span', { class: 'seed' }, `${text})`);
}

function durationText(seconds) {
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s`;
  return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
}

export function lagText(m) {
  const parts = [];
  if (m.lagBytes !== null && m.lagBytes !== undefined) parts.push(bytes(m.lagBytes));
  if (m.lagSeconds !== null && m.lagSeconds !== undefined) parts.push(`${m.lagSeconds} s`);
  return parts.length ? parts.join(', ') : '–';
}

function rows(migrations) {
  return migrations.map((m) => [
    h('a', { href: `#/migration/${encodeURIComponent(m.id)}` }, m.database),
    `${m.source} → ${m.target}`,
    h('span', {}, badge(m.status), m.step ? ` ${m.step}` : ''),
    progressCell(m),
    lagText(m),
    m.reason ? h('span', {}, m.reason, m.remediation ? h('span', { class: 'remediation' }, ` What to do: ${m.remediation}`) : '') : '–',
  ]);
}

function countsText(counts) {
  return Object.entries(counts || {}).map(([status, n]) => `${words(status)} ${n}`).join(', ') || '–';
}

// One table per plan: its waves in order, what each waits for, and an Approve button where a wave waits
// for its approval.
function fleetTables(fleets, approve) {
  return fleets.map((plan) => {
    const cost = typeof plan.estimatedCost?.monthlyCostUsd === 'number' ? `${plan.estimatedCost.monthlyCostUsd.toFixed(2)} USD per month` : 'unknown until every source is assessed';
    const eta = typeof plan.seedingEtaSeconds === 'number' ? `, seeding about ${durationText(plan.seedingEtaSeconds)} left` : '';
    return h('section', { class: 'fleet', 'aria-label': `Plan ${plan.name}` },
      h('h3', {}, `Plan ${plan.name}`),
      h('p', {}, `${plan.total} migrations: ${countsText(plan.counts)}; progress ${plan.progressPercent ?? 0} %${eta}; lag ${bytes(plan.lagBytes)}; estimated cost ${cost}.`),
      table(`Waves of plan ${plan.name}`, ['Wave', 'State', 'Migrations', 'Progress', 'Why it waits', 'Action'], (plan.waves || []).map((w) => [
        `${w.number}. ${w.name}`,
        w.needsApproval ? `${w.state} (needs approval)` : (w.approval ? `${w.state} (${w.approved ? 'approved' : 'needs approval'})` : w.state),
        countsText(w.counts),
        `${w.progressPercent ?? 0} %`,
        w.reason || '–',
        w.needsApproval
          ? h('button', { type: 'button', onclick: () => approve(plan.name, w.name) }, `Approve wave ${w.name}`)
          : '–',
      ])));
  });
}

export async function monitorPage(main) {
  const list = h('div', { id: 'migrations' });
  const fleets = h('div', { id: 'fleets' });
  const letters = h('div', { id: 'dead-letters' });
  const updated = h('p', { class: 'muted' });
  const refresh = h('button', { type: 'button' }, 'Refresh');
  replace(main, h('h1', {}, 'Monitor and cutover'),
    h('p', { class: 'toolbar' }, refresh, ' ', updated),
    list,
    fleets,
    h('h2', {}, 'Dead letters'), letters);
  let lastFleets = '';
  async function approve(plan, wave) {
    try {
      await post(`/fleets/${encodeURIComponent(plan)}/approve`, { wave });
      announce(`Wave ${wave} of plan ${plan} approved: it starts when the earlier waves let it`);
      await load();
    } catch (error) {
      announce(`Could not approve wave ${wave}: ${errorText(error)}`);
    }
  }
  const seen = new Map();
  let last = '';
  async function load() {
    try {
      const { migrations } = await get('/migrations');
      for (const m of migrations) {
        if (seen.has(m.id) && seen.get(m.id) !== m.status) announce(`${m.database} is now ${m.status}`);
        seen.set(m.id, m.status);
      }
      const snapshot = JSON.stringify(migrations);
      if (snapshot !== last) {
        last = snapshot;
        replace(list, migrations.length
          ? table('Migrations', ['Database', 'Source → target', 'Status', 'Progress', 'Lag', 'Reason'], rows(migrations))
          : h('p', {}, 'No migrations yet. ', h('a', { href: '#/new' }, 'Start one'), '.'));
      }
      const plans = (await get('/fleets')).fleets;
      const fleetSnapshot = JSON.stringify(plans);
      if (fleetSnapshot !== lastFleets) {
        lastFleets = fleetSnapshot;
        replace(fleets, plans.length ? [h('h2', {}, 'Fleet plans'), fleetTables(plans, approve)] : '');
      }
      const { deadLetters } = await get('/deadletters');
      replace(letters, deadLetters.length
        ? table('Steps that ran out of retries', ['Id', 'Stage', 'Given up at', 'Deliveries', 'Last error'], deadLetters.map((d) => [d.id, d.stage, when(d.deadAt), String(d.deliveries), d.lastError || '–']))
        : h('p', {}, 'None.'));
      updated.textContent = `Updated ${new Date().toLocaleTimeString()}`;
    } catch (error) {
      updated.textContent = `Could not refresh: ${errorText(error)}`;
    }
  }
  refresh.addEventListener('click', load);
  await load();
  const timer = setInterval(load, 2000);
  return () => clearInterval(timer);
}
