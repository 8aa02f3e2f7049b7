//! The warm pool's part of the store: members (warm, or being claimed by a workspace) and
//! the bindings of workspaces that took one to the member's objects.

use std::collections::BTreeMap;

use rusqlite::{OptionalExtension, params};

use super::{Store, StoreError, now};

/// Where a pool member is.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case", tag = "state", content = "workspace")]
pub enum MemberState {
    /// Started, its agent answering, waiting for a workspace.
    Warm,
    /// A workspace is taking it (its `up` runs, or a crash interrupted it).
    Claimed(String),
}

/// A pool member as the store knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolMember {
    /// `pool.<hex>`: what its objects are named after.
    pub key: String,
    pub image: String,
    /// Its agent's password (a podman secret of the member's, as for any pod).
    pub password: String,
    /// The member's agent container plan and pod spec (JSON), compared with a workspace's.
    pub plan: String,
    pub state: MemberState,
    pub created_at: i64,
}

/// A workspace living in a former pool member's objects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodBinding {
    pub workspace: String,
    pub pod_key: String,
    /// The labels the workspace's own pod would carry (its source, folder, …).
    pub labels: BTreeMap<String, String>,
}

impl Store {
    pub async fn insert_member(&self, m: PoolMember) -> Result<(), StoreError> {
        self.with(move |c| {
            let workspace = match &m.state {
                MemberState::Warm => None,
                MemberState::Claimed(w) => Some(w.clone()),
            };
            c.execute(
                "INSERT INTO pool_members (key, image, password, plan, state, workspace, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    m.key,
                    m.image,
                    m.password,
                    m.plan,
                    if workspace.is_some() { "claimed" } else { "warm" },
                    workspace,
                    m.created_at
                ],
            )?;
            Ok(())
        })
        .await
    }

    pub async fn members(&self) -> Result<Vec<PoolMember>, StoreError> {
        self.with(|c| {
            let mut st = c.prepare(
                "SELECT key, image, password, plan, state, workspace, created_at FROM pool_members ORDER BY created_at, key",
            )?;
            let rows = st.query_map([], |r| {
                let state: String = r.get(4)?;
                let workspace: Option<String> = r.get(5)?;
                Ok(PoolMember {
                    key: r.get(0)?,
                    image: r.get(1)?,
                    password: r.get(2)?,
                    plan: r.get(3)?,
                    state: match (state.as_str(), workspace) {
                        ("claimed", Some(w)) => MemberState::Claimed(w),
                        _ => MemberState::Warm,
                    },
                    created_at: r.get(6)?,
                })
            })?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
        .await
    }

    /// Claims the warm member `key` for `workspace`: `false` when it is not warm (another
    /// claim took it, or it is gone). One statement: two claims never get one member.
    pub async fn claim_member(&self, key: &str, workspace: &str) -> Result<bool, StoreError> {
        let (key, workspace) = (key.to_owned(), workspace.to_owned());
        self.with(move |c| {
            let n = c.execute(
                "UPDATE pool_members SET state = 'claimed', workspace = ?2 WHERE key = ?1 AND state = 'warm'",
                params![key, workspace],
            )?;
            Ok(n == 1)
        })
        .await
    }

    pub async fn remove_member(&self, key: &str) -> Result<(), StoreError> {
        let key = key.to_owned();
        self.with(move |c| {
            c.execute("DELETE FROM pool_members WHERE key = ?1", [key])?;
            Ok(())
        })
        .await
    }

    /// Records workspace `w`, ties it to the claimed member's objects and forgets the
    /// member: one transaction, so a crash leaves either a claimed member (undone at the
    /// next start) or a bound workspace.
    pub async fn bind_member(&self, b: PodBinding, w: super::WorkspaceRecord) -> Result<(), StoreError> {
        self.with(move |c| {
            let labels = serde_json::to_string(&b.labels).map_err(|e| StoreError::Corrupt(e.to_string()))?;
            let tx = c.transaction()?;
            super::insert_workspace(&tx, &w)?;
            tx.execute(
                "INSERT OR REPLACE INTO pod_bindings (workspace, pod_key, labels) VALUES (?1, ?2, ?3)",
                params![b.workspace, b.pod_key, labels],
            )?;
            tx.execute("DELETE FROM pool_members WHERE key = ?1", [&b.pod_key])?;
            tx.commit()?;
            Ok(())
        })
        .await
    }

    /// Forgets a workspace's binding (the workspace is deleted).
    pub async fn unbind(&self, workspace: &str) -> Result<(), StoreError> {
        let workspace = workspace.to_owned();
        self.with(move |c| {
            c.execute("DELETE FROM pod_bindings WHERE workspace = ?1", [workspace])?;
            Ok(())
        })
        .await
    }

    pub async fn bindings(&self) -> Result<Vec<PodBinding>, StoreError> {
        self.with(|c| {
            let mut st = c.prepare("SELECT workspace, pod_key, labels FROM pod_bindings ORDER BY workspace")?;
            let rows = st.query_map([], binding_row)?;
            rows.map(|row| parse_binding(row?)).collect()
        })
        .await
    }

    pub async fn binding(&self, workspace: &str) -> Result<Option<PodBinding>, StoreError> {
        let workspace = workspace.to_owned();
        self.with(move |c| {
            let row = c
                .query_row(
                    "SELECT workspace, pod_key, labels FROM pod_bindings WHERE workspace = ?1",
                    [workspace],
                    binding_row,
                )
                .optional()?;
            row.map(parse_binding).transpose()
        })
        .await
    }
}

type BindingRow = (String, String, String);

fn binding_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<BindingRow> {
    Ok((r.get(0)?, r.get(1)?, r.get(2)?))
}

/// A binding from its row: its labels are JSON.
fn parse_binding((workspace, pod_key, labels): BindingRow) -> Result<PodBinding, StoreError> {
    let labels = serde_json::from_str(&labels)
        .map_err(|e| StoreError::Corrupt(format!("labels of {workspace}'s pod binding: {e}")))?;
    Ok(PodBinding { workspace, pod_key, labels })
}

/// A new member's record (warm, made now).
pub fn warm_member(key: &str, image: &str, password: &str, plan: &str) -> PoolMember {
    PoolMember {
        key: key.to_owned(),
        image: image.to_owned(),
        password: password.to_owned(),
        plan: plan.to_owned(),
        state: MemberState::Warm,
        created_at: now(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_member_is_claimed_once_and_bound_in_one_step() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.db")).unwrap();
        store.insert_member(warm_member("pool.0000aaaa", "img", "pw", "{}")).await.unwrap();
        store.insert_member(warm_member("pool.0000bbbb", "img", "pw2", "{}")).await.unwrap();
        assert!(store.claim_member("pool.0000aaaa", "one").await.unwrap());
        // A second claim of the same member fails; the other member is still warm.
        assert!(!store.claim_member("pool.0000aaaa", "two").await.unwrap());
        assert!(!store.claim_member("pool.missing0", "two").await.unwrap());
        let members = store.members().await.unwrap();
        assert_eq!(members[0].state, MemberState::Claimed("one".into()));
        assert_eq!(members[1].state, MemberState::Warm);
        let labels = BTreeMap::from([("io.devaipod.source".to_owned(), "/src/x".to_owned())]);
        let record = super::super::WorkspaceRecord {
            name: "one".into(),
            source: "/src/x".into(),
            agent_password: "pw".into(),
            created_at: 1,
            agent_head: None,
        };
        store
            .bind_member(
                PodBinding { workspace: "one".into(), pod_key: "pool.0000aaaa".into(), labels: labels.clone() },
                record,
            )
            .await
            .unwrap();
        assert_eq!(store.workspace("one").await.unwrap().unwrap().agent_password, "pw");
        assert_eq!(store.members().await.unwrap().len(), 1, "the bound member's row is gone");
        let b = store.binding("one").await.unwrap().unwrap();
        assert_eq!((b.pod_key.as_str(), b.labels), ("pool.0000aaaa", labels));
        assert_eq!(store.bindings().await.unwrap().len(), 1);
        // Deleting the workspace forgets its binding.
        store.delete_workspace("one").await.unwrap();
        assert!(store.binding("one").await.unwrap().is_none());
    }
}
