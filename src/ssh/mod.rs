//! The SSH server into workspaces (russh), an adapter over `core` like `web` and `mcp`.
//!
//! The SSH user names the target: `<workspace>` is the workspace container as its
//! `remoteUser`, in the workspace folder, with `remoteEnv`; `<workspace>+agent` is the
//! agent's container as the agent's user, with its confinement as it is (its commands are
//! podman execs into that container: same namespaces, capabilities, seccomp profile and
//! read-only main workspace). Logins are public-key only, checked against `[ssh]
//! authorized-keys`; the host key is made once in the data directory (0600). Every session
//! and every forward is an audit row (tool `ssh`): who (the key's fingerprint), the target,
//! when it opened and how it ended.
//!
//! - `target.rs` (**pure**): user → target, what each request runs, the limits on env
//!   and forwards.
//! - `keys.rs`: host key, authorized keys, fingerprints.
//! - `server.rs`: the russh handler and the accept loop.
//! - `channel.rs`: a session channel (exec, shell with a terminal, sftp) to its end.
//! - `forward.rs`: the bytes of a port forward (`direct-tcpip` and `devaipod forward`).
//! - `export.rs` (**pure**): `devaipod ssh-config`'s text and the known_hosts line.

mod channel;
pub mod export;
pub mod forward;
pub mod keys;
mod server;
pub mod target;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::core::{Core, Paths};
use crate::pods::Engine;

#[derive(Debug, thiserror::Error)]
pub enum SshError {
    #[error("SSH host key {}: {message}", path.display())]
    HostKey { path: PathBuf, message: String },
    #[error(
        "the SSH server cannot listen on {addr}: {message} (set [ssh] listen to a free address, or [ssh] enabled = false)"
    )]
    Listen { addr: String, message: String },
}

/// Where a running daemon says its SSH server listens (`<runtime>/ssh-listen`).
pub fn listen_file(paths: &Paths) -> PathBuf {
    paths.runtime.join("ssh-listen")
}

/// The known_hosts file that pins the daemon's host key (`devaipod ssh-config` names it).
pub fn known_hosts_file(data: &Path) -> PathBuf {
    data.join("ssh").join("known_hosts")
}

/// Starts the SSH server of `[ssh]`: the host key (made when there is none), the
/// known_hosts file, the listener; serves until `shutdown`. Returns where it listens.
pub async fn start<E: Engine>(core: Arc<Core<E>>, shutdown: CancellationToken) -> Result<SocketAddr, SshError> {
    let ssh = &core.config.ssh;
    let data = core.paths.data.clone();
    let key = {
        let data = data.clone();
        tokio::task::spawn_blocking(move || keys::load_or_create_host_key(&data))
            .await
            .map_err(|e| SshError::HostKey { path: keys::host_key_path(&core.paths.data), message: e.to_string() })??
    };
    let public = key
        .public_key()
        .to_openssh()
        .map_err(|e| SshError::HostKey { path: keys::host_key_path(&data), message: e.to_string() })?;
    let known_hosts = known_hosts_file(&data);
    std::fs::write(&known_hosts, export::known_hosts_line(core.instance(), &public))
        .map_err(|e| SshError::HostKey { path: known_hosts.clone(), message: e.to_string() })?;
    let listen_err = |message: String| SshError::Listen { addr: ssh.listen.clone(), message };
    let listener = tokio::net::TcpListener::bind(&ssh.listen).await.map_err(|e| listen_err(e.to_string()))?;
    let addr = listener.local_addr().map_err(|e| listen_err(e.to_string()))?;
    std::fs::write(listen_file(&core.paths), addr.to_string()).map_err(|e| listen_err(e.to_string()))?;
    let authorized = ssh.authorized_keys_path();
    tokio::spawn(server::serve(core.clone(), listener, key, authorized, shutdown));
    Ok(addr)
}
