// The assessment page for a SQL Server source, whose engine cannot run here (no SQL Server is reachable):
// the real milink serves the page, and the one report it shows is a FAKE API answer in the shape
// shared/sqlserver's contract tests assert (built-in price table with its date, sessions by login). It
// checks what only a SQL Server report has: a monthly cost with its source and date said plainly, and the
// connection summary's Login column; at 1280×800 and in a narrow window, with every control named.
import { test, expect } from '@playwright/test';
import { join } from 'node:path';
import { startMilink, screenshotDir, unnamed } from './support.mjs';

const shots = screenshotDir();

const report = {
  id: 'fake-sqlserver-report',
  connection: 'src',
  status: 'Completed',
  startedAt: '2026-11-30T22:00:00Z',
  completedAt: '2026-11-30T22:01:00Z',
  instance: { version: '16.0.4135.4 (Enterprise Edition (64-bit))', findings: [] },
  databases: [{ name: 'ToyStore', readiness: 'Ready', findings: [], sizeBytes: 2684354560 }],
  recommendation: {
    sku: 'General Purpose 4 vCores', vcores: 4, memoryGib: 20.4, storageGib: 64, monthlyCostUsd: 739.1, confidence: 'Medium',
    reasons: ['cheapest of 40 sizes that fit'],
    priceList: { origin: 'builtIn', source: 'milink research notes (assessment.md §5.2-5.3)', asOf: '2026-09-13', region: 'eastus', currency: 'USD', estimate: true },
  },
  connectionSummary: {
    totalSessions: 4, groupsLeftOut: 0,
    databases: [{ database: 'ToyStore', sessions: 3 }, { database: 'master', sessions: 1 }],
    groups: [
      { application: 'ToyStore.Web', host: '10.0.0.21', login: 'toystore_app', database: 'ToyStore', sessions: 2 },
      { application: 'Microsoft SQL Server Management Studio', host: 'local', login: 'dba', database: 'master', sessions: 1 },
      { application: '', host: '10.0.0.22', login: 'toystore_app', database: 'ToyStore', sessions: 1 },
    ],
  },
  error: null,
};

test('a SQL Server report: the cost says where its prices come from, the summary names logins', async ({ page }) => {
  const milink = await startMilink();
  try {
    await page.route('**/api/assessments/fake-sqlserver-report', (route) => route.fulfill({ json: report }));
    await page.route('**/api/connections', (route) => route.fulfill({ json: { connections: [{ name: 'src', engine: 'sqlserver' }, { name: 'mi', engine: 'azure-sql-mi' }] } }));
    await page.goto(`${milink.base}/#/assessment/fake-sqlserver-report?tab=sku`);
    const sku = page.getByRole('tabpanel', { name: 'SKU recommendation' });
    await expect(sku.locator('#monthly-cost')).toHaveText('739.10 USD per month (estimate), prices as of 2026-09-13');
    await expect(sku.locator('#price-source')).toContainText('A price table built into milink, dated 2026-09-13 (eastus, USD)');
    await expect(sku.locator('#price-source')).toContainText('estimates');
    expect(await unnamed(page)).toEqual([]);
    await page.screenshot({ path: join(shots, '20-sqlserver-sku.png'), fullPage: true });

    await page.getByRole('tab', { name: 'SKU recommendation' }).focus();
    await page.keyboard.press('ArrowRight');
    const summary = page.getByRole('tabpanel', { name: 'Connection summary' });
    await expect(summary).toBeVisible();
    const who = summary.getByRole('table', { name: 'Who is connected' });
    await expect(who.getByRole('columnheader', { name: 'Login' })).toBeVisible();
    await expect(who.getByRole('row').filter({ hasText: '10.0.0.22' })).toContainText('(none announced)');
    await expect(summary).toContainText('4 session(s) were connected');
    await page.screenshot({ path: join(shots, '21-sqlserver-connections.png'), fullPage: true });
    await page.setViewportSize({ width: 400, height: 800 });
    // Narrow: the tables scroll inside their own box instead of widening the page.
    expect(await page.evaluate(() => document.documentElement.scrollWidth)).toBeLessThanOrEqual(400);
    await page.screenshot({ path: join(shots, '22-sqlserver-connections-narrow.png'), fullPage: true });
  } finally {
    milink.stop();
  }
});
