//! Workspaces: their types, and `status`, `stop`, `start`, `delete`, the agent of a
//! workspace. `up.rs` creates one (and rolls a failed `up` back), `listing.rs` lists them
//! (shared, briefly cached), `exec.rs` runs commands in their containers, `removal.rs`
//! removes a deleted one's objects in the background.

mod exec;
mod listing;
mod removal;
mod services;
mod up;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use super::{BusEvent, Core, CoreError, Seat};
use crate::agent::DynAgent;
use crate::pods::engine::{ExecSpec, Output, PodInfo, PublishedPort};
use crate::pods::naming::{self, Role};
use crate::pods::plan::{self, PodPlan};
use crate::pods::{Engine, EngineError};
use crate::store::Task;

/// Receives progress of long steps (the CLI prints it on stderr).
pub trait Progress: Send + Sync {
    /// A step begins.
    fn step(&self, message: &str);
    /// Output of a step (build log, lifecycle command output).
    fn detail(&self, line: &str);
}

/// What `up` is asked to do. Every surface (CLI `up` and `run`, MCP `create_workspace`, the
/// web form, the JSON API) sends this one request; `up` decides the rest.
#[derive(Debug, Clone, Default, Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpRequest {
    /// A local path (absolute), a git URL, or a GitHub repository, issue or pull request URL.
    /// (Missing counts as empty: `up` says it is required, as for every surface.)
    #[serde(default)]
    pub source: String,
    pub name: Option<String>,
    pub image: Option<String>,
    /// `.devcontainer/<name>/devcontainer.json` to use when there are several.
    pub devcontainer: Option<String>,
    #[serde(default)]
    pub dry_run: bool,
    /// For a GitHub source: gator grants read only (no push, no draft PR).
    #[serde(default)]
    pub read_only: bool,
    /// A first task for the agent. Without one, a GitHub issue or pull request source starts
    /// its own (title and body); a blank task counts as none.
    #[serde(default)]
    pub task: Option<String>,
    /// The workspace is made to run a task (`devaipod run`): refuse before creating anything
    /// when there is none.
    #[serde(default)]
    pub require_task: bool,
    /// The first task's agent may delegate to up to this many worker agents.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub workers: u32,
    /// The caller's environment (the shell that ran `devaipod up`), against which `[env]`,
    /// `[trusted.env]`, `[agent] api-key-env` and `${localEnv:…}` resolve. Absent (the web
    /// form, MCP over HTTP): the daemon's own environment. Used for this `up` only; never
    /// stored, logged or printed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<CallerEnv>,
    /// Hosts this workspace's agent may reach beyond `[network] allow-hosts` (`host`,
    /// `host:port`, `*.domain`, `*.domain:port`); changed later with `egress allow/remove`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_hosts: Vec<String>,
    /// The agent to run instead of `[agent]`'s: `opencode`, `opencode-acp`, or an
    /// `[agents.<name>]` of the config (docs/agents.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
}

impl UpRequest {
    /// The request with blank optional fields (`name`, `image`, `devcontainer`, `task`) as
    /// absent: MCP clients and forms send `""` for "not given".
    pub fn normalized(&self) -> UpRequest {
        let given = |v: &Option<String>| v.clone().filter(|s| !s.trim().is_empty());
        UpRequest {
            name: given(&self.name),
            image: given(&self.image),
            devcontainer: given(&self.devcontainer),
            task: given(&self.task),
            agent: given(&self.agent),
            ..self.clone()
        }
    }
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// Environment variables of a caller: `Debug` shows their names only.
#[derive(Clone, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct CallerEnv(pub BTreeMap<String, String>);

impl CallerEnv {
    /// This process's environment (for a client to send).
    pub fn current() -> CallerEnv {
        CallerEnv(std::env::vars().collect())
    }
}

impl std::fmt::Debug for CallerEnv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.0.keys()).finish()
    }
}

#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum UpOutcome {
    Planned(Box<PodPlan>),
    Created(Box<Created>),
}

/// A workspace `up` made, and the first task it started.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize, schemars::JsonSchema)]
pub struct Created {
    #[serde(flatten)]
    pub workspace: WorkspaceStatus,
    /// The first task (given, or a GitHub issue's), queued.
    #[serde(default)]
    pub task: Option<Task>,
    /// Why the first task did not start, when it did not (the workspace is made either way).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_task_error: Option<String>,
    /// Whether the workspace took a warm pod from the pool (`[pool]`).
    #[serde(default)]
    pub from_pool: bool,
    /// Why it did not, when a pool is kept (made cold: another image, a compose project, no
    /// warm pod free, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool: Option<String>,
}

/// What a stop, start or delete did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize, schemars::JsonSchema)]
pub struct Done {
    pub workspace: String,
    /// stopped, started or deleted.
    pub result: String,
}

/// A workspace as `list` and `status` show it.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize, schemars::JsonSchema)]
pub struct WorkspaceStatus {
    pub name: String,
    pub pod: String,
    /// The pod's status as podman reports it (Running, Exited, Degraded, …), except that
    /// stopped workers and fan-out candidates (stopped by design when idle) do not make a
    /// pod whose workspace and agent run `Degraded`.
    pub status: String,
    pub workspace: Option<String>,
    pub agent: Option<String>,
    pub source: Option<String>,
    pub workspace_folder: Option<String>,
    pub created: String,
    /// Published ports (`status` only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<PublishedPort>,
}

impl WorkspaceStatus {
    fn from_pod(p: PodInfo) -> Option<Self> {
        let name = p.labels.get(naming::LABEL_WORKSPACE)?.clone();
        let state = |role| p.containers.iter().find(|c| c.role == Some(role)).map(|c| c.state.to_lowercase());
        let running = |c: &crate::pods::engine::ContainerInfo| c.state.eq_ignore_ascii_case("running");
        // Named after the pod's objects (a former pool member's key, or the name).
        let objects = p.name.strip_prefix(naming::PREFIX).map(str::to_owned);
        let extra = |c: &crate::pods::engine::ContainerInfo| {
            naming::WorkspaceName::new(&name)
                .is_ok_and(|n| n.in_pool_member(objects.clone()).extra_of(&c.name).is_some())
        };
        let only_extras_stopped = p.status.eq_ignore_ascii_case("degraded")
            && state(Role::Workspace).as_deref() == Some("running")
            && state(Role::Agent).as_deref() == Some("running")
            && p.containers.iter().all(|c| running(c) || extra(c));
        Some(WorkspaceStatus {
            workspace: state(Role::Workspace),
            agent: state(Role::Agent),
            source: p.labels.get(naming::LABEL_SOURCE).cloned(),
            workspace_folder: p.labels.get(naming::LABEL_FOLDER).cloned(),
            name,
            pod: p.name,
            status: if only_extras_stopped { "Running".to_owned() } else { p.status },
            created: p.created,
            ports: p.ports,
        })
    }
}

/// Where `exec` runs: a container, as a user, in a folder.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct ExecPlace {
    pub container: String,
    pub user: Option<String>,
    pub workdir: Option<String>,
    /// devcontainer.json's `remoteEnv`, resolved against the container's environment
    /// (workspace container only; a variable set to null is left out).
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// devcontainer.json's `postAttachCommand` as argv vectors (run by `attach`).
    #[serde(default)]
    pub post_attach: Vec<Vec<String>>,
}

impl ExecPlace {
    pub fn spec(&self, argv: Vec<String>, stdin: bool) -> ExecSpec {
        ExecSpec {
            argv,
            user: self.user.clone(),
            workdir: self.workdir.clone(),
            env: self.env.clone(),
            stdin,
            tty: false,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExecTarget {
    Workspace,
    Agent,
}

impl ExecTarget {
    /// The agent's container when `agent`, else the workspace's.
    pub fn of(agent: bool) -> ExecTarget {
        if agent { ExecTarget::Agent } else { ExecTarget::Workspace }
    }

    fn role(self) -> Role {
        match self {
            ExecTarget::Workspace => Role::Workspace,
            ExecTarget::Agent => Role::Agent,
        }
    }
}

/// Host directory of the opencode binary: `DEVAIPOD_OPENCODE_DIR`, else where
/// `scripts/setup.sh` installs it under the cache directory.
pub fn opencode_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("DEVAIPOD_OPENCODE_DIR") {
        return dir.into();
    }
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|| PathBuf::from("/var/cache"));
    cache.join("devaipod/opencode/node_modules/opencode-linux-x64/bin")
}

impl<E: Engine> Core<E> {
    /// The pod of workspace `name` of this instance, or `NotFound`.
    pub(super) async fn find(&self, name: &str) -> Result<PodInfo, CoreError> {
        let n = self.ws_name(name).map_err(|_| CoreError::NotFound(name.to_owned()))?;
        if self.being_removed(name) || naming::is_pool_key(name) {
            return Err(CoreError::NotFound(name.to_owned()));
        }
        let pods = self
            .engine
            .list_pods(&[(naming::LABEL_INSTANCE, self.instance()), (naming::LABEL_WORKSPACE, n.objects())])
            .await?;
        let mut pod = pods.into_iter().next().ok_or_else(|| CoreError::NotFound(name.to_owned()))?;
        self.overlay(&mut pod);
        Ok(pod)
    }

    /// A workspace's name as a caller gives it: a pool member's key names no workspace.
    fn public_name(&self, name: &str) -> Result<naming::WorkspaceName, CoreError> {
        if naming::is_pool_key(name) {
            return Err(CoreError::NotFound(name.to_owned()));
        }
        self.ws_name(name).map_err(|_| CoreError::NotFound(name.to_owned()))
    }

    /// The host port (on 127.0.0.1) the workspace's pod publishes `container_port` on.
    pub async fn published_port(&self, name: &str, container_port: u16) -> Result<Option<u16>, CoreError> {
        let n = self.public_name(name)?;
        let info = self.engine.inspect_pod(&n.pod()).await?;
        Ok(info.ports.iter().find(|p| p.container_port == container_port).map(|p| p.host_port))
    }

    pub async fn status(&self, name: &str) -> Result<WorkspaceStatus, CoreError> {
        let pod = self.find(name).await?;
        let mut pod = self.engine.inspect_pod(&pod.name).await?;
        self.overlay(&mut pod);
        WorkspaceStatus::from_pod(pod).ok_or_else(|| CoreError::NotFound(name.to_owned()))
    }

    /// The last `lines` lines of a container's output (stdout and stderr), for a page.
    pub async fn logs_tail(&self, name: &str, target: ExecTarget, lines: u32) -> Result<String, CoreError> {
        use futures_util::StreamExt;
        let container = self.public_name(name)?.container(target.role());
        let mut stream = self.engine.logs(&container, false, Some(lines));
        let mut out = Vec::new();
        let collect = async {
            while let Some(chunk) = stream.next().await {
                match chunk? {
                    Output::Stdout(b) | Output::Stderr(b) => out.extend_from_slice(&b),
                }
            }
            Ok::<_, EngineError>(())
        };
        match tokio::time::timeout(Duration::from_secs(5), collect).await {
            Ok(r) => r?,
            Err(_) => out.extend_from_slice(b"\n(log reading timed out)"),
        }
        Ok(String::from_utf8_lossy(&out).into_owned())
    }

    /// Where the workspace's agent serves (its UI and API) and its password: for the
    /// daemon's agent-UI proxy, which injects the password so the browser never sees it.
    pub async fn agent_ui_target(&self, name: &str) -> Result<(String, String), CoreError> {
        let (url, password) = self.agent_endpoint(name, Seat::Owner).await?;
        // The UI names its project directory itself.
        Ok((crate::agent::endpoint::split_directory(&url).0.to_owned(), password))
    }

    /// A client for an agent of the workspace (its owner or a worker), made by the core's
    /// connector, from a fresh lookup (the record and the pod): an error says why the agent
    /// cannot be reached.
    pub(in crate::core) async fn seat_agent(&self, name: &str, seat: Seat) -> Result<Arc<dyn DynAgent>, CoreError> {
        let (url, password) = self.agent_endpoint(name, seat).await?;
        Ok(self.agents.connect(&url, &password))
    }

    /// A client for an agent of the workspace at its last known endpoint without asking
    /// podman (`true`), else from a lookup (`false`). A caller given a remembered one
    /// proves it with a call, and on failure forgets it ([`Core::forget_agent`]) and looks
    /// up again.
    pub(in crate::core) async fn remembered_agent(
        &self,
        name: &str,
        seat: Seat,
    ) -> Result<(Arc<dyn DynAgent>, bool), CoreError> {
        let known = self.agent_at.get(&seat.key(name)).map(|e| e.value().clone());
        match known {
            Some((url, password)) => Ok((self.agents.connect(&url, &password), true)),
            None => Ok((self.seat_agent(name, seat).await?, false)),
        }
    }

    /// The endpoint of an agent's API socket as the daemon reaches it (with the project
    /// directory of an agent started elsewhere: see `pool.rs`).
    pub(in crate::core) fn agent_url(&self, name: &str, seat: Seat) -> String {
        let socket = crate::agent::endpoint::unix(&self.paths.agent_socket(&seat.key(name)));
        crate::agent::endpoint::in_directory(&socket, self.agent_directory(name, seat).as_deref())
    }

    /// Forgets the remembered endpoint of a workspace's agent (stopped, started, deleted,
    /// or not answering there), and of its workers.
    pub(in crate::core) fn forget_agent(&self, name: &str) {
        self.agent_at.retain(|k, _| Seat::from_key(k).0 != name);
    }

    /// The endpoint of an agent's API (its API socket) and its password, when its
    /// container runs: the record and the pod (inspected by its name, its labels checked:
    /// one engine call) are read at once. Remembered for [`Core::remembered_agent`].
    async fn agent_endpoint(&self, name: &str, seat: Seat) -> Result<(String, String), CoreError> {
        let n = self.ws_name(name).map_err(|_| CoreError::NotFound(name.to_owned()))?;
        let pod = n.pod();
        let key = seat.key(name);
        let (record, info) = tokio::join!(self.store.workspace(name), self.engine.inspect_pod(&pod));
        let record = record?.ok_or_else(|| CoreError::NotFound(name.to_owned()))?;
        let ours = |i: &PodInfo| {
            i.labels.get(naming::LABEL_INSTANCE).map(String::as_str) == Some(self.instance())
                && i.labels.get(naming::LABEL_WORKSPACE).map(String::as_str) == Some(name)
        };
        let info = info.map(|mut i| {
            self.overlay(&mut i);
            i
        });
        let info = match info {
            Ok(i) if ours(&i) && !self.being_removed(name) => i,
            Ok(_) | Err(EngineError::NotFound { .. }) => {
                self.forget_agent(name);
                return Err(CoreError::PodGone(name.to_owned()));
            }
            Err(e) => return Err(e.into()),
        };
        let running = info.containers.iter().any(|c| seat.is(c, &n) && c.state.eq_ignore_ascii_case("running"));
        let Some(url) = Some(self.agent_url(name, seat)).filter(|_| running) else {
            self.agent_at.remove(&key);
            return Err(CoreError::NotRunning {
                name: name.to_owned(),
                role: seat.role(),
                status: info.status.clone(),
            });
        };
        self.agent_at.insert(key, (url.clone(), record.agent_password.clone()));
        Ok((url, record.agent_password))
    }

    pub async fn stop(&self, name: &str) -> Result<(), CoreError> {
        let pod = self.find(name).await?;
        self.forget_agent(name);
        let r = self.engine.stop_pod(&pod.name, 5).await;
        self.changed().await;
        Ok(r?)
    }

    /// Starts a stopped workspace and waits for its agent.
    pub async fn start(&self, name: &str) -> Result<(), CoreError> {
        let pod = self.find(name).await?;
        self.forget_agent(name);
        self.ensure_agent_dir(name)?;
        // Its workers and candidates start with the pod: their mounts need their
        // directories too (gone after a reboot).
        if let Ok(n) = self.ws_name(name) {
            for c in &pod.containers {
                if let Some((kind, w)) = n.extra_of(&c.name) {
                    let seat = match kind {
                        crate::pods::naming::Extra::Worker => Seat::Worker(w),
                        crate::pods::naming::Extra::Candidate => Seat::Candidate(w),
                    };
                    let key = seat.key(name);
                    self.ensure_agent_dir(&key)?;
                    if let Some(endpoints) = self.endpoints() {
                        endpoints.open(&key)?;
                    }
                }
            }
        }
        let r = self.engine.start_pod(&pod.name).await;
        self.changed().await;
        r?;
        let record = self.store.workspace(name).await?.ok_or_else(|| CoreError::NotFound(name.to_owned()))?;
        self.wait_for_agent(name, Seat::Owner, &pod.name, &record.agent_password).await
    }

    /// Deletes a workspace: its running tasks are cancelled, its record goes (unless
    /// `keep_volumes`), and its pod, containers, secrets, built image and (unless
    /// `keep_volumes`) volumes are removed in the background, recorded durably first
    /// (`removal.rs`); it is hidden from then on. Only objects labelled with this instance
    /// and this workspace are touched. The daemon's repository stays: the workspace's
    /// proposals remain readable.
    pub async fn delete(self: &Arc<Self>, name: &str, keep_volumes: bool) -> Result<(), CoreError> {
        self.public_name(name)?;
        let volumes = async {
            if keep_volumes {
                return Ok(Vec::new());
            }
            let objects = self.ws_name(name).map(|n| n.objects().to_owned()).unwrap_or_else(|_| name.to_owned());
            self.engine
                .list_volumes(&[(naming::LABEL_INSTANCE, self.instance()), (naming::LABEL_WORKSPACE, &objects)])
                .await
        };
        let (pod, volumes, record) = tokio::join!(self.find(name), volumes, self.store.workspace(name));
        let (volumes, record) = (volumes?, record?);
        // Images built for compose services, as the pod's label names them.
        let service_images: Vec<String> = match &pod {
            Ok(p) => p
                .labels
                .get(naming::LABEL_SERVICE_IMAGES)
                .map(|l| l.split(',').filter(|s| !s.is_empty()).map(str::to_owned).collect())
                .unwrap_or_default(),
            Err(_) => Vec::new(),
        };
        let pod = match pod {
            Ok(p) => Some(p.name),
            Err(CoreError::NotFound(_)) if !self.being_removed(name) && (!volumes.is_empty() || record.is_some()) => {
                None
            }
            Err(e) => return Err(e),
        };
        self.forget_agent(name);
        self.forget_llm_key(name);
        for t in self.store.tasks(Some(name)).await? {
            if let Some(token) = self.running.get(&t.id) {
                token.cancel();
            }
        }
        let (secrets, image) = match self.ws_name(name) {
            Ok(n) => (
                vec![format!("{}-agent-password", n.pod()), plan::llm_key_secret(&n)],
                Some(plan::build_tag(self.instance(), &n)),
            ),
            Err(_) => (Vec::new(), None),
        };
        let removal =
            removal::Removal { workspace: name.to_owned(), pod, volumes, secrets, image, images: service_images };
        self.remove_later(removal).await?;
        self.changed().await;
        if let Some(endpoints) = self.endpoints() {
            endpoints.close(name);
        }
        self.close_agent_dir(name);
        // A workspace in a former pool member: the member's directories go, and its binding
        // (kept with its volumes: they are named after the member).
        if !keep_volumes && let Some(key) = self.unbind(name) {
            for root in ["agent", "gator"] {
                let _ = std::fs::remove_dir_all(self.paths.runtime.join(root).join(key.as_str()));
            }
            self.store.unbind(name).await?;
        }
        let _ = tokio::fs::remove_file(self.paths.agent_plan(name)).await;
        let _ = tokio::fs::remove_file(self.paths.kube_plan(name)).await;
        if !keep_volumes {
            self.store.delete_workspace(name).await?;
        }
        self.publish(BusEvent {
            seq: 0,
            workspace: name.to_owned(),
            task_id: None,
            kind: "workspace".into(),
            message: "deleted".into(),
            state: None,
        });
        Ok(())
    }
}

pub(super) fn random_hex(bytes: usize) -> String {
    use rand::RngCore;
    let mut buf = vec![0u8; bytes];
    rand::rng().fill_bytes(&mut buf);
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pods::engine::ContainerInfo;

    fn pod(status: &str, containers: &[(&str, Option<Role>, &str)]) -> PodInfo {
        PodInfo {
            name: "devaipod-hi".into(),
            status: status.into(),
            created: String::new(),
            labels: [(naming::LABEL_WORKSPACE.to_owned(), "hi".to_owned())].into(),
            containers: containers
                .iter()
                .map(|(n, role, state)| ContainerInfo { name: (*n).into(), role: *role, state: (*state).into() })
                .collect(),
            ports: Vec::new(),
        }
    }

    #[test]
    fn stopped_workers_and_candidates_do_not_make_a_running_workspace_degraded() {
        let base = [
            ("devaipod-hi-workspace", Some(Role::Workspace), "running"),
            ("devaipod-hi-agent", Some(Role::Agent), "running"),
            ("devaipod-hi-infra", None, "running"),
        ];
        let with = |extra: &[(&'static str, Option<Role>, &'static str)]| {
            let mut all = base.to_vec();
            all.extend_from_slice(extra);
            all
        };
        let idle = with(&[("devaipod-hi-candidate-2", None, "exited"), ("devaipod-hi-worker-1", None, "exited")]);
        assert_eq!(WorkspaceStatus::from_pod(pod("Degraded", &idle)).unwrap().status, "Running");
        // Anything else stopped is what podman says.
        let mut agent_down = idle.clone();
        agent_down[1].2 = "exited";
        assert_eq!(WorkspaceStatus::from_pod(pod("Degraded", &agent_down)).unwrap().status, "Degraded");
        let stranger = with(&[("devaipod-hi-sidecar", None, "exited")]);
        assert_eq!(WorkspaceStatus::from_pod(pod("Degraded", &stranger)).unwrap().status, "Degraded");
        assert_eq!(WorkspaceStatus::from_pod(pod("Exited", &base)).unwrap().status, "Exited");
    }
}
