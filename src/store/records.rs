//! The records the store keeps, and the task state machine.

use serde::{Deserialize, Serialize};

use super::StoreError;

#[derive(Debug, Clone, PartialEq)]
pub struct WorkspaceRecord {
    pub name: String,
    /// The source as given (a URL may carry credentials: never print it, use the label).
    pub source: String,
    pub agent_password: String,
    pub created_at: i64,
    /// The agent clone's HEAD as devaipod last left it.
    pub agent_head: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum TaskState {
    Queued,
    Running,
    NeedsInput,
    Completed,
    Failed,
    Cancelled,
}

impl TaskState {
    pub fn as_str(self) -> &'static str {
        match self {
            TaskState::Queued => "queued",
            TaskState::Running => "running",
            TaskState::NeedsInput => "needs_input",
            TaskState::Completed => "completed",
            TaskState::Failed => "failed",
            TaskState::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> Option<TaskState> {
        Some(match s {
            "queued" => TaskState::Queued,
            "running" => TaskState::Running,
            "needs_input" => TaskState::NeedsInput,
            "completed" => TaskState::Completed,
            "failed" => TaskState::Failed,
            "cancelled" => TaskState::Cancelled,
            _ => return None,
        })
    }

    pub fn is_final(self) -> bool {
        matches!(self, TaskState::Completed | TaskState::Failed | TaskState::Cancelled)
    }

    /// The task state machine: which moves are allowed.
    pub fn can_move_to(self, to: TaskState) -> bool {
        use TaskState::*;
        matches!(
            (self, to),
            (Queued, Running | Failed | Cancelled)
                | (Running, NeedsInput | Completed | Failed | Cancelled)
                | (NeedsInput, Running | Completed | Failed | Cancelled)
        )
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Task {
    pub id: String,
    pub workspace: String,
    pub prompt: String,
    pub state: TaskState,
    pub session_id: Option<String>,
    pub delivered: bool,
    pub base: Option<String>,
    pub follows_proposal: Option<String>,
    pub error: Option<String>,
    /// The agent's final message.
    pub summary: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
    pub deadline_at: i64,
    /// User turns of the session before this task's prompt.
    pub turns_before: i64,
    /// For a worker's task: the owner task that delegated it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
    /// For a worker's task: the number of the worker agent that does it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker: Option<u32>,
    /// For an owner task: how many worker agents it may delegate to at once (0: none).
    #[serde(default)]
    pub workers: u32,
    /// For a candidate's task: its proposal set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub set_id: Option<String>,
    /// For a candidate's task: the candidate's number in its set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub candidate: Option<u32>,
    /// The model the task's turns use (default: `[agent] model`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
}

impl Task {
    /// Not ended, and the agent has not yet accepted its prompt: its delivery is under way
    /// (or about to be). A daemon restarted now leaves the delivery to `resume_tasks`,
    /// which is safe (`turns_before`) but not what a deliberate restart should wait on.
    pub fn in_delivery(&self) -> bool {
        !self.state.is_final() && !self.delivered
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct TaskEvent {
    pub seq: i64,
    pub task_id: String,
    /// Identity at the source; `state:<state>` for state changes.
    pub key: String,
    /// state, tool, text, error, proposal
    pub kind: String,
    pub message: String,
    pub at: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ProposalState {
    Open,
    Applied,
    Pushed,
    Rejected,
    /// A candidate of a proposal set that another candidate was chosen over.
    NotChosen,
}

impl ProposalState {
    pub fn as_str(self) -> &'static str {
        match self {
            ProposalState::Open => "open",
            ProposalState::Applied => "applied",
            ProposalState::Pushed => "pushed",
            ProposalState::Rejected => "rejected",
            ProposalState::NotChosen => "not_chosen",
        }
    }

    pub fn parse(s: &str) -> Option<ProposalState> {
        Some(match s {
            "open" => ProposalState::Open,
            "applied" => ProposalState::Applied,
            "pushed" => ProposalState::Pushed,
            "rejected" => ProposalState::Rejected,
            "not_chosen" => ProposalState::NotChosen,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ProposalFile {
    pub path: String,
    /// `None` for binary files.
    pub added: Option<u64>,
    pub removed: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Proposal {
    pub id: String,
    pub task_id: String,
    pub workspace: String,
    pub branch: String,
    pub base: String,
    pub head: String,
    /// `(sha, subject)` of each commit, oldest first.
    pub commits: Vec<(String, String)>,
    pub files: Vec<ProposalFile>,
    pub added: u64,
    pub removed: u64,
    pub summary: String,
    pub state: ProposalState,
    pub created_at: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Approval {
    pub proposal_id: String,
    pub action: String,
    pub detail: String,
    pub at: i64,
}

pub(super) fn task_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Task> {
    let state: String = r.get(3)?;
    Ok(Task {
        id: r.get(0)?,
        workspace: r.get(1)?,
        prompt: r.get(2)?,
        state: TaskState::parse(&state).ok_or_else(|| {
            rusqlite::Error::FromSqlConversionFailure(
                3,
                rusqlite::types::Type::Text,
                format!("task state `{state}` is unknown to this devaipod (a database of a newer version?)").into(),
            )
        })?,
        session_id: r.get(4)?,
        delivered: r.get(5)?,
        base: r.get(6)?,
        follows_proposal: r.get(7)?,
        error: r.get(8)?,
        summary: r.get(9)?,
        created_at: r.get(10)?,
        updated_at: r.get(11)?,
        deadline_at: r.get(12)?,
        turns_before: r.get(13)?,
        parent: r.get(14)?,
        worker: r.get(15)?,
        workers: r.get(16)?,
        set_id: r.get(17)?,
        candidate: r.get(18)?,
        model: r.get(19)?,
    })
}

pub(super) type ProposalRow =
    (String, String, String, String, String, String, String, String, i64, i64, String, String, i64);

pub(super) fn proposal_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<ProposalRow> {
    Ok((
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        r.get(3)?,
        r.get(4)?,
        r.get(5)?,
        r.get(6)?,
        r.get(7)?,
        r.get(8)?,
        r.get(9)?,
        r.get(10)?,
        r.get(11)?,
        r.get(12)?,
    ))
}

pub(super) fn proposal_from_row(row: ProposalRow) -> Result<Proposal, StoreError> {
    let (id, task_id, workspace, branch, base, head, commits, files, added, removed, summary, state, created_at) = row;
    let corrupt = |what: &str| StoreError::Corrupt(format!("proposal {id}: {what}"));
    Ok(Proposal {
        commits: serde_json::from_str(&commits).map_err(|_| corrupt("commits"))?,
        files: serde_json::from_str(&files).map_err(|_| corrupt("files"))?,
        state: ProposalState::parse(&state).ok_or_else(|| corrupt("state"))?,
        added: added as u64,
        removed: removed as u64,
        id,
        task_id,
        workspace,
        branch,
        base,
        head,
        summary,
        created_at,
    })
}
