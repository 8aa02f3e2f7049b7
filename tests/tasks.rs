//! Tasks run by the real opencode agent in a real pod, against the scripted LLM: proposals,
//! approve/reject, provider errors, cancel, and a daemon killed with -9 mid-task.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};

/// The scripted LLM's answers. `{repo}` is the repository folder in the containers.
fn script(folder: &str) -> Value {
    json!({ "rules": [
        { "match": "please write the greeting", "steps": [
            { "tool": "write", "args": { "filePath": format!("{folder}/hello.txt"), "content": "hi there\n" } },
            { "tool": "bash", "args": { "command": format!("echo ran > {folder}/ran.txt"), "description": "run a command" } },
            { "text": "Wrote hello.txt and ran a command" }
        ]},
        { "match": "now say goodbye", "steps": [
            { "tool": "write", "args": { "filePath": format!("{folder}/goodbye.txt"), "content": "bye\n" } },
            { "text": "Added goodbye.txt" }
        ]},
        { "match": "slow greeting", "delay": 4, "steps": [
            { "tool": "write", "args": { "filePath": format!("{folder}/slow.txt"), "content": "slow\n" } },
            { "text": "Wrote slow.txt" }
        ]},
        { "match": "take your time", "delay": 60, "steps": [{ "text": "too late" }] },
        { "match": "provider says no", "error": { "status": 400, "message": "model not allowed for this key" } },
        { "match": "nothing to change", "steps": [{ "text": "Nothing needed changing" }] },
        { "match": "keep what is there", "steps": [{ "text": "Kept it" }] }
    ]})
}

fn task(env: &TestEnv, id: &str) -> Value {
    env.json(&["task", id])
}

/// Polls a task until `done` holds for it (or fails after `secs`).
fn wait_task(env: &TestEnv, id: &str, secs: u64, done: impl Fn(&Value) -> bool) -> Value {
    let start = Instant::now();
    loop {
        let t = task(env, id);
        if done(&t) {
            return t;
        }
        assert!(start.elapsed() < Duration::from_secs(secs), "task {id} did not get there in {secs} s: {t:#}");
        std::thread::sleep(Duration::from_millis(300));
    }
}

fn git(dir: &std::path::Path, args: &[&str]) -> String {
    let out = Command::new("git").arg("-C").arg(dir).args(args).output().unwrap();
    assert!(out.status.success(), "git {args:?}: {}", text(&out.stderr));
    text(&out.stdout)
}

#[test]
fn task_to_proposal_to_apply_and_push() {
    if !podman_available() {
        return;
    }
    let llm = ScriptedLlm::start(&script("/workspaces/e2e"));
    let env = TestEnv::new(&llm.agent_config());
    // The source is a bare "remote", so that push has somewhere to land.
    let seed = fixture_repo(env.dir.path(), "seed", &[]);
    let remote = env.dir.path().join("e2e.git");
    git(env.dir.path(), &["clone", "-q", "--bare", seed.to_str().unwrap(), remote.to_str().unwrap()]);
    let url = format!("file://{}", remote.display());

    let out = env.run(&["--json", "run", &url, "--name", "e2e", "-c", "please write the greeting"]);
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "run failed:\n{stderr}");
    assert!(stderr.contains("==> running: the agent accepted the prompt"), "progress on stderr:\n{stderr}");
    assert!(stderr.contains("write completed"), "{stderr}");
    let done: Value = serde_json::from_str(&text(&out.stdout)).unwrap();
    assert_eq!(done["task"]["state"], "completed", "{done:#}");
    assert_eq!(done["task"]["summary"], "Wrote hello.txt and ran a command");
    let task_id = done["task"]["id"].as_str().unwrap().to_owned();
    let pid = done["proposal"].as_str().expect("a proposal").to_owned();

    // Exactly the agent's change.
    let page = env.json(&["proposals"]);
    assert_eq!((page["proposals"].as_array().unwrap().len(), page["total"].as_u64()), (1, Some(1)));
    assert_eq!(page["proposals"][0]["files"], 2, "a listing counts the files");
    let p = env.json(&["proposal", &pid]);
    assert_eq!(p["id"], pid.as_str());
    assert_eq!(p["branch"], format!("devaipod/{task_id}"));
    let files: Vec<&str> = p["files"].as_array().unwrap().iter().map(|f| f["path"].as_str().unwrap()).collect();
    assert_eq!(files, ["hello.txt", "ran.txt"]);
    assert_eq!((p["added"].as_u64(), p["removed"].as_u64()), (Some(2), Some(0)));
    assert_eq!(p["commits"].as_array().unwrap().len(), 1);
    let diff = env.ok(&["diff", &pid]);
    assert!(diff.contains("+++ b/hello.txt") && diff.contains("+hi there") && diff.contains("+ran"), "{diff}");
    assert_eq!(diff.matches("diff --git").count(), 2, "{diff}");

    // Nothing reached the human's workspace before approval.
    assert!(!env.run(&["exec", "e2e", "--", "test", "-e", "hello.txt"]).status.success());
    let branch = format!("devaipod/{task_id}");
    assert!(!env.run(&["exec", "e2e", "--", "git", "rev-parse", "--verify", "-q", &branch]).status.success());

    // apply: the branch appears in the workspace container's repository.
    let applied = env.json(&["approve", &pid, "--apply"]);
    assert_eq!(applied["state"], "applied");
    assert_eq!(env.ok(&["exec", "e2e", "--", "git", "show", &format!("{branch}:hello.txt")]), "hi there\n");
    assert_eq!(env.ok(&["exec", "e2e", "--", "git", "rev-parse", &branch]).trim(), p["head"].as_str().unwrap());
    let e = env.fails(&["approve", &pid, "--apply"]);
    assert!(e.contains(&format!("proposal {pid} was already approved (apply)")), "{e}");

    // push: the branch lands in the remote, once.
    assert_eq!(env.json(&["approve", &pid, "--push"])["state"], "pushed");
    assert_eq!(git(&remote, &["rev-parse", &branch]).trim(), p["head"].as_str().unwrap());
    let e = env.fails(&["approve", &pid, "--push"]);
    assert!(e.contains("already approved (push); nothing was pushed again"), "{e}");
    let e = env.fails(&["reject", &pid]);
    assert!(e.contains("was already pushed: it cannot be rejected"), "{e}");
    let e = env.fails(&["approve", &pid, "--draft-pr"]);
    assert!(e.contains("does not work on a GitHub repository"), "{e}");

    // The task's events were stored.
    let t = task(&env, &task_id);
    let msgs: Vec<&str> = t["events"].as_array().unwrap().iter().map(|e| e["message"].as_str().unwrap()).collect();
    assert!(msgs.iter().any(|m| m.starts_with("write completed")), "{msgs:?}");
    assert!(msgs.iter().any(|m| m.starts_with("bash completed")), "{msgs:?}");
    assert!(msgs.iter().any(|m| m.starts_with(&format!("proposal {pid}"))), "{msgs:?}");

    // A task that changes nothing completes without a proposal.
    let out = env.run(&["--json", "run", "-w", "e2e", "-c", "nothing to change"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: Value = serde_json::from_str(&text(&out.stdout)).unwrap();
    assert_eq!(v["task"]["state"], "completed");
    assert!(v["proposal"].is_null(), "{v:#}");
}

#[test]
fn provider_errors_cancel_and_reject_with_feedback() {
    if !podman_available() {
        return;
    }
    let llm = ScriptedLlm::start(&script("/workspaces/fb"));
    let env = TestEnv::new(&llm.agent_config());
    let repo = fixture_repo(env.dir.path(), "fb", &[]);
    env.ok(&["up", repo.to_str().unwrap(), "--name", "fb"]);

    // A provider's 4xx fails the task with the provider's message.
    let out = env.run(&["--json", "run", "-w", "fb", "-c", "provider says no"]);
    assert_eq!(out.status.code(), Some(1));
    let v: Value = serde_json::from_str(&text(&out.stdout)).unwrap();
    assert_eq!(v["task"]["state"], "failed");
    let err = v["task"]["error"].as_str().unwrap();
    assert!(err.contains("the LLM provider answered 400: model not allowed for this key"), "{err}");

    // Cancel aborts a running task.
    let up = env.json(&["up", repo.to_str().unwrap(), "--name", "fb2", "-c", "take your time"]);
    let slow = up["task"]["id"].as_str().unwrap().to_owned();
    wait_task(&env, &slow, 60, |t| t["task"]["state"] == "running");
    let e = env.fails(&["run", "-w", "fb2", "-c", "please write the greeting"]);
    assert!(e.contains(&format!("workspace `fb2` is busy with task {slow}")), "{e}");
    let c = env.json(&["cancel", &slow]);
    assert_eq!(c["state"], "cancelled");
    let e = env.fails(&["cancel", &slow]);
    assert!(e.contains("already ended (cancelled)"), "{e}");

    // Reject with feedback: the same agent session gets it as a follow-up task.
    let out = env.run(&["--json", "run", "-w", "fb", "-c", "please write the greeting"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let first: Value = serde_json::from_str(&text(&out.stdout)).unwrap();
    let p1 = first["proposal"].as_str().unwrap().to_owned();
    let r = env.json(&["reject", &p1, "-m", "now say goodbye"]);
    assert_eq!(r["proposal"]["state"], "rejected");
    let follow = r["follow_up_task"]["id"].as_str().unwrap().to_owned();
    assert_eq!(r["follow_up_task"]["session_id"], first["task"]["session_id"], "same agent session");
    let t = wait_task(&env, &follow, 90, |t| t["task"]["state"] != "queued" && t["task"]["state"] != "running");
    assert_eq!(t["task"]["state"], "completed", "{t:#}");
    assert!(llm.requests().iter().any(|r| r["last_user"] == "now say goodbye"), "the scripted LLM saw the feedback");
    let p2 = t["proposal"].as_str().unwrap();
    let open = env.json(&["proposals", "--state", "open"]);
    let files: Vec<String> = env.json(&["proposal", open["proposals"][0]["id"].as_str().unwrap()])["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap().to_owned())
        .collect();
    // The follow-up builds on the rejected work; its diff shows all that its branch ships.
    assert_eq!(files, ["goodbye.txt", "hello.txt", "ran.txt"]);
    assert_ne!(p2, p1);
    let e = env.fails(&["approve", &p1, "--apply"]);
    assert!(e.contains(&format!("proposal {p1} was already rejected: it cannot be approved")), "{e}");
}

#[test]
fn a_daemon_killed_mid_task_resumes_without_losing_or_repeating_anything() {
    if !podman_available() {
        return;
    }
    let llm = ScriptedLlm::start(&script("/workspaces/k9"));
    let env = TestEnv::new(&llm.agent_config());
    let repo = fixture_repo(env.dir.path(), "k9", &[]);
    let up = env.json(&["up", repo.to_str().unwrap(), "--name", "k9", "-c", "slow greeting"]);
    let id = up["task"]["id"].as_str().unwrap().to_owned();
    wait_task(&env, &id, 60, |t| t["task"]["state"] == "running");

    // kill -9 while the agent waits on the (slow) LLM.
    let old = env.daemon_pid().unwrap();
    env.kill_daemon("KILL");
    assert!(!std::path::Path::new(&format!("/proc/{old}")).exists());

    // Any command starts a new daemon, which resumes the task.
    let t = wait_task(&env, &id, 90, |t| t["task"]["state"] == "completed" || t["task"]["state"] == "failed");
    assert_ne!(env.daemon_pid(), Some(old));
    assert_eq!(t["task"]["state"], "completed", "{t:#}");

    // The prompt reached the LLM once: one first-turn request for it.
    let first_turns =
        llm.requests().iter().filter(|r| r["last_user"] == "slow greeting" && r["tool_results"] == 0).count();
    assert_eq!(first_turns, 1, "{:?}", llm.requests());
    // One proposal for the task, with the file.
    let props: Vec<Value> = env.json(&["proposals"])["proposals"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["task_id"] == id.as_str())
        .cloned()
        .collect();
    assert_eq!(props.len(), 1);
    assert_eq!(env.json(&["proposal", props[0]["id"].as_str().unwrap()])["files"][0]["path"], "slow.txt");
    // No event twice.
    let events = t["events"].as_array().unwrap();
    let mut seen = std::collections::HashSet::new();
    for e in events {
        assert!(seen.insert((e["kind"].clone(), e["message"].clone())), "duplicate event {e}");
    }
    assert!(events.iter().any(|e| e["message"].as_str().unwrap().starts_with("write completed")));
}

#[test]
fn bad_task_input_gives_clear_errors() {
    if !podman_available() {
        return;
    }
    let llm = ScriptedLlm::start(&script("/workspaces/bad"));
    let env = TestEnv::new(&llm.agent_config());
    let e = env.fails(&["run", "-w", "nope", "-c", "anything"]);
    assert!(e.contains("no workspace named `nope`"), "{e}");
    for (args, want) in [
        (&["task", "t-none"][..], "no task `t-none` (see `devaipod tasks`)"),
        (&["cancel", "t-none"], "no task `t-none`"),
        (&["diff", "p-none"], "no proposal `p-none` (see `devaipod proposals`)"),
        (&["approve", "p-none", "--apply"], "no proposal `p-none`"),
        (&["reject", "p-none"], "no proposal `p-none`"),
        (&["proposals", "--state", "weird"], "unknown proposal state `weird`"),
    ] {
        let e = env.fails(args);
        assert!(e.contains(want), "{args:?}: {e}");
    }

    let repo = fixture_repo(env.dir.path(), "bad", &[]);
    env.ok(&["up", repo.to_str().unwrap(), "--name", "bad"]);
    let e = env.fails(&["run", "-w", "bad", "-c", "   "]);
    assert!(e.contains("the prompt is empty"), "{e}");

    // The pod removed behind devaipod's back.
    podman(&["pod", "rm", "-f", "-t", "0", "devaipod-bad"]);
    let e = env.fails(&["run", "-w", "bad", "-c", "please write the greeting"]);
    assert!(e.contains("the pod of workspace `bad` is gone") && e.contains("devaipod delete bad"), "{e}");
    env.ok(&["delete", "bad"]);
    assert_eq!(env.leftovers(), Vec::<String>::new());
}

#[test]
fn the_tcp_api_needs_the_token_and_the_socket_is_private() {
    let env = TestEnv::new("");
    env.ok(&["tasks"]); // starts the daemon
    let addr = env.daemon_addr();
    let token = env.token();
    let curl = |args: &[&str]| {
        let out =
            Command::new("curl").args(["-s", "-o", "/dev/null", "-w", "%{http_code}"]).args(args).output().unwrap();
        text(&out.stdout)
    };
    assert_eq!(curl(&[&format!("http://{addr}/healthz")]), "200");
    assert_eq!(curl(&[&format!("http://{addr}/api/v1/tasks")]), "401");
    assert_eq!(curl(&["-H", "Authorization: Bearer wrong", &format!("http://{addr}/api/v1/tasks")]), "401");
    assert_eq!(curl(&["-H", &format!("Authorization: Bearer {token}"), &format!("http://{addr}/api/v1/tasks")]), "200");
    assert_eq!(env.ok(&["token"]).trim(), token);
    use std::os::unix::fs::PermissionsExt;
    for f in ["run/api.sock", "data/token", "data/state.db"] {
        let mode = std::fs::metadata(env.dir.path().join(f)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{f}");
    }
    let log = std::fs::read_to_string(env.dir.path().join("data/daemon.log")).unwrap();
    assert!(!log.contains(&token), "the token is never logged");
    assert!(addr.starts_with("127.0.0.1:"), "{addr}");
}

#[test]
fn a_deadline_or_an_agent_crash_fails_the_task_with_the_reason() {
    if !podman_available() {
        return;
    }
    let llm = ScriptedLlm::start(&script("/workspaces/dl"));
    let env = TestEnv::new(&format!("{}task-timeout-secs = 4\n", llm.agent_config()));
    let repo = fixture_repo(env.dir.path(), "dl", &[]);

    // The deadline: the LLM takes 60 s, the task may take 4.
    let out = env.run(&["--json", "run", repo.to_str().unwrap(), "--name", "dl", "-c", "take your time"]);
    assert_eq!(out.status.code(), Some(1));
    let v: Value = serde_json::from_str(&text(&out.stdout)).unwrap();
    assert_eq!(v["task"]["state"], "failed");
    let err = v["task"]["error"].as_str().unwrap();
    assert!(err.contains("did not finish within its deadline of 4 s"), "{err}");

    // The agent's container dies mid-task (no deadline this time).
    let env = TestEnv::new(&llm.agent_config());
    let repo = fixture_repo(env.dir.path(), "crash", &[]);
    let up = env.json(&["up", repo.to_str().unwrap(), "--name", "crash", "-c", "take your time"]);
    let id = up["task"]["id"].as_str().unwrap().to_owned();
    wait_task(&env, &id, 60, |t| t["task"]["state"] == "running");
    podman(&["kill", "devaipod-crash-agent"]);
    let t = wait_task(&env, &id, 60, |t| t["task"]["state"] != "running");
    assert_eq!(t["task"]["state"], "failed", "{t:#}");
    let err = t["task"]["error"].as_str().unwrap();
    assert!(err.contains("the agent stopped") || err.contains("not running"), "{err}");
}

/// Peak and current resident memory of a process, in KiB (VmHWM, VmRSS).
fn memory(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| {
        let line = status.lines().find(|l| l.starts_with(name)).unwrap_or_default();
        line.split_whitespace().nth(1).and_then(|v| v.parse().ok()).unwrap_or(0)
    };
    (field("VmHWM:"), field("VmRSS:"))
}

/// A 300 MB proposal is collected with the daemon's memory flat; a filter, hooks and
/// fsmonitor the agent planted in its clone do not run; `diff` shows the agent's escape
/// sequences without sending them, `--raw` sends them to a pipe only.
#[test]
fn a_large_proposal_is_collected_in_flat_memory_without_the_agents_git_config() {
    if !podman_available() {
        return;
    }
    let llm = ScriptedLlm::start(&script("/workspaces/big"));
    let env = TestEnv::new(&llm.agent_config());
    let repo = fixture_repo(env.dir.path(), "big", &[]);
    env.ok(&["up", repo.to_str().unwrap(), "--name", "big"]);

    // As the agent: 300 MB that do not compress, a file of escape sequences, and git
    // configuration that would leave /tmp/ran (and sleep) if collection ran it.
    let plant = r#"set -e
head -c 300000000 /dev/urandom > big.bin
printf 'title \033]0;pwned\007\033[2J\n' > esc.txt
mkdir -p .git/evil
printf '#!/bin/sh\ntouch /tmp/ran\nsleep 120\n' > .git/evil/hook
chmod +x .git/evil/hook
for h in pre-commit post-commit commit-msg reference-transaction; do cp .git/evil/hook .git/evil/$h; done
git config filter.evil.clean 'sh -c "touch /tmp/ran; sleep 120; cat"'
git config filter.evil.required true
git config core.hooksPath "$PWD/.git/evil"
git config core.fsmonitor "$PWD/.git/evil/hook"
echo '* filter=evil' > .gitattributes
touch .git/index.lock
"#;
    env.ok(&["exec", "--agent", "big", "--", "sh", "-c", plant]);

    let pid = env.daemon_pid().expect("a daemon");
    // Start the peak afresh (VmHWM := VmRSS) and measure the rise from here.
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").unwrap();
    let (_, idle) = memory(pid);
    let started = Instant::now();
    let out = env.run(&["--json", "run", "-w", "big", "-c", "keep what is there"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let took = started.elapsed();
    let (peak, _) = memory(pid);
    assert_eq!(env.daemon_pid(), Some(pid), "the same daemon collected it");
    let v: Value = serde_json::from_str(&text(&out.stdout)).unwrap();
    assert_eq!(v["task"]["state"], "completed", "{v:#}");
    let rise_mb = peak.saturating_sub(idle) / 1024;
    eprintln!("collected 300 MB in {took:?}; daemon RSS {} MB idle, peak {} MB", idle / 1024, peak / 1024);
    assert!(rise_mb < 64, "the daemon's memory rose by {rise_mb} MB while collecting 300 MB");

    let pid_s = v["proposal"].as_str().expect("a proposal").to_owned();
    let p = env.json(&["proposal", &pid_s]);
    let files: Vec<&str> = p["files"].as_array().unwrap().iter().map(|f| f["path"].as_str().unwrap()).collect();
    assert_eq!(files, [".gitattributes", "big.bin", "esc.txt"]);
    // Nothing planted ran, and the clone was left as it was.
    let ran = env.run(&["exec", "--agent", "big", "--", "test", "-e", "/tmp/ran"]);
    assert!(!ran.status.success(), "a planted filter, hook or fsmonitor ran");
    env.ok(&["exec", "--agent", "big", "--", "test", "-e", ".git/index.lock"]);

    // `diff` shows the escape sequences; none reaches the terminal.
    let diff = env.run(&["diff", &pid_s]);
    assert!(diff.status.success());
    assert!(!diff.stdout.iter().any(|b| *b == 0x1b || *b == 0x07), "an ESC or BEL was printed");
    assert!(text(&diff.stdout).contains("+title ␛]0;pwned␇␛[2J"), "{}", text(&diff.stdout));
    // `--raw` gives the bytes to a pipe, and refuses a terminal.
    let raw = env.run(&["diff", &pid_s, "--raw"]);
    assert!(raw.stdout.windows(3).any(|w| w == b"\x1b]0"), "--raw keeps the bytes");
    let exe = env!("CARGO_BIN_EXE_devaipod");
    let tty = Command::new("script")
        .args(["-qec", &format!("{exe} diff {pid_s} --raw"), "/dev/null"])
        .env("DEVAIPOD_INSTANCE", &env.instance)
        .env("DEVAIPOD_CONFIG", &env.config)
        .env("DEVAIPOD_DATA_DIR", env.dir.path().join("data"))
        .env("DEVAIPOD_RUNTIME_DIR", env.dir.path().join("run"))
        .env("DEVAIPOD_LISTEN", "127.0.0.1:0")
        .output()
        .unwrap();
    assert!(!tty.status.success());
    assert!(text(&tty.stdout).contains("stdout is a terminal: pipe it or redirect it"), "{}", text(&tty.stdout));
    assert!(!tty.stdout.contains(&0x1b), "nothing of the diff reached the terminal");

    // A daemon killed with -9 while it collects (the bundle is arriving): the next daemon
    // collects again, and the task ends with exactly one proposal.
    env.ok(&["exec", "--agent", "big", "--", "sh", "-c", "head -c 100000000 /dev/urandom > more.bin"]);
    let mut client = env
        .cmd(&["run", "-w", "big", "-c", "keep what is there"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let staging = env.dir.path().join("data/repos/big.git/devaipod-collect");
    let arriving = || {
        std::fs::read_dir(&staging)
            .map(|d| d.flatten().any(|f| f.metadata().is_ok_and(|m| m.len() > 0)))
            .unwrap_or(false)
    };
    let start = Instant::now();
    while !arriving() {
        assert!(start.elapsed() < Duration::from_secs(120), "the collection never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    env.kill_daemon("KILL");
    let _ = client.wait();
    let tasks = env.json(&["tasks", "-w", "big"]);
    let id = tasks[0]["id"].as_str().unwrap().to_owned();
    let t = wait_task(&env, &id, 120, |t| t["task"]["state"] != "running" && t["task"]["state"] != "queued");
    assert_eq!(t["task"]["state"], "completed", "{t:#}");
    assert_ne!(env.daemon_pid(), Some(pid));
    let props: Vec<Value> = env.json(&["proposals", "-w", "big"])["proposals"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["task_id"] == id.as_str())
        .cloned()
        .collect();
    assert_eq!(props.len(), 1, "{props:#?}");
    let files = env.json(&["proposal", props[0]["id"].as_str().unwrap()])["files"].clone();
    assert!(files.as_array().unwrap().iter().any(|f| f["path"] == "more.bin"), "{files:#}");
}
