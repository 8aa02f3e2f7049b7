//! Benchmark of workers: an owner agent with 2 workers doing a two-part task in parallel,
//! against one agent doing both parts in turn (the floor, measured in the same run); each
//! part is 3 s of work in the sandbox (`sleep 3`), the model answers at once. Also how long
//! `delegate_task` takes (a worker started cold: container, agent, seed; and warm: seed
//! only) and each worker container's memory next to the owner's.
//!
//! (Each run writes new content: a task whose tree equals the last proposal's leaves none.)
//!
//! Run: `cargo bench --bench workers` (needs podman and opencode, see scripts/setup.sh).

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

#[path = "common.rs"]
mod common;

use common::{Env, Stats, header, leftovers, memory_mib, removals_done, row, scripted_llm};

const RUNS: usize = 3;
const FOLDER: &str = "/workspaces/bw";

fn part(name: &str) -> Value {
    json!({ "tool": "bash", "args": { "command": format!("sleep 3 && date +%s%N > {FOLDER}/{name}.txt"), "description": format!("part {name}") } })
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let env = Env::new("bench-workers");
    let script = json!({ "rules": [
        { "match": "both parts in turn", "steps": [ part("a"), part("b"), { "text": "did both" } ] },
        { "match": "both parts with workers", "capture": "(t-[0-9a-f]{10})", "steps": [
            { "tool": "gator_delegate_task", "args": { "prompt": "part a alone" } },
            { "tool": "gator_delegate_task", "args": { "prompt": "part b alone" } },
            { "tool": "gator_get_worker_task", "args": { "id": "{{0}}", "wait_seconds": 45 } },
            { "tool": "gator_get_worker_task", "args": { "id": "{{1}}", "wait_seconds": 45 } },
            { "tool": "gator_accept_worker_proposal", "args": { "id": "{{0}}" } },
            { "tool": "gator_accept_worker_proposal", "args": { "id": "{{1}}" } },
            { "tool": "bash", "args": { "command": format!("cd {FOLDER} && git -c user.name=o -c user.email=o@o.invalid merge -q --no-edit worker/{{{{0}}}} worker/{{{{1}}}}"), "description": "merge" } },
            { "text": "merged both" }
        ]},
        { "match": "part a alone", "steps": [ part("a"), { "text": "a" } ] },
        { "match": "part b alone", "steps": [ part("b"), { "text": "b" } ] }
    ]});
    let log = env.dir.path().join("llm.jsonl");
    let (mut llm, port) = scripted_llm(&env, &script, Some(&log));
    env.write_config(&format!(
        "[agent]\nbase-url = \"http://host.containers.internal:{port}/v1\"\nmodel = \"scripted\"\n"
    ));
    let repo = env.repo_named("bw");
    println!("devaipod workers benchmark ({RUNS} runs each; each part is 3 s of work)\n");
    env.ok(&["up", repo.to_str().unwrap(), "--name", "bw"]);
    let start_head = env.ok(&["exec", "bw", "--agent", "--", "git", "rev-parse", "HEAD"]).trim().to_owned();

    let run = |prompt: &str, workers: &str| {
        let start = Instant::now();
        let out = env.ok(&["--json", "run", "-w", "bw", "--workers", workers, "-c", prompt]);
        let took = start.elapsed();
        let done: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(done["task"]["state"], "completed", "{done:#}");
        let pid = done["proposal"].as_str().expect("a proposal").to_owned();
        let p: Value = serde_json::from_str(&env.ok(&["--json", "proposal", &pid])).unwrap();
        let files: Vec<&str> = p["files"].as_array().unwrap().iter().filter_map(|f| f["path"].as_str()).collect();
        assert_eq!(files, ["a.txt", "b.txt"], "{p:#}");
        env.ok(&["reject", &pid]);
        // The owner's clone as it started, for the next run.
        env.ok(&[
            "exec",
            "bw",
            "--agent",
            "--",
            "sh",
            "-c",
            &format!("git reset -q --hard {start_head} && git clean -qfd"),
        ]);
        took
    };
    let mut alone = Vec::new();
    let mut with_workers = Vec::new();
    for _ in 0..RUNS {
        alone.push(run("both parts in turn", "0"));
        with_workers.push(run("both parts with workers", "2"));
    }

    // How long each delegate_task took: from the owner's request that asked for it to the
    // next one (the model answers at once).
    let requests: Vec<Value> =
        std::fs::read_to_string(&log).unwrap().lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    let owner: Vec<&Value> = requests
        .iter()
        .filter(|r| {
            r["tools"] == true && r["last_user"].as_str().is_some_and(|u| u.contains("both parts with workers"))
        })
        .collect();
    let mut cold = Vec::new();
    let mut warm = Vec::new();
    for (i, w) in owner.windows(2).enumerate() {
        let (asked, answered) = (&w[0], &w[1]);
        if asked["tool_results"].as_u64().is_some_and(|n| n <= 1)
            && answered["tool_results"] == asked["tool_results"].as_u64().unwrap() + 1
        {
            let d = Duration::from_secs_f64(answered["t"].as_f64().unwrap() - asked["t"].as_f64().unwrap());
            // The first run's two delegations start the workers' containers.
            if i < 2 { cold.push(d) } else { warm.push(d) }
        }
    }

    header();
    let floor = Stats::of(&alone);
    row("two parts: owner + 2 workers (wall)", &Stats::of(&with_workers), Some(&floor), "< 1× (parallel)");
    row("two parts: one agent in turn (the floor)", &floor, None, "");
    if !cold.is_empty() {
        row("delegate_task, worker started cold", &Stats::of(&cold), None, "");
    }
    if !warm.is_empty() {
        row("delegate_task, worker running (seed only)", &Stats::of(&warm), None, "");
    }
    let owner_mib = memory_mib("devaipod-bw-agent");
    for n in [1, 2] {
        let c = format!("devaipod-bw-worker-{n}");
        println!("memory of {c}: {:.1} MiB (the owner's agent container: {owner_mib:.1} MiB)", memory_mib(&c));
    }

    env.ok(&["delete", "bw"]);
    removals_done(&env.dir.path().join("data"), Duration::from_secs(120));
    println!("left behind: {:?}", leftovers(&env.instance, &["bw".to_owned()]));
    // The daemon `up` started, and the model.
    let _ = Command::new("kill").arg(env.read("run/daemon.pid")).status();
    let _ = llm.kill();
    let _ = llm.wait();
}
