//! Workers: the agent that owns a task delegates parts of it to worker agents, each in a
//! container of its own beside it in the workspace's pod (`devaipod-<ws>-worker-<n>`), as
//! hardened and walled as the owner (the kept plan of the agent container, with its own
//! clone, HOME and sockets). The daemon decides and does everything: a worker's clone is
//! seeded with the owner's current state, its task is driven like any task (its own
//! deadline, never past its owner's), its work becomes a proposal for the owner, and only an
//! accepted proposal reaches the owner's clone (a bundle through the daemon's repository).
//! The human still reviews one proposal per task: the owner's.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::tasks::Assignment;
use super::workspaces::ExecPlace;
use super::{BusEvent, Core, CoreError};
use crate::git::BareRepo;
use crate::pods::engine::ContainerInfo;
use crate::pods::naming::{self, Role, WorkspaceName};
use crate::pods::plan::{self, ContainerPlan, SandboxMounts};
use crate::pods::{Engine, EngineError};
use crate::store::{ProposalState, Task, TaskEvent, TaskState, now};

/// The ref of worker `n`'s seed commit in the workspace's repository: the state its clone
/// was given, as one commit without history (what its collection leaves out).
pub fn worker_seed_ref(n: u32) -> String {
    format!("refs/devaipod/worker-seed/{n}")
}

/// The seeding inside the worker's sandbox (`seed.sh`).
const SEED_SCRIPT: &str = include_str!("seed.sh");
/// Bringing accepted work into the owner's clone (`accept.sh`).
const ACCEPT_SCRIPT: &str = include_str!("accept.sh");

/// Who made the seed commits.
const SEED_IDENTITY: (&str, &str) = ("devaipod", "devaipod@devaipod.invalid");

/// The longest `get_worker_task` waits for a worker's task to end (under the 60 s an MCP
/// client such as opencode gives a call).
pub const MAX_WAIT_SECS: u64 = 50;
/// The most of a worker's diff one answer carries (characters), and the default.
pub const MAX_DIFF_CHARS: usize = 100_000;
const DEFAULT_DIFF_CHARS: usize = 20_000;

/// How often idle workers are looked for.
const REAP_EVERY: Duration = Duration::from_secs(15);

/// Which agent of a workspace: the owner (the workspace's agent), worker `n` (delegated to
/// by the owner's task) or fan-out candidate `n` (a proposal set's).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Seat {
    Owner,
    Worker(u32),
    Candidate(u32),
}

impl Seat {
    /// Between a workspace's name and a worker's number in [`Seat::key`] (a workspace name
    /// is a DNS label: it has no dot).
    pub const WORKER_SEPARATOR: &'static str = ".w";
    /// The same for a candidate's.
    pub const CANDIDATE_SEPARATOR: &'static str = ".c";

    pub fn of(task: &Task) -> Seat {
        match (task.worker, task.candidate) {
            (Some(n), _) => Seat::Worker(n),
            (None, Some(n)) => Seat::Candidate(n),
            (None, None) => Seat::Owner,
        }
    }

    /// The agent's key in per-agent maps and directories: `<ws>`, `<ws>.w<n>` or `<ws>.c<n>`.
    pub fn key(self, ws: &str) -> String {
        match self {
            Seat::Owner => ws.to_owned(),
            Seat::Worker(n) => format!("{ws}{}{n}", Self::WORKER_SEPARATOR),
            Seat::Candidate(n) => format!("{ws}{}{n}", Self::CANDIDATE_SEPARATOR),
        }
    }

    /// The workspace and seat of a [`Seat::key`].
    pub fn from_key(key: &str) -> (&str, Seat) {
        for (sep, seat) in
            [(Self::WORKER_SEPARATOR, Seat::Worker as fn(u32) -> Seat), (Self::CANDIDATE_SEPARATOR, Seat::Candidate)]
        {
            if let Some((ws, Ok(n))) = key.split_once(sep).map(|(ws, n)| (ws, n.parse::<u32>())) {
                return (ws, seat(n));
            }
        }
        (key, Seat::Owner)
    }

    pub fn role(self) -> &'static str {
        match self {
            Seat::Owner => "agent",
            Seat::Worker(_) => "worker",
            Seat::Candidate(_) => "candidate",
        }
    }

    /// An extra agent's kind and number (`None`: the owner).
    pub fn extra(self) -> Option<(naming::Extra, u32)> {
        match self {
            Seat::Owner => None,
            Seat::Worker(n) => Some((naming::Extra::Worker, n)),
            Seat::Candidate(n) => Some((naming::Extra::Candidate, n)),
        }
    }

    /// How audits and messages name it: `worker 2`, `candidate 1`.
    pub fn label(self) -> String {
        match self.extra() {
            None => "agent".to_owned(),
            Some((kind, n)) => format!("{} {n}", kind.word()),
        }
    }

    /// The ref of the extra agent's seed commit in the workspace's repository.
    pub fn seed_ref(self) -> Option<String> {
        match self {
            Seat::Owner => None,
            Seat::Worker(n) => Some(worker_seed_ref(n)),
            Seat::Candidate(n) => Some(format!("refs/devaipod/candidate-seed/{n}")),
        }
    }

    /// Whether `c` (a container of `name`'s pod) is this agent's.
    pub fn is(self, c: &ContainerInfo, name: &WorkspaceName) -> bool {
        match self.extra() {
            None => c.role == Some(Role::Agent),
            Some((kind, n)) => c.name == name.extra_container(kind, n),
        }
    }
}

/// A worker's task in a listing (`list_worker_tasks`, and under its owner in `get_task`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct WorkerTaskSummary {
    pub id: String,
    /// The worker agent's number.
    pub worker: u32,
    pub prompt: String,
    pub state: TaskState,
    pub summary: Option<String>,
    pub error: Option<String>,
    /// The proposal its work became, when it left one.
    pub proposal: Option<String>,
    /// open (not decided yet), applied (accepted into the owner's clone) or rejected.
    pub proposal_state: Option<ProposalState>,
    pub files: u64,
    pub added: u64,
    pub removed: u64,
    /// The rejected proposal this task carries the feedback of.
    pub follows_proposal: Option<String>,
}

/// A worker's task in full, for its owner: events, and its proposal with a page of the diff.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct WorkerTaskView {
    #[serde(flatten)]
    pub summary: WorkerTaskSummary,
    pub events: Vec<TaskEvent>,
    /// Changed files (path, lines added and removed; `None` for binary files).
    pub changed: Vec<crate::store::ProposalFile>,
    /// A page of the proposal's unified diff, from `diff_offset`.
    pub diff: String,
    pub diff_offset: usize,
    /// The diff's whole length (characters).
    pub diff_total: usize,
    /// Where the next page starts, when there is more.
    pub diff_next_offset: Option<usize>,
}

/// What accepting a worker's proposal did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Accepted {
    pub task: String,
    pub proposal: String,
    /// The branch in the owner's clone holding the worker's commits.
    pub branch: String,
    pub head: String,
    /// How the owner takes them into its work.
    pub merge: String,
}

/// Which page of a worker's diff.
#[derive(Debug, Clone, Copy, Default)]
pub struct DiffPage {
    pub offset: Option<usize>,
    pub limit: Option<usize>,
}

fn summary_of(t: &Task, p: Option<&crate::store::Proposal>) -> WorkerTaskSummary {
    WorkerTaskSummary {
        id: t.id.clone(),
        worker: t.worker.unwrap_or(0),
        prompt: t.prompt.clone(),
        state: t.state,
        summary: t.summary.clone(),
        error: t.error.clone(),
        proposal: p.map(|p| p.id.clone()),
        proposal_state: p.map(|p| p.state),
        files: p.map_or(0, |p| p.files.len() as u64),
        added: p.map_or(0, |p| p.added),
        removed: p.map_or(0, |p| p.removed),
        follows_proposal: t.follows_proposal.clone(),
    }
}

impl<E: Engine> Core<E> {
    /// Where commands run in an agent's container (owner or worker): running, as the
    /// agent's user, in the repository's folder.
    pub(in crate::core) async fn seat_place(&self, ws: &str, seat: Seat) -> Result<ExecPlace, CoreError> {
        if seat == Seat::Owner {
            return self.exec_target(ws, super::ExecTarget::Agent).await;
        }
        let name = self.ws_name(ws).map_err(|_| CoreError::NotFound(ws.to_owned()))?;
        let pod = self.find(ws).await?;
        let container = pod.containers.iter().find(|c| seat.is(c, &name));
        let Some(c) = container.filter(|c| c.state.eq_ignore_ascii_case("running")) else {
            return Err(CoreError::NotRunning { name: ws.to_owned(), role: seat.role(), status: pod.status.clone() });
        };
        Ok(ExecPlace {
            container: c.name.clone(),
            user: Some(plan::AGENT_USER.to_owned()),
            workdir: pod.labels.get(naming::LABEL_FOLDER).cloned(),
            env: Default::default(),
            post_attach: Vec::new(),
        })
    }

    /// Keeps the plan of a workspace's agent container, which its workers are made from.
    pub(in crate::core) async fn keep_agent_plan(&self, ws: &str, agent: &ContainerPlan) -> Result<(), CoreError> {
        keep_json(&self.paths.agent_plan(ws), "the agent's plan", agent).await
    }

    async fn kept_agent_plan(&self, ws: &str) -> Result<ContainerPlan, CoreError> {
        let path = self.paths.agent_plan(ws);
        let text = tokio::fs::read(&path).await.map_err(|_| {
            CoreError::Invalid(format!(
                "{ws} was made by a devaipod without workers (no kept agent plan at {}): recreate the workspace to delegate",
                path.display()
            ))
        })?;
        serde_json::from_slice(&text).map_err(|e| CoreError::Io(format!("the kept agent plan {}: {e}", path.display())))
    }

    /// The workspace's running owner task (the caller of an orchestration tool), or why not.
    pub(in crate::core) async fn owner_task(&self, ws: &str) -> Result<Task, CoreError> {
        let tasks = self.store.tasks(Some(ws)).await?;
        tasks.into_iter().find(|t| Seat::of(t) == Seat::Owner && !t.state.is_final()).ok_or_else(|| {
            CoreError::Invalid("no task of yours is running: workers are for the task you are given".into())
        })
    }

    /// A worker task of the running owner task, else `Invalid` (another workspace's or
    /// another owner task's look the same as none).
    async fn own_worker_task(&self, ws: &str, id: &str) -> Result<(Task, Task), CoreError> {
        let owner = self.owner_task(ws).await?;
        match self.store.task(id).await? {
            Some(t) if t.parent.as_deref() == Some(owner.id.as_str()) => Ok((owner, t)),
            _ => Err(CoreError::Invalid(format!(
                "there is no worker task `{id}` of your task: list_worker_tasks shows yours"
            ))),
        }
    }

    /// Delegates `prompt` to a worker of the running owner task: `worker` (1 to the task's
    /// workers) or the first free one, started when needed, its clone given the owner's
    /// current state. Returns the worker's task (queued).
    pub async fn delegate(self: &Arc<Self>, ws: &str, prompt: &str, worker: Option<u32>) -> Result<Task, CoreError> {
        if prompt.trim().is_empty() {
            return Err(CoreError::Invalid("the prompt is empty: say what the worker should do".into()));
        }
        let owner = self.owner_task(ws).await?;
        let limit = owner.workers.min(self.config.orchestration.limit());
        if limit == 0 {
            return Err(CoreError::Invalid(format!(
                "your task {} was started without workers: delegation needs a task run with workers: N",
                owner.id
            )));
        }
        let busy: Vec<u32> =
            self.store.tasks(Some(ws)).await?.iter().filter(|t| !t.state.is_final()).filter_map(|t| t.worker).collect();
        let n = match worker {
            Some(n) if n == 0 || n > limit => {
                return Err(CoreError::Invalid(format!(
                    "worker {n} does not exist: your task has workers 1 to {limit}"
                )));
            }
            Some(n) if busy.contains(&n) => {
                return Err(CoreError::Invalid(format!(
                    "worker {n} is busy: wait for its task (get_worker_task) or pick another"
                )));
            }
            Some(n) => n,
            None => (1..=limit).find(|n| !busy.contains(n)).ok_or_else(|| {
                CoreError::Invalid(format!(
                    "all {limit} workers of your task are busy: wait for one (get_worker_task with wait_seconds)"
                ))
            })?,
        };
        let seat = Seat::Worker(n);
        // One delegation per worker at a time (two calls may race for the same one).
        let lock = self.worker_lock(ws, seat);
        let _one = lock.lock().await;
        // A call that took it first may have given it a task meanwhile: its clone is not
        // to be touched.
        let tasks = self.store.tasks(Some(ws)).await?;
        if tasks.iter().any(|t| t.worker == Some(n) && !t.state.is_final()) {
            return Err(CoreError::Invalid(format!(
                "worker {n} was just given another task: wait for it (get_worker_task) or pick another"
            )));
        }
        self.owner_event(&owner, &format!("delegate:{n}:{}", now()), &format!("starting worker {n}")).await?;
        let snapshot = self.snapshot(ws).await?;
        self.ensure_extra(ws, seat).await?;
        self.seed_extra(ws, seat, &snapshot).await?;
        let deadline = (now() + self.config.orchestration.worker_timeout_secs as i64).min(owner.deadline_at);
        let who = Assignment {
            seat,
            parent: Some(owner.id.clone()),
            base: Some(snapshot),
            deadline_at: Some(deadline),
            workers: 0,
            set_id: None,
            model: None,
        };
        let task = self.new_task(ws, prompt, None, who).await?;
        let title: String = prompt.chars().take(60).collect();
        self.owner_event(
            &owner,
            &format!("worker-task:{}", task.id),
            &format!("delegated {} to worker {n}: {title}", task.id),
        )
        .await?;
        Ok(task)
    }

    /// Held while a worker is being given a task (delegation, feedback): the reaper leaves it
    /// running meanwhile.
    pub(in crate::core) fn worker_lock(&self, ws: &str, seat: Seat) -> Arc<tokio::sync::Mutex<()>> {
        self.bring_out_locks.entry(format!("delegate:{}", seat.key(ws))).or_default().clone()
    }

    /// The owner's current work tree as a commit in the daemon's repository (its parent
    /// the source; the source itself when nothing changed).
    pub(in crate::core) async fn snapshot(&self, ws: &str) -> Result<String, CoreError> {
        let lock = self.bring_out_locks.entry(Seat::Owner.key(ws)).or_default().clone();
        let _one = lock.lock().await;
        let repo = BareRepo::init(self.paths.repo(ws)).await?;
        let source = repo.rev("refs/devaipod/source").await?;
        let name = format!("snapshot-{}", super::workspaces::random_hex(4));
        let dst = format!("refs/devaipod/snapshots/{name}");
        let collected = self.collect_work(ws, Seat::Owner, &repo, &source, &name, &dst).await?;
        if repo.tree(&collected).await? == repo.tree(&source).await? {
            repo.delete_ref(&dst).await?;
            return Ok(source);
        }
        Ok(collected)
    }

    /// An extra agent (a worker or a candidate) running and answering: made from the kept
    /// agent plan when it does not exist, started when stopped.
    pub(in crate::core) async fn ensure_extra(&self, ws: &str, seat: Seat) -> Result<(), CoreError> {
        let name = self.ws_name(ws).map_err(|_| CoreError::NotFound(ws.to_owned()))?;
        let Some((kind, n)) = seat.extra() else {
            return Err(CoreError::Invalid("the workspace's own agent is made by `up`".into()));
        };
        let key = seat.key(ws);
        let pod = self.find(ws).await?;
        let record = self.store.workspace(ws).await?.ok_or_else(|| CoreError::NotFound(ws.to_owned()))?;
        let existing = pod.containers.iter().find(|c| seat.is(c, &name)).cloned();
        if existing.as_ref().is_some_and(|c| c.state.eq_ignore_ascii_case("running")) {
            if self.seat_agent(ws, seat).await.is_ok() {
                return Ok(());
            }
        } else {
            // Its sockets first: the container's mounts need their directories.
            self.ensure_agent_dir(&key)?;
            let socket_dir = match self.endpoints() {
                Some(endpoints) => endpoints.open(&key)?,
                None => self.paths.pod_sockets(&key),
            };
            if existing.is_none() {
                let agent = self.kept_agent_plan(ws).await?;
                let sandbox = SandboxMounts {
                    socket_dir,
                    api_dir: self.paths.agent_dir(&key),
                    bridge: std::path::PathBuf::new(), // the agent's, kept in its plan
                    seccomp: None,
                };
                let worker = plan::extra_agent(&agent, self.instance(), &name, kind, n, &sandbox);
                for v in plan::extra_volumes(self.instance(), &name, kind, n) {
                    match self.engine.create_volume(&v).await {
                        Ok(()) | Err(EngineError::AlreadyExists { .. }) => {}
                        Err(e) => return Err(e.into()),
                    }
                }
                self.engine.create_container(&pod.name, &worker).await?;
            }
            self.engine.start_container(&name.extra_container(kind, n)).await?;
        }
        self.wait_for_agent(ws, seat, &pod.name, &record.agent_password).await
    }

    /// Gives an extra agent's clone `snapshot`'s tree (as a commit without history),
    /// replacing whatever it held.
    pub(in crate::core) async fn seed_extra(&self, ws: &str, seat: Seat, snapshot: &str) -> Result<(), CoreError> {
        let Some(seed_ref) = seat.seed_ref() else {
            return Err(CoreError::Invalid("the workspace's own agent is not seeded".into()));
        };
        let repo = BareRepo::init(self.paths.repo(ws)).await?;
        let tree = repo.tree(snapshot).await?;
        let what = seat.label();
        let seed = repo.commit_root(&tree, &format!("the state {what} starts from"), SEED_IDENTITY).await?;
        repo.set_ref(&seed_ref, &seed).await?;
        let file = format!("devaipod-seed-{}.bundle", super::workspaces::random_hex(4));
        let tar = self.bundle_tar(&repo, &seed_ref, None, &file).await?;
        let place = self.seat_place(ws, seat).await?;
        self.engine.upload_archive(&place.container, "/tmp", tar).await?;
        let folder = place.workdir.clone().unwrap_or_default();
        let bundle = format!("/tmp/{file}");
        let argv = ["sh", "-c", SEED_SCRIPT, "devaipod-seed", &folder, &bundle, &seed_ref];
        let (code, _, err) = self.capture_at(&place, seat.role(), &argv, super::proposals::collect_env()).await?;
        if code != 0 {
            return Err(CoreError::Io(format!("seeding {what}'s clone failed (exit code {code}): {}", err.trim())));
        }
        Ok(())
    }

    /// A tar holding one file, `file`: a bundle of `name` without what `have` holds.
    async fn bundle_tar(
        &self,
        repo: &BareRepo,
        name: &str,
        have: Option<&str>,
        file: &str,
    ) -> Result<Vec<u8>, CoreError> {
        let tmp = tempfile::tempdir().map_err(|e| CoreError::Io(e.to_string()))?;
        let path = tmp.path().join(file);
        repo.bundle_ref(name, have, &path).await?;
        let file = file.to_owned();
        tokio::task::spawn_blocking(move || {
            let mut t = tar::Builder::new(Vec::new());
            t.append_path_with_name(&path, &file)?;
            t.into_inner()
        })
        .await
        .map_err(|e| CoreError::Io(e.to_string()))?
        .map_err(|e| CoreError::Io(e.to_string()))
    }

    /// The owner task's worker tasks.
    pub async fn worker_tasks(&self, owner: &str) -> Result<Vec<WorkerTaskSummary>, CoreError> {
        let mut out = Vec::new();
        for t in self.store.worker_tasks(owner).await? {
            let p = self.store.proposal_for_task(&t.id).await?;
            out.push(summary_of(&t, p.as_ref()));
        }
        Ok(out)
    }

    /// `list_worker_tasks`: the running owner task's worker tasks.
    pub async fn list_worker_tasks(&self, ws: &str) -> Result<Vec<WorkerTaskSummary>, CoreError> {
        let owner = self.owner_task(ws).await?;
        self.worker_tasks(&owner.id).await
    }

    /// `get_worker_task`: a worker task of the running owner task, after waiting up to
    /// `wait_seconds` (at most [`MAX_WAIT_SECS`]) for it to end; its proposal's diff paged.
    pub async fn get_worker_task(
        &self,
        ws: &str,
        id: &str,
        wait_seconds: Option<u64>,
        page: DiffPage,
    ) -> Result<WorkerTaskView, CoreError> {
        let (_, mut t) = self.own_worker_task(ws, id).await?;
        let wait = wait_seconds.unwrap_or(0);
        if wait > MAX_WAIT_SECS {
            return Err(CoreError::Invalid(format!("wait_seconds is at most {MAX_WAIT_SECS}")));
        }
        if !t.state.is_final() && wait > 0 {
            let mut bus = self.subscribe();
            let deadline = tokio::time::Instant::now() + Duration::from_secs(wait);
            while !t.state.is_final() {
                // Either the bus says something of this task, or a second passes (an ending
                // between the read and the subscription is seen at the next read).
                let step = tokio::time::timeout(Duration::from_secs(1), bus.recv());
                if tokio::time::timeout_at(deadline, step).await.is_err() {
                    break;
                }
                t = self.store.task(id).await?.ok_or_else(|| CoreError::TaskNotFound(id.to_owned()))?;
            }
        }
        let events = self.store.events(id).await?;
        let p = self.store.proposal_for_task(id).await?;
        let (changed, diff, diff_total, offset, next) = match &p {
            Some(p) => {
                let whole = self.diff(&p.id).await?;
                let total = whole.chars().count();
                let offset = page.offset.unwrap_or(0);
                let limit = page.limit.unwrap_or(DEFAULT_DIFF_CHARS).clamp(1, MAX_DIFF_CHARS);
                let text: String = whole.chars().skip(offset).take(limit).collect();
                let end = offset.saturating_add(limit);
                (p.files.clone(), text, total, offset, (end < total).then_some(end))
            }
            None => (Vec::new(), String::new(), 0, 0, None),
        };
        Ok(WorkerTaskView {
            summary: summary_of(&t, p.as_ref()),
            events,
            changed,
            diff,
            diff_offset: offset,
            diff_total,
            diff_next_offset: next,
        })
    }

    /// `accept_worker_proposal`: the worker's commits into the owner's clone, on
    /// `worker/<task>`; once.
    pub async fn accept_worker(&self, ws: &str, id: &str) -> Result<Accepted, CoreError> {
        let _one_at_a_time = self.approve_lock.lock().await;
        let (owner, t) = self.own_worker_task(ws, id).await?;
        let p = self.store.proposal_for_task(id).await?.ok_or_else(|| {
            CoreError::Invalid(format!(
                "worker task {id} left no proposal (it is {}{})",
                t.state.as_str(),
                if t.state.is_final() { ": it changed nothing" } else { ": wait for it to end" }
            ))
        })?;
        if p.state != ProposalState::Open {
            return Err(CoreError::ProposalClosed {
                id: p.id.clone(),
                state: if p.state == ProposalState::Applied { "accepted".into() } else { p.state.as_str().into() },
                hint: ": it was decided already".into(),
            });
        }
        let repo = BareRepo::init(self.paths.repo(ws)).await?;
        let source = repo.rev("refs/devaipod/source").await?;
        let file = format!("devaipod-accept-{}.bundle", p.id);
        let from = format!("refs/heads/{}", p.branch);
        let tar = self.bundle_tar(&repo, &from, Some(&source), &file).await?;
        let place = self.seat_place(ws, Seat::Owner).await?;
        self.engine.upload_archive(&place.container, "/tmp", tar).await?;
        let folder = place.workdir.clone().unwrap_or_default();
        let branch = format!("worker/{id}");
        let bundle = format!("/tmp/{file}");
        let argv = ["sh", "-c", ACCEPT_SCRIPT, "devaipod-accept", &folder, &bundle, &from, &branch];
        let (code, _, err) = self.capture_at(&place, "agent", &argv, Default::default()).await?;
        if code != 0 {
            return Err(CoreError::Io(format!(
                "bringing worker task {id}'s commits into your clone failed (exit code {code}): {}",
                err.trim()
            )));
        }
        let detail = format!("accepted into the owner's clone as {branch}");
        self.store.record_approval(&p.id, "accept", &detail, ProposalState::Applied).await?;
        self.owner_event(
            &owner,
            &format!("accepted:{}", p.id),
            &format!("accepted {id}'s proposal {} as {branch}", p.id),
        )
        .await?;
        Ok(Accepted {
            task: id.to_owned(),
            proposal: p.id.clone(),
            merge: format!("git merge {branch}"),
            branch,
            head: p.head,
        })
    }

    /// `reject_worker_proposal`: closed; feedback goes to the same worker as a follow-up
    /// task in its session (its clone as it left it).
    pub async fn reject_worker(
        self: &Arc<Self>,
        ws: &str,
        id: &str,
        feedback: Option<&str>,
    ) -> Result<super::Rejected, CoreError> {
        let (owner, t) = self.own_worker_task(ws, id).await?;
        let p = self.store.proposal_for_task(id).await?.ok_or_else(|| {
            CoreError::Invalid(format!("worker task {id} left no proposal: there is nothing to reject"))
        })?;
        // The worker is given its feedback (and started again if it was stopped as idle).
        let lock = self.worker_lock(ws, Seat::of(&t));
        let _giving = lock.lock().await;
        let r = self.reject_inner(&p.id, feedback, true).await?;
        let said = match &r.follow_up_task {
            Some(f) => format!("rejected {id}'s proposal {}; the feedback is worker task {}", p.id, f.id),
            None => format!("rejected {id}'s proposal {}", p.id),
        };
        self.owner_event(&owner, &format!("rejected:{}", p.id), &said).await?;
        Ok(r)
    }

    /// `cancel_worker_task`.
    pub async fn cancel_worker(&self, ws: &str, id: &str) -> Result<Task, CoreError> {
        self.own_worker_task(ws, id).await?;
        self.cancel_task(id).await
    }

    /// What a follow-up task of a worker's (its feedback) runs within: the same worker
    /// and owner, base and a fresh deadline (never past the owner's).
    pub(in crate::core) async fn worker_assignment(&self, task: &Task) -> Result<Assignment, CoreError> {
        let owner_id = task.parent.clone().unwrap_or_default();
        let owner = self.store.task(&owner_id).await?.ok_or_else(|| CoreError::TaskNotFound(owner_id.clone()))?;
        if owner.state.is_final() {
            return Err(CoreError::TaskEnded { id: owner.id, state: owner.state.as_str().to_owned() });
        }
        let deadline = (now() + self.config.orchestration.worker_timeout_secs as i64).min(owner.deadline_at);
        // Its container may have been stopped as idle meanwhile.
        if task.worker.is_some() {
            self.ensure_extra(&task.workspace, Seat::of(task)).await?;
        }
        Ok(Assignment {
            seat: Seat::of(task),
            parent: Some(owner.id),
            base: task.base.clone(),
            deadline_at: Some(deadline),
            workers: 0,
            set_id: None,
            model: None,
        })
    }

    /// A progress event of an owner task (once per key).
    async fn owner_event(&self, owner: &Task, key: &str, message: &str) -> Result<(), CoreError> {
        if let Some(ev) = self.store.add_event(&owner.id, key, "worker", message).await? {
            self.publish(BusEvent::stored(ev, &owner.workspace));
        }
        Ok(())
    }

    /// After a task ended: an owner's unfinished workers are cancelled; a worker's end is
    /// told to its owner.
    pub(in crate::core) async fn after_end(&self, task: &Task) {
        match &task.parent {
            None => {
                let Ok(workers) = self.store.worker_tasks(&task.id).await else { return };
                for w in workers.iter().filter(|w| !w.state.is_final()) {
                    if let Some(token) = self.running.get(&w.id) {
                        token.cancel();
                    }
                }
            }
            Some(owner) => {
                let Ok(Some(owner)) = self.store.task(owner).await else { return };
                let how = match (&task.error, task.state) {
                    (Some(e), _) => format!("{}: {e}", task.state.as_str()),
                    (None, s) => s.as_str().to_owned(),
                };
                let proposal = match self.store.proposal_for_task(&task.id).await {
                    Ok(Some(p)) => {
                        format!(", proposal {} ({} file(s), +{} -{})", p.id, p.files.len(), p.added, p.removed)
                    }
                    _ => String::new(),
                };
                let message = format!("worker {} ended {}: {how}{proposal}", task.worker.unwrap_or(0), task.id);
                let _ = self.owner_event(&owner, &format!("worker-end:{}", task.id), &message).await;
            }
        }
    }

    /// Every extra seat (worker, candidate) of the workspaces in the store that ever had a
    /// task: the daemon opens their sockets at its start.
    pub async fn worker_keys(&self) -> Result<Vec<String>, CoreError> {
        let mut keys = Vec::new();
        for ws in self.workspace_names().await? {
            let mut seen = std::collections::BTreeSet::new();
            for t in self.store.tasks(Some(&ws)).await? {
                let seat = Seat::of(&t);
                if seat != Seat::Owner && seen.insert(seat) {
                    keys.push(seat.key(&ws));
                }
            }
        }
        Ok(keys)
    }

    /// Stops worker containers idle for `[orchestration] worker-idle-secs` (no unfinished
    /// task, the last one ended that long ago), every few seconds until `stop`.
    pub fn spawn_worker_reaper(self: &Arc<Self>, stop: tokio_util::sync::CancellationToken) {
        let core = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(REAP_EVERY);
            loop {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tick.tick() => {}
                }
                let Some(core) = core.upgrade() else { break };
                if let Err(e) = core.reap_idle_workers().await {
                    tracing::debug!("workers: {e}");
                }
            }
        });
    }

    async fn reap_idle_workers(&self) -> Result<(), CoreError> {
        // No podman listing every few seconds for a daemon that never had a worker.
        if !self.store.any_worker_tasks().await? {
            return Ok(());
        }
        let idle = self.config.orchestration.worker_idle_secs as i64;
        let pods = self.engine.list_pods(&[(naming::LABEL_INSTANCE, self.instance())]).await?;
        for mut pod in pods {
            if !self.overlay(&mut pod) {
                continue; // a pool member
            }
            let Some(ws) = pod.labels.get(naming::LABEL_WORKSPACE) else { continue };
            let Ok(name) = self.ws_name(ws) else { continue };
            for c in pod.containers.iter().filter(|c| c.state.eq_ignore_ascii_case("running")) {
                let seat = match name.extra_of(&c.name) {
                    Some((naming::Extra::Worker, n)) => Seat::Worker(n),
                    Some((naming::Extra::Candidate, n)) => Seat::Candidate(n),
                    None => continue,
                };
                // Not while it is being given a task.
                let lock = self.worker_lock(ws, seat);
                let Ok(_giving) = lock.try_lock() else { continue };
                let tasks = self.store.tasks(Some(ws)).await?;
                let mine = tasks.iter().filter(|t| Seat::of(t) == seat);
                let busy = mine.clone().any(|t| !t.state.is_final());
                let last = mine.map(|t| t.updated_at).max().unwrap_or(0);
                if !busy && now() - last >= idle {
                    tracing::info!("workers: stopping idle {} of {ws}", seat.label());
                    self.agent_at.remove(&seat.key(ws));
                    self.engine.stop_container(&c.name, 5).await?;
                }
            }
        }
        Ok(())
    }
}

/// Writes `value` as JSON to `path` whole (a temporary file renamed into place): the plans
/// `up` keeps for later (the agent's, the Kubernetes one).
pub(in crate::core) async fn keep_json(
    path: &std::path::Path,
    what: &str,
    value: &impl serde::Serialize,
) -> Result<(), CoreError> {
    let io = |e: std::io::Error| CoreError::Io(format!("keeping {what} at {}: {e}", path.display()));
    let json = serde_json::to_vec_pretty(value).map_err(|e| CoreError::Io(e.to_string()))?;
    if let Some(dir) = path.parent() {
        tokio::fs::create_dir_all(dir).await.map_err(io)?;
    }
    let tmp = path.with_extension("json.tmp");
    tokio::fs::write(&tmp, json).await.map_err(io)?;
    tokio::fs::rename(&tmp, path).await.map_err(io)
}
