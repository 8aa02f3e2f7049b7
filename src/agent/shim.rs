//! `devaipod agent-shim`: the agent container's main process under its init. The container
//! has no network but loopback, so the shim carries bytes across the two sockets the
//! daemon shares with it, and runs the agent (opencode) as its child:
//!
//! - **in**: it serves the agent's API on a unix socket in the directory mounted from the
//!   host (`<runtime>/agent/<workspace>/api.sock`), each connection piped to the agent's
//!   port on loopback; or, for an ACP agent (`--acp`), answered by the shim's ACP bridge
//!   (`agent::acp::bridge`), which speaks JSON-RPC with the agent over its stdio;
//! - **out**: it listens on the container's loopback (`127.0.0.1:<egress port>`, the
//!   `HTTP(S)_PROXY` of the agent) and pipes each connection to the daemon's egress proxy
//!   socket (`/run/devaipod/gator/egress.sock`), where the daemon decides.
//!
//! The shim is not a wall: it runs as the agent's user, which may kill or replace it. The
//! walls are the network namespace (nothing else is reachable) and the daemon's side of
//! each socket (identity is the socket; the proxy allows, audits and adds the key).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};

use super::acp;

/// What the shim is started with.
#[derive(Debug, Clone)]
pub struct Shim {
    /// The API socket to serve (in the directory the host shares).
    pub api: PathBuf,
    /// The agent's own port on loopback, e.g. `127.0.0.1:4096` (an HTTP agent).
    pub to: Option<String>,
    /// The agent speaks ACP on its stdio: the shim bridges it to the API socket.
    pub acp: bool,
    /// The pod's gator socket, handed to an ACP agent's sessions as the MCP server `gator`.
    pub gator: Option<PathBuf>,
    /// The loopback port the agent's traffic out is taken on.
    pub egress_port: u16,
    /// The daemon's egress proxy socket.
    pub egress: PathBuf,
    /// The agent's command.
    pub command: Vec<String>,
}

/// Connections the shim carries at once in each direction; more wait for a free place.
const MAX_CONNECTIONS: usize = 256;
/// Time to reach the agent's port or the proxy's socket (both local).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Runs the agent and both relays until the agent exits; exits as it did.
pub async fn run(shim: Shim) -> std::io::Result<ExitCode> {
    let Some((program, args)) = shim.command.split_first() else {
        return Err(std::io::Error::other("agent-shim: no command to run after `--`"));
    };
    let api = bind_api(&shim.api)?;
    let egress = TcpListener::bind(("127.0.0.1", shim.egress_port)).await?;
    let mut command = tokio::process::Command::new(program);
    command.args(args).kill_on_drop(true);
    let mut init_failed = None;
    if shim.acp {
        // The API password is the shim's to check, not the agent's to read.
        command.stdin(std::process::Stdio::piped()).stdout(std::process::Stdio::piped()).env_remove(acp::PASSWORD_ENV);
    }
    let mut child = command.spawn()?;
    match (&shim.to, child.stdin.take(), child.stdout.take()) {
        (_, Some(stdin), Some(stdout)) if shim.acp => {
            let config = acp::bridge::BridgeConfig {
                password: std::env::var(acp::PASSWORD_ENV).unwrap_or_default(),
                workspace: std::env::current_dir()?,
                gator: match &shim.gator {
                    Some(socket) => Some(vec![
                        std::env::current_exe()?.display().to_string(),
                        "gator-bridge".into(),
                        socket.display().to_string(),
                    ]),
                    None => None,
                },
            };
            let (bridge, failed) = acp::bridge::Bridge::start(config, stdin, stdout);
            init_failed = Some(failed);
            tokio::spawn(async move { axum::serve(api, acp::bridge::router(bridge)).await });
        }
        (Some(to), _, _) => {
            tokio::spawn(serve_api(api, to.clone()));
        }
        _ => return Err(std::io::Error::other("agent-shim: give --to <agent address> or --acp")),
    }
    tokio::spawn(serve_egress(egress, shim.egress.clone()));

    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let status = loop {
        tokio::select! {
            s = child.wait() => break s?,
            Some(why) = init_failure(&mut init_failed) => {
                eprintln!("agent-shim: {why}");
                let _ = child.kill().await;
                let _ = std::fs::remove_file(&shim.api);
                return Ok(ExitCode::from(1));
            }
            _ = term.recv() => forward(&child, rustix::process::Signal::TERM),
            _ = int.recv() => forward(&child, rustix::process::Signal::INT),
        }
    };
    let _ = std::fs::remove_file(&shim.api);
    use std::os::unix::process::ExitStatusExt;
    let code = status.code().or_else(|| status.signal().map(|s| 128 + s)).unwrap_or(1);
    Ok(ExitCode::from(u8::try_from(code).unwrap_or(1)))
}

/// Resolves when the ACP agent could not be initialized; never for an HTTP agent.
async fn init_failure(failed: &mut Option<tokio::sync::oneshot::Receiver<String>>) -> Option<String> {
    match failed {
        Some(rx) => match rx.await {
            Ok(why) => Some(why),
            Err(_) => {
                // Initialized: nothing more will come.
                *failed = None;
                std::future::pending().await
            }
        },
        None => std::future::pending().await,
    }
}

fn forward(child: &tokio::process::Child, signal: rustix::process::Signal) {
    if let Some(pid) = child.id().and_then(|p| rustix::process::Pid::from_raw(p as i32)) {
        let _ = rustix::process::kill_process(pid, signal);
    }
}

/// Binds the API socket, replacing one a previous run of the container left. The daemon
/// may run as another user than the agent (rootless podman maps the agent's uid): the
/// socket is open to all, and only this pod's agent container and the daemon can reach
/// its directory.
fn bind_api(path: &Path) -> std::io::Result<UnixListener> {
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let listener = UnixListener::bind(path)?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666))?;
    Ok(listener)
}

async fn serve_api(listener: UnixListener, to: String) {
    let places = std::sync::Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok(permit) = places.clone().acquire_owned().await else { return };
        let Ok((inbound, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let to = to.clone();
        tokio::spawn(async move {
            let _permit = permit;
            // Refused while the agent starts: the daemon's readiness probe asks again.
            if let Ok(Ok(outbound)) = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(&to)).await {
                pipe(inbound, outbound).await;
            }
        });
    }
}

async fn serve_egress(listener: TcpListener, proxy: PathBuf) {
    let places = std::sync::Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok(permit) = places.clone().acquire_owned().await else { return };
        let Ok((mut inbound, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let proxy = proxy.clone();
        tokio::spawn(async move {
            let _permit = permit;
            match tokio::time::timeout(CONNECT_TIMEOUT, UnixStream::connect(&proxy)).await {
                Ok(Ok(outbound)) => pipe(inbound, outbound).await,
                _ => {
                    use tokio::io::AsyncWriteExt;
                    let body = "devaipod's egress proxy is not reachable (is the daemon running?)\n";
                    let answer = format!(
                        "HTTP/1.1 502 Bad Gateway\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = inbound.write_all(answer.as_bytes()).await;
                }
            }
        });
    }
}

async fn pipe<A, B>(mut a: A, mut b: B)
where
    A: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    B: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let _ = tokio::io::copy_bidirectional(&mut a, &mut b).await;
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    #[tokio::test]
    async fn both_relays_carry_bytes_and_the_agent_exit_code_is_the_shims() {
        let dir = tempfile::tempdir().unwrap();
        // The "agent": a TCP echo server on loopback.
        let agent = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let to = agent.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = agent.accept().await {
                tokio::spawn(async move {
                    let mut buf = [0u8; 5];
                    s.read_exact(&mut buf).await.unwrap();
                    s.write_all(&buf).await.unwrap();
                });
            }
        });
        // The daemon's egress socket: answers "proxy".
        let egress = dir.path().join("egress.sock");
        let proxy = UnixListener::bind(&egress).unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = proxy.accept().await {
                s.write_all(b"proxy").await.unwrap();
            }
        });
        let port = TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap().port();
        let api = dir.path().join("api.sock");
        std::fs::write(&api, "stale").unwrap();
        let shim = Shim {
            api: api.clone(),
            to: Some(to),
            acp: false,
            gator: None,
            egress_port: port,
            egress,
            command: vec!["sh".into(), "-c".into(), "sleep 1; exit 7".into()],
        };
        let running = tokio::spawn(run(shim));
        tokio::time::sleep(Duration::from_millis(200)).await;

        let mut s = UnixStream::connect(&api).await.expect("the API socket replaced the stale file");
        s.write_all(b"hello").await.unwrap();
        let mut echoed = [0u8; 5];
        s.read_exact(&mut echoed).await.unwrap();
        assert_eq!(&echoed, b"hello");

        let mut out = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        let mut got = [0u8; 5];
        out.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"proxy");

        let code = running.await.unwrap().unwrap();
        assert_eq!(code, ExitCode::from(7));
        assert!(!api.exists(), "the socket goes with the shim");
    }
}
