//! First run, as a newcomer meets it: `devaipod doctor` against a healthy instance and
//! against each broken part (the LLM server down, the base image missing, a broken config
//! line, the key's variable unset), `devaipod init` writing a checked config and refusing to
//! overwrite one, and a task whose agent cannot reach its LLM failing within seconds with
//! the URL and the setting — over the CLI and over MCP. Real binary, real daemon, real
//! podman and opencode, the scripted LLM.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};

/// A port on this host nothing listens on (bound, then closed).
fn closed_port() -> u16 {
    std::net::TcpListener::bind("0.0.0.0:0").unwrap().local_addr().unwrap().port()
}

fn down_config() -> String {
    format!("[agent]\nbase-url = \"http://host.containers.internal:{}/v1\"\nmodel = \"scripted\"\n", closed_port())
}

/// `doctor --json`: (exit code, the report).
fn doctor(env: &TestEnv, extra: &[&str]) -> (i32, Value) {
    let mut args = vec!["--json", "doctor"];
    args.extend_from_slice(extra);
    let out = env.run(&args);
    let report: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("doctor printed no JSON ({e}):\n{}\n{}", text(&out.stdout), text(&out.stderr)));
    (out.status.code().unwrap_or(-1), report)
}

/// The check `id` of a report.
fn check<'a>(report: &'a Value, id: &str) -> &'a Value {
    report["checks"].as_array().unwrap().iter().find(|c| c["id"] == id).unwrap_or_else(|| panic!("no {id}: {report:#}"))
}

fn level(report: &Value, id: &str) -> String {
    check(report, id)["level"].as_str().unwrap().to_owned()
}

#[test]
fn doctor_says_all_is_well_and_each_broken_part_with_its_fix() {
    if !podman_available() {
        return;
    }
    let llm = ScriptedLlm::start(&json!({ "rules": [], "default": { "text": "ok" } }));

    // Healthy: every line ok, exit code 0; the text form says so too.
    let env = TestEnv::new(&llm.agent_config());
    let started = Instant::now();
    let (code, r) = doctor(&env, &[]);
    eprintln!("doctor (healthy, daemon started by it) took {:?}", started.elapsed());
    assert_eq!(code, 0, "{r:#}");
    assert_eq!(r["ok"], true);
    assert_eq!(r["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(r["daemon"]["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(r["daemon"]["instance"], env.instance.as_str());
    let ids: Vec<&str> = r["checks"].as_array().unwrap().iter().map(|c| c["id"].as_str().unwrap()).collect();
    assert_eq!(
        ids,
        ["config", "daemon", "podman", "runtime", "image", "opencode", "api-key", "llm", "gator-token", "disk"]
    );
    for c in r["checks"].as_array().unwrap() {
        if c["id"] == "disk" && c["level"] == "warning" {
            // This machine's own disk may be low while the test runs: that is what the
            // line is for, and a warning leaves the exit code 0.
            assert!(c["summary"].as_str().unwrap().starts_with("only "), "{c}");
            continue;
        }
        assert_eq!(c["level"], "ok", "{c}");
        assert!(c.get("fix").is_none(), "no fix for what is ok: {c}");
    }
    assert!(check(&r, "llm")["summary"].as_str().unwrap().contains("model `scripted` is offered"), "{r:#}");
    assert!(check(&r, "config")["summary"].as_str().unwrap().contains(&env.config.display().to_string()));
    let shown = env.ok(&["doctor"]);
    assert!(shown.contains("ok       podman       podman "), "{shown}");
    assert!(shown.ends_with("all 10 checks ok\n") || shown.ends_with("0 errors, 1 warning\n"), "{shown}");
    assert!(llm.requests().is_empty(), "the probe lists models only; no chat request");

    // The LLM server down: an error naming the URL and the key to change.
    let env = TestEnv::new(&down_config());
    let (code, r) = doctor(&env, &[]);
    assert_eq!((code, r["ok"].as_bool()), (1, Some(false)), "{r:#}");
    let c = check(&r, "llm");
    assert_eq!(c["level"], "error");
    let summary = c["summary"].as_str().unwrap();
    assert!(summary.contains("http://host.containers.internal:") && summary.contains("cannot be reached"), "{c}");
    let fix = c["fix"].as_str().unwrap();
    assert!(fix.contains("[agent] base-url") && fix.contains(&env.config.display().to_string()), "{c}");
    let shown = env.run(&["doctor"]);
    assert_eq!(shown.status.code(), Some(1));
    let shown = text(&shown.stdout);
    assert!(
        shown.contains("error    llm") && shown.contains("fix: start the LLM server") && shown.contains("1 error"),
        "{shown}"
    );

    // The base image missing.
    let env = TestEnv::new(&format!("default-image = \"localhost/devaipod-missing:none\"\n{}", llm.agent_config()));
    let (code, r) = doctor(&env, &[]);
    assert_eq!(code, 1, "{r:#}");
    let c = check(&r, "image");
    assert_eq!(c["level"], "error");
    assert!(c["summary"].as_str().unwrap().contains("localhost/devaipod-missing:none is not here"), "{c}");
    assert!(c["fix"].as_str().unwrap().contains("scripts/setup.sh"), "{c}");
    assert_eq!(level(&r, "llm"), "ok", "probed from this host, image or not: {r:#}");

    // A broken config line: pointed at, and no daemon started with it.
    let env = TestEnv::new(&format!("{}modle = \"x\"\n", llm.agent_config()));
    let (code, r) = doctor(&env, &[]);
    assert_eq!(code, 1, "{r:#}");
    let c = check(&r, "config");
    let summary = c["summary"].as_str().unwrap();
    assert!(summary.starts_with(&format!("{}:4:1: agent.modle: unknown field `modle`", env.config.display())), "{c}");
    assert!(c["fix"].as_str().unwrap().starts_with("edit line 4, column 1 of"), "{c}");
    assert_eq!(level(&r, "daemon"), "error");
    assert!(check(&r, "daemon")["summary"].as_str().unwrap().contains("the config file has an error"), "{r:#}");
    assert!(r["daemon"].is_null() && env.daemon_pid().is_none(), "no daemon with a broken config");
    assert_eq!(level(&r, "podman"), "ok", "the rest is still checked: {r:#}");

    // The key's variable unset in the caller's shell.
    let env = TestEnv::new(&format!("{}api-key-env = \"DEVAIPOD_TEST_UNSET_KEY\"\n", llm.agent_config()));
    let out = env.cmd(&["--json", "doctor"]).env_remove("DEVAIPOD_TEST_UNSET_KEY").output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    let c = check(&r, "api-key");
    assert_eq!(c["level"], "error");
    assert!(
        c["summary"].as_str().unwrap().contains("DEVAIPOD_TEST_UNSET_KEY, which is not set in this shell's"),
        "{c}"
    );
    assert!(c["fix"].as_str().unwrap().starts_with("export DEVAIPOD_TEST_UNSET_KEY="), "{c}");
    // Set, its value never shown.
    let secret = "sk-test-value-never-shown";
    let out = env.cmd(&["--json", "doctor"]).env("DEVAIPOD_TEST_UNSET_KEY", secret).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stdout));
    assert!(!text(&out.stdout).contains(secret) && !text(&out.stderr).contains(secret));
    let log = std::fs::read_to_string(env.dir.path().join("data/daemon.log")).unwrap_or_default();
    assert!(!log.contains(secret), "the key is never logged");
    assert_eq!(env.leftovers(), Vec::<String>::new(), "the probe's container is gone");
}

#[test]
fn init_writes_a_checked_config_refuses_to_overwrite_and_refuses_a_bad_url() {
    if !podman_available() {
        return;
    }
    let llm = ScriptedLlm::start(&json!({ "rules": [], "default": { "text": "ok" } }));
    let port = llm.agent_config().split(':').nth(2).unwrap().split('/').next().unwrap().to_owned();
    let env = TestEnv::new("");
    let file = env.dir.path().join("conf/devaipod.toml");
    let at = file.to_str().unwrap();
    let url = format!("http://host.containers.internal:{port}/v1");
    let init = |extra: &[&str]| {
        let mut args = vec!["--config", at, "init"];
        args.extend_from_slice(extra);
        env.run(&args)
    };

    // A bad URL is refused before anything is written.
    let out = init(&["--base-url", "ftp://llm.test/v1", "--model", "m", "--no-key"]);
    assert!(!out.status.success());
    let e = text(&out.stderr);
    assert!(
        e.contains("not saved:") && e.contains("agent.base-url: `ftp://llm.test/v1` is not an http:// or https:// URL"),
        "{e}"
    );
    assert!(!file.exists());
    // So is one that does not answer from this host (where the egress proxy connects from).
    let down = format!("http://host.containers.internal:{}/v1", closed_port());
    let out = init(&["--base-url", &down, "--model", "m", "--no-key"]);
    let e = text(&out.stderr);
    assert!(!out.status.success() && e.contains("not saved:") && e.contains("cannot be reached"), "{e}");
    assert!(!file.exists());
    // And a key variable that this shell does not have.
    let out = env
        .cmd(&[
            "--config",
            at,
            "init",
            "--base-url",
            &url,
            "--model",
            "scripted",
            "--api-key-env",
            "DEVAIPOD_TEST_NO_KEY",
        ])
        .env_remove("DEVAIPOD_TEST_NO_KEY")
        .output()
        .unwrap();
    let e = text(&out.stderr);
    assert!(!out.status.success() && e.contains("DEVAIPOD_TEST_NO_KEY, which is not set"), "{e}");
    assert!(!file.exists());

    // Flags alone: checked, written, loadable, with no key in it.
    let started = Instant::now();
    let out = env
        .cmd(&[
            "--json",
            "--config",
            at,
            "init",
            "--base-url",
            &url,
            "--model",
            "scripted",
            "--api-key-env",
            "MY_LLM_KEY",
        ])
        .env("MY_LLM_KEY", "sk-never-written")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    eprintln!("init with its check took {:?}", started.elapsed());
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["config"], at);
    assert_eq!(v["check"]["level"], "ok", "{v:#}");
    let written = std::fs::read_to_string(&file).unwrap();
    assert!(written.contains(&format!("base-url = \"{url}\"")) && written.contains("api-key-env = \"MY_LLM_KEY\""));
    assert!(!written.contains("sk-never-written"), "{written}");
    // The daemon loads it (any command): the config it reports is this file.
    let r = env.json(&["--config", at, "tasks"]);
    assert_eq!(r, json!([]));

    // Never over an existing file without --force; with it, the old one is kept.
    let out = init(&["--provider", "local", "--port", &port, "--model", "scripted"]);
    let e = text(&out.stderr);
    assert!(!out.status.success() && e.contains("exists: devaipod init does not overwrite it"), "{e}");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), written);
    let out = init(&["--provider", "local", "--port", &port, "--model", "scripted", "--force"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let said = text(&out.stdout);
    assert!(said.contains("the daemon still runs with the previous config"), "{said}");
    assert_eq!(std::fs::read_to_string(env.dir.path().join("conf/devaipod.toml.bak")).unwrap(), written);
    assert!(std::fs::read_to_string(&file).unwrap().contains(&format!("base-url = \"{url}\"")));
    assert_eq!(env.leftovers(), Vec::<String>::new());
}

#[test]
fn a_task_whose_agent_cannot_reach_its_llm_fails_within_seconds_over_the_cli_and_mcp() {
    if !podman_available() {
        return;
    }
    let env = TestEnv::new(&down_config());
    let repo = fixture_repo(env.dir.path(), "nollm", &[]);
    let started = Instant::now();
    env.ok(&["up", repo.to_str().unwrap(), "--name", "nollm"]);
    eprintln!("up took {:?}", started.elapsed());
    let config = env.config.display().to_string();
    let want = |msg: &str| {
        msg.contains("the agent cannot reach http://host.containers.internal:")
            && msg.contains(&format!("/v1 (connection refused): set [agent] base-url in {config}, see devaipod doctor"))
    };

    // The CLI: `run` ends within seconds, exit code 1, the reason in its output.
    let started = Instant::now();
    let out = env.run(&["--json", "run", "-w", "nollm", "-c", "say hello"]);
    let took = started.elapsed();
    eprintln!("run with the LLM down ended after {took:?}");
    assert!(took < Duration::from_secs(10), "took {took:?}");
    assert_eq!(out.status.code(), Some(1));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["task"]["state"], "failed");
    let err = v["task"]["error"].as_str().unwrap();
    assert!(want(err), "{err}");
    assert!(want(&text(&out.stderr)), "the progress shows it too:\n{}", text(&out.stderr));

    // The doctor, asked about the workspace, says the same from its agent.
    let (code, r) = doctor(&env, &["-w", "nollm"]);
    assert_eq!(code, 1);
    let c = check(&r, "llm");
    assert!(c["summary"].as_str().unwrap().contains("cannot be reached from the agent of workspace `nollm`"), "{c}");

    // MCP: run_task answers isError with the same words.
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        use rmcp::ServiceExt;
        use rmcp::model::CallToolRequestParams;
        let cmd: tokio::process::Command = env.cmd(&["mcp"]).into();
        let c = ().serve(rmcp::transport::TokioChildProcess::new(cmd).unwrap()).await.expect("an MCP session");
        let args = json!({ "workspace": "nollm", "prompt": "say hello", "wait_seconds": 30 });
        let started = Instant::now();
        let r = c
            .call_tool(CallToolRequestParams::new("run_task").with_arguments(args.as_object().cloned().unwrap()))
            .await
            .expect("a tool result");
        let took = started.elapsed();
        eprintln!("MCP run_task with the LLM down answered after {took:?}");
        assert!(took < Duration::from_secs(10), "took {took:?}");
        assert_eq!(r.is_error, Some(true), "{r:?}");
        let said = serde_json::to_string(&r.content).unwrap();
        assert!(said.contains("failed: the agent cannot reach http://host.containers.internal:"), "{said}");
        assert!(want(&said.replace("\\\"", "\"")), "{said}");
        let _ = c.cancel().await;
    });
    env.ok(&["delete", "nollm"]);
}
