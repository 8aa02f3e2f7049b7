// The whole loop in a real browser (Debian chromium driven by playwright-core), against a
// real daemon, real podman and the real agent with the scripted LLM. Run by tests/web_ui.rs:
//
//   PLAYWRIGHT_CORE=<dir of playwright-core> BASE=http://127.0.0.1:PORT TOKEN=… SOURCE=<repo>
//   NAME=<workspace> SHOTS=<dir> node tests/web/ui.test.cjs
//
// Every step asserts what a person would see; screenshots go to $SHOTS.
"use strict";

const assert = require("node:assert/strict");
const path = require("node:path");
const { chromium } = require(process.env.PLAYWRIGHT_CORE);

const BASE = process.env.BASE;
const NAME = process.env.NAME;
const SHOTS = process.env.SHOTS;

function step(msg) {
  process.stderr.write(`ui: ${msg}\n`);
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
  try {
    step("a page without a session leads to the login form");
    await page.goto(`${BASE}/workspaces/${NAME}`);
    assert.match(page.url(), /\/login\?next=%2Fworkspaces%2F/);
    await shot("01-login");

    step("a wrong token is refused with a message");
    await page.fill("#token", "not-the-token");
    await page.click("button[type=submit]");
    await page.waitForSelector("text=That is not the login token");

    step("the right token logs in; the cookie is HttpOnly and the token is in no URL");
    await page.fill("#token", process.env.TOKEN);
    await Promise.all([page.waitForNavigation(), page.click("button[type=submit]")]);
    // Back where the login began (the workspace does not exist yet: a clear 404 page).
    assert.equal(new URL(page.url()).pathname, `/workspaces/${NAME}`);
    assert.ok(!page.url().includes(process.env.TOKEN));
    await page.waitForSelector("text=404");
    await page.goto(`${BASE}/`);
    const cookies = await page.context().cookies();
    const session = cookies.find((c) => c.name === "devaipod_session");
    assert.ok(session && session.httpOnly && session.sameSite === "Strict", JSON.stringify(cookies));
    assert.equal(await page.evaluate(() => document.cookie), "", "scripts cannot read the session");

    step("create a workspace from the dashboard, with progress");
    await page.fill("#source", process.env.SOURCE);
    await page.fill("#name", NAME);
    await Promise.all([
      page.waitForURL(`**/workspaces/${NAME}`, { timeout: 180_000 }),
      page.click("form[data-kind=create-workspace] button[type=submit]"),
    ]);
    await page.waitForSelector("#status >> text=running");
    await shot("02-workspace");

    step("run a task and watch it finish without a reload");
    await page.evaluate(() => { window.__noReload = true; });
    await page.fill("#prompt", "please write the greeting");
    await page.click("form[data-kind=run-task] button[type=submit]");
    await page.waitForSelector("#live li.tool", { timeout: 120_000 });
    await page.waitForSelector("#tasks >> text=completed", { timeout: 120_000 });
    const link = page.locator("#tasks a[href^='/proposals/']");
    await link.waitFor({ timeout: 60_000 });
    assert.equal(await page.evaluate(() => window.__noReload), true, "the page was not reloaded");
    const live = await page.locator("#live").innerText();
    assert.match(live, /running/);
    assert.match(live, /write/);
    await shot("03-task-done");

    step("open the proposal: files with +/- and a readable diff");
    await Promise.all([page.waitForURL("**/proposals/**"), link.click()]);
    await page.waitForSelector("table.files >> text=hello.txt");
    const diff = await page.locator(".diffs").innerText();
    assert.match(diff, /\+hi there/);
    assert.ok(await page.locator("pre.diff .add").count() > 0);
    await shot("04-proposal");

    step("approve (apply) and see the state change");
    await page.click("text=Approve: apply to the workspace");
    await page.waitForSelector("#proposal-meta >> text=applied", { timeout: 60_000 });
    assert.ok(dialogs.some((d) => d.includes("Fetch this branch")), dialogs.join("\n"));
    await shot("05-approved");

    step("the dashboard shows the workspace, its agent and its proposal count");
    await page.goto(`${BASE}/`);
    const row = page.locator(`tr[data-workspace="${NAME}"]`);
    await row.waitFor();
    assert.match(await row.innerText(), /running/);
    await shot("06-dashboard");

    step("the agent's own UI, through the proxy, inside our shell");
    await page.goto(`${BASE}/workspaces/${NAME}`);
    await Promise.all([page.waitForURL(`**/workspaces/${NAME}/agent`), page.click("text=Open the agent's UI")]);
    await page.waitForSelector(`.devaipod-bar >> text=${NAME}`);
    const frameEl = await page.waitForSelector("iframe.agent");
    const src = await frameEl.getAttribute("src");
    // It opens on the workspace's project (opencode names it by its directory, base64url).
    assert.match(src, /^http:\/\/127\.0\.0\.1:\d+\/[A-Za-z0-9_-]+$/);
    const frame = await frameEl.contentFrame();
    await frame.waitForLoadState("domcontentloaded");
    // opencode's UI is an app shell: wait until it rendered something.
    await frame.waitForFunction(() => document.body && document.body.innerText.trim().length > 0, null, { timeout: 60_000 });
    const frameTitle = await frame.title();
    step(`agent UI title: ${frameTitle}`);
    // The agent's terminal works through the proxy: a PTY over a WebSocket.
    const echoed = await frame.evaluate(async () => {
      const r = await fetch("/pty", { method: "POST", headers: { "content-type": "application/json" },
        body: JSON.stringify({ command: "/bin/sh" }) });
      if (!r.ok) return `POST /pty: ${r.status}`;
      const pty = await r.json();
      return await new Promise((resolve) => {
        const ws = new WebSocket(`ws://${location.host}/pty/${pty.id}/connect`);
        let seen = "";
        const done = setTimeout(() => resolve(`timeout; saw: ${seen.slice(-200)}`), 20000);
        ws.onopen = () => ws.send("echo devaipod-ws-$((6*7))\n");
        ws.onmessage = async (m) => {
          seen += typeof m.data === "string" ? m.data : await new Response(m.data).text();
          if (seen.includes("devaipod-ws-42")) { clearTimeout(done); ws.close(); resolve("ok"); }
        };
        ws.onerror = () => { clearTimeout(done); resolve("websocket error"); };
      });
    });
    assert.equal(echoed, "ok", `terminal through the proxy: ${echoed}`);
    // A WebSocket from another origin (here devaipod's own page) is refused.
    const foreign = await page.evaluate(async (url) => new Promise((resolve) => {
      const ws = new WebSocket(new URL(url).origin.replace("http://", "ws://") + "/pty/x/connect");
      ws.onopen = () => resolve("opened");
      ws.onerror = () => resolve("refused");
      setTimeout(() => resolve("timeout"), 10000);
    }), src);
    assert.equal(foreign, "refused");
    await page.waitForTimeout(1500);
    await shot("07-agent-ui");

    step("from the task, the agent's UI opens on that task's session");
    await page.goto(`${BASE}/workspaces/${NAME}`);
    await Promise.all([page.waitForURL(`**/workspaces/${NAME}/agent?task=*`), page.click("#tasks a.session")]);
    const taskFrameEl = await page.waitForSelector("iframe.agent");
    const taskSrc = await taskFrameEl.getAttribute("src");
    assert.match(taskSrc, /^http:\/\/127\.0\.0\.1:\d+\/[A-Za-z0-9_-]+\/session\/ses_[A-Za-z0-9]+$/);
    const taskFrame = await taskFrameEl.contentFrame();
    await taskFrame.waitForFunction(() => document.body && document.body.innerText.includes("please write the greeting"),
      null, { timeout: 60_000 });
    await page.waitForTimeout(1000);
    await shot("07b-agent-ui-session");
    // The proxy asks for the login: a fresh browser context without the cookie is refused.
    const anon = await browser.newContext();
    const anonPage = await anon.newPage();
    const resp = await anonPage.goto(src);
    assert.equal(resp.status(), 401);
    assert.ok(!(await resp.text()).includes("opencode"), "nothing of the agent without the login");
    await anon.close();

    step("the audit page");
    await page.goto(`${BASE}/audit`);
    await page.waitForSelector("h1 >> text=Gator audit log");
    await shot("08-audit");

    step("delete the workspace, with confirmation");
    await page.goto(`${BASE}/workspaces/${NAME}`);
    await Promise.all([page.waitForURL(`${BASE}/`, { timeout: 120_000 }), page.click("button.danger >> text=Delete")]);
    assert.ok(dialogs.some((d) => d.startsWith(`Delete ${NAME}?`)), dialogs.join("\n"));
    await page.waitForFunction((n) => !document.querySelector(`tr[data-workspace="${n}"]`), NAME);
    await shot("09-deleted");

    step("log out: the session is gone");
    await Promise.all([page.waitForURL("**/login"), page.click("text=Log out")]);
    await page.goto(`${BASE}/`);
    assert.match(page.url(), /\/login/);
    step("all steps passed");
  } catch (e) {
    await shot("failure").catch(() => {});
    throw e;
  } finally {
    await browser.close();
  }
}

main().catch((e) => {
  process.stderr.write(`ui: FAILED: ${e.stack || e}\n`);
  process.exit(1);
});
