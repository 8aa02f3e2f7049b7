//! The russh server: public-key logins checked against the authorized keys, session
//! channels handed to `channel::drive`, `direct-tcpip` channels connected inside the pod.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use russh::keys::PublicKey;
use russh::server::{Auth, ChannelOpenHandle, Handler, Msg, PublicKeyOffer, Session, VerifiedPublicKey};
use russh::{Channel, ChannelId, ChannelOpenFailure, MethodKind, MethodSet};
use tokio_util::sync::CancellationToken;

use super::channel::{self, Who};
use super::keys;
use super::target::{self, Target};
use crate::core::Core;
use crate::pods::Engine;

/// An SSH connection idle (no bytes either way) for this long is closed.
const INACTIVITY: Duration = Duration::from_secs(3600);
/// Connections at a time; more wait for one to end.
const MAX_CONNECTIONS: usize = 64;
/// How long a new connection has to send its version line (then `INACTIVITY` applies).
const LOGIN_TIMEOUT: Duration = Duration::from_secs(60);

/// The server's configuration: the host key, public keys only, no compression.
pub fn config(host_key: russh::keys::PrivateKey) -> russh::server::Config {
    let mut methods = MethodSet::empty();
    methods.push(MethodKind::PublicKey);
    russh::server::Config {
        server_id: russh::SshId::Standard(format!("SSH-2.0-devaipod_{}", env!("CARGO_PKG_VERSION")).into()),
        methods,
        keys: vec![host_key],
        inactivity_timeout: Some(INACTIVITY),
        keepalive_interval: Some(Duration::from_secs(60)),
        auth_rejection_time: Duration::from_millis(300),
        auth_rejection_time_initial: Some(Duration::from_millis(0)),
        nodelay: true,
        ..Default::default()
    }
}

/// Accepts connections until `shutdown`; each runs on its own task.
pub async fn serve<E: Engine>(
    core: Arc<Core<E>>,
    listener: tokio::net::TcpListener,
    host_key: russh::keys::PrivateKey,
    authorized_keys: PathBuf,
    shutdown: CancellationToken,
) {
    let config = Arc::new(config(host_key));
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!("ssh: accept: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let Ok(slot) = slots.clone().acquire_owned().await else { return };
        let _ = stream.set_nodelay(true);
        let handler = Conn { core: core.clone(), authorized_keys: authorized_keys.clone(), peer, who: None };
        let (config, shutdown) = (config.clone(), shutdown.clone());
        tokio::spawn(async move {
            let _slot = slot;
            let session =
                match tokio::time::timeout(LOGIN_TIMEOUT, russh::server::run_stream(config, stream, handler)).await {
                    Ok(Ok(s)) => s,
                    Ok(Err(e)) => {
                        tracing::debug!("ssh: connection from {peer}: {e}");
                        return;
                    }
                    Err(_) => return,
                };
            let handle = session.handle();
            tokio::select! {
                r = session => if let Err(e) = r { tracing::debug!("ssh: connection from {peer} ended: {e}") },
                _ = shutdown.cancelled() => {
                    let _ = handle.disconnect(russh::Disconnect::ByApplication, "the devaipod daemon is stopping".into(), "en".into()).await;
                }
            }
        });
    }
}

/// One connection's state.
struct Conn<E> {
    core: Arc<Core<E>>,
    authorized_keys: PathBuf,
    peer: SocketAddr,
    /// Set by a successful login.
    who: Option<Who>,
}

impl<E: Engine> Conn<E> {
    /// Whether `key` may log in; a refusal is logged with why.
    async fn authorized(&self, key: &PublicKey) -> bool {
        match keys::read_authorized(&self.authorized_keys).await {
            Ok(text) => keys::is_authorized(&text, key),
            Err(message) => {
                tracing::warn!("ssh: {message}");
                false
            }
        }
    }
}

impl<E: Engine> Conn<E> {
    /// Logs and audits a key that may not log in (for a user that names a workspace).
    async fn refused(&self, user: &str, key: &PublicKey) {
        let fingerprint = keys::fingerprint(key);
        tracing::info!("ssh: key {fingerprint} from {} is not authorized (user {user})", self.peer);
        if let Ok(t) = Target::parse(user) {
            let who = Who { target: t, fingerprint: fingerprint.clone(), peer: self.peer.to_string() };
            let reason = format!("key {fingerprint} from {} is not in {}", self.peer, self.authorized_keys.display());
            channel::audit(&self.core, &who, &who.target.label(), "deny", reason).await;
        }
    }
}

impl<E: Engine> Handler for Conn<E> {
    type Error = russh::Error;

    async fn auth_publickey_offered(&mut self, user: &str, offer: PublicKeyOffer<'_>) -> Result<Auth, Self::Error> {
        if self.authorized(offer.public_key).await {
            return Ok(Auth::Accept);
        }
        self.refused(user, offer.public_key).await;
        Ok(Auth::reject())
    }

    async fn auth_publickey(&mut self, user: &str, key: VerifiedPublicKey<'_>) -> Result<Auth, Self::Error> {
        let fingerprint = keys::fingerprint(key.public_key);
        if !self.authorized(key.public_key).await {
            self.refused(user, key.public_key).await;
            return Ok(Auth::reject());
        }
        // A user that names no workspace still logs in (the key is the user's own): each
        // request then answers with what is wrong, which a refused login could not say.
        let target = Target::parse(user).unwrap_or(Target { workspace: user.to_owned(), agent: false });
        self.who = Some(Who { target, fingerprint, peer: self.peer.to_string() });
        Ok(Auth::Accept)
    }

    async fn channel_open_session(
        &mut self,
        channel: Channel<Msg>,
        reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        let Some(who) = self.who.clone() else {
            reply.reject(ChannelOpenFailure::AdministrativelyProhibited).await;
            return Ok(());
        };
        reply.accept().await;
        tokio::spawn(channel::drive(self.core.clone(), who, channel));
        Ok(())
    }

    async fn channel_open_direct_tcpip(
        &mut self,
        channel: Channel<Msg>,
        host_to_connect: &str,
        port_to_connect: u32,
        _originator_address: &str,
        _originator_port: u32,
        reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        let Some(who) = self.who.clone() else {
            reply.reject(ChannelOpenFailure::AdministrativelyProhibited).await;
            return Ok(());
        };
        let refuse = |reason: String| ChannelOpenFailure::Other { code: 1, reason };
        let what = format!("{} forward {host_to_connect}:{port_to_connect}", who.target.label());
        let refusal = if who.target.agent {
            Some("the agent's container takes no connections from outside (its walls); forward into the workspace instead".to_owned())
        } else if !target::forward_host_ok(host_to_connect) {
            Some(format!("`{host_to_connect}`: forwards reach the workspace's own ports only (use localhost:<port>)"))
        } else {
            None
        };
        let port = u16::try_from(port_to_connect).ok().filter(|p| *p > 0);
        let (refusal, port) = match (refusal, port) {
            (Some(r), _) => (Some(r), 0),
            (None, None) => (Some(format!("{port_to_connect} is not a port")), 0),
            (None, Some(p)) => (None, p),
        };
        if let Some(reason) = refusal {
            channel::audit(&self.core, &who, &what, "deny", reason.clone()).await;
            reply.reject(refuse(reason)).await;
            return Ok(());
        }
        let core = self.core.clone();
        // Connected on a task of its own: the connection's other channels go on meanwhile.
        tokio::spawn(async move {
            let stream = async {
                let place = core
                    .exec_target(&who.target.workspace, who.target.exec_target())
                    .await
                    .map_err(|e| e.to_string())?;
                core.engine.connect_port(&place.container, port).await.map_err(|e| e.to_string())
            };
            match stream.await {
                Ok(stream) => {
                    reply.accept().await;
                    let reason = format!("opened by {} from {}", who.fingerprint, who.peer);
                    channel::audit(&core, &who, &what, "allow", reason).await;
                    let (up, down) = super::forward::pump(stream, channel.into_stream()).await;
                    let reason = format!("closed: {up} bytes in, {down} bytes out");
                    channel::audit(&core, &who, &what, "allow", reason).await;
                }
                Err(reason) => {
                    channel::audit(&core, &who, &what, "error", reason.clone()).await;
                    reply.reject(ChannelOpenFailure::Other { code: 2, reason }).await;
                }
            }
        });
        Ok(())
    }

    async fn pty_request(
        &mut self,
        channel: ChannelId,
        _term: &str,
        _col_width: u32,
        _row_height: u32,
        _pix_width: u32,
        _pix_height: u32,
        _modes: &[(russh::Pty, u32)],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        session.channel_success(channel)
    }

    async fn env_request(
        &mut self,
        channel: ChannelId,
        variable_name: &str,
        _variable_value: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        if target::env_name_ok(variable_name) {
            session.channel_success(channel)
        } else {
            session.channel_failure(channel)
        }
    }

    async fn shell_request(&mut self, channel: ChannelId, session: &mut Session) -> Result<(), Self::Error> {
        session.channel_success(channel)
    }

    async fn exec_request(
        &mut self,
        channel: ChannelId,
        _data: &[u8],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        session.channel_success(channel)
    }

    async fn subsystem_request(
        &mut self,
        channel: ChannelId,
        name: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        if target::Run::subsystem(name).is_some() {
            session.channel_success(channel)
        } else {
            session.channel_failure(channel)
        }
    }
}
