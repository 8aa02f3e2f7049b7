//! The typed client of the daemon's JSON API, shared by the CLI, `devaipod mcp` (stdio) and
//! `/mcp` in the daemon: typed requests and responses (core's own types), NDJSON progress,
//! server-sent events and error bodies are read here and nowhere else. The transport is the
//! daemon's unix socket or, inside the daemon, its router (`transport.rs`). When no daemon
//! answers on the socket, `connect` starts one in the background (one owner of state, never
//! two writers). On connect, client and daemon compare versions (`version.rs`): a daemon
//! older than its client is restarted with the client's binary when no task is being
//! delivered (`restart.rs`, also `devaipod restart-daemon`), or the client says why not.

mod restart;
mod transport;
pub mod version;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use futures_util::StreamExt;
use http_body_util::BodyExt;
use hyper::{Method, Response};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

pub use restart::Restarted;
pub use transport::{Tcp, Transport, UnixSocket};
pub use version::{DaemonVersion, Supervisor};

use crate::core::doctor::{DoctorReport, DoctorRequest};
use crate::core::{
    ApproveAction, BusEvent, Created, Done, EgressView, ExecPlace, ExecTarget, Paths, ProposalDetail, ProposalPage,
    ProposalQuery, Rejected, ScopeView, SetRejected, SetRequest, SetView, TaskDetail, TaskQuery, UpRequest,
    WorkspaceStatus,
};
use crate::encode::enc;
use crate::store::{AuditEntry, SetRecord, Task};

/// Longest time a call's whole answer may take (a push or an apply can be slow).
const CALL_TIMEOUT: Duration = Duration::from_secs(600);
/// Largest answer read whole (a diff is the largest).
const MAX_ANSWER: usize = 256 << 20;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The daemon refused the request: its own message, and the HTTP status.
    #[error("{message}")]
    Api { status: u16, message: String },
    #[error("the daemon does not answer on {at}: {reason}")]
    Unreachable { at: String, reason: String },
    #[error("the daemon did not answer {path} within {secs} s")]
    Timeout { path: String, secs: u64 },
    #[error("unexpected answer from the daemon to {path}: {reason}")]
    Protocol { path: String, reason: String },
    #[error("{0}")]
    Start(String),
    /// This client and the daemon cannot talk (their API versions differ): what to do.
    #[error("{0}")]
    Incompatible(String),
    #[error("cannot restart the daemon: {0}")]
    Restart(String),
}

impl ClientError {
    /// The HTTP status of a refusal (for tests and callers that branch on it).
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Api { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// A line of `up`'s progress.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpProgress {
    /// A step begins.
    Step(String),
    /// Output of a step (build log, lifecycle command output).
    Detail(String),
}

/// What `up` answered.
#[derive(Debug, Clone, PartialEq)]
pub enum UpResult {
    /// `dry_run`: the plan, as the daemon printed it.
    Planned(Value),
    Created(Box<Created>),
}

#[derive(Clone)]
pub struct Client {
    transport: Arc<dyn Transport>,
}

/// Whether a daemon answers `/healthz` on `socket`.
pub async fn healthy(socket: &Path) -> bool {
    let t = UnixSocket::new(socket);
    matches!(
        tokio::time::timeout(Duration::from_secs(2), t.send(Method::GET, "/healthz", None)).await,
        Ok(Ok(r)) if r.status().is_success()
    )
}

/// A daemon reached over TCP (`[client] url` or `DEVAIPOD_URL`) and its token.
#[derive(Clone, PartialEq, Eq)]
pub struct Remote {
    pub url: String,
    token: String,
}

impl std::fmt::Debug for Remote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Remote").field("url", &self.url).field("token", &"<redacted>").finish()
    }
}

impl Remote {
    /// The daemon to talk to over TCP, if any: `env_url` (`DEVAIPOD_URL`) else the
    /// section's `url`; its token `env_token` (`DEVAIPOD_TOKEN`) else the section's
    /// `token-file`. `None`: this user's own daemon on its unix socket.
    pub fn resolve(
        env_url: Option<&str>,
        env_token: Option<&str>,
        section: &crate::config::ClientSection,
    ) -> Result<Option<Remote>, ClientError> {
        let url = match env_url.filter(|u| !u.is_empty()) {
            Some(u) => crate::config::daemon_url(u).map_err(|e| ClientError::Start(format!("DEVAIPOD_URL: {e}")))?,
            None => match &section.url {
                Some(u) => u.clone(),
                None => return Ok(None),
            },
        };
        let token = match (env_token.filter(|t| !t.trim().is_empty()), &section.token_file) {
            (Some(t), _) => t.trim().to_owned(),
            (None, Some(file)) => std::fs::read_to_string(file)
                .map_err(|e| ClientError::Start(format!("cannot read [client] token-file {}: {e}", file.display())))?
                .trim()
                .to_owned(),
            (None, None) => {
                return Err(ClientError::Start(format!(
                    "the daemon at {url} needs its token: set DEVAIPOD_TOKEN, or [client] token-file to a file holding it (`devaipod token` where the daemon runs prints it; for the daemon in a container: `podman exec devaipod devaipod token`)"
                )));
            }
        };
        if token.is_empty() {
            return Err(ClientError::Start(format!("the token for the daemon at {url} is empty")));
        }
        Ok(Some(Remote { url, token }))
    }

    /// `Remote::resolve` with this process's environment.
    pub fn from_env(section: &crate::config::ClientSection) -> Result<Option<Remote>, ClientError> {
        let var = |k: &str| std::env::var(k).ok();
        Remote::resolve(var("DEVAIPOD_URL").as_deref(), var("DEVAIPOD_TOKEN").as_deref(), section)
    }
}

impl Client {
    /// Connects to a daemon over TCP and meets it: it is never started or restarted from
    /// here (it runs elsewhere: a container, a service, another machine), so a daemon older
    /// than this client is only noted on stderr; differing APIs are refused.
    pub async fn connect_remote(remote: &Remote) -> Result<Client, ClientError> {
        let client = Client::new(Arc::new(Tcp::new(&remote.url, &remote.token)?));
        let next = match client.meet(false).await {
            Err(ClientError::Api { status: 401, .. }) => {
                return Err(ClientError::Api {
                    status: 401,
                    message: format!(
                        "the daemon at {} refused the token: set DEVAIPOD_TOKEN or [client] token-file to its current token (`devaipod token` where it runs)",
                        remote.url
                    ),
                });
            }
            other => other?,
        };
        match next {
            version::Next::Proceed | version::Next::Restart(_) => {}
            version::Next::Note(note) => eprintln!("{note}"),
            version::Next::Refuse(why) => return Err(ClientError::Incompatible(why)),
        }
        Ok(client)
    }

    pub fn new(transport: Arc<dyn Transport>) -> Client {
        Client { transport }
    }

    /// Connects to this instance's daemon, starting one when none answers, and meets it
    /// (see `version.rs`): a daemon older than this client is restarted with this binary
    /// when no task is being delivered, else the client says why not on stderr (or refuses,
    /// when their APIs differ).
    pub async fn connect(paths: &Paths, config: Option<&Path>) -> Result<Client, ClientError> {
        let client = Client::connect_or_start(paths, config).await?;
        let say = |line: &str| eprintln!("{line}");
        match client.meet(version::auto_restart()).await? {
            version::Next::Proceed => {}
            version::Next::Note(note) => say(&note),
            version::Next::Refuse(why) => return Err(ClientError::Incompatible(why)),
            version::Next::Restart(why) => {
                say(&why);
                let r = Client::restart_daemon(paths, config, &say).await?;
                say(&r.summary());
                match client.meet(false).await? {
                    version::Next::Proceed => {}
                    version::Next::Note(note) => say(&note),
                    version::Next::Refuse(why) => return Err(ClientError::Incompatible(why)),
                    version::Next::Restart(_) => {} // not with `auto` off
                }
            }
        }
        Ok(client)
    }

    /// How this client meets the daemon, and what it does next ([`version::next_step`]).
    pub async fn meet(&self, auto_restart: bool) -> Result<version::Next, ClientError> {
        let own = version::Build::own();
        let daemon = self.daemon_version().await?;
        let meeting = version::meet(&own, daemon.as_ref());
        let delivering = match meeting {
            version::Meeting::DaemonOlder { .. } => self.delivering().await?,
            _ => Vec::new(),
        };
        Ok(version::next_step(&own, daemon.as_ref(), &meeting, &delivering, auto_restart))
    }

    /// The daemon's version; `None` for a daemon from before version reporting.
    pub async fn daemon_version(&self) -> Result<Option<DaemonVersion>, ClientError> {
        match self.get("/api/v1/version").await {
            Ok(v) => Ok(Some(v)),
            Err(ClientError::Api { status: 404, .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Tasks whose prompt is on its way to their agent ([`Task::in_delivery`]).
    pub async fn delivering(&self) -> Result<Vec<String>, ClientError> {
        let tasks = self.tasks(&TaskQuery::default()).await?;
        Ok(tasks.into_iter().filter(Task::in_delivery).map(|t| t.id).collect())
    }

    /// Asks the daemon to stop gracefully (it finishes the requests under way, then exits;
    /// its tasks resume in the next daemon).
    pub async fn shutdown(&self) -> Result<Value, ClientError> {
        self.post("/api/v1/shutdown", &json!({})).await
    }

    /// This instance's daemon, started in the background when none answers (no handshake).
    pub async fn connect_or_start(paths: &Paths, config: Option<&Path>) -> Result<Client, ClientError> {
        let socket = paths.socket();
        let client = Client::new(Arc::new(UnixSocket::new(&socket)));
        if healthy(&socket).await {
            return Ok(client);
        }
        let start = |what: &str, e: &dyn std::fmt::Display| ClientError::Start(format!("{what}: {e}"));
        crate::core::private_dir(&paths.data).map_err(ClientError::Start)?;
        let log = paths.data.join("daemon.log");
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .map_err(|e| start(&format!("cannot open {}", log.display()), &e))?;
        let err = out.try_clone().map_err(|e| start("cannot open the daemon's log", &e))?;
        let exe =
            std::env::current_exe().map_err(|e| start("cannot find the devaipod binary to start the daemon", &e))?;
        let mut cmd = std::process::Command::new(exe);
        cmd.arg("serve").stdin(std::process::Stdio::null()).stdout(out).stderr(err);
        // Started by this client, not by the service manager that may have started it.
        cmd.env_remove("INVOCATION_ID");
        if let Some(c) = config {
            cmd.env("DEVAIPOD_CONFIG", c);
        }
        use std::os::unix::process::CommandExt;
        cmd.process_group(0); // not killed by the terminal's Ctrl-C
        let logged_at = std::fs::metadata(&log).map(|m| m.len()).unwrap_or(0);
        let mut child = cmd.spawn().map_err(|e| start("cannot start the devaipod daemon", &e))?;
        let mut ours = true;
        for _ in 0..300 {
            if healthy(&socket).await {
                if ours {
                    eprintln!(
                        "started the devaipod daemon in the background (pid {}; log {})",
                        child.id(),
                        log.display()
                    );
                }
                return Ok(client);
            }
            if ours && let Ok(Some(_)) = child.try_wait() {
                // Another command started the daemon at the same moment (it holds the
                // instance's lock): that one is waited for. Any other exit: its log says why.
                let written = std::fs::read(&log).unwrap_or_default();
                let since = String::from_utf8_lossy(written.get(logged_at as usize..).unwrap_or_default()).into_owned();
                if !since.contains(crate::core::ANOTHER_DAEMON) {
                    break;
                }
                ours = false;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let tail = std::fs::read_to_string(&log).unwrap_or_default();
        let tail: Vec<&str> = tail.lines().rev().take(5).collect();
        Err(ClientError::Start(format!(
            "the devaipod daemon did not start (log {}):\n{}",
            log.display(),
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        )))
    }

    // ---- workspaces ----

    /// Creates a workspace; `on` sees its progress as it comes.
    pub async fn up(&self, req: &UpRequest, mut on: impl FnMut(UpProgress)) -> Result<UpResult, ClientError> {
        const PATH: &str = "/api/v1/workspaces";
        let mut last = None;
        self.lines(Method::POST, PATH, Some(json(PATH, req)?), |v| {
            if let Some(step) = v.get("progress").and_then(Value::as_str) {
                on(UpProgress::Step(step.to_owned()));
            } else if let Some(line) = v.get("detail").and_then(Value::as_str) {
                on(UpProgress::Detail(line.to_owned()));
            } else {
                last = Some(v);
                return false;
            }
            true
        })
        .await?;
        let protocol = |reason: &str| ClientError::Protocol { path: PATH.into(), reason: reason.into() };
        let mut last = last.ok_or_else(|| protocol("the answer ended before `up` finished"))?;
        if let Some(message) = last.get("error").and_then(Value::as_str) {
            let status = last.get("status").and_then(Value::as_u64).unwrap_or(500) as u16;
            return Err(ClientError::Api { status, message: message.to_owned() });
        }
        let result = last.get_mut("result").map(Value::take).ok_or_else(|| protocol("no result"))?;
        if req.dry_run {
            return Ok(UpResult::Planned(result));
        }
        let created = serde_json::from_value(result).map_err(|e| protocol(&e.to_string()))?;
        Ok(UpResult::Created(Box::new(created)))
    }

    pub async fn workspaces(&self) -> Result<Vec<WorkspaceStatus>, ClientError> {
        self.get("/api/v1/workspaces").await
    }

    pub async fn workspace(&self, name: &str) -> Result<WorkspaceStatus, ClientError> {
        self.get(&format!("/api/v1/workspaces/{}", enc(name))).await
    }

    pub async fn stop(&self, name: &str) -> Result<Done, ClientError> {
        self.post(&format!("/api/v1/workspaces/{}/stop", enc(name)), &json!({})).await
    }

    pub async fn start(&self, name: &str) -> Result<Done, ClientError> {
        self.post(&format!("/api/v1/workspaces/{}/start", enc(name)), &json!({})).await
    }

    pub async fn delete(&self, name: &str, keep_volumes: bool) -> Result<Done, ClientError> {
        let path = format!("/api/v1/workspaces/{}?keep_volumes={keep_volumes}", enc(name));
        self.call(Method::DELETE, &path, None).await
    }

    /// Where `exec` runs in a workspace's container.
    pub async fn exec_place(&self, name: &str, target: ExecTarget) -> Result<ExecPlace, ClientError> {
        let target = match target {
            ExecTarget::Workspace => "workspace",
            ExecTarget::Agent => "agent",
        };
        self.get(&format!("/api/v1/workspaces/{}/exec?target={target}", enc(name))).await
    }

    // ---- tasks ----

    pub async fn run_task(&self, workspace: &str, prompt: &str) -> Result<Task, ClientError> {
        self.run_task_with(workspace, prompt, 0).await
    }

    /// A task whose agent may delegate to up to `workers` worker agents.
    pub async fn run_task_with(&self, workspace: &str, prompt: &str, workers: u32) -> Result<Task, ClientError> {
        let mut body = json!({ "workspace": workspace, "prompt": prompt });
        if workers > 0 {
            body["workers"] = json!(workers);
        }
        self.post("/api/v1/tasks", &body).await
    }

    pub async fn task(&self, id: &str) -> Result<TaskDetail, ClientError> {
        self.get(&format!("/api/v1/tasks/{}", enc(id))).await
    }

    pub async fn tasks(&self, q: &TaskQuery) -> Result<Vec<Task>, ClientError> {
        let query = query(&[("workspace", q.workspace.clone()), ("state", q.state.clone())]);
        self.get(&format!("/api/v1/tasks{query}")).await
    }

    pub async fn cancel_task(&self, id: &str) -> Result<Task, ClientError> {
        self.post(&format!("/api/v1/tasks/{}/cancel", enc(id)), &json!({})).await
    }

    /// Follows a task's events (stored ones first) until the task ends; `on` sees each.
    /// Returns the ended task. Wrap it in a timeout to wait less. A stream that ends early
    /// (the daemon restarted) is opened again; events already seen are not shown twice.
    pub async fn follow(&self, id: &str, mut on: impl FnMut(&BusEvent)) -> Result<TaskDetail, ClientError> {
        let path = format!("/api/v1/events?task={}", enc(id));
        let mut last_seq = 0;
        loop {
            let mut ended = false;
            let streamed = self
                .lines(Method::GET, &path, None, |v| match serde_json::from_value::<BusEvent>(v) {
                    Ok(e) => {
                        if e.seq == 0 || e.seq > last_seq {
                            last_seq = last_seq.max(e.seq);
                            on(&e);
                        }
                        ended =
                            e.state.as_deref().and_then(crate::store::TaskState::parse).is_some_and(|s| s.is_final());
                        !ended
                    }
                    Err(_) => true,
                })
                .await;
            let detail = self.task(id).await?;
            if ended || detail.task.state.is_final() {
                return Ok(detail);
            }
            if let Err(e) = streamed
                && !matches!(e, ClientError::Unreachable { .. } | ClientError::Protocol { .. })
            {
                return Err(e);
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    // ---- proposals ----

    pub async fn proposals(&self, q: &ProposalQuery) -> Result<ProposalPage, ClientError> {
        let query = query(&[
            ("workspace", q.workspace.clone()),
            ("state", q.state.clone()),
            ("limit", q.limit.map(|n| n.to_string())),
            ("offset", q.offset.map(|n| n.to_string())),
        ]);
        self.get(&format!("/api/v1/proposals{query}")).await
    }

    pub async fn proposal(&self, id: &str) -> Result<ProposalDetail, ClientError> {
        self.get(&format!("/api/v1/proposals/{}", enc(id))).await
    }

    /// The proposal's unified diff, as the agent's bytes (clean it before a terminal).
    pub async fn diff(&self, id: &str) -> Result<String, ClientError> {
        self.text(&format!("/api/v1/proposals/{}/diff", enc(id))).await
    }

    /// A text answer (a diff), as the daemon's bytes.
    async fn text(&self, path: &str) -> Result<String, ClientError> {
        let path = path.to_owned();
        let fut = async {
            let resp = self.transport.send(Method::GET, &path, None).await?;
            let (status, bytes) = read(&path, resp).await?;
            ok(&path, status, &bytes)?;
            Ok(String::from_utf8_lossy(&bytes).into_owned())
        };
        tokio::time::timeout(CALL_TIMEOUT, fut)
            .await
            .map_err(|_| ClientError::Timeout { path: path.clone(), secs: CALL_TIMEOUT.as_secs() })?
    }

    pub async fn approve(&self, id: &str, action: ApproveAction) -> Result<ProposalDetail, ClientError> {
        self.post(&format!("/api/v1/proposals/{}/approve", enc(id)), &json!({ "action": action })).await
    }

    pub async fn reject(&self, id: &str, feedback: Option<&str>) -> Result<Rejected, ClientError> {
        self.post(&format!("/api/v1/proposals/{}/reject", enc(id)), &json!({ "feedback": feedback })).await
    }

    // ---- proposal sets ----

    /// Gives a prompt to several candidate agents at once.
    pub async fn run_set(&self, req: &SetRequest) -> Result<SetView, ClientError> {
        let body = serde_json::to_value(req)
            .map_err(|e| ClientError::Protocol { path: "/api/v1/sets".into(), reason: e.to_string() })?;
        self.post("/api/v1/sets", &body).await
    }

    pub async fn set(&self, id: &str) -> Result<SetView, ClientError> {
        self.get(&format!("/api/v1/sets/{}", enc(id))).await
    }

    /// The warm pool (`[pool]`): its members per image.
    pub async fn pool(&self) -> Result<crate::core::PoolView, ClientError> {
        self.get("/api/v1/pool").await
    }

    pub async fn sets(&self, workspace: Option<&str>) -> Result<Vec<SetRecord>, ClientError> {
        let query = query(&[("workspace", workspace.map(str::to_owned))]);
        self.get(&format!("/api/v1/sets{query}")).await
    }

    /// The diff from candidate `a`'s proposal to candidate `b`'s.
    pub async fn diff_candidates(&self, id: &str, a: u32, b: u32) -> Result<String, ClientError> {
        self.text(&format!("/api/v1/sets/{}/diff?a={a}&b={b}", enc(id))).await
    }

    pub async fn reject_set(
        &self,
        id: &str,
        feedback: Option<&str>,
        candidates: &[u32],
    ) -> Result<SetRejected, ClientError> {
        let body = json!({ "feedback": feedback, "candidates": candidates });
        self.post(&format!("/api/v1/sets/{}/reject", enc(id)), &body).await
    }

    pub async fn cancel_set(&self, id: &str) -> Result<SetView, ClientError> {
        self.post(&format!("/api/v1/sets/{}/cancel", enc(id)), &json!({})).await
    }

    // ---- gator ----

    pub async fn scopes(&self, workspace: &str) -> Result<ScopeView, ClientError> {
        self.get(&format!("/api/v1/workspaces/{}/scopes", enc(workspace))).await
    }

    pub async fn add_scope(&self, workspace: &str, scope: &str) -> Result<ScopeView, ClientError> {
        self.post(&format!("/api/v1/workspaces/{}/scopes", enc(workspace)), &json!({ "scope": scope })).await
    }

    pub async fn remove_scope(&self, workspace: &str, scope: &str) -> Result<ScopeView, ClientError> {
        self.post(&format!("/api/v1/workspaces/{}/scopes/remove", enc(workspace)), &json!({ "scope": scope })).await
    }

    // ---- kubernetes ----

    /// The workspace as Kubernetes objects (`devaipod kube`).
    pub async fn kube(
        &self,
        workspace: &str,
        req: &crate::core::kube::KubeRequest,
    ) -> Result<crate::pods::kube::Manifest, ClientError> {
        let query = query(&[
            ("namespace", req.namespace.clone()),
            ("volume_size", req.volume_size.clone()),
            ("show_secrets", req.show_secrets.then(|| "true".to_owned())),
        ]);
        self.get(&format!("/api/v1/workspaces/{}/kube{query}", enc(workspace))).await
    }

    // ---- egress ----

    pub async fn egress(&self, workspace: &str) -> Result<EgressView, ClientError> {
        self.get(&format!("/api/v1/workspaces/{}/egress", enc(workspace))).await
    }

    /// Adds host patterns to the workspace's own egress list.
    pub async fn egress_allow(&self, workspace: &str, hosts: &[String]) -> Result<EgressView, ClientError> {
        self.post(&format!("/api/v1/workspaces/{}/egress", enc(workspace)), &json!({ "hosts": hosts })).await
    }

    /// Replaces the workspace's own egress list.
    pub async fn egress_set(&self, workspace: &str, hosts: &[String]) -> Result<EgressView, ClientError> {
        let path = format!("/api/v1/workspaces/{}/egress", enc(workspace));
        self.call(Method::PUT, &path, Some(json(&path, &json!({ "hosts": hosts }))?)).await
    }

    pub async fn egress_remove(&self, workspace: &str, host: &str) -> Result<EgressView, ClientError> {
        let path = format!("/api/v1/workspaces/{}/egress{}", enc(workspace), query(&[("host", Some(host.to_owned()))]));
        self.call(Method::DELETE, &path, None).await
    }

    pub async fn audit(&self, workspace: Option<&str>, limit: u32) -> Result<Vec<AuditEntry>, ClientError> {
        let query = query(&[("limit", Some(limit.to_string())), ("workspace", workspace.map(str::to_owned))]);
        self.get(&format!("/api/v1/audit{query}")).await
    }

    // ---- doctor ----

    /// The doctor's checks as the daemon sees them.
    pub async fn doctor(&self, req: &DoctorRequest) -> Result<DoctorReport, ClientError> {
        const PATH: &str = "/api/v1/doctor";
        self.call(Method::POST, PATH, Some(json(PATH, req)?)).await
    }

    // ---- the wire ----

    async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        self.call(Method::GET, path, None).await
    }

    async fn post<T: DeserializeOwned>(&self, path: &str, body: &Value) -> Result<T, ClientError> {
        self.call(Method::POST, path, Some(json(path, body)?)).await
    }

    /// One call whose answer is JSON of type `T`; a refusal becomes `ClientError::Api`.
    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<T, ClientError> {
        let fut = async {
            let resp = self.transport.send(method, path, body).await?;
            let (status, bytes) = read(path, resp).await?;
            ok(path, status, &bytes)?;
            serde_json::from_slice(&bytes).map_err(|e| ClientError::Protocol {
                path: path.to_owned(),
                reason: format!("not the JSON expected: {e}"),
            })
        };
        tokio::time::timeout(CALL_TIMEOUT, fut)
            .await
            .map_err(|_| ClientError::Timeout { path: path.to_owned(), secs: CALL_TIMEOUT.as_secs() })?
    }

    /// A streamed answer, line by line (NDJSON, or the `data:` lines of server-sent events);
    /// `on` returns false to stop.
    async fn lines(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
        mut on: impl FnMut(Value) -> bool,
    ) -> Result<(), ClientError> {
        let resp = self.transport.send(method, path, body).await?;
        if !resp.status().is_success() {
            let (status, bytes) = read(path, resp).await?;
            return ok(path, status, &bytes);
        }
        let mut body = resp.into_body().into_data_stream();
        let mut buf = Vec::new();
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| ClientError::Protocol { path: path.to_owned(), reason: e.to_string() })?;
            buf.extend_from_slice(&chunk);
            while let Some(pos) = buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = buf.drain(..=pos).collect();
                let line = String::from_utf8_lossy(&line);
                let line = line.trim();
                if line.is_empty() || line.starts_with("event:") || line.starts_with(':') || line.starts_with("id:") {
                    continue;
                }
                let data = line.strip_prefix("data:").map_or(line, str::trim);
                if let Ok(v) = serde_json::from_str::<Value>(data)
                    && !on(v)
                {
                    return Ok(());
                }
            }
        }
        Ok(())
    }
}

fn json(path: &str, body: &impl Serialize) -> Result<Vec<u8>, ClientError> {
    serde_json::to_vec(body).map_err(|e| ClientError::Protocol { path: path.to_owned(), reason: e.to_string() })
}

/// `?k=v&…` of the values that are set (empty when none is).
fn query(pairs: &[(&str, Option<String>)]) -> String {
    let set: Vec<String> = pairs.iter().filter_map(|(k, v)| Some(format!("{k}={}", enc(v.as_deref()?)))).collect();
    if set.is_empty() { String::new() } else { format!("?{}", set.join("&")) }
}

async fn read(path: &str, resp: Response<Body>) -> Result<(u16, bytes::Bytes), ClientError> {
    let status = resp.status().as_u16();
    let body = http_body_util::Limited::new(resp.into_body(), MAX_ANSWER);
    let bytes = body
        .collect()
        .await
        .map_err(|e| ClientError::Protocol { path: path.to_owned(), reason: e.to_string() })?
        .to_bytes();
    Ok((status, bytes))
}

/// A non-2xx answer as the error it carries: `{"error": …}`, else its text.
fn ok(path: &str, status: u16, bytes: &[u8]) -> Result<(), ClientError> {
    if (200..300).contains(&status) {
        return Ok(());
    }
    let text = String::from_utf8_lossy(bytes);
    let message = serde_json::from_slice::<Value>(bytes)
        .ok()
        .and_then(|v| v.get("error").and_then(Value::as_str).map(str::to_owned))
        .unwrap_or_else(|| {
            if text.trim().is_empty() {
                format!("the daemon answered {status} to {path}")
            } else {
                text.trim().to_owned()
            }
        });
    Err(ClientError::Api { status, message })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_remote_daemon_comes_from_the_environment_or_the_config_with_its_token() {
        use crate::config::ClientSection;
        let none = ClientSection::default();
        assert_eq!(Remote::resolve(None, Some("t"), &none).unwrap(), None, "no URL: the local daemon");
        let r = Remote::resolve(Some("http://127.0.0.1:9/"), Some(" s3cr3t\n"), &none).unwrap().unwrap();
        assert_eq!((r.url.as_str(), r.token.as_str()), ("http://127.0.0.1:9", "s3cr3t"));
        assert!(!format!("{r:?}").contains("s3cr3t"), "the token is not printed");
        let e = Remote::resolve(Some("http://127.0.0.1:9"), None, &none).unwrap_err().to_string();
        assert!(e.contains("needs its token: set DEVAIPOD_TOKEN"), "{e}");
        let e = Remote::resolve(Some("127.0.0.1:9"), Some("t"), &none).unwrap_err().to_string();
        assert!(e.starts_with("DEVAIPOD_URL: `127.0.0.1:9` is not a daemon URL"), "{e}");
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        std::fs::write(&file, "from-file\n").unwrap();
        let section = ClientSection { url: Some("http://h:1".into()), token_file: Some(file.clone()) };
        let r = Remote::resolve(None, None, &section).unwrap().unwrap();
        assert_eq!((r.url.as_str(), r.token.as_str()), ("http://h:1", "from-file"));
        let r = Remote::resolve(Some("http://other:2"), Some("env"), &section).unwrap().unwrap();
        assert_eq!((r.url.as_str(), r.token.as_str()), ("http://other:2", "env"), "the environment wins");
        std::fs::remove_file(&file).unwrap();
        let e = Remote::resolve(None, None, &section).unwrap_err().to_string();
        assert!(e.contains("cannot read [client] token-file"), "{e}");
    }

    #[test]
    fn error_bodies_are_read_in_one_place() {
        let e = ok("/p", 409, br#"{"error":"task t-1 already ended (completed)"}"#).unwrap_err();
        assert_eq!((e.status(), e.to_string()), (Some(409), "task t-1 already ended (completed)".to_owned()));
        let e = ok("/p", 502, b"bad gateway\n").unwrap_err();
        assert_eq!(e.to_string(), "bad gateway");
        let e = ok("/p", 500, b"").unwrap_err();
        assert_eq!(e.to_string(), "the daemon answered 500 to /p");
        assert!(ok("/p", 201, b"{}").is_ok());
    }

    #[test]
    fn queries_carry_only_what_is_set_and_encoded() {
        assert_eq!(query(&[("workspace", None), ("state", None)]), "");
        assert_eq!(query(&[("workspace", Some("a b".into())), ("state", None)]), "?workspace=a%20b");
        assert_eq!(query(&[("limit", Some("5".into())), ("offset", Some("10".into()))]), "?limit=5&offset=10");
    }
}
