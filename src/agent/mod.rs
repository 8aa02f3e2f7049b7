//! Agent backends. Nothing outside `agent` talks to an agent's API. opencode's HTTP API is
//! the first backend: `opencode.rs` is its HTTP client and event parser, `config.rs` the
//! configuration it is started with. `acp` is the second: any Agent Client Protocol agent,
//! bridged in the pod to the same API, so `opencode.rs` is the daemon's client of both. `llm.rs` probes the LLM provider the way the agent
//! reaches it. `core` holds an [`AgentConnector`], which makes a
//! client ([`DynAgent`]) for a workspace's agent; tests give it a fake.

pub mod acp;
pub mod config;
pub mod endpoint;
pub mod llm;
pub mod opencode;
pub mod shim;
mod sse;

use std::future::Future;
use std::sync::Arc;

use futures_util::future::BoxFuture;
use futures_util::stream::BoxStream;

/// What happened in an agent, reduced to what a task needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AgentEvent {
    /// The session started working.
    Busy { session: String },
    /// The session finished its turn.
    Idle { session: String },
    /// The session failed (provider error, abort, …).
    Error { session: String, message: String },
    /// A tool call changed state; `key` identifies the call and its state.
    Tool { session: String, key: String, tool: String, status: String, title: String },
    /// The agent asks for input (a permission or a question).
    NeedsInput { session: String, key: String, what: String },
}

impl AgentEvent {
    pub fn session(&self) -> &str {
        match self {
            AgentEvent::Busy { session }
            | AgentEvent::Idle { session }
            | AgentEvent::Error { session, .. }
            | AgentEvent::Tool { session, .. }
            | AgentEvent::NeedsInput { session, .. } => session,
        }
    }
}

/// What a finished turn left: the final text and the error, if any.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outcome {
    /// Whether the prompt reached the session (a user message exists).
    pub delivered: bool,
    pub final_text: Option<String>,
    pub error: Option<String>,
    /// How many user turns the session has (a follow-up adds one).
    pub user_turns: usize,
    /// Whether the latest turn has a finished answer (or an error).
    pub answered: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("the agent does not answer at {url}: {message}")]
    Unreachable { url: String, message: String },
    #[error("the agent answered {status} to {what}: {body}")]
    Status { what: String, status: u16, body: String },
    #[error("unexpected answer from the agent to {what}: {message}")]
    Protocol { what: String, message: String },
}

/// A coding agent with sessions that take prompts and report events.
pub trait Agent: Send + Sync {
    /// Whether the agent's API serves (not merely accepts connections).
    fn ready(&self) -> impl Future<Output = bool> + Send;
    fn create_session(&self, title: &str) -> impl Future<Output = Result<String, AgentError>> + Send;
    /// Delivers a prompt; returns once the agent accepted it (it then works on its own).
    /// `model`: one of the provider's models for this turn (default: the agent's own).
    fn prompt(
        &self,
        session: &str,
        text: &str,
        model: Option<&str>,
    ) -> impl Future<Output = Result<(), AgentError>> + Send;
    fn is_busy(&self, session: &str) -> impl Future<Output = Result<bool, AgentError>> + Send;
    fn outcome(&self, session: &str) -> impl Future<Output = Result<Outcome, AgentError>> + Send;
    fn abort(&self, session: &str) -> impl Future<Output = Result<(), AgentError>> + Send;
    /// The agent's event stream (all sessions); ends when the connection does.
    fn events(&self) -> impl Future<Output = Result<BoxStream<'static, AgentEvent>, AgentError>> + Send;
}

/// [`Agent`] as a trait object (its futures boxed), so that `core` can hold any backend
/// without a type parameter. Every `Agent` is one.
pub trait DynAgent: Send + Sync {
    fn ready(&self) -> BoxFuture<'_, bool>;
    fn create_session<'a>(&'a self, title: &'a str) -> BoxFuture<'a, Result<String, AgentError>>;
    fn prompt<'a>(
        &'a self,
        session: &'a str,
        text: &'a str,
        model: Option<&'a str>,
    ) -> BoxFuture<'a, Result<(), AgentError>>;
    fn is_busy<'a>(&'a self, session: &'a str) -> BoxFuture<'a, Result<bool, AgentError>>;
    fn outcome<'a>(&'a self, session: &'a str) -> BoxFuture<'a, Result<Outcome, AgentError>>;
    fn abort<'a>(&'a self, session: &'a str) -> BoxFuture<'a, Result<(), AgentError>>;
    fn events(&self) -> BoxFuture<'_, Result<BoxStream<'static, AgentEvent>, AgentError>>;
}

impl<A: Agent> DynAgent for A {
    fn ready(&self) -> BoxFuture<'_, bool> {
        Box::pin(Agent::ready(self))
    }

    fn create_session<'a>(&'a self, title: &'a str) -> BoxFuture<'a, Result<String, AgentError>> {
        Box::pin(Agent::create_session(self, title))
    }

    fn prompt<'a>(
        &'a self,
        session: &'a str,
        text: &'a str,
        model: Option<&'a str>,
    ) -> BoxFuture<'a, Result<(), AgentError>> {
        Box::pin(Agent::prompt(self, session, text, model))
    }

    fn is_busy<'a>(&'a self, session: &'a str) -> BoxFuture<'a, Result<bool, AgentError>> {
        Box::pin(Agent::is_busy(self, session))
    }

    fn outcome<'a>(&'a self, session: &'a str) -> BoxFuture<'a, Result<Outcome, AgentError>> {
        Box::pin(Agent::outcome(self, session))
    }

    fn abort<'a>(&'a self, session: &'a str) -> BoxFuture<'a, Result<(), AgentError>> {
        Box::pin(Agent::abort(self, session))
    }

    fn events(&self) -> BoxFuture<'_, Result<BoxStream<'static, AgentEvent>, AgentError>> {
        Box::pin(Agent::events(self))
    }
}

/// How `core` reaches the agent of a workspace: a client for the agent API served at
/// `endpoint` (see [`endpoint`]: the pod's API socket, `unix:<path>`, or an HTTP base URL)
/// with the pod's password. Nothing is contacted until the first call.
pub trait AgentConnector: Send + Sync {
    fn connect(&self, endpoint: &str, password: &str) -> Arc<dyn DynAgent>;
}

/// The production backend: opencode's HTTP API. HTTP endpoints share one connection pool;
/// each API socket gets a client of its own, kept while that socket (by inode) stays.
pub struct OpencodeConnector {
    http: reqwest::Client,
    sockets: dashmap::DashMap<std::path::PathBuf, (Arc<endpoint::SocketRef>, reqwest::Client)>,
}

impl OpencodeConnector {
    pub fn new() -> Self {
        OpencodeConnector { http: opencode::http_client(), sockets: dashmap::DashMap::new() }
    }

    /// The client for the API socket at `path`: the cached one while the socket there is
    /// the same, a new one when it was replaced (the agent restarted).
    fn unix_client(&self, path: &std::path::Path) -> std::io::Result<(Arc<endpoint::SocketRef>, reqwest::Client)> {
        let socket = endpoint::SocketRef::open(path)?;
        if let Some(cached) = self.sockets.get(path).filter(|c| c.0.same(&socket)) {
            return Ok(cached.clone());
        }
        let socket = Arc::new(socket);
        let client = opencode::unix_client(&socket);
        self.sockets.insert(path.to_owned(), (socket.clone(), client.clone()));
        Ok((socket, client))
    }
}

impl Default for OpencodeConnector {
    fn default() -> Self {
        Self::new()
    }
}

impl AgentConnector for OpencodeConnector {
    fn connect(&self, endpoint: &str, password: &str) -> Arc<dyn DynAgent> {
        let password = password.to_owned();
        let (endpoint, directory) = endpoint::split_directory(endpoint);
        Arc::new(
            match endpoint::Endpoint::parse(endpoint) {
                endpoint::Endpoint::Http(base) => {
                    opencode::Opencode::with_http(base.to_owned(), password, self.http.clone())
                }
                endpoint::Endpoint::Unix(path) => match self.unix_client(path) {
                    Ok((socket, client)) => {
                        opencode::Opencode::over_socket(endpoint.to_owned(), password, client, socket)
                    }
                    Err(e) => opencode::Opencode::unreachable_at(endpoint.to_owned(), e.to_string()),
                },
            }
            .in_directory(directory),
        )
    }
}
