// The web chat page of `tessera serve` in a real browser: Debian's chromium, headless, driven by
// playwright-core. usage: node page_test.mjs URL
// Checks: the model name appears; a question's answer streams in (the text grows over several
// updates before it is done); tokens/s is shown; a second turn works (multi-turn); the stop
// button ends a long answer.
import { chromium } from "playwright-core";

const url = process.argv[2];
const fail = (msg) => { console.error("page test: " + msg); process.exit(1); };
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu"],
});
try {
  const page = await browser.newPage();
  page.on("pageerror", (e) => fail("page error: " + e.message));
  await page.goto(url);
  await page.waitForFunction(() => document.getElementById("model").textContent.includes("smollm2"),
                             null, { timeout: 30000 });

  // Count how many times the answer's text changes while it streams.
  await page.evaluate(() => {
    window.__updates = 0;
    new MutationObserver(() => { window.__updates++; })
      .observe(document.getElementById("log"), { childList: true, subtree: true, characterData: true });
  });
  const ask = async (q) => {
    await page.fill("#input", q);
    await page.click("#send");
    await page.waitForFunction(() => {
      const m = [...document.querySelectorAll(".msg.assistant")].pop();
      return m && m.dataset.state === "done";
    }, null, { timeout: 120000 });
    return page.evaluate(() => [...document.querySelectorAll(".msg.assistant")].pop().textContent);
  };
  // A question with a long answer, so that streaming shows as several updates.
  const first = await ask("Write three sentences about the sea.");
  if (!first.trim()) fail("empty answer");
  if (first.includes("Error:")) fail("error answer: " + first);
  const updates = await page.evaluate(() => window.__updates);
  if (updates < 4) fail("the answer did not stream (" + updates + " updates)");
  const stats = await page.textContent("#stats");
  if (!/tokens\/s/.test(stats)) fail("no tokens/s: " + stats);

  const second = await ask("And of Italy?");
  if (!second.trim()) fail("empty second answer");
  const turns = await page.evaluate(() => document.querySelectorAll(".msg").length);
  if (turns !== 4) fail("expected 4 messages after two turns, saw " + turns);

  // Stop: a long answer, stopped after its first words.
  await page.evaluate(() => { document.getElementById("temperature").value = "1.0"; });
  await page.fill("#input", "Write a very long story about a dragon and a knight.");
  await page.click("#send");
  await page.waitForFunction(() => {
    const m = [...document.querySelectorAll(".msg.assistant")].pop();
    return m && m.textContent.length > 20;
  }, null, { timeout: 60000 });
  await page.click("#stop");
  await page.waitForFunction(() => document.getElementById("stats").textContent === "stopped",
                             null, { timeout: 10000 });
  if (!(await page.isEnabled("#send"))) fail("send stays disabled after stop");
  console.log("page: ok (" + updates + " updates while streaming)");
} finally {
  await browser.close();
}
