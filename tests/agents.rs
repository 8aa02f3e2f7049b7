//! The agent backends side by side: the same scenarios, real podman and the scripted LLM,
//! over opencode's HTTP API and over the Agent Client Protocol (`opencode acp` bridged by
//! the agent-shim). A user must not be able to tell the outcomes apart.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};

/// How the workspace's agent is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Backend {
    /// `opencode serve`, its HTTP API relayed by the shim.
    OpencodeHttp,
    /// `opencode acp` on the shim's stdio, bridged to the same API.
    OpencodeAcp,
}

impl Backend {
    /// `devaipod.toml` for this backend (the `[agent]` section continues).
    fn config(self, llm: &ScriptedLlm, extra: &str) -> String {
        let kind = match self {
            Backend::OpencodeHttp => "",
            Backend::OpencodeAcp => "kind = \"acp\"\ncommand = [\"opencode\", \"acp\"]\n",
        };
        format!("{}{kind}{extra}", llm.agent_config())
    }
}

/// The scripted LLM's answers. `folder` is the repository folder in the containers.
fn script(folder: &str) -> Value {
    json!({ "rules": [
        { "match": "please write the greeting", "steps": [
            { "tool": "write", "args": { "filePath": format!("{folder}/hello.txt"), "content": "hi there\n" } },
            { "tool": "bash", "args": { "command": format!("echo ran > {folder}/ran.txt"), "description": "run a command" } },
            { "text": "Wrote hello.txt and ran a command" }
        ]},
        { "match": "slow greeting", "delay": 4, "steps": [
            { "tool": "write", "args": { "filePath": format!("{folder}/slow.txt"), "content": "slow\n" } },
            { "text": "Wrote slow.txt" }
        ]},
        { "match": "take your time", "delay": 60, "steps": [{ "text": "too late" }] },
        { "match": "nothing to change", "steps": [{ "text": "Nothing needed changing" }] },
        { "match": "ask gator", "steps": [
            { "tool": "gator_list_worker_tasks", "args": {} },
            { "text": "Asked gator" }
        ]}
    ]})
}

/// Polls a task until `done` holds for it (or fails after `secs`).
fn wait_task(env: &TestEnv, id: &str, secs: u64, done: impl Fn(&Value) -> bool) -> Value {
    let start = Instant::now();
    loop {
        let t = env.json(&["task", id]);
        if done(&t) {
            return t;
        }
        assert!(start.elapsed() < Duration::from_secs(secs), "task {id} did not get there in {secs} s: {t:#}");
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// A `run` following its task in the background; ended (and reaped) when dropped.
struct Follower(std::process::Child);

impl Drop for Follower {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts a task in `ws` without waiting for it (a `run` in the background): its id, once
/// it runs.
fn start_running(env: &TestEnv, ws: &str, prompt: &str) -> (String, Follower) {
    let follower = Follower(
        env.cmd(&["--json", "run", "-w", ws, "-c", prompt])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let start = Instant::now();
    loop {
        let running = env.json(&["tasks", "-w", ws, "--state", "running"]);
        if let Some(id) =
            running.as_array().unwrap().iter().find(|t| t["prompt"] == prompt).and_then(|t| t["id"].as_str())
        {
            return (id.to_owned(), follower);
        }
        assert!(start.elapsed() < Duration::from_secs(60), "no running task for {prompt:?}: {running:#}");
        std::thread::sleep(Duration::from_millis(300));
    }
}

fn ended(t: &Value) -> bool {
    !["queued", "running"].contains(&t["task"]["state"].as_str().unwrap_or_default())
}

/// The shim's command line: which backend really runs.
fn assert_backend(ws: &str, backend: Backend) {
    let cmd = podman(&["inspect", &format!("devaipod-{ws}-agent"), "--format", "{{json .Config.Cmd}}"]);
    match backend {
        Backend::OpencodeHttp => assert!(cmd.contains("\"serve\"") && !cmd.contains("--acp"), "{cmd}"),
        Backend::OpencodeAcp => assert!(cmd.contains("--acp") && cmd.contains("\"acp\""), "{cmd}"),
    }
}

/// task → proposal → approve, then cancel, then the session still takes work.
fn task_proposal_approve_and_cancel(backend: Backend, ws: &str) {
    if !podman_available() {
        return;
    }
    let folder = format!("/workspaces/{ws}");
    let llm = ScriptedLlm::start(&script(&folder));
    // The ACP workspace chooses its agent with `--agent`; the config stays opencode's.
    let env = TestEnv::new(&Backend::OpencodeHttp.config(&llm, ""));
    let repo = fixture_repo(env.dir.path(), ws, &[]);
    let mut up = vec!["up", repo.to_str().unwrap(), "--name", ws];
    if backend == Backend::OpencodeAcp {
        up.extend(["--agent", "opencode-acp"]);
    }
    env.ok(&up);
    assert_backend(ws, backend);

    let out = env.run(&["--json", "run", "-w", ws, "-c", "please write the greeting"]);
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "run failed:\n{stderr}");
    assert!(stderr.contains("write completed"), "{stderr}");
    let done: Value = serde_json::from_str(&text(&out.stdout)).unwrap();
    assert_eq!(done["task"]["state"], "completed", "{done:#}");
    assert_eq!(done["task"]["summary"], "Wrote hello.txt and ran a command");
    let task_id = done["task"]["id"].as_str().unwrap().to_owned();
    let pid = done["proposal"].as_str().expect("a proposal").to_owned();
    let p = env.json(&["proposal", &pid]);
    let files: Vec<&str> = p["files"].as_array().unwrap().iter().map(|f| f["path"].as_str().unwrap()).collect();
    assert_eq!(files, ["hello.txt", "ran.txt"]);
    let applied = env.json(&["approve", &pid, "--apply"]);
    assert_eq!(applied["state"], "applied");
    let branch = format!("devaipod/{task_id}");
    assert_eq!(env.ok(&["exec", ws, "--", "git", "show", &format!("{branch}:hello.txt")]), "hi there\n");
    let t = env.json(&["task", &task_id]);
    let msgs: Vec<&str> = t["events"].as_array().unwrap().iter().map(|e| e["message"].as_str().unwrap()).collect();
    assert!(msgs.iter().any(|m| m.starts_with("bash completed")), "{msgs:?}");

    // Cancel a running task; the agent then takes the next one.
    let (slow, follower) = start_running(&env, ws, "take your time");
    assert_eq!(env.json(&["cancel", &slow])["state"], "cancelled");
    drop(follower);
    let out = env.run(&["--json", "run", "-w", ws, "-c", "nothing to change"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: Value = serde_json::from_str(&text(&out.stdout)).unwrap();
    assert_eq!(v["task"]["state"], "completed", "{v:#}");
    assert_eq!(v["task"]["summary"], "Nothing needed changing");
    // The prompt reached the LLM once per task (as an agent turn: with tools; opencode over
    // ACP also asks for a session title with the prompt, without tools).
    let firsts = llm
        .requests()
        .iter()
        .filter(|r| r["last_user"] == "please write the greeting" && r["tool_results"] == 0 && r["tools"] == true)
        .count();
    assert_eq!(firsts, 1, "{:?}", llm.requests());

    // gator is offered to the agent as an MCP server, and its calls are audited.
    let out = env.run(&["--json", "run", "-w", ws, "-c", "ask gator"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let reqs = llm.requests();
    let turn = reqs.iter().find(|r| r["last_user"] == "ask gator" && r["tools"] == true).expect("an agent turn");
    let names: Vec<&str> = turn["tool_names"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
    assert!(names.contains(&"gator_list_worker_tasks"), "gator's tools offered: {names:?}");
    let answered =
        reqs.iter().find(|r| r["last_user"] == "ask gator" && r["tool_results"] == 1).expect("the tool's result");
    assert!(answered["last_tool"].as_str().is_some_and(|t| !t.contains("rror")), "{answered}");
    let log = env.json(&["gator", "log", ws]);
    assert!(
        log.as_array().unwrap().iter().any(|e| e["tool"] == "list_worker_tasks" && e["decision"] == "allow"),
        "the call is audited: {log:#}"
    );
}

/// The deadline, and the agent's container dying mid-task: the task fails with the reason.
fn deadline_and_agent_crash(backend: Backend, ws: &str) {
    if !podman_available() {
        return;
    }
    let llm = ScriptedLlm::start(&script(&format!("/workspaces/{ws}")));
    let env = TestEnv::new(&backend.config(&llm, "task-timeout-secs = 4\n"));
    let repo = fixture_repo(env.dir.path(), ws, &[]);
    let out = env.run(&["--json", "run", repo.to_str().unwrap(), "--name", ws, "-c", "take your time"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert_backend(ws, backend);
    let v: Value = serde_json::from_str(&text(&out.stdout)).unwrap();
    assert_eq!(v["task"]["state"], "failed");
    let err = v["task"]["error"].as_str().unwrap();
    assert!(err.contains("did not finish within its deadline of 4 s"), "{err}");

    // The agent's container dies mid-task (no deadline this time; pod names are global).
    let env = TestEnv::new(&backend.config(&llm, ""));
    let ws = &format!("{ws}-2");
    let repo = fixture_repo(env.dir.path(), ws, &[]);
    env.ok(&["up", repo.to_str().unwrap(), "--name", ws]);
    let (id, follower) = start_running(&env, ws, "take your time");
    podman(&["kill", &format!("devaipod-{ws}-agent")]);
    let t = wait_task(&env, &id, 60, ended);
    drop(follower);
    assert_eq!(t["task"]["state"], "failed", "{t:#}");
    let err = t["task"]["error"].as_str().unwrap();
    assert!(err.contains("the agent stopped") || err.contains("not running"), "{err}");
}

/// `kill -9` of the daemon mid-task: the next daemon resumes it; nothing lost or repeated.
fn daemon_killed_mid_task(backend: Backend, ws: &str) {
    if !podman_available() {
        return;
    }
    let llm = ScriptedLlm::start(&script(&format!("/workspaces/{ws}")));
    let env = TestEnv::new(&backend.config(&llm, ""));
    let repo = fixture_repo(env.dir.path(), ws, &[]);
    let up = env.json(&["up", repo.to_str().unwrap(), "--name", ws, "-c", "slow greeting"]);
    assert_backend(ws, backend);
    let id = up["task"]["id"].as_str().unwrap().to_owned();
    wait_task(&env, &id, 60, |t| t["task"]["state"] == "running");
    let old = env.daemon_pid().unwrap();
    env.kill_daemon("KILL");
    let t = wait_task(&env, &id, 90, ended);
    assert_ne!(env.daemon_pid(), Some(old));
    assert_eq!(t["task"]["state"], "completed", "{t:#}");
    let firsts = llm
        .requests()
        .iter()
        .filter(|r| r["last_user"] == "slow greeting" && r["tool_results"] == 0 && r["tools"] == true)
        .count();
    assert_eq!(firsts, 1, "{:?}", llm.requests());
    let props: Vec<Value> = env.json(&["proposals"])["proposals"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["task_id"] == id.as_str())
        .cloned()
        .collect();
    assert_eq!(props.len(), 1);
    assert_eq!(env.json(&["proposal", props[0]["id"].as_str().unwrap()])["files"][0]["path"], "slow.txt");
    let mut seen = std::collections::HashSet::new();
    for e in t["events"].as_array().unwrap() {
        assert!(seen.insert((e["kind"].clone(), e["message"].clone())), "duplicate event {e}");
    }
}

macro_rules! table {
    ($($scenario:ident: $http:ident, $acp:ident;)*) => {$(
        #[test]
        fn $http() {
            $scenario(Backend::OpencodeHttp, &stringify!($http).replace('_', "-"));
        }
        #[test]
        fn $acp() {
            $scenario(Backend::OpencodeAcp, &stringify!($acp).replace('_', "-"));
        }
    )*};
}

table! {
    task_proposal_approve_and_cancel: loop_over_http, loop_over_acp;
    deadline_and_agent_crash: crash_over_http, crash_over_acp;
    daemon_killed_mid_task: kill9_over_http, kill9_over_acp;
}

/// Where `scripts/setup.sh` installs Codex's ACP adapter (a native binary).
fn codex_acp_dir() -> std::path::PathBuf {
    let cache = std::env::var_os("XDG_CACHE_HOME").map_or_else(
        || std::path::PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache"),
        std::path::PathBuf::from,
    );
    cache.join("devaipod/codex-acp/node_modules/@zed-industries/codex-acp-linux-x64/bin")
}

/// A second ACP agent, Codex through its adapter, injected read-only from the host and
/// driven offline by the scripted LLM's Responses API: task → proposal → approve, with
/// gator offered to it.
#[test]
fn codex_over_acp() {
    if !podman_available() {
        return;
    }
    let dir = codex_acp_dir();
    assert!(dir.join("codex-acp").is_file(), "{} is missing: run scripts/setup.sh", dir.display());
    let ws = "codex-over-acp";
    let llm = ScriptedLlm::start(&json!({ "rules": [
        { "match": "codex, write the greeting", "steps": [
            { "tool": "exec_command", "args": { "cmd": "echo 'hi from codex' > hello.txt" } },
            { "text": "Wrote hello.txt with Codex" }
        ]}
    ]}));
    // Codex reads its provider from `-c` overrides: the egress proxy's LLM route, the
    // placeholder key, and no sandbox of its own (the container is the sandbox).
    let command = [
        "/opt/devaipod/agent/codex-acp",
        "-c",
        "model_provider=\"devaipod\"",
        "-c",
        "model_providers.devaipod={name=\"devaipod\", base_url=\"http://127.0.0.1:3128/llm\", env_key=\"DEVAIPOD_LLM_API_KEY\", wire_api=\"responses\"}",
        "-c",
        "model=\"scripted\"",
        "-c",
        "sandbox_mode=\"danger-full-access\"",
        "-c",
        "approval_policy=\"never\"",
    ];
    let preset = format!(
        "\n[agents.codex]\nkind = \"acp\"\ninject-dir = {}\ncommand = {}\n",
        json!(dir.display().to_string()),
        json!(command)
    );
    let env = TestEnv::new(&format!("{}{preset}", Backend::OpencodeHttp.config(&llm, "")));
    let repo = fixture_repo(env.dir.path(), ws, &[]);
    env.ok(&["up", repo.to_str().unwrap(), "--name", ws, "--agent", "codex"]);
    let cmd = podman(&["inspect", &format!("devaipod-{ws}-agent"), "--format", "{{json .Config.Cmd}}"]);
    assert!(cmd.contains("--acp") && cmd.contains("/opt/devaipod/agent/codex-acp"), "{cmd}");

    let out = env.run(&["--json", "run", "-w", ws, "-c", "codex, write the greeting"]);
    assert!(out.status.success(), "run failed:\n{}", text(&out.stderr));
    let done: Value = serde_json::from_str(&text(&out.stdout)).unwrap();
    assert_eq!(done["task"]["state"], "completed", "{done:#}");
    assert_eq!(done["task"]["summary"], "Wrote hello.txt with Codex");
    let pid = done["proposal"].as_str().expect("a proposal").to_owned();
    let p = env.json(&["proposal", &pid]);
    assert_eq!(p["files"][0]["path"], "hello.txt", "{p:#}");
    assert_eq!(env.json(&["approve", &pid, "--apply"])["state"], "applied");
    let branch = format!("devaipod/{}", done["task"]["id"].as_str().unwrap());
    assert_eq!(env.ok(&["exec", ws, "--", "git", "show", &format!("{branch}:hello.txt")]), "hi from codex\n");
    let t = env.json(&["task", done["task"]["id"].as_str().unwrap()]);
    let msgs: Vec<&str> = t["events"].as_array().unwrap().iter().map(|e| e["message"].as_str().unwrap()).collect();
    assert!(msgs.iter().any(|m| m.starts_with("execute completed")), "{msgs:?}");

    // The prompt reached the LLM once, through the egress proxy, with gator's tools offered.
    let reqs = llm.requests();
    let firsts: Vec<&Value> = reqs
        .iter()
        .filter(|r| r["last_user"] == "codex, write the greeting" && r["tool_results"] == 0 && r["tools"] == true)
        .collect();
    assert_eq!(firsts.len(), 1, "{reqs:?}");
    let names: Vec<&str> = firsts[0]["tool_names"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
    // Codex offers an MCP server's tools as one namespace tool, `mcp__<server>`.
    assert!(names.contains(&"mcp__gator"), "gator offered: {names:?}");
}
