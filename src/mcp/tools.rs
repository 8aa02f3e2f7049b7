//! The outer MCP tools: `create_workspace`, `list_workspaces`, `get_workspace`,
//! `delete_workspace`, `run_task`, `get_task`, `list_tasks`, `cancel_task`,
//! `list_proposals`, `get_proposal`, `approve`, `reject`; for fan-out, `list_proposal_sets`,
//! `get_proposal_set`, `diff_candidates`, `reject_proposal_set`, `cancel_proposal_set`.

use std::path::PathBuf;
use std::time::Duration;

use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::wrapper::{Json, Parameters};
use rmcp::model::{ProgressNotificationParam, ServerCapabilities, ServerConfig};
use rmcp::service::RequestContext;
use rmcp::{RoleServer, ServerHandler, schemars, tool, tool_handler, tool_router};
use serde::{Deserialize, Serialize};

use crate::client::{Client, ClientError, UpProgress, UpResult};
use crate::core::{
    ApproveAction, CallerEnv, Done, EgressView, ProposalDetail, ProposalPage, ProposalQuery, Rejected, SetRejected,
    SetRequest, SetView, TaskDetail, TaskQuery, UpRequest, WorkspaceStatus,
};
use crate::store::{SetRecord, SetState, Task};

/// Longest wait `run_task` accepts (clients time calls out after about a minute).
const MAX_WAIT_SECS: u64 = 600;
/// Default and largest page of a diff in `get_proposal`.
const DIFF_PAGE: usize = 20_000;
const DIFF_PAGE_MAX: usize = 200_000;

#[derive(Clone)]
pub struct DevaipodMcp {
    client: Client,
    caller: Caller,
    tool_router: ToolRouter<Self>,
}

/// What the process that runs the MCP server lends to `create_workspace`, as a shell does
/// to `devaipod up`: its directory (for relative paths) and environment. `/mcp` in the daemon
/// has no caller: relative paths are refused and the daemon's environment is used.
#[derive(Debug, Clone, Default)]
pub struct Caller {
    pub cwd: Option<PathBuf>,
    pub env: Option<CallerEnv>,
}

// ---- inputs ----

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[schemars(extend("required" = ["source"]))]
pub struct CreateWorkspace {
    /// A local git repository path, a git URL (https://, file://, git@host:path), or a GitHub
    /// repository, issue or pull request URL (an issue or PR brings the first task).
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
    /// Hosts the agent may reach beyond devaipod.toml's `[network] allow-hosts`: `host`,
    /// `host:port`, `*.domain` or `*.domain:port` (no port: 80 and 443).
    #[serde(default)]
    pub allow_hosts: Vec<String>,
    /// The coding agent to run instead of the configured one: `opencode` (its HTTP API),
    /// `opencode-acp` (opencode over the Agent Client Protocol), or a name the config
    /// defines as `[agents.<name>]` (e.g. Codex or Claude Code through their ACP adapters).
    pub agent: Option<String>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[schemars(extend("required" = ["workspace"]))]
pub struct WorkspaceEgress {
    /// The workspace's name.
    #[serde(default)]
    pub workspace: String,
    /// Host patterns to add to the workspace's own list (`host`, `host:port`, `*.domain`,
    /// `*.domain:port`; no port: 80 and 443). Applies to the agent's next connection.
    #[serde(default)]
    pub allow: Vec<String>,
    /// Host patterns to take off the workspace's own list.
    #[serde(default)]
    pub remove: Vec<String>,
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
    /// Let the agent delegate parts of the task to up to this many sandboxed worker agents
    /// (default 0: none; at most `[orchestration] max-workers`). Their tasks show under the
    /// task in get_task; the task still ends in one proposal.
    #[serde(default)]
    pub workers: u32,
    /// Fan-out: give the prompt to this many candidate agents at once (1 to `[fanout]
    /// max-agents`), each in its own sandbox, all from the same commit. The answer is then a
    /// proposal set (`proposal_set`) to compare (get_proposal_set, diff_candidates) and
    /// choose from (approve one candidate's proposal).
    pub agents: Option<u32>,
    /// With `agents`: one model per candidate (from `[agent] model` and `[agent] models`;
    /// default: all the same model).
    #[serde(default)]
    pub models: Vec<String>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[schemars(extend("required" = ["id"]))]
pub struct SetRef {
    /// The proposal set's id (s-…).
    #[serde(default)]
    pub id: String,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct ListSets {
    /// Only this workspace's.
    pub workspace: Option<String>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[schemars(extend("required" = ["id", "a", "b"]))]
pub struct DiffCandidates {
    /// The proposal set's id (s-…).
    #[serde(default)]
    pub id: String,
    /// The candidate the diff goes from (its number, 1…).
    #[serde(default)]
    pub a: u32,
    /// The candidate the diff goes to.
    #[serde(default)]
    pub b: u32,
    /// Where the page of the diff starts, in characters (default 0).
    #[serde(default)]
    pub diff_offset: usize,
    /// Largest page of the diff, in characters (default 20000, at most 200000).
    pub diff_limit: Option<usize>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[schemars(extend("required" = ["id"]))]
pub struct RejectSet {
    /// The proposal set's id (s-…).
    #[serde(default)]
    pub id: String,
    /// Feedback: sent to every candidate with an open proposal (or to `candidates`) as its
    /// next round, in its own session. Without feedback the set is closed.
    pub feedback: Option<String>,
    /// Only these candidates get the feedback.
    #[serde(default)]
    pub candidates: Vec<u32>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[schemars(extend("required" = ["id"]))]
pub struct TaskRef {
    /// The task's id (t-…).
    #[serde(default)]
    pub id: String,
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
    #[schemars(with = "ApproveAction")]
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

// ---- outputs: core's own types, so the output schemas list their real fields ----

#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct WorkspaceOut {
    /// The workspace: name, pod, status, container states, source, folder, ports.
    pub workspace: WorkspaceStatus,
    /// The first task, when one was started (given, or a GitHub issue's).
    pub task: Option<Task>,
    /// Why the first task did not start, when it did not (the workspace is made either way).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_task_error: Option<String>,
    /// Made by `create_workspace`: whether it took a warm pod from the pool (`[pool]`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from_pool: Option<bool>,
    /// Made by `create_workspace` while a pool is kept: why no warm pod was taken.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pool: Option<String>,
}

#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct WorkspacesOut {
    pub workspaces: Vec<WorkspaceStatus>,
}

/// `run_task`'s answer: the task (and its events, proposal, workers), or, with `agents`,
/// the proposal set.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct RunTaskOut {
    #[serde(flatten)]
    pub task: Option<TaskDetail>,
    /// With `agents`: the proposal set (its candidates, their states, proposals and checks).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub proposal_set: Option<SetView>,
}

#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct SetsOut {
    pub proposal_sets: Vec<SetRecord>,
}

#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct CandidatesDiffOut {
    /// A page of the unified diff from candidate `a`'s proposal to candidate `b`'s.
    pub diff: String,
    pub diff_offset: usize,
    /// The whole diff's length in characters.
    pub diff_total: usize,
    /// Where the next page starts, when there is more.
    pub next_diff_offset: Option<usize>,
}

#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct TasksOut {
    pub tasks: Vec<Task>,
}

#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct ProposalOut {
    /// The proposal: id, task, branch, commits, files with +/-, summary, state, approvals.
    pub proposal: ProposalDetail,
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
    pub proposal: ProposalDetail,
}

/// A required argument that names something (it becomes part of a request path): the
/// schema says it is required; an empty one is refused here with what to give.
fn required(field: &str, v: &str) -> Result<(), String> {
    if v.trim().is_empty() { Err(format!("`{field}` is required")) } else { Ok(()) }
}

/// `diff_limit` as asked (default [`DIFF_PAGE`]), or what to give.
fn diff_limit(asked: Option<usize>) -> Result<usize, String> {
    match asked.unwrap_or(DIFF_PAGE) {
        0 => Err(format!("diff_limit must be 1 to {DIFF_PAGE_MAX}")),
        n if n > DIFF_PAGE_MAX => Err(format!("diff_limit must be 1 to {DIFF_PAGE_MAX}")),
        n => Ok(n),
    }
}

/// The page of `diff` from `offset` (characters): its text, the whole length, and where
/// the next page starts.
fn diff_page(diff: &str, offset: usize, limit: usize) -> Result<(String, usize, Option<usize>), String> {
    let total = diff.chars().count();
    if offset > total {
        return Err(format!("diff_offset {offset} is past the diff's end ({total} characters)"));
    }
    let end = (offset + limit).min(total);
    Ok((diff.chars().skip(offset).take(end - offset).collect(), total, (end < total).then_some(end)))
}

/// A tool's failure: the daemon's message (what to fix), as `isError`.
fn fail(e: ClientError) -> String {
    e.to_string()
}

/// A followed task that failed, as `isError`: its id and its reason.
fn failed(d: &TaskDetail) -> String {
    format!("task {} failed: {}", d.task.id, d.task.error.as_deref().unwrap_or("no reason recorded"))
}

#[tool_router]
impl DevaipodMcp {
    pub fn new(client: Client, caller: Caller) -> Self {
        DevaipodMcp { client, caller, tool_router: Self::tool_router() }
    }

    #[tool(
        description = "Create a workspace: a sandboxed pod with the repository and a coding agent. `source` is a local git repository path, a git URL, or a GitHub repository/issue/PR URL (an issue's title and body become the first task unless `task` is given; the agent gets gator scopes on that repository: read, create-draft, push-new-branch, or read only with read_only). Optionally starts a first task. Takes seconds (image build, agent start); sends progress notifications.",
        annotations(read_only_hint = false, destructive_hint = false, idempotent_hint = false, open_world_hint = true)
    )]
    async fn create_workspace(
        &self,
        Parameters(p): Parameters<CreateWorkspace>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<Json<WorkspaceOut>, String> {
        let source = match &self.caller.cwd {
            Some(cwd) => crate::core::source::absolute(&p.source, cwd),
            None => p.source,
        };
        let req = UpRequest {
            source,
            name: p.name,
            image: p.image,
            task: p.task,
            read_only: p.read_only,
            env: self.caller.env.clone(),
            allow_hosts: p.allow_hosts,
            agent: p.agent,
            ..Default::default()
        };
        let progress = Progress::new(&ctx);
        let r = progress
            .forwarding(|tx| async move {
                self.client
                    .up(&req, |line| {
                        if let UpProgress::Step(step) = line {
                            let _ = tx.send(step);
                        }
                    })
                    .await
            })
            .await
            .map_err(fail)?;
        match r {
            UpResult::Created(c) => Ok(Json(WorkspaceOut {
                workspace: c.workspace,
                task: c.task,
                first_task_error: c.first_task_error,
                from_pool: Some(c.from_pool),
                pool: c.pool,
            })),
            UpResult::Planned(_) => Err("the daemon answered with a plan where a workspace was asked for".into()),
        }
    }

    #[tool(
        description = "List the workspaces: name, pod status, workspace and agent container states, source.",
        annotations(read_only_hint = true, destructive_hint = false, idempotent_hint = true, open_world_hint = false)
    )]
    async fn list_workspaces(&self) -> Result<Json<WorkspacesOut>, String> {
        Ok(Json(WorkspacesOut { workspaces: self.client.workspaces().await.map_err(fail)? }))
    }

    #[tool(
        description = "One workspace: pod status, container states, source, repository folder, published ports.",
        annotations(read_only_hint = true, destructive_hint = false, idempotent_hint = true, open_world_hint = false)
    )]
    async fn get_workspace(&self, Parameters(p): Parameters<WorkspaceRef>) -> Result<Json<WorkspaceOut>, String> {
        required("name", &p.name)?;
        let workspace = self.client.workspace(&p.name).await.map_err(fail)?;
        Ok(Json(WorkspaceOut { workspace, task: None, first_task_error: None, from_pool: None, pool: None }))
    }

    #[tool(
        description = "Show, and optionally change, which hosts a workspace's agent may reach through devaipod's egress proxy (its only way out). `allow` adds host patterns to the workspace's own list, `remove` takes them off; both empty just shows. The LLM endpoint is always reachable; the host's and internal addresses never are. Denied connections are in the audit log.",
        annotations(read_only_hint = false, destructive_hint = false, idempotent_hint = true, open_world_hint = false)
    )]
    async fn workspace_egress(&self, Parameters(p): Parameters<WorkspaceEgress>) -> Result<Json<EgressView>, String> {
        required("workspace", &p.workspace)?;
        let mut view = None;
        if !p.allow.is_empty() {
            view = Some(self.client.egress_allow(&p.workspace, &p.allow).await.map_err(fail)?);
        }
        for host in &p.remove {
            view = Some(self.client.egress_remove(&p.workspace, host).await.map_err(fail)?);
        }
        match view {
            Some(v) => Ok(Json(v)),
            None => Ok(Json(self.client.egress(&p.workspace).await.map_err(fail)?)),
        }
    }

    #[tool(
        description = "Delete a workspace: its pod, containers, secrets and (unless keep_volumes) its volumes. Its running tasks are cancelled; tasks and proposals stay listed.",
        annotations(read_only_hint = false, destructive_hint = true, idempotent_hint = false, open_world_hint = false)
    )]
    async fn delete_workspace(&self, Parameters(p): Parameters<DeleteWorkspace>) -> Result<Json<Done>, String> {
        required("name", &p.name)?;
        Ok(Json(self.client.delete(&p.name, p.keep_volumes).await.map_err(fail)?))
    }

    #[tool(
        description = "Give the workspace's agent a task. Returns the task at once (wait_seconds 0), or follows it up to wait_seconds until it ends, sending each event as a progress notification; then poll with get_task. When it completes with changes, its work becomes a proposal. A followed task that fails is an error result with its reason (e.g. the agent cannot reach its LLM).",
        annotations(read_only_hint = false, destructive_hint = false, idempotent_hint = false, open_world_hint = true)
    )]
    async fn run_task(
        &self,
        Parameters(p): Parameters<RunTask>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<Json<RunTaskOut>, String> {
        if p.wait_seconds > MAX_WAIT_SECS {
            return Err(format!("wait_seconds is at most {MAX_WAIT_SECS}; poll with get_task for longer tasks"));
        }
        if p.agents.is_some() || !p.models.is_empty() {
            if p.workers > 0 {
                return Err("workers and agents do not go together: a fan-out's candidates do not delegate".into());
            }
            let req = SetRequest {
                workspace: p.workspace.clone(),
                prompt: p.prompt.clone(),
                agents: p.agents.unwrap_or(p.models.len() as u32),
                models: p.models.clone(),
            };
            let set = self.client.run_set(&req).await.map_err(fail)?;
            let set = self.follow_set(set, p.wait_seconds, &ctx).await?;
            return Ok(Json(RunTaskOut { task: None, proposal_set: Some(set) }));
        }
        let task = self.client.run_task_with(&p.workspace, &p.prompt, p.workers).await.map_err(fail)?;
        Ok(Json(RunTaskOut { task: Some(self.follow_task(&task, p.wait_seconds, &ctx).await?), proposal_set: None }))
    }

    /// Waits up to `wait` seconds for a set to end, a progress notification per change.
    async fn follow_set(
        &self,
        mut set: SetView,
        wait: u64,
        ctx: &RequestContext<RoleServer>,
    ) -> Result<SetView, String> {
        let progress = Progress::new(ctx);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(wait);
        let said = |s: &SetView| {
            let states: Vec<String> = s.candidates.iter().map(|c| format!("{}: {}", c.n, c.state)).collect();
            format!("set {} {}: {}", s.set.id, s.set.state.as_str(), states.join(", "))
        };
        let mut last = String::new();
        while set.set.state == SetState::Running && tokio::time::Instant::now() < deadline {
            let now = said(&set);
            if now != last {
                progress.send(&now).await;
                last = now;
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = ctx.ct.cancelled() => break,
            }
            set = self.client.set(&set.set.id).await.map_err(fail)?;
        }
        Ok(set)
    }

    /// Follows a task up to `wait` seconds (0: its state now).
    async fn follow_task(
        &self,
        task: &Task,
        wait: u64,
        ctx: &RequestContext<RoleServer>,
    ) -> Result<TaskDetail, String> {
        if wait == 0 {
            return self.client.task(&task.id).await.map_err(fail);
        }
        // Follow the task's events (the bus, as `devaipod run` does) until it ends, the wait
        // is over, or the client cancels the call; the task goes on in every case.
        let progress = Progress::new(ctx);
        let id = &task.id;
        let follow = progress.forwarding(|tx| async move {
            self.client
                .follow(id, |e| {
                    let _ = tx.send(e.message.clone());
                })
                .await
        });
        tokio::select! {
            r = tokio::time::timeout(Duration::from_secs(wait), follow) => {
                if let Ok(done) = r {
                    let done = done.map_err(fail)?;
                    // A task that failed is the tool's failure, with the task's own reason
                    // (the same words the CLI prints and the web shows).
                    if done.task.state == crate::store::TaskState::Failed {
                        return Err(failed(&done));
                    }
                    return Ok(done);
                }
            }
            _ = ctx.ct.cancelled() => {}
        }
        self.client.task(&task.id).await.map_err(fail)
    }

    #[tool(
        description = "A task: its state (queued, running, needs_input, completed, failed, cancelled), error or summary, progress events, and its proposal.",
        annotations(read_only_hint = true, destructive_hint = false, idempotent_hint = true, open_world_hint = false)
    )]
    async fn get_task(&self, Parameters(p): Parameters<TaskRef>) -> Result<Json<TaskDetail>, String> {
        required("id", &p.id)?;
        Ok(Json(self.client.task(&p.id).await.map_err(fail)?))
    }

    #[tool(
        description = "List tasks, newest first; optionally of one workspace and in one state.",
        annotations(read_only_hint = true, destructive_hint = false, idempotent_hint = true, open_world_hint = false)
    )]
    async fn list_tasks(&self, Parameters(q): Parameters<TaskQuery>) -> Result<Json<TasksOut>, String> {
        Ok(Json(TasksOut { tasks: self.client.tasks(&q).await.map_err(fail)? }))
    }

    #[tool(
        description = "Cancel a task: its agent session is aborted and the task ends cancelled.",
        annotations(read_only_hint = false, destructive_hint = true, idempotent_hint = false, open_world_hint = false)
    )]
    async fn cancel_task(&self, Parameters(p): Parameters<TaskRef>) -> Result<Json<TaskDetail>, String> {
        required("id", &p.id)?;
        let task = self.client.cancel_task(&p.id).await.map_err(fail)?;
        Ok(Json(self.client.task(&task.id).await.map_err(fail)?))
    }

    #[tool(
        description = "List proposals (agents' finished work: a branch with a diff) as summaries, newest first, a page at a time (limit, offset; next_offset says where the next page starts); optionally of one workspace and in one state (open, applied, pushed, rejected).",
        annotations(read_only_hint = true, destructive_hint = false, idempotent_hint = true, open_world_hint = false)
    )]
    async fn list_proposals(&self, Parameters(q): Parameters<ProposalQuery>) -> Result<Json<ProposalPage>, String> {
        Ok(Json(self.client.proposals(&q).await.map_err(fail)?))
    }

    #[tool(
        description = "A proposal with its unified diff, paged: diff_offset and diff_limit (default 20000 characters); next_diff_offset says where the next page starts.",
        annotations(read_only_hint = true, destructive_hint = false, idempotent_hint = true, open_world_hint = false)
    )]
    async fn get_proposal(&self, Parameters(p): Parameters<GetProposal>) -> Result<Json<ProposalOut>, String> {
        let limit = diff_limit(p.diff_limit)?;
        required("id", &p.id)?;
        let proposal = self.client.proposal(&p.id).await.map_err(fail)?;
        let diff = self.client.diff(&p.id).await.map_err(fail)?;
        let (diff, diff_total, next_diff_offset) = diff_page(&diff, p.diff_offset, limit)?;
        Ok(Json(ProposalOut { proposal, diff, diff_offset: p.diff_offset, diff_total, next_diff_offset }))
    }

    #[tool(
        description = "Approve a proposal. action `apply`: the branch devaipod/<task> is fetched into the human's workspace repository; `push`: the branch is pushed to the source's remote; `draft_pr`: push and open a draft PR on the workspace's GitHub repository. Each action runs once.",
        annotations(read_only_hint = false, destructive_hint = false, idempotent_hint = false, open_world_hint = true)
    )]
    async fn approve(&self, Parameters(p): Parameters<Approve>) -> Result<Json<ApproveOut>, String> {
        required("proposal", &p.proposal)?;
        let action: ApproveAction = p.action.parse().map_err(|e: crate::core::CoreError| e.to_string())?;
        Ok(Json(ApproveOut { proposal: self.client.approve(&p.proposal, action).await.map_err(fail)? }))
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
    async fn reject(&self, Parameters(p): Parameters<Reject>) -> Result<Json<Rejected>, String> {
        required("proposal", &p.proposal)?;
        Ok(Json(self.client.reject(&p.proposal, p.feedback.as_deref()).await.map_err(fail)?))
    }

    #[tool(
        description = "List proposal sets (fan-out: one prompt given to several candidate agents, run_task with agents), newest first; optionally of one workspace.",
        annotations(read_only_hint = true, destructive_hint = false, idempotent_hint = true, open_world_hint = false)
    )]
    async fn list_proposal_sets(&self, Parameters(p): Parameters<ListSets>) -> Result<Json<SetsOut>, String> {
        let sets = self.client.sets(p.workspace.as_deref().filter(|w| !w.is_empty())).await.map_err(fail)?;
        Ok(Json(SetsOut { proposal_sets: sets }))
    }

    #[tool(
        description = "A proposal set, for comparing its candidates: each candidate's state (waiting, queued, running, checking, completed, failed, cancelled, chosen, not_chosen), model, duration, summary, proposal with files and +/-, the [fanout] check's exit code, duration and last lines of output, and why a failed one failed. Approve one candidate's proposal (approve) to choose it: the others become not_chosen.",
        annotations(read_only_hint = true, destructive_hint = false, idempotent_hint = true, open_world_hint = false)
    )]
    async fn get_proposal_set(&self, Parameters(p): Parameters<SetRef>) -> Result<Json<SetView>, String> {
        required("id", &p.id)?;
        Ok(Json(self.client.set(&p.id).await.map_err(fail)?))
    }

    #[tool(
        description = "The unified diff between two candidates of a proposal set (from candidate a's proposal to candidate b's), paged like get_proposal's.",
        annotations(read_only_hint = true, destructive_hint = false, idempotent_hint = true, open_world_hint = false)
    )]
    async fn diff_candidates(
        &self,
        Parameters(p): Parameters<DiffCandidates>,
    ) -> Result<Json<CandidatesDiffOut>, String> {
        required("id", &p.id)?;
        let limit = diff_limit(p.diff_limit)?;
        let diff = self.client.diff_candidates(&p.id, p.a, p.b).await.map_err(fail)?;
        let (diff, diff_total, next_diff_offset) = diff_page(&diff, p.diff_offset, limit)?;
        Ok(Json(CandidatesDiffOut { diff, diff_offset: p.diff_offset, diff_total, next_diff_offset }))
    }

    #[tool(
        description = "Reject a complete proposal set. With feedback, every candidate with an open proposal (or those in `candidates`) gets it as its next round in its own session, and the set runs again; without feedback the set is closed.",
        annotations(
            read_only_hint = false,
            destructive_hint = false,
            idempotent_hint = false,
            open_world_hint = false
        )
    )]
    async fn reject_proposal_set(&self, Parameters(p): Parameters<RejectSet>) -> Result<Json<SetRejected>, String> {
        required("id", &p.id)?;
        Ok(Json(self.client.reject_set(&p.id, p.feedback.as_deref(), &p.candidates).await.map_err(fail)?))
    }

    #[tool(
        description = "Cancel a proposal set: its unfinished candidates are cancelled and every candidate's container removed; none of its proposals can be approved afterwards.",
        annotations(read_only_hint = false, destructive_hint = true, idempotent_hint = false, open_world_hint = false)
    )]
    async fn cancel_proposal_set(&self, Parameters(p): Parameters<SetRef>) -> Result<Json<SetView>, String> {
        required("id", &p.id)?;
        Ok(Json(self.client.cancel_set(&p.id).await.map_err(fail)?))
    }
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

    /// Runs `work` with a sender whose lines become progress notifications as they come.
    async fn forwarding<'a, T, F, Fut>(&self, work: F) -> T
    where
        F: FnOnce(tokio::sync::mpsc::UnboundedSender<String>) -> Fut,
        Fut: std::future::Future<Output = T> + 'a,
    {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
        let forward = async {
            while let Some(line) = rx.recv().await {
                self.send(&line).await;
            }
        };
        // `work` owns the sender: when it ends, the channel closes and forwarding ends.
        let (out, ()) = tokio::join!(work(tx), forward);
        out
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    /// Follows a local `$ref` (`#/$defs/X`) of `root`.
    fn resolve<'a>(root: &'a Value, schema: &'a Value) -> &'a Value {
        let Some(r) = schema.get("$ref").and_then(Value::as_str) else { return schema };
        let name = r.rsplit('/').next().unwrap();
        &root["$defs"][name]
    }

    /// The properties of a schema, through `$ref`s and `anyOf [T, null]` (options).
    fn props<'a>(root: &'a Value, schema: &'a Value) -> Vec<&'a str> {
        let s = resolve(root, schema);
        let s = match s.get("anyOf").and_then(Value::as_array) {
            Some(alts) => alts.iter().map(|a| resolve(root, a)).find(|a| a.get("properties").is_some()).unwrap_or(s),
            None => s,
        };
        let mut keys: Vec<&str> =
            s["properties"].as_object().map(|m| m.keys().map(String::as_str).collect()).unwrap_or_default();
        keys.sort();
        keys
    }

    /// Every tool's output schema lists the real fields of what it returns (not a bare
    /// `object`), down to the task's and the proposal's own fields.
    #[test]
    fn output_schemas_list_the_real_fields() {
        let tools = DevaipodMcp::tool_router().list_all();
        assert_eq!(tools.len(), 18);
        let task = ["base", "created_at", "deadline_at", "delivered", "error", "follows_proposal", "id", "prompt"];
        let proposal =
            ["added", "branch", "commits", "files", "head", "id", "state", "summary", "task_id", "workspace"];
        type Row<'a> = (&'a str, &'a [&'a str], Option<(&'a str, &'a [&'a str])>);
        let set = ["candidates", "chosen", "id", "prompt", "round", "state", "workspace"];
        let table: [Row; 18] = [
            (
                "create_workspace",
                &["first_task_error", "from_pool", "pool", "task", "workspace"],
                Some(("task", &task)),
            ),
            ("list_workspaces", &["workspaces"], None),
            (
                "get_workspace",
                &["first_task_error", "from_pool", "pool", "task", "workspace"],
                Some(("workspace", &["agent", "name", "pod", "status"])),
            ),
            ("delete_workspace", &["result", "workspace"], None),
            ("workspace_egress", &["from_config", "hosts", "llm", "mode", "workspace"], None),
            ("run_task", &["events", "proposal", "proposal_set", "task", "workers"], Some(("task", &task))),
            ("get_task", &["events", "proposal", "task", "workers"], Some(("task", &task))),
            ("cancel_task", &["events", "proposal", "task", "workers"], Some(("task", &task))),
            ("list_tasks", &["tasks"], None),
            ("list_proposals", &["next_offset", "proposals", "total"], None),
            (
                "get_proposal",
                &["diff", "diff_offset", "diff_total", "next_diff_offset", "proposal"],
                Some(("proposal", &proposal)),
            ),
            ("approve", &["proposal"], Some(("proposal", &["approvals", "id", "state"]))),
            ("reject", &["follow_up_task", "proposal"], Some(("follow_up_task", &task))),
            ("list_proposal_sets", &["proposal_sets"], None),
            (
                "get_proposal_set",
                &[
                    "base",
                    "candidates",
                    "check",
                    "chosen",
                    "created_at",
                    "id",
                    "prompt",
                    "round",
                    "state",
                    "updated_at",
                    "workspace",
                ],
                None,
            ),
            ("diff_candidates", &["diff", "diff_offset", "diff_total", "next_diff_offset"], None),
            ("reject_proposal_set", &["next_round", "set"], Some(("set", &set))),
            (
                "cancel_proposal_set",
                &[
                    "base",
                    "candidates",
                    "check",
                    "chosen",
                    "created_at",
                    "id",
                    "prompt",
                    "round",
                    "state",
                    "updated_at",
                    "workspace",
                ],
                None,
            ),
        ];
        for (name, top, inner) in table {
            let tool = tools.iter().find(|t| t.name == name).unwrap_or_else(|| panic!("{name} is listed"));
            let root = serde_json::to_value(tool.output_schema.as_ref().expect("an output schema")).unwrap();
            assert_eq!(root["type"], "object", "{name}");
            assert_eq!(props(&root, &root), top, "{name}: {root:#}");
            if let Some((field, want)) = inner {
                let got = props(&root, &root["properties"][field]);
                for w in want {
                    assert!(got.contains(w), "{name}.{field} lists `{w}`: {got:?}");
                }
            }
        }
        // The task's state is an enum of the states a client can wait for.
        let get = tools.iter().find(|t| t.name == "get_task").unwrap();
        let root = serde_json::to_value(get.output_schema.as_ref().unwrap()).unwrap();
        let task_schema = resolve(&root, &root["properties"]["task"]);
        let state = resolve(&root, &task_schema["properties"]["state"]);
        let states: Vec<&str> = state["enum"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
        assert_eq!(states, ["queued", "running", "needs_input", "completed", "failed", "cancelled"]);
        // And the approve action is an enum in the input schema.
        let approve = tools.iter().find(|t| t.name == "approve").unwrap();
        let input = serde_json::to_value(approve.input_schema.as_ref()).unwrap();
        let action = resolve(&input, &input["properties"]["action"]);
        let values: Vec<&str> =
            action["oneOf"].as_array().unwrap().iter().map(|v| v["const"].as_str().unwrap()).collect();
        assert_eq!(values, ["apply", "push", "draft_pr"], "{input:#}");
    }
}
