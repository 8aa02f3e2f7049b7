//! Benchmark of devcontainer features: `up` of a repository with 3 local features, cold
//! (the derived image is built) and cached (it is reused), against an `up` of the same
//! repository without features, in the same run. Prints p50/p90/max, the ratio of the
//! cached `up` to the one without features (target ≤ 1.1×), and the features' build time
//! (cold − without). It asserts nothing.
//!
//! Run: `cargo bench --bench features` (needs podman, see scripts/setup.sh).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

#[path = "common.rs"]
mod common;

use common::{Env, Stats, header, podman, removals_done, row};

const RUNS: usize = 8;
const COLD_RUNS: usize = 3;

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let env = Env::new("benchfeat");
    let data = env.dir.path().join("data");
    let plain = repo(env.dir.path(), "plain", None);
    let timed_up = |repo: &Path, name: &str| -> Duration {
        let t = Instant::now();
        env.ok(&["up", repo.to_str().unwrap(), "--name", name]);
        let d = t.elapsed();
        env.ok(&["delete", name]);
        removals_done(&data, Duration::from_secs(120));
        d
    };
    println!("devaipod features benchmark ({RUNS} runs each, {COLD_RUNS} cold; 3 local features)\n");
    // Warm podman's and the daemon's caches once.
    timed_up(&plain, "fw");

    // Cold: each run another option value, so another derived image.
    let mut cold = Vec::new();
    for i in 0..COLD_RUNS {
        let r = repo(env.dir.path(), &format!("cold{i}"), Some(&format!("cold-{i}")));
        cold.push(timed_up(&r, &format!("fc{i}")));
    }
    let cached_repo = repo(env.dir.path(), "cached", Some("cached"));
    timed_up(&cached_repo, "fprime");
    let (mut without, mut cached) = (Vec::new(), Vec::new());
    for i in 0..RUNS {
        without.push(timed_up(&plain, &format!("fp{i}")));
        cached.push(timed_up(&cached_repo, &format!("fk{i}")));
    }
    header();
    let w = Stats::of(&without);
    row("up without features", &w, None, "baseline");
    row("up, 3 features, cached (image reused)", &Stats::of(&cached), Some(&w), "p50 ≤ 1.1× without");
    let c = Stats::of(&cold);
    row("up, 3 features, cold (image built)", &c, Some(&w), "report");
    println!("\nfeature build time (cold p50 − without p50): {:.0} ms", common::ms(c.p50.saturating_sub(w.p50)));
    let images = podman(&[
        "images",
        "--format",
        "{{.Repository}}:{{.Tag}}",
        "--filter",
        &format!("reference=localhost/devaipod-features-{}", env.instance),
    ]);
    for image in images.lines().filter(|l| !l.is_empty()) {
        podman(&["rmi", "-f", image]);
    }
    if let Ok(pid) = std::fs::read_to_string(env.dir.path().join("run/daemon.pid")) {
        let _ = Command::new("kill").arg(pid.trim()).status();
    }
}

/// A one-commit repository; with `marker`, three local features (one option each).
fn repo(dir: &Path, name: &str, marker: Option<&str>) -> PathBuf {
    let repo = dir.join(name);
    let dc = repo.join(".devcontainer");
    std::fs::create_dir_all(&dc).unwrap();
    let features = match marker {
        None => String::new(),
        Some(m) => {
            for f in ["one", "two", "three"] {
                std::fs::create_dir_all(dc.join(f)).unwrap();
                std::fs::write(
                    dc.join(f).join("devcontainer-feature.json"),
                    format!(r#"{{"id": "{f}", "options": {{"marker": {{"type": "string", "default": ""}}}}}}"#),
                )
                .unwrap();
                std::fs::write(
                    dc.join(f).join("install.sh"),
                    format!("#!/bin/sh\nmkdir -p /opt/{f}\necho \"$MARKER\" > /opt/{f}/marker\n"),
                )
                .unwrap();
            }
            format!(
                r#", "features": {{"./one": {{"marker": "{m}"}}, "./two": {{"marker": "{m}"}}, "./three": {{"marker": "{m}"}}}}"#
            )
        }
    };
    std::fs::write(dc.join("devcontainer.json"), format!(r#"{{"image": "localhost/devaipod-base:latest"{features}}}"#))
        .unwrap();
    common::commit_all(&repo);
    repo
}
