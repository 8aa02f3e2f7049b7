//! The egress proxy: the one way out of an agent's network namespace. Each pod's agent
//! reaches it at `127.0.0.1:3128` inside its namespace (`devaipod agent-shim` relays every
//! connection, byte for byte, to the pod's `egress.sock`, beside gator's socket); the
//! proxy serves that socket as the workspace it belongs to (identity is the socket).
//!
//! - `policy.rs` (**pure**): `decide` (a host and port against `[network]` and the
//!   workspace's own list) and the private-address rule (`forbidden`, `usable`). The
//!   grammar of a host pattern is `config::HostPattern` (the config checks it at load).
//! - `request.rs` (**pure**): a request's method and target → a [`request::Route`]
//!   (`CONNECT`, an absolute `http://` URL, or the LLM route `/llm/…`), the LLM URL, and
//!   which headers never pass.
//! - `proxy.rs`: the I/O: [`serve`] over a unix listener, tunnels, forwards and the LLM
//!   route (TLS to the provider, the key added here), bounded and audited.

pub mod policy;
mod proxy;
pub mod request;

pub use proxy::{Limits, serve, serve_with};

/// The socket's file name in the pod's gator directory (`<runtime>/gator/<ws>/`).
pub const SOCKET_NAME: &str = "egress.sock";
/// Where the agent-shim listens inside the agent's namespace (`HTTP_PROXY`, the LLM route).
pub const AGENT_PORT: u16 = 3128;
