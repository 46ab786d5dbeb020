// Debian's chromium, headless, driven by playwright-core, for the web UI's tests: one launch, one page, and every
// console error or script error collected (the UI must run cleanly under the server's strict policy).
import { chromium, type Browser, type Page } from 'playwright-core';

export const CHROMIUM = process.env.DOCKHAND_TEST_CHROMIUM ?? '/usr/bin/chromium';

/** A browser and a page whose console errors and script errors go into `problems`. */
export async function openBrowser(problems: string[]): Promise<{ browser: Browser; page: Page }> {
  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: [
      '--no-sandbox',
      '--disable-dev-shm-usage',
      '--disable-gpu',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-default-apps',
      '--disable-sync',
      '--disable-extensions',
      '--metrics-recording-only',
      '--disable-domain-reliability',
      '--disable-breakpad',
    ],
  });
  const page = await browser.newPage({ viewport: { width: 1360, height: 900 } });
  page.on('console', (msg) => {
    if (msg.type() === 'error' && !/Failed to load resource/.test(msg.text())) problems.push(`console: ${msg.text()}`);
  });
  page.on('pageerror', (err) => problems.push(`page error: ${err.message}`));
  return { browser, page };
}
