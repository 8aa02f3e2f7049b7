//! The web UI in a real browser (Debian chromium + playwright-core, `tests/web/ui.test.cjs`):
//! login, create a workspace, run a task and see it finish live, the proposal's diff,
//! approve, the agent's UI through the proxy (on the project, and from a task on its session), audit log, delete, logout. Screenshots go to
//! `<target tmp>/web-screenshots` (or `$DEVAIPOD_SCREENSHOTS`).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use serde_json::json;

fn playwright_core() -> Option<PathBuf> {
    let home = std::env::var_os("HOME").map(PathBuf::from)?;
    let dir = home.join(".cache/devaipod/playwright/node_modules/playwright-core");
    let ok = dir.join("package.json").is_file() && Path::new("/usr/bin/chromium").exists();
    if !ok {
        if std::env::var("DEVAIPOD_REQUIRE_PODMAN").as_deref() == Ok("1") {
            panic!("playwright-core or chromium is missing: run scripts/setup.sh");
        }
        eprintln!("\n*** SKIPPED: playwright-core or /usr/bin/chromium is missing; run scripts/setup.sh ***\n");
        return None;
    }
    Some(dir)
}

#[test]
fn the_whole_loop_in_a_browser() {
    if !podman_available() {
        return;
    }
    let Some(pw) = playwright_core() else { return };
    let folder = "/workspaces/webui-src";
    let llm = ScriptedLlm::start(&json!({ "rules": [
        { "match": "please write the greeting", "delay": 1, "steps": [
            { "tool": "write", "args": { "filePath": format!("{folder}/hello.txt"), "content": "hi there\n" } },
            { "text": "Wrote hello.txt" }
        ]}
    ]}));
    let env = TestEnv::new(&llm.agent_config());
    let source = fixture_repo(env.dir.path(), "webui-src", &[]);
    env.ok(&["list"]); // starts the daemon
    let name = format!("webui-{}", &env.instance[env.instance.len() - 6..]);
    let shots = std::env::var_os("DEVAIPOD_SCREENSHOTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_TARGET_TMPDIR")).join("web-screenshots"));
    std::fs::create_dir_all(&shots).unwrap();

    let out = Command::new("node")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/web/ui.test.cjs"))
        .env("PLAYWRIGHT_CORE", &pw)
        .env("BASE", format!("http://{}", env.daemon_addr()))
        .env("TOKEN", env.token())
        .env("SOURCE", &source)
        .env("NAME", &name)
        .env("SHOTS", &shots)
        .output()
        .expect("node runs the browser test");
    let log = text(&out.stderr);
    eprintln!("{log}\nscreenshots: {}", shots.display());
    assert!(out.status.success(), "the browser test failed:\n{log}\n{}", text(&out.stdout));
    assert!(log.contains("ui: all steps passed"));
    for shot in [
        "01-login",
        "03-task-done",
        "04-proposal",
        "05-approved",
        "06-dashboard",
        "07-agent-ui",
        "07b-agent-ui-session",
    ] {
        let f = shots.join(format!("{shot}.png"));
        assert!(std::fs::metadata(&f).is_ok_and(|m| m.len() > 1000), "{} was saved", f.display());
    }
}
