//! Fan-out: one prompt given to N candidate agents at once, each in a container of its own
//! beside the workspace's agent (`devaipod-<ws>-candidate-<n>`, made from the agent's kept
//! plan as workers are: the same hardening and walls, its own clone, HOME and sockets), all
//! starting from the same commit (a snapshot of the agent's clone). Their work becomes a
//! **proposal set**: one proposal per candidate, each checked in its own sandbox by `[fanout]
//! check`. The human (or an outer assistant) compares them and approves one, which closes
//! the others as `not_chosen` and removes the candidates' containers; rejecting the set with
//! feedback gives every candidate (or the ones named) a next round in its own session.
//!
//! A set driver (one per running set, resumed after a restart) starts candidates as
//! `[fanout] max-parallel` allows (daemon-wide), waits for each task to end, runs the check,
//! stops the container, and marks the set complete once every candidate has ended.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use super::tasks::Assignment;
use super::workspaces::random_hex;
use super::{BusEvent, Core, CoreError, Seat};
use crate::git::BareRepo;
use crate::pods::engine::{ExecSpec, Output};
use crate::pods::naming;
use crate::pods::{Engine, EngineError};
use crate::store::{CandidateRecord, CheckResult, ProposalState, SetRecord, SetState, Task, TaskState, now};

/// How many lines of a check's output a set keeps (its end), and at most how many characters.
const CHECK_LINES: usize = 20;
const CHECK_CHARS: usize = 4000;
/// The most of a check's output held while it runs (its end).
const CHECK_KEEP: usize = 64 * 1024;
/// How often a driver looks at a candidate's task besides the bus.
const POLL: Duration = Duration::from_secs(2);

/// A candidate in a set's table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct CandidateView {
    pub n: u32,
    pub model: String,
    /// waiting (for its turn, or for its next round's task), queued, running, needs_input,
    /// checking, completed, failed, cancelled, chosen or not_chosen.
    pub state: String,
    /// Its latest task.
    pub task: Option<String>,
    /// Why it failed (its task's error, or why it could not start).
    pub reason: Option<String>,
    /// The agent's final message.
    pub summary: Option<String>,
    pub proposal: Option<String>,
    pub proposal_state: Option<ProposalState>,
    pub files: u64,
    pub added: u64,
    pub removed: u64,
    /// Seconds from its task's start to its end (or until now, while it runs).
    pub duration_secs: Option<i64>,
    pub check: Option<CheckResult>,
    /// Feedback waiting to become its next round's task.
    pub feedback: Option<String>,
}

/// A proposal set with its candidates, for the comparison.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct SetView {
    #[serde(flatten)]
    pub set: SetRecord,
    pub candidates: Vec<CandidateView>,
}

/// What a set's rejection did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct SetRejected {
    pub set: SetView,
    /// The candidates given the feedback as their next round (none: the set is closed).
    pub next_round: Vec<u32>,
}

/// A new set: the prompt, how many candidates, and their models.
#[derive(Debug, Clone, Default, Serialize, Deserialize, schemars::JsonSchema)]
pub struct SetRequest {
    pub workspace: String,
    pub prompt: String,
    /// How many candidate agents (1 to `[fanout] max-agents`).
    pub agents: u32,
    /// One model per candidate (each `[agent] model` or one of `[agent] models`); default:
    /// `[agent] model` for all.
    #[serde(default)]
    pub models: Vec<String>,
}

/// A candidate's state as the table shows it.
fn candidate_state(
    set: &SetRecord,
    c: &CandidateRecord,
    task: Option<&Task>,
    p: Option<&crate::store::Proposal>,
) -> String {
    // It could not be given its task (or its next round's): that is its end.
    if c.error.is_some() {
        return "failed".into();
    }
    if c.feedback.is_some() && !set.state.is_closed() {
        return "waiting".into();
    }
    let Some(task) = task else {
        return "waiting".into();
    };
    if set.chosen == Some(c.n) {
        return "chosen".into();
    }
    if p.is_some_and(|p| p.state == ProposalState::NotChosen) {
        return "not_chosen".into();
    }
    if task.state == TaskState::Completed
        && set.state == SetState::Running
        && set.check.is_some()
        && p.is_some()
        && c.check.is_none()
    {
        return "checking".into();
    }
    task.state.as_str().into()
}

/// The last lines of a check's output, bounded.
fn tail(output: &[u8]) -> String {
    let text = String::from_utf8_lossy(output);
    let lines: Vec<&str> = text.trim_end().lines().collect();
    let last = lines[lines.len().saturating_sub(CHECK_LINES)..].join("\n");
    let n = last.chars().count();
    if n > CHECK_CHARS { last.chars().skip(n - CHECK_CHARS).collect() } else { last }
}

impl<E: Engine> Core<E> {
    /// Starts a proposal set: `agents` candidates given `prompt`, from the agent's current
    /// state. Returns at once; the set runs in the background.
    pub async fn run_set(self: &Arc<Self>, req: &SetRequest) -> Result<SetView, CoreError> {
        let ws = req.workspace.as_str();
        if ws.trim().is_empty() {
            return Err(CoreError::Invalid(
                "`workspace` is required: the workspace whose agent's state the candidates start from".into(),
            ));
        }
        if req.prompt.trim().is_empty() {
            return Err(CoreError::Invalid("the prompt is empty: say what the candidates should do".into()));
        }
        let max = u32::from(self.config.fanout.max_agents);
        if req.agents == 0 || req.agents > max {
            return Err(CoreError::Invalid(format!(
                "agents: {} is out of range: use 1 to {max} ([fanout] max-agents)",
                req.agents
            )));
        }
        let allowed = self.config.agent.allowed_models();
        let models: Vec<String> = match req.models.len() {
            0 => vec![self.config.agent.model.clone(); req.agents as usize],
            n if n == req.agents as usize => req.models.clone(),
            n => {
                return Err(CoreError::Invalid(format!(
                    "models: {n} given for {} agents: give one per candidate, or none (all use [agent] model)",
                    req.agents
                )));
            }
        };
        if let Some(bad) = models.iter().find(|m| !allowed.contains(m)) {
            return Err(CoreError::Invalid(format!(
                "model `{bad}` is not one of [agent] model and [agent] models ({}): add it to [agent] models in {}",
                allowed.join(", "),
                self.config.where_to_edit()
            )));
        }
        if self.store.workspace(ws).await?.is_none() {
            return Err(CoreError::NotFound(ws.to_owned()));
        }
        // One set per workspace at a time: two calls at once never both pass the checks
        // below (their candidates would share containers).
        let lock = self.bring_out_locks.entry(format!("fanout:{ws}")).or_default().clone();
        let _one = lock.lock().await;
        // The candidates start from the agent's state: not while its task changes it.
        let tasks = self.store.tasks(Some(ws)).await?;
        if let Some(busy) = tasks.iter().find(|t| !t.state.is_final() && t.set_id.is_none()) {
            return Err(CoreError::Busy { workspace: ws.to_owned(), task: busy.id.clone() });
        }
        // Candidates' containers are numbered per workspace: an undecided set keeps its
        // candidates' clones and sessions for a next round, which a new set would reuse.
        if let Some(open) = self.store.sets(Some(ws)).await?.into_iter().find(|s| !s.state.is_closed()) {
            return Err(CoreError::Conflict(match open.state {
                SetState::Running => format!(
                    "proposal set {} is still running in {ws}: wait for it (`devaipod compare {}`) or cancel it",
                    open.id, open.id
                ),
                _ => format!(
                    "proposal set {} in {ws} waits for a choice: approve one of its proposals, reject it (`devaipod reject {}`) or cancel it",
                    open.id, open.id
                ),
            }));
        }
        let base = self.snapshot(ws).await?;
        let t = now();
        let set = SetRecord {
            id: format!("s-{}", random_hex(5)),
            workspace: ws.to_owned(),
            prompt: req.prompt.clone(),
            base,
            check: self.config.fanout.check.clone().filter(|c| !c.trim().is_empty()),
            state: SetState::Running,
            round: 1,
            chosen: None,
            created_at: t,
            updated_at: t,
        };
        self.store.insert_set(set.clone(), models).await?;
        self.set_event(&set, &format!("set {}: {} candidate(s) started", set.id, req.agents));
        self.spawn_set_driver(&set.id);
        self.set_view(&set.id).await
    }

    /// A set with its candidates.
    pub async fn set_view(&self, id: &str) -> Result<SetView, CoreError> {
        let set = self.store.set(id).await?.ok_or_else(|| CoreError::SetNotFound(id.to_owned()))?;
        let mut candidates = Vec::new();
        for c in self.store.candidates(id).await? {
            let task = match &c.task_id {
                Some(t) => self.store.task(t).await?,
                None => None,
            };
            let p = match &task {
                Some(t) => self.store.proposal_for_task(&t.id).await?,
                None => None,
            };
            let state = candidate_state(&set, &c, task.as_ref(), p.as_ref());
            let duration = task.as_ref().map(|t| if t.state.is_final() { t.updated_at } else { now() } - t.created_at);
            candidates.push(CandidateView {
                n: c.n,
                model: c.model.clone(),
                state,
                task: c.task_id.clone(),
                reason: c.error.clone().or_else(|| task.as_ref().and_then(|t| t.error.clone())),
                summary: task.as_ref().and_then(|t| t.summary.clone()),
                proposal: p.as_ref().map(|p| p.id.clone()),
                proposal_state: p.as_ref().map(|p| p.state),
                files: p.as_ref().map_or(0, |p| p.files.len() as u64),
                added: p.as_ref().map_or(0, |p| p.added),
                removed: p.as_ref().map_or(0, |p| p.removed),
                duration_secs: duration,
                check: c.check.clone(),
                feedback: c.feedback.clone(),
            });
        }
        Ok(SetView { set, candidates })
    }

    /// Sets, newest first; of one workspace when given.
    pub async fn sets(&self, workspace: Option<&str>) -> Result<Vec<SetRecord>, CoreError> {
        Ok(self.store.sets(workspace.filter(|w| !w.is_empty())).await?)
    }

    /// The unified diff from candidate `a`'s proposal to candidate `b`'s.
    pub async fn diff_candidates(&self, id: &str, a: u32, b: u32) -> Result<String, CoreError> {
        let view = self.set_view(id).await?;
        let view = &view;
        let head = |n: u32| async move {
            let c = view.candidates.iter().find(|c| c.n == n).ok_or_else(|| {
                CoreError::Invalid(format!(
                    "set {id} has no candidate {n}: its candidates are 1 to {}",
                    view.candidates.len()
                ))
            })?;
            let p = c.proposal.as_deref().ok_or_else(|| {
                CoreError::Invalid(format!(
                    "candidate {n} of set {id} left no proposal (it is {}{})",
                    c.state,
                    c.reason.as_deref().map(|r| format!(": {r}")).unwrap_or_default()
                ))
            })?;
            self.proposal(p).await
        };
        let (pa, pb) = (head(a).await?, head(b).await?);
        let repo = BareRepo::init(self.paths.repo(&pa.workspace)).await?;
        Ok(repo.diff(&pa.head, &pb.head).await?)
    }

    /// After a start: drive every set that was running.
    pub async fn resume_sets(self: &Arc<Self>) -> Result<usize, CoreError> {
        let sets = self.store.running_sets().await?;
        for s in &sets {
            self.spawn_set_driver(&s.id);
        }
        Ok(sets.len())
    }

    /// The proposal set and candidate number a proposal is of (`None`: not a candidate's).
    pub(in crate::core) async fn candidate_of(
        &self,
        p: &crate::store::Proposal,
    ) -> Result<Option<(SetRecord, u32)>, CoreError> {
        let Some(task) = self.store.task(&p.task_id).await? else { return Ok(None) };
        let (Some(set_id), Some(n)) = (task.set_id, task.candidate) else { return Ok(None) };
        let set = self.store.set(&set_id).await?.ok_or_else(|| CoreError::SetNotFound(set_id.clone()))?;
        Ok(Some((set, n)))
    }

    /// Before a candidate's proposal ships: its set must not have been decided otherwise.
    pub(in crate::core) async fn may_choose(&self, p: &crate::store::Proposal) -> Result<(), CoreError> {
        let Some((set, n)) = self.candidate_of(p).await? else { return Ok(()) };
        let closed = |why: String| CoreError::ProposalClosed { id: p.id.clone(), state: "closed".into(), hint: why };
        match (set.state, set.chosen) {
            (SetState::Chosen, Some(c)) if c == n => Ok(()),
            (SetState::Chosen, Some(c)) => Err(closed(format!(
                ": it is candidate {n} of proposal set {}, where candidate {c} was chosen; it cannot be approved",
                set.id
            ))),
            (SetState::Rejected | SetState::Cancelled, _) | (SetState::Chosen, None) => Err(closed(format!(
                ": it is candidate {n} of proposal set {}, which was {}; it cannot be approved",
                set.id,
                set.state.as_str()
            ))),
            _ if p.state == ProposalState::NotChosen => {
                Err(closed(format!(": it is candidate {n} of proposal set {}, and was not chosen", set.id)))
            }
            _ => Ok(()),
        }
    }

    /// After a candidate's proposal shipped: the set is decided; the other candidates are
    /// not chosen, their unfinished tasks cancelled, and every candidate's container and
    /// volumes removed.
    pub(in crate::core) async fn chosen(&self, p: &crate::store::Proposal) -> Result<(), CoreError> {
        let Some((set, n)) = self.candidate_of(p).await? else { return Ok(()) };
        if set.state == SetState::Chosen {
            return Ok(());
        }
        if !self
            .store
            .move_set(&set.id, &[SetState::Running, SetState::Complete], SetState::Chosen, Some(n), None)
            .await?
        {
            return Ok(());
        }
        self.close_set(&set, Some(n)).await;
        let set = self.store.set(&set.id).await?.unwrap_or(set);
        self.set_event(&set, &format!("set {}: candidate {n} chosen ({} approved)", set.id, p.id));
        Ok(())
    }

    /// Closes what a decided set left: the open proposals of candidates other than `keep`
    /// become not chosen, unfinished tasks are cancelled, feedback dropped, containers and
    /// volumes removed.
    async fn close_set(&self, set: &SetRecord, keep: Option<u32>) {
        if let Some(token) = self.set_drivers.get(&set.id) {
            token.cancel();
        }
        let Ok(candidates) = self.store.candidates(&set.id).await else { return };
        for c in &candidates {
            let _ = self.store.set_candidate_feedback(&set.id, c.n, None).await;
            let Ok(tasks) = self.store.candidate_tasks(&set.id, c.n).await else { continue };
            for t in tasks {
                if !t.state.is_final() {
                    if let Some(token) = self.running.get(&t.id) {
                        token.cancel();
                    } else {
                        let _ = self.cancel_task(&t.id).await;
                    }
                }
                if Some(c.n) != keep
                    && let Ok(Some(p)) = self.store.proposal_for_task(&t.id).await
                    && p.state == ProposalState::Open
                {
                    let _ = self.store.set_proposal_state(&p.id, ProposalState::NotChosen).await;
                }
            }
        }
        // The drivers let go of their tasks first (a cancelled task is recorded before
        // its container goes).
        for c in &candidates {
            if let Some(t) = &c.task_id {
                for _ in 0..100 {
                    if !self.running.contains_key(t) {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
            self.remove_candidate(&set.workspace, c.n).await;
        }
    }

    /// Removes candidate `n`'s container and volumes (what is not there is no error).
    async fn remove_candidate(&self, ws: &str, n: u32) {
        let Ok(name) = self.ws_name(ws) else { return };
        let kind = naming::Extra::Candidate;
        self.agent_at.remove(&Seat::Candidate(n).key(ws));
        match self.engine.remove_container(&name.extra_container(kind, n)).await {
            Ok(()) | Err(EngineError::NotFound { .. }) => {}
            Err(e) => tracing::warn!("fan-out: removing candidate {n} of {ws}: {e}"),
        }
        for v in [name.extra_workspace_volume(kind, n), name.extra_home_volume(kind, n)] {
            match self.engine.remove_volume(&v).await {
                Ok(()) | Err(EngineError::NotFound { .. }) => {}
                Err(e) => tracing::warn!("fan-out: removing volume {v}: {e}"),
            }
        }
    }

    /// Rejects a complete set. With feedback: it goes to every candidate with an open
    /// proposal (or to those in `only`) as their next round, in their own sessions; without:
    /// the set is closed.
    pub async fn reject_set(
        self: &Arc<Self>,
        id: &str,
        feedback: Option<&str>,
        only: &[u32],
    ) -> Result<SetRejected, CoreError> {
        let _one_at_a_time = self.approve_lock.lock().await;
        let view = self.set_view(id).await?;
        let set = &view.set;
        match set.state {
            SetState::Complete => {}
            SetState::Running => {
                return Err(CoreError::Conflict(format!(
                    "proposal set {id} is still running: wait until every candidate has ended, or cancel it"
                )));
            }
            closed => {
                return Err(CoreError::Conflict(format!("proposal set {id} was already {}", closed.as_str())));
            }
        }
        let feedback = feedback.map(str::trim).filter(|f| !f.is_empty());
        if feedback.is_none() && !only.is_empty() {
            return Err(CoreError::Invalid(
                "candidates are the ones given the feedback: give feedback too, or reject the whole set without either"
                    .into(),
            ));
        }
        for n in only {
            let c = view.candidates.iter().find(|c| c.n == *n).ok_or_else(|| {
                CoreError::Invalid(format!(
                    "set {id} has no candidate {n}: its candidates are 1 to {}",
                    view.candidates.len()
                ))
            })?;
            if c.proposal_state != Some(ProposalState::Open) {
                return Err(CoreError::Invalid(format!(
                    "candidate {n} of set {id} has no open proposal to give feedback on (it is {})",
                    c.state
                )));
            }
        }
        let open: Vec<&CandidateView> =
            view.candidates.iter().filter(|c| c.proposal_state == Some(ProposalState::Open)).collect();
        let Some(text) = feedback else {
            self.store.move_set(id, &[SetState::Complete], SetState::Rejected, None, None).await?;
            for c in &open {
                if let Some(p) = &c.proposal {
                    self.store.set_proposal_state(p, ProposalState::Rejected).await?;
                }
            }
            self.close_set(set, None).await;
            let view = self.set_view(id).await?;
            self.set_event(&view.set, &format!("set {id}: rejected"));
            return Ok(SetRejected { set: view, next_round: Vec::new() });
        };
        let next: Vec<u32> = open.iter().map(|c| c.n).filter(|n| only.is_empty() || only.contains(n)).collect();
        if next.is_empty() {
            return Err(CoreError::Invalid(format!(
                "no candidate of set {id} has an open proposal to give feedback on: reject without feedback to close it"
            )));
        }
        // The feedback is stored before anything is closed: the driver gives it to each
        // candidate as its next task when its turn comes.
        for n in &next {
            self.store.set_candidate_feedback(id, *n, Some(text)).await?;
        }
        if !self.store.move_set(id, &[SetState::Complete], SetState::Running, None, Some(set.round + 1)).await? {
            return Err(CoreError::Conflict(format!("proposal set {id} changed meanwhile: look again")));
        }
        self.spawn_set_driver(id);
        let view = self.set_view(id).await?;
        let listed = next.iter().map(u32::to_string).collect::<Vec<_>>().join(", ");
        self.set_event(
            &view.set,
            &format!("set {id}: round {} with feedback for candidate(s) {listed}", view.set.round),
        );
        Ok(SetRejected { set: view, next_round: next })
    }

    /// Cancels a set: unfinished candidates are cancelled and every candidate's container
    /// removed; nothing of it can be approved afterwards.
    pub async fn cancel_set(&self, id: &str) -> Result<SetView, CoreError> {
        let set = self.store.set(id).await?.ok_or_else(|| CoreError::SetNotFound(id.to_owned()))?;
        if set.state.is_closed() {
            return Err(CoreError::Conflict(format!("proposal set {id} was already {}", set.state.as_str())));
        }
        if !self.store.move_set(id, &[SetState::Running, SetState::Complete], SetState::Cancelled, None, None).await? {
            return Err(CoreError::Conflict(format!("proposal set {id} changed meanwhile: look again")));
        }
        self.close_set(&set, None).await;
        let view = self.set_view(id).await?;
        self.set_event(&view.set, &format!("set {id}: cancelled"));
        Ok(view)
    }

    /// A rejection of a candidate's own proposal (not through its set): with feedback, it
    /// becomes the candidate's next round, given by the set's driver.
    pub(in crate::core) async fn reject_candidate(
        self: &Arc<Self>,
        p: &crate::store::Proposal,
        set: &SetRecord,
        n: u32,
        feedback: Option<&str>,
    ) -> Result<(), CoreError> {
        if set.state.is_closed() {
            return Err(CoreError::ProposalClosed {
                id: p.id.clone(),
                state: "closed".into(),
                hint: format!(": its proposal set {} was {}", set.id, set.state.as_str()),
            });
        }
        if let Some(text) = feedback.map(str::trim).filter(|f| !f.is_empty()) {
            self.store.set_candidate_feedback(&set.id, n, Some(text)).await?;
            let from = [SetState::Complete, SetState::Running];
            let round = if set.state == SetState::Complete { Some(set.round + 1) } else { None };
            self.store.move_set(&set.id, &from, SetState::Running, None, round).await?;
            self.spawn_set_driver(&set.id);
        }
        Ok(())
    }

    fn set_event(&self, set: &SetRecord, message: &str) {
        self.publish(BusEvent {
            seq: 0,
            workspace: set.workspace.clone(),
            task_id: None,
            kind: "set".into(),
            message: message.to_owned(),
            state: Some(set.state.as_str().to_owned()),
        });
    }

    /// Drives a set in the background (once: a set already driven is left to its driver,
    /// which looks at every candidate again before it ends).
    fn spawn_set_driver(self: &Arc<Self>, id: &str) {
        let token = match self.set_drivers.entry(id.to_owned()) {
            dashmap::Entry::Occupied(_) => {
                // Driven already: its driver looks again before it ends (a new round).
                self.set_again.insert(id.to_owned());
                return;
            }
            dashmap::Entry::Vacant(v) => v.insert(CancellationToken::new()).clone(),
        };
        let core = self.clone();
        let id = id.to_owned();
        tokio::spawn(async move {
            loop {
                core.set_again.remove(&id);
                if let Err(e) = core.drive_set(&id, &token).await {
                    tracing::warn!("set {id}: {e}");
                }
                if !core.set_again.contains(&id) || token.is_cancelled() {
                    break;
                }
            }
            core.set_drivers.remove(&id);
            // A round asked for between the last look and now is driven anew.
            if core.set_again.remove(&id).is_some() && !token.is_cancelled() {
                core.spawn_set_driver(&id);
            }
        });
    }

    async fn drive_set(self: &Arc<Self>, id: &str, token: &CancellationToken) -> Result<(), CoreError> {
        let candidates = self.store.candidates(id).await?;
        let runs = candidates.iter().map(|c| {
            let core = self.clone();
            let (id, n, token) = (id.to_owned(), c.n, token.clone());
            async move {
                if let Err(e) = core.drive_candidate(&id, n, &token).await {
                    tracing::warn!("set {id}, candidate {n}: {e}");
                    let _ = core.store.set_candidate_error(&id, n, &e.to_string()).await;
                }
            }
        });
        futures_util::future::join_all(runs).await;
        if token.is_cancelled() || self.set_again.contains(id) {
            return Ok(());
        }
        // Every candidate has ended (or could not start): the set waits for a choice.
        if self.store.move_set(id, &[SetState::Running], SetState::Complete, None, None).await?
            && let Some(set) = self.store.set(id).await?
        {
            self.set_event(&set, &format!("set {id}: complete"));
        }
        Ok(())
    }

    /// One candidate's round: its turn (a slot of `[fanout] max-parallel`), its task, its
    /// check, then its container stopped.
    async fn drive_candidate(self: &Arc<Self>, id: &str, n: u32, token: &CancellationToken) -> Result<(), CoreError> {
        let Some(set) = self.store.set(id).await? else { return Ok(()) };
        if set.state.is_closed() {
            return Ok(());
        }
        let ws = set.workspace.clone();
        let seat = Seat::Candidate(n);
        let mut c = self.candidate(id, n).await?;
        // The candidate's latest task is the newest of its tasks (one made just before a
        // restart, not yet recorded in its row, included).
        if let Some(latest) = self.store.candidate_tasks(id, n).await?.into_iter().next()
            && c.task_id.as_deref() != Some(latest.id.as_str())
        {
            self.store.set_candidate_task(id, n, &latest.id).await?;
            c = self.candidate(id, n).await?;
        }
        let task = match &c.task_id {
            Some(t) => self.store.task(t).await?,
            None => None,
        };
        let start = c.feedback.is_some() || (task.is_none() && c.error.is_none());
        let unchecked = || async {
            let Some(t) = &task else { return Ok::<_, CoreError>(false) };
            let made = self.store.proposal_for_task(&t.id).await?.is_some();
            Ok(t.state == TaskState::Completed && set.check.is_some() && c.check.is_none() && made)
        };
        if !start && task.as_ref().is_none_or(|t| t.state.is_final()) && !unchecked().await? {
            return Ok(()); // ended already
        }
        // Its turn.
        let slots = self.fanout_slots.clone();
        let _slot = tokio::select! {
            permit = slots.acquire_owned() => permit.map_err(|e| CoreError::Io(e.to_string()))?,
            _ = token.cancelled() => return Ok(()),
        };
        if token.is_cancelled() {
            return Ok(());
        }
        // Held until its container stops: the idle reaper leaves it alone meanwhile (a
        // container just made has no task yet; a check may outlast `worker-idle-secs`).
        let lock = self.worker_lock(&ws, seat);
        let _driving = lock.lock().await;
        let task_id = if start {
            let t = match (c.feedback.clone(), task) {
                (Some(text), Some(prev)) => self.next_round(&set, &c, &prev, &text).await?,
                _ => self.first_round(&set, &c).await?,
            };
            self.store.set_candidate_task(id, n, &t.id).await?;
            // The set was decided while this candidate was being started: what it made goes
            // too (the set's closing may have looked before its task or container existed).
            if token.is_cancelled() {
                let _ = self.cancel_task(&t.id).await;
                self.remove_candidate(&ws, n).await;
                return Ok(());
            }
            t.id
        } else {
            c.task_id.clone().unwrap_or_default()
        };
        let ended = self.wait_for_end(&task_id, token).await?;
        if let Some(t) = ended
            && t.state == TaskState::Completed
            && let Some(check) = set.check.clone()
            && self.store.proposal_for_task(&t.id).await?.is_some()
            && self.candidate(id, n).await?.check.is_none()
        {
            let result = tokio::select! {
                r = self.run_check(&ws, seat, &check) => r,
                _ = token.cancelled() => return Ok(()),
            };
            if self.store.record_check(id, n, &t.id, &result).await? {
                let how = match (result.exit_code, &result.error) {
                    (Some(code), _) => format!("exit code {code}"),
                    (None, Some(e)) => e.clone(),
                    (None, None) => "no exit code".into(),
                };
                self.set_event(&set, &format!("set {id}: candidate {n} checked ({how}, {} ms)", result.duration_ms));
            }
        }
        // Its slot goes to the next candidate: the container stops (its clone and session
        // stay for a next round).
        if !token.is_cancelled() {
            self.agent_at.remove(&seat.key(&ws));
            if let Ok(name) = self.ws_name(&ws)
                && let Err(e) = self.engine.stop_container(&name.extra_container(naming::Extra::Candidate, n), 5).await
            {
                tracing::debug!("fan-out: stopping candidate {n} of {ws}: {e}");
            }
        }
        Ok(())
    }

    async fn candidate(&self, id: &str, n: u32) -> Result<CandidateRecord, CoreError> {
        self.store
            .candidates(id)
            .await?
            .into_iter()
            .find(|c| c.n == n)
            .ok_or_else(|| CoreError::Invalid(format!("set {id} has no candidate {n}")))
    }

    /// The candidate's container made (or started), its clone given the set's base, and
    /// its task.
    async fn first_round(self: &Arc<Self>, set: &SetRecord, c: &CandidateRecord) -> Result<Task, CoreError> {
        let seat = Seat::Candidate(c.n);
        self.ensure_extra(&set.workspace, seat).await?;
        self.seed_extra(&set.workspace, seat, &set.base).await?;
        let who = Assignment {
            seat,
            parent: None,
            base: Some(set.base.clone()),
            deadline_at: None,
            workers: 0,
            set_id: Some(set.id.clone()),
            model: Some(c.model.clone()),
        };
        self.new_task(&set.workspace, &set.prompt, None, who).await
    }

    /// The feedback as the candidate's next task, in its session and clone as it left them;
    /// its proposal is rejected once the task exists.
    async fn next_round(
        self: &Arc<Self>,
        set: &SetRecord,
        c: &CandidateRecord,
        prev: &Task,
        text: &str,
    ) -> Result<Task, CoreError> {
        let seat = Seat::Candidate(c.n);
        self.ensure_extra(&set.workspace, seat).await?;
        let p = self.store.proposal_for_task(&prev.id).await?;
        let session = prev
            .session_id
            .clone()
            .ok_or_else(|| CoreError::Invalid("the candidate's task has no agent session".into()))?;
        let who = Assignment {
            seat,
            parent: None,
            base: prev.base.clone(),
            deadline_at: None,
            workers: 0,
            set_id: Some(set.id.clone()),
            model: Some(c.model.clone()),
        };
        let follows = p.as_ref().map(|p| (p.id.clone(), session.clone()));
        let t = self.new_task(&set.workspace, text, follows, who).await?;
        if let Some(p) = p
            && p.state == ProposalState::Open
        {
            self.store.set_proposal_state(&p.id, ProposalState::Rejected).await?;
        }
        Ok(t)
    }

    /// Waits for a task to end (`None`: the set was cancelled first).
    async fn wait_for_end(&self, task_id: &str, token: &CancellationToken) -> Result<Option<Task>, CoreError> {
        let mut bus = self.subscribe();
        loop {
            let t = self.store.task(task_id).await?.ok_or_else(|| CoreError::TaskNotFound(task_id.to_owned()))?;
            if t.state.is_final() {
                return Ok(Some(t));
            }
            tokio::select! {
                _ = token.cancelled() => return Ok(None),
                _ = bus.recv() => {}
                _ = tokio::time::sleep(POLL) => {}
            }
        }
    }

    /// Runs `[fanout] check` in the candidate's sandbox (its clone, its walls), bounded by
    /// `[fanout] check-timeout-secs`; keeps its exit code, duration and last lines.
    async fn run_check(&self, ws: &str, seat: Seat, check: &str) -> CheckResult {
        let started = Instant::now();
        let limit = Duration::from_secs(self.config.fanout.check_timeout_secs);
        let done = |exit_code, output: &[u8], error| CheckResult {
            exit_code,
            duration_ms: started.elapsed().as_millis() as u64,
            output: tail(output),
            error,
        };
        let place = match self.seat_place(ws, seat).await {
            Ok(p) => p,
            Err(e) => return done(None, b"", Some(format!("the check could not run: {e}"))),
        };
        let argv = vec!["sh".to_owned(), "-c".to_owned(), format!("{check}\n"), "devaipod-check".to_owned()];
        let spec: ExecSpec = place.spec(argv, false);
        let mut kept: Vec<u8> = Vec::new();
        let run = async {
            let mut s = self.engine.exec(&place.container, &spec).await?;
            while let Some(chunk) = s.output.next().await {
                let b = match chunk? {
                    Output::Stdout(b) | Output::Stderr(b) => b,
                };
                kept.extend_from_slice(&b);
                if kept.len() > CHECK_KEEP {
                    kept.drain(..kept.len() - CHECK_KEEP);
                }
            }
            self.engine.exec_exit_code(&s.id).await
        };
        match tokio::time::timeout(limit, run).await {
            Ok(Ok(code)) => done(i32::try_from(code).ok(), &kept, None),
            Ok(Err(e)) => done(None, &kept, Some(format!("the check could not run: {e}"))),
            Err(_) => done(
                None,
                &kept,
                Some(format!("the check did not end within {} s ([fanout] check-timeout-secs)", limit.as_secs())),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_checks_output_keeps_its_last_lines() {
        let many: String = (1..=50).map(|i| format!("line {i}\n")).collect();
        let t = tail(many.as_bytes());
        assert!(t.starts_with("line 31\n") && t.ends_with("line 50"), "{t}");
        let long = "x".repeat(10_000);
        assert_eq!(tail(long.as_bytes()).len(), CHECK_CHARS);
        assert_eq!(tail(b""), "");
    }

    fn set(state: SetState, check: bool, chosen: Option<u32>) -> SetRecord {
        SetRecord {
            id: "s-1".into(),
            workspace: "w".into(),
            prompt: "p".into(),
            base: "b".into(),
            check: check.then(|| "true".into()),
            state,
            round: 1,
            chosen,
            created_at: 0,
            updated_at: 0,
        }
    }

    fn task(state: TaskState) -> Task {
        Task {
            id: "t-1".into(),
            workspace: "w".into(),
            prompt: "p".into(),
            state,
            session_id: None,
            delivered: true,
            base: None,
            follows_proposal: None,
            error: None,
            summary: None,
            created_at: 0,
            updated_at: 0,
            deadline_at: 0,
            turns_before: 0,
            parent: None,
            worker: None,
            workers: 0,
            set_id: Some("s-1".into()),
            candidate: Some(1),
            model: None,
        }
    }

    fn proposal(state: ProposalState) -> crate::store::Proposal {
        crate::store::Proposal {
            id: "p-1".into(),
            task_id: "t-1".into(),
            workspace: "w".into(),
            branch: "devaipod/t-1".into(),
            base: "b".into(),
            head: "h".into(),
            commits: Vec::new(),
            files: Vec::new(),
            added: 0,
            removed: 0,
            summary: String::new(),
            state,
            created_at: 0,
        }
    }

    #[test]
    fn a_candidates_state_says_where_it_is_in_its_set() {
        let c = CandidateRecord {
            set_id: "s-1".into(),
            n: 1,
            model: "m".into(),
            task_id: None,
            error: None,
            feedback: None,
            check: None,
        };
        let checked = CandidateRecord {
            check: Some(CheckResult { exit_code: Some(1), duration_ms: 5, output: String::new(), error: None }),
            ..c.clone()
        };
        let running = set(SetState::Running, true, None);
        let open = proposal(ProposalState::Open);
        type Case<'a> = (&'a str, &'a SetRecord, &'a CandidateRecord, Option<Task>, Option<&'a crate::store::Proposal>);
        let cases: Vec<Case> = vec![
            ("waiting", &running, &c, None, None),
            ("running", &running, &c, Some(task(TaskState::Running)), None),
            ("checking", &running, &c, Some(task(TaskState::Completed)), Some(&open)),
            ("completed", &running, &checked, Some(task(TaskState::Completed)), Some(&open)),
            ("failed", &running, &c, Some(task(TaskState::Failed)), None),
        ];
        for (want, s, c, t, p) in cases {
            assert_eq!(candidate_state(s, c, t.as_ref(), p), want);
        }
        // No check configured: a completed task is completed at once.
        let unchecked = set(SetState::Running, false, None);
        assert_eq!(candidate_state(&unchecked, &c, Some(&task(TaskState::Completed)), Some(&open)), "completed");
        // Feedback waiting for its round; an error that kept it from starting wins.
        let fed = CandidateRecord { feedback: Some("more".into()), ..c.clone() };
        assert_eq!(candidate_state(&running, &fed, Some(&task(TaskState::Completed)), Some(&open)), "waiting");
        let broke = CandidateRecord { error: Some("no container".into()), ..fed.clone() };
        assert_eq!(candidate_state(&running, &broke, None, None), "failed");
        // Decided.
        let chosen = set(SetState::Chosen, true, Some(1));
        assert_eq!(candidate_state(&chosen, &checked, Some(&task(TaskState::Completed)), Some(&open)), "chosen");
        let other = CandidateRecord { n: 2, ..checked };
        let not = proposal(ProposalState::NotChosen);
        assert_eq!(candidate_state(&chosen, &other, Some(&task(TaskState::Completed)), Some(&not)), "not_chosen");
        let fed_other = CandidateRecord { n: 3, ..fed };
        assert_eq!(candidate_state(&chosen, &fed_other, Some(&task(TaskState::Completed)), Some(&not)), "not_chosen");
    }
}
