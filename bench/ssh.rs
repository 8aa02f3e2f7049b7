//! Benchmark of the SSH server against a floor measured in the same run: `podman exec`
//! doing the same work in the same container.
//! - round trip: `ssh ws true` (a new connection: key exchange, login, exec, exit status)
//!   vs `podman exec <ctr> true`;
//! - bulk throughput: `cat` of a 100 MB file in the workspace over an SSH channel vs over
//!   `podman exec`, its output read to the end on the host.
//!
//! Prints p50, p90 and max over [`RUNS`] runs of each and the ratio of the p50s; asserts
//! nothing. Run: `cargo bench --bench ssh` (needs podman and OpenSSH's client, see
//! scripts/setup.sh).

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[path = "common.rs"]
mod common;

use common::{Env, Stats, header, podman, row};

const RUNS: usize = 20;
const BULK_RUNS: usize = 5;
const BULK_MB: u64 = 100;

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo bench -- --list` probes harness=false targets
    }
    let env = Env::new("bench-ssh");
    let keys = env.dir.path().join("keys");
    std::fs::create_dir_all(&keys).unwrap();
    let key = keys.join("id");
    let made = Command::new("ssh-keygen").args(["-q", "-t", "ed25519", "-N", "", "-f"]).arg(&key).output();
    assert!(made.expect("ssh-keygen (openssh-client)").status.success());
    std::fs::copy(key.with_extension("pub"), keys.join("authorized_keys")).unwrap();
    env.write_config(&format!(
        "[ssh]\nlisten = \"127.0.0.1:0\"\nauthorized-keys = \"{}\"\n",
        keys.join("authorized_keys").display()
    ));
    let repo = env.repo();
    let ws = format!("bssh{}", std::process::id() % 100_000);
    env.ok(&["up", repo.to_str().unwrap(), "--name", &ws]);
    let port = env.read("run/ssh-listen").rsplit(':').next().unwrap().to_owned();
    let known = env.dir.path().join("data/ssh/known_hosts");
    let ssh = |remote: &str| {
        let mut c = Command::new("ssh");
        c.args(["-F", "/dev/null", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes"])
            .arg("-o")
            .arg(format!("HostKeyAlias=devaipod-{}", env.instance))
            .arg("-o")
            .arg(format!("UserKnownHostsFile={}", known.display()))
            .arg("-i")
            .arg(&key)
            .args(["-p", &port, &format!("{ws}@127.0.0.1"), remote])
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        c
    };
    let container = format!("devaipod-{ws}-workspace");
    let podman_exec = |args: &[&str]| {
        let mut c = Command::new("podman");
        c.args(["exec", &container]).args(args).stdin(Stdio::null()).stdout(Stdio::null());
        c
    };
    let timed = |mut c: Command| {
        let t = Instant::now();
        let s = c.status().expect("run");
        assert!(s.success(), "{c:?}");
        t.elapsed()
    };

    println!("devaipod SSH benchmark (floor: podman exec in the same container, same run)\n");
    let (mut ours, mut floor) = (Vec::new(), Vec::new());
    for _ in 0..RUNS {
        floor.push(timed(podman_exec(&["true"])));
        ours.push(timed(ssh("true")));
    }
    podman(&["exec", &container, "sh", "-c", &format!("head -c {}M /dev/urandom > /tmp/bulk", BULK_MB)]);
    let (mut bulk, mut bulk_floor) = (Vec::new(), Vec::new());
    for _ in 0..BULK_RUNS {
        bulk_floor.push(timed(podman_exec(&["cat", "/tmp/bulk"])));
        bulk.push(timed(ssh("cat /tmp/bulk")));
    }
    header();
    row("ssh ws true (new connection each)", &Stats::of(&ours), Some(&Stats::of(&floor)), "report");
    row(&format!("cat {BULK_MB} MB over ssh"), &Stats::of(&bulk), Some(&Stats::of(&bulk_floor)), "report");
    let rate = |v: &[Duration]| BULK_MB as f64 / Stats::of(v).p50.as_secs_f64();
    println!("\nthroughput at p50: ssh {:.0} MB/s, podman exec {:.0} MB/s", rate(&bulk), rate(&bulk_floor));
    env.ok(&["delete", &ws]);
    common::removals_done(&env.dir.path().join("data"), Duration::from_secs(60));
    if let Ok(pid) = std::fs::read_to_string(env.dir.path().join("run/daemon.pid")) {
        let _ = Command::new("kill").arg(pid.trim()).status();
    }
}
