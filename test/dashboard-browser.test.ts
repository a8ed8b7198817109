import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { chromium, type Browser, type Page } from 'playwright-core';
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startDashboard, type RunningDashboard } from '../src/dashboard/server.js';
import { createLogger } from '../src/log.js';
import { startTestPipeline, type TestPipeline } from './helpers/pipeline.js';

/** Debian's chromium, installed by scripts/setup.sh (the flags are the ones that work as root in a container). */
const CHROMIUM = '/usr/bin/chromium';
const CHROMIUM_ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking'];
const TOKEN = 'browser-token-0123456789abcdef';

/**
 * Natural widths of the images matching `selector` (0 for one not decoded), read with a function that Playwright
 * runs in its own isolated world: the dashboard's Content-Security-Policy forbids evaluating strings in the page.
 */
async function naturalWidths(page: Page, selector: string): Promise<number[]> {
  return page.locator(selector).evaluateAll((els) =>
    els.map((e) => {
      const img = e as unknown as { complete: boolean; naturalWidth: number };
      return img.complete ? img.naturalWidth : 0;
    }),
  );
}

/** Waits until exactly `n` images match `selector` and every one decoded (a broken or 401 image has width 0). */
async function imagesLoaded(page: Page, selector: string, n: number): Promise<number[]> {
  let widths: number[] = [];
  await expect
    .poll(async () => {
      widths = await naturalWidths(page, selector);
      return widths.length === n && widths.every((w) => w > 0);
    }, { timeout: 15_000 })
    .toBe(true);
  return widths;
}

const logger = createLogger({ name: 'dashboard-browser', level: 'silent' });

describe.skipIf(!existsSync(CHROMIUM))('dashboard in a real browser (Debian chromium via playwright-core)', () => {
  let p: TestPipeline;
  let open: RunningDashboard;
  let locked: RunningDashboard;
  let browser: Browser;
  let shots: string;
  let runId: string;

  beforeAll(async () => {
    shots = await mkdtemp(path.join(os.tmpdir(), 'moe-dashboard-browser-'));
    p = await startTestPipeline('browser');
    const { run, meta } = await p.run({ tickers: ['SPY', 'TLT', 'GLD', 'UVXY'], source: 'sim', range: { days: 30 }, seed: 8 });
    expect(meta.status).toBe('finished');
    runId = run.runId;
    const common = { prefix: p.config.prefix, reportsDir: p.config.reportsDir, redis: p.redis, logger, port: 0 };
    open = await startDashboard(common);
    locked = await startDashboard({ ...common, token: TOKEN });
    browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: CHROMIUM_ARGS });
  });

  afterAll(async () => {
    await browser?.close();
    await open?.close();
    await locked?.close();
    await p?.close();
    if (shots) await rm(shots, { recursive: true, force: true });
  });

  it('lists the finished run with its four images loaded, and saves a screenshot', async () => {
    const page = await browser.newPage({ viewport: { width: 1400, height: 1000 } });
    const res = await page.goto(`${open.url}/`);
    expect(res?.status()).toBe(200);
    const card = page.locator(`section[data-run-id="${runId}"]`);
    expect(await card.getAttribute('data-status')).toBe('finished');
    expect(await card.locator('.badge').textContent()).toBe('finished');
    const images = card.locator('img');
    expect(await images.count()).toBe(4);
    const widths = await imagesLoaded(page, `section[data-run-id="${runId}"] img`, 4);
    expect(widths.every((w) => w >= 2000)).toBe(true);
    const shot = path.join(shots, 'runs-page.png');
    await page.screenshot({ path: shot, fullPage: true });
    const meta = await sharp(shot).metadata();
    expect(meta.width).toBe(1400);
    console.log(`dashboard screenshot: ${shot} (${meta.width}×${meta.height})`);
    await page.close();
  });

  it('renders bull-board at /queues with the three queues', async () => {
    const page = await browser.newPage({ viewport: { width: 1400, height: 900 } });
    // bull-board links a web font; with background networking off and no network it never loads, so wait for the
    // DOM and for the app to draw its queue list rather than for the load event.
    await page.goto(`${open.url}/queues`, { waitUntil: 'domcontentloaded' });
    for (const q of ['moe-fetch', 'moe-route', 'moe-report']) {
      await page.getByText(q, { exact: true }).first().waitFor({ timeout: 20_000 });
    }
    await page.screenshot({ path: path.join(shots, 'queues.png') });
    expect(existsSync(path.join(shots, 'queues.png'))).toBe(true);
    await page.close();
  });

  it('gets 401 from a token-protected dashboard without the token, and the page with it', async () => {
    const page = await browser.newPage();
    const denied = await page.goto(`${locked.url}/`);
    expect(denied?.status()).toBe(401);
    expect(await page.textContent('body')).toContain('401 Unauthorized');
    // Opening a link with ?token= once sets the cookie; the redirect drops the token from the address.
    const allowed = await page.goto(`${locked.url}/?token=${TOKEN}`);
    expect(allowed?.status()).toBe(200);
    expect(new URL(page.url()).search).toBe('');
    await imagesLoaded(page, 'img', 4);
    await page.close();
  });
});

if (!existsSync(CHROMIUM)) {
  describe('dashboard in a real browser', () => {
    it.skip(`${CHROMIUM} is absent (scripts/setup.sh installs Debian's chromium), so the browser test is skipped`, () => undefined);
  });
}
