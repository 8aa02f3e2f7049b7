//! Benchmark of tasks and the daemon, each against a floor measured in the same run
//! (p50, p90 and max over [`RUNS`] runs):
//! - `run_task` until the agent accepted the prompt, over a direct call to the same opencode
//!   (POST /session + prompt_async);
//! - `delete` of a workspace that ran a task (until it returns, and until podman's objects
//!   are gone);
//! - the daemon's RSS idle and with 10 workspaces;
//! - proposal extraction for a change of 1,000 files.
//!
//! Run: `cargo bench --bench tasks` (needs podman and opencode, see scripts/setup.sh).

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::{Value, json};

#[path = "common.rs"]
mod common;

use common::{Env, Stats, header, leftovers, ms, removals_done, row, scripted_llm};

const RUNS: usize = 20;

fn rss_kb(pid: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

#[tokio::main]
async fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let env = Env::new("bench-tasks");
    let folder = "/workspaces/r";
    let script = json!({ "rules": [
        { "match": "bench ok", "steps": [{ "text": "ok" }] },
        { "match": "make many files", "steps": [
            { "tool": "bash", "args": { "command": format!("cd {folder} && for i in $(seq 1 1000); do echo line $i > f$i.txt; done"), "description": "write 1000 files" } },
            { "text": "done" }
        ]}
    ]});
    let (mut llm, port) = scripted_llm(&env, &script, Some(&env.dir.path().join("llm.jsonl")));
    env.write_config(&format!(
        "[agent]\nbase-url = \"http://host.containers.internal:{port}/v1\"\nmodel = \"scripted\"\n"
    ));
    let repo = env.repo();

    // The daemon, idle.
    let mut daemon = env.serve();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let pid = daemon.id().to_string();
    let idle_rss = rss_kb(&pid);
    let base = format!("http://{}", env.read("run/listen"));
    let token = env.read("data/token");
    let http = reqwest::Client::new();

    println!("devaipod task benchmark\n");
    env.ok(&["up", repo.to_str().unwrap(), "--name", "r"]);
    let ws: Value =
        http.get(format!("{base}/api/v1/workspaces/r")).bearer_auth(&token).send().await.unwrap().json().await.unwrap();
    assert_eq!(ws["name"], "r");
    // The agent's API is its socket (its relay serves it): the same way in as the daemon's.
    let socket = env.dir.path().join("run/agent/r/api.sock");
    let agent_http = reqwest::Client::builder().unix_socket(socket).build().unwrap();
    let agent = "http://agent".to_owned();
    let password: String = rusqlite::Connection::open(env.dir.path().join("data/state.db"))
        .unwrap()
        .query_row("SELECT agent_password FROM workspaces WHERE name = 'r'", [], |r| r.get(0))
        .unwrap();

    // run_task → "running" event, against POST /session + prompt_async directly.
    let (mut ours, mut floor) = (Vec::new(), Vec::new());
    for _ in 0..RUNS {
        let resp = http.get(format!("{base}/api/v1/events")).bearer_auth(&token).send().await.unwrap();
        let mut events = resp.bytes_stream();
        let t0 = Instant::now();
        let task: Value = http
            .post(format!("{base}/api/v1/tasks"))
            .bearer_auth(&token)
            .json(&json!({ "workspace": "r", "prompt": "bench ok" }))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let id = task["id"].as_str().unwrap().to_owned();
        let mut buf = String::new();
        let mut accepted = None;
        'events: while let Some(chunk) = events.next().await {
            buf.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
            while let Some(pos) = buf.find('\n') {
                let l: String = buf.drain(..=pos).collect();
                let Some(data) = l.trim().strip_prefix("data:") else { continue };
                let e: Value = serde_json::from_str(data.trim()).unwrap_or(Value::Null);
                if e["task_id"] != id.as_str() {
                    continue;
                }
                if e["state"] == "running" && accepted.is_none() {
                    accepted = Some(t0.elapsed());
                }
                if e["state"] == "completed" || e["state"] == "failed" {
                    break 'events;
                }
            }
        }
        ours.push(accepted.expect("the task ran"));

        let t0 = Instant::now();
        let s: Value = agent_http
            .post(format!("{agent}/session"))
            .basic_auth("opencode", Some(&password))
            .json(&json!({ "title": "direct" }))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let sid = s["id"].as_str().unwrap();
        let r = agent_http
            .post(format!("{agent}/session/{sid}/prompt_async"))
            .basic_auth("opencode", Some(&password))
            .json(&json!({ "parts": [{ "type": "text", "text": "bench ok" }] }))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success());
        floor.push(t0.elapsed());
        // Let that turn end before the next run.
        for _ in 0..200 {
            let st: Value = agent_http
                .get(format!("{agent}/session/status"))
                .basic_auth("opencode", Some(&password))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            if st.get(sid).is_none_or(|v| v["type"] == "idle") {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let (o, f) = (Stats::of(&ours), Stats::of(&floor));
    header();
    row("run_task → agent accepted the prompt", &o, Some(&f), "overhead ≤ 10 ms at p50");
    println!(
        "{:<46} overhead over the direct call: p50 {:.1} ms, p90 {:.1} ms\n",
        "",
        ms(o.p50.saturating_sub(f.p50)),
        ms(o.p90.saturating_sub(f.p90))
    );

    // The egress proxy's LLM route: a chat completion through the workspace's egress socket
    // (the daemon's proxy: policy, the key added, TLS-less here, streamed back) against the
    // same request straight to the scripted LLM.
    // The chat requests each task made (the log holds the tasks' requests so far).
    let logged = std::fs::read_to_string(env.dir.path().join("llm.jsonl")).unwrap_or_default().lines().count();
    let requests = logged as f64 / RUNS as f64;
    let egress =
        reqwest::Client::builder().unix_socket(env.dir.path().join("run/gator/r/egress.sock")).build().unwrap();
    let direct = reqwest::Client::new();
    let body = json!({ "model": "scripted", "stream": true, "messages": [{ "role": "user", "content": "bench ok" }] });
    let (mut proxied, mut straight) = (Vec::new(), Vec::new());
    for _ in 0..RUNS * 5 {
        for (client, url, into) in [
            (&egress, "http://127.0.0.1:3128/llm/chat/completions".to_owned(), &mut proxied),
            (&direct, format!("http://127.0.0.1:{port}/v1/chat/completions"), &mut straight),
        ] {
            let t0 = Instant::now();
            let resp = client.post(&url).json(&body).send().await.unwrap();
            assert!(resp.status().is_success(), "{url}: {}", resp.status());
            resp.bytes().await.unwrap();
            into.push(t0.elapsed());
        }
    }
    let (p, d) = (Stats::of(&proxied), Stats::of(&straight));
    row("LLM request through the egress proxy", &p, Some(&d), "report");
    println!(
        "{:<46} overhead per request: p50 {:.2} ms, p90 {:.2} ms; a task here makes {requests:.1} chat requests\n",
        "",
        ms(p.p50.saturating_sub(d.p50)),
        ms(p.p90.saturating_sub(d.p90)),
    );

    // Proposal extraction for 1,000 files.
    let out = env.ok(&["--json", "run", "-w", "r", "-c", "make many files"]);
    let v: Value = serde_json::from_str(&out).unwrap();
    let msg = v["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["kind"] == "proposal")
        .map(|e| e["message"].as_str().unwrap().to_owned())
        .unwrap_or_default();
    let collected = msg.rsplit("collected in ").next().unwrap_or("?").trim_end_matches(')');
    println!("{:<52} {:>10}   ({msg})", "proposal extraction, 1,000 files", collected);

    // delete of a workspace that ran a task (its commit and bundle ran as API execs in
    // the agent's container), one at a time.
    let data = env.dir.path().join("data");
    let (mut deletes, mut gone, mut names) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..RUNS {
        let name = format!("d{i}");
        env.ok(&["up", repo.to_str().unwrap(), "--name", &name]);
        env.ok(&["run", "-w", &name, "-c", "bench ok"]);
        let t0 = Instant::now();
        env.ok(&["delete", &name]);
        let d = t0.elapsed();
        deletes.push(d);
        gone.push(d + removals_done(&data, Duration::from_secs(120)));
        names.push(name);
    }
    header();
    row("delete after a task, until it returns", &Stats::of(&deletes), None, "p90 ≤ 1 s");
    row("delete after a task, until podman's objects are gone", &Stats::of(&gone), None, "report");
    println!("left behind: {:?}\n", leftovers(&env.instance, &names));

    // RSS with 10 workspaces.
    for i in 1..10 {
        env.ok(&["up", repo.to_str().unwrap(), "--name", &format!("r{i}")]);
    }
    let rss10 = rss_kb(&pid);
    println!(
        "{:<52} {:>7.1} MB   with 10 workspaces {:>6.1} MB   per workspace {:>5.2} MB   (targets ≤ 30 MB idle, ≤ 1 MB each)",
        "daemon RSS idle",
        idle_rss as f64 / 1024.0,
        rss10 as f64 / 1024.0,
        (rss10.saturating_sub(idle_rss)) as f64 / 1024.0 / 10.0
    );

    for name in ["r", "r1", "r2", "r3", "r4", "r5", "r6", "r7", "r8", "r9"] {
        let _ = env.cmd(&["delete", name]).output();
    }
    // The daemon removes deleted workspaces in the background: let it finish first.
    removals_done(&data, Duration::from_secs(300));
    let _ = daemon.kill();
    let _ = daemon.wait();
    let _ = llm.kill();
    let _ = llm.wait();
}
