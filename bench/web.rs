//! Benchmark of the web UI's dashboard with 50 workspaces: time to the whole HTML page,
//! p50/p90, against `/healthz` on the same listener in the same run (the floor: HTTP, auth
//! layer, no work). Measured back to back (the shared listing is fresh), 1.1 s apart (the
//! listing is older than 1 s: pages show it and refresh it in the background), and the
//! first request (nothing cached: podman's listing is waited for), next to podman's own
//! listing of the same pods. Prints figures; asserts nothing.
//!
//! The 50 workspaces are pods with devaipod's labels made with `podman pod create` (no
//! agents: 50 opencode servers would need ~17 GB), each with a task and a proposal in the
//! store, so the page renders everything a real dashboard does.
//!
//! Run: `cargo bench --bench web` (needs podman, see scripts/setup.sh).

use std::process::Command;
use std::time::{Duration, Instant};

use devaipod::store::{Proposal, ProposalFile, ProposalState, Store, Task, TaskState, WorkspaceRecord};

#[path = "common.rs"]
mod common;

use common::Env;

const WORKSPACES: usize = 50;
const SAMPLES: usize = 200;

fn pct(v: &mut [Duration], p: f64) -> Duration {
    v.sort();
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

async fn fill_store(env: &Env, names: &[String]) {
    let store = Store::open(&env.dir.path().join("data/state.db")).unwrap();
    for (i, name) in names.iter().enumerate() {
        store
            .put_workspace(WorkspaceRecord {
                name: name.clone(),
                source: format!("/src/{name}"),
                agent_password: "x".into(),
                created_at: 0,
                agent_head: None,
            })
            .await
            .unwrap();
        let task = Task {
            id: format!("t-bench{i:04}"),
            workspace: name.clone(),
            prompt: format!("Fix issue {i} in the parser"),
            state: if i % 3 == 0 { TaskState::Running } else { TaskState::Completed },
            session_id: None,
            delivered: true,
            base: None,
            follows_proposal: None,
            error: None,
            summary: Some("done".into()),
            created_at: 0,
            updated_at: 0,
            deadline_at: i64::MAX,
            turns_before: 0,
            parent: None,
            worker: None,
            workers: 0,
            set_id: None,
            candidate: None,
            model: None,
        };
        store.insert_task(task).await.unwrap();
        let files = vec![ProposalFile { path: "src/lib.rs".into(), added: Some(3), removed: Some(1) }];
        let p = Proposal {
            id: format!("p-bench{i:04}"),
            task_id: format!("t-bench{i:04}"),
            workspace: name.clone(),
            branch: format!("devaipod/t-bench{i:04}"),
            base: "0".repeat(40),
            head: "1".repeat(40),
            commits: vec![("1".repeat(40), "fix".into())],
            files,
            added: 3,
            removed: 1,
            summary: "Fixed it".into(),
            state: ProposalState::Open,
            created_at: 0,
        };
        store.insert_proposal(p).await.unwrap();
    }
}

async fn sample(client: &reqwest::Client, url: &str, token: &str, n: usize, gap: Duration) -> Vec<Duration> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        let resp = client.get(url).bearer_auth(token).header("accept", "text/html").send().await.unwrap();
        assert!(resp.status().is_success(), "{url}: {}", resp.status());
        let body = resp.bytes().await.unwrap();
        out.push(t.elapsed());
        assert!(!body.is_empty());
        if !gap.is_zero() {
            tokio::time::sleep(gap).await;
        }
    }
    out
}

#[tokio::main]
async fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let env = Env::new("bench-web");
    let names: Vec<String> = (0..WORKSPACES).map(|i| format!("bw{}-{i}", std::process::id())).collect();
    println!("devaipod web UI benchmark: dashboard with {WORKSPACES} workspaces\n");
    let t = Instant::now();
    for name in &names {
        let out = Command::new("podman")
            .args(["pod", "create", "--name", &format!("devaipod-{name}")])
            .args(["--label", &format!("io.devaipod.instance={}", env.instance)])
            .args(["--label", &format!("io.devaipod.workspace={name}")])
            .args(["--label", &format!("io.devaipod.version={}", env!("CARGO_PKG_VERSION"))])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    println!("setup: {WORKSPACES} labelled pods in {:.1} s", t.elapsed().as_secs_f64());
    fill_store(&env, &names).await;
    env.ok(&["list"]); // starts the daemon
    let base = format!("http://{}", env.read("run/listen"));
    let token = env.read("data/token");
    let client = reqwest::Client::new();

    // Past the longest age a page may show (30 s): this request waits for podman.
    tokio::time::sleep(Duration::from_secs(31)).await;
    let t = Instant::now();
    let page = client.get(&base).bearer_auth(&token).send().await.unwrap().text().await.unwrap();
    let first = t.elapsed();
    let rows = page.matches("<tr data-workspace=").count();
    println!("dashboard: {} KB, {rows} workspace rows", page.len() / 1024);

    let mut floor = sample(&client, &format!("{base}/healthz"), &token, SAMPLES, Duration::ZERO).await;
    let mut warm = sample(&client, &format!("{base}/"), &token, SAMPLES, Duration::ZERO).await;
    let mut cold = sample(&client, &format!("{base}/"), &token, 15, Duration::from_millis(1100)).await;
    // podman's own listing of the same pods, over its API (what an expired listing waits for).
    let filter = format!("{{\"label\":[\"io.devaipod.instance={}\"]}}", env.instance);
    let mut podman = Vec::new();
    for _ in 0..15 {
        let t = Instant::now();
        let out = Command::new("curl")
            .args(["-fsS", "--unix-socket", "/run/podman/podman.sock", "-G"])
            .args(["--data-urlencode", &format!("filters={filter}"), "http://d/v4.0.0/libpod/pods/json"])
            .output()
            .unwrap();
        podman.push(t.elapsed());
        assert!(out.status.success());
    }
    let (f50, w50, w90) = (ms(pct(&mut floor, 0.5)), ms(pct(&mut warm, 0.5)), ms(pct(&mut warm, 0.9)));
    let (c50, c90) = (ms(pct(&mut cold, 0.5)), ms(pct(&mut cold, 0.9)));
    println!("\n{:<44} {:>9} {:>9} {:>8}", "request", "p50 ms", "p90 ms", "vs floor");
    println!("{:<44} {:>9.2} {:>9.2} {:>8}", "/healthz (floor)", f50, ms(pct(&mut floor, 0.9)), "1.0x");
    println!("{:<44} {:>9.2} {:>9.2} {:>7.1}x", "/ dashboard, back to back (listing cached)", w50, w90, w50 / f50);
    println!("{:<44} {:>9.2} {:>9.2} {:>7.1}x", "/ dashboard, listing > 1 s old (1.1 s apart)", c50, c90, c50 / f50);
    println!(
        "{:<44} {:>9.2} {:>9} {:>7.1}x",
        "/ dashboard, listing > 30 s old (waits)",
        ms(first),
        "",
        ms(first) / f50
    );
    let p50 = ms(pct(&mut podman, 0.5));
    println!("{:<44} {:>9.2} {:>9} {:>8}", "podman API pods/json, same pods (curl)", p50, "", "");
    println!("\ntarget: dashboard p50 <= 20 ms");

    env.ok(&["list"]);
    for name in &names {
        Command::new("podman").args(["pod", "rm", "-f", &format!("devaipod-{name}")]).output().unwrap();
    }
    if let Ok(pid) = env.read("run/daemon.pid").parse::<u32>() {
        let _ = Command::new("kill").arg(pid.to_string()).status();
    }
}
