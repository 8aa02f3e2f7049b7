//! Proposals: an agent's finished work, committed inside the sandbox on `devaipod/<task>`,
//! carried out as a git bundle through exec, fetched into the daemon-owned bare repository
//! and measured there with hardened git. Approve applies it to the human's workspace or
//! pushes it; reject can send feedback to the same agent session.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::tasks::Assignment;
use super::workers::Seat;
use super::workspaces::random_hex;
use super::{Core, CoreError, ExecTarget};
use crate::git::BareRepo;
use crate::pods::naming;
use crate::pods::{Engine, EngineError};
use crate::store::{Approval, Proposal, ProposalState, Task, now};

/// How a proposal is approved. Every surface reads it the same way: from JSON (API, MCP,
/// web) through this `Deserialize`, from text through `FromStr`; both say what to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ApproveAction {
    /// Fetch the branch into the human's workspace repository.
    Apply,
    /// Push the branch to the source's remote.
    Push,
    /// Push and open a draft pull request on the workspace's GitHub repository.
    DraftPr,
}

impl ApproveAction {
    pub const ALL: [ApproveAction; 3] = [ApproveAction::Apply, ApproveAction::Push, ApproveAction::DraftPr];

    pub fn as_str(self) -> &'static str {
        match self {
            ApproveAction::Apply => "apply",
            ApproveAction::Push => "push",
            ApproveAction::DraftPr => "draft_pr",
        }
    }
}

impl std::str::FromStr for ApproveAction {
    type Err = CoreError;

    fn from_str(s: &str) -> Result<Self, CoreError> {
        ApproveAction::ALL
            .into_iter()
            .find(|a| a.as_str() == s)
            .ok_or_else(|| CoreError::Invalid(format!("unknown action `{s}`: use apply, push or draft_pr")))
    }
}

impl<'de> Deserialize<'de> for ApproveAction {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Default and largest page of a proposal listing.
const PAGE_DEFAULT: u32 = 50;
const PAGE_MAX: u32 = 500;

/// Which proposals to list: filters and a page.
#[derive(Debug, Clone, Default, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ProposalQuery {
    /// Only this workspace's.
    pub workspace: Option<String>,
    /// Only in this state: open, applied, pushed or rejected.
    pub state: Option<String>,
    /// At most this many (default 50, at most 500).
    pub limit: Option<u32>,
    /// Skip this many (for the next page: the answer's `next_offset`).
    pub offset: Option<u32>,
}

/// A proposal in a listing: what it changes, in numbers (its files and diff are in the
/// proposal itself).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ProposalSummary {
    pub id: String,
    pub task_id: String,
    pub workspace: String,
    pub branch: String,
    pub state: ProposalState,
    pub summary: String,
    /// How many files it changes.
    pub files: u64,
    pub added: u64,
    pub removed: u64,
    pub created_at: i64,
}

impl From<Proposal> for ProposalSummary {
    fn from(p: Proposal) -> Self {
        ProposalSummary {
            files: p.files.len() as u64,
            id: p.id,
            task_id: p.task_id,
            workspace: p.workspace,
            branch: p.branch,
            state: p.state,
            summary: p.summary,
            added: p.added,
            removed: p.removed,
            created_at: p.created_at,
        }
    }
}

/// One page of a proposal listing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ProposalPage {
    pub proposals: Vec<ProposalSummary>,
    /// How many proposals match the filters in all.
    pub total: u64,
    /// Where the next page starts, when there is one.
    pub next_offset: Option<u64>,
}

/// A proposal with the approvals done on it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ProposalDetail {
    #[serde(flatten)]
    pub proposal: Proposal,
    pub approvals: Vec<Approval>,
}

/// A rejected proposal and the follow-up task that carries the feedback, if any.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Rejected {
    pub proposal: Proposal,
    /// The feedback as a task for the same agent session.
    pub follow_up_task: Option<Task>,
}

/// A collection's staging directory, removed when it goes out of scope.
struct Staging(std::path::PathBuf);

impl Drop for Staging {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Who the proposal commits are by.
const AGENT_IDENTITY: (&str, &str) = ("devaipod agent", "agent@devaipod.invalid");

/// The collection inside the sandbox (`collect.sh`): its work tree, as a bundle on stdout.
const COLLECT_SCRIPT: &str = include_str!("collect.sh");

/// The most a collection's command may take (the task's deadline and cancel cut it sooner).
const COLLECT_TIMEOUT: Duration = Duration::from_secs(900);

/// The environment of the collection inside the sandbox: no git configuration from
/// anywhere (system, global, HOME, XDG; from the environment only ours), a fixed identity,
/// no prompts.
pub(super) fn collect_env() -> BTreeMap<String, String> {
    let (name, email) = AGENT_IDENTITY;
    [
        ("GIT_CONFIG_NOSYSTEM", "1"),
        ("GIT_CONFIG_GLOBAL", "/dev/null"),
        // Ours, the only setting: objects stored, not compressed (this is a local stream,
        // and deflating incompressible data was most of the time: 100 MB in 6.1 s → 1.7 s);
        // so `max-proposal-mb` counts the new content's own size.
        ("GIT_CONFIG_COUNT", "1"),
        ("GIT_CONFIG_KEY_0", "core.compression"),
        ("GIT_CONFIG_VALUE_0", "0"),
        ("GIT_CONFIG_PARAMETERS", ""),
        ("GIT_ATTR_NOSYSTEM", "1"),
        ("HOME", "/nonexistent"),
        ("XDG_CONFIG_HOME", "/nonexistent"),
        ("GIT_TERMINAL_PROMPT", "0"),
        ("GIT_OPTIONAL_LOCKS", "0"),
        ("GIT_AUTHOR_NAME", name),
        ("GIT_AUTHOR_EMAIL", email),
        ("GIT_COMMITTER_NAME", name),
        ("GIT_COMMITTER_EMAIL", email),
        ("LC_ALL", "C"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

impl<E: Engine> Core<E> {
    /// Commits the agent's work on `devaipod/<task>` in the sandbox and brings it out.
    /// `None`: the task changed nothing.
    pub(super) async fn make_proposal(&self, task: &Task) -> Result<Option<Proposal>, CoreError> {
        if let Some(p) = self.store.proposal_for_task(&task.id).await? {
            return Ok(Some(p)); // made before a restart
        }
        let ws = task.workspace.as_str();
        let branch = format!("devaipod/{}", task.id);
        let Some(head) = self.bring_out(task).await? else { return Ok(None) };
        let repo = BareRepo::init(self.paths.repo(ws)).await?;
        let base = task.base.clone().unwrap_or_default();
        // The diff shows everything the branch adds to the source (earlier, rejected or
        // unapproved agent commits included), which is exactly what apply or push ships;
        // a worker's, what it added to the state it was given.
        let base = match task.worker {
            None => repo.rev("refs/devaipod/source").await.unwrap_or(base),
            Some(_) => base,
        };
        let stats = repo.stats(&base, &head).await?;
        let proposal = Proposal {
            id: format!("p-{}", random_hex(5)),
            task_id: task.id.clone(),
            workspace: ws.to_owned(),
            branch,
            base,
            head,
            commits: stats.commits,
            files: stats.files,
            added: stats.added,
            removed: stats.removed,
            summary: task.summary.clone().unwrap_or_default(),
            state: ProposalState::Open,
            created_at: now(),
        };
        if Seat::of(task) == Seat::Owner {
            self.store.set_agent_head(ws, &proposal.head).await?;
        }
        if !self.store.insert_proposal(proposal.clone()).await? {
            return Ok(self.store.proposal_for_task(&task.id).await?);
        }
        Ok(Some(proposal))
    }

    /// Collects the task's work tree as one commit on `devaipod/<task>` in the daemon's
    /// repository and returns that branch's head; `None` when the task changed nothing.
    ///
    /// Inside the sandbox, `collect.sh` runs git against a fresh, throw-away GIT_DIR with
    /// no configuration at all (nothing of the agent's clone or HOME is read: no hooks,
    /// filters, fsmonitor, attribute drivers, aliases, includes or locks) and sends a
    /// bundle through exec's stdout, streamed to a file here up to `[agent]
    /// max-proposal-mb`. Here, hardened git fetches it and makes the proposal's commit:
    /// the collected tree on the branch's head (a push collected before) or the task's base.
    /// Nothing is written to the clone, so a collection cut short (a daemon killed, a cancel)
    /// leaves nothing in the way of the next one, and doing it again gives the same head.
    pub(super) async fn bring_out(&self, task: &Task) -> Result<Option<String>, CoreError> {
        let ws = task.workspace.as_str();
        let seat = Seat::of(task);
        // One at a time per agent: a gator push and the task's own end share the branch
        // and the staging directory.
        let lock = self.bring_out_locks.entry(seat.key(ws)).or_default().clone();
        let _one = lock.lock().await;
        let branch = format!("devaipod/{}", task.id);
        let Some(base) = task.base.clone() else {
            return Err(CoreError::Io("the task has no base commit (is the repository empty?)".into()));
        };
        let repo = BareRepo::init(self.paths.repo(ws)).await?;
        // The clone's seed commit (the source's for the owner, the one it was seeded with
        // for a worker) is in the clone: the bundle leaves out what the daemon has of it.
        let seed = match seat {
            Seat::Owner => repo.rev("refs/devaipod/source").await.unwrap_or_else(|_| base.clone()),
            other => repo.rev(&other.seed_ref().unwrap_or_default()).await.unwrap_or_else(|_| base.clone()),
        };
        let collected_ref = format!("refs/devaipod/collected/{}", task.id);
        let fetched = self.collect_work(ws, seat, &repo, &seed, &task.id, &collected_ref).await?;
        let tree = repo.tree(&fetched).await?;

        // The proposal's commit: on what a push collected before, else on the task's base.
        let at = repo.rev(&format!("refs/heads/{branch}")).await.ok();
        let parent = at.clone().unwrap_or_else(|| base.clone());
        let head = if repo.tree(&parent).await? == tree {
            at // unchanged: the branch as it is (none: the task changed nothing)
        } else {
            let subject: String = task.prompt.lines().next().unwrap_or("agent work").chars().take(72).collect();
            let message = format!("{subject}\n\ndevaipod task {}", task.id);
            let commit = repo.commit_tree(&tree, &parent, &message, AGENT_IDENTITY).await?;
            repo.update_ref(&format!("refs/heads/{branch}"), &commit, at.as_deref()).await?;
            Some(commit)
        };
        repo.delete_ref(&collected_ref).await?;
        Ok(head)
    }

    /// Runs `collect.sh` in `seat`'s agent container and fetches the commit it makes (the
    /// work tree on `seed`) into `repo` at `dst_ref`; returns it. The bundle is staged on
    /// disk, never in memory; what a killed daemon left goes first, and the staging goes
    /// however this ends (an error, a cancel that drops this future). The caller holds the
    /// seat's bring-out lock.
    pub(super) async fn collect_work(
        &self,
        ws: &str,
        seat: Seat,
        repo: &BareRepo,
        seed: &str,
        name: &str,
        dst_ref: &str,
    ) -> Result<String, CoreError> {
        let place = self.seat_place(ws, seat).await?;
        let folder =
            place.workdir.clone().ok_or_else(|| CoreError::Io("the agent's repository folder is unknown".into()))?;
        let argv = ["sh", "-c", COLLECT_SCRIPT, "devaipod-collect", &folder, seed];
        let mut spec = place.spec(argv.iter().map(|a| (*a).to_owned()).collect(), false);
        spec.env = collect_env();

        let staging_dir = match seat {
            Seat::Owner => "devaipod-collect".to_owned(),
            Seat::Worker(n) => format!("devaipod-collect-w{n}"),
            Seat::Candidate(n) => format!("devaipod-collect-c{n}"),
        };
        let staging = Staging(repo.path.join(staging_dir));
        let io = |e: std::io::Error| CoreError::Io(format!("staging the collected work: {e}"));
        let _ = tokio::fs::remove_dir_all(&staging.0).await;
        tokio::fs::create_dir_all(&staging.0).await.map_err(io)?;
        let bundle = staging.0.join(format!("{name}.bundle"));
        let mut file = tokio::fs::File::create(&bundle).await.map_err(io)?;
        let limit_mb = self.config.agent.max_proposal_mb;
        let limit = limit_mb.saturating_mul(1024 * 1024);
        let ran = tokio::time::timeout(COLLECT_TIMEOUT, self.engine.exec_to(&place.container, &spec, &mut file, limit))
            .await
            .map_err(|_| {
                CoreError::Io(format!(
                    "collecting the work in the agent container took longer than {} s",
                    COLLECT_TIMEOUT.as_secs()
                ))
            })?;
        drop(file);
        let ran = match ran {
            Ok(ran) => ran,
            Err(EngineError::OutputTooLarge { .. }) => return Err(CoreError::ProposalTooLarge { limit_mb }),
            Err(e) => return Err(e.into()),
        };
        if ran.exit_code != 0 || ran.stdout_bytes == 0 {
            return Err(CoreError::Io(format!(
                "collecting the work in the agent container failed (exit code {}): {}",
                ran.exit_code,
                ran.stderr.trim()
            )));
        }
        let fetched = repo.fetch_bundle_ref(&bundle, "refs/heads/collected", dst_ref).await?;
        drop(staging);
        Ok(fetched)
    }

    /// A page of proposals (summaries, newest first).
    pub async fn proposals(&self, q: &ProposalQuery) -> Result<ProposalPage, CoreError> {
        let state = match q.state.as_deref().filter(|s| !s.is_empty()) {
            None => None,
            Some(s) => Some(ProposalState::parse(s).ok_or_else(|| {
                CoreError::Invalid(format!("unknown proposal state `{s}`: use open, applied, pushed or rejected"))
            })?),
        };
        let limit = q.limit.unwrap_or(PAGE_DEFAULT);
        if limit == 0 || limit > PAGE_MAX {
            return Err(CoreError::Invalid(format!("limit must be 1 to {PAGE_MAX}")));
        }
        let offset = q.offset.unwrap_or(0);
        let workspace = q.workspace.as_deref().filter(|w| !w.is_empty());
        let (page, total) = self.store.proposals(workspace, state, limit, offset).await?;
        let end = u64::from(offset) + page.len() as u64;
        Ok(ProposalPage {
            proposals: page.into_iter().map(ProposalSummary::from).collect(),
            total,
            next_offset: (end < total).then_some(end),
        })
    }

    /// Every open proposal's workspace, counted (for the dashboard).
    pub async fn open_proposals_by_workspace(&self) -> Result<std::collections::BTreeMap<String, u64>, CoreError> {
        Ok(self.store.open_proposal_counts().await?)
    }

    /// A proposal with its approvals.
    pub async fn proposal_detail(&self, id: &str) -> Result<ProposalDetail, CoreError> {
        let proposal = self.proposal(id).await?;
        let approvals = self.store.approvals(id).await?;
        Ok(ProposalDetail { proposal, approvals })
    }

    pub async fn proposal(&self, id: &str) -> Result<Proposal, CoreError> {
        self.store.proposal(id).await?.ok_or_else(|| CoreError::ProposalNotFound(id.to_owned()))
    }

    /// The unified diff of a proposal, from the daemon's repository.
    pub async fn diff(&self, id: &str) -> Result<String, CoreError> {
        let p = self.proposal(id).await?;
        let repo = BareRepo::init(self.paths.repo(&p.workspace)).await?;
        Ok(repo.diff(&p.base, &p.head).await?)
    }

    /// A worker's proposal is decided by its owner agent, not approved or rejected here.
    async fn not_a_workers(&self, p: &Proposal) -> Result<(), CoreError> {
        match self.store.task(&p.task_id).await? {
            Some(Task { parent: Some(owner), .. }) => Err(CoreError::Invalid(format!(
                "proposal {} is a worker's, for its owner task {owner} to accept or reject: review the owner's proposal",
                p.id
            ))),
            _ => Ok(()),
        }
    }

    /// Applies or pushes a proposal, once per action.
    pub async fn approve(&self, id: &str, action: ApproveAction) -> Result<ProposalDetail, CoreError> {
        let _one_at_a_time = self.approve_lock.lock().await;
        let p = self.proposal(id).await?;
        self.not_a_workers(&p).await?;
        self.may_choose(&p).await?;
        if p.state == ProposalState::Rejected {
            return Err(CoreError::ProposalClosed {
                id: id.into(),
                state: "rejected".into(),
                hint: ": it cannot be approved".into(),
            });
        }
        if self.store.approvals(id).await?.iter().any(|a| a.action == action.as_str()) {
            let hint = match action {
                ApproveAction::Push => "; nothing was pushed again".to_owned(),
                _ => String::new(),
            };
            return Err(CoreError::ProposalClosed {
                id: id.into(),
                state: format!("approved ({})", action.as_str()),
                hint,
            });
        }
        let repo = BareRepo::init(self.paths.repo(&p.workspace)).await?;
        // What ships is what was reviewed: the branch must still be at the proposal's head.
        let now_at = repo.rev(&format!("refs/heads/{}", p.branch)).await.unwrap_or_default();
        if now_at != p.head {
            return Err(CoreError::Conflict(format!(
                "branch {} has moved since proposal {id} was made (now {}, reviewed {}): nothing was shipped",
                p.branch,
                if now_at.is_empty() { "missing" } else { &now_at[..now_at.len().min(12)] },
                &p.head[..p.head.len().min(12)]
            )));
        }
        let (detail, state) = match action {
            ApproveAction::Apply => (self.apply(&p, &repo).await?, ProposalState::Applied),
            ApproveAction::Push => {
                let (remote, token) = self.push_remote(&p.workspace).await?;
                repo.push(&remote, &p.head, &p.branch, false, token.as_deref()).await?;
                (format!("pushed {} to the source's remote", p.branch), ProposalState::Pushed)
            }
            ApproveAction::DraftPr => {
                let gh_repo = self.github_repo(&p.workspace).await?.ok_or_else(|| {
                    CoreError::Invalid(format!(
                        "{} does not work on a GitHub repository (its source is not a GitHub URL): use apply or push",
                        p.workspace
                    ))
                })?;
                let github = self.github().await;
                if !github.has_token() {
                    return Err(CoreError::Invalid(crate::github::GithubError::NoToken.to_string()));
                }
                let (remote, token) = self.push_remote(&p.workspace).await?;
                repo.push(&remote, &p.head, &p.branch, false, token.as_deref()).await?;
                let task = self.store.task(&p.task_id).await?;
                let title: String = task
                    .as_ref()
                    .and_then(|t| t.prompt.lines().next())
                    .unwrap_or("devaipod proposal")
                    .chars()
                    .take(72)
                    .collect();
                let body =
                    format!("{}\n\n---\nProposed by devaipod (proposal {}, task {}).", p.summary, p.id, p.task_id);
                let base = github.default_branch(&gh_repo).await.map_err(|e| CoreError::Github(e.to_string()))?;
                let pr = github
                    .create_draft_pr(&gh_repo, &p.branch, &base, &title, &body)
                    .await
                    .map_err(|e| CoreError::Github(e.to_string()))?;
                let url = pr["html_url"].as_str().unwrap_or_default();
                (format!("draft pull request #{} opened: {url}", pr["number"]), ProposalState::Pushed)
            }
        };
        self.store.record_approval(id, action.as_str(), &detail, state).await?;
        // A candidate's approval decides its proposal set.
        if let Err(e) = self.chosen(&p).await {
            tracing::warn!("proposal {id} was approved, but closing its set failed: {e}");
        }
        self.proposal_detail(id).await
    }

    /// Where `push` sends a workspace's branches, and with which token: its GitHub
    /// repository's remote with the daemon's GitHub token, else the source it was cloned
    /// from with no token (the GitHub token never goes to another host).
    async fn push_remote(&self, ws: &str) -> Result<(String, Option<String>), CoreError> {
        if let Some(repo) = self.github_repo(ws).await? {
            let url = crate::github::git_url(&self.config.service_gator.gh.git_url, &repo);
            return Ok((url, self.github_token().await));
        }
        let record = self.store.workspace(ws).await?.ok_or_else(|| CoreError::NotFound(ws.to_owned()))?;
        Ok((record.source, None))
    }

    /// Fetches the proposal's branch into the human's workspace repository.
    async fn apply(&self, p: &Proposal, repo: &BareRepo) -> Result<String, CoreError> {
        let pod = self.find(&p.workspace).await?;
        let folder = pod.labels.get(naming::LABEL_FOLDER).cloned().unwrap_or_default();
        let tmp = tempfile::tempdir().map_err(|e| CoreError::Io(e.to_string()))?;
        let file = format!("devaipod-{}.bundle", p.id);
        repo.bundle(&p.branch, &tmp.path().join(&file)).await?;
        // The bundle must hold the reviewed commit (the branch was checked just before).
        if repo.rev(&format!("refs/heads/{}", p.branch)).await.unwrap_or_default() != p.head {
            return Err(CoreError::Conflict(format!(
                "branch {} moved while it was bundled: nothing was shipped",
                p.branch
            )));
        }
        let dir = tmp.path().to_owned();
        let name = file.clone();
        let tar = tokio::task::spawn_blocking(move || {
            let mut t = tar::Builder::new(Vec::new());
            t.append_path_with_name(dir.join(&name), &name)?;
            t.into_inner()
        })
        .await
        .map_err(|e| CoreError::Io(e.to_string()))?
        .map_err(|e| CoreError::Io(e.to_string()))?;
        let container = self.ws_name(&p.workspace)?.container(naming::Role::Workspace);
        self.engine.upload_archive(&container, "/tmp", tar).await?;
        let bundle = format!("/tmp/{file}");
        let refspec = format!("+refs/heads/{0}:refs/heads/{0}", p.branch);
        let argv = ["git", "-C", &folder, "fetch", "--quiet", "--no-tags", &bundle, &refspec];
        let (code, _, err) = self.exec_capture(&p.workspace, ExecTarget::Workspace, &argv).await?;
        let _ = self.exec_capture(&p.workspace, ExecTarget::Workspace, &["rm", "-f", &bundle]).await;
        if code != 0 {
            return Err(CoreError::Io(format!(
                "git fetch in the workspace container failed (is git installed in the image?): {}",
                err.trim()
            )));
        }
        Ok(format!("branch {} is in the workspace repository at {folder}", p.branch))
    }

    /// Rejects a proposal; feedback goes to the same agent session as a follow-up task.
    pub async fn reject(self: &Arc<Self>, id: &str, feedback: Option<&str>) -> Result<Rejected, CoreError> {
        self.reject_inner(id, feedback, false).await
    }

    /// `worker`: the caller is the owner deciding on its worker's proposal (the only one
    /// who may).
    pub(super) async fn reject_inner(
        self: &Arc<Self>,
        id: &str,
        feedback: Option<&str>,
        worker: bool,
    ) -> Result<Rejected, CoreError> {
        let _one_at_a_time = self.approve_lock.lock().await;
        let p = self.proposal(id).await?;
        if !worker {
            self.not_a_workers(&p).await?;
        }
        match p.state {
            ProposalState::Open => {}
            ProposalState::Rejected => {
                return Err(CoreError::ProposalClosed { id: id.into(), state: "rejected".into(), hint: String::new() });
            }
            other => {
                return Err(CoreError::ProposalClosed {
                    id: id.into(),
                    state: other.as_str().into(),
                    hint: ": it cannot be rejected".into(),
                });
            }
        }
        // A candidate's feedback becomes its next round, given by its set's driver.
        if let Some((set, n)) = self.candidate_of(&p).await? {
            self.reject_candidate(&p, &set, n, feedback).await?;
            self.store.set_proposal_state(id, ProposalState::Rejected).await?;
            return Ok(Rejected { proposal: self.proposal(id).await?, follow_up_task: None });
        }
        // The follow-up first: if the agent cannot take it, the proposal stays open and the
        // feedback is not lost.
        let follow_up = match feedback.map(str::trim).filter(|f| !f.is_empty()) {
            Some(text) => {
                let task =
                    self.store.task(&p.task_id).await?.ok_or_else(|| CoreError::TaskNotFound(p.task_id.clone()))?;
                let session = task
                    .session_id
                    .clone()
                    .ok_or_else(|| CoreError::Invalid("the proposal's task has no agent session".into()))?;
                let who = match task.worker {
                    None => Assignment::owner(task.workers),
                    Some(_) => self.worker_assignment(&task).await?,
                };
                Some(self.new_task(&p.workspace, text, Some((p.id.clone(), session)), who).await?)
            }
            None => None,
        };
        self.store.set_proposal_state(id, ProposalState::Rejected).await?;
        Ok(Rejected { proposal: self.proposal(id).await?, follow_up_task: follow_up })
    }
}
