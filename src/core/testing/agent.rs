//! A scriptable in-memory agent. Each prompt plays the next scripted [`Turn`] (complete,
//! fail, hang, stop, ask) in the background, as a real agent works after accepting a
//! prompt; prompts, sessions, aborts and connections are recorded for the test to count.
//! It answers only while its container runs in the [`FakeEngine`] and only to the pod's
//! password on its API socket (in the directory mounted into its container), so core must
//! find and authenticate it as it would opencode. It is its own [`AgentConnector`].

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::future::BoxFuture;
use futures_util::stream::BoxStream;
use tokio::sync::broadcast;

use super::engine::FakeEngine;
use crate::agent::{Agent, AgentConnector, AgentError, AgentEvent, DynAgent, Outcome};
use crate::pods::naming::{Role, WorkspaceName};
use crate::pods::plan;

/// What the agent does with a prompt.
#[derive(Debug, Clone)]
pub enum Turn {
    /// Writes `files` (path relative to the repository, content) into its clone, reporting
    /// a tool call for each, then answers `text`.
    Complete { text: String, files: Vec<(String, String)> },
    /// The LLM provider fails: the turn ends with this error.
    Fail(String),
    /// Works and never finishes (until the test plays another turn with [`FakeAgent::finish`]).
    Hang,
    /// The agent's container stops mid-turn: its event stream ends, its API is gone.
    Stop,
    /// Asks for input (a permission) and waits.
    Ask(String),
    /// Plays the turn after a while.
    After(Duration, Box<Turn>),
}

impl Turn {
    pub fn complete(text: &str) -> Turn {
        Turn::Complete { text: text.to_owned(), files: Vec::new() }
    }

    /// A complete turn that also writes `path` (relative to the repository).
    pub fn writes(self, path: &str, content: &str) -> Turn {
        match self {
            Turn::Complete { text, mut files } => {
                files.push((path.to_owned(), content.to_owned()));
                Turn::Complete { text, files }
            }
            other => panic!("only a complete turn writes files, not {other:?}"),
        }
    }

    pub fn after(self, delay: Duration) -> Turn {
        Turn::After(delay, Box::new(self))
    }
}

#[derive(Debug, Clone, Default)]
struct Session {
    user_turns: usize,
    busy: bool,
    answered: bool,
    final_text: Option<String>,
    error: Option<String>,
}

struct State {
    ready: bool,
    script: VecDeque<Turn>,
    sessions: BTreeMap<String, Session>,
    /// (session, text) of every prompt accepted.
    prompts: Vec<(String, String)>,
    aborts: Vec<String>,
    /// (base URL, password) of every client core made.
    connects: Vec<(String, String)>,
    events: broadcast::Sender<AgentEvent>,
    /// The next prompt is accepted, but its caller never hears back.
    hold_reply: bool,
    /// This many more readiness probes are accepted and never answered (as opencode does
    /// with requests that arrive just before it serves).
    silent_probes: usize,
    /// Readiness probes made.
    probes: usize,
    /// The session of the latest prompt.
    last_session: Option<String>,
}

#[derive(Clone)]
pub struct FakeAgent {
    state: Arc<Mutex<State>>,
    engine: FakeEngine,
    workspace: WorkspaceName,
    /// Turns play here, so that they go on when a test "crashes" the daemon's runtime.
    runtime: tokio::runtime::Handle,
}

impl FakeAgent {
    /// The agent of workspace `workspace` in `engine`. Call inside the test's runtime.
    pub fn new(engine: FakeEngine, workspace: &str) -> FakeAgent {
        let state = State {
            ready: true,
            script: VecDeque::new(),
            sessions: BTreeMap::new(),
            prompts: Vec::new(),
            aborts: Vec::new(),
            connects: Vec::new(),
            events: broadcast::channel(256).0,
            hold_reply: false,
            silent_probes: 0,
            probes: 0,
            last_session: None,
        };
        FakeAgent {
            state: Arc::new(Mutex::new(state)),
            engine,
            workspace: WorkspaceName::new(workspace).expect("a valid workspace name"),
            runtime: tokio::runtime::Handle::current(),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The next prompt plays `turn` (unscripted prompts complete with "done").
    pub fn script(&self, turn: Turn) {
        self.state().script.push_back(turn);
    }

    /// Whether the API serves once the container runs.
    pub fn set_ready(&self, ready: bool) {
        self.state().ready = ready;
    }

    /// The next prompt is accepted, but the call delivering it never returns (a daemon
    /// that dies between the agent's acceptance and its own record of it).
    pub fn hold_next_reply(&self) {
        self.state().hold_reply = true;
    }

    /// The next `n` readiness probes are accepted but never answered.
    pub fn silence_probes(&self, n: usize) {
        self.state().silent_probes = n;
    }

    /// How many readiness probes were made.
    pub fn probes(&self) -> usize {
        self.state().probes
    }

    pub fn prompts(&self) -> Vec<(String, String)> {
        self.state().prompts.clone()
    }

    pub fn aborts(&self) -> Vec<String> {
        self.state().aborts.clone()
    }

    pub fn sessions(&self) -> Vec<String> {
        self.state().sessions.keys().cloned().collect()
    }

    pub fn connects(&self) -> Vec<(String, String)> {
        self.state().connects.clone()
    }

    /// Plays `turn` in the session of the latest prompt (which hangs or waits for input).
    pub fn finish(&self, turn: Turn) {
        let session = self.state().last_session.clone().expect("a prompt before finish");
        self.runtime.spawn(self.clone().play(session, turn));
    }

    fn container(&self) -> String {
        self.workspace.container(Role::Agent)
    }

    fn emit(&self, event: AgentEvent) {
        // No subscriber is fine.
        let _ = self.state().events.send(event);
    }

    fn update(&self, session: &str, f: impl FnOnce(&mut Session)) {
        if let Some(s) = self.state().sessions.get_mut(session) {
            f(s);
        }
    }

    fn play(self, session: String, turn: Turn) -> BoxFuture<'static, ()> {
        Box::pin(async move {
            let s = session.clone();
            match turn {
                Turn::After(delay, turn) => {
                    tokio::time::sleep(delay).await;
                    return self.play(session, *turn).await;
                }
                Turn::Stop => {
                    self.emit(AgentEvent::Busy { session: s });
                    self.engine.stop_container(&self.container());
                    // The only sender goes: every event stream ends.
                    self.state().events = broadcast::channel(256).0;
                    return;
                }
                _ => self.emit(AgentEvent::Busy { session: s.clone() }),
            }
            match turn {
                Turn::Complete { text, files } => {
                    let dir = self.engine.workdir(&self.container()).expect("the agent's container");
                    for (i, (path, content)) in files.iter().enumerate() {
                        let file = dir.join(path);
                        if let Some(parent) = file.parent() {
                            std::fs::create_dir_all(parent).expect("a directory in the agent's clone");
                        }
                        std::fs::write(&file, content).expect("a file in the agent's clone");
                        self.emit(AgentEvent::Tool {
                            session: s.clone(),
                            key: format!("write-{i}:completed"),
                            tool: "write".into(),
                            status: "completed".into(),
                            title: path.clone(),
                        });
                    }
                    self.update(&s, |st| {
                        st.final_text = Some(text);
                        st.answered = true;
                        st.busy = false;
                    });
                    self.emit(AgentEvent::Idle { session: s });
                }
                Turn::Fail(message) => {
                    self.update(&s, |st| {
                        st.error = Some(message.clone());
                        st.answered = true;
                        st.busy = false;
                    });
                    self.emit(AgentEvent::Error { session: s.clone(), message });
                    self.emit(AgentEvent::Idle { session: s });
                }
                Turn::Ask(what) => {
                    self.emit(AgentEvent::NeedsInput { session: s, key: "permission-1".into(), what });
                }
                Turn::Hang | Turn::Stop | Turn::After(..) => {}
            }
        })
    }
}

impl AgentConnector for FakeAgent {
    fn connect(&self, base_url: &str, password: &str) -> Arc<dyn DynAgent> {
        self.state().connects.push((base_url.to_owned(), password.to_owned()));
        Arc::new(Client { agent: self.clone(), url: base_url.to_owned(), password: password.to_owned() })
    }
}

/// A client of the fake agent, as core's connector makes it.
struct Client {
    agent: FakeAgent,
    url: String,
    password: String,
}

impl Client {
    /// What a real client meets: no answer unless the container runs and the URL is its
    /// published port; 401 without the pod's password.
    fn reach(&self) -> Result<MutexGuard<'_, State>, AgentError> {
        let a = &self.agent;
        let unreachable = |message: &str| AgentError::Unreachable { url: self.url.clone(), message: message.into() };
        if a.engine.container_state(&a.container()) != Some("running") {
            return Err(unreachable("connection refused"));
        }
        // Its API socket is in the directory mounted at the agent's API directory.
        let dir = a.engine.bind_source(&a.container(), plan::AGENT_API_DIR);
        let socket = dir.map(|d| crate::agent::endpoint::unix(&d.join(plan::AGENT_API_SOCKET)));
        if socket.as_deref() != Some(self.url.as_str()) {
            return Err(unreachable("no such socket (not the agent's API socket)"));
        }
        let secret = a.engine.secret(&format!("{}-agent-password", a.workspace.pod()));
        if secret.as_deref() != Some(self.password.as_str()) {
            return Err(AgentError::Status { what: "a call".into(), status: 401, body: "Unauthorized".into() });
        }
        Ok(a.state())
    }

    fn session<'a>(state: &'a mut State, session: &str) -> Result<&'a mut Session, AgentError> {
        state.sessions.get_mut(session).ok_or_else(|| AgentError::Status {
            what: format!("session {session}"),
            status: 404,
            body: "no such session".into(),
        })
    }
}

impl Agent for Client {
    async fn ready(&self) -> bool {
        let (silent, ready) = match self.reach() {
            Ok(mut s) => {
                s.probes += 1;
                let silent = s.silent_probes > 0;
                s.silent_probes = s.silent_probes.saturating_sub(1);
                (silent, s.ready)
            }
            Err(_) => {
                self.agent.state().probes += 1;
                return false;
            }
        };
        if silent {
            std::future::pending::<()>().await;
        }
        ready
    }

    async fn create_session(&self, _title: &str) -> Result<String, AgentError> {
        let mut s = self.reach()?;
        let id = format!("ses-{}", s.sessions.len() + 1);
        s.sessions.insert(id.clone(), Session::default());
        Ok(id)
    }

    async fn prompt(&self, session: &str, text: &str, _model: Option<&str>) -> Result<(), AgentError> {
        let (turn, hold) = {
            let mut s = self.reach()?;
            let st = Self::session(&mut s, session)?;
            *st = Session { user_turns: st.user_turns + 1, busy: true, ..Session::default() };
            s.prompts.push((session.to_owned(), text.to_owned()));
            s.last_session = Some(session.to_owned());
            let turn = s.script.pop_front().unwrap_or_else(|| Turn::complete("done"));
            (turn, std::mem::take(&mut s.hold_reply))
        };
        self.agent.runtime.spawn(self.agent.clone().play(session.to_owned(), turn));
        if hold {
            std::future::pending::<()>().await;
        }
        Ok(())
    }

    async fn is_busy(&self, session: &str) -> Result<bool, AgentError> {
        let mut s = self.reach()?;
        Ok(Self::session(&mut s, session)?.busy)
    }

    async fn outcome(&self, session: &str) -> Result<Outcome, AgentError> {
        let mut s = self.reach()?;
        let st = Self::session(&mut s, session)?;
        Ok(Outcome {
            delivered: st.user_turns > 0,
            final_text: st.final_text.clone(),
            error: st.error.clone(),
            user_turns: st.user_turns,
            answered: st.answered,
        })
    }

    async fn abort(&self, session: &str) -> Result<(), AgentError> {
        let mut s = self.reach()?;
        s.aborts.push(session.to_owned());
        let st = Self::session(&mut s, session)?;
        if st.busy {
            *st = Session {
                busy: false,
                answered: true,
                error: Some("MessageAbortedError: aborted".into()),
                ..st.clone()
            };
        }
        Ok(())
    }

    async fn events(&self) -> Result<BoxStream<'static, AgentEvent>, AgentError> {
        let rx = self.reach()?.events.subscribe();
        let stream = futures_util::stream::unfold(rx, |mut rx| async move {
            loop {
                match rx.recv().await {
                    Ok(ev) => return Some((ev, rx)),
                    Err(broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(broadcast::error::RecvError::Closed) => return None,
                }
            }
        });
        Ok(stream.boxed())
    }
}
