// Drives Runnel's live dashboard in headless Chromium (playwright-core, Debian's chromium) the
// way a person would look at it: the page connects, charts draw, alerts stream in, window
// aggregates appear. Prints one JSON line of what it saw; exits non-zero on the first failure.
//
//   node dashboard_check.mjs URL SCREENSHOT.png [TIMEOUT_SECONDS]
import { chromium } from "playwright-core";

const [url, shot, timeoutArg] = process.argv.slice(2);
if (!url || !shot) {
  console.error("usage: node dashboard_check.mjs URL SCREENSHOT.png [TIMEOUT_SECONDS]");
  process.exit(2);
}
const timeout = Number(timeoutArg || 120) * 1000;
const executablePath = process.env.CHROMIUM || "/usr/bin/chromium";
const seen = {};
const problems = [];

const browser = await chromium.launch({
  executablePath,
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
let ok = false;
try {
  const page = await browser.newPage({ viewport: { width: 1400, height: 1500 } });
  page.on("pageerror", (e) => problems.push("page error: " + e.message));
  page.on("console", (m) => { if (m.type() === "error") problems.push("console error: " + m.text()); });
  await page.goto(url, { waitUntil: "load", timeout: 30000 });
  seen.title = await page.title();
  if (seen.title !== "Runnel · live") throw new Error("unexpected title " + JSON.stringify(seen.title));

  await page.waitForSelector("#live.ok", { timeout: 15000 });

  // Charts: the throughput chart has drawn points and real pixels.
  await page.waitForFunction(() => Number(document.getElementById("c-throughput").dataset.points || 0) >= 6,
    null, { timeout: 30000 });
  seen.inked_pixels = await page.evaluate(() => {
    const c = document.getElementById("c-throughput");
    const d = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
    let n = 0;
    for (let i = 3; i < d.length; i += 4) if (d[i] > 0) n++;
    return n;
  });
  if (seen.inked_pixels < 500) throw new Error("throughput chart drew only " + seen.inked_pixels + " pixels");
  seen.events_per_s = await page.evaluate(() => window.__runnel.samples.at(-1).events);
  if (!(seen.events_per_s > 0)) throw new Error("throughput chart shows no events/s: " + seen.events_per_s);

  // Alerts stream in: at least one row, then one that was not there before.
  await page.waitForFunction(() => document.querySelectorAll("#alerts tr").length > 0, null, { timeout });
  const before = await page.$$eval("#alerts tr", (rows) => rows.map((r) => r.dataset.alertId));
  seen.alerts_at_first = before.length;
  const fresh = await page.waitForFunction((old) => {
    const ids = [...document.querySelectorAll("#alerts tr")].map((r) => r.dataset.alertId);
    return ids.find((id) => !old.includes(id)) || false;
  }, before, { timeout, polling: 500 });
  seen.new_alert_id = await fresh.jsonValue();

  // Per-device window aggregates: the table and the bar chart.
  await page.waitForFunction(() => document.querySelectorAll("#windows tr").length > 0
    && Number(document.getElementById("c-devices").dataset.points || 0) > 0, null, { timeout, polling: 1000 });
  seen.window_rows = await page.$$eval("#windows tr", (rows) => rows.length);
  seen.device_bars = await page.evaluate(() => Number(document.getElementById("c-devices").dataset.points));
  seen.polls = await page.evaluate(() => window.__runnel.polls);
  await page.screenshot({ path: shot, fullPage: true });
  seen.screenshot = shot;
  if (problems.length) throw new Error(problems.join("; "));
  ok = true;
} catch (e) {
  seen.error = String(e && e.message || e);
  seen.problems = problems;
} finally {
  await browser.close();
}
console.log(JSON.stringify(seen));
process.exit(ok ? 0 : 1);
