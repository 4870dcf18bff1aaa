// Browser tests of the web UI: Debian's Chromium (no browser download), one worker (the journey drives
// real PostgreSQL clusters and a real milink), a 1280×800 window like the issue asks the pages to fit.
import { defineConfig } from '@playwright/test';

export default defineConfig({
  testDir: '.',
  testMatch: /.*\.spec\.mjs/,
  // Traces and failure context go beside the screenshots, never into the source tree.
  outputDir: '../../target/ui-test-results',
  timeout: 10 * 60 * 1000,
  workers: 1,
  reporter: [['list']],
  use: {
    viewport: { width: 1280, height: 800 },
    headless: true,
    launchOptions: {
      executablePath: process.env.MILINK_CHROMIUM || '/usr/bin/chromium',
      args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking'],
    },
  },
});
