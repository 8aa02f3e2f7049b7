//! The outer MCP tools: `create_workspace`, `list_workspaces`, `get_workspace`,
//! `delete_workspace`, `run_task`, `get_task`, `list_tasks`, `cancel_task`,
//! `list_proposals`, `get_proposal`, `approve`, `reject`.

use std::time::Duration;

use hyper::Method;
use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::wrapper::{Json, Parameters};
use rmcp::model::{ProgressNotificationParam, ServerCapabilities, ServerConfig};
use rmcp::service::RequestContext;
use rmcp::{RoleServer, ServerHandler, schemars, tool, tool_handler, tool_router};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::Backend;
use crate::cli::client::enc;

/// Longest wait `run_task` accepts (clients time calls out after about a minute).
const MAX_WAIT_SECS: u64 = 600;
/// Default and largest page of a diff in `get_proposal`.
const DIFF_PAGE: usize = 20_000;
const DIFF_PAGE_MAX: usize = 200_000;

#[derive(Clone)]
pub struct DevaipodMcp {
    backend: Backend,
    tool_router: ToolRouter<Self>,
}

// ---- inputs ----

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[schemars(extend("required" = ["source"]))]
pub struct CreateWorkspace {
    /// A local git repository path or a git URL (https://, file://, git@host:path).
    #[serde(default)]
    pub source: String,
    /// Workspace name: lowercase letters, digits and `-` (default: from the repository).
    pub name: Option<String>,
    /// Image for both containers (default: devcontainer.json's, else the configured default).
    pub image: Option<String>,
    /// A first task for the agent, started at once (not waited for).
    pub task: Option<String>,
    /// For a GitHub source: the agent may only read through gator (no push, no draft PR).
    #[serde(default)]
    pub read_only: bool,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[schemars(extend("required" = ["name"]))]
pub struct WorkspaceRef {
    /// The workspace's name.
    #[serde(default)]
    pub name: String,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[schemars(extend("required" = ["name"]))]
pub struct DeleteWorkspace {
    /// The workspace's name.
    #[serde(default)]
    pub name: String,
    /// Keep the volumes (the repositories). Default false.
    #[serde(default)]
    pub keep_volumes: bool,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[schemars(extend("required" = ["workspace", "prompt"]))]
pub struct RunTask {
    /// The workspace whose agent does the task.
    #[serde(default)]
    pub workspace: String,
    /// What the agent should do.
    #[serde(default)]
    pub prompt: String,
    /// Wait up to this many seconds for the task to end, with progress notifications
    /// (default 0: return at once; at most 600). Cancelling the call stops the wait, not the task.
    #[serde(default)]
    pub wait_seconds: u64,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[schemars(extend("required" = ["id"]))]
pub struct TaskRef {
    /// The task's id (t-…).
    #[serde(default)]
    pub id: String,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct ListFilter {
    /// Only this workspace's.
    pub workspace: Option<String>,
    /// Only in this state (tasks: queued, running, needs_input, completed, failed, cancelled;
    /// proposals: open, applied, pushed, rejected).
    pub state: Option<String>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[schemars(extend("required" = ["id"]))]
pub struct GetProposal {
    /// The proposal's id (p-…).
    #[serde(default)]
    pub id: String,
    /// Where the page of the diff starts, in characters (default 0).
    #[serde(default)]
    pub diff_offset: usize,
    /// Largest page of the diff, in characters (default 20000, at most 200000).
    pub diff_limit: Option<usize>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[schemars(extend("required" = ["proposal", "action"]))]
pub struct Approve {
    /// The proposal's id (p-…).
    #[serde(default)]
    pub proposal: String,
    /// `apply` (branch into the human's workspace), `push` (to the source's remote) or
    /// `draft_pr`.
    #[serde(default)]
    pub action: String,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[schemars(extend("required" = ["proposal"]))]
pub struct Reject {
    /// The proposal's id (p-…).
    #[serde(default)]
    pub proposal: String,
    /// Feedback for the agent: sent to the same agent session as a follow-up task.
    pub feedback: Option<String>,
}

// ---- outputs ----

/// A JSON object (its schema says `object`, which strict clients require).
type Obj = serde_json::Map<String, Value>;

fn obj(v: Value) -> Obj {
    match v {
        Value::Object(m) => m,
        _ => Obj::new(),
    }
}

#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct WorkspaceOut {
    /// The workspace: name, pod, status, container states, source, folder, ports.
    pub workspace: Obj,
    /// The first task, when one was given.
    pub task: Option<Obj>,
}

#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct WorkspacesOut {
    pub workspaces: Vec<Obj>,
}

#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct DoneOut {
    pub workspace: String,
    pub result: String,
}

#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct TaskOut {
    /// The task: id, workspace, prompt, state, error, summary, session.
    pub task: Obj,
    /// Its progress events (tool calls, state changes, errors, proposal).
    pub events: Vec<Obj>,
    /// The proposal its work became, if any.
    pub proposal: Option<String>,
}

#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct TasksOut {
    pub tasks: Vec<Obj>,
}

#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct ProposalsOut {
    pub proposals: Vec<Obj>,
}

#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct ProposalOut {
    /// The proposal: id, task, branch, commits, files with +/-, summary, state, approvals.
    pub proposal: Obj,
    /// A page of the unified diff.
    pub diff: String,
    pub diff_offset: usize,
    /// The whole diff's length in characters.
    pub diff_total: usize,
    /// Where the next page starts, when there is one.
    pub next_diff_offset: Option<usize>,
}

#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct ApproveOut {
    /// The proposal after the action: its state (applied, pushed) and approvals.
    pub proposal: Obj,
}

#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct RejectOut {
    pub proposal: Obj,
    /// The follow-up task carrying the feedback, if any.
    pub follow_up_task: Option<Obj>,
}

fn name_ok(kind: &str, v: &str) -> Result<(), String> {
    if v.trim().is_empty() { Err(format!("`{kind}` is required")) } else { Ok(()) }
}

fn array(v: Value) -> Vec<Obj> {
    match v {
        Value::Array(a) => a.into_iter().map(obj).collect(),
        _ => Vec::new(),
    }
}

#[tool_router]
impl DevaipodMcp {
    pub fn new(backend: Backend) -> Self {
        DevaipodMcp { backend, tool_router: Self::tool_router() }
    }

    #[tool(
        description = "Create a workspace: a sandboxed pod with the repository and a coding agent. `source` is a local git repository path, a git URL, or a GitHub repository/issue/PR URL (an issue's title and body become the first task; the agent gets gator scopes on that repository: read, create-draft, push-new-branch, or read only with read_only). Optionally starts a first task. Takes seconds (image build, agent start); sends progress notifications.",
        annotations(read_only_hint = false, destructive_hint = false, idempotent_hint = false, open_world_hint = true)
    )]
    async fn create_workspace(
        &self,
        Parameters(p): Parameters<CreateWorkspace>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<Json<WorkspaceOut>, String> {
        name_ok("source", &p.source)?;
        let body = json!({ "source": p.source, "name": p.name, "image": p.image, "read_only": p.read_only });
        let progress = Progress::new(&ctx);
        let mut last = None;
        // Steps are forwarded as progress notifications while `up` still works.
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
        let forward = async {
            while let Some(step) = rx.recv().await {
                progress.send(&step).await;
            }
        };
        let work = async {
            let r = self
                .backend
                .lines("/api/v1/workspaces", body, |v| {
                    if let Some(step) = v.get("progress").and_then(Value::as_str) {
                        let _ = tx.send(step.to_owned());
                    } else if v.get("detail").is_none() {
                        last = Some(v);
                        return false;
                    }
                    true
                })
                .await;
            drop(tx);
            r
        };
        let (r, ()) = tokio::join!(work, forward);
        r?;
        let last = last.ok_or("the daemon ended the answer before the workspace was created")?;
        if let Some(e) = last.get("error").and_then(Value::as_str) {
            return Err(e.to_owned());
        }
        let workspace = last["result"].clone();
        // A GitHub issue or PR as the source brings its own task.
        let issue_task = workspace["issue_task"].as_str().map(str::to_owned);
        let task = match p.task.filter(|t| !t.trim().is_empty()).or(issue_task) {
            Some(prompt) => {
                let name = workspace["name"].as_str().unwrap_or_default();
                Some(
                    self.backend
                        .call(Method::POST, "/api/v1/tasks", Some(json!({ "workspace": name, "prompt": prompt })))
                        .await?,
                )
            }
            None => None,
        };
        Ok(Json(WorkspaceOut { workspace: obj(workspace), task: task.map(obj) }))
    }

    #[tool(
        description = "List the workspaces: name, pod status, workspace and agent container states, source.",
        annotations(read_only_hint = true, destructive_hint = false, idempotent_hint = true, open_world_hint = false)
    )]
    async fn list_workspaces(&self) -> Result<Json<WorkspacesOut>, String> {
        Ok(Json(WorkspacesOut { workspaces: array(self.backend.call(Method::GET, "/api/v1/workspaces", None).await?) }))
    }

    #[tool(
        description = "One workspace: pod status, container states, source, repository folder, published ports.",
        annotations(read_only_hint = true, destructive_hint = false, idempotent_hint = true, open_world_hint = false)
    )]
    async fn get_workspace(&self, Parameters(p): Parameters<WorkspaceRef>) -> Result<Json<WorkspaceOut>, String> {
        name_ok("name", &p.name)?;
        let workspace = self.backend.call(Method::GET, &format!("/api/v1/workspaces/{}", enc(&p.name)), None).await?;
        Ok(Json(WorkspaceOut { workspace: obj(workspace), task: None }))
    }

    #[tool(
        description = "Delete a workspace: its pod, containers, secrets and (unless keep_volumes) its volumes. Its running tasks are cancelled; tasks and proposals stay listed.",
        annotations(read_only_hint = false, destructive_hint = true, idempotent_hint = false, open_world_hint = false)
    )]
    async fn delete_workspace(&self, Parameters(p): Parameters<DeleteWorkspace>) -> Result<Json<DoneOut>, String> {
        name_ok("name", &p.name)?;
        let path = format!("/api/v1/workspaces/{}?keep_volumes={}", enc(&p.name), p.keep_volumes);
        self.backend.call(Method::DELETE, &path, None).await?;
        Ok(Json(DoneOut { workspace: p.name, result: "deleted".into() }))
    }

    #[tool(
        description = "Give the workspace's agent a task. Returns the task at once (wait_seconds 0), or waits up to wait_seconds for it to end, sending progress notifications; then poll with get_task. When it completes with changes, its work becomes a proposal.",
        annotations(read_only_hint = false, destructive_hint = false, idempotent_hint = false, open_world_hint = true)
    )]
    async fn run_task(
        &self,
        Parameters(p): Parameters<RunTask>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<Json<TaskOut>, String> {
        name_ok("workspace", &p.workspace)?;
        if p.prompt.trim().is_empty() {
            return Err("`prompt` is required: say what the agent should do".into());
        }
        if p.wait_seconds > MAX_WAIT_SECS {
            return Err(format!("wait_seconds is at most {MAX_WAIT_SECS}; poll with get_task for longer tasks"));
        }
        let task = self
            .backend
            .call(Method::POST, "/api/v1/tasks", Some(json!({ "workspace": p.workspace, "prompt": p.prompt })))
            .await?;
        let id = task["id"].as_str().unwrap_or_default().to_owned();
        let progress = Progress::new(&ctx);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(p.wait_seconds);
        let mut seen = 0;
        loop {
            let v = self.backend.call(Method::GET, &format!("/api/v1/tasks/{}", enc(&id)), None).await?;
            let events = array(v["events"].clone());
            for e in events.iter().skip(seen) {
                progress.send(e["message"].as_str().unwrap_or_default()).await;
            }
            seen = events.len();
            let state = v["task"]["state"].as_str().unwrap_or_default();
            let done = matches!(state, "completed" | "failed" | "cancelled");
            if done || tokio::time::Instant::now() >= deadline {
                return Ok(Json(TaskOut {
                    task: obj(v["task"].clone()),
                    events,
                    proposal: v["proposal"].as_str().map(str::to_owned),
                }));
            }
            tokio::select! {
                _ = ctx.ct.cancelled() => {
                    // The client gave up waiting; the task goes on.
                    return Ok(Json(TaskOut { task: obj(v["task"].clone()), events, proposal: None }));
                }
                _ = tokio::time::sleep(Duration::from_millis(300)) => {}
            }
        }
    }

    #[tool(
        description = "A task: its state (queued, running, needs_input, completed, failed, cancelled), error or summary, progress events, and its proposal.",
        annotations(read_only_hint = true, destructive_hint = false, idempotent_hint = true, open_world_hint = false)
    )]
    async fn get_task(&self, Parameters(p): Parameters<TaskRef>) -> Result<Json<TaskOut>, String> {
        name_ok("id", &p.id)?;
        let v = self.backend.call(Method::GET, &format!("/api/v1/tasks/{}", enc(&p.id)), None).await?;
        Ok(Json(TaskOut {
            task: obj(v["task"].clone()),
            events: array(v["events"].clone()),
            proposal: v["proposal"].as_str().map(str::to_owned),
        }))
    }

    #[tool(
        description = "List tasks, newest first; optionally of one workspace and in one state.",
        annotations(read_only_hint = true, destructive_hint = false, idempotent_hint = true, open_world_hint = false)
    )]
    async fn list_tasks(&self, Parameters(p): Parameters<ListFilter>) -> Result<Json<TasksOut>, String> {
        let path = format!("/api/v1/tasks{}", query(&p));
        Ok(Json(TasksOut { tasks: array(self.backend.call(Method::GET, &path, None).await?) }))
    }

    #[tool(
        description = "Cancel a task: its agent session is aborted and the task ends cancelled.",
        annotations(read_only_hint = false, destructive_hint = true, idempotent_hint = false, open_world_hint = false)
    )]
    async fn cancel_task(&self, Parameters(p): Parameters<TaskRef>) -> Result<Json<TaskOut>, String> {
        name_ok("id", &p.id)?;
        let task =
            self.backend.call(Method::POST, &format!("/api/v1/tasks/{}/cancel", enc(&p.id)), Some(json!({}))).await?;
        Ok(Json(TaskOut { task: obj(task), events: Vec::new(), proposal: None }))
    }

    #[tool(
        description = "List proposals (agents' finished work: a branch with a diff), newest first; optionally of one workspace and in one state (open, applied, pushed, rejected).",
        annotations(read_only_hint = true, destructive_hint = false, idempotent_hint = true, open_world_hint = false)
    )]
    async fn list_proposals(&self, Parameters(p): Parameters<ListFilter>) -> Result<Json<ProposalsOut>, String> {
        let path = format!("/api/v1/proposals{}", query(&p));
        Ok(Json(ProposalsOut { proposals: array(self.backend.call(Method::GET, &path, None).await?) }))
    }

    #[tool(
        description = "A proposal with its unified diff, paged: diff_offset and diff_limit (default 20000 characters); next_diff_offset says where the next page starts.",
        annotations(read_only_hint = true, destructive_hint = false, idempotent_hint = true, open_world_hint = false)
    )]
    async fn get_proposal(&self, Parameters(p): Parameters<GetProposal>) -> Result<Json<ProposalOut>, String> {
        name_ok("id", &p.id)?;
        let limit = p.diff_limit.unwrap_or(DIFF_PAGE);
        if limit == 0 || limit > DIFF_PAGE_MAX {
            return Err(format!("diff_limit must be 1 to {DIFF_PAGE_MAX}"));
        }
        let proposal = self.backend.call(Method::GET, &format!("/api/v1/proposals/{}", enc(&p.id)), None).await?;
        let diff = self.backend.text(Method::GET, &format!("/api/v1/proposals/{}/diff", enc(&p.id))).await?;
        let chars: Vec<char> = diff.chars().collect();
        let total = chars.len();
        if p.diff_offset > total {
            return Err(format!("diff_offset {} is past the diff's end ({total} characters)", p.diff_offset));
        }
        let end = (p.diff_offset + limit).min(total);
        Ok(Json(ProposalOut {
            proposal: obj(proposal),
            diff: chars[p.diff_offset..end].iter().collect(),
            diff_offset: p.diff_offset,
            diff_total: total,
            next_diff_offset: (end < total).then_some(end),
        }))
    }

    #[tool(
        description = "Approve a proposal. action `apply`: the branch devaipod/<task> is fetched into the human's workspace repository; `push`: the branch is pushed to the source's remote; `draft_pr`: push and open a draft PR on the workspace's GitHub repository. Each action runs once.",
        annotations(read_only_hint = false, destructive_hint = false, idempotent_hint = false, open_world_hint = true)
    )]
    async fn approve(&self, Parameters(p): Parameters<Approve>) -> Result<Json<ApproveOut>, String> {
        name_ok("proposal", &p.proposal)?;
        if !["apply", "push", "draft_pr"].contains(&p.action.as_str()) {
            return Err(format!("action `{}` is not one of apply, push, draft_pr", p.action));
        }
        let path = format!("/api/v1/proposals/{}/approve", enc(&p.proposal));
        let proposal = self.backend.call(Method::POST, &path, Some(json!({ "action": p.action }))).await?;
        Ok(Json(ApproveOut { proposal: obj(proposal) }))
    }

    #[tool(
        description = "Reject a proposal. With feedback, the feedback goes to the same agent session as a follow-up task (returned), whose work becomes a new proposal.",
        annotations(
            read_only_hint = false,
            destructive_hint = false,
            idempotent_hint = false,
            open_world_hint = false
        )
    )]
    async fn reject(&self, Parameters(p): Parameters<Reject>) -> Result<Json<RejectOut>, String> {
        name_ok("proposal", &p.proposal)?;
        let path = format!("/api/v1/proposals/{}/reject", enc(&p.proposal));
        let v = self.backend.call(Method::POST, &path, Some(json!({ "feedback": p.feedback }))).await?;
        let follow = v["follow_up_task"].clone();
        Ok(Json(RejectOut {
            proposal: obj(v["proposal"].clone()),
            follow_up_task: (!follow.is_null()).then(|| obj(follow)),
        }))
    }
}

fn query(f: &ListFilter) -> String {
    let mut q = Vec::new();
    if let Some(w) = &f.workspace {
        q.push(format!("workspace={}", enc(w)));
    }
    if let Some(s) = &f.state {
        q.push(format!("state={}", enc(s)));
    }
    if q.is_empty() { String::new() } else { format!("?{}", q.join("&")) }
}

#[tool_handler(router = self.tool_router)]
impl ServerHandler for DevaipodMcp {
    fn get_info(&self) -> ServerConfig {
        let mut info = ServerConfig::new(ServerCapabilities::builder().enable_tools().build()).with_instructions(
            "devaipod runs coding agents in sandboxed podman pods. create_workspace → run_task (wait_seconds, or poll get_task) → list_proposals / get_proposal → approve or reject.",
        );
        info.server_info.name = "devaipod".into();
        info.server_info.version = env!("CARGO_PKG_VERSION").into();
        info
    }
}

/// Progress notifications for the request, when the client asked for them.
struct Progress {
    token: Option<rmcp::model::ProgressToken>,
    peer: rmcp::Peer<RoleServer>,
    count: std::sync::atomic::AtomicU32,
}

impl Progress {
    fn new(ctx: &RequestContext<RoleServer>) -> Self {
        Progress { token: ctx.meta.get_progress_token(), peer: ctx.peer.clone(), count: Default::default() }
    }

    async fn send(&self, message: &str) {
        let Some(token) = &self.token else { return };
        let n = self.count.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        let _ = self
            .peer
            .notify_progress(ProgressNotificationParam::new(token.clone(), f64::from(n)).with_message(message))
            .await;
    }
}
