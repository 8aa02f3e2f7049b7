//! The MCP tools one pod's agent sees. The handler is bound to one workspace (the socket it
//! was accepted on), lists only the tools its scopes allow, and decides and audits every
//! call before doing anything — unknown tools and bad arguments included.

use std::sync::Arc;

use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, ListToolsResult, PaginatedRequestParams,
    ServerCapabilities, ServerConfig, Tool, ToolAnnotations,
};
use rmcp::service::RequestContext;
use rmcp::{ErrorData, RoleServer, ServerHandler, schemars};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::config::WorkerGator;
use crate::core::{Core, DiffPage, Seat};
use crate::github::scope::{Perm, RepoId, Request, decide, offers};
use crate::pods::Engine;

/// Gator for one agent of a workspace: its owner agent or a worker (the socket it was
/// accepted on says which).
pub struct PodGator<E> {
    core: Arc<Core<E>>,
    workspace: String,
    seat: Seat,
}

impl<E> Clone for PodGator<E> {
    fn clone(&self) -> Self {
        PodGator { core: self.core.clone(), workspace: self.workspace.clone(), seat: self.seat }
    }
}

// ---- inputs ----

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct GetItem {
    /// `owner/repo` (default: the workspace's repository).
    repo: Option<String>,
    /// The issue or pull request number.
    number: u64,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct ListItems {
    /// `owner/repo` (default: the workspace's repository).
    repo: Option<String>,
    /// `open` (default), `closed` or `all`.
    state: Option<String>,
    /// At most this many (1 to 100, default 30).
    limit: Option<u32>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct PushBranch {
    /// The branch to push (default and only choice: the running task's `devaipod/<task>`).
    branch: Option<String>,
    /// Overwrite the remote branch (needs the `write` scope).
    force: Option<bool>,
    /// `owner/repo` to push to (default: the workspace's repository).
    repo: Option<String>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct CreateDraftPr {
    /// The pull request's title.
    title: String,
    /// Its description (Markdown).
    body: Option<String>,
    /// The branch with the changes (default: the running task's branch; push it first).
    head: Option<String>,
    /// The branch to merge into (default: the repository's default branch).
    base: Option<String>,
    /// `owner/repo` (default: the workspace's repository).
    repo: Option<String>,
    /// Must be true or absent: agents open draft pull requests only.
    draft: Option<bool>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct Comment {
    /// `owner/repo` (default: the workspace's repository).
    repo: Option<String>,
    /// The issue or pull request number.
    number: u64,
    /// The comment (Markdown).
    body: String,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct Delegate {
    /// What the worker is to do: a self-contained task (it sees your clone's state as it is
    /// now, not this conversation).
    prompt: String,
    /// Which worker (1 to your task's workers; default: the first free one).
    worker: Option<u32>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct WorkerTaskId {
    /// The worker task's id (from delegate_task or list_worker_tasks).
    id: String,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct GetWorkerTask {
    /// The worker task's id.
    id: String,
    /// Wait up to this many seconds (at most 50) for it to end first.
    wait_seconds: Option<u64>,
    /// The diff from this character (for the next page: `diff_next_offset`).
    diff_offset: Option<usize>,
    /// At most this many characters of diff (default 20000, at most 100000).
    diff_limit: Option<usize>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct RejectWorker {
    /// The worker task's id.
    id: String,
    /// What the worker should change: sent to the same worker as a follow-up task.
    feedback: Option<String>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct NoArgs {}

/// The orchestration tools: served to a task's owner agent only (never to workers), and
/// only where delegation is on.
const ORCHESTRATION: &[Spec] = &[
    Spec {
        name: "delegate_task",
        need: Perm::Read,
        description: "Hand a part of your task to a sandboxed worker agent (started when needed, its clone given your current work). Returns the worker task; wait for it with get_worker_task.",
        schema: schema::<Delegate>,
        read_only: false,
    },
    Spec {
        name: "get_worker_task",
        need: Perm::Read,
        description: "A worker task's state, summary, events, and its proposal's files and diff (paged). Can wait for it to end.",
        schema: schema::<GetWorkerTask>,
        read_only: true,
    },
    Spec {
        name: "list_worker_tasks",
        need: Perm::Read,
        description: "Your task's worker tasks: state, summary, proposal.",
        schema: schema::<NoArgs>,
        read_only: true,
    },
    Spec {
        name: "accept_worker_proposal",
        need: Perm::Read,
        description: "Bring a finished worker's commits into your clone on branch worker/<id>; then merge them (git merge worker/<id>) so your own proposal contains them.",
        schema: schema::<WorkerTaskId>,
        read_only: false,
    },
    Spec {
        name: "reject_worker_proposal",
        need: Perm::Read,
        description: "Reject a worker's proposal; feedback goes to the same worker as a follow-up task.",
        schema: schema::<RejectWorker>,
        read_only: false,
    },
    Spec {
        name: "cancel_worker_task",
        need: Perm::Read,
        description: "Cancel a worker task.",
        schema: schema::<WorkerTaskId>,
        read_only: false,
    },
];

/// One tool: its name, what it needs, its description and input schema.
struct Spec {
    name: &'static str,
    need: Perm,
    description: &'static str,
    schema: fn() -> Value,
    read_only: bool,
}

fn schema<T: schemars::JsonSchema>() -> Value {
    serde_json::to_value(schemars::schema_for!(T)).unwrap_or_else(|_| json!({ "type": "object" }))
}

const TOOLS: &[Spec] = &[
    Spec {
        name: "github_get_issue",
        need: Perm::Read,
        description: "Read a GitHub issue: title, body, state, labels.",
        schema: schema::<GetItem>,
        read_only: true,
    },
    Spec {
        name: "github_list_issues",
        need: Perm::Read,
        description: "List a repository's issues (and pull requests, as GitHub does).",
        schema: schema::<ListItems>,
        read_only: true,
    },
    Spec {
        name: "github_get_pull_request",
        need: Perm::Read,
        description: "Read a GitHub pull request: title, body, state, head, base, draft.",
        schema: schema::<GetItem>,
        read_only: true,
    },
    Spec {
        name: "github_list_pull_requests",
        need: Perm::Read,
        description: "List a repository's pull requests.",
        schema: schema::<ListItems>,
        read_only: true,
    },
    Spec {
        name: "git_push_branch",
        need: Perm::PushNewBranch,
        description: "Commit your work and push your task's devaipod/* branch to the repository's remote (with the owner's credentials; you never see them).",
        schema: schema::<PushBranch>,
        read_only: false,
    },
    Spec {
        name: "github_create_draft_pr",
        need: Perm::CreateDraft,
        description: "Open a draft pull request from your pushed devaipod/* branch.",
        schema: schema::<CreateDraftPr>,
        read_only: false,
    },
    Spec {
        name: "github_comment",
        need: Perm::Write,
        description: "Comment on an issue or pull request.",
        schema: schema::<Comment>,
        read_only: false,
    },
];

/// A refused or failed call: what the agent is told (as `isError`) and what is audited.
struct Refusal {
    decision: &'static str,
    target: String,
    reason: String,
}

fn deny(target: impl Into<String>, reason: impl Into<String>) -> Refusal {
    Refusal { decision: "deny", target: target.into(), reason: reason.into() }
}

fn failed(target: impl Into<String>, reason: impl std::fmt::Display) -> Refusal {
    Refusal { decision: "error", target: target.into(), reason: reason.to_string() }
}

fn args<T: DeserializeOwned>(name: &str, raw: &Value) -> Result<T, Refusal> {
    serde_json::from_value(raw.clone()).map_err(|e| deny("-", format!("bad arguments for {name}: {e}")))
}

impl<E: Engine + 'static> PodGator<E> {
    pub fn new(core: Arc<Core<E>>, workspace: String, seat: Seat) -> Self {
        PodGator { core, workspace, seat }
    }

    /// Whether this agent is offered the orchestration tools: the owner, where delegation
    /// is on.
    fn orchestrates(&self) -> bool {
        self.seat == Seat::Owner && self.core.config.orchestration.limit() > 0
    }

    /// What a worker may do with a GitHub tool needing `need` (`[orchestration]
    /// worker-gator`), and a fan-out candidate (read only: the human chooses which
    /// candidate's work ships); `None` for the owner.
    fn worker_refusal(&self, need: Perm) -> Option<String> {
        let n = match self.seat {
            Seat::Owner => return None,
            Seat::Candidate(n) => {
                return (need != Perm::Read).then(|| {
                    format!(
                        "candidate {n} may only read: it does not push, open pull requests or write (the human chooses which candidate's proposal ships)"
                    )
                });
            }
            Seat::Worker(n) => n,
        };
        match (self.core.config.orchestration.worker_gator, need) {
            (WorkerGator::None, _) => {
                Some(format!("worker {n} has no gator tools ([orchestration] worker-gator = \"none\")"))
            }
            (_, Perm::PushNewBranch | Perm::CreateDraft) => {
                Some(format!("worker {n} does not push or open pull requests: its work goes to its owner agent"))
            }
            (WorkerGator::Readonly, Perm::Read) => None,
            (WorkerGator::Readonly, _) => {
                Some(format!("worker {n} may only read ([orchestration] worker-gator = \"readonly\")"))
            }
            (WorkerGator::Inherit, _) => None,
        }
    }

    /// Whether `tool` is listed for this agent, given the workspace's scopes.
    fn lists(&self, t: &Spec, scopes: &[crate::github::Scope]) -> bool {
        offers(scopes, t.need) && self.worker_refusal(t.need).is_none()
    }

    /// An orchestration tool: allowed for the owner (audited), refused for anyone else.
    async fn orchestration(&self, tool: &str, raw: &Value) -> Result<Value, Refusal> {
        if self.seat != Seat::Owner {
            return Err(deny("-", format!("unknown tool `{tool}`: {}s do not delegate", self.seat.role())));
        }
        if !self.orchestrates() {
            return Err(deny("-", "delegation is off here ([orchestration] max-workers = 0 or enabled = false)"));
        }
        let core = &self.core;
        let ws = self.workspace.as_str();
        let allowed = |target: String| async move {
            core.audit_as(ws, self.seat, tool, &target, "allow", "the task's owner orchestrates its workers")
                .await
                .map_err(|e| failed(&target, e))
                .map(|_| target)
        };
        let to_value = |v: Result<Value, serde_json::Error>| v.map_err(|e| failed("-", e));
        match tool {
            "delegate_task" => {
                let a: Delegate = args(tool, raw)?;
                let title: String = a.prompt.chars().take(60).collect();
                let target =
                    allowed(format!("worker {}: {title}", a.worker.map_or("any".to_owned(), |n| n.to_string())))
                        .await?;
                let task = core.delegate(ws, &a.prompt, a.worker).await.map_err(|e| failed(&target, e))?;
                to_value(serde_json::to_value(&task))
            }
            "get_worker_task" => {
                let a: GetWorkerTask = args(tool, raw)?;
                let target = allowed(a.id.clone()).await?;
                let page = DiffPage { offset: a.diff_offset, limit: a.diff_limit };
                let view =
                    core.get_worker_task(ws, &a.id, a.wait_seconds, page).await.map_err(|e| failed(&target, e))?;
                to_value(serde_json::to_value(&view))
            }
            "list_worker_tasks" => {
                let _: NoArgs = args(tool, raw)?;
                let target = allowed("-".to_owned()).await?;
                let list = core.list_worker_tasks(ws).await.map_err(|e| failed(&target, e))?;
                Ok(json!({ "worker_tasks": list }))
            }
            "accept_worker_proposal" => {
                let a: WorkerTaskId = args(tool, raw)?;
                let target = allowed(a.id.clone()).await?;
                let accepted = core.accept_worker(ws, &a.id).await.map_err(|e| failed(&target, e))?;
                to_value(serde_json::to_value(&accepted))
            }
            "reject_worker_proposal" => {
                let a: RejectWorker = args(tool, raw)?;
                let target = allowed(a.id.clone()).await?;
                let r = core.reject_worker(ws, &a.id, a.feedback.as_deref()).await.map_err(|e| failed(&target, e))?;
                Ok(json!({
                    "proposal": r.proposal.id,
                    "state": r.proposal.state,
                    "follow_up_task": r.follow_up_task.map(|t| t.id),
                }))
            }
            "cancel_worker_task" => {
                let a: WorkerTaskId = args(tool, raw)?;
                let target = allowed(a.id.clone()).await?;
                let t = core.cancel_worker(ws, &a.id).await.map_err(|e| failed(&target, e))?;
                Ok(json!({ "id": t.id, "state": t.state }))
            }
            other => Err(deny("-", format!("unknown tool `{other}`"))),
        }
    }

    async fn repo(&self, given: Option<&str>) -> Result<RepoId, Refusal> {
        match given {
            Some(r) => RepoId::parse(r).map_err(|e| deny(r, e.to_string())),
            None => match self.core.github_repo(&self.workspace).await {
                Ok(Some(r)) => Ok(r),
                Ok(None) => Err(deny("-", "give `repo` (owner/repo): this workspace has no GitHub repository")),
                Err(e) => Err(failed("-", e)),
            },
        }
    }

    /// Decides `req` against the workspace's scopes (and, for a worker, `[orchestration]
    /// worker-gator`) and audits the decision.
    async fn check(&self, tool: &str, target: &str, req: Request<'_>) -> Result<(), Refusal> {
        let need = TOOLS.iter().find(|t| t.name == tool).map_or(Perm::Write, |t| t.need);
        if let Some(why) = self.worker_refusal(need) {
            return Err(deny(target, why));
        }
        let scopes = self.core.effective_scopes(&self.workspace).await.map_err(|e| failed(target, e))?;
        let d = decide(&scopes, &req);
        if !d.allowed {
            return Err(deny(target, d.reason));
        }
        self.core
            .audit_as(&self.workspace, self.seat, tool, target, "allow", &d.reason)
            .await
            .map_err(|e| failed(target, e))?;
        Ok(())
    }

    /// The branch asked for (default: the running task's) and whether it is the running
    /// task's (`running_only`) or any of this workspace's tasks'.
    async fn branch(&self, given: Option<String>, running_only: bool) -> Result<(String, bool), Refusal> {
        let current = self.core.current_branch(&self.workspace).await.map_err(|e| failed("-", e))?;
        let branch = match (given, &current) {
            (Some(b), _) => b,
            (None, Some(b)) => b.clone(),
            (None, None) => return Err(deny("-", "no task is running in this workspace: name the branch")),
        };
        let own = if running_only {
            current.as_deref() == Some(branch.as_str())
        } else {
            self.core.owns_branch(&self.workspace, &branch).await.map_err(|e| failed(&branch, e))?
        };
        Ok((branch, own))
    }

    async fn dispatch(&self, tool: &str, raw: &Value) -> Result<Value, Refusal> {
        if ORCHESTRATION.iter().any(|t| t.name == tool) {
            return self.orchestration(tool, raw).await;
        }
        // What a worker may not do is refused before anything else is looked at.
        if let Some(spec) = TOOLS.iter().find(|t| t.name == tool)
            && let Some(why) = self.worker_refusal(spec.need)
        {
            return Err(deny("-", why));
        }
        // The GitHub client (and its token) only once a call is allowed.
        let github = || self.core.github();
        match tool {
            "github_get_issue" | "github_get_pull_request" => {
                let a: GetItem = args(tool, raw)?;
                let repo = self.repo(a.repo.as_deref()).await?;
                let target = format!("{repo}#{}", a.number);
                self.check(tool, &target, Request::Read { repo: &repo }).await?;
                let gh = github().await;
                let r = if tool == "github_get_issue" {
                    gh.issue(&repo, a.number).await
                } else {
                    gh.pull(&repo, a.number).await
                };
                r.map_err(|e| failed(target, e))
            }
            "github_list_issues" | "github_list_pull_requests" => {
                let a: ListItems = args(tool, raw)?;
                let repo = self.repo(a.repo.as_deref()).await?;
                let state = a.state.unwrap_or_else(|| "open".into());
                if !["open", "closed", "all"].contains(&state.as_str()) {
                    return Err(deny(repo.to_string(), format!("state `{state}`: use open, closed or all")));
                }
                let target = repo.to_string();
                self.check(tool, &target, Request::Read { repo: &repo }).await?;
                let kind = if tool == "github_list_issues" { "issues" } else { "pulls" };
                let items = github()
                    .await
                    .list(&repo, kind, &state, a.limit.unwrap_or(30))
                    .await
                    .map_err(|e| failed(&target, e))?;
                Ok(json!({ "items": items }))
            }
            "git_push_branch" => {
                let a: PushBranch = args(tool, raw)?;
                let repo = self.repo(a.repo.as_deref()).await?;
                let (branch, own_branch) = self.branch(a.branch, true).await?;
                let force = a.force.unwrap_or(false);
                let target = format!("{repo} {branch}{}", if force { " (force)" } else { "" });
                self.check(tool, &target, Request::Push { repo: &repo, branch: &branch, force, own_branch }).await?;
                let head = self
                    .core
                    .push_agent_branch(&self.workspace, &repo, &branch, force)
                    .await
                    .map_err(|e| failed(&target, e))?;
                Ok(json!({ "pushed": branch, "repo": repo.to_string(), "head": head }))
            }
            "github_create_draft_pr" => {
                let a: CreateDraftPr = args(tool, raw)?;
                let repo = self.repo(a.repo.as_deref()).await?;
                let (head, own_head) = self.branch(a.head, false).await?;
                let draft = a.draft.unwrap_or(true);
                let target = format!("{repo} {head}");
                self.check(tool, &target, Request::OpenPr { repo: &repo, draft, own_head }).await?;
                let gh = github().await;
                let base = match a.base {
                    Some(b) => b,
                    None => gh.default_branch(&repo).await.map_err(|e| failed(&target, e))?,
                };
                let body = a.body.unwrap_or_default();
                gh.create_draft_pr(&repo, &head, &base, &a.title, &body).await.map_err(|e| failed(&target, e))
            }
            "github_comment" => {
                let a: Comment = args(tool, raw)?;
                let repo = self.repo(a.repo.as_deref()).await?;
                let target = format!("{repo}#{}", a.number);
                self.check(tool, &target, Request::Comment { repo: &repo }).await?;
                github().await.comment(&repo, a.number, &a.body).await.map_err(|e| failed(target, e))
            }
            other => Err(deny("-", format!("unknown tool `{other}`"))),
        }
    }
}

impl<E: Engine + 'static> ServerHandler for PodGator<E> {
    fn get_info(&self) -> ServerConfig {
        let mut info = ServerConfig::new(ServerCapabilities::builder().enable_tools().enable_tool_list_changed().build()).with_instructions(
            "gator: GitHub and git for this workspace, within the scopes its owner granted. Push your work with git_push_branch, then open a draft PR with github_create_draft_pr.",
        );
        info.server_info.name = "devaipod-gator".into();
        info.server_info.version = env!("CARGO_PKG_VERSION").into();
        info
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        let scopes = self
            .core
            .effective_scopes(&self.workspace)
            .await
            .map_err(|e| ErrorData::internal_error(e.to_string(), None))?;
        let orchestration = if self.orchestrates() { ORCHESTRATION } else { &[] };
        let tools = TOOLS
            .iter()
            .filter(|t| self.lists(t, &scopes))
            .chain(orchestration)
            .map(|t| {
                let schema = match (t.schema)() {
                    Value::Object(m) => m,
                    _ => serde_json::Map::new(),
                };
                Tool::new(t.name, t.description, schema)
                    .with_annotations(ToolAnnotations::new().read_only(t.read_only).destructive(false))
            })
            .collect();
        Ok(ListToolsResult::with_all_items(tools))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let tool = request.name.to_string();
        let raw = Value::Object(request.arguments.unwrap_or_default());
        let result = match self.dispatch(&tool, &raw).await {
            Ok(value) => CallToolResult::structured(value),
            Err(r) => {
                if let Err(e) =
                    self.core.audit_as(&self.workspace, self.seat, &tool, &r.target, r.decision, &r.reason).await
                {
                    tracing::error!("gator: cannot write the audit log: {e}");
                    return Err(ErrorData::internal_error("the audit log cannot be written", None));
                }
                let what = if r.decision == "deny" { "denied" } else { "failed" };
                CallToolResult::error(vec![ContentBlock::text(format!("{tool} {what}: {}", r.reason))])
            }
        };
        Ok(result.into())
    }
}
