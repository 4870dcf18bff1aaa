// The pages without a mouse: the skip link, the navigation, focus on each new page's heading, and every
// control with a name a screen reader can read. milink runs without a token here (loopback), as a single
// user on their own machine runs it.
import { test, expect } from '@playwright/test';
import { startMilink, unnamed } from './support.mjs';

async function tabTo(page, name, key = 'Tab') {
  for (let i = 0; i < 30; i += 1) {
    await page.keyboard.press(key);
    if ((await page.evaluate(() => document.activeElement.textContent.trim())) === name) return;
  }
  throw new Error(`Tab never reached "${name}"`);
}

test('every page is reachable and usable from the keyboard', async ({ page }) => {
  const milink = await startMilink();
  try {
    await page.goto(`${milink.base}/`);
    await expect(page.getByRole('heading', { level: 1, name: 'Database migration' })).toBeFocused();
    expect(await unnamed(page)).toEqual([]);
    // Back up past the navigation to the skip link, which moves focus to the page.
    await tabTo(page, 'Skip to content', 'Shift+Tab');
    await page.keyboard.press('Enter');
    await expect(page.locator('#main')).toBeFocused();
    await expect(page).toHaveURL(/\/(#\/)?$/);
    await page.keyboard.press('Shift+Tab');
    await tabTo(page, 'New migration');
    await page.keyboard.press('Enter');
    await expect(page.getByRole('heading', { level: 1, name: 'New migration' })).toBeFocused();
    expect(await unnamed(page)).toEqual([]);
    await expect(page.getByLabel('Source')).toBeVisible();
    await tabTo(page, 'Monitor and cutover');
    await page.keyboard.press('Enter');
    await expect(page.getByRole('heading', { level: 1, name: 'Monitor and cutover' })).toBeFocused();
    expect(await unnamed(page)).toEqual([]);
    await tabTo(page, 'Assessments');
    await page.keyboard.press('Enter');
    await expect(page.getByRole('heading', { level: 1, name: 'Assessments' })).toBeFocused();
    await expect(page.getByLabel('Source connection')).toBeVisible();
    expect(await unnamed(page)).toEqual([]);
  } finally {
    milink.stop();
  }
});
