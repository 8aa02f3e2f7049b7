//! `up` (nothing → the agent's API answering) on rootless podman against rootful podman, in
//! the same run, each against its own floor: the podman CLI doing the same work with that
//! podman. Prints p50, p90 and max over [`RUNS`] runs; asserts nothing.
//!
//! Run as root: `cargo bench --bench rootless` (after `scripts/setup.sh --rootless`). The
//! rootless half is this binary run again as the rootless test user, which prints its
//! timings for the root half to tabulate.

use std::process::Command;
use std::time::{Duration, Instant};

#[path = "common.rs"]
mod common;

use common::{Env, Stats, header, podman_floor_delete, podman_floor_up, removals_done, row};

const RUNS: usize = 10;
const CHILD: &str = "DEVAIPOD_BENCH_ROOTLESS_CHILD";

/// `RUNS` times: the CLI floor, then devaipod's `up` (each deleted before the next).
fn measure(prefix: &str) -> (Vec<Duration>, Vec<Duration>) {
    let env = Env::new(prefix);
    let repo = env.repo();
    let repo = repo.to_str().expect("a UTF-8 path");
    let opencode = devaipod::core::opencode_dir();
    let (mut floor, mut up) = (Vec::new(), Vec::new());
    env.ok(&["list"]); // the daemon runs before the first timing
    for i in 0..RUNS {
        let n = format!("{prefix}f{i}");
        let t = Instant::now();
        podman_floor_up(&n, &env.instance, &opencode);
        floor.push(t.elapsed());
        podman_floor_delete(&n);
        let name = format!("{prefix}u{i}");
        let t = Instant::now();
        env.ok(&["up", repo, "--name", &name]);
        up.push(t.elapsed());
        env.ok(&["delete", &name]);
        removals_done(&env.dir.path().join("data"), Duration::from_secs(120));
    }
    if let Ok(pid) = std::fs::read_to_string(env.dir.path().join("run/daemon.pid")) {
        let _ = Command::new("kill").arg(pid.trim()).status();
    }
    (floor, up)
}

fn line(v: &[Duration]) -> String {
    v.iter().map(|d| d.as_micros().to_string()).collect::<Vec<_>>().join(" ")
}

fn parse(s: &str) -> Vec<Duration> {
    s.split_whitespace().map(|n| Duration::from_micros(n.parse().expect("micros"))).collect()
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo bench -- --list` probes harness=false targets
    }
    if std::env::var_os(CHILD).is_some() {
        let (floor, up) = measure("brl");
        println!("floor {}\nup {}", line(&floor), line(&up));
        return;
    }
    assert!(devaipod::pods::podman::is_root(), "run as root: the rootless half runs as the rootless test user");
    let user = std::env::var("DEVAIPOD_ROOTLESS_USER").unwrap_or_else(|_| "devaipod-rootless".into());
    let passwd = Command::new("getent").args(["passwd", &user]).output().unwrap();
    let fields: Vec<String> = String::from_utf8_lossy(&passwd.stdout).trim().split(':').map(str::to_owned).collect();
    let (uid, home) = (fields.get(2).expect("run scripts/setup.sh --rootless"), &fields[5]);
    println!(
        "devaipod up, rootless vs rootful ({RUNS} runs each; floors: the podman CLI doing the same work with the same podman, same run)\n"
    );
    let (rootful_floor, rootful_up) = measure("brf");
    let out = Command::new("runuser")
        .args(["-u", &user, "--", "env", "-i"])
        .arg(format!("HOME={home}"))
        .arg(format!("XDG_RUNTIME_DIR=/run/user/{uid}"))
        .arg(format!("PATH={}", std::env::var("PATH").unwrap_or_default()))
        .arg(format!("{CHILD}=1"))
        .arg(std::env::current_exe().unwrap())
        .current_dir("/")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "the rootless half failed: {text}{}", String::from_utf8_lossy(&out.stderr));
    let field = |k: &str| parse(text.lines().find_map(|l| l.strip_prefix(&format!("{k} "))).expect(k));
    let (rootless_floor, rootless_up) = (field("floor"), field("up"));
    let storage = Command::new("runuser")
        .args(["-u", &user, "--", "env", "-i", &format!("HOME={home}"), &format!("XDG_RUNTIME_DIR=/run/user/{uid}")])
        .args(["podman", "info", "--format", "{{.Store.GraphDriverName}}"])
        .current_dir("/")
        .output()
        .unwrap();
    header();
    let (rf, ru) = (Stats::of(&rootful_floor), Stats::of(&rootful_up));
    let (lf, lu) = (Stats::of(&rootless_floor), Stats::of(&rootless_up));
    row("up, rootful (vs rootful CLI floor)", &ru, Some(&rf), "report");
    row("up, rootless (vs rootless CLI floor)", &lu, Some(&lf), "p50 ≤ 2× floor");
    row("up, rootless (vs rootful devaipod up)", &lu, Some(&ru), "report");
    row("CLI floor, rootless (vs rootful CLI floor)", &lf, Some(&rf), "report");
    println!("\nrootless storage: {}", String::from_utf8_lossy(&storage.stdout).trim());
}
