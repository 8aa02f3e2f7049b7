//! Benchmark of fan-out: the same scripted task given to N = 1, 2 and 4 candidates (each
//! does 3 s of work in its sandbox, `sleep 3`; the model answers at once). The floor is
//! N = 1, measured in the same run: a set of N costs its wall time ÷ the floor's (target
//! ≤ 1.5× at N = 4 on this 2-core machine). Every set starts cold (a chosen or rejected set
//! removes its candidates' containers), as a user's next set does. Also the start latency of
//! each candidate (from the command to the candidate's first request to the model: its
//! container made, its agent up, its clone seeded, its prompt delivered) and the memory of a
//! candidate container while it works.
//!
//! Run: `cargo bench --bench fanout` (needs podman and opencode, see scripts/setup.sh).

use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

#[path = "common.rs"]
mod common;

use common::{Env, Stats, header, leftovers, memory_mib, removals_done, row, scripted_llm};

const RUNS: usize = 2;
const FOLDER: &str = "/workspaces/bf";
const MODELS: [&str; 4] = ["m1", "m2", "m3", "m4"];

fn epoch() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs_f64()
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let env = Env::new("bench-fanout");
    let step = json!({ "tool": "bash", "args": {
        "command": format!("sleep 3 && date +%s%N > {FOLDER}/out-$(cat /proc/sys/kernel/random/uuid).txt"),
        "description": "the work" } });
    let script = json!({ "rules": [ { "match": "fan this out", "steps": [ step, { "text": "done" } ] } ] });
    let log = env.dir.path().join("llm.jsonl");
    let (mut llm, port) = scripted_llm(&env, &script, Some(&log));
    env.write_config(&format!(
        "[agent]\nbase-url = \"http://host.containers.internal:{port}/v1\"\nmodel = \"scripted\"\nmodels = {MODELS:?}\n[fanout]\nmax-parallel = 4\n"
    ));
    let repo = env.repo_named("bf");
    println!("devaipod fan-out benchmark ({RUNS} runs each; each candidate does 3 s of work)\n");
    env.ok(&["up", repo.to_str().unwrap(), "--name", "bf"]);

    // Memory of candidate containers while they work, sampled in the background.
    let peak: Arc<Mutex<Vec<f64>>> = Arc::default();
    let sampling = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = {
        let (peak, sampling) = (peak.clone(), sampling.clone());
        std::thread::spawn(move || {
            while Arc::strong_count(&sampling) > 1 {
                if sampling.load(std::sync::atomic::Ordering::Relaxed) {
                    // One candidate, every 2 s: `podman stats` itself costs CPU this
                    // machine's two cores would otherwise give the candidates.
                    let mib = memory_mib("devaipod-bf-candidate-1");
                    if mib > 0.0 {
                        peak.lock().unwrap().push(mib);
                    }
                }
                std::thread::sleep(Duration::from_secs(2));
            }
        })
    };

    let mut first_seen: Vec<(usize, Vec<Duration>)> = Vec::new();
    let mut run = |n: usize, sample: bool| -> Duration {
        let models: Vec<&str> = MODELS[..n].to_vec();
        let mut args = vec!["--json", "run", "-w", "bf", "--agents"];
        let count = n.to_string();
        args.push(&count);
        for m in &models {
            args.extend(["--model", m]);
        }
        args.extend(["-c", "fan this out"]);
        sampling.store(sample, std::sync::atomic::Ordering::Relaxed);
        let (t0, start) = (epoch(), Instant::now());
        let out = env.ok(&args);
        let took = start.elapsed();
        sampling.store(false, std::sync::atomic::Ordering::Relaxed);
        let set: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(set["state"], "complete", "{set:#}");
        for c in set["candidates"].as_array().unwrap() {
            assert_eq!((c["state"].as_str(), c["files"].as_u64()), (Some("completed"), Some(1)), "{c:#}");
        }
        // Each candidate's first request to the model, after this run's start.
        let requests: Vec<Value> =
            std::fs::read_to_string(&log).unwrap().lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
        let mut starts: Vec<Duration> = models
            .iter()
            .filter_map(|m| {
                requests
                    .iter()
                    .filter(|r| r["tools"] == true && r["model"] == *m && r["t"].as_f64().is_some_and(|t| t > t0))
                    .filter_map(|r| r["t"].as_f64())
                    .reduce(f64::min)
            })
            .map(|t| Duration::from_secs_f64(t - t0))
            .collect();
        starts.sort();
        first_seen.push((n, starts));
        // Close the set: its candidates' containers go (the next set starts cold).
        env.ok(&["reject", set["id"].as_str().unwrap()]);
        took
    };
    let mut by_n: Vec<(usize, Vec<Duration>)> = vec![(1, Vec::new()), (2, Vec::new()), (4, Vec::new())];
    for _ in 0..RUNS {
        for (n, times) in by_n.iter_mut() {
            times.push(run(*n, *n == 4));
        }
    }
    drop(sampling);
    let _ = sampler.join();

    header();
    let floor = Stats::of(&by_n[0].1);
    for (n, times) in &by_n[1..] {
        let target = if *n == 4 { "≤ 1.5×" } else { "" };
        row(&format!("set of {n} candidates (wall)"), &Stats::of(times), Some(&floor), target);
    }
    row("set of 1 candidate (the floor)", &floor, None, "");
    for n in [1, 2, 4] {
        for k in 0..n {
            let starts: Vec<Duration> =
                first_seen.iter().filter(|(m, _)| *m == n).filter_map(|(_, s)| s.get(k).copied()).collect();
            if !starts.is_empty() && (k == 0 || k == n - 1) {
                row(&format!("N={n}: candidate #{} asks its model", k + 1), &Stats::of(&starts), None, "");
            }
        }
    }
    let samples = peak.lock().unwrap().clone();
    if let Some(max) = samples.iter().copied().reduce(f64::max) {
        let mean = samples.iter().sum::<f64>() / samples.len() as f64;
        println!(
            "memory of a working candidate container: mean {mean:.0} MiB, max {max:.0} MiB ({} samples); the workspace's agent: {:.0} MiB",
            samples.len(),
            memory_mib("devaipod-bf-agent")
        );
    }

    env.ok(&["delete", "bf"]);
    removals_done(&env.dir.path().join("data"), Duration::from_secs(120));
    println!("left behind: {:?}", leftovers(&env.instance, &["bf".to_owned()]));
    let _ = Command::new("kill").arg(env.read("run/daemon.pid")).status();
    let _ = llm.kill();
}
