// A fleet plan on the Monitor page, against the real binary and real PostgreSQL: a plan whose only wave
// waits for its approval shows that wave with why it waits and an Approve button; one click approves it,
// the wave starts (its migration leaves Queued), and the page says so.
import { test, expect } from '@playwright/test';
import { join } from 'node:path';
import { loadSample, dropEverywhere, startMilink, unique, screenshotDir, unnamed } from './support.mjs';

const shots = screenshotDir();

test('a fleet plan waiting for approval is approved from the Monitor page', async ({ page }) => {
  const database = unique('FleetUi');
  loadSample(database, 'toystore.sql');
  const milink = await startMilink();
  const plan = unique('plan').replace(/[^A-Za-z0-9]/g, '-');
  try {
    const applied = await fetch(`${milink.base}/api/fleets`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ name: plan, waves: [{ name: 'pilot', approval: true, links: [{ source: 'src', target: 'dst', databases: [database] }] }] }),
    });
    expect(applied.status).toBe(202);

    await page.goto(`${milink.base}/#/monitor`);
    const waves = page.getByRole('table', { name: `Waves of plan ${plan}` });
    const pilot = waves.getByRole('row').filter({ hasText: 'pilot' });
    await expect(pilot).toContainText('waiting (needs approval)');
    await expect(pilot).toContainText('waiting for approval of wave "pilot"');
    expect(await unnamed(page)).toEqual([]);
    await page.screenshot({ path: join(shots, '30-fleet-waiting.png'), fullPage: true });

    await pilot.getByRole('button', { name: 'Approve wave pilot' }).click();
    await expect(page.locator('#announcer')).toContainText('Wave pilot of plan');
    await expect(pilot).toContainText('approved', { timeout: 30000 });
    await expect(pilot.getByRole('button')).toHaveCount(0);
    // The wave started: its migration is past Queued.
    await expect.poll(async () => (await milink.api(`/fleets/${plan}`)).counts.Queued ?? 0, { timeout: 60000 }).toBe(0);
    await page.screenshot({ path: join(shots, '31-fleet-approved.png'), fullPage: true });

    await fetch(`${milink.base}/api/fleets/${plan}/cancel`, { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: '{}' });
    await expect.poll(async () => (await milink.api(`/fleets/${plan}`)).counts.Cancelled ?? 0, { timeout: 60000 }).toBe(1);
  } finally {
    milink.stop();
    dropEverywhere(database, { bestEffort: true });
  }
});
