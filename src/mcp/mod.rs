//! devaipod as an MCP server for outer assistants and IDEs (rmcp): the tools of DESIGN §6
//! over stdio (`devaipod mcp`, a client of the daemon) and streamable HTTP (`/mcp` in the
//! daemon, behind the bearer token). Tools are thin: each is one or two calls of the
//! daemon's JSON API through the typed client (`crate::client`: over the unix socket for
//! stdio, through the daemon's router in process for `/mcp`), so every face shows the same
//! state and core makes every decision.
//!
//! Bad arguments never become protocol errors: every tool answers `isError` with a message
//! that says what to fix.

mod tools;

pub use tools::{Caller, DevaipodMcp};

use crate::client::Client;

use std::sync::Arc;

use rmcp::transport::streamable_http_server::{
    StreamableHttpServerConfig, StreamableHttpService, session::local::LocalSessionManager,
};

/// The `/mcp` service of the daemon: Host and Origin checks on (loopback only), stateless
/// JSON answers where possible.
pub fn http_service(
    client: Client,
    port: u16,
    shutdown: tokio_util::sync::CancellationToken,
) -> StreamableHttpService<DevaipodMcp, LocalSessionManager> {
    let origins =
        [format!("http://127.0.0.1:{port}"), format!("http://localhost:{port}"), format!("http://[::1]:{port}")];
    let config = StreamableHttpServerConfig::default()
        .with_allowed_hosts(["localhost", "127.0.0.1", "::1", "[::1]"])
        .with_allowed_origins(origins)
        .enforce_origin_validation()
        .with_cancellation_token(shutdown);
    StreamableHttpService::new(
        move || Ok(DevaipodMcp::new(client.clone(), Caller::default())),
        Arc::new(LocalSessionManager::default()),
        config,
    )
}

/// `devaipod mcp`: serves MCP on stdin/stdout until the client leaves. The caller (the
/// process that started `devaipod mcp`) lends its working directory and environment to
/// `create_workspace`, as a shell does to `devaipod up`.
pub async fn serve_stdio(client: Client) -> anyhow::Result<()> {
    use rmcp::ServiceExt;
    let caller = Caller { cwd: std::env::current_dir().ok(), env: Some(crate::core::CallerEnv::current()) };
    let service = DevaipodMcp::new(client, caller).serve(rmcp::transport::stdio()).await?;
    service.waiting().await?;
    Ok(())
}
