//! Two unix sockets per pod: `<runtime>/gator/<workspace>/gator.sock` (gator's MCP) and
//! `egress.sock` beside it (the egress proxy, `crate::egress`), the directory mounted
//! (read-only) into that pod's agent container only. A connection is served as the
//! workspace whose socket it came in on: identity is the socket, nothing the agent says.
//! A worker agent has sockets of its own, under its key (`<workspace>.w<n>`, see
//! `core::Seat`): gator serves it as that worker.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Weak};
use std::time::Duration;

use dashmap::DashMap;
use rmcp::ServiceExt;
use tokio_util::sync::CancellationToken;

use super::PodGator;
use crate::core::{Core, CoreError, PodEndpoints, Seat};
use crate::pods::Engine;
use crate::pods::plan::GATOR_SOCKET_NAME as SOCKET_NAME;

/// Largest JSON-RPC message an agent may send (tool arguments are small).
const MAX_MESSAGE: usize = 1 << 20;
/// Connections one pod may hold open at once.
const MAX_CONNECTIONS: usize = 8;

pub struct PodSockets<E> {
    core: Weak<Core<E>>,
    root: PathBuf,
    listeners: DashMap<String, CancellationToken>,
    /// The open MCP sessions of each workspace, told when its scopes change.
    peers: Arc<DashMap<String, Vec<rmcp::Peer<rmcp::RoleServer>>>>,
    shutdown: CancellationToken,
    /// The devaipod executable agent containers run as the bridge (the daemon's copy).
    bridge: PathBuf,
}

impl<E: Engine + 'static> PodSockets<E> {
    /// Serves gator for `core`'s pods until `shutdown`; sockets live under `<runtime>/gator`;
    /// agent containers run `bridge` as gator's stdio bridge.
    pub fn new(core: &Arc<Core<E>>, shutdown: CancellationToken, bridge: PathBuf) -> Arc<Self> {
        let sockets = Arc::new(PodSockets {
            core: Arc::downgrade(core),
            root: core.paths.runtime.join("gator"),
            listeners: DashMap::new(),
            peers: Arc::new(DashMap::new()),
            shutdown,
            bridge,
        });
        // Scopes changed: the agent's tool list did too (`notifications/tools/list_changed`).
        let peers = sockets.peers.clone();
        let mut events = core.subscribe();
        let stop = sockets.shutdown.clone();
        tokio::spawn(async move {
            loop {
                let e = tokio::select! {
                    _ = stop.cancelled() => break,
                    e = events.recv() => e,
                };
                match e {
                    Ok(e) if e.kind == "scopes" => {
                        let list: Vec<_> = peers.get(&e.workspace).map(|p| p.clone()).unwrap_or_default();
                        for peer in list {
                            let _ = tokio::time::timeout(Duration::from_secs(2), peer.notify_tool_list_changed()).await;
                        }
                        if let Some(mut p) = peers.get_mut(&e.workspace) {
                            p.retain(|peer| !peer.is_transport_closed());
                        }
                    }
                    Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                    Err(_) => break,
                }
            }
        });
        sockets
    }

    /// Opens the sockets of every workspace in the store and of their workers (after a
    /// daemon start: the agent containers keep the directory mounted, so a new socket in it
    /// is reachable at once).
    pub async fn open_all(&self) -> Result<(), CoreError> {
        let Some(core) = self.core.upgrade() else { return Ok(()) };
        let mut keys = core.workspace_names().await?;
        keys.extend(core.worker_keys().await?);
        for ws in keys {
            if let Err(e) = self.open(&ws) {
                tracing::warn!("gator: cannot open the socket of {ws}: {e}");
            }
        }
        Ok(())
    }

    fn dir(&self, ws: &str) -> PathBuf {
        self.root.join(ws)
    }
}

fn set_mode(path: &Path, mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
}

impl<E: Engine + 'static> PodEndpoints for PodSockets<E> {
    fn bridge(&self) -> Result<PathBuf, CoreError> {
        Ok(self.bridge.clone())
    }

    fn open(&self, ws: &str) -> Result<PathBuf, CoreError> {
        let io = |what: &str, e: std::io::Error| CoreError::Io(format!("gator socket of {ws}: {what}: {e}"));
        let dir = self.dir(ws);
        std::fs::create_dir_all(&dir).map_err(|e| io("create directory", e))?;
        // The agent runs as an unprivileged user: it must reach into the directory and
        // connect to the socket, and there is nothing else in there.
        set_mode(&self.root, 0o711).map_err(|e| io("chmod", e))?;
        set_mode(&dir, 0o755).map_err(|e| io("chmod", e))?;
        let path = dir.join(SOCKET_NAME);
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io("remove old socket", e)),
        }
        let listener = tokio::net::UnixListener::bind(&path).map_err(|e| io("bind", e))?;
        set_mode(&path, 0o666).map_err(|e| io("chmod", e))?;

        // The egress proxy's socket beside it (the agent-shim's way out; see `egress`).
        let egress_path = dir.join(crate::egress::SOCKET_NAME);
        match std::fs::remove_file(&egress_path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io("remove old egress socket", e)),
        }
        let egress = tokio::net::UnixListener::bind(&egress_path).map_err(|e| io("bind egress", e))?;
        set_mode(&egress_path, 0o666).map_err(|e| io("chmod", e))?;

        let token = self.shutdown.child_token();
        if let Some(old) = self.listeners.insert(ws.to_owned(), token.clone()) {
            old.cancel();
        }
        let (workspace, seat) = Seat::from_key(ws);
        let workspace = workspace.to_owned();
        if let Some(core) = self.core.upgrade() {
            tokio::spawn(crate::egress::serve(egress, &core, &workspace, seat, token.clone()));
        }
        let core = self.core.clone();
        let key = ws.to_owned();
        let connections = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
        let peers = self.peers.clone();
        tokio::spawn(async move {
            loop {
                let stream = tokio::select! {
                    _ = token.cancelled() => break,
                    accepted = listener.accept() => match accepted {
                        Ok((s, _)) => s,
                        Err(e) => {
                            tracing::warn!("gator: accept on {key}'s socket: {e}");
                            tokio::time::sleep(Duration::from_millis(100)).await;
                            continue;
                        }
                    },
                };
                let Some(core) = core.upgrade() else { break };
                // A pod gets a few connections at a time (opencode opens one), no more.
                let Ok(permit) = connections.clone().try_acquire_owned() else {
                    tracing::debug!("gator: {key} opened too many connections; refusing one");
                    continue;
                };
                let handler = PodGator::new(core, workspace.clone(), seat);
                let conn_token = token.clone();
                let (peers, ws_of_conn) = (peers.clone(), workspace.clone());
                tokio::spawn(async move {
                    let _permit = permit;
                    let (read, write) = stream.into_split();
                    // A bounded line: an agent cannot make the daemon buffer without end.
                    let transport = rmcp::transport::async_rw::AsyncRwTransport::new_server(read, write)
                        .with_max_line_length(MAX_MESSAGE);
                    // A connection that does not initialize in time gives its place back.
                    let served = tokio::time::timeout(Duration::from_secs(30), handler.serve(transport)).await;
                    match served {
                        Ok(Ok(running)) => {
                            let mut list = peers.entry(ws_of_conn.clone()).or_default();
                            list.retain(|p| !p.is_transport_closed());
                            list.push(running.peer().clone());
                            drop(list);
                            tokio::select! {
                                _ = conn_token.cancelled() => {}
                                _ = running.waiting() => {}
                            }
                        }
                        Ok(Err(e)) => tracing::debug!("gator: a connection ended before initializing: {e}"),
                        Err(_) => tracing::debug!("gator: a connection sent no initialize in 30 s"),
                    }
                });
            }
        });
        Ok(dir)
    }

    /// Closes the workspace's sockets and its workers'.
    fn close(&self, ws: &str) {
        let keys: Vec<String> =
            self.listeners.iter().map(|e| e.key().clone()).filter(|k| Seat::from_key(k).0 == ws).collect();
        for key in keys {
            if let Some((_, token)) = self.listeners.remove(&key) {
                token.cancel();
            }
            let _ = std::fs::remove_dir_all(self.dir(&key));
        }
        self.peers.remove(ws);
        let _ = std::fs::remove_dir_all(self.dir(ws));
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;
    use crate::core::testing::{WS, World};

    /// `open` serves gator's and the egress proxy's sockets side by side (0666, the
    /// directory mounted into the pod); `close` stops both and removes them.
    #[tokio::test]
    async fn a_pod_gets_its_egress_socket_beside_gator_and_loses_both_at_close() {
        use std::os::unix::fs::PermissionsExt;
        let w = World::new().await;
        let stop = CancellationToken::new();
        let sockets = PodSockets::new(&w.core, stop.clone(), PathBuf::from("/bin/true"));
        let dir = sockets.open(WS).unwrap();
        let egress = dir.join(crate::egress::SOCKET_NAME);
        for name in [SOCKET_NAME, crate::egress::SOCKET_NAME] {
            let mode = std::fs::metadata(dir.join(name)).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o666, "{name}");
        }
        let mut s = tokio::net::UnixStream::connect(&egress).await.unwrap();
        s.write_all(b"CONNECT 127.0.0.1:9 HTTP/1.1\r\nHost: 127.0.0.1:9\r\n\r\n").await.unwrap();
        let mut answer = String::new();
        let mut chunk = [0u8; 512];
        while !answer.contains("allow-hosts") {
            let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut chunk)).await.unwrap().unwrap();
            assert!(n > 0, "{answer}");
            answer.push_str(&String::from_utf8_lossy(&chunk[..n]));
        }
        assert!(answer.starts_with("HTTP/1.1 403"), "{answer}");
        let rows = w.core.audit_log(Some(WS), 10).await.unwrap();
        assert_eq!((rows[0].tool.as_str(), rows[0].decision.as_str()), ("egress", "deny"));

        sockets.close(WS);
        assert!(!dir.exists());
        assert!(tokio::net::UnixStream::connect(&egress).await.is_err());
        stop.cancel();
    }
}
