//! Benchmark of MCP `tools/call list_workspaces` with 20 workspaces, over stdio and HTTP:
//! p50, p90 and max against `podman pod ps --format json` in the same run; then 50
//! concurrent HTTP clients × 100 calls: errors, p50, p90, p99 and max. Prints figures;
//! asserts nothing.
//!
//! Run: `cargo bench --bench mcp` (needs podman and opencode, see scripts/setup.sh).

use std::process::Command;
use std::time::{Duration, Instant};

use rmcp::model::CallToolRequestParams;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::transport::{StreamableHttpClientTransport, TokioChildProcess};
use rmcp::{RoleClient, ServiceExt, service::RunningService};

#[path = "common.rs"]
mod common;

use common::{Env, Stats, header, row};

const WORKSPACES: usize = 20;
const CALLS: usize = 200;

async fn timed_calls(c: &RunningService<RoleClient, ()>, n: usize) -> (Vec<Duration>, usize) {
    let (mut times, mut errors) = (Vec::with_capacity(n), 0);
    for _ in 0..n {
        let t = Instant::now();
        match c.call_tool(CallToolRequestParams::new("list_workspaces")).await {
            Ok(r) if r.is_error != Some(true) => times.push(t.elapsed()),
            _ => errors += 1,
        }
    }
    (times, errors)
}

#[tokio::main]
async fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let env = Env::new("bench-mcp");
    let repo = env.repo();
    println!("devaipod MCP benchmark ({WORKSPACES} workspaces, {CALLS} calls per transport)\n");
    for i in 0..WORKSPACES {
        env.ok(&["up", repo.to_str().unwrap(), "--name", &format!("m{i}")]);
    }

    let filter = format!("label=io.devaipod.instance={}", env.instance);
    let floor: Vec<Duration> = (0..CALLS / 10)
        .map(|_| {
            let t = Instant::now();
            Command::new("podman").args(["pod", "ps", "--filter", &filter, "--format", "json"]).output().unwrap();
            t.elapsed()
        })
        .collect();
    let floor = Stats::of(&floor);
    header();
    row("floor: podman pod ps --format json", &floor, None, "");

    let cmd: tokio::process::Command = env.cmd(&["mcp"]).into();
    let stdio = ().serve(TokioChildProcess::new(cmd).unwrap()).await.unwrap();
    let (t, e) = timed_calls(&stdio, CALLS).await;
    row(&format!("list_workspaces, stdio ({e} errors)"), &Stats::of(&t), Some(&floor), "p50 ≤ 0.5 ms");
    let _ = stdio.cancel().await;

    let url = format!("http://{}/mcp", env.read("run/listen"));
    let token = env.read("data/token");
    let connect = || {
        let config = StreamableHttpClientTransportConfig::with_uri(url.clone()).auth_header(token.clone());
        ().serve(StreamableHttpClientTransport::from_config(config))
    };
    let http = connect().await.unwrap();
    let (t, e) = timed_calls(&http, CALLS).await;
    row(&format!("list_workspaces, HTTP ({e} errors)"), &Stats::of(&t), Some(&floor), "p50 ≤ 2 ms");
    let _ = http.cancel().await;

    // 50 concurrent clients × 100 calls.
    let start = Instant::now();
    let mut handles = Vec::new();
    for _ in 0..50 {
        let c = connect();
        handles.push(tokio::spawn(async move {
            match c.await {
                Ok(c) => {
                    let r = timed_calls(&c, 100).await;
                    let _ = c.cancel().await;
                    r
                }
                Err(_) => (Vec::new(), 100),
            }
        }));
    }
    let (mut all, mut errors) = (Vec::new(), 0);
    for h in handles {
        let (t, e) = h.await.unwrap();
        all.extend(t);
        errors += e;
    }
    let s = Stats::of(&all);
    row(&format!("50 HTTP clients × 100 calls ({errors} errors)"), &s, Some(&floor), "0 errors");
    println!(
        "{:<46} p99 {:.2} ms; {} calls in {:.1} s",
        "",
        common::ms(s.p99),
        all.len(),
        start.elapsed().as_secs_f64()
    );

    for i in 0..WORKSPACES {
        let _ = env.cmd(&["delete", &format!("m{i}")]).output();
    }
    // The daemon removes deleted workspaces in the background: let it finish first.
    common::removals_done(&env.dir.path().join("data"), Duration::from_secs(300));
    if let Ok(pid) = std::fs::read_to_string(env.dir.path().join("run/daemon.pid")) {
        let _ = Command::new("kill").arg(pid.trim()).status();
    }
}
