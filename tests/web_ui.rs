//! The web UI in a real browser (Debian chromium + playwright-core, `tests/web/ui.test.cjs`):
//! login, create a workspace, run a task and see it finish live, the proposal's diff,
//! approve, the agent's UI through the proxy (on the project, and from a task on its session), audit log, delete, logout. And a proposal set
//! (`tests/web/fanout.test.cjs`): two candidate agents started from the run-task form,
//! followed live on the set's page, their checks, diffs and the choice. Screenshots go to
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

fn screenshots_dir() -> PathBuf {
    let shots = std::env::var_os("DEVAIPOD_SCREENSHOTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_TARGET_TMPDIR")).join("web-screenshots"));
    std::fs::create_dir_all(&shots).unwrap();
    shots
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
    let shots = screenshots_dir();

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

/// A proposal set from the web form: agents=2 with models good and bad (the scripted LLM
/// answers each model its own way, slowly enough that the page is seen while they run),
/// `[fanout] check` passing for one and failing for the other; the set's page follows
/// them without a reload, shows both diffs and the diff between them, and approving the
/// passing one leaves the other not chosen. Then nothing of the candidates is left.
#[test]
fn a_proposal_set_in_a_browser() {
    if !podman_available() {
        return;
    }
    let Some(pw) = playwright_core() else { return };
    let folder = "/workspaces/fanout-src";
    let llm = ScriptedLlm::start(&json!({ "rules": [
        { "match": "please write the fan-out greeting", "model": "good", "delay": 3, "steps": [
            { "tool": "write", "args": { "filePath": format!("{folder}/good.txt"), "content": "good from the candidate\n" } },
            { "text": "Wrote good.txt" }
        ]},
        { "match": "please write the fan-out greeting", "model": "bad", "delay": 3, "steps": [
            { "tool": "write", "args": { "filePath": format!("{folder}/bad.txt"), "content": "bad from the candidate\n" } },
            { "text": "Wrote bad.txt" }
        ]}
    ]}));
    let check = r#"test -f good.txt && echo found good.txt || { echo "good.txt is missing"; exit 3; }"#;
    let config = format!("{}models = [\"good\", \"bad\"]\n[fanout]\ncheck = '{check}'\n", llm.agent_config());
    let env = TestEnv::new(&config);
    let source = fixture_repo(env.dir.path(), "fanout-src", &[]);
    let name = format!("fanout-{}", &env.instance[env.instance.len() - 6..]);
    env.ok(&["up", source.to_str().unwrap(), "--name", &name]);
    let shots = screenshots_dir();

    let out = Command::new("node")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/web/fanout.test.cjs"))
        .env("PLAYWRIGHT_CORE", &pw)
        .env("BASE", format!("http://{}", env.daemon_addr()))
        .env("TOKEN", env.token())
        .env("NAME", &name)
        .env("SHOTS", &shots)
        .output()
        .expect("node runs the browser test");
    let log = text(&out.stderr);
    eprintln!("{log}\nscreenshots: {}", shots.display());
    assert!(out.status.success(), "the browser test failed:\n{log}\n{}", text(&out.stdout));
    assert!(log.contains("fanout: all steps passed"));
    for shot in ["10-fanout-running", "11-fanout-complete", "12-fanout-compare", "13-fanout-chosen"] {
        let f = shots.join(format!("{shot}.png"));
        assert!(std::fs::metadata(&f).is_ok_and(|m| m.len() > 1000), "{} was saved", f.display());
    }
    // Each candidate's agent asked with its own model.
    let models: Vec<String> = llm
        .requests()
        .iter()
        .filter(|r| r["last_user"].as_str().is_some_and(|u| u.contains("fan-out greeting")))
        .filter_map(|r| r["model"].as_str().map(str::to_owned))
        .collect();
    assert!(models.iter().any(|m| m == "good") && models.iter().any(|m| m == "bad"), "{models:?}");
    // Choosing removed the candidates' containers; deleting the workspace leaves nothing.
    let candidates =
        podman(&["ps", "-a", "--filter", &format!("name=devaipod-{name}-candidate"), "--format", "{{.Names}}"]);
    assert_eq!(candidates.trim(), "", "the candidates' containers are gone once one is chosen");
    env.ok(&["delete", &name]);
    assert_eq!(env.leftovers(), Vec::<String>::new());
}
