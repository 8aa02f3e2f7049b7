//! Fan-out's part of the store: proposal sets and their candidates. A candidate's tasks are
//! ordinary tasks (`tasks.set_id`, `tasks.candidate`); a candidate row says which task is
//! its latest, what its check found, and feedback waiting to become its next task.

use rusqlite::{OptionalExtension, params};
use serde::{Deserialize, Serialize};

use super::{Store, StoreError, now};

/// Where a proposal set is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SetState {
    /// Candidates are waiting for their turn, working, or being checked.
    Running,
    /// Every candidate has ended: the set waits for a choice.
    Complete,
    /// A candidate's proposal was approved; the others were not chosen.
    Chosen,
    /// Rejected without feedback: closed.
    Rejected,
    Cancelled,
}

impl SetState {
    pub fn as_str(self) -> &'static str {
        match self {
            SetState::Running => "running",
            SetState::Complete => "complete",
            SetState::Chosen => "chosen",
            SetState::Rejected => "rejected",
            SetState::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> Option<SetState> {
        Some(match s {
            "running" => SetState::Running,
            "complete" => SetState::Complete,
            "chosen" => SetState::Chosen,
            "rejected" => SetState::Rejected,
            "cancelled" => SetState::Cancelled,
            _ => return None,
        })
    }

    /// Decided: nothing more happens in the set.
    pub fn is_closed(self) -> bool {
        matches!(self, SetState::Chosen | SetState::Rejected | SetState::Cancelled)
    }
}

/// A proposal set as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct SetRecord {
    pub id: String,
    pub workspace: String,
    pub prompt: String,
    /// The commit every candidate started from.
    pub base: String,
    /// `[fanout] check` when the set was made.
    pub check: Option<String>,
    pub state: SetState,
    /// 1, then one more for each round of feedback.
    pub round: u32,
    /// The candidate whose proposal was approved.
    pub chosen: Option<u32>,
    pub created_at: i64,
    pub updated_at: i64,
}

/// What a candidate's check found.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct CheckResult {
    /// The check's exit code (none: it timed out or could not run; `error` says which).
    pub exit_code: Option<i32>,
    pub duration_ms: u64,
    /// Its last lines of output (stdout and stderr).
    pub output: String,
    pub error: Option<String>,
}

impl CheckResult {
    pub fn passed(&self) -> bool {
        self.exit_code == Some(0)
    }
}

/// A candidate as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct CandidateRecord {
    pub set_id: String,
    pub n: u32,
    pub model: String,
    /// Its latest task (none while it waits for its turn).
    pub task_id: Option<String>,
    /// Why it could not be given its task (its task's own failure is the task's).
    pub error: Option<String>,
    /// Feedback waiting to become its next task.
    pub feedback: Option<String>,
    /// Its check of the latest task's work, once run.
    pub check: Option<CheckResult>,
}

const SET_SELECT: &str = "SELECT id, workspace, prompt, base, check_command, state, round, chosen, created_at, updated_at FROM proposal_sets";

fn set_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<SetRecord> {
    let state: String = r.get(5)?;
    Ok(SetRecord {
        id: r.get(0)?,
        workspace: r.get(1)?,
        prompt: r.get(2)?,
        base: r.get(3)?,
        check: r.get(4)?,
        state: SetState::parse(&state).ok_or_else(|| {
            rusqlite::Error::FromSqlConversionFailure(
                5,
                rusqlite::types::Type::Text,
                format!("set state `{state}` is unknown to this devaipod (a database of a newer version?)").into(),
            )
        })?,
        round: r.get(6)?,
        chosen: r.get(7)?,
        created_at: r.get(8)?,
        updated_at: r.get(9)?,
    })
}

fn candidate_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<CandidateRecord> {
    let exit: Option<i32> = r.get(6)?;
    let ms: Option<i64> = r.get(7)?;
    let output: Option<String> = r.get(8)?;
    let error: Option<String> = r.get(9)?;
    let check = ms.map(|ms| CheckResult {
        exit_code: exit,
        duration_ms: u64::try_from(ms).unwrap_or(0),
        output: output.unwrap_or_default(),
        error,
    });
    Ok(CandidateRecord {
        set_id: r.get(0)?,
        n: r.get(1)?,
        model: r.get(2)?,
        task_id: r.get(3)?,
        error: r.get(4)?,
        feedback: r.get(5)?,
        check,
    })
}

impl Store {
    /// A new set with its candidates (waiting for their turn), in one transaction.
    pub async fn insert_set(&self, set: SetRecord, models: Vec<String>) -> Result<(), StoreError> {
        self.with(move |c| {
            let tx = c.transaction()?;
            tx.execute(
                "INSERT INTO proposal_sets (id, workspace, prompt, base, check_command, state, round, chosen, created_at, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
                params![
                    set.id,
                    set.workspace,
                    set.prompt,
                    set.base,
                    set.check,
                    set.state.as_str(),
                    set.round,
                    set.chosen,
                    set.created_at,
                    set.updated_at
                ],
            )?;
            for (i, model) in models.iter().enumerate() {
                tx.execute(
                    "INSERT INTO candidates (set_id, n, model) VALUES (?1, ?2, ?3)",
                    params![set.id, i as u32 + 1, model],
                )?;
            }
            tx.commit()?;
            Ok(())
        })
        .await
    }

    pub async fn set(&self, id: &str) -> Result<Option<SetRecord>, StoreError> {
        let id = id.to_owned();
        self.with(move |c| Ok(c.query_row(&format!("{SET_SELECT} WHERE id = ?1"), [id], set_row).optional()?)).await
    }

    /// Sets, newest first; of one workspace when given.
    pub async fn sets(&self, workspace: Option<&str>) -> Result<Vec<SetRecord>, StoreError> {
        let ws = workspace.map(str::to_owned);
        self.with(move |c| {
            let mut stmt = c.prepare(&format!(
                "{SET_SELECT} WHERE (?1 IS NULL OR workspace = ?1) ORDER BY created_at DESC, rowid DESC"
            ))?;
            let rows = stmt.query_map([ws], set_row)?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }

    /// Sets still running (to resume after a restart).
    pub async fn running_sets(&self) -> Result<Vec<SetRecord>, StoreError> {
        self.with(move |c| {
            let mut stmt = c.prepare(&format!("{SET_SELECT} WHERE state = 'running' ORDER BY created_at, rowid"))?;
            let rows = stmt.query_map([], set_row)?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }

    pub async fn candidates(&self, set_id: &str) -> Result<Vec<CandidateRecord>, StoreError> {
        let id = set_id.to_owned();
        self.with(move |c| {
            let mut stmt = c.prepare(
                "SELECT set_id, n, model, task_id, error, feedback, check_exit, check_ms, check_output, check_error
                 FROM candidates WHERE set_id = ?1 ORDER BY n",
            )?;
            let rows = stmt.query_map([id], candidate_row)?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }

    /// The candidate's latest task is `task_id`: its feedback went into it, and the check
    /// of the round before is forgotten.
    pub async fn set_candidate_task(&self, set_id: &str, n: u32, task_id: &str) -> Result<(), StoreError> {
        let (id, task) = (set_id.to_owned(), task_id.to_owned());
        self.with(move |c| {
            c.execute(
                "UPDATE candidates SET task_id = ?3, feedback = NULL, error = NULL, check_exit = NULL, check_ms = NULL,
                 check_output = NULL, check_error = NULL WHERE set_id = ?1 AND n = ?2",
                params![id, n, task],
            )?;
            Ok(())
        })
        .await
    }

    /// Feedback for the candidate's next round (none: no next round).
    pub async fn set_candidate_feedback(&self, set_id: &str, n: u32, feedback: Option<&str>) -> Result<(), StoreError> {
        let (id, feedback) = (set_id.to_owned(), feedback.map(str::to_owned));
        self.with(move |c| {
            c.execute("UPDATE candidates SET feedback = ?3 WHERE set_id = ?1 AND n = ?2", params![id, n, feedback])?;
            Ok(())
        })
        .await
    }

    /// Why the candidate could not be given its task (its feedback, if any, is kept).
    pub async fn set_candidate_error(&self, set_id: &str, n: u32, error: &str) -> Result<(), StoreError> {
        let (id, error) = (set_id.to_owned(), error.to_owned());
        self.with(move |c| {
            c.execute("UPDATE candidates SET error = ?3 WHERE set_id = ?1 AND n = ?2", params![id, n, error])?;
            Ok(())
        })
        .await
    }

    /// The tasks of a set's candidate, newest first.
    pub async fn candidate_tasks(&self, set_id: &str, n: u32) -> Result<Vec<super::Task>, StoreError> {
        let id = set_id.to_owned();
        self.with(move |c| {
            let mut stmt = c.prepare(&format!(
                "{} WHERE set_id = ?1 AND candidate = ?2 ORDER BY created_at DESC, rowid DESC",
                super::TASK_SELECT
            ))?;
            let rows = stmt.query_map(params![id, n], super::records::task_row)?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }

    /// Records the check of `task_id`'s work, unless the candidate has moved on to another
    /// task meanwhile (`false`).
    pub async fn record_check(&self, set_id: &str, n: u32, task_id: &str, r: &CheckResult) -> Result<bool, StoreError> {
        let (id, task, r) = (set_id.to_owned(), task_id.to_owned(), r.clone());
        self.with(move |c| {
            let ms = i64::try_from(r.duration_ms).unwrap_or(i64::MAX);
            let n = c.execute(
                "UPDATE candidates SET check_exit = ?4, check_ms = ?5, check_output = ?6, check_error = ?7
                 WHERE set_id = ?1 AND n = ?2 AND task_id = ?3",
                params![id, n, task, r.exit_code, ms, r.output, r.error],
            )?;
            Ok(n == 1)
        })
        .await
    }

    /// Moves the set from `from` (any of them) to `to`, with the chosen candidate and the
    /// round; `false` when it was in none of `from` (someone else moved it first).
    pub async fn move_set(
        &self,
        id: &str,
        from: &[SetState],
        to: SetState,
        chosen: Option<u32>,
        round: Option<u32>,
    ) -> Result<bool, StoreError> {
        let id = id.to_owned();
        let from: Vec<&'static str> = from.iter().map(|s| s.as_str()).collect();
        self.with(move |c| {
            let tx = c.transaction()?;
            let state: Option<String> =
                tx.query_row("SELECT state FROM proposal_sets WHERE id = ?1", [&id], |r| r.get(0)).optional()?;
            if !state.is_some_and(|s| from.contains(&s.as_str())) {
                return Ok(false);
            }
            tx.execute(
                "UPDATE proposal_sets SET state = ?2, chosen = COALESCE(?3, chosen), round = COALESCE(?4, round),
                 updated_at = ?5 WHERE id = ?1",
                params![id, to.as_str(), chosen, round, now()],
            )?;
            tx.commit()?;
            Ok(true)
        })
        .await
    }
}
