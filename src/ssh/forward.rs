//! Port forwarding into a pod: the bytes between a connection made inside the pod's
//! network namespace (`Engine::connect_port`) and an SSH channel (`direct-tcpip`) or a
//! local listener (`devaipod forward`). The same path for both.

use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncWrite};

use crate::pods::Engine;

/// Copies both ways until both sides are done; returns (bytes to the pod, bytes from it).
/// Each direction waits for its reader: a slow side holds the other back (backpressure).
pub async fn pump<P, C>(mut pod: P, mut client: C) -> (u64, u64)
where
    P: AsyncRead + AsyncWrite + Unpin,
    C: AsyncRead + AsyncWrite + Unpin,
{
    match tokio::io::copy_bidirectional(&mut client, &mut pod).await {
        Ok((to_pod, from_pod)) => (to_pod, from_pod),
        Err(e) => {
            tracing::debug!("forward: {e}");
            (0, 0)
        }
    }
}

/// Serves `listener` (on the host's loopback): each connection is joined to `port` inside
/// `container`. Runs until the listener fails.
pub async fn serve_local<E: Engine>(
    engine: Arc<E>,
    container: String,
    port: u16,
    listener: tokio::net::TcpListener,
) -> std::io::Result<()> {
    loop {
        let (client, _) = listener.accept().await?;
        let (engine, container) = (engine.clone(), container.clone());
        tokio::spawn(async move {
            match engine.connect_port(&container, port).await {
                Ok(pod) => {
                    pump(pod, client).await;
                }
                Err(e) => eprintln!("devaipod forward: port {port}: {e}"),
            }
        });
    }
}
