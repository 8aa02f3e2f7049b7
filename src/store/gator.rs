//! Gator's part of the store: per-workspace scopes, the workspace's GitHub repository and
//! the audit log. Scopes live here, outside every pod, so no agent can change them.

use rusqlite::{OptionalExtension, params};
use serde::Serialize;

use super::{Store, StoreError, now};

/// One audited gator call.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct AuditEntry {
    pub id: i64,
    pub at: i64,
    pub workspace: String,
    pub tool: String,
    pub target: String,
    /// `allow`, `deny`, or `error` (allowed, then failed: the reason says why).
    pub decision: String,
    pub reason: String,
}

impl Store {
    pub async fn set_github_repo(&self, workspace: &str, repo: Option<&str>) -> Result<(), StoreError> {
        let (ws, repo) = (workspace.to_owned(), repo.map(str::to_owned));
        self.with(move |c| {
            c.execute("UPDATE workspaces SET github_repo = ?2 WHERE name = ?1", params![ws, repo])?;
            Ok(())
        })
        .await
    }

    pub async fn github_repo(&self, workspace: &str) -> Result<Option<String>, StoreError> {
        let ws = workspace.to_owned();
        self.with(move |c| {
            Ok(c.query_row("SELECT github_repo FROM workspaces WHERE name = ?1", [ws], |r| r.get(0))
                .optional()?
                .flatten())
        })
        .await
    }

    /// The workspace's own scopes (as stored strings), oldest first.
    pub async fn scopes(&self, workspace: &str) -> Result<Vec<String>, StoreError> {
        let ws = workspace.to_owned();
        self.with(move |c| {
            let mut st = c.prepare("SELECT scope FROM gator_scopes WHERE workspace = ?1 ORDER BY added_at, scope")?;
            let rows = st.query_map([ws], |r| r.get(0))?;
            Ok(rows.collect::<Result<Vec<String>, _>>()?)
        })
        .await
    }

    /// Adds a scope; `false` when the workspace had it already.
    pub async fn add_scope(&self, workspace: &str, scope: &str) -> Result<bool, StoreError> {
        let (ws, scope) = (workspace.to_owned(), scope.to_owned());
        self.with(move |c| {
            let n = c.execute(
                "INSERT OR IGNORE INTO gator_scopes (workspace, scope, added_at) VALUES (?1, ?2, ?3)",
                params![ws, scope, now()],
            )?;
            Ok(n == 1)
        })
        .await
    }

    /// Removes a scope; `false` when the workspace did not have it.
    pub async fn remove_scope(&self, workspace: &str, scope: &str) -> Result<bool, StoreError> {
        let (ws, scope) = (workspace.to_owned(), scope.to_owned());
        self.with(move |c| {
            Ok(c.execute("DELETE FROM gator_scopes WHERE workspace = ?1 AND scope = ?2", params![ws, scope])? == 1)
        })
        .await
    }

    /// The workspace's own egress host patterns (as stored strings), oldest first.
    pub async fn egress_hosts(&self, workspace: &str) -> Result<Vec<String>, StoreError> {
        let ws = workspace.to_owned();
        self.with(move |c| {
            let mut st =
                c.prepare("SELECT pattern FROM egress_hosts WHERE workspace = ?1 ORDER BY added_at, pattern")?;
            let rows = st.query_map([ws], |r| r.get(0))?;
            Ok(rows.collect::<Result<Vec<String>, _>>()?)
        })
        .await
    }

    /// Adds egress host patterns; how many were new.
    pub async fn add_egress_hosts(&self, workspace: &str, patterns: &[String]) -> Result<usize, StoreError> {
        let (ws, patterns) = (workspace.to_owned(), patterns.to_vec());
        self.with(move |c| {
            let tx = c.transaction()?;
            let mut n = 0;
            for p in &patterns {
                n += tx.execute(
                    "INSERT OR IGNORE INTO egress_hosts (workspace, pattern, added_at) VALUES (?1, ?2, ?3)",
                    params![ws, p, now()],
                )?;
            }
            tx.commit()?;
            Ok(n)
        })
        .await
    }

    /// Replaces the workspace's egress host patterns with `patterns`.
    pub async fn set_egress_hosts(&self, workspace: &str, patterns: &[String]) -> Result<(), StoreError> {
        let (ws, patterns) = (workspace.to_owned(), patterns.to_vec());
        self.with(move |c| {
            let tx = c.transaction()?;
            tx.execute("DELETE FROM egress_hosts WHERE workspace = ?1", [&ws])?;
            for p in &patterns {
                tx.execute(
                    "INSERT OR IGNORE INTO egress_hosts (workspace, pattern, added_at) VALUES (?1, ?2, ?3)",
                    params![ws, p, now()],
                )?;
            }
            tx.commit()?;
            Ok(())
        })
        .await
    }

    /// Removes an egress host pattern; `false` when the workspace did not have it.
    pub async fn remove_egress_host(&self, workspace: &str, pattern: &str) -> Result<bool, StoreError> {
        let (ws, p) = (workspace.to_owned(), pattern.to_owned());
        self.with(move |c| {
            Ok(c.execute("DELETE FROM egress_hosts WHERE workspace = ?1 AND pattern = ?2", params![ws, p])? == 1)
        })
        .await
    }

    pub async fn clear_scopes(&self, workspace: &str) -> Result<(), StoreError> {
        let ws = workspace.to_owned();
        self.with(move |c| {
            c.execute("DELETE FROM gator_scopes WHERE workspace = ?1", [ws])?;
            Ok(())
        })
        .await
    }

    pub async fn audit(
        &self,
        workspace: &str,
        tool: &str,
        target: &str,
        decision: &str,
        reason: &str,
    ) -> Result<AuditEntry, StoreError> {
        let mut e = AuditEntry {
            id: 0,
            at: now(),
            workspace: workspace.to_owned(),
            tool: tool.to_owned(),
            target: target.to_owned(),
            decision: decision.to_owned(),
            reason: reason.to_owned(),
        };
        self.with(move |c| {
            c.execute(
                "INSERT INTO audit (at, workspace, tool, target, decision, reason) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![e.at, e.workspace, e.tool, e.target, e.decision, e.reason],
            )?;
            e.id = c.last_insert_rowid();
            Ok(e)
        })
        .await
    }

    /// Audit entries, newest first; of one workspace or all; at most `limit`.
    pub async fn audit_log(&self, workspace: Option<&str>, limit: u32) -> Result<Vec<AuditEntry>, StoreError> {
        let ws = workspace.map(str::to_owned);
        self.with(move |c| {
            let mut st = c.prepare(
                "SELECT id, at, workspace, tool, target, decision, reason FROM audit
                 WHERE ?1 IS NULL OR workspace = ?1 ORDER BY id DESC LIMIT ?2",
            )?;
            let rows = st.query_map(params![ws, limit], |r| {
                Ok(AuditEntry {
                    id: r.get(0)?,
                    at: r.get(1)?,
                    workspace: r.get(2)?,
                    tool: r.get(3)?,
                    target: r.get(4)?,
                    decision: r.get(5)?,
                    reason: r.get(6)?,
                })
            })?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }
}

impl Store {
    /// Names of every workspace in the store.
    pub async fn workspace_names(&self) -> Result<Vec<String>, StoreError> {
        self.with(|c| {
            let mut st = c.prepare("SELECT name FROM workspaces ORDER BY name")?;
            let rows = st.query_map([], |r| r.get(0))?;
            Ok(rows.collect::<Result<Vec<String>, _>>()?)
        })
        .await
    }
}
