//! The JSON API under `/api/v1`: thin handlers over `core`, each converting core types to JSON.

use std::convert::Infallible;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use futures_util::StreamExt;
use serde::Deserialize;
use serde_json::{Value, json};

use super::error::{ApiError, status_of};
use super::extract::{ApiJson, ApiQuery};
use super::process::{self, DaemonProcess};
use crate::core::doctor::DoctorRequest;
use crate::core::{
    ApproveAction, Core, CoreError, Done, ExecTarget, Progress, ProposalQuery, SetRequest, TaskQuery, UpRequest,
};
use crate::pods::Engine;

type S<E> = State<Arc<Core<E>>>;
/// The daemon process, when the router serves one (not in tests or in process).
type Process = Option<Extension<Arc<DaemonProcess>>>;
type R = Result<Json<Value>, ApiError>;

fn to_json<T: serde::Serialize>(v: T) -> R {
    serde_json::to_value(v).map(Json).map_err(|e| ApiError(CoreError::Io(e.to_string())))
}

pub async fn list_workspaces<E: Engine>(State(core): S<E>) -> R {
    to_json(core.list().await?)
}

/// `up`, answered as NDJSON: `{"progress": …}` lines while it works, then one
/// `{"result": …}` or `{"error": …, "status": …}` line. The work goes on if the client leaves.
pub async fn create_workspace<E: Engine>(
    State(core): S<E>,
    process: Process,
    ApiJson(req): ApiJson<UpRequest>,
) -> Response {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    let up = async move {
        let progress = ChannelProgress(tx.clone());
        let last = match core.up(&req, &progress).await {
            Ok(outcome) => json!({ "result": outcome }),
            Err(e) => json!({ "error": e.to_string(), "status": status_of(&e).as_u16() }),
        };
        let _ = tx.send(format!("{last}\n"));
    };
    // A daemon's stop waits for it.
    match process {
        Some(Extension(p)) => drop(p.work().spawn(up)),
        None => drop(tokio::spawn(up)),
    }
    let body =
        futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|l| (Ok::<_, Infallible>(l), rx)) });
    ([(header::CONTENT_TYPE, "application/x-ndjson")], Body::from_stream(body)).into_response()
}

struct ChannelProgress(tokio::sync::mpsc::UnboundedSender<String>);

impl Progress for ChannelProgress {
    fn step(&self, message: &str) {
        let _ = self.0.send(format!("{}\n", json!({ "progress": message })));
    }
    fn detail(&self, line: &str) {
        let _ = self.0.send(format!("{}\n", json!({ "detail": line })));
    }
}

pub async fn get_workspace<E: Engine>(State(core): S<E>, Path(name): Path<String>) -> R {
    to_json(core.status(&name).await?)
}

#[derive(Deserialize)]
pub struct DeleteQuery {
    #[serde(default)]
    keep_volumes: bool,
}

pub async fn delete_workspace<E: Engine>(
    State(core): S<E>,
    Path(name): Path<String>,
    ApiQuery(q): ApiQuery<DeleteQuery>,
) -> R {
    core.delete(&name, q.keep_volumes).await?;
    to_json(Done { workspace: name, result: "deleted".into() })
}

pub async fn stop_workspace<E: Engine>(State(core): S<E>, Path(name): Path<String>) -> R {
    core.stop(&name).await?;
    to_json(Done { workspace: name, result: "stopped".into() })
}

pub async fn start_workspace<E: Engine>(State(core): S<E>, Path(name): Path<String>) -> R {
    core.start(&name).await?;
    to_json(Done { workspace: name, result: "started".into() })
}

#[derive(Deserialize)]
pub struct ExecQuery {
    #[serde(default = "default_target")]
    target: ExecTarget,
}

fn default_target() -> ExecTarget {
    ExecTarget::Workspace
}

/// Where `devaipod exec` runs a command: container, user and folder (the CLI then streams
/// through podman itself).
pub async fn exec_target<E: Engine>(
    State(core): S<E>,
    Path(name): Path<String>,
    ApiQuery(q): ApiQuery<ExecQuery>,
) -> R {
    to_json(core.exec_target(&name, q.target).await?)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskRequest {
    #[serde(default)]
    workspace: String,
    #[serde(default)]
    prompt: String,
    /// Worker agents the task's agent may delegate to (0: none).
    #[serde(default)]
    workers: u32,
    /// Give the task to this many candidate agents at once: the answer is a proposal set.
    agents: Option<u32>,
    /// One model per candidate (with `agents`).
    #[serde(default)]
    models: Vec<String>,
}

pub async fn create_task<E: Engine>(
    State(core): S<E>,
    ApiJson(req): ApiJson<TaskRequest>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    if req.agents.is_some() || !req.models.is_empty() {
        if req.workers > 0 {
            return Err(ApiError(CoreError::Invalid(
                "workers and agents do not go together: a fan-out's candidates do not delegate".into(),
            )));
        }
        let set = SetRequest {
            workspace: req.workspace,
            prompt: req.prompt,
            agents: req.agents.unwrap_or(req.models.len() as u32),
            models: req.models,
        };
        return Ok((StatusCode::CREATED, to_json(core.run_set(&set).await?)?));
    }
    let task = core.run_task_with(&req.workspace, &req.prompt, req.workers).await?;
    Ok((StatusCode::CREATED, to_json(task)?))
}

pub async fn get_pool<E: Engine>(State(core): S<E>) -> R {
    to_json(core.pool_view().await?)
}

#[derive(Deserialize)]
pub struct SetsQuery {
    workspace: Option<String>,
}

pub async fn list_sets<E: Engine>(State(core): S<E>, ApiQuery(q): ApiQuery<SetsQuery>) -> R {
    to_json(core.sets(q.workspace.as_deref()).await?)
}

pub async fn create_set<E: Engine>(
    State(core): S<E>,
    ApiJson(req): ApiJson<SetRequest>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    Ok((StatusCode::CREATED, to_json(core.run_set(&req).await?)?))
}

pub async fn get_set<E: Engine>(State(core): S<E>, Path(id): Path<String>) -> R {
    to_json(core.set_view(&id).await?)
}

#[derive(Deserialize)]
pub struct CandidatesQuery {
    a: u32,
    b: u32,
}

/// The diff from candidate `a`'s proposal to candidate `b`'s.
pub async fn set_diff<E: Engine>(
    State(core): S<E>,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<CandidatesQuery>,
) -> Result<Response, ApiError> {
    let diff = core.diff_candidates(&id, q.a, q.b).await?;
    Ok(([(header::CONTENT_TYPE, "text/x-diff; charset=utf-8")], diff).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RejectSetRequest {
    feedback: Option<String>,
    /// Only these candidates get the feedback (default: every one with an open proposal).
    #[serde(default)]
    candidates: Vec<u32>,
}

pub async fn reject_set<E: Engine>(
    State(core): S<E>,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<RejectSetRequest>,
) -> R {
    to_json(core.reject_set(&id, req.feedback.as_deref(), &req.candidates).await?)
}

pub async fn cancel_set<E: Engine>(State(core): S<E>, Path(id): Path<String>) -> R {
    to_json(core.cancel_set(&id).await?)
}

pub async fn list_tasks<E: Engine>(State(core): S<E>, ApiQuery(q): ApiQuery<TaskQuery>) -> R {
    to_json(core.tasks(&q).await?)
}

pub async fn get_task<E: Engine>(State(core): S<E>, Path(id): Path<String>) -> R {
    to_json(core.task_detail(&id).await?)
}

pub async fn cancel_task<E: Engine>(State(core): S<E>, Path(id): Path<String>) -> R {
    to_json(core.cancel_task(&id).await?)
}

/// A page of proposal summaries: `{"proposals": […], "total": n, "next_offset": n|null}`.
pub async fn list_proposals<E: Engine>(State(core): S<E>, ApiQuery(q): ApiQuery<ProposalQuery>) -> R {
    to_json(core.proposals(&q).await?)
}

pub async fn get_proposal<E: Engine>(State(core): S<E>, Path(id): Path<String>) -> R {
    to_json(core.proposal_detail(&id).await?)
}

pub async fn proposal_diff<E: Engine>(State(core): S<E>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let diff = core.diff(&id).await?;
    Ok(([(header::CONTENT_TYPE, "text/x-diff; charset=utf-8")], diff).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApproveRequest {
    action: ApproveAction,
}

pub async fn approve<E: Engine>(State(core): S<E>, Path(id): Path<String>, ApiJson(req): ApiJson<ApproveRequest>) -> R {
    to_json(core.approve(&id, req.action).await?)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RejectRequest {
    feedback: Option<String>,
}

pub async fn reject<E: Engine>(State(core): S<E>, Path(id): Path<String>, ApiJson(req): ApiJson<RejectRequest>) -> R {
    to_json(core.reject(&id, req.feedback.as_deref()).await?)
}

#[derive(Deserialize)]
pub struct EventsQuery {
    task: Option<String>,
    workspace: Option<String>,
}

/// Server-sent events from the bus; with `task`, that task's stored events come first.
pub async fn events<E: Engine>(State(core): S<E>, ApiQuery(q): ApiQuery<EventsQuery>) -> Result<Response, ApiError> {
    let rx = core.subscribe();
    let mut pending = std::collections::VecDeque::new();
    if let Some(id) = &q.task {
        let (task, events) = core.task(id).await?;
        pending.extend(events.into_iter().map(|e| crate::core::BusEvent::stored(e, &task.workspace)));
    }
    let feed = Feed { core, rx, task: q.task, workspace: q.workspace, last_seq: 0, pending };
    let stream = futures_util::stream::unfold(feed, |mut feed| async move { feed.next().await.map(|e| (e, feed)) })
        .map(|e| Ok::<_, Infallible>(Event::default().event(e.kind.clone()).json_data(&e).unwrap_or_default()));
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()).into_response())
}

/// The events one stream wants, each stored one once, in order. A stream that falls behind
/// the bus (it keeps the last 1024 events of all workspaces) catches up on its task's
/// stored events, so a follower never misses the state that ends the task.
struct Feed<E> {
    core: Arc<Core<E>>,
    rx: tokio::sync::broadcast::Receiver<crate::core::BusEvent>,
    task: Option<String>,
    workspace: Option<String>,
    /// The newest stored event sent.
    last_seq: i64,
    /// Stored events to send before the bus's.
    pending: std::collections::VecDeque<crate::core::BusEvent>,
}

impl<E: Engine> Feed<E> {
    async fn next(&mut self) -> Option<crate::core::BusEvent> {
        use tokio::sync::broadcast::error::RecvError;
        loop {
            let e = match self.pending.pop_front() {
                Some(e) => e,
                None => match self.rx.recv().await {
                    Ok(e) => e,
                    Err(RecvError::Lagged(_)) => {
                        if let Some(id) = &self.task
                            && let Ok((task, events)) = self.core.task(id).await
                        {
                            let missed = events.into_iter().filter(|e| e.seq > self.last_seq);
                            self.pending.extend(missed.map(|e| crate::core::BusEvent::stored(e, &task.workspace)));
                        }
                        continue;
                    }
                    Err(RecvError::Closed) => return None,
                },
            };
            let wanted = self.task.as_ref().is_none_or(|t| e.task_id.as_ref() == Some(t))
                && self.workspace.as_ref().is_none_or(|w| &e.workspace == w);
            if !wanted || (e.seq != 0 && e.seq <= self.last_seq) {
                continue;
            }
            self.last_seq = self.last_seq.max(e.seq);
            return Some(e);
        }
    }
}

// ---- gator ----

pub async fn get_scopes<E: Engine>(State(core): S<E>, Path(name): Path<String>) -> R {
    to_json(core.scope_view(&name).await?)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScopeBody {
    #[serde(default)]
    scope: String,
}

pub async fn add_scope<E: Engine>(State(core): S<E>, Path(name): Path<String>, ApiJson(b): ApiJson<ScopeBody>) -> R {
    to_json(core.add_scope(&name, &b.scope).await?)
}

pub async fn remove_scope<E: Engine>(State(core): S<E>, Path(name): Path<String>, ApiJson(b): ApiJson<ScopeBody>) -> R {
    to_json(core.remove_scope(&name, &b.scope).await?)
}

// ---- egress ----

/// The workspace as Kubernetes objects (`devaipod kube`); Secrets' values only when asked.
pub async fn get_kube<E: Engine>(
    State(core): S<E>,
    Path(name): Path<String>,
    ApiQuery(q): ApiQuery<crate::core::kube::KubeRequest>,
) -> R {
    to_json(core.kube_manifest(&name, &q).await?)
}

pub async fn get_egress<E: Engine>(State(core): S<E>, Path(name): Path<String>) -> R {
    to_json(core.egress_view(&name).await?)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EgressBody {
    #[serde(default)]
    hosts: Vec<String>,
}

/// Adds host patterns to the workspace's own list.
pub async fn allow_egress<E: Engine>(
    State(core): S<E>,
    Path(name): Path<String>,
    ApiJson(b): ApiJson<EgressBody>,
) -> R {
    to_json(core.egress_allow(&name, &b.hosts).await?)
}

/// Replaces the workspace's own list.
pub async fn set_egress<E: Engine>(State(core): S<E>, Path(name): Path<String>, ApiJson(b): ApiJson<EgressBody>) -> R {
    to_json(core.egress_set(&name, &b.hosts).await?)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EgressHostQuery {
    #[serde(default)]
    host: String,
}

/// Takes one pattern off the workspace's own list (`?host=PATTERN`).
pub async fn remove_egress<E: Engine>(
    State(core): S<E>,
    Path(name): Path<String>,
    ApiQuery(q): ApiQuery<EgressHostQuery>,
) -> R {
    to_json(core.egress_remove(&name, &q.host).await?)
}

#[derive(Deserialize)]
pub struct AuditQuery {
    workspace: Option<String>,
    limit: Option<u32>,
}

pub async fn audit_log<E: Engine>(State(core): S<E>, ApiQuery(q): ApiQuery<AuditQuery>) -> R {
    to_json(core.audit_log(q.workspace.as_deref(), q.limit.unwrap_or(100).clamp(1, 1000)).await?)
}

/// What the daemon says of itself (versions, executable, service manager): the clients'
/// handshake.
pub async fn daemon_version(process: Process) -> R {
    to_json(match process {
        Some(Extension(p)) => p.version(),
        None => process::version_of_this_process(),
    })
}

/// Stops the daemon gracefully: it answers `202`, takes no new request, finishes those
/// under way and the `up`s, and exits; its tasks resume in the next daemon. A daemon run by
/// a service manager is restarted there (`409` says how).
pub async fn shutdown(process: Process) -> Response {
    let error = |status: StatusCode, message: String| (status, Json(json!({ "error": message }))).into_response();
    let Some(Extension(p)) = process else {
        return error(StatusCode::SERVICE_UNAVAILABLE, "this server is not a daemon that can be stopped".into());
    };
    if let Some(s) = p.supervisor() {
        return error(
            StatusCode::CONFLICT,
            format!("the daemon runs under {}: restart it with `{}`", s.name, s.restart),
        );
    }
    p.request_stop();
    (StatusCode::ACCEPTED, Json(json!({ "stopping": true, "pid": std::process::id() }))).into_response()
}

// ---- doctor ----

#[derive(Deserialize)]
pub struct DoctorQuery {
    workspace: Option<String>,
}

/// The doctor's checks as the daemon sees them, with its own environment.
pub async fn doctor_get<E: Engine>(State(core): S<E>, ApiQuery(q): ApiQuery<DoctorQuery>) -> R {
    to_json(core.doctor(&DoctorRequest { env: None, workspace: q.workspace }).await)
}

/// The doctor's checks; `env` (the caller's environment) is what `[agent] api-key-env` is
/// checked against, as `up` would resolve it.
pub async fn doctor_post<E: Engine>(State(core): S<E>, ApiJson(req): ApiJson<DoctorRequest>) -> R {
    to_json(core.doctor(&req).await)
}
