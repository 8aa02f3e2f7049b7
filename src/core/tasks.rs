//! Tasks: a prompt delivered exactly once to a workspace's agent, followed over the agent's
//! event stream until it finishes, fails, hits its deadline or is cancelled; its work then
//! becomes a proposal. Drivers resume after a daemon restart from what the store and the
//! agent's session say.

use std::sync::Arc;
use std::time::Duration;

use futures_util::{FutureExt, StreamExt};
use tokio_util::sync::CancellationToken;

use super::workspaces::random_hex;
use super::{BusEvent, Core, CoreError, ExecTarget, Seat, state_of_key};
use crate::agent::{AgentEvent, DynAgent, Outcome};
use crate::pods::Engine;
use crate::store::{Proposal, Task, TaskEvent, TaskState, now};

const AGENT_STOPPED: &str =
    "the agent stopped while working (its container is not running); see `devaipod logs <workspace> --agent`";

/// How often a driver asks the agent directly, in case an event was missed.
const POLL: Duration = Duration::from_secs(2);

/// How long a task's delivery waits for the agent clone's HEAD (when the task has no base).
const HEAD_TIMEOUT: Duration = Duration::from_secs(10);

/// `check` — an agent call inside the driver's loop — unless the task is cancelled or its
/// deadline passes first (`None`): a slow agent never holds up either.
async fn unless_ended<T>(
    check: impl std::future::Future<Output = T>,
    token: &CancellationToken,
    deadline: tokio::time::Instant,
) -> Option<T> {
    tokio::select! {
        r = check => Some(r),
        _ = token.cancelled() => None,
        _ = tokio::time::sleep_until(deadline) => None,
    }
}

/// Which tasks to list.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
pub struct TaskQuery {
    /// Only this workspace's.
    pub workspace: Option<String>,
    /// Only in this state: queued, running, needs_input, completed, failed or cancelled.
    pub state: Option<String>,
}

/// A task, its progress events, and the proposal its work became.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
pub struct TaskDetail {
    pub task: Task,
    pub events: Vec<TaskEvent>,
    /// The proposal's id, when the task left one.
    pub proposal: Option<String>,
    /// The tasks it delegated to worker agents (an owner task's), oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub workers: Vec<super::WorkerTaskSummary>,
}

/// An agent's event stream.
type Events = futures_util::stream::BoxStream<'static, AgentEvent>;

/// What `run_task` opened in the agent: the event subscription and the task's session.
struct Opened {
    events: Events,
    session: String,
    /// User turns the session had before this task.
    turns_before: i64,
}

/// The agent of a task just created, subscribed to; `fresh_session`: its session was made
/// for it (so the prompt cannot have been delivered yet).
struct Subscribed {
    agent: Arc<dyn DynAgent>,
    events: Events,
    fresh_session: bool,
}

/// How a driver ended.
enum End {
    /// The agent's turn is over (its outcome may carry the provider's error).
    Done(Outcome),
    /// The turn is over and its work was collected: the proposal made (`None`: nothing
    /// changed), or why it could not be, and how long it took.
    Collected(Result<Option<Proposal>, CoreError>, Duration),
    Failed(String),
    Cancelled,
}

/// Who does a new task, and within what: the workspace's own agent (an owner task, which
/// may delegate to `workers` workers), or a worker for an owner task.
pub(super) struct Assignment {
    pub seat: Seat,
    /// The owner task, for a worker's task.
    pub parent: Option<String>,
    /// The commit the worker's clone holds (a worker's task only).
    pub base: Option<String>,
    /// When it must end (default: now + `[agent] task-timeout-secs`).
    pub deadline_at: Option<i64>,
    pub workers: u32,
    /// A candidate's task: its proposal set.
    pub set_id: Option<String>,
    /// The model its turns use (default: `[agent] model`).
    pub model: Option<String>,
}

impl Assignment {
    pub fn owner(workers: u32) -> Assignment {
        Assignment {
            seat: Seat::Owner,
            parent: None,
            base: None,
            deadline_at: None,
            workers,
            set_id: None,
            model: None,
        }
    }
}

impl<E: Engine> Core<E> {
    /// Creates a task and starts delivering it; returns at once with the queued task.
    pub async fn run_task(self: &Arc<Self>, workspace: &str, prompt: &str) -> Result<Task, CoreError> {
        self.run_task_with(workspace, prompt, 0).await
    }

    /// The same, letting the task's agent delegate to up to `workers` worker agents
    /// (`[orchestration] max-workers` at most).
    pub async fn run_task_with(
        self: &Arc<Self>,
        workspace: &str,
        prompt: &str,
        workers: u32,
    ) -> Result<Task, CoreError> {
        self.check_workers(workers)?;
        self.new_task(workspace, prompt, None, Assignment::owner(workers)).await
    }

    /// `workers` within `[orchestration] max-workers`, or why not.
    pub(super) fn check_workers(&self, workers: u32) -> Result<(), CoreError> {
        let limit = self.config.orchestration.limit();
        if workers <= limit {
            return Ok(());
        }
        Err(CoreError::Invalid(if limit == 0 {
            format!(
                "workers: {workers} asked, but delegation is off here ([orchestration] max-workers = 0 or enabled = false)"
            )
        } else {
            format!("workers: {workers} is more than [orchestration] max-workers ({limit}): use 0 to {limit}")
        }))
    }

    /// `follows`: (proposal id, session id) of a rejected proposal whose feedback this is.
    pub(super) async fn new_task(
        self: &Arc<Self>,
        workspace: &str,
        prompt: &str,
        follows: Option<(String, String)>,
        who: Assignment,
    ) -> Result<Task, CoreError> {
        if workspace.trim().is_empty() {
            return Err(CoreError::Invalid("`workspace` is required: the workspace whose agent does the task".into()));
        }
        if prompt.trim().is_empty() {
            return Err(CoreError::Invalid("the prompt is empty: say what the agent should do".into()));
        }
        // The record, the running tasks and the agent at once. The agent's endpoint is the
        // one last seen when there is one (no podman call): subscribing to its events
        // proves it, and a failure there means a fresh lookup, which says what is wrong.
        let (record, tasks, agent) = tokio::join!(
            self.store.workspace(workspace),
            self.store.tasks(Some(workspace)),
            self.remembered_agent(workspace, who.seat)
        );
        let Some(record) = record? else {
            return Err(CoreError::NotFound(workspace.to_owned()));
        };
        // One task at a time per agent: tasks share the agent's clone, and a task's commit
        // takes everything in it.
        if let Some(busy) = tasks?.into_iter().find(|t| !t.state.is_final() && Seat::of(t) == who.seat) {
            return Err(CoreError::Busy { workspace: workspace.to_owned(), task: busy.id });
        }
        // The agent must be there now (a removed pod is a clear error, not a queued task).
        let (agent, remembered) = agent?;
        let title: String = prompt.chars().take(60).collect();
        let (agent, opened) = match self.open(&agent, &title, follows.as_ref()).await {
            Ok(opened) => (agent, opened),
            Err(_) if remembered => {
                self.agent_at.remove(&who.seat.key(workspace));
                let agent = self.seat_agent(workspace, who.seat).await?;
                let opened = self.open(&agent, &title, follows.as_ref()).await?;
                (agent, opened)
            }
            Err(e) => return Err(e),
        };
        let Opened { events, session, turns_before } = opened;
        let follows_proposal = follows.map(|(proposal, _)| proposal);
        let t = now();
        let task = Task {
            id: format!("t-{}", random_hex(5)),
            workspace: workspace.to_owned(),
            prompt: prompt.to_owned(),
            state: TaskState::Queued,
            session_id: Some(session),
            delivered: false,
            base: if who.seat == Seat::Owner { record.agent_head } else { who.base },
            follows_proposal,
            error: None,
            summary: None,
            created_at: t,
            updated_at: t,
            deadline_at: who.deadline_at.unwrap_or(t + self.config.agent.task_timeout_secs as i64),
            turns_before,
            parent: who.parent,
            worker: match who.seat {
                Seat::Worker(n) => Some(n),
                _ => None,
            },
            workers: who.workers,
            candidate: match who.seat {
                Seat::Candidate(n) => Some(n),
                _ => None,
            },
            set_id: who.set_id,
            model: who.model,
        };
        self.store.insert_task(task.clone()).await?;
        self.event(&task, "state:queued", "state", "queued").await?;
        let fresh_session = task.follows_proposal.is_none();
        self.spawn_driver(task.id.clone(), Some(Subscribed { agent, events, fresh_session }));
        Ok(task)
    }

    /// Subscribes to the agent's events and, at the same time, makes the task's session
    /// (or, for feedback, counts the turns of the session it continues).
    async fn open(
        &self,
        agent: &Arc<dyn DynAgent>,
        title: &str,
        follows: Option<&(String, String)>,
    ) -> Result<Opened, CoreError> {
        Ok(match follows {
            Some((_, session)) => {
                let (events, outcome) = tokio::try_join!(agent.events(), agent.outcome(session))?;
                Opened { events, session: session.clone(), turns_before: outcome.user_turns as i64 }
            }
            None => {
                let (events, session) = tokio::try_join!(agent.events(), agent.create_session(title))?;
                Opened { events, session, turns_before: 0 }
            }
        })
    }

    /// A task with its events and the proposal its work became.
    pub async fn task_detail(&self, id: &str) -> Result<TaskDetail, CoreError> {
        let (task, events) = self.task(id).await?;
        let proposal = self.store.proposal_for_task(id).await?.map(|p| p.id);
        let workers = if task.parent.is_none() { self.worker_tasks(id).await? } else { Vec::new() };
        Ok(TaskDetail { task, events, proposal, workers })
    }

    pub async fn task(&self, id: &str) -> Result<(Task, Vec<TaskEvent>), CoreError> {
        let task = self.store.task(id).await?.ok_or_else(|| CoreError::TaskNotFound(id.to_owned()))?;
        let events = self.store.events(id).await?;
        Ok((task, events))
    }

    /// Tasks, newest first, filtered.
    pub async fn tasks(&self, q: &TaskQuery) -> Result<Vec<Task>, CoreError> {
        let state = match q.state.as_deref().filter(|s| !s.is_empty()) {
            None => None,
            Some(s) => Some(TaskState::parse(s).ok_or_else(|| {
                CoreError::Invalid(format!(
                    "unknown task state `{s}`: use queued, running, needs_input, completed, failed or cancelled"
                ))
            })?),
        };
        let mut tasks = self.store.tasks(q.workspace.as_deref().filter(|w| !w.is_empty())).await?;
        // Workers' tasks are listed under their owner (`task_detail`), candidates' in their
        // proposal set.
        tasks.retain(|t| t.parent.is_none() && t.set_id.is_none());
        if let Some(state) = state {
            tasks.retain(|t| t.state == state);
        }
        Ok(tasks)
    }

    /// Cancels a task: its agent session is aborted; the task ends `cancelled`.
    pub async fn cancel_task(&self, id: &str) -> Result<Task, CoreError> {
        let task = self.store.task(id).await?.ok_or_else(|| CoreError::TaskNotFound(id.to_owned()))?;
        if task.state.is_final() {
            return Err(CoreError::TaskEnded { id: id.to_owned(), state: task.state.as_str().to_owned() });
        }
        match self.running.get(id) {
            Some(token) => token.cancel(),
            None => {
                let mut task = task;
                self.finish(&mut task, End::Cancelled).await?;
            }
        }
        // Wait (briefly) for the driver to record it.
        for _ in 0..100 {
            let t = self.store.task(id).await?.ok_or_else(|| CoreError::TaskNotFound(id.to_owned()))?;
            if t.state.is_final() {
                return Ok(t);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Err(CoreError::Conflict(format!("task {id} is being cancelled; see `devaipod task {id}`")))
    }

    /// After a start: follow every task that has not ended (their agents kept working).
    pub async fn resume_tasks(self: &Arc<Self>) -> Result<usize, CoreError> {
        let tasks = self.store.unfinished_tasks().await?;
        let n = tasks.len();
        for t in tasks {
            self.spawn_driver(t.id, None);
        }
        Ok(n)
    }

    /// Drives a task in the background; `agent` (subscribed to) saves a lookup and a
    /// subscription when the caller has them.
    fn spawn_driver(self: &Arc<Self>, id: String, agent: Option<Subscribed>) {
        let token = match self.running.entry(id.clone()) {
            dashmap::Entry::Occupied(_) => return, // already driven
            dashmap::Entry::Vacant(v) => v.insert(CancellationToken::new()).clone(),
        };
        let core = self.clone();
        tokio::spawn(async move {
            if let Err(e) = core.drive(&id, agent, &token).await {
                tracing::warn!("task {id}: {e}");
                if let Ok(Some(mut t)) = core.store.task(&id).await
                    && !t.state.is_final()
                {
                    let _ = core.finish(&mut t, End::Failed(e.to_string())).await;
                }
            }
            core.running.remove(&id);
        });
    }

    async fn drive(&self, id: &str, agent: Option<Subscribed>, token: &CancellationToken) -> Result<(), CoreError> {
        let mut task = self.store.task(id).await?.ok_or_else(|| CoreError::TaskNotFound(id.to_owned()))?;
        if task.state.is_final() {
            return Ok(());
        }
        // A worker's task does not outlive its owner's (one resumed after a restart may).
        if let Some(owner) = task.parent.clone()
            && self.store.task(&owner).await?.is_none_or(|o| o.state.is_final())
        {
            return self.finish(&mut task, End::Failed(format!("its owner task {owner} has ended"))).await;
        }
        let (agent, subscribed) = match agent {
            Some(Subscribed { agent, events, fresh_session }) => (agent, Some((events, fresh_session))),
            None => match self.seat_agent(&task.workspace, Seat::of(&task)).await {
                Ok(a) => (a, None),
                Err(e) => {
                    return self.finish(&mut task, End::Failed(format!("the agent is not available: {e}"))).await;
                }
            },
        };
        // Subscribe before delivering, so that the end of a quick turn is not missed; a new
        // session is made meanwhile (`run_task` did both for a task it just made).
        let (events, (session, fresh)) = match (task.session_id.clone(), subscribed) {
            (Some(s), Some((events, fresh))) => {
                // `run_task` made the session; whether the agent reaches its LLM is asked
                // before the prompt goes (cached per workspace: usually no wait).
                if !task.delivered
                    && let Err(reason) = self.llm_gate(&task.workspace).await
                {
                    return self.finish(&mut task, End::Failed(reason)).await;
                }
                (events, (s, fresh))
            }
            (Some(s), None) => (agent.events().await?, (s, false)),
            (None, _) => {
                let title: String = task.prompt.chars().take(60).collect();
                // Whether the agent reaches its LLM is asked meanwhile: a task it cannot
                // reach fails now, with the URL and the setting, not after the agent's retries.
                let (session, gate) = tokio::join!(
                    async { tokio::try_join!(agent.events(), agent.create_session(&title)) },
                    self.llm_gate(&task.workspace)
                );
                if let Err(reason) = gate {
                    return self.finish(&mut task, End::Failed(reason)).await;
                }
                let (events, s) = session?;
                task.session_id = Some(s.clone());
                self.store.update_task(&task).await?;
                (events, (s, true))
            }
        };
        // Fused: an ended stream may be asked again (after the loop, or when no new one came).
        let mut events = events.fuse();
        if !task.delivered {
            // Exactly once: a restart between the agent's acceptance and our record of it
            // shows as one more user turn in the session (a session made just now has none).
            if fresh || (agent.outcome(&session).await?.user_turns as i64) <= task.turns_before {
                if task.base.is_none() {
                    task.base = self.agent_head(&task.workspace).await;
                    self.store.update_task(&task).await?;
                }
                agent.prompt(&session, &task.prompt, task.model.as_deref()).await?;
            }
            task.delivered = true;
            // A queued task records its delivery with its move to running (one write).
            if task.state != TaskState::Queued {
                self.store.update_task(&task).await?;
            }
        }
        if task.state == TaskState::Queued {
            self.transition(&mut task, TaskState::Running, "the agent accepted the prompt").await?;
        }

        let deadline =
            tokio::time::Instant::now() + Duration::from_secs(u64::try_from(task.deadline_at - now()).unwrap_or(0));
        let mut poll = tokio::time::interval(POLL);
        let end = loop {
            tokio::select! {
                _ = token.cancelled() => {
                    let _ = agent.abort(&session).await;
                    break End::Cancelled;
                }
                _ = tokio::time::sleep_until(deadline) => {
                    let _ = agent.abort(&session).await;
                    break End::Failed(format!("the task did not finish within its {}", self.deadline_of(&task)));
                }
                ev = events.next() => match ev {
                    Some(ev) if ev.session() == session => {
                        let idle = matches!(ev, AgentEvent::Idle { .. });
                        if let Some(end) = self.on_event(&mut task, ev).await? {
                            break end;
                        }
                        // The session went idle: its turn may be over (a failed question is
                        // left to the poll, which judges whether the agent is gone).
                        if idle
                            && let Some(Ok(Some(end))) =
                                unless_ended(self.check_done(&*agent, &session, &task), token, deadline).await
                        {
                            break end;
                        }
                    }
                    Some(_) => {}
                    None => {
                        // The stream ended: the agent restarted or went away.
                        if self.seat_agent(&task.workspace, Seat::of(&task)).await.is_err() {
                            break End::Failed(AGENT_STOPPED.into());
                        }
                        tokio::time::sleep(Duration::from_millis(500)).await;
                        if let Ok(Ok(e)) = tokio::time::timeout(Duration::from_secs(5), agent.events()).await {
                            events = e.fuse();
                        }
                    }
                },
                _ = poll.tick() => match unless_ended(self.check_done(&*agent, &session, &task), token, deadline).await {
                    Some(Ok(Some(end))) => break end,
                    // Cancelled or past the deadline: the next turn of the loop sees which.
                    None | Some(Ok(None)) => {}
                    // Not answering: gone (its container stopped) or only slow.
                    Some(Err(e)) if self.seat_agent(&task.workspace, Seat::of(&task)).await.is_err() => {
                        break End::Failed(format!("{AGENT_STOPPED} ({e})"));
                    }
                    Some(Err(_)) => {}
                },
            }
        };
        // Progress that arrived before the end is part of the task's record, also when the
        // poll saw the end first. (State changes are not: the task is ending.)
        while let Some(Some(ev)) = events.next().now_or_never() {
            if ev.session() == session && matches!(ev, AgentEvent::Tool { .. } | AgentEvent::Error { .. }) {
                self.on_event(&mut task, ev).await?;
            }
        }
        // Collecting the work obeys the cancel and the deadline as the turn did.
        let end = match end {
            End::Done(o) if o.error.is_none() => {
                task.summary = o.final_text;
                let started = std::time::Instant::now();
                tokio::select! {
                    made = self.make_proposal(&task) => End::Collected(made, started.elapsed()),
                    _ = token.cancelled() => End::Cancelled,
                    _ = tokio::time::sleep_until(deadline) => End::Failed(format!(
                        "the agent finished, but collecting its work did not end within the task's {}",
                        self.deadline_of(&task)
                    )),
                }
            }
            end => end,
        };
        self.finish(&mut task, end).await
    }

    /// A task's deadline and the setting that bounds it, for the reason it failed.
    fn deadline_of(&self, task: &Task) -> String {
        match task.worker {
            None => format!("deadline of {} s ([agent] task-timeout-secs)", self.config.agent.task_timeout_secs),
            Some(_) => format!(
                "deadline of {} s ([orchestration] worker-timeout-secs; never past its owner task's)",
                self.config.orchestration.worker_timeout_secs
            ),
        }
    }

    async fn on_event(&self, task: &mut Task, ev: AgentEvent) -> Result<Option<End>, CoreError> {
        match ev {
            AgentEvent::Tool { key, tool, status, title, .. } => {
                let message =
                    if title.is_empty() { format!("{tool} {status}") } else { format!("{tool} {status}: {title}") };
                self.event(task, &format!("tool:{key}"), "tool", &message).await?;
            }
            AgentEvent::NeedsInput { key, what, .. } => {
                if task.state.can_move_to(TaskState::NeedsInput) {
                    self.transition(task, TaskState::NeedsInput, &format!("the agent asks: {what} ({key})")).await?;
                }
            }
            AgentEvent::Busy { .. } => {
                if task.state == TaskState::NeedsInput {
                    self.transition(task, TaskState::Running, "the agent continues").await?;
                }
            }
            AgentEvent::Error { message, .. } => {
                self.event(task, &format!("error:{message}"), "error", &message).await?;
            }
            AgentEvent::Idle { .. } => {}
        }
        Ok(None)
    }

    /// Whether the session's latest turn is over, asked of the agent itself.
    async fn check_done(&self, agent: &dyn DynAgent, session: &str, task: &Task) -> Result<Option<End>, CoreError> {
        if agent.is_busy(session).await? {
            return Ok(None);
        }
        let o = agent.outcome(session).await?;
        if (o.user_turns as i64) > task.turns_before && o.answered {
            return Ok(Some(End::Done(o)));
        }
        Ok(None)
    }

    /// Records how a task ended; a finished turn's work becomes a proposal. An owner's
    /// workers end with it; a worker's end is told to its owner.
    async fn finish(&self, task: &mut Task, end: End) -> Result<(), CoreError> {
        let recorded = self.record_end(task, end).await;
        if task.state.is_final() {
            self.after_end(task).await;
        }
        recorded
    }

    async fn record_end(&self, task: &mut Task, end: End) -> Result<(), CoreError> {
        match end {
            End::Cancelled => {
                if let (Some(session), Ok(agent)) =
                    (task.session_id.clone(), self.seat_agent(&task.workspace, Seat::of(task)).await)
                {
                    let _ = agent.abort(&session).await;
                }
                self.transition(task, TaskState::Cancelled, "cancelled").await
            }
            End::Failed(reason) => {
                task.error = Some(reason.clone());
                self.transition(task, TaskState::Failed, &reason).await
            }
            End::Done(o) => match o.error {
                Some(err) => {
                    let err = super::doctor::explain_provider_error(&err, &self.config);
                    task.error = Some(err.clone());
                    self.transition(task, TaskState::Failed, &err).await
                }
                // The driver collects the work first; a turn that ends here had none.
                None => {
                    task.summary = o.final_text;
                    self.transition(task, TaskState::Completed, "completed without changes").await
                }
            },
            End::Collected(made, took) => match made {
                Ok(Some(p)) => {
                    let msg = format!(
                        "proposal {}: {} file(s), +{} -{} (collected in {} ms)",
                        p.id,
                        p.files.len(),
                        p.added,
                        p.removed,
                        took.as_millis()
                    );
                    self.event(task, "proposal", "proposal", &msg).await?;
                    self.transition(task, TaskState::Completed, "completed").await
                }
                Ok(None) => self.transition(task, TaskState::Completed, "completed without changes").await,
                Err(e) => {
                    let reason = format!("the agent finished, but its work could not be collected: {e}");
                    task.error = Some(reason.clone());
                    self.transition(task, TaskState::Failed, &reason).await
                }
            },
        }
    }

    async fn transition(&self, task: &mut Task, to: TaskState, message: &str) -> Result<(), CoreError> {
        if task.state == to {
            return Ok(());
        }
        if !task.state.can_move_to(to) {
            return Err(CoreError::Invalid(format!(
                "task {} cannot go from {} to {}",
                task.id,
                task.state.as_str(),
                to.as_str()
            )));
        }
        let from = task.state;
        task.state = to;
        // Events are unique per key: a state entered again (running after needs_input)
        // gets its own, `state:<state>:<n>`.
        let entered =
            self.store.events(&task.id).await?.iter().filter(|e| state_of_key(&e.key) == Some(to.as_str())).count();
        let key = match entered {
            0 => format!("state:{}", to.as_str()),
            n => format!("state:{}:{}", to.as_str(), n + 1),
        };
        let ev = match self.store.transition_task(task, from, &key, "state", message).await {
            Ok(ev) => ev,
            Err(e @ crate::store::StoreError::StateMoved { .. }) => {
                // Another writer moved it first (a cancel racing the driver): keep its state.
                if let Ok(Some(now)) = self.store.task(&task.id).await {
                    *task = now;
                }
                return Err(CoreError::Conflict(e.to_string()));
            }
            Err(e) => return Err(e.into()),
        };
        self.publish_stored(task, ev);
        Ok(())
    }

    /// Stores a task event (once per key) and publishes it.
    async fn event(&self, task: &Task, key: &str, kind: &str, message: &str) -> Result<(), CoreError> {
        let ev = self.store.add_event(&task.id, key, kind, message).await?;
        self.publish_stored(task, ev);
        Ok(())
    }

    /// Publishes a stored event (`None`: it was stored before, and published then).
    fn publish_stored(&self, task: &Task, ev: Option<TaskEvent>) {
        if let Some(ev) = ev {
            self.publish(BusEvent::stored(ev, &task.workspace));
        }
    }

    /// The agent clone's HEAD commit, if it has one (asked for at most [`HEAD_TIMEOUT`]).
    async fn agent_head(&self, workspace: &str) -> Option<String> {
        let ask = self.exec_capture(workspace, ExecTarget::Agent, &["git", "rev-parse", "--verify", "-q", "HEAD"]);
        let (code, out, _) = tokio::time::timeout(HEAD_TIMEOUT, ask).await.ok()?.ok()?;
        let head = String::from_utf8_lossy(&out).trim().to_owned();
        (code == 0 && !head.is_empty()).then_some(head)
    }
}
