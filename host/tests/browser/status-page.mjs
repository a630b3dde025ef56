// Drives the daemon's status page in headless Chromium, as an operator would on a phone:
// signs in with the token, watches a subscription's lag reach 0 after appends, replays a
// parked event with a click, browses events. Exits non-zero with the reason on any failure.
//
// node status-page.mjs BASE_URL TOKEN SUBSCRIPTION
import { chromium } from "playwright-core";

const [base, token, subscription] = process.argv.slice(2);
if (!base || !token || !subscription) {
  console.error("usage: node status-page.mjs BASE_URL TOKEN SUBSCRIPTION");
  process.exit(2);
}
const WAIT = { timeout: 20000 };
const executablePath = process.env.CHROMIUM || "/usr/bin/chromium";

const browser = await chromium.launch({ executablePath, args: ["--no-sandbox"] });
try {
  const page = await browser.newPage({ viewport: { width: 390, height: 844 } });
  const foreign = [];
  page.on("request", (request) => {
    if (!request.url().startsWith(base)) foreign.push(request.url());
  });
  const errors = [];
  page.on("pageerror", (error) => errors.push(error.message));

  await page.goto(base + "/");
  // The API needs a token: the page asks for one.
  await page.locator("#login").waitFor({ state: "visible", ...WAIT });
  await page.fill("#token", token);
  await page.click("#login button[type=submit]");
  const row = `tr[data-subscription="${subscription}"]`;
  await page.locator(row).waitFor(WAIT);
  await page.locator("#health.ready").waitFor(WAIT);

  // Append 50 events; the lag shown goes to 0 at the last one's position.
  const events = Array.from({ length: 50 }, (_, i) => ({
    aggregate_type: "item",
    aggregate_id: `browser-${i}`,
    event_type: "item.added",
    payload: { n: i },
  }));
  const response = await fetch(base + "/v1/events", {
    method: "POST",
    headers: { "content-type": "application/json", authorization: "Bearer " + token },
    body: JSON.stringify({ events }),
  });
  if (response.status !== 201) throw new Error("append failed: " + response.status);
  const appended = await response.json();
  const last = String(appended.events[appended.events.length - 1].position);
  await page.waitForFunction(
    ([row, last]) => {
      const lag = document.querySelector(row + " td.lag");
      const position = document.querySelector(row + " td.position");
      return lag && position && lag.textContent === "0" && position.textContent === last;
    },
    [row, last],
    WAIT,
  );
  console.log(`lag 0 at position ${last}`);

  // The parked event shows its error; a click on Replay resolves it.
  const parked = page.locator("#parked tbody tr");
  await parked.first().waitFor(WAIT);
  const error = await parked.first().locator("td.error").textContent();
  if (!error.includes("poison")) throw new Error("the parked row does not show the error: " + error);
  await parked.first().locator("button.replay").click();
  await page.locator("#parked-none").waitFor({ state: "visible", ...WAIT });
  console.log("parked event replayed");

  // The event browser: one category, a page of its events.
  await page.selectOption("#scope", "category");
  await page.fill("#aggregate-type", "item");
  await page.click("#browse button[type=submit]");
  await page.locator("#events tbody tr").first().waitFor(WAIT);
  const shown = await page.locator("#events tbody tr").count();
  if (shown !== 50) throw new Error(`the event browser shows ${shown} events, not a page of 50`);
  await page.click("#next-page");
  await page.waitForFunction(() => document.querySelectorAll("#events tbody tr").length === 10, null, WAIT);
  console.log("event browser pages");

  // Phone-sized: the page itself does not scroll sideways (wide tables scroll in place).
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  if (overflow > 0) throw new Error(`the page is ${overflow}px wider than a phone's screen`);
  if (foreign.length > 0) throw new Error("the page loaded from elsewhere: " + foreign.join(", "));
  if (errors.length > 0) throw new Error("script errors: " + errors.join("; "));
  console.log("status page ok");
} finally {
  await browser.close();
}
