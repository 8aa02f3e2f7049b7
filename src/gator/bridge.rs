//! `devaipod gator-bridge <socket>`: run by opencode inside the agent container as a local
//! (stdio) MCP server; it pipes newline-delimited JSON-RPC between stdio and the pod's
//! gator socket. When the daemon restarts the socket is recreated: the bridge reconnects
//! (however long the daemon is away) and replays the client's `initialize` (dropping the
//! second answer), so the agent keeps its tools. A request in flight at that moment gets
//! no answer (the client times it out).

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::net::UnixStream;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};

/// How long the bridge waits for the socket at its start (later, after a daemon restart,
/// it waits as long as it takes).
const FIRST_CONNECT: Duration = Duration::from_secs(30);

struct Conn {
    lines: Lines<BufReader<OwnedReadHalf>>,
    write: OwnedWriteHalf,
}

/// Connects, retrying with backoff (up to 5 s apart); gives up after `limit` if given.
async fn connect(socket: &Path, limit: Option<Duration>) -> Result<Conn> {
    let start = Instant::now();
    let mut wait = Duration::from_millis(100);
    loop {
        match UnixStream::connect(socket).await {
            Ok(s) => {
                let (r, w) = s.into_split();
                return Ok(Conn { lines: BufReader::new(r).lines(), write: w });
            }
            Err(e) if limit.is_some_and(|l| start.elapsed() >= l) => {
                return Err(e).with_context(|| format!("cannot connect to gator at {}", socket.display()));
            }
            Err(_) => {
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(5));
            }
        }
    }
}

async fn send(conn: &mut Conn, line: &str) -> std::io::Result<()> {
    conn.write.write_all(line.as_bytes()).await?;
    conn.write.write_all(b"\n").await
}

/// The JSON-RPC method and id of a line, when it has them.
fn method_and_id(line: &str) -> (Option<String>, Option<Value>) {
    match serde_json::from_str::<Value>(line) {
        Ok(v) => (v["method"].as_str().map(str::to_owned), v.get("id").cloned()),
        Err(_) => (None, None),
    }
}

pub async fn run(socket: &Path) -> Result<()> {
    let mut stdin = BufReader::new(tokio::io::stdin()).lines();
    let mut stdout = tokio::io::stdout();
    let mut conn = connect(socket, Some(FIRST_CONNECT)).await?;
    let mut connected_at = Instant::now();
    let mut initialize: Option<(String, Option<Value>)> = None;
    let mut initialized: Option<String> = None;
    // The id of a replayed `initialize`, whose answer the client must not see twice.
    let mut skip: Option<Value> = None;
    loop {
        tokio::select! {
            line = stdin.next_line() => {
                let Some(line) = line.context("reading stdin")? else { return Ok(()) };
                match method_and_id(&line) {
                    (Some(m), id) if m == "initialize" => initialize = Some((line.clone(), id)),
                    (Some(m), _) if m == "notifications/initialized" => initialized = Some(line.clone()),
                    _ => {}
                }
                if send(&mut conn, &line).await.is_err() {
                    conn = reconnect(socket, &initialize, &initialized, &mut skip, connected_at).await?;
                    connected_at = Instant::now();
                    send(&mut conn, &line).await.context("writing to gator")?;
                }
            }
            line = conn.lines.next_line() => match line {
                Ok(Some(line)) => {
                    // The answer (no method) to the replayed initialize is not the client's.
                    let (method, id) = method_and_id(&line);
                    if skip.is_some() && method.is_none() && id == skip {
                        skip = None;
                        continue;
                    }
                    stdout.write_all(line.as_bytes()).await?;
                    stdout.write_all(b"\n").await?;
                    stdout.flush().await?;
                }
                Ok(None) | Err(_) => {
                    conn = reconnect(socket, &initialize, &initialized, &mut skip, connected_at).await?;
                    connected_at = Instant::now();
                }
            },
        }
    }
}

async fn reconnect(
    socket: &Path,
    initialize: &Option<(String, Option<Value>)>,
    initialized: &Option<String>,
    skip: &mut Option<Value>,
    connected_at: Instant,
) -> Result<Conn> {
    // A connection closed at once (the daemon refused it) is not retried at full speed.
    if connected_at.elapsed() < Duration::from_secs(1) {
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let mut conn = connect(socket, None).await?;
    if let Some((line, id)) = initialize {
        send(&mut conn, line).await.context("replaying initialize")?;
        *skip = id.clone();
        if let Some(line) = initialized {
            send(&mut conn, line).await.context("replaying initialized")?;
        }
    } else if initialized.is_some() {
        bail!("gator: initialized without initialize");
    }
    Ok(conn)
}
