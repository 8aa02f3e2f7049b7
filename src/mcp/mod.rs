//! devaipod as an MCP server for outer assistants and IDEs (rmcp): the tools of DESIGN §6
//! over stdio (`devaipod mcp`, a client of the daemon) and streamable HTTP (`/mcp` in the
//! daemon, behind the bearer token). Tools are thin: each is one or two calls of the
//! daemon's JSON API (see `backend.rs`), so every face shows the same state.
//!
//! Bad arguments never become protocol errors: every tool answers `isError` with a message
//! that says what to fix.

mod backend;
mod tools;

pub use backend::Backend;
pub use tools::DevaipodMcp;

use std::sync::Arc;

use rmcp::transport::streamable_http_server::{
    StreamableHttpServerConfig, StreamableHttpService, session::local::LocalSessionManager,
};

/// The `/mcp` service of the daemon: Host and Origin checks on (loopback only), stateless
/// JSON answers where possible.
pub fn http_service(
    backend: Backend,
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
        move || Ok(DevaipodMcp::new(backend.clone())),
        Arc::new(LocalSessionManager::default()),
        config,
    )
}

/// `devaipod mcp`: serves MCP on stdin/stdout until the client leaves.
pub async fn serve_stdio(backend: Backend) -> anyhow::Result<()> {
    use rmcp::ServiceExt;
    let service = DevaipodMcp::new(backend).serve(rmcp::transport::stdio()).await?;
    service.waiting().await?;
    Ok(())
}
