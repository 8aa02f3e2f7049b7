//! Benchmark of the warm pool (`[pool]`): `up` → the agent answering, taken from the pool,
//! against a cold `up` of the same repository and the floor measured in the same run (the
//! podman CLI making the same pod cold). Prints p50, p90 and max over [`RUNS`] runs of
//! each and their ratios, then the idle cost of the pool (memory of a warm member). Between
//! pooled runs it waits for the pool to refill (not timed): a pooled `up` always finds a
//! warm member. Asserts nothing.
//!
//! Run: `cargo bench --bench pool` (needs podman, see scripts/setup.sh).

use std::process::Command;
use std::time::{Duration, Instant};

#[path = "common.rs"]
mod common;

use common::{Env, Stats, header, memory_mib, podman, podman_floor_delete, podman_floor_up, removals_done, row};

const RUNS: usize = 10;

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo bench -- --list` probes harness=false targets
    }
    let pooled_env = Env::new("bench-pool");
    pooled_env.write_config("[pool]\nsize = 2\n");
    let cold_env = Env::new("bench-cold");
    let repo = pooled_env.repo();
    let repo = repo.to_str().expect("a UTF-8 path");
    let opencode = devaipod::core::opencode_dir();
    let timed = |env: &Env, args: &[&str]| -> (Duration, String) {
        let t = Instant::now();
        let out = env.ok(args);
        (t.elapsed(), out)
    };
    println!("devaipod warm pool benchmark ({RUNS} runs each; floor: the podman CLI making the pod cold, same run)\n");
    let (mut floor, mut cold, mut pooled) = (Vec::new(), Vec::new(), Vec::new());
    let mut not_pooled = 0;
    for i in 0..RUNS {
        let n = format!("bpf{i}");
        let t = Instant::now();
        podman_floor_up(&n, &pooled_env.instance, &opencode);
        floor.push(t.elapsed());
        podman_floor_delete(&n);

        let name = format!("bc{i}");
        for env in [&cold_env, &pooled_env] {
            removals_done(&env.dir.path().join("data"), Duration::from_secs(120));
        }
        cold.push(timed(&cold_env, &["up", repo, "--name", &name]).0);
        cold_env.ok(&["delete", &name]);

        // Nothing else at work while it is timed: the pool full, no removal running.
        for env in [&cold_env, &pooled_env] {
            removals_done(&env.dir.path().join("data"), Duration::from_secs(120));
        }
        wait_warm(&pooled_env, 2);
        let name = format!("bp{i}");
        let (d, out) = timed(&pooled_env, &["--json", "up", repo, "--name", &name]);
        let v: serde_json::Value = serde_json::from_str(&out).expect("up --json");
        if v["from_pool"] != true {
            not_pooled += 1;
        }
        pooled.push(d);
        pooled_env.ok(&["delete", &name]);
    }
    header();
    let f = Stats::of(&floor);
    let c = Stats::of(&cold);
    row("up, cold (nothing → agent answering)", &c, Some(&f), "unchanged: ≤ 1.1× floor");
    row("up from the pool (→ agent answering)", &Stats::of(&pooled), Some(&f), "p50 ≤ 0.5 s");
    println!("\npooled p50 / cold p50: {:.2}", common::ms(Stats::of(&pooled).p50) / common::ms(c.p50));
    println!("pooled runs that went cold: {not_pooled} of {RUNS}");

    // The idle cost: a warm member's containers.
    wait_warm(&pooled_env, 2);
    let view: serde_json::Value = serde_json::from_str(&pooled_env.ok(&["--json", "pool"])).unwrap();
    for m in view["images"][0]["members"].as_array().unwrap() {
        let pod = m["pod"].as_str().unwrap();
        println!("idle member {pod}: agent {:.0} MiB", memory_mib(&format!("{pod}-agent")));
    }
    for env in [&pooled_env, &cold_env] {
        removals_done(&env.dir.path().join("data"), Duration::from_secs(120));
        if let Ok(pid) = std::fs::read_to_string(env.dir.path().join("run/daemon.pid")) {
            let _ = Command::new("kill").arg(pid.trim()).status();
        }
    }
    // The members go with the instance (the daemon keeps them across restarts).
    std::thread::sleep(Duration::from_secs(1));
    let filter = format!("label=io.devaipod.instance={}", pooled_env.instance);
    for pod in podman(&["pod", "ps", "--filter", &filter, "--format", "{{.Name}}"]).lines() {
        podman(&["pod", "rm", "-f", "-t", "0", pod]);
        podman(&["secret", "rm", &format!("{pod}-agent-password")]);
    }
    for v in podman(&["volume", "ls", "-q", "--filter", &filter]).lines() {
        podman(&["volume", "rm", "-f", v]);
    }
}

/// Waits (at most 3 min) until `n` members are warm and none is being started.
fn wait_warm(env: &Env, n: u64) {
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let v: serde_json::Value = serde_json::from_str(&env.ok(&["--json", "pool"])).unwrap();
        if v["images"][0]["warm"] == n && v["images"][0]["starting"] == 0 {
            return;
        }
        assert!(Instant::now() < deadline, "the pool did not refill: {v:#}");
        std::thread::sleep(Duration::from_millis(200));
    }
}
