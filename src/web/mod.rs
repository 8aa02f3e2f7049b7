//! The daemon's HTTP side (axum): `/healthz`, the JSON API under `/api/v1`, `/mcp`, and
//! the web UI (pages, login, the agent-UI proxy). Served on a 0600 unix socket, where the
//! file mode is the authentication (API only), and on a loopback TCP address, where every
//! route but `/login`, its stylesheet and `/healthz` needs the bearer token or a login
//! session (see `session.rs`). `process.rs`: the daemon process behind both (its version,
//! its graceful stop).

pub mod api;
pub mod auth;
pub mod error;
pub mod extract;
pub mod html;
pub mod pages;
pub mod process;
pub mod proxy;
pub mod routes;
pub mod session;
pub mod set_page;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use axum::Router;
use tokio_util::sync::CancellationToken;

use crate::core::Core;
use crate::pods::Engine;
use routes::Routes;

/// The API routes (state: the core), without authentication (added per listener).
pub fn api_routes<E: Engine>() -> Routes<Arc<Core<E>>> {
    use api::*;
    Routes::default()
        .get("/api/v1/workspaces", list_workspaces::<E>)
        .post("/api/v1/workspaces", create_workspace::<E>)
        .get("/api/v1/workspaces/{name}", get_workspace::<E>)
        .delete("/api/v1/workspaces/{name}", delete_workspace::<E>)
        .post("/api/v1/workspaces/{name}/stop", stop_workspace::<E>)
        .post("/api/v1/workspaces/{name}/start", start_workspace::<E>)
        .get("/api/v1/workspaces/{name}/exec", exec_target::<E>)
        .get("/api/v1/workspaces/{name}/scopes", get_scopes::<E>)
        .post("/api/v1/workspaces/{name}/scopes", add_scope::<E>)
        .post("/api/v1/workspaces/{name}/scopes/remove", remove_scope::<E>)
        .get("/api/v1/workspaces/{name}/egress", get_egress::<E>)
        .get("/api/v1/workspaces/{name}/kube", get_kube::<E>)
        .post("/api/v1/workspaces/{name}/egress", allow_egress::<E>)
        .put("/api/v1/workspaces/{name}/egress", set_egress::<E>)
        .delete("/api/v1/workspaces/{name}/egress", remove_egress::<E>)
        .get("/api/v1/tasks", list_tasks::<E>)
        .post("/api/v1/tasks", create_task::<E>)
        .get("/api/v1/tasks/{id}", get_task::<E>)
        .post("/api/v1/tasks/{id}/cancel", cancel_task::<E>)
        .get("/api/v1/proposals", list_proposals::<E>)
        .get("/api/v1/proposals/{id}", get_proposal::<E>)
        .get("/api/v1/proposals/{id}/diff", proposal_diff::<E>)
        .post("/api/v1/proposals/{id}/approve", approve::<E>)
        .post("/api/v1/proposals/{id}/reject", reject::<E>)
        .get("/api/v1/sets", list_sets::<E>)
        .post("/api/v1/sets", create_set::<E>)
        .get("/api/v1/sets/{id}", get_set::<E>)
        .get("/api/v1/sets/{id}/diff", set_diff::<E>)
        .post("/api/v1/sets/{id}/reject", reject_set::<E>)
        .post("/api/v1/sets/{id}/cancel", cancel_set::<E>)
        .get("/api/v1/pool", get_pool::<E>)
        .get("/api/v1/events", events::<E>)
        .get("/api/v1/audit", audit_log::<E>)
        .get("/api/v1/version", daemon_version)
        .post("/api/v1/shutdown", shutdown)
        .get("/api/v1/doctor", doctor_get::<E>)
        .post("/api/v1/doctor", doctor_post::<E>)
}

/// The web UI's routes (state: core, login, proxies).
pub fn page_routes<E: Engine>() -> Routes<pages::WebState<E>> {
    use pages::*;
    Routes::default()
        .get("/healthz", healthz)
        .get("/login", login_page)
        .post("/login", login::<E>)
        .post("/logout", logout::<E>)
        .get("/static/app.css", app_css)
        .get("/static/app.js", app_js)
        .get("/static/shell.css", shell_css)
        .get("/static/shell.js", shell_js)
        .get("/", dashboard::<E>)
        .get("/workspaces/{name}", workspace_page::<E>)
        .get("/workspaces/{name}/agent", agent_page::<E>)
        .get("/proposals/{id}", proposal_page::<E>)
        .get("/sets/{id}", set_page::set_page::<E>)
        .get("/audit", audit_page::<E>)
        .get("/doctor", doctor_page::<E>)
}

async fn healthz() -> &'static str {
    "ok\n"
}

/// The TCP app and its route table. `port` is the listener's (for `/mcp`'s Origin check
/// and the agent UI's framing rule).
pub fn tcp_app<E: Engine>(
    core: Arc<Core<E>>,
    token: String,
    port: u16,
    shutdown: CancellationToken,
) -> (Router, Vec<(&'static str, &'static str)>) {
    let token = Arc::new(token);
    let auth = session::WebAuth::new(token, core.sessions());
    let proxies = proxy::AgentProxies::new(core.clone(), auth.clone(), port, shutdown.clone());
    let state = pages::WebState { core: core.clone(), auth: auth.clone(), proxies };
    let in_process = crate::client::Client::new(Arc::new(unix_app(core.clone())));
    let mcp = crate::mcp::http_service(in_process, port, shutdown);
    let (api, mut table) = api_routes::<E>().with_state(core);
    let (pages, page_table) = page_routes::<E>().with_state(state);
    table.extend(page_table);
    table.extend([("POST", "/mcp"), ("GET", "/mcp"), ("DELETE", "/mcp")]);
    let app = api
        .merge(pages)
        .nest_service("/mcp", mcp)
        .layer(axum::middleware::from_fn_with_state(auth, session::require_auth))
        .layer(axum::middleware::from_fn(session::security_headers));
    (app, table)
}

/// The unix-socket app (the API only): the socket's 0600 mode is the authentication.
pub fn unix_app<E: Engine>(core: Arc<Core<E>>) -> Router {
    let (api, _) = api_routes::<E>().with_state(core);
    Router::new().route("/healthz", axum::routing::get(healthz)).merge(api)
}

/// Longest a stop waits for the work under way (state-changing requests, `up`s).
pub const WORK_GRACE: std::time::Duration = std::time::Duration::from_secs(570);

/// Both apps get the daemon `process`: its version route reports it, its shutdown route
/// stops it, and its stop waits for the state-changing requests under way.
fn with_process(app: Router, process: &Arc<process::DaemonProcess>) -> Router {
    app.layer(axum::middleware::from_fn_with_state(process.clone(), process::track))
        .layer(axum::Extension(process.clone()))
}

/// Serves both listeners until `shutdown` resolves or the API asks `process` to stop. Then
/// no new request is taken; those under way and `up`s finish (at most [`WORK_GRACE`]), open
/// streams get a moment.
pub async fn serve<E: Engine>(
    core: Arc<Core<E>>,
    token: String,
    tcp: tokio::net::TcpListener,
    socket: &Path,
    process: Arc<process::DaemonProcess>,
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
    let asked = process.clone();
    tokio::spawn(async move {
        tokio::select! {
            _ = shutdown => {}
            _ = asked.stop_requested() => {}
        }
        let _ = tx2.send(());
    });
    let mcp_shutdown = CancellationToken::new();
    let port = tcp.local_addr()?.port();
    let (tcp_app, _) = tcp_app(core.clone(), token, port, mcp_shutdown.clone());
    let tcp_app = with_process(tcp_app, &process);
    let tcp = tcp.tap_io(|s| {
        let _ = s.set_nodelay(true);
    });
    let a = axum::serve(tcp, tcp_app).with_graceful_shutdown(async move {
        let _ = rx1.recv().await;
    });
    let b = axum::serve(unix, with_process(unix_app(core), &process)).with_graceful_shutdown(async move {
        let _ = rx2.recv().await;
    });
    // Open streams (events, MCP) never end by themselves: after the signal, give
    // connections a moment, then stop.
    let mut stop = tx.subscribe();
    let servers = async { tokio::try_join!(async { a.await }, async { b.await }) };
    let grace = async {
        let _ = stop.recv().await;
        mcp_shutdown.cancel();
        let work = tokio::time::timeout(WORK_GRACE, process.work_done());
        let _ = tokio::join!(tokio::time::sleep(std::time::Duration::from_secs(3)), work);
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
