//! What interactive sessions need from podman beyond running a command: a terminal's size,
//! a signal to the command, and a TCP connection into a pod's network namespace (the SSH
//! server's `direct-tcpip`, `devaipod forward`).

use std::os::fd::AsFd;
use std::time::Duration;

use bollard::Docker;
use bollard::query_parameters::ResizeExecOptions;

use super::engine::{EngineError, PortStream};
use super::podman::docker_err;

/// How long a connection into a pod may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Podman 4.3's Docker-compatible API takes a terminal's size only after the exec has
/// started (`resize_exec`), so a command that asks at once (`stty size`, a shell drawing its
/// prompt) would see 0×0. With a terminal, the command waits for the first size, at most
/// 500 ms: a fixed script, the argv passed as its arguments. Without `stty` in the image it
/// starts at once.
pub(super) fn after_first_size(argv: &[String]) -> Vec<String> {
    const WAIT: &str = r#"i=0
while [ "$(stty size 2>/dev/null)" = "0 0" ] && [ "$i" -lt 50 ]; do sleep 0.01; i=$((i+1)); done
exec "$@""#;
    let mut v = vec!["/bin/sh".to_owned(), "-c".to_owned(), WAIT.to_owned(), "sh".to_owned()];
    v.extend(argv.iter().cloned());
    v
}

/// Podman refuses a resize until the exec's process runs, a moment after its stream is
/// attached: the first size is asked for again, every 20 ms, for up to 400 ms.
pub(super) async fn resize(docker: &Docker, id: &str, rows: u16, cols: u16) -> Result<(), EngineError> {
    let op = "resize a terminal";
    let mut tries = 0;
    loop {
        let call = docker.resize_exec(id, ResizeExecOptions { h: i32::from(rows), w: i32::from(cols) });
        match timed(op, call).await? {
            Ok(()) => return Ok(()),
            Err(e) if tries >= 20 => return Err(docker_err(op, e)),
            Err(e) => tracing::debug!("{op}: {e}"),
        }
        tries += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The exec's process is signalled from the host by its host pid (podman reports it), as
/// root can; a rootless daemon can signal processes of its own user only.
pub(super) async fn signal(docker: &Docker, id: &str, signal: i32) -> Result<(), EngineError> {
    let op = "signal a command";
    let info = timed(op, docker.inspect_exec(id)).await?.map_err(|e| docker_err(op, e))?;
    let pid = info
        .pid
        .and_then(|p| i32::try_from(p).ok())
        .and_then(rustix::process::Pid::from_raw)
        .ok_or_else(|| api(op, "podman did not report the command's process".into()))?;
    let sig = rustix::process::Signal::from_named_raw(signal).ok_or_else(|| api(op, format!("no signal {signal}")))?;
    rustix::process::kill_process(pid, sig).map_err(|e| api(op, format!("process {}: {e}", pid.as_raw_nonzero())))
}

/// Connects to `127.0.0.1:port` inside `container`'s network namespace: a thread of its
/// own enters the namespace (`setns`), connects, and ends, so no other work ever runs in
/// the pod's namespace. The socket stays in the namespace it was made in.
///
/// Rootless, the namespace belongs to podman's user namespace, which a thread of a
/// multi-threaded process cannot enter: then `nsenter` (util-linux) enters both and runs
/// this executable's `tcp-relay`, which connects there and relays its stdin and stdout.
pub(super) async fn connect_port(docker: &Docker, container: &str, port: u16) -> Result<PortStream, EngineError> {
    let op = format!("connect to port {port} in {container}");
    let inspected =
        timed(&op, docker.inspect_container(container, None::<bollard::query_parameters::InspectContainerOptions>))
            .await?
            .map_err(|e| docker_err(&op, e))?;
    let pid = inspected
        .state
        .and_then(|s| s.pid)
        .filter(|p| *p > 0)
        .ok_or_else(|| api(&op, format!("{container} is not running")))?;
    if !super::socket::is_root() {
        return relay(&op, pid, port).await;
    }
    let (tx, rx) = tokio::sync::oneshot::channel();
    let ns_path = format!("/proc/{pid}/ns/net");
    std::thread::Builder::new()
        .name("devaipod-netns".into())
        .spawn(move || {
            let _ = tx.send(connect_in(&ns_path, port));
        })
        .map_err(|e| api(&op, format!("cannot start a thread: {e}")))?;
    let stream = rx.await.map_err(|_| api(&op, "the connecting thread ended".into()))?.map_err(|e| api(&op, e))?;
    stream.set_nonblocking(true).map_err(|e| api(&op, e.to_string()))?;
    let stream = tokio::net::TcpStream::from_std(stream).map_err(|e| api(&op, e.to_string()))?;
    let _ = stream.set_nodelay(true);
    Ok(Box::new(stream))
}

/// `nsenter -t <pid> -U -n --preserve-credentials <this executable> tcp-relay --port <port>`:
/// the relay's first byte on stdout says it connected (`+`) or not (`-`, and why on stderr).
async fn relay(op: &str, pid: i64, port: u16) -> Result<PortStream, EngineError> {
    use tokio::io::AsyncReadExt;
    let exe = std::env::current_exe().map_err(|e| api(op, format!("cannot find devaipod's executable: {e}")))?;
    let mut child = tokio::process::Command::new("nsenter")
        .args(["-t", &pid.to_string(), "-U", "-n", "--preserve-credentials"])
        .arg(exe)
        .args(["tcp-relay", "--port", &port.to_string()])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| api(op, format!("cannot run nsenter (util-linux): {e}")))?;
    let (Some(stdin), Some(mut stdout)) = (child.stdin.take(), child.stdout.take()) else {
        return Err(api(op, "the relay has no stdio".into()));
    };
    let mut first = [0u8; 1];
    let got = tokio::time::timeout(CONNECT_TIMEOUT * 2, stdout.read(&mut first)).await;
    if !matches!(got, Ok(Ok(1))) || first[0] != b'+' {
        let mut why = String::new();
        if let Some(mut err) = child.stderr.take() {
            let _ = tokio::time::timeout(Duration::from_secs(1), err.read_to_string(&mut why)).await;
        }
        let _ = child.kill().await;
        return Err(api(op, why.trim().trim_start_matches("error: ").to_owned()));
    }
    // The process lives as long as the stream (killed when it is dropped).
    Ok(Box::new(Relay { io: tokio::io::join(stdout, stdin), _child: child }))
}

/// A relay process's stdio as one stream; the process goes with it.
struct Relay {
    io: tokio::io::Join<tokio::process::ChildStdout, tokio::process::ChildStdin>,
    _child: tokio::process::Child,
}

impl tokio::io::AsyncRead for Relay {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for Relay {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// `devaipod tcp-relay --port N` (run by `nsenter` inside a pod's namespaces): connects to
/// `127.0.0.1:N`, answers `+` on stdout (or `-`, and the reason as its error), then relays
/// stdin and stdout to the connection until both ends are done.
pub async fn tcp_relay(port: u16) -> Result<(), String> {
    use tokio::io::AsyncWriteExt;
    let mut out = tokio::io::stdout();
    let conn = tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(("127.0.0.1", port))).await;
    let conn = match conn {
        Ok(Ok(c)) => c,
        failed => {
            let _ = out.write_all(b"-").await;
            let _ = out.flush().await;
            return Err(match failed {
                Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                    format!("nothing listens on port {port} in the workspace")
                }
                Ok(Err(e)) => e.to_string(),
                _ => format!("port {port} did not answer within {} s", CONNECT_TIMEOUT.as_secs()),
            });
        }
    };
    let _ = conn.set_nodelay(true);
    out.write_all(b"+").await.map_err(|e| e.to_string())?;
    out.flush().await.map_err(|e| e.to_string())?;
    let (mut r, mut w) = conn.into_split();
    let up = async {
        let _ = tokio::io::copy(&mut tokio::io::stdin(), &mut w).await;
        let _ = w.shutdown().await;
    };
    let down = async {
        let mut buf = vec![0u8; 32 * 1024];
        use tokio::io::AsyncReadExt;
        while let Ok(n) = r.read(&mut buf).await {
            if n == 0 || out.write_all(&buf[..n]).await.is_err() || out.flush().await.is_err() {
                break;
            }
        }
    };
    tokio::join!(up, down);
    Ok(())
}

/// Runs on a thread of its own, which ends afterwards (it stays in the pod's namespace).
fn connect_in(ns_path: &str, port: u16) -> Result<std::net::TcpStream, String> {
    let ns = std::fs::File::open(ns_path).map_err(|e| format!("cannot open {ns_path}: {e}"))?;
    rustix::thread::move_into_link_name_space(ns.as_fd(), Some(rustix::thread::LinkNameSpaceType::Network)).map_err(
        |e| match e {
            rustix::io::Errno::PERM => {
                "entering the pod's network namespace is not permitted (a rootless daemon cannot yet forward ports)"
                    .into()
            }
            e => format!("cannot enter the pod's network namespace: {e}"),
        },
    )?;
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    std::net::TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT).map_err(|e| match e.kind() {
        std::io::ErrorKind::ConnectionRefused => format!("nothing listens on port {port} in the workspace"),
        _ => format!("{e}"),
    })
}

async fn timed<T>(op: &str, f: impl std::future::Future<Output = T>) -> Result<T, EngineError> {
    tokio::time::timeout(CONNECT_TIMEOUT * 2, f).await.map_err(|_| EngineError::Timeout {
        engine: crate::pods::engine::PODMAN,
        op: op.to_owned(),
        secs: (CONNECT_TIMEOUT * 2).as_secs(),
    })
}

fn api(op: &str, message: String) -> EngineError {
    EngineError::Api { engine: crate::pods::engine::PODMAN, op: op.to_owned(), status: 0, message }
}
