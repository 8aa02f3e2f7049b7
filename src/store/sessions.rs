//! Web UI sessions: only a hash of each cookie is stored, so the database does not hold
//! anything a browser could present.

use rusqlite::{OptionalExtension, params};

use super::{Store, StoreError, now};

/// The login-session table alone: what the web's authentication may touch of the store.
#[derive(Clone)]
pub struct Sessions(Store);

impl Store {
    /// A handle on the login-session table only.
    pub fn sessions(&self) -> Sessions {
        Sessions(self.clone())
    }
}

impl Sessions {
    pub async fn insert(&self, id_hash: &str, expires_at: i64) -> Result<(), StoreError> {
        self.0.insert_session(id_hash, expires_at).await
    }

    pub async fn expiry(&self, id_hash: &str) -> Result<Option<i64>, StoreError> {
        self.0.session_expiry(id_hash).await
    }

    pub async fn delete(&self, id_hash: &str) -> Result<(), StoreError> {
        self.0.delete_session(id_hash).await
    }
}

impl Store {
    pub async fn insert_session(&self, id_hash: &str, expires_at: i64) -> Result<(), StoreError> {
        let id = id_hash.to_owned();
        self.with(move |c| {
            let t = now();
            c.execute("DELETE FROM sessions WHERE expires_at <= ?1", [t])?;
            c.execute(
                "INSERT INTO sessions (id_hash, created_at, expires_at) VALUES (?1, ?2, ?3)",
                params![id, t, expires_at],
            )?;
            Ok(())
        })
        .await
    }

    /// The session's expiry, when it exists.
    pub async fn session_expiry(&self, id_hash: &str) -> Result<Option<i64>, StoreError> {
        let id = id_hash.to_owned();
        self.with(move |c| {
            Ok(c.query_row("SELECT expires_at FROM sessions WHERE id_hash = ?1", [id], |r| r.get(0)).optional()?)
        })
        .await
    }

    pub async fn delete_session(&self, id_hash: &str) -> Result<(), StoreError> {
        let id = id_hash.to_owned();
        self.with(move |c| {
            c.execute("DELETE FROM sessions WHERE id_hash = ?1", [id])?;
            Ok(())
        })
        .await
    }
}
