//! SQLite store (WAL) of what only devaipod knows: workspaces' secrets and sources, tasks,
//! task events, proposals and approvals. The engine stays the truth for what runs.
//!
//! One connection behind a mutex; every call runs on the blocking pool, never on the
//! async runtime's threads.

mod gator;
mod pool;
mod records;
mod sessions;
mod sets;

use std::path::Path;
use std::sync::{Arc, Mutex};

use rusqlite::{Connection, OptionalExtension, params};

pub use gator::AuditEntry;
pub use pool::{MemberState, PodBinding, PoolMember, warm_member};
pub use records::{Approval, Proposal, ProposalFile, ProposalState, Task, TaskEvent, TaskState, WorkspaceRecord};
pub use sessions::Sessions;
pub use sets::{CandidateRecord, CheckResult, SetRecord, SetState};

/// The schema, one migration per version, applied in order by `user_version`. Forward
/// only: a released migration never changes (`store/tests.rs` pins each one's SHA-256), a
/// change of schema is a new file at the end.
const MIGRATIONS: &[&str] = &[
    include_str!("migrations/001_init.sql"),
    include_str!("migrations/002_gator.sql"),
    include_str!("migrations/003_sessions.sql"),
    include_str!("migrations/004_egress.sql"),
    include_str!("migrations/005_workers.sql"),
    include_str!("migrations/006_fanout.sql"),
    include_str!("migrations/007_pool.sql"),
];

/// The schema version this build writes (a database's `user_version` after `open`).
pub const SCHEMA_VERSION: u32 = MIGRATIONS.len() as u32;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("cannot open the database {path}: {message}")]
    Open { path: String, message: String },
    #[error("the store's worker thread failed: {0}")]
    Join(String),
    #[error("corrupt record: {0}")]
    Corrupt(String),
    #[error("task {task} is no longer {from}: it changed meanwhile")]
    StateMoved { task: String, from: &'static str },
    /// The database was written by a newer devaipod: it is left as it is.
    #[error(
        "the database {path} has schema version {found}, newer than this devaipod {ours} knows (schema version {supported}): \
         a newer devaipod wrote it. Run that newer devaipod (or restore a backup of the database); it was not changed"
    )]
    TooNew { path: String, found: i64, supported: u32, ours: &'static str },
}

#[derive(Clone)]
pub struct Store {
    conn: Arc<Mutex<Connection>>,
}

/// Seconds since the epoch.
pub fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

/// Writes a workspace's record (in a transaction or not: a `Transaction` is a `Connection`).
fn insert_workspace(c: &Connection, w: &WorkspaceRecord) -> Result<(), StoreError> {
    c.execute(
        "INSERT OR REPLACE INTO workspaces (name, source, agent_password, created_at, agent_head) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![w.name, w.source, w.agent_password, w.created_at, w.agent_head],
    )?;
    Ok(())
}

impl Store {
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let open_err =
            |e: &dyn std::fmt::Display| StoreError::Open { path: path.display().to_string(), message: e.to_string() };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| open_err(&e))?;
        }
        let conn = Connection::open(path).map_err(|e| open_err(&e))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(|e| open_err(&e))?;
        }
        Self::init(conn, &path.display().to_string())
    }

    pub fn open_in_memory() -> Result<Store, StoreError> {
        Self::init(Connection::open_in_memory()?, ":memory:")
    }

    fn init(conn: Connection, path: &str) -> Result<Store, StoreError> {
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        // Before anything writes: a database of a newer schema is refused untouched.
        let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
        if version < 0 {
            return Err(StoreError::Corrupt(format!("the database {path} has schema version {version}")));
        }
        if version > i64::from(SCHEMA_VERSION) {
            return Err(StoreError::TooNew {
                path: path.to_owned(),
                found: version,
                supported: SCHEMA_VERSION,
                ours: env!("CARGO_PKG_VERSION"),
            });
        }
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
            conn.execute_batch(&format!("BEGIN; {sql}; PRAGMA user_version = {}; COMMIT;", i + 1))?;
        }
        Ok(Store { conn: Arc::new(Mutex::new(conn)) })
    }

    async fn with<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let conn = self.conn.clone();
        tokio::task::spawn_blocking(move || {
            let mut guard = conn.lock().map_err(|e| StoreError::Join(e.to_string()))?;
            f(&mut guard)
        })
        .await
        .map_err(|e| StoreError::Join(e.to_string()))?
    }

    // ---- workspaces ----

    pub async fn put_workspace(&self, w: WorkspaceRecord) -> Result<(), StoreError> {
        self.with(move |c| insert_workspace(c, &w)).await
    }

    pub async fn workspace(&self, name: &str) -> Result<Option<WorkspaceRecord>, StoreError> {
        let name = name.to_owned();
        self.with(move |c| {
            Ok(c.query_row(
                "SELECT name, source, agent_password, created_at, agent_head FROM workspaces WHERE name = ?1",
                [name],
                |r| {
                    Ok(WorkspaceRecord {
                        name: r.get(0)?,
                        source: r.get(1)?,
                        agent_password: r.get(2)?,
                        created_at: r.get(3)?,
                        agent_head: r.get(4)?,
                    })
                },
            )
            .optional()?)
        })
        .await
    }

    pub async fn set_agent_head(&self, name: &str, head: &str) -> Result<(), StoreError> {
        let (name, head) = (name.to_owned(), head.to_owned());
        self.with(move |c| {
            c.execute("UPDATE workspaces SET agent_head = ?2 WHERE name = ?1", params![name, head])?;
            Ok(())
        })
        .await
    }

    pub async fn delete_workspace(&self, name: &str) -> Result<(), StoreError> {
        let name = name.to_owned();
        self.with(move |c| {
            c.execute("DELETE FROM gator_scopes WHERE workspace = ?1", [&name])?;
            c.execute("DELETE FROM egress_hosts WHERE workspace = ?1", [&name])?;
            c.execute("DELETE FROM pod_bindings WHERE workspace = ?1", [&name])?;
            c.execute("DELETE FROM workspaces WHERE name = ?1", [&name])?;
            Ok(())
        })
        .await
    }

    // ---- tasks ----

    pub async fn insert_task(&self, t: Task) -> Result<(), StoreError> {
        self.with(move |c| {
            c.execute(
                "INSERT INTO tasks (id, workspace, prompt, state, session_id, delivered, base, follows_proposal, error, summary, created_at, updated_at, deadline_at, turns_before, parent, worker, workers, set_id, candidate, model)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20)",
                params![
                    t.id, t.workspace, t.prompt, t.state.as_str(), t.session_id, t.delivered, t.base, t.follows_proposal,
                    t.error, t.summary, t.created_at, t.updated_at, t.deadline_at, t.turns_before, t.parent, t.worker,
                    t.workers, t.set_id, t.candidate, t.model
                ],
            )?;
            Ok(())
        })
        .await
    }

    /// Writes the task's progress fields (session, delivery, base, error, summary) — never
    /// its state: a state changes only with its event, in [`Store::transition_task`].
    pub async fn update_task(&self, t: &Task) -> Result<(), StoreError> {
        let t = t.clone();
        self.with(move |c| {
            write_task(c, &t, now())?;
            Ok(())
        })
        .await
    }

    /// Writes the task with its new state and adds the state's event in one transaction, so
    /// that a crash never leaves a state without its event. The event is returned when it is
    /// new. The only writer of a task's state after it was inserted (core calls it from
    /// `transition`, which checks the state machine).
    ///
    /// `from` is the state the caller saw: when the stored state is another (someone else
    /// moved the task meanwhile), nothing is written and the answer is `StateMoved`.
    pub async fn transition_task(
        &self,
        t: &Task,
        from: TaskState,
        key: &str,
        kind: &str,
        message: &str,
    ) -> Result<Option<TaskEvent>, StoreError> {
        let t = t.clone();
        let (key, kind, message) = (key.to_owned(), kind.to_owned(), message.to_owned());
        self.with(move |c| {
            let tx = c.transaction()?;
            let at = now();
            let moved = tx.execute(
                "UPDATE tasks SET state = ?2 WHERE id = ?1 AND state = ?3",
                params![t.id, t.state.as_str(), from.as_str()],
            )?;
            if moved == 0 {
                return Err(StoreError::StateMoved { task: t.id.clone(), from: from.as_str() });
            }
            write_task(&tx, &t, at)?;
            let n = tx.execute(
                "INSERT OR IGNORE INTO task_events (task_id, key, kind, message, at) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![t.id, key, kind, message, at],
            )?;
            let ev = (n == 1).then(|| TaskEvent {
                seq: tx.last_insert_rowid(),
                task_id: t.id.clone(),
                key,
                kind,
                message,
                at,
            });
            tx.commit()?;
            Ok(ev)
        })
        .await
    }

    pub async fn task(&self, id: &str) -> Result<Option<Task>, StoreError> {
        let id = id.to_owned();
        self.with(move |c| {
            Ok(c.query_row(&format!("{TASK_SELECT} WHERE id = ?1"), [id], records::task_row).optional()?)
        })
        .await
    }

    /// Tasks, newest first; of one workspace when given.
    pub async fn tasks(&self, workspace: Option<&str>) -> Result<Vec<Task>, StoreError> {
        let ws = workspace.map(str::to_owned);
        self.with(move |c| {
            let mut stmt = c.prepare(&format!(
                "{TASK_SELECT} WHERE (?1 IS NULL OR workspace = ?1) ORDER BY created_at DESC, rowid DESC"
            ))?;
            let rows = stmt.query_map([ws], records::task_row)?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }

    /// Whether any task ever ran on a worker (the idle reaper has nothing to look for until
    /// one has).
    pub async fn any_worker_tasks(&self) -> Result<bool, StoreError> {
        self.with(|c| {
            Ok(c.query_row(
                "SELECT EXISTS (SELECT 1 FROM tasks WHERE worker IS NOT NULL OR candidate IS NOT NULL)",
                [],
                |r| r.get(0),
            )?)
        })
        .await
    }

    /// The tasks an owner task delegated to workers, oldest first.
    pub async fn worker_tasks(&self, parent: &str) -> Result<Vec<Task>, StoreError> {
        let parent = parent.to_owned();
        self.with(move |c| {
            let mut stmt = c.prepare(&format!("{TASK_SELECT} WHERE parent = ?1 ORDER BY created_at, rowid"))?;
            let rows = stmt.query_map([parent], records::task_row)?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }

    /// Tasks not in a final state, oldest first (to resume after a restart).
    pub async fn unfinished_tasks(&self) -> Result<Vec<Task>, StoreError> {
        self.with(move |c| {
            let mut stmt = c.prepare(&format!(
                "{TASK_SELECT} WHERE state IN ('queued', 'running', 'needs_input') ORDER BY created_at, rowid"
            ))?;
            let rows = stmt.query_map([], records::task_row)?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }

    // ---- events ----

    /// Adds an event unless one with the same key exists for the task; returns it when new.
    pub async fn add_event(
        &self,
        task_id: &str,
        key: &str,
        kind: &str,
        message: &str,
    ) -> Result<Option<TaskEvent>, StoreError> {
        let (task_id, key, kind, message) = (task_id.to_owned(), key.to_owned(), kind.to_owned(), message.to_owned());
        self.with(move |c| {
            let at = now();
            let n = c.execute(
                "INSERT OR IGNORE INTO task_events (task_id, key, kind, message, at) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![task_id, key, kind, message, at],
            )?;
            if n == 0 {
                return Ok(None);
            }
            Ok(Some(TaskEvent { seq: c.last_insert_rowid(), task_id, key, kind, message, at }))
        })
        .await
    }

    pub async fn events(&self, task_id: &str) -> Result<Vec<TaskEvent>, StoreError> {
        let task_id = task_id.to_owned();
        self.with(move |c| {
            let mut stmt = c.prepare(
                "SELECT seq, task_id, key, kind, message, at FROM task_events WHERE task_id = ?1 ORDER BY seq",
            )?;
            let rows = stmt.query_map([task_id], |r| {
                Ok(TaskEvent {
                    seq: r.get(0)?,
                    task_id: r.get(1)?,
                    key: r.get(2)?,
                    kind: r.get(3)?,
                    message: r.get(4)?,
                    at: r.get(5)?,
                })
            })?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }

    // ---- proposals ----

    /// Inserts a proposal; `false` when the task already has one (after a restart).
    pub async fn insert_proposal(&self, p: Proposal) -> Result<bool, StoreError> {
        self.with(move |c| {
            let commits = serde_json::to_string(&p.commits).map_err(|e| StoreError::Corrupt(e.to_string()))?;
            let files = serde_json::to_string(&p.files).map_err(|e| StoreError::Corrupt(e.to_string()))?;
            let n = c.execute(
                "INSERT OR IGNORE INTO proposals (id, task_id, workspace, branch, base, head, commits, files, added, removed, summary, state, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
                params![
                    p.id, p.task_id, p.workspace, p.branch, p.base, p.head, commits, files, p.added, p.removed, p.summary,
                    p.state.as_str(), p.created_at
                ],
            )?;
            Ok(n == 1)
        })
        .await
    }

    pub async fn proposal(&self, id: &str) -> Result<Option<Proposal>, StoreError> {
        let id = id.to_owned();
        self.with(move |c| {
            let p = c.query_row(&format!("{PROPOSAL_SELECT} WHERE id = ?1"), [id], records::proposal_row).optional()?;
            p.map(records::proposal_from_row).transpose()
        })
        .await
    }

    pub async fn proposal_for_task(&self, task_id: &str) -> Result<Option<Proposal>, StoreError> {
        let id = task_id.to_owned();
        self.with(move |c| {
            let p = c
                .query_row(&format!("{PROPOSAL_SELECT} WHERE task_id = ?1"), [id], records::proposal_row)
                .optional()?;
            p.map(records::proposal_from_row).transpose()
        })
        .await
    }

    /// A page of proposals, newest first, and how many match in all.
    pub async fn proposals(
        &self,
        workspace: Option<&str>,
        state: Option<ProposalState>,
        limit: u32,
        offset: u32,
    ) -> Result<(Vec<Proposal>, u64), StoreError> {
        let ws = workspace.map(str::to_owned);
        let st = state.map(|s| s.as_str().to_owned());
        self.with(move |c| {
            // Workers' proposals are their owner's business, not the human's.
            const FILTER: &str = "WHERE (?1 IS NULL OR workspace = ?1) AND (?2 IS NULL OR state = ?2) \
                AND task_id NOT IN (SELECT id FROM tasks WHERE parent IS NOT NULL)";
            let total: i64 =
                c.query_row(&format!("SELECT COUNT(*) FROM proposals {FILTER}"), params![ws, st], |r| r.get(0))?;
            let mut stmt = c.prepare(&format!(
                "{PROPOSAL_SELECT} {FILTER} ORDER BY created_at DESC, rowid DESC LIMIT ?3 OFFSET ?4"
            ))?;
            let rows = stmt.query_map(params![ws, st, limit, offset], records::proposal_row)?;
            let page = rows.map(|r| records::proposal_from_row(r?)).collect::<Result<Vec<_>, _>>()?;
            Ok((page, total as u64))
        })
        .await
    }

    /// How many open proposals each workspace has.
    pub async fn open_proposal_counts(&self) -> Result<std::collections::BTreeMap<String, u64>, StoreError> {
        self.with(|c| {
            let mut stmt =
                c.prepare("SELECT workspace, COUNT(*) FROM proposals WHERE state = 'open' AND task_id NOT IN (SELECT id FROM tasks WHERE parent IS NOT NULL) GROUP BY workspace")?;
            let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? as u64)))?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
        .await
    }

    /// Records an approval action once: `false` when this action was already recorded.
    /// Moves the proposal to `state` in the same transaction.
    pub async fn record_approval(
        &self,
        proposal_id: &str,
        action: &str,
        detail: &str,
        state: ProposalState,
    ) -> Result<bool, StoreError> {
        let (id, action, detail) = (proposal_id.to_owned(), action.to_owned(), detail.to_owned());
        self.with(move |c| {
            let tx = c.transaction()?;
            let n = tx.execute(
                "INSERT OR IGNORE INTO approvals (proposal_id, action, detail, at) VALUES (?1, ?2, ?3, ?4)",
                params![id, action, detail, now()],
            )?;
            if n == 1 {
                // pushed outranks applied: applying after a push does not move it back.
                tx.execute(
                    "UPDATE proposals SET state = ?2 WHERE id = ?1 AND NOT (state = 'pushed' AND ?2 = 'applied')",
                    params![id, state.as_str()],
                )?;
            }
            tx.commit()?;
            Ok(n == 1)
        })
        .await
    }

    pub async fn approvals(&self, proposal_id: &str) -> Result<Vec<Approval>, StoreError> {
        let id = proposal_id.to_owned();
        self.with(move |c| {
            let mut stmt = c.prepare(
                "SELECT proposal_id, action, detail, at FROM approvals WHERE proposal_id = ?1 ORDER BY at, rowid",
            )?;
            let rows = stmt.query_map([id], |r| {
                Ok(Approval { proposal_id: r.get(0)?, action: r.get(1)?, detail: r.get(2)?, at: r.get(3)? })
            })?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }

    pub async fn set_proposal_state(&self, id: &str, state: ProposalState) -> Result<(), StoreError> {
        let id = id.to_owned();
        self.with(move |c| {
            c.execute("UPDATE proposals SET state = ?2 WHERE id = ?1", params![id, state.as_str()])?;
            Ok(())
        })
        .await
    }
}

/// Writes a task's progress fields (not its state).
fn write_task(c: &Connection, t: &Task, at: i64) -> rusqlite::Result<usize> {
    c.execute(
        "UPDATE tasks SET session_id = ?2, delivered = ?3, base = ?4, error = ?5, summary = ?6, updated_at = ?7 WHERE id = ?1",
        params![t.id, t.session_id, t.delivered, t.base, t.error, t.summary, at],
    )
}

const TASK_SELECT: &str = "SELECT id, workspace, prompt, state, session_id, delivered, base, follows_proposal, error, summary, created_at, updated_at, deadline_at, turns_before, parent, worker, workers, set_id, candidate, model FROM tasks";
const PROPOSAL_SELECT: &str = "SELECT id, task_id, workspace, branch, base, head, commits, files, added, removed, summary, state, created_at FROM proposals";

#[cfg(test)]
mod tests;
