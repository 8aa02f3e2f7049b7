//! Long-run check: [`CYCLES`] `up`/`delete` cycles of one workspace name in a row, as an
//! outer assistant that makes a workspace per task does (each `up` meets the removal of
//! the previous workspace of that name, still under way in the background), each after the
//! floor of the same cycle (the podman CLI making and removing the same pod). Prints p50,
//! p90 and max of both, every run over 2× its median (an outlier) with its cycle's floor,
//! and every podman object left behind once the last removal is done (a leak). Asserts
//! nothing.
//!
//! Run: `cargo bench --bench cycles` (needs podman, see scripts/setup.sh).

use std::time::{Duration, Instant};

#[path = "common.rs"]
mod common;

use common::{Env, Stats, header, leftovers, ms, podman_floor_delete, podman_floor_up, removals_done, row};

const CYCLES: usize = 50;
const NAME: &str = "cyc";

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let env = Env::new("bench-cycles");
    let repo = env.repo();
    let repo = repo.to_str().expect("a UTF-8 path");
    let data = env.dir.path().join("data");
    println!("devaipod long-run check: {CYCLES} cycles of up + delete of workspace `{NAME}`\n");
    let opencode = devaipod::core::opencode_dir();
    let (mut ups, mut deletes, mut floor_ups, mut floor_deletes) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for i in 0..CYCLES {
        let t = Instant::now();
        podman_floor_up("cycfloor", &env.instance, &opencode);
        floor_ups.push(t.elapsed());
        let t = Instant::now();
        podman_floor_delete("cycfloor");
        floor_deletes.push(t.elapsed());
        let t = Instant::now();
        env.ok(&["up", repo, "--name", NAME]);
        ups.push(t.elapsed());
        let t = Instant::now();
        env.ok(&["delete", NAME]);
        deletes.push(t.elapsed());
        if (i + 1) % 10 == 0 {
            eprintln!("{} cycles", i + 1);
        }
    }
    let waited = removals_done(&data, Duration::from_secs(300));
    let (u, d) = (Stats::of(&ups), Stats::of(&deletes));
    let (fu, fd) = (Stats::of(&floor_ups), Stats::of(&floor_deletes));
    header();
    row("up (nothing → agent's API answering)", &u, Some(&fu), "no run over 2× p50");
    row("delete (until it returns)", &d, Some(&fd), "no run over 2× p50");
    for (what, runs, floors, s) in [("up", &ups, &floor_ups, &u), ("delete", &deletes, &floor_deletes, &d)] {
        let outliers: Vec<String> = runs
            .iter()
            .zip(floors)
            .enumerate()
            .filter(|(_, (t, _))| **t > s.p50 * 2)
            .map(|(i, (t, f))| format!("#{i} {:.0} ms (floor {:.0} ms)", ms(*t), ms(*f)))
            .collect();
        println!("{what}: {} run(s) over 2× p50 ({:.0} ms): {outliers:?}", outliers.len(), ms(s.p50 * 2));
    }
    let left = leftovers(&env.instance, &[NAME.to_owned(), "cycfloor".to_owned()]);
    let records = std::fs::read_dir(data.join("removals")).map(|d| d.count()).unwrap_or(0);
    println!(
        "left behind {:.1} s after the last delete: {} object(s) {left:?}, {records} removal record(s)",
        waited.as_secs_f64(),
        left.len()
    );
    if let Ok(pid) = std::fs::read_to_string(env.dir.path().join("run/daemon.pid")) {
        let _ = std::process::Command::new("kill").arg(pid.trim()).status();
    }
}
