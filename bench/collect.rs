//! Benchmark of collecting a task's work (`core::proposals::bring_out`): the time and the
//! daemon's peak RSS to collect proposals of 1 MB, 100 MB and 1 GB of incompressible data,
//! against a floor measured in the same run: `podman exec <agent> cat <file>` of the same
//! bytes to /dev/null (moving them out of the container once, doing nothing else).
//! Our time is the collection's own ("collected in N ms" of the task's proposal event):
//! git in the sandbox (hash, compress, bundle), the stream to disk, the daemon's fetch with
//! `fetch.fsckObjects`, and the proposal's stats.
//!
//! Run: `cargo bench --bench collect` (needs podman and opencode, see scripts/setup.sh).
//! `DEVAIPOD_BENCH_COLLECT_MB=1,100` picks the sizes (default 1,100,1000).

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

#[path = "common.rs"]
mod common;

use common::{Env, Stats, header, removals_done, row, scripted_llm};

/// (VmHWM, VmRSS) of a process, in KiB.
fn memory(pid: &str) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    };
    (field("VmHWM:"), field("VmRSS:"))
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let sizes: Vec<u64> = std::env::var("DEVAIPOD_BENCH_COLLECT_MB")
        .unwrap_or_else(|_| "1,100,1000".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let env = Env::new("bench-collect");
    let script = json!({ "rules": [{ "match": "keep what is there", "steps": [{ "text": "kept" }] }] });
    let (mut llm, port) = scripted_llm(&env, &script, None);
    env.write_config(&format!(
        "[agent]\nbase-url = \"http://host.containers.internal:{port}/v1\"\nmodel = \"scripted\"\nmax-proposal-mb = 2048\n"
    ));
    let repo = env.repo();
    let mut daemon = env.serve();
    let pid = daemon.id().to_string();
    env.ok(&["up", repo.to_str().unwrap(), "--name", "c"]);
    let agent = "devaipod-c-agent";

    println!("\ncollecting a proposal (incompressible data; peak = the daemon's VmHWM during the collection)\n");
    header();
    let mut peaks = Vec::new();
    for mb in sizes {
        let runs = if mb >= 1000 { 1 } else { 3 };
        let (mut ours, mut floor, mut peak) = (Vec::new(), Vec::new(), 0u64);
        for _ in 0..runs {
            // Only this run's file is new (what the proposal carries beyond the source).
            let make = format!("rm -f big-*.bin && head -c {} /dev/urandom > big-{mb}.bin", mb * 1_000_000);
            env.ok(&["exec", "--agent", "c", "--", "sh", "-c", &make]);
            let t0 = Instant::now();
            let out = Command::new("podman")
                .args(["exec", "-w", "/workspaces/r", agent, "cat", &format!("big-{mb}.bin")])
                .stdout(Stdio::null())
                .status()
                .expect("podman");
            assert!(out.success());
            floor.push(t0.elapsed());

            let _ = std::fs::write(format!("/proc/{pid}/clear_refs"), "5");
            let (_, idle) = memory(&pid);
            let v: Value =
                serde_json::from_str(&env.ok(&["--json", "run", "-w", "c", "-c", "keep what is there"])).unwrap();
            let (hwm, _) = memory(&pid);
            peak = peak.max(hwm.saturating_sub(idle));
            assert_eq!(v["task"]["state"], "completed", "{v:#}");
            let id = v["task"]["id"].as_str().unwrap();
            let t: Value = serde_json::from_str(&env.ok(&["--json", "task", id])).unwrap();
            let msg = t["events"]
                .as_array()
                .unwrap()
                .iter()
                .find_map(|e| e["message"].as_str().filter(|m| m.starts_with("proposal ")))
                .expect("a proposal event")
                .to_owned();
            let collected_ms: u64 = msg
                .rsplit_once("collected in ")
                .and_then(|(_, r)| r.trim_end_matches(" ms)").parse().ok())
                .expect("the collection time");
            ours.push(Duration::from_millis(collected_ms));
        }
        row(&format!("collect {mb} MB"), &Stats::of(&ours), Some(&Stats::of(&floor)), "flat RSS");
        peaks.push((mb, peak));
    }
    println!();
    for (mb, peak) in peaks {
        println!("daemon peak RSS rise collecting {mb:>5} MB: {:>6.1} MB", peak as f64 / 1024.0);
    }
    let _ = env.cmd(&["delete", "c"]).output();
    removals_done(&env.dir.path().join("data"), Duration::from_secs(120));
    let _ = daemon.kill();
    let _ = daemon.wait();
    let _ = llm.kill();
    let _ = llm.wait();
}
