//! Removing a deleted workspace's podman objects in the background. `delete` writes down
//! what to remove (one file per workspace under `<data>/removals/`, made durable before
//! anything is removed), hides the workspace and returns; a task then removes the pod, the
//! volumes, the secrets and the built image, and deletes the record. A daemon that dies
//! meanwhile finishes the job at its next start (`resume_removals`). `up` of a name being
//! removed waits for the removal.
//!
//! Why: removing a pod whose containers ran commands through the API takes ~3.3 s on
//! podman 4.3 with cgroupfs (each API exec leaves conmon processes for the exit-command
//! delay, and podman retries the pod's cgroup removal for 3 s before it kills them), and a
//! volume of 50,000 files takes 15 s and more to remove.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::core::{Core, CoreError};
use crate::pods::{Engine, EngineError};

/// How long `up` waits for the removal of an earlier workspace of the same name.
pub(super) const REMOVAL_WAIT: Duration = Duration::from_secs(180);
/// Pauses between attempts of a removal that failed; after the last one the record stays
/// for the next daemon start.
const RETRIES: [Duration; 2] = [Duration::from_secs(2), Duration::from_secs(10)];

/// What a deleted workspace leaves to remove.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(in crate::core) struct Removal {
    pub workspace: String,
    /// The pod and its containers (`None`: it was gone already).
    pub pod: Option<String>,
    pub volumes: Vec<String>,
    pub secrets: Vec<String>,
    /// The image built for the workspace, if any.
    pub image: Option<String>,
    /// Images built for its compose services.
    #[serde(default)]
    pub images: Vec<String>,
}

/// The record of a pending removal: `<dir>/<workspace>.json`.
fn record_path(dir: &Path, workspace: &str) -> PathBuf {
    dir.join(format!("{workspace}.json"))
}

/// Writes the record durably (temporary file, fsync, rename, fsync of the directory).
fn write_record(dir: &Path, r: &Removal) -> std::io::Result<()> {
    use std::io::Write;
    std::fs::create_dir_all(dir)?;
    let path = record_path(dir, &r.workspace);
    let tmp = path.with_extension("json.tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(&serde_json::to_vec(r).map_err(std::io::Error::other)?)?;
    f.sync_all()?;
    std::fs::rename(&tmp, &path)?;
    std::fs::File::open(dir)?.sync_all()
}

impl<E: Engine> Core<E> {
    /// Records `r` durably, then removes its objects in the background; the workspace is
    /// hidden until they are gone.
    pub(super) async fn remove_later(self: &Arc<Self>, r: Removal) -> Result<(), CoreError> {
        let dir = self.paths.removals();
        let record = r.clone();
        tokio::task::spawn_blocking(move || write_record(&dir, &record))
            .await
            .map_err(|e| CoreError::Io(e.to_string()))?
            .map_err(|e| CoreError::Io(format!("cannot record the removal of `{}`: {e}", r.workspace)))?;
        self.spawn_removal(r);
        Ok(())
    }

    fn spawn_removal(self: &Arc<Self>, r: Removal) {
        let (done, waiting) = watch::channel(false);
        self.removing.insert(r.workspace.clone(), waiting);
        let core = self.clone();
        tokio::spawn(async move {
            let mut result = core.remove_objects(&r).await;
            for pause in RETRIES {
                if result.is_ok() {
                    break;
                }
                tokio::time::sleep(pause).await;
                result = core.remove_objects(&r).await;
            }
            match result {
                Ok(()) => {
                    let path = record_path(&core.paths.removals(), &r.workspace);
                    if let Err(e) = tokio::fs::remove_file(&path).await {
                        tracing::warn!("cannot remove {}: {e}", path.display());
                    }
                }
                Err(e) => tracing::warn!(
                    "cannot remove what workspace `{}` left ({e}); the daemon tries again at its next start",
                    r.workspace
                ),
            }
            core.changed().await;
            core.removing.remove(&r.workspace);
            let _ = done.send(true);
        });
    }

    /// Removes the objects of `r`; those gone already count as removed. The built image
    /// is best effort (another workspace's pod may use it).
    async fn remove_objects(&self, r: &Removal) -> Result<(), CoreError> {
        let gone = |res: Result<(), EngineError>| match res {
            Ok(()) | Err(EngineError::NotFound { .. }) => Ok(()),
            Err(e) => Err(e),
        };
        if let Some(pod) = &r.pod {
            gone(self.engine.remove_pod(pod).await)?;
        }
        let volumes = futures_util::future::join_all(r.volumes.iter().map(|v| self.engine.remove_volume(v))).await;
        let secrets = futures_util::future::join_all(r.secrets.iter().map(|s| self.engine.remove_secret(s))).await;
        for res in volumes.into_iter().chain(secrets) {
            gone(res)?;
        }
        for image in r.image.iter().chain(&r.images) {
            if let Err(e) = gone(self.engine.remove_image(image).await) {
                tracing::warn!("cannot remove the built image {image} of {}: {e}", r.workspace);
            }
        }
        Ok(())
    }

    /// At a daemon's start: finishes the removals an earlier daemon recorded and did not
    /// finish. Returns how many there were.
    pub async fn resume_removals(self: &Arc<Self>) -> Result<usize, CoreError> {
        let dir = self.paths.removals();
        let records = tokio::task::spawn_blocking(move || -> std::io::Result<Vec<(PathBuf, Vec<u8>)>> {
            let entries = match std::fs::read_dir(&dir) {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
                other => other?,
            };
            let mut out = Vec::new();
            for entry in entries {
                let path = entry?.path();
                if path.extension().is_some_and(|x| x == "json") {
                    let bytes = std::fs::read(&path)?;
                    out.push((path, bytes));
                }
            }
            Ok(out)
        })
        .await
        .map_err(|e| CoreError::Io(e.to_string()))?
        .map_err(|e| CoreError::Io(format!("cannot read the pending removals: {e}")))?;
        let mut n = 0;
        for (path, bytes) in records {
            match serde_json::from_slice::<Removal>(&bytes) {
                Ok(r) if !self.removing.contains_key(&r.workspace) => {
                    self.spawn_removal(r);
                    n += 1;
                }
                Ok(_) => {}
                Err(e) => tracing::warn!("{} is not a removal record ({e}); left as it is", path.display()),
            }
        }
        Ok(n)
    }

    /// Waits, at most `limit`, until no removal is under way (a daemon that stops gives
    /// them a moment to finish); returns how many are still under way.
    pub async fn settle_removals(&self, limit: Duration) -> usize {
        let waits: Vec<_> = self.removing.iter().map(|e| e.value().clone()).collect();
        let all = futures_util::future::join_all(waits.into_iter().map(|mut w| async move {
            let _ = w.wait_for(|done| *done).await;
        }));
        let _ = tokio::time::timeout(limit, all).await;
        self.removing.len()
    }

    /// Workspaces whose objects are being removed.
    pub fn removals_pending(&self) -> Vec<String> {
        let mut names: Vec<String> = self.removing.iter().map(|e| e.key().clone()).collect();
        names.sort();
        names
    }

    /// Whether workspace `name` is being removed (then it is hidden).
    pub(super) fn being_removed(&self, name: &str) -> bool {
        self.removing.contains_key(name)
    }

    /// Waits, at most [`REMOVAL_WAIT`], until the removal of an earlier workspace `name`
    /// has finished; `false` when it has not.
    pub(super) async fn removal_finished(&self, name: &str) -> bool {
        let Some(mut waiting) = self.removing.get(name).map(|w| w.clone()) else {
            return true;
        };
        // An error: the removal's task ended (its sender is gone), which is finished too.
        let _ = tokio::time::timeout(REMOVAL_WAIT, waiting.wait_for(|done| *done)).await;
        !self.removing.contains_key(name) || *waiting.borrow()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_is_written_whole_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let r = Removal {
            workspace: "w".into(),
            pod: Some("devaipod-w".into()),
            volumes: vec!["devaipod-w-workspace".into()],
            secrets: vec!["devaipod-w-agent-password".into()],
            image: None,
            images: vec!["localhost/devaipod-build/i-w_db:latest".into()],
        };
        write_record(dir.path(), &r).unwrap();
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, ["w.json"], "no temporary file is left");
        let back: Removal = serde_json::from_slice(&std::fs::read(record_path(dir.path(), "w")).unwrap()).unwrap();
        assert_eq!(back, r);
        // A record an earlier version wrote (no `images`) reads as none.
        let old: Removal =
            serde_json::from_str(r#"{"workspace":"w","pod":null,"volumes":[],"secrets":[],"image":null}"#).unwrap();
        assert!(old.images.is_empty());
    }
}
