//! Benchmark of workspace operations against a floor measured in the same run: the podman
//! CLI doing the same work. Prints p50, p90 and max over [`RUNS`] runs of each, the ratio
//! of the p50s, and the tail (p90 and max over our own p50); it asserts nothing.
//! - `up`: nothing → both containers running and the agent's API answering;
//! - `delete` of a workspace that ran work (API execs in its agent container, as a task's
//!   proposal makes): until the command returns, and until podman's objects are all gone
//!   (they are removed in the background);
//! - `list` with 1 and 20 workspaces.
//!
//! Run: `cargo bench --bench pods` (needs podman, see scripts/setup.sh).

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

#[path = "common.rs"]
mod common;

use common::{Env, Stats, header, leftovers, podman, podman_floor_delete, podman_floor_up, removals_done, row};

const RUNS: usize = 20;

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo bench -- --list` probes harness=false targets
    }
    let env = Env::new("bench");
    let repo = fixture(env.dir.path());
    let repo = repo.to_str().expect("a UTF-8 path");
    let data = env.dir.path().join("data");
    let timed_dp = |args: &[&str]| -> Duration {
        let t = Instant::now();
        env.ok(args);
        t.elapsed()
    };
    let opencode = devaipod::core::opencode_dir();

    println!("devaipod benchmark ({RUNS} runs each; floor: the podman CLI doing the same work, same run)\n");
    let (mut floor_up, mut up, mut floor_delete, mut delete, mut gone) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut names = Vec::new();
    for i in 0..RUNS {
        let n = format!("bf{i}");
        floor_up.push(timed(|| podman_floor_up(&n, &env.instance, &opencode)));
        let pod = format!("devaipod-{n}");
        for _ in 0..3 {
            podman(&["exec", &format!("{pod}-agent"), "git", "--version"]);
        }
        floor_delete.push(timed(|| {
            podman_floor_delete(&n);
            String::new()
        }));

        let name = format!("bu{i}");
        up.push(timed_dp(&["up", repo, "--name", &name]));
        // Work in the agent's container through the API, as a task's proposal does.
        for _ in 0..3 {
            env.ok(&["exec", &name, "--agent", "--", "git", "status", "--short"]);
        }
        let d = timed_dp(&["delete", &name]);
        delete.push(d);
        gone.push(d + removals_done(&data, Duration::from_secs(120)));
        names.push(name);
    }
    header();
    let (fu, u) = (Stats::of(&floor_up), Stats::of(&up));
    row("up (nothing → agent's API answering)", &u, Some(&fu), "p90 ≤ 1.2× p50, max ≤ 2× p50");
    let fd = Stats::of(&floor_delete);
    row("delete after work, until it returns", &Stats::of(&delete), Some(&fd), "p90 ≤ 1 s");
    row("delete after work, until podman's objects are gone", &Stats::of(&gone), Some(&fd), "report");
    println!("\nup, each run in order (ms): {}", in_order(&up));

    // list: 1 and 20 workspaces, against `podman pod ps --format json` with the same filter.
    let filter = format!("label=io.devaipod.instance={}", env.instance);
    for count in [1usize, 20] {
        let have = existing(&env.instance);
        for i in have..count {
            let name = format!("bl{i}");
            env.ok(&["up", repo, "--name", &name]);
            names.push(name);
        }
        let f: Vec<Duration> =
            (0..RUNS).map(|_| timed(|| podman(&["pod", "ps", "--filter", &filter, "--format", "json"]))).collect();
        let o: Vec<Duration> = (0..RUNS).map(|_| timed_dp(&["list", "--json"])).collect();
        row(&format!("list with {count} workspace(s)"), &Stats::of(&o), Some(&Stats::of(&f)), "p50 ≤ 2× floor");
    }
    for i in 0..20 {
        env.ok(&["delete", &format!("bl{i}")]);
    }
    removals_done(&data, Duration::from_secs(300));
    let left = leftovers(&env.instance, &names);
    println!("\nleft behind after the last delete: {left:?}");
    if let Ok(pid) = std::fs::read_to_string(env.dir.path().join("run/daemon.pid")) {
        let _ = Command::new("kill").arg(pid.trim()).status();
    }
}

/// The timings in milliseconds, in the order they were taken.
fn in_order(v: &[Duration]) -> String {
    v.iter().map(|d| format!("{:.0}", common::ms(*d))).collect::<Vec<_>>().join(" ")
}

fn timed(f: impl FnOnce() -> String) -> Duration {
    let t = Instant::now();
    f();
    t.elapsed()
}

fn existing(instance: &str) -> usize {
    podman(&["pod", "ps", "-q", "--filter", &format!("label=io.devaipod.instance={instance}")]).lines().count()
}

fn fixture(dir: &Path) -> std::path::PathBuf {
    let repo = dir.join("r");
    std::fs::create_dir_all(repo.join("src")).unwrap();
    for i in 0..50 {
        std::fs::write(repo.join(format!("src/file{i}.txt")), format!("line {i}\n").repeat(100)).unwrap();
    }
    let git = |args: &[&str]| {
        Command::new("git")
            .args(["-c", "user.name=b", "-c", "user.email=b@b.invalid"])
            .args(args)
            .current_dir(&repo)
            .output()
            .unwrap()
    };
    git(&["init", "-q"]);
    git(&["add", "-A"]);
    git(&["commit", "-qm", "fixture"]);
    repo
}
