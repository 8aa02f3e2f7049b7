//! The Agent Client Protocol backend. An ACP agent (`opencode acp`, Codex or Claude Code
//! through their ACP adapters, …) speaks JSON-RPC on its stdio; in the pod, `devaipod
//! agent-shim --acp` runs it as its child and holds that connection (`bridge`): it
//! initializes the agent, makes and loads sessions (each given gator as an MCP server),
//! sends prompts, turns the agent's session updates into events (`state`), answers its
//! permission requests by policy, and cancels. To the daemon it serves, on the pod's API
//! socket and behind the pod's password, the same agent API as the opencode backend
//! (`agent::opencode` is the client of both), so readiness, restart-resume and delivery
//! work unchanged. See docs/agents.md.

pub mod bridge;
pub mod rpc;
pub mod state;

/// The variable the pod's agent API password arrives in (a podman secret), for either
/// backend. The shim keeps it from an ACP agent.
pub const PASSWORD_ENV: &str = "OPENCODE_SERVER_PASSWORD";
