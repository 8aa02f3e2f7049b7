//! Workers end to end: a real owner agent (opencode, scripted LLM) delegates to two worker
//! agents in containers of their own, accepts one's work and rejects the other's with
//! feedback; the human gets one proposal. The walls hold for workers: loopback only, their
//! own sockets, gator read-only (no push), no orchestration tools. And the limits: a
//! worker past its deadline fails with the reason, bad requests are clear tool errors, and
//! cancelling the owner cancels its workers.

mod common;

use std::io::{BufRead, Write};
use std::process::{Command, Stdio};

use common::*;
use serde_json::{Value, json};

/// The first task id in a tool's answer (the task a delegate_task made, the follow-up a
/// reject made).
const TASK_ID: &str = "(t-[0-9a-f]{10})";

/// `devaipod gator-bridge` inside `container`: MCP `initialize`, then `requests`, one
/// answer line each.
fn gator_session(container: &str, requests: &[Value]) -> Vec<Value> {
    let mut child = Command::new("podman")
        .args(["exec", "-i", container, "timeout", "30", "/opt/devaipod/gator/devaipod", "gator-bridge"])
        .arg("/run/devaipod/gator/gator.sock")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let init = json!({ "jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": { "name": "workers-test", "version": "0" } } });
    writeln!(stdin, "{init}").unwrap();
    let _ = lines.next();
    writeln!(stdin, "{}", json!({ "jsonrpc": "2.0", "method": "notifications/initialized" })).unwrap();
    let mut answers = Vec::new();
    for r in requests {
        writeln!(stdin, "{r}").unwrap();
        let line = lines.next().expect("an answer").unwrap();
        answers.push(serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}")));
    }
    drop(stdin);
    let _ = child.kill();
    let _ = child.wait();
    answers
}

#[test]
fn an_owner_delegates_accepts_one_worker_and_rejects_the_other_with_feedback() {
    if !podman_available() {
        return;
    }
    let folder = "/workspaces/wk-main";
    let llm = ScriptedLlm::start(&json!({ "rules": [
        { "match": "split the greeting work", "capture": TASK_ID, "steps": [
            { "tool": "gator_delegate_task", "args": { "prompt": "part A: write a.txt" } },
            { "tool": "gator_delegate_task", "args": { "prompt": "part B: write b.txt" } },
            { "tool": "gator_get_worker_task", "args": { "id": "{{0}}", "wait_seconds": 45 } },
            { "tool": "gator_get_worker_task", "args": { "id": "{{1}}", "wait_seconds": 45 } },
            { "tool": "gator_accept_worker_proposal", "args": { "id": "{{0}}" } },
            { "tool": "gator_reject_worker_proposal", "args": { "id": "{{1}}", "feedback": "part B feedback: b.txt is not wanted" } },
            { "tool": "gator_get_worker_task", "args": { "id": "{{5}}", "wait_seconds": 45 } },
            { "tool": "gator_accept_worker_proposal", "args": { "id": "{{0}}" } },
            { "tool": "bash", "args": { "command": "git merge -q --ff-only worker/{{0}}", "description": "merge part A" } },
            { "tool": "write", "args": { "filePath": format!("{folder}/owner.txt"), "content": "owner\n" } },
            { "text": "Merged part A and wrote owner.txt" }
        ]},
        { "match": "part A: write a.txt", "steps": [
            { "tool": "write", "args": { "filePath": format!("{folder}/a.txt"), "content": "a from worker\n" } },
            { "text": "wrote a.txt" }
        ]},
        { "match": "part B: write b.txt", "steps": [
            { "tool": "write", "args": { "filePath": format!("{folder}/b.txt"), "content": "b from worker\n" } },
            { "text": "wrote b.txt" }
        ]},
        { "match": "part B feedback", "steps": [ { "text": "understood: dropping b.txt" } ] }
    ]}));
    let env = TestEnv::new(&llm.agent_config());
    let repo = fixture_repo(env.dir.path(), "wk-main", &[("src/main.txt", "main\n")]);
    env.ok(&["up", repo.to_str().unwrap(), "--name", "wk-main", "--image", "localhost/devaipod-base:latest"]);

    let started = std::time::Instant::now();
    let out = env.run(&["--json", "run", "-w", "wk-main", "--workers", "2", "-c", "split the greeting work"]);
    assert!(out.status.success(), "run failed:\n{}\n{}", text(&out.stderr), text(&out.stdout));
    eprintln!("owner + 2 workers took {:?}", started.elapsed());
    let done: Value = serde_json::from_str(&text(&out.stdout)).unwrap();
    assert_eq!(done["task"]["state"], "completed", "{done:#}");
    let owner = done["task"]["id"].as_str().unwrap().to_owned();

    // One proposal for the human: the owner's, with the accepted worker's change and its own,
    // not the rejected worker's.
    let pid = done["proposal"].as_str().expect("the owner's proposal").to_owned();
    let proposal = env.json(&["proposal", &pid]);
    let files: Vec<&str> = proposal["files"].as_array().unwrap().iter().filter_map(|f| f["path"].as_str()).collect();
    assert_eq!(files, ["a.txt", "owner.txt"], "{proposal:#}");
    let listed = env.json(&["proposals", "--workspace", "wk-main"]);
    let ids: Vec<&str> = listed["proposals"].as_array().unwrap().iter().filter_map(|p| p["id"].as_str()).collect();
    assert_eq!(ids, [pid.as_str()], "workers' proposals are not the human's: {listed:#}");

    // The tree: A accepted, B rejected, B's feedback a follow-up task of the same worker.
    let detail = env.json(&["task", &owner]);
    let workers = detail["workers"].as_array().unwrap_or_else(|| panic!("{detail:#}"));
    assert_eq!(workers.len(), 3, "{detail:#}");
    let (a, b, fb) = (&workers[0], &workers[1], &workers[2]);
    assert_eq!(
        (a["worker"].as_u64(), a["state"].as_str(), a["proposal_state"].as_str()),
        (Some(1), Some("completed"), Some("applied")),
        "{a:#}"
    );
    assert_eq!(
        (b["worker"].as_u64(), b["state"].as_str(), b["proposal_state"].as_str()),
        (Some(2), Some("completed"), Some("rejected")),
        "{b:#}"
    );
    assert_eq!((&fb["worker"], &fb["follows_proposal"]), (&json!(2), &b["proposal"]), "{fb:#}");
    assert_eq!(fb["summary"], "understood: dropping b.txt");
    assert!(
        env.json(&["tasks"]).as_array().unwrap().iter().all(|t| t["id"] == owner.as_str()),
        "workers' tasks are listed under their owner"
    );
    // A worker's proposal is not for the human to approve.
    let refused = env.fails(&["approve", a["proposal"].as_str().unwrap(), "--apply"]);
    assert!(refused.contains("is a worker's"), "{refused}");

    // What the owner's tools answered: accepting twice is refused; the rejected worker got
    // the feedback in its own session.
    let reqs = llm.requests();
    let answers: Vec<&str> = reqs.iter().filter_map(|r| r["last_tool"].as_str()).collect();
    assert!(answers.iter().any(|t| t.contains("was decided already")), "a second accept is refused: {answers:#?}");
    let got_feedback = reqs.iter().any(|r| r["last_user"].as_str().is_some_and(|u| u.contains("part B feedback")));
    assert!(got_feedback, "the feedback reached worker B");
    // Workers were not offered the orchestration tools, nor push; the owner was.
    let offered = |prompt: &str| -> Vec<String> {
        let r = reqs.iter().find(|r| r["tools"] == true && r["last_user"].as_str().is_some_and(|u| u.contains(prompt)));
        r.unwrap_or_else(|| panic!("a turn for {prompt}"))["tool_names"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|n| n.as_str().map(str::to_owned))
            .collect()
    };
    assert!(offered("split the greeting work").contains(&"gator_delegate_task".to_owned()));
    let worker_tools = offered("part A: write a.txt");
    assert!(
        !worker_tools.iter().any(|t| t.contains("delegate") || t.contains("worker") || t.contains("push")),
        "{worker_tools:?}"
    );

    // The web page's tasks table shows the owner's worker tasks under it.
    let url = format!("http://{}/workspaces/wk-main?fragment=tasks", env.daemon_addr());
    let auth = format!("Authorization: Bearer {}", env.token());
    let page = Command::new("curl").args(["-fsS", "--max-time", "10", "-H", &auth, &url]).output().unwrap();
    let page = text(&page.stdout);
    for shown in ["└ worker 1", "└ worker 2", "accepted", "rejected", a["proposal"].as_str().unwrap()] {
        assert!(page.contains(shown), "{shown} in the tasks table: {page}");
    }

    // The owner's events tell the story live.
    let events: Vec<&str> = detail["events"].as_array().unwrap().iter().filter_map(|e| e["message"].as_str()).collect();
    assert!(events.iter().any(|m| m.starts_with("delegated ") && m.contains("to worker 1")), "{events:#?}");
    assert!(events.iter().any(|m| m.starts_with("worker 2 ended") && m.contains("completed")), "{events:#?}");

    // The walls hold for a worker: loopback only, its own sockets, the agent's confinement.
    let w1 = "devaipod-wk-main-worker-1";
    let interfaces = podman(&["exec", w1, "cat", "/proc/net/dev"]);
    let names: Vec<&str> = interfaces.lines().skip(2).filter_map(|l| l.split(':').next()).map(str::trim).collect();
    assert_eq!(names, ["lo"], "{interfaces}");
    let status = podman(&["exec", w1, "cat", "/proc/1/status"]);
    assert!(status.lines().any(|l| l.split_whitespace().eq(["CapEff:", "0000000000000400"])), "{status}");
    let mounts = podman(&["exec", w1, "cat", "/proc/self/mountinfo"]);
    assert!(mounts.contains("/agent/wk-main.w1 ") && mounts.contains("/gator/wk-main.w1 "), "{mounts}");
    assert!(
        !mounts.contains("/agent/wk-main ") && !mounts.contains("/gator/wk-main "),
        "none of the owner's: {mounts}"
    );
    assert!(!podman(&["exec", w1, "ls", "/run/devaipod/agent"]).contains("wk-main"));

    // Gator answers a worker as that worker: read tools only, no push, audited.
    let answers = gator_session(
        w1,
        &[
            json!({ "jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {} }),
            json!({ "jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": { "name": "git_push_branch", "arguments": {} } }),
            json!({ "jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": { "name": "github_create_draft_pr", "arguments": { "title": "x" } } }),
            json!({ "jsonrpc": "2.0", "id": 4, "method": "tools/call", "params": { "name": "delegate_task", "arguments": { "prompt": "x" } } }),
        ],
    );
    let listed: Vec<&str> =
        answers[0]["result"]["tools"].as_array().unwrap().iter().filter_map(|t| t["name"].as_str()).collect();
    assert!(
        !listed
            .iter()
            .any(|t| t.contains("push") || t.contains("pr") || t.contains("worker") || t.contains("delegate")),
        "{listed:?}"
    );
    for (answer, says) in
        [(&answers[1], "does not push"), (&answers[2], "does not push"), (&answers[3], "workers do not delegate")]
    {
        assert_eq!(answer["result"]["isError"], true, "{answer:#}");
        assert!(answer.to_string().contains(says), "{answer:#}");
    }
    let log = env.json(&["gator", "log", "wk-main"]);
    let denied = log.as_array().unwrap().iter().filter(|e| e["decision"] == "deny");
    let denied: Vec<String> = denied.map(|e| format!("{} {}", e["tool"], e["target"])).collect();
    assert!(denied.iter().any(|d| d.contains("git_push_branch") && d.contains("worker 1:")), "{denied:#?}");
    assert!(denied.iter().any(|d| d.contains("github_create_draft_pr") && d.contains("worker 1:")), "{denied:#?}");
    let allowed =
        log.as_array().unwrap().iter().filter(|e| e["decision"] == "allow" && e["tool"] == "delegate_task").count();
    assert_eq!(allowed, 2, "{log:#}");

    env.ok(&["delete", "wk-main"]);
    assert_eq!(env.leftovers(), Vec::<String>::new());
}

/// Every state event of a task, in order (`state:<state>` keys).
fn states(env: &TestEnv, id: &str) -> Vec<String> {
    let t = env.json(&["task", id]);
    t["events"].as_array().unwrap().iter().filter(|e| e["kind"] == "state").map(|e| e["message"].to_string()).collect()
}

/// Polls `task <id>` until `done` holds (at most `secs`).
fn wait_for(env: &TestEnv, id: &str, secs: u64, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    loop {
        let t = env.json(&["task", id]);
        if done(&t) {
            return t;
        }
        assert!(std::time::Instant::now() < deadline, "task {id} did not get there in {secs} s: {t:#}");
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

/// The owner task `devaipod run --workers` started, running in the background.
fn start_owner(env: &TestEnv, prompt: &str) -> (std::process::Child, String) {
    let child = env
        .cmd(&["run", "-w", "wk-lim", "--workers", "1", "-c", prompt])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut child = child;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let tasks = env.json(&["tasks"]);
        if let Some(t) = tasks.as_array().unwrap().iter().find(|t| t["prompt"] == prompt) {
            return (child, t["id"].as_str().unwrap().to_owned());
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the owner task `{prompt}` did not start");
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

#[test]
fn workers_have_deadlines_clear_refusals_end_with_their_owner_and_survive_a_daemon_kill() {
    if !podman_available() {
        return;
    }
    let llm = ScriptedLlm::start(&json!({ "rules": [
        { "match": "check the limits", "capture": TASK_ID, "steps": [
            { "tool": "gator_get_worker_task", "args": { "id": "t-0000000000" } },
            { "tool": "gator_delegate_task", "args": { "prompt": "x", "worker": 5 } },
            { "tool": "gator_delegate_task", "args": { "prompt": "slow part: take your time" } },
            { "tool": "gator_delegate_task", "args": { "prompt": "one more part" } },
            { "tool": "gator_get_worker_task", "args": { "id": "{{2}}", "wait_seconds": 40 } },
            { "text": "limits seen" }
        ]},
        { "match": "slow part", "delay": 25, "steps": [ { "text": "too late" } ] },
        { "match": "alone, no workers", "steps": [
            { "tool": "gator_delegate_task", "args": { "prompt": "x" } },
            { "text": "alone" }
        ]},
        { "match": "cascade owner", "capture": TASK_ID, "steps": [
            { "tool": "gator_delegate_task", "args": { "prompt": "endless part" } },
            { "tool": "gator_get_worker_task", "args": { "id": "{{0}}", "wait_seconds": 45 } },
            { "text": "never" }
        ]},
        { "match": "endless part", "delay": 30, "steps": [ { "text": "never" } ] },
        { "match": "survive a kill", "capture": TASK_ID, "steps": [
            { "tool": "gator_delegate_task", "args": { "prompt": "resumable part: write r.txt" } },
            { "tool": "gator_get_worker_task", "args": { "id": "{{0}}", "wait_seconds": 45 } },
            { "tool": "gator_get_worker_task", "args": { "id": "{{0}}", "wait_seconds": 45 } },
            { "text": "survived" }
        ]},
        { "match": "resumable part", "delay": 1, "steps": [
            { "tool": "write", "args": { "filePath": "/workspaces/wk-lim/r.txt", "content": "r\n" } },
            { "text": "wrote r.txt" }
        ]}
    ]}));
    // Workers idle for a second are stopped (and started again when given a task).
    let config = format!("{}\n[orchestration]\nworker-timeout-secs = 12\nworker-idle-secs = 1\n", llm.agent_config());
    let env = TestEnv::new(&config);
    let repo = fixture_repo(env.dir.path(), "wk-lim", &[("src/main.txt", "main\n")]);
    env.ok(&["up", repo.to_str().unwrap(), "--name", "wk-lim", "--image", "localhost/devaipod-base:latest"]);

    // More workers than the configuration allows: refused before anything starts.
    let too_many = env.fails(&["run", "-w", "wk-lim", "--workers", "9", "-c", "x"]);
    assert!(too_many.contains("workers: 9 is more than [orchestration] max-workers (2): use 0 to 2"), "{too_many}");

    // Bad requests are tool errors that say what to do; a worker past its deadline fails
    // with the setting that bounds it.
    let out = env.run(&["--json", "run", "-w", "wk-lim", "--workers", "1", "-c", "check the limits"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let done: Value = serde_json::from_str(&text(&out.stdout)).unwrap();
    let answers: Vec<String> =
        llm.requests().iter().filter_map(|r| r["last_tool"].as_str().map(str::to_owned)).collect();
    for says in [
        "there is no worker task `t-0000000000` of your task",
        "worker 5 does not exist: your task has workers 1 to 1",
        "all 1 workers of your task are busy",
        "deadline of 12 s ([orchestration] worker-timeout-secs",
    ] {
        assert!(answers.iter().any(|a| a.contains(says)), "{says}: {answers:#?}");
    }
    let owner = done["task"]["id"].as_str().unwrap();
    let slow = &env.json(&["task", owner])["workers"][0];
    assert_eq!(slow["state"], "failed", "{slow:#}");

    // A task run without workers cannot delegate.
    env.ok(&["run", "-w", "wk-lim", "-c", "alone, no workers"]);
    let answers: Vec<String> =
        llm.requests().iter().filter_map(|r| r["last_tool"].as_str().map(str::to_owned)).collect();
    assert!(answers.iter().any(|a| a.contains("was started without workers")), "{answers:#?}");

    // Cancelling the owner cancels its running worker.
    let (mut child, owner) = start_owner(&env, "cascade owner");
    let t = wait_for(&env, &owner, 60, |t| t["workers"][0]["state"] == "running");
    let worker = t["workers"][0]["id"].as_str().unwrap().to_owned();
    env.ok(&["cancel", &owner]);
    let _ = child.wait();
    wait_for(&env, &worker, 20, |t| t["task"]["state"] == "cancelled");

    // The daemon killed while a worker works: owner and worker resume, each ends once, the
    // worker's prompt was delivered once and its work reached its proposal.
    let (mut child, owner) = start_owner(&env, "survive a kill");
    let t = wait_for(&env, &owner, 60, |t| t["workers"][0]["state"] == "running");
    let worker = t["workers"][0]["id"].as_str().unwrap().to_owned();
    env.kill_daemon("KILL");
    let _ = child.wait();
    let w = wait_for(&env, &worker, 60, |t| t["task"]["state"] == "completed");
    assert!(w["proposal"].is_string(), "{w:#}");
    wait_for(&env, &owner, 60, |t| t["task"]["state"] == "completed");
    for id in [&owner, &worker] {
        let ended: Vec<String> = states(&env, id).into_iter().filter(|s| s.contains("completed")).collect();
        assert_eq!(ended.len(), 1, "{id} ends once: {:?}", states(&env, id));
    }
    // (A request cut when the daemon, whose proxy carries it, was killed is asked again: the
    // conversation still holds the prompt once.)
    let resumable: Vec<Value> = llm
        .requests()
        .into_iter()
        .filter(|r| r["tools"] == true && r["last_user"].as_str().is_some_and(|u| u.contains("resumable part")))
        .collect();
    assert!(!resumable.is_empty());
    assert!(resumable.iter().all(|r| r["user_messages"] == 1), "the worker's prompt went once: {resumable:#?}");

    // An idle worker's container is stopped.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(40);
    while podman(&["inspect", "devaipod-wk-lim-worker-1", "--format", "{{.State.Status}}"]).trim() == "running" {
        assert!(std::time::Instant::now() < deadline, "the idle worker was not stopped");
        std::thread::sleep(std::time::Duration::from_millis(500));
    }

    env.ok(&["delete", "wk-lim"]);
    assert_eq!(env.leftovers(), Vec::<String>::new());
}
