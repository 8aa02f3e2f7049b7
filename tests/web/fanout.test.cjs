// A proposal set in a real browser (Debian chromium driven by playwright-core), against a
// real daemon, real podman and real agents with the scripted LLM (model "good" writes
// good.txt, model "bad" writes bad.txt; `[fanout] check` passes only where good.txt is).
// Run by tests/web_ui.rs:
//
//   PLAYWRIGHT_CORE=<dir of playwright-core> BASE=http://127.0.0.1:PORT TOKEN=… NAME=<workspace>
//   SHOTS=<dir> node tests/web/fanout.test.cjs
//
// The workspace exists already. Every step asserts what a person would see; screenshots
// go to $SHOTS.
"use strict";

const assert = require("node:assert/strict");
const path = require("node:path");
const { chromium } = require(process.env.PLAYWRIGHT_CORE);

const BASE = process.env.BASE;
const NAME = process.env.NAME;
const SHOTS = process.env.SHOTS;

function step(msg) {
  process.stderr.write(`fanout: ${msg}\n`);
}

async function main() {
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
      "--disable-component-update", "--disable-sync"],
  });
  const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  page.setDefaultTimeout(30_000);
  const dialogs = [];
  page.on("dialog", (d) => { dialogs.push(d.message()); d.accept(); });
  const shot = (name) => page.screenshot({ path: path.join(SHOTS, `${name}.png`), fullPage: true });
  const row = (n) => page.locator(`#set tr[data-candidate="${n}"]`);
  try {
    step("log in, to the workspace's page");
    await page.goto(`${BASE}/login?next=${encodeURIComponent(`/workspaces/${NAME}`)}`);
    await page.fill("#token", process.env.TOKEN);
    await Promise.all([page.waitForURL(`**/workspaces/${NAME}`), page.click("button[type=submit]")]);
    await page.waitForSelector("#sets >> text=No proposal sets");

    step("the run-task form takes candidate agents (1 to [fanout] max-agents) and their models");
    assert.equal(await page.getAttribute("#agents", "min"), "1");
    assert.equal(await page.getAttribute("#agents", "max"), "4");
    assert.match(await page.getAttribute("#models", "placeholder"), /scripted, good, bad/);
    await page.fill("#prompt", "please write the fan-out greeting");
    await page.fill("#agents", "2");
    await page.fill("#models", "good, bad");
    await Promise.all([
      page.waitForURL(/\/sets\/s-[0-9a-f]+$/, { timeout: 60_000 }),
      page.click("form[data-kind=run-task] button[type=submit]"),
    ]);
    const setId = new URL(page.url()).pathname.split("/").pop();
    step(`set ${setId}: two candidates, the prompt, the check`);
    await page.waitForSelector("h1 >> text=Proposal set");
    assert.match(await page.locator("p.summary").innerText(), /please write the fan-out greeting/);
    assert.equal(await page.locator("#set tr[data-candidate]").count(), 2);
    assert.match(await row(1).innerText(), /good/);
    assert.match(await row(2).innerText(), /bad/);
    assert.match(await page.locator("#set dl.facts").innerText(), /test -f good\.txt/);

    step("the candidates run; the page follows them without a reload");
    await page.evaluate(() => { window.__noReload = true; });
    await page.waitForSelector("#set td.state >> text=running", { timeout: 180_000 });
    await page.waitForSelector("#live li", { timeout: 60_000 });
    await shot("10-fanout-running");
    await page.waitForSelector('#set dl[data-set-state="complete"]', { timeout: 240_000 });
    assert.equal(await page.evaluate(() => window.__noReload), true, "the page was not reloaded");

    step("both completed with proposals; the check passed for good, failed for bad");
    const one = await row(1).innerText();
    const two = await row(2).innerText();
    assert.match(one, /completed/, one);
    assert.match(two, /completed/, two);
    assert.match(one, /pass\s+exit 0/, one);
    assert.match(two, /fail\s+exit 3/, two);
    assert.ok(await row(1).locator("a[href^='/proposals/']").count() === 1, one);
    assert.ok(await row(2).locator("a[href^='/proposals/']").count() === 1, two);
    await page.click("#check-2 summary");
    assert.match(await page.locator("#check-2 pre").innerText(), /good\.txt is missing/);
    await shot("11-fanout-complete");

    step("a candidate's diff");
    await page.selectOption("#diff-n", "2");
    await Promise.all([page.waitForURL(/diff=2/), page.click("form:has(#diff-n) button")]);
    assert.equal(await page.evaluate(() => window.__noReload), undefined, "that was a navigation");
    const own = await page.locator(".diffs").innerText();
    assert.match(own, /bad\.txt/);
    assert.match(own, /\+bad from the candidate/);

    step("candidate 1 against candidate 2");
    await page.selectOption("#diff-a", "1");
    await page.selectOption("#diff-b", "2");
    await Promise.all([page.waitForURL(/a=1&b=2/), page.click("form:has(#diff-a) button")]);
    const vs = await page.locator(".diffs").innerText();
    assert.match(vs, /good\.txt/);
    assert.match(vs, /bad\.txt/);
    assert.match(vs, /-good from the candidate/);
    assert.match(vs, /\+bad from the candidate/);
    await page.locator("#diff").scrollIntoViewIfNeeded();
    await shot("12-fanout-compare");

    step("approve the passing candidate (apply): the other is not chosen");
    await page.click('#set tr[data-candidate="1"] button >> text=Approve: apply');
    assert.ok(dialogs.some((d) => d.startsWith("Candidate 1: fetch its branch")), dialogs.join("\n"));
    await page.waitForSelector('#set dl[data-set-state="chosen"]', { timeout: 120_000 });
    await page.waitForSelector('#set tr[data-candidate="1"] td.state >> text=chosen');
    await page.waitForSelector('#set tr[data-candidate="2"] td.state >> text=not_chosen');
    assert.equal(await page.locator("#set button >> text=Approve").count(), 0, "a decided set has no approve button");
    assert.equal(await page.locator("#set button >> text=Cancel the set").count(), 0);
    await shot("13-fanout-chosen");

    step("the workspace's page lists the set");
    await page.goto(`${BASE}/workspaces/${NAME}`);
    const listed = page.locator(`#sets tr[data-set="${setId}"]`);
    await listed.waitFor();
    assert.match(await listed.innerText(), /chosen\s+2\s+please write the fan-out greeting/);
    step("all steps passed");
  } catch (e) {
    await shot("fanout-failure").catch(() => {});
    throw e;
  } finally {
    await browser.close();
  }
}

main().catch((e) => {
  process.stderr.write(`fanout: FAILED: ${e.stack || e}\n`);
  process.exit(1);
});
