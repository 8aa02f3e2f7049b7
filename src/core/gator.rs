//! Gator's policy side in core: a workspace's scopes (config + store), the audit log, and
//! pushing an agent's branch with the daemon's credentials. The MCP face is `gator::tools`.

use std::path::PathBuf;

use serde::Serialize;

use super::{BusEvent, Core, CoreError};
use crate::git::BareRepo;
use crate::github::{self, Github, RepoId, Scope};
use crate::pods::Engine;
use crate::store::{AuditEntry, TaskState};

/// Serves each pod its gator endpoint. Opened before the agent container starts (its
/// directory is mounted into it), closed when the workspace is deleted.
pub trait PodEndpoints: Send + Sync {
    /// Opens (or reopens) the endpoint of `workspace`; returns the host directory to mount.
    fn open(&self, workspace: &str) -> Result<PathBuf, CoreError>;
    fn close(&self, workspace: &str);
    /// The devaipod executable agent containers run as gator's bridge (mounted read-only).
    fn bridge(&self) -> Result<PathBuf, CoreError> {
        std::env::current_exe()
            .map_err(|e| CoreError::Io(format!("cannot find the devaipod binary for gator's bridge: {e}")))
    }
}

/// A workspace's scopes as `gator show` prints them.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct ScopeView {
    pub workspace: String,
    /// The GitHub repository the workspace works on, if any.
    pub github_repo: Option<String>,
    /// Scopes of this workspace (added at `up` or with `gator add`).
    pub scopes: Vec<String>,
    /// Scopes every workspace has, from `[service-gator]` in devaipod.toml.
    pub from_config: Vec<String>,
}

impl<E: Engine> Core<E> {
    pub fn set_endpoints(&self, endpoints: std::sync::Arc<dyn PodEndpoints>) {
        let _ = self.endpoints.set(endpoints);
    }

    pub(super) fn endpoints(&self) -> Option<&std::sync::Arc<dyn PodEndpoints>> {
        self.endpoints.get()
    }

    /// The GitHub client with the daemon's token.
    pub async fn github(&self) -> Github {
        Github::new(self.github_http.clone(), &self.config.service_gator.gh.api_url, self.github_token().await)
    }

    /// The daemon's GitHub token: `[trusted] github-token-env`, else `github-token-file`
    /// (read at each use, so a rotated file takes effect at once), else the podman secret
    /// `github-token-secret` (read once, then kept in memory).
    pub async fn github_token(&self) -> Option<String> {
        let trusted = self.config.trusted.clone();
        let from_config = tokio::task::spawn_blocking(move || github::token(&trusted)).await.ok().flatten();
        if from_config.is_some() {
            return from_config;
        }
        let secret = self.config.trusted.github_token_secret.as_deref()?;
        let mut cached = self.github_secret.lock().await;
        let (value, failed_at) = &mut *cached;
        // After a failure, wait a minute before asking podman again.
        if value.is_none() && failed_at.is_none_or(|at| at.elapsed() > std::time::Duration::from_secs(60)) {
            let read = super::read_secret(&self.engine, &self.config, &self.paths, secret).await;
            match read {
                Ok(v) => *value = Some(v),
                Err(e) => {
                    *failed_at = Some(std::time::Instant::now());
                    tracing::warn!("cannot read the GitHub token from podman secret {secret}: {e}");
                }
            }
        }
        value.clone()
    }

    pub async fn github_repo(&self, ws: &str) -> Result<Option<RepoId>, CoreError> {
        Ok(self.store.github_repo(ws).await?.and_then(|r| RepoId::parse(&r).ok()))
    }

    /// Every scope that applies to `ws`: its own and the configured ones.
    pub async fn effective_scopes(&self, ws: &str) -> Result<Vec<Scope>, CoreError> {
        let mut out = Scope::from_config(&self.config.service_gator);
        for s in self.store.scopes(ws).await? {
            // Stored scopes were parsed when added; one that no longer parses grants nothing.
            if let Ok(scope) = Scope::parse(&s) {
                out.push(scope);
            }
        }
        Ok(out)
    }

    pub async fn scope_view(&self, ws: &str) -> Result<ScopeView, CoreError> {
        self.store.workspace(ws).await?.ok_or_else(|| CoreError::NotFound(ws.to_owned()))?;
        Ok(ScopeView {
            workspace: ws.to_owned(),
            github_repo: self.store.github_repo(ws).await?,
            scopes: self.store.scopes(ws).await?,
            from_config: Scope::from_config(&self.config.service_gator).iter().map(ToString::to_string).collect(),
        })
    }

    pub async fn add_scope(&self, ws: &str, scope: &str) -> Result<ScopeView, CoreError> {
        self.store.workspace(ws).await?.ok_or_else(|| CoreError::NotFound(ws.to_owned()))?;
        let parsed = Scope::parse(scope).map_err(|e| CoreError::Invalid(e.to_string()))?;
        self.store.add_scope(ws, &parsed.to_string()).await?;
        self.scopes_changed(ws, &format!("granted {parsed}"));
        self.scope_view(ws).await
    }

    pub async fn remove_scope(&self, ws: &str, scope: &str) -> Result<ScopeView, CoreError> {
        self.store.workspace(ws).await?.ok_or_else(|| CoreError::NotFound(ws.to_owned()))?;
        let parsed = Scope::parse(scope).map_err(|e| CoreError::Invalid(e.to_string()))?;
        if !self.store.remove_scope(ws, &parsed.to_string()).await? {
            let have = self.store.scopes(ws).await?;
            return Err(CoreError::Invalid(format!(
                "{ws} has no scope `{parsed}` (it has: {})",
                if have.is_empty() { "none".to_owned() } else { have.join(", ") }
            )));
        }
        self.scopes_changed(ws, &format!("took back {parsed}"));
        self.scope_view(ws).await
    }

    /// Tells the bus (and so gator, which tells the agent its tool list changed).
    fn scopes_changed(&self, ws: &str, message: &str) {
        self.publish(BusEvent {
            seq: 0,
            workspace: ws.to_owned(),
            task_id: None,
            kind: "scopes".into(),
            message: message.to_owned(),
            state: None,
        });
    }

    /// Records one gator call or egress decision and publishes it on the bus.
    pub async fn audit(
        &self,
        ws: &str,
        tool: &str,
        target: &str,
        decision: &str,
        reason: &str,
    ) -> Result<AuditEntry, CoreError> {
        self.audit_as(ws, super::Seat::Owner, tool, target, decision, reason).await
    }

    /// The same for one of the workspace's agents: a worker's calls are audited as its
    /// (`worker <n>:` before the target) and are events of its task.
    pub async fn audit_as(
        &self,
        ws: &str,
        seat: super::Seat,
        tool: &str,
        target: &str,
        decision: &str,
        reason: &str,
    ) -> Result<AuditEntry, CoreError> {
        let target = match seat {
            super::Seat::Owner => target.to_owned(),
            other => format!("{}: {target}", other.label()),
        };
        let target = target.as_str();
        let entry = self.store.audit(ws, tool, target, decision, reason).await?;
        // The egress proxy's decisions (tool `egress`) read as such; the rest are gator's.
        let (kind, message) = match tool {
            "egress" => ("egress", format!("egress {} {target}: {reason}", entry.decision)),
            "ssh" => ("ssh", format!("ssh {} {target}: {reason}", entry.decision)),
            _ => ("gator", format!("gator {} {tool} {target}: {reason}", entry.decision)),
        };
        // During a task the call is part of its progress (stored with it, shown live).
        if let Some(task) = self.seat_task(ws, seat).await? {
            let key = format!("{kind}:{}", entry.id);
            if let Some(ev) = self.store.add_event(&task, &key, kind, &message).await? {
                self.publish(BusEvent::stored(ev, ws));
            }
        } else {
            self.publish(BusEvent {
                seq: 0,
                workspace: ws.to_owned(),
                task_id: None,
                kind: "audit".into(),
                message,
                state: None,
            });
        }
        Ok(entry)
    }

    pub async fn audit_log(&self, ws: Option<&str>, limit: u32) -> Result<Vec<AuditEntry>, CoreError> {
        Ok(self.store.audit_log(ws, limit).await?)
    }

    /// The workspace's unfinished task (there is at most one), where the agent works now.
    pub async fn current_task(&self, ws: &str) -> Result<Option<String>, CoreError> {
        self.seat_task(ws, super::Seat::Owner).await
    }

    /// The unfinished task of one agent of the workspace (its owner or a worker).
    pub async fn seat_task(&self, ws: &str, seat: super::Seat) -> Result<Option<String>, CoreError> {
        let tasks = self.store.tasks(Some(ws)).await?;
        let open = [TaskState::Queued, TaskState::Running, TaskState::NeedsInput];
        Ok(tasks.into_iter().find(|t| open.contains(&t.state) && super::Seat::of(t) == seat).map(|t| t.id))
    }

    /// The branch of the workspace's unfinished task.
    pub async fn current_branch(&self, ws: &str) -> Result<Option<String>, CoreError> {
        Ok(self.current_task(ws).await?.map(|id| format!("devaipod/{id}")))
    }

    /// Whether `branch` is `devaipod/<task>` of one of this workspace's tasks.
    pub async fn owns_branch(&self, ws: &str, branch: &str) -> Result<bool, CoreError> {
        let Some(id) = branch.strip_prefix("devaipod/") else { return Ok(false) };
        Ok(self.store.task(id).await?.is_some_and(|t| t.workspace == ws))
    }

    /// Brings the task's work out of the sandbox and pushes `branch` to `repo`'s remote
    /// with the daemon's credentials. The caller has decided that this is allowed.
    pub async fn push_agent_branch(
        &self,
        ws: &str,
        repo: &RepoId,
        branch: &str,
        force: bool,
    ) -> Result<String, CoreError> {
        let id = branch.strip_prefix("devaipod/").unwrap_or(branch);
        let task = self.store.task(id).await?.ok_or_else(|| CoreError::TaskNotFound(id.to_owned()))?;
        let head = self
            .bring_out(&task)
            .await?
            .ok_or_else(|| CoreError::Invalid("nothing to push: the task has not changed anything yet".into()))?;
        let bare = BareRepo::init(self.paths.repo(ws)).await?;
        let remote = github::git_url(&self.config.service_gator.gh.git_url, repo);
        let token = self.github_token().await;
        bare.push(&remote, &head, branch, force, token.as_deref()).await?;
        Ok(head)
    }
}
