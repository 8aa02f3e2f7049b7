//! Port forwarding into a pod: the bytes between a connection made inside the pod's
//! network namespace (`Engine::connect_port`) and an SSH channel (`direct-tcpip`) or a
//! local listener (`devaipod forward`). The same path for both.

use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::pods::Engine;

/// Copies both ways until both sides are done (or one fails); returns (bytes to the pod,
/// bytes from it) as far as they got. Each direction waits for its reader: a slow side
/// holds the other back (backpressure).
pub async fn pump<P, C>(pod: P, client: C) -> (u64, u64)
where
    P: AsyncRead + AsyncWrite + Unpin,
    C: AsyncRead + AsyncWrite + Unpin,
{
    let (mut pod_r, mut pod_w) = tokio::io::split(pod);
    let (mut client_r, mut client_w) = tokio::io::split(client);
    tokio::join!(copy_counted(&mut client_r, &mut pod_w), copy_counted(&mut pod_r, &mut client_w))
}

/// Copies until end of input, then closes the writer's side; the bytes copied, also when
/// a side failed.
async fn copy_counted<R: AsyncRead + Unpin, W: AsyncWrite + Unpin>(r: &mut R, w: &mut W) -> u64 {
    let (mut buf, mut n) = (vec![0u8; 32 * 1024], 0u64);
    loop {
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(got) => {
                if w.write_all(&buf[..got]).await.is_err() {
                    break;
                }
                n += got as u64;
            }
        }
    }
    let _ = w.shutdown().await;
    n
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
