//! Clients no one here wrote: the Python `mcp` SDK and the MCP Inspector CLI, both
//! installed by `scripts/setup.sh` into the cache directory.

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::*;
use serde_json::{Value, json};

fn cache() -> PathBuf {
    std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").unwrap()).join(".cache"))
        .join("devaipod")
}

/// The tool's path, or a loud skip (a failure under `DEVAIPOD_REQUIRE_PODMAN=1`, as in CI).
fn installed(path: PathBuf, what: &str) -> Option<PathBuf> {
    if path.exists() {
        return Some(path);
    }
    let msg = format!("{what} is not installed at {}: run scripts/setup.sh", path.display());
    if std::env::var("DEVAIPOD_REQUIRE_PODMAN").as_deref() == Ok("1") {
        panic!("{msg}");
    }
    eprintln!("\n*** SKIPPED: {msg} ***\n");
    None
}

#[test]
fn the_python_mcp_sdk_runs_the_whole_loop_over_stdio_and_http() {
    if !podman_available() {
        return;
    }
    let Some(python) = installed(cache().join("venv/bin/python3"), "the Python mcp SDK") else { return };
    let llm = ScriptedLlm::start(&json!({ "rules": [{ "match": "write the greeting", "steps": [
        { "tool": "write", "args": { "filePath": "/workspaces/pyclient/hello.txt", "content": "hi\n" } },
        { "text": "Wrote hello.txt" }
    ]}]}));
    let env = TestEnv::new(&llm.agent_config());
    env.ok(&["list"]);
    let repo = fixture_repo(env.dir.path(), "pyclient", &[]);
    let mut cmd = Command::new(python);
    cmd.arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support/mcp_python_client.py"))
        .args(["--devaipod", env!("CARGO_BIN_EXE_devaipod")])
        .args(["--url", &format!("http://{}/mcp", env.daemon_addr())])
        .args(["--token", &env.token()])
        .args(["--repo", repo.to_str().unwrap()]);
    // The stdio server is `devaipod mcp` in this test's instance.
    let probe = env.cmd(&[]);
    for (k, v) in probe.get_envs() {
        if let Some(v) = v {
            cmd.env(k, v);
        }
    }
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "python client failed:\n{}\n{}", text(&out.stdout), text(&out.stderr));
    let seen: Value = serde_json::from_str(text(&out.stdout).trim()).unwrap();
    assert_eq!(seen["stdio_tools"], 18);
    assert_eq!(seen["task"], "completed");
    assert_eq!(seen["approved"], "applied");
    assert_eq!(env.leftovers(), Vec::<String>::new());
}

#[test]
fn the_mcp_inspector_cli_lists_and_calls_tools_over_stdio() {
    let Some(inspector) = installed(cache().join("inspector/node_modules/.bin/mcp-inspector"), "the MCP Inspector")
    else {
        return;
    };
    let env = TestEnv::new("");
    env.ok(&["list"]);
    let run = |extra: &[&str]| {
        let mut cmd = Command::new(&inspector);
        cmd.arg("--cli");
        let probe = env.cmd(&[]);
        for (k, v) in probe.get_envs() {
            if let Some(v) = v {
                cmd.args(["-e", &format!("{}={}", k.to_string_lossy(), v.to_string_lossy())]);
            }
        }
        cmd.args([env!("CARGO_BIN_EXE_devaipod"), "mcp"]).args(extra);
        cmd.output().unwrap()
    };
    let out = run(&["--method", "tools/list"]);
    assert!(out.status.success(), "{}\n{}", text(&out.stdout), text(&out.stderr));
    let v: Value = serde_json::from_str(&text(&out.stdout)).unwrap();
    assert_eq!(v["tools"].as_array().unwrap().len(), 18, "{v:#}");
    let out = run(&["--method", "tools/call", "--tool-name", "list_workspaces"]);
    assert!(out.status.success(), "{}\n{}", text(&out.stdout), text(&out.stderr));
    let v: Value = serde_json::from_str(&text(&out.stdout)).unwrap();
    assert_eq!(v["structuredContent"], json!({ "workspaces": [] }), "{v:#}");
    // A tool error makes the Inspector exit non-zero.
    let out = run(&["--method", "tools/call", "--tool-name", "get_workspace", "--tool-arg", "name=nope"]);
    assert!(text(&out.stdout).contains("no workspace named") || text(&out.stderr).contains("no workspace named"));
}
