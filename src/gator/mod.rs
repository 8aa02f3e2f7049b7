//! Gator: the scoped MCP endpoint each pod's agent reaches for GitHub and git work. This is
//! the adapter above `core`; the GitHub domain it serves (scopes, decisions, the REST client)
//! is `crate::github`, below `core`.
//!
//! - `tools.rs`: the MCP tools an agent sees, filtered by its workspace's scopes; every
//!   call is decided and audited before anything is done.
//! - `sockets.rs`: one unix socket per pod, in a directory mounted only into that pod's
//!   agent container. The socket is the caller's identity: there is no token to steal.
//! - `bridge.rs`: `devaipod gator-bridge`, the stdio ↔ socket pipe opencode runs as a local
//!   MCP server inside the agent container.

pub mod bridge;
mod sockets;
mod tools;

pub use sockets::PodSockets;
pub use tools::PodGator;
