// Browser test of the dispatcher console against a running forewarn.
//
//   FOREWARN_URL=http://127.0.0.1:8080 FOREWARN_KEY=<dispatcher key> SCREENSHOT_DIR=/tmp/shots node e2e.mjs
//
// Signs in, waits for a proactive ticket on the board (open or booked), books it if it is
// open (first option the planner offers) and waits for its card to move to "booked", opens
// its device page and waits for the telemetry chart, and saves screenshots of the board,
// the ticket, the device, the fleet, the technicians and the KPIs. Exits 1 with a message
// naming the step on any timeout, console error or page error.
//
// Optional env: WAIT_TICKET_MS (default 120000) for the ticket to appear, STEP_TIMEOUT_MS
// (default 30000) for every other step, CHROMIUM (default /usr/bin/chromium), HEADED=1.
import { chromium } from 'playwright-core';
import fs from 'node:fs';
import path from 'node:path';

const BASE = (process.env.FOREWARN_URL || '').replace(/\/+$/, '');
const KEY = process.env.FOREWARN_KEY || '';
const DIR = path.resolve(process.env.SCREENSHOT_DIR || 'screenshots');
const WAIT_TICKET_MS = Number(process.env.WAIT_TICKET_MS || 120000);
const STEP_MS = Number(process.env.STEP_TIMEOUT_MS || 30000);
const EXE = process.env.CHROMIUM || '/usr/bin/chromium';
// REQUIRE_LIVE=1 (CI): the ticket must arrive after sign-in (over the live stream, not in
// the first load) and be open, so that the console books it.
const REQUIRE_LIVE = process.env.REQUIRE_LIVE === '1';

if (!BASE || !KEY) {
  console.error('e2e: set FOREWARN_URL (e.g. http://127.0.0.1:8080) and FOREWARN_KEY (a dispatcher API key); SCREENSHOT_DIR is optional');
  process.exit(2);
}
fs.mkdirSync(DIR, { recursive: true });

const started = Date.now();
const problems = [];
let browser = null;
let page = null;
let current = 'start';

const log = (msg) => console.log(`[e2e ${((Date.now() - started) / 1000).toFixed(1).padStart(6)} s] ${msg}`);

async function fail(message) {
  console.error(`\ne2e FAILED at step "${current}": ${message}`);
  if (problems.length) console.error(`browser problems:\n  ${problems.join('\n  ')}`);
  if (page) {
    try {
      const p = path.join(DIR, 'failure.png');
      await page.screenshot({ path: p });
      console.error(`screenshot of the failure: ${p}`);
    } catch {
      /* the page may be gone */
    }
  }
  await browser?.close().catch(() => {});
  process.exit(1);
}

async function step(name, fn) {
  current = name;
  log(name);
  try {
    await fn();
  } catch (e) {
    const msg = String(e && e.message ? e.message : e).split('\n')[0];
    await fail(e && e.name === 'TimeoutError' ? `timed out — ${msg}` : msg);
  }
  if (problems.length) await fail('the page logged an error');
}

async function shot(name) {
  const p = path.join(DIR, name);
  await page.screenshot({ path: p });
  log(`  saved ${p}`);
}

async function go(hash) {
  await page.evaluate((h) => {
    location.hash = h;
  }, hash);
}

const notBusy = (view) => `[data-view="${view}"][aria-busy="false"]`;

try {
  browser = await chromium.launch({ executablePath: EXE, args: ['--no-sandbox'], headless: process.env.HEADED !== '1' });
} catch (e) {
  console.error(`e2e: cannot launch Chromium at ${EXE}: ${e.message.split('\n')[0]}`);
  process.exit(1);
}
const context = await browser.newContext({ viewport: { width: 1366, height: 768 } });
page = await context.newPage();
page.setDefaultTimeout(STEP_MS);
page.on('console', (m) => {
  if (m.type() === 'error') {
    const loc = m.location();
    problems.push(`console error: ${m.text()}${loc && loc.url ? ` (${loc.url}:${loc.lineNumber})` : ''}`);
  }
});
page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));

let ticketId = null;
let device = null;
let wasOpen = false;

await step('open the console and sign in', async () => {
  await page.goto(`${BASE}/`, { waitUntil: 'domcontentloaded' });
  await page.waitForSelector('#signin-key');
  await page.fill('#signin-key', KEY);
  await page.click('[data-action="sign-in"]');
  const res = await Promise.race([
    page.waitForSelector(notBusy('board')).then(() => 'ok'),
    page.waitForSelector('.signin-error:not([hidden])').then(async (el) => `sign-in refused: ${(await el.textContent()).trim()}`),
  ]);
  if (res !== 'ok') throw new Error(res);
});

const columns = REQUIRE_LIVE ? ['open'] : ['open', 'booked'];
let present = [];
await step('note the proactive tickets on the board at sign-in', async () => {
  present = await page.$$eval('[data-ticket-id][data-kind="proactive"]', (cards) => cards.map((c) => c.getAttribute('data-ticket-id')));
  log(`  ${present.length} proactive ticket(s) on the board at sign-in`);
});

await step(`wait up to ${WAIT_TICKET_MS} ms for a proactive ticket in the ${columns.join(' or ')} column${REQUIRE_LIVE ? ', arriving live' : ''}`, async () => {
  const fresh = (status) => `[data-status="${status}"] [data-ticket-id][data-kind="proactive"]${REQUIRE_LIVE ? present.map((id) => `:not([data-ticket-id="${id}"])`).join('') : ''}`;
  const sel = columns.map(fresh).join(', ');
  try {
    await page.waitForSelector(sel, { timeout: WAIT_TICKET_MS });
  } catch (e) {
    if (e.name === 'TimeoutError') throw new Error(`no proactive ticket appeared in the ${columns.join(' or ')} column within ${WAIT_TICKET_MS} ms`);
    throw e;
  }
  const open = await page.$(fresh('open'));
  const card = open || (await page.$(fresh('booked')));
  wasOpen = Boolean(open);
  ticketId = await card.getAttribute('data-ticket-id');
  device = await card.getAttribute('data-device');
  if (!ticketId || !device) throw new Error('the card has no data-ticket-id or data-device');
  log(`  ticket #${ticketId} on ${device} (${wasOpen ? 'open' : 'booked'}${present.includes(ticketId) ? '' : ', arrived live'})`);
  await shot('board.png');
});

const drawer = () => `aside.drawer[data-drawer-ticket="${ticketId}"]`;

if (wasOpen) {
  await step('open the ticket and ask for slots', async () => {
    await page.click(`[data-status="open"] [data-ticket-id="${ticketId}"]`);
    await page.waitForSelector(`${drawer()} [data-action="book"]`);
    await page.click(`${drawer()} [data-action="book"]`);
    const res = await Promise.race([
      page.waitForSelector(`${drawer()} [data-action="choose-slot"]`).then(() => 'ok'),
      page.waitForSelector(`${drawer()} .tk-panel:not([hidden]) .panel-head strong:text-is("No free slot")`).then(() => 'the planner offered no free slot for this ticket'),
    ]);
    if (res !== 'ok') throw new Error(res);
  });

  await step('book the first option and wait for the card in the booked column', async () => {
    const first = page.locator(`${drawer()} [data-action="choose-slot"]`).first();
    const who = await first.getAttribute('data-technician');
    const start = await first.getAttribute('data-start');
    log(`  choosing ${who} at ${start}`);
    await first.click();
    await page.waitForSelector(`[data-status="booked"] [data-ticket-id="${ticketId}"]`);
    await page.waitForSelector(`${drawer()} .tk-chips .s-booked`);
    await page.waitForTimeout(500); // let the toast and the drawer settle for the screenshot
    await shot('ticket.png');
  });
} else {
  await step('open the booked ticket', async () => {
    await page.click(`[data-status="booked"] [data-ticket-id="${ticketId}"]`);
    await page.waitForSelector(`${drawer()} .tk-head`);
    await page.waitForTimeout(300);
    await shot('ticket.png');
  });
}

await step(`open the device page of ${device} and wait for the telemetry chart`, async () => {
  await page.keyboard.press('Escape');
  await page.waitForSelector('aside.drawer', { state: 'detached' });
  await go(`#/devices/${encodeURIComponent(device)}`);
  await page.waitForSelector(notBusy('device'));
  await page.waitForFunction(
    () => [...document.querySelectorAll('svg[data-chart="telemetry"] path')].some((p) => (p.getAttribute('d') || '').length > 10),
    null,
    { timeout: STEP_MS },
  );
  await shot('device.png');
});

await step('fleet risk', async () => {
  await go('#/fleet');
  await page.waitForSelector(notBusy('fleet'));
  await page.waitForSelector('[data-view="fleet"] tbody tr');
  await shot('fleet.png');
});

await step('technicians and a day route', async () => {
  await go('#/technicians');
  await page.waitForSelector(notBusy('technicians'));
  const first = await page.$('[data-technician]');
  if (first) {
    await first.click();
    await page.waitForSelector('svg[data-map="route"]');
  } else {
    await page.waitForSelector('[data-view="technicians"] .state');
  }
  await page.waitForTimeout(200);
  await shot('technicians.png');
});

await step('KPIs', async () => {
  await go('#/kpis');
  await page.waitForSelector(notBusy('kpis'));
  await page.waitForSelector('[data-kpi="proactive_share"]');
  await shot('kpis.png');
});

current = 'finish';
if (problems.length) await fail('the page logged an error');
await browser.close();
log(`passed: ticket #${ticketId} ${wasOpen ? 'booked from the board' : 'was already booked'}; screenshots in ${DIR}`);
