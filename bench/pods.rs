//! Benchmark of workspace operations against the floor measured in the same run: the
//! podman CLI doing the same work. Prints medians and ratios; it asserts nothing.
//!
//! Run: `cargo bench --bench pods` (needs podman, see scripts/setup.sh).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const RUNS: usize = 5;
const IMAGE: &str = "localhost/devaipod-base:latest";

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo bench -- --list` probes harness=false targets
    }
    let instance = format!("bench-{}", std::process::id());
    let work = tempfile::tempdir().expect("temp dir");
    let repo = fixture(work.path());
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_devaipod"));
    let (data, run) = (work.path().join("data"), work.path().join("run"));
    let dp = |args: &[&str]| -> Duration {
        let t = Instant::now();
        let out = Command::new(&bin)
            .args(args)
            .env("DEVAIPOD_INSTANCE", &instance)
            .env("DEVAIPOD_DATA_DIR", &data)
            .env("DEVAIPOD_RUNTIME_DIR", &run)
            .env("DEVAIPOD_LISTEN", "127.0.0.1:0")
            .output()
            .expect("devaipod");
        let took = t.elapsed();
        assert!(out.status.success(), "devaipod {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        took
    };
    let opencode = devaipod::core::opencode_dir();

    println!("devaipod benchmark ({RUNS} runs each, medians)\n");
    // up: floor = the podman CLI creating the same volumes, pod and containers.
    let mut floor = Vec::new();
    let mut ours = Vec::new();
    let mut deletes = Vec::new();
    for i in 0..RUNS {
        let n = format!("bf{i}");
        floor.push(timed(|| podman_floor_up(&n, &instance, &opencode)));
        podman(&["pod", "rm", "-f", "-t", "0", &format!("devaipod-{n}")]);
        for v in ["workspace", "agent-workspace", "agent-home"] {
            podman(&["volume", "rm", "-f", &format!("devaipod-{n}-{v}")]);
        }
        let name = format!("bu{i}");
        ours.push(dp(&["up", repo.to_str().unwrap(), "--name", &name]));
        deletes.push(dp(&["delete", &name]));
    }
    let (f, o) = (median(&mut floor), median(&mut ours));
    report("up (nothing → both running, agent API answering)", o, f, "≤ 1.2×");
    println!("{:<44} {:>9.0} ms   (target ≤ 500 ms)", "delete", ms(median(&mut deletes)));

    // list: 1 and 20 workspaces, against `podman pod ps --format json` with the same filter.
    let filter = format!("label=io.devaipod.instance={instance}");
    for count in [1usize, 20] {
        let have = existing(&instance);
        for i in have..count {
            dp(&["up", repo.to_str().unwrap(), "--name", &format!("bl{i}")]);
        }
        let mut f: Vec<Duration> =
            (0..RUNS * 2).map(|_| timed(|| podman(&["pod", "ps", "--filter", &filter, "--format", "json"]))).collect();
        let mut o: Vec<Duration> = (0..RUNS * 2).map(|_| dp(&["list", "--json"])).collect();
        report(&format!("list with {count} workspace(s)"), median(&mut o), median(&mut f), "≤ 2×");
    }
    for i in 0..20 {
        dp(&["delete", &format!("bl{i}")]);
    }
    if let Ok(pid) = std::fs::read_to_string(run.join("daemon.pid")) {
        let _ = Command::new("kill").arg(pid.trim()).status();
    }
}

fn report(what: &str, ours: Duration, floor: Duration, target: &str) {
    println!(
        "{what:<44} {:>9.0} ms   floor {:>7.0} ms   ratio {:.2}×   (target {target})",
        ms(ours),
        ms(floor),
        ours.as_secs_f64() / floor.as_secs_f64()
    );
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn median(v: &mut [Duration]) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn timed(f: impl FnOnce() -> String) -> Duration {
    let t = Instant::now();
    f();
    t.elapsed()
}

fn existing(instance: &str) -> usize {
    podman(&["pod", "ps", "-q", "--filter", &format!("label=io.devaipod.instance={instance}")]).lines().count()
}

fn podman(args: &[&str]) -> String {
    let out = Command::new("podman").args(args).output().expect("podman");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// What `devaipod up` creates, done with the podman CLI.
fn podman_floor_up(n: &str, instance: &str, opencode: &Path) -> String {
    let label = format!("io.devaipod.instance={instance}");
    let pod = format!("devaipod-{n}");
    for v in ["workspace", "agent-workspace", "agent-home"] {
        podman(&["volume", "create", "--label", &label, &format!("{pod}-{v}")]);
    }
    podman(&["pod", "create", "--label", &label, "--name", &pod, "-p", "127.0.0.1::4096"]);
    podman(&[
        "create",
        "--pod",
        &pod,
        "--name",
        &format!("{pod}-workspace"),
        "--init",
        "--label",
        &label,
        "-v",
        &format!("{pod}-workspace:/workspaces/r"),
        IMAGE,
        "/run/podman-init",
        "-P",
    ]);
    podman(&[
        "create",
        "--pod",
        &pod,
        "--name",
        &format!("{pod}-agent"),
        "--init",
        "--label",
        &label,
        "--cap-drop",
        "ALL",
        "--cap-add",
        "NET_BIND_SERVICE",
        "--security-opt",
        "no-new-privileges",
        "--user",
        "1000:1000",
        "-v",
        &format!("{pod}-agent-workspace:/workspaces/r"),
        "-v",
        &format!("{pod}-workspace:/mnt/main-workspace:ro"),
        "-v",
        &format!("{pod}-agent-home:/home/agent"),
        "-v",
        &format!("{}:/opt/devaipod/bin:ro", opencode.display()),
        "-e",
        "HOME=/home/agent",
        "-e",
        "OPENCODE_DISABLE_MODELS_FETCH=1",
        "-e",
        "OPENCODE_SERVER_PASSWORD=floor",
        IMAGE,
        "/opt/devaipod/bin/opencode",
        "serve",
        "--port",
        "4096",
        "--hostname",
        "0.0.0.0",
    ]);
    podman(&["pod", "start", &pod]);
    // Ready when opencode's API answers, as devaipod waits for it.
    let port = podman(&["port", &format!("{pod}-agent"), "4096"]);
    let url = format!("http://{}/session", port.trim());
    for _ in 0..300 {
        let ok = Command::new("curl")
            .args(["-fs", "-o", "/dev/null", "--max-time", "0.3", "-u", "opencode:floor", &url])
            .status()
            .is_ok_and(|s| s.success());
        if ok {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    port
}

fn fixture(dir: &Path) -> PathBuf {
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
