//! The daemon's HTTP side (axum): `/healthz`, the JSON API under `/api/v1` (and, later,
//! `/mcp` and the web UI). Served on a 0600 unix socket, where the file mode is the
//! authentication, and on a loopback TCP address, where every route but `/healthz` needs
//! the bearer token.

pub mod api;
pub mod auth;
pub mod error;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use axum::Router;
use axum::routing::{get, post};
use tokio_util::sync::CancellationToken;

use crate::core::Core;
use crate::pods::Engine;

/// The API routes, without authentication (the caller adds it per listener).
pub fn api_router<E: Engine>(core: Arc<Core<E>>) -> Router {
    use api::*;
    Router::new()
        .route("/api/v1/workspaces", get(list_workspaces::<E>).post(create_workspace::<E>))
        .route("/api/v1/workspaces/{name}", get(get_workspace::<E>).delete(delete_workspace::<E>))
        .route("/api/v1/workspaces/{name}/stop", post(stop_workspace::<E>))
        .route("/api/v1/workspaces/{name}/start", post(start_workspace::<E>))
        .route("/api/v1/workspaces/{name}/exec", get(exec_target::<E>))
        .route("/api/v1/tasks", get(list_tasks::<E>).post(create_task::<E>))
        .route("/api/v1/tasks/{id}", get(get_task::<E>))
        .route("/api/v1/tasks/{id}/cancel", post(cancel_task::<E>))
        .route("/api/v1/proposals", get(list_proposals::<E>))
        .route("/api/v1/proposals/{id}", get(get_proposal::<E>))
        .route("/api/v1/proposals/{id}/diff", get(proposal_diff::<E>))
        .route("/api/v1/proposals/{id}/approve", post(approve::<E>))
        .route("/api/v1/proposals/{id}/reject", post(reject::<E>))
        .route("/api/v1/events", get(events::<E>))
        .route("/api/v1/workspaces/{name}/scopes", get(get_scopes::<E>).post(add_scope::<E>))
        .route("/api/v1/workspaces/{name}/scopes/remove", post(remove_scope::<E>))
        .route("/api/v1/audit", get(audit_log::<E>))
        .with_state(core)
}

/// Every authenticated route of the API, for the route sweep test.
pub const API_ROUTES: &[(&str, &str)] = &[
    ("GET", "/api/v1/workspaces"),
    ("POST", "/api/v1/workspaces"),
    ("GET", "/api/v1/workspaces/x"),
    ("DELETE", "/api/v1/workspaces/x"),
    ("POST", "/api/v1/workspaces/x/stop"),
    ("POST", "/api/v1/workspaces/x/start"),
    ("GET", "/api/v1/workspaces/x/exec"),
    ("GET", "/api/v1/tasks"),
    ("POST", "/api/v1/tasks"),
    ("GET", "/api/v1/tasks/x"),
    ("POST", "/api/v1/tasks/x/cancel"),
    ("GET", "/api/v1/proposals"),
    ("GET", "/api/v1/proposals/x"),
    ("GET", "/api/v1/proposals/x/diff"),
    ("POST", "/api/v1/proposals/x/approve"),
    ("POST", "/api/v1/proposals/x/reject"),
    ("GET", "/api/v1/events"),
    ("GET", "/api/v1/workspaces/x/scopes"),
    ("POST", "/api/v1/workspaces/x/scopes"),
    ("POST", "/api/v1/workspaces/x/scopes/remove"),
    ("GET", "/api/v1/audit"),
    ("POST", "/mcp"),
    ("GET", "/mcp"),
];

async fn healthz() -> &'static str {
    "ok\n"
}

/// The TCP app: `/healthz` open; the API and `/mcp` behind the bearer token. `port` is the
/// listener's, for `/mcp`'s Origin check.
pub fn tcp_app<E: Engine>(core: Arc<Core<E>>, token: String, port: u16, shutdown: CancellationToken) -> Router {
    let token = auth::Token(Arc::new(token));
    let mcp = crate::mcp::http_service(crate::mcp::Backend::Local(unix_app(core.clone())), port, shutdown);
    let protected = api_router(core)
        .nest_service("/mcp", mcp)
        .layer(axum::middleware::from_fn_with_state(token, auth::require_bearer));
    Router::new().route("/healthz", get(healthz)).merge(protected)
}

/// The unix-socket app: the socket's 0600 mode is the authentication.
pub fn unix_app<E: Engine>(core: Arc<Core<E>>) -> Router {
    Router::new().route("/healthz", get(healthz)).merge(api_router(core))
}

/// Serves both listeners until `shutdown` resolves.
pub async fn serve<E: Engine>(
    core: Arc<Core<E>>,
    token: String,
    tcp: tokio::net::TcpListener,
    socket: &Path,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use axum::serve::ListenerExt;
    let _ = std::fs::remove_file(socket);
    let unix = tokio::net::UnixListener::bind(socket)?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o600))?;
    }
    let (tx, _) = tokio::sync::broadcast::channel::<()>(1);
    let (tx2, mut rx1, mut rx2) = (tx.clone(), tx.subscribe(), tx.subscribe());
    tokio::spawn(async move {
        shutdown.await;
        let _ = tx2.send(());
    });
    let mcp_shutdown = CancellationToken::new();
    let port = tcp.local_addr()?.port();
    let tcp_app = tcp_app(core.clone(), token, port, mcp_shutdown.clone());
    let tcp = tcp.tap_io(|s| {
        let _ = s.set_nodelay(true);
    });
    let a = axum::serve(tcp, tcp_app).with_graceful_shutdown(async move {
        let _ = rx1.recv().await;
    });
    let b = axum::serve(unix, unix_app(core)).with_graceful_shutdown(async move {
        let _ = rx2.recv().await;
    });
    // Open streams (events, MCP) never end by themselves: after the signal, give
    // connections a moment, then stop.
    let mut stop = tx.subscribe();
    let servers = async { tokio::try_join!(async { a.await }, async { b.await }) };
    let grace = async {
        let _ = stop.recv().await;
        mcp_shutdown.cancel();
        tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    };
    tokio::select! {
        r = servers => { r?; }
        _ = grace => {}
    }
    mcp_shutdown.cancel();
    drop(tx);
    Ok(())
}

/// `--listen` value → address; `:0` picks a free port.
pub fn parse_listen(s: &str) -> Result<SocketAddr, String> {
    s.parse().map_err(|_| format!("`{s}` is not an address like 127.0.0.1:8080"))
}

#[cfg(test)]
mod tests;
