//! The service layer: workspaces, tasks and proposals, the event bus, and the doctor. The
//! only place with policy; adapters (`cli`, `web`, later `mcp`) call it and serialize what
//! it returns.
//!
//! `Core` is shared (`Arc`) between the daemon's request handlers and the task drivers it
//! spawns; the store is the single writer of state.

pub mod doctor;
mod egress;
mod error;
mod fanout;
mod gator;
pub mod kube;
mod lifecycle;
mod pool;
mod proposals;
pub mod source;
mod tasks;
#[cfg(test)]
pub(crate) mod testing;
#[cfg(test)]
mod tests;
mod workers;
mod workspaces;

use std::path::PathBuf;
use std::sync::Arc;

use serde::Serialize;
use tokio::sync::broadcast;

pub use egress::{EgressView, LlmUpstream, parse_host_patterns};
pub use error::CoreError;
pub use fanout::{CandidateView, SetRejected, SetRequest, SetView};
pub use gator::{PodEndpoints, ScopeView};
pub use pool::{PoolImage, PoolMemberView, PoolView};

/// How a daemon that finds the instance's lock taken begins its error (a client that
/// started it waits for the other one instead).
pub const ANOTHER_DAEMON: &str = "another devaipod daemon runs for instance";

/// A random 256-bit token, hex.
pub fn random_token() -> String {
    workspaces::random_hex(32)
}
pub use proposals::{ApproveAction, ProposalDetail, ProposalPage, ProposalQuery, ProposalSummary, Rejected};
pub use tasks::{TaskDetail, TaskQuery};
pub use workers::{Accepted, DiffPage, MAX_DIFF_CHARS, MAX_WAIT_SECS, Seat, WorkerTaskSummary, WorkerTaskView};
pub use workspaces::{
    CallerEnv, Created, Done, ExecPlace, ExecTarget, Progress, UpOutcome, UpRequest, WorkspaceStatus, opencode_dir,
};

use crate::agent::{AgentConnector, OpencodeConnector};
use crate::config::Config;
use crate::store::Store;

/// A podman secret's value for the daemon's own use (the GitHub token, an LLM key), read
/// through `engine` into `<runtime>/secrets` (made 0700 first), trimmed.
pub(crate) async fn read_secret<E: crate::pods::Engine>(
    engine: &E,
    config: &Config,
    paths: &Paths,
    secret: &str,
) -> Result<String, CoreError> {
    let scratch = paths.runtime.join("secrets");
    tokio::fs::create_dir_all(&scratch)
        .await
        .and(tokio::fs::set_permissions(&scratch, std::os::unix::fs::PermissionsExt::from_mode(0o700)).await)
        .map_err(|e| CoreError::Io(format!("secret scratch directory {}: {e}", scratch.display())))?;
    let value = engine.secret_value(secret, &config.default_image, &scratch, config.instance.as_str()).await?;
    Ok(value.trim().to_owned())
}

/// One event on the bus: a task's progress or state, a proposal, a workspace change.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct BusEvent {
    /// The task event's sequence number in the store (0 for events not stored).
    pub seq: i64,
    pub workspace: String,
    pub task_id: Option<String>,
    pub kind: String,
    pub message: String,
    /// The task's state after this event, for state changes.
    pub state: Option<String>,
}

impl BusEvent {
    /// The bus form of a stored task event; a state change (`state:<state>` key) carries its state.
    pub fn stored(ev: crate::store::TaskEvent, workspace: &str) -> BusEvent {
        BusEvent {
            seq: ev.seq,
            workspace: workspace.to_owned(),
            state: state_of_key(&ev.key).map(str::to_owned),
            task_id: Some(ev.task_id),
            kind: ev.kind,
            message: ev.message,
        }
    }
}

/// The state a stored task event's key records: `state:<state>`, or `state:<state>:<n>` when
/// the task entered it again.
fn state_of_key(key: &str) -> Option<&str> {
    key.strip_prefix("state:").map(|s| s.split(':').next().unwrap_or(s))
}

/// Where an instance keeps its files.
#[derive(Debug, Clone)]
pub struct Paths {
    /// `state.db`, `token`, `repos/`: `$DEVAIPOD_DATA_DIR`, else `$XDG_DATA_HOME/devaipod/<instance>`.
    pub data: PathBuf,
    /// `api.sock`, `daemon.pid`: `$DEVAIPOD_RUNTIME_DIR`, else `$XDG_RUNTIME_DIR/devaipod/<instance>`
    /// (`/run/devaipod/<instance>` for root).
    pub runtime: PathBuf,
}

impl Paths {
    /// This process's directories for `instance` (see [`crate::pods::socket::Host::runtime_dir`]);
    /// `Err` says what to do when a non-root user has no runtime directory.
    pub fn for_instance(instance: &str) -> Result<Paths, String> {
        let env_dir = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty()).map(PathBuf::from);
        let home = env_dir("HOME").unwrap_or_else(|| PathBuf::from("/root"));
        let data = env_dir("DEVAIPOD_DATA_DIR").unwrap_or_else(|| {
            env_dir("XDG_DATA_HOME").unwrap_or_else(|| home.join(".local/share")).join("devaipod").join(instance)
        });
        let runtime = crate::pods::socket::Host::current().runtime_dir(env_dir("DEVAIPOD_RUNTIME_DIR"), instance)?;
        Ok(Paths { data, runtime })
    }

    /// Creates the data and runtime directories (0700), refusing one that exists and belongs
    /// to someone else.
    pub fn create(&self) -> Result<(), String> {
        private_dir(&self.data)?;
        private_dir(&self.runtime)
    }

    pub fn db(&self) -> PathBuf {
        self.data.join("state.db")
    }

    pub fn token(&self) -> PathBuf {
        self.data.join("token")
    }

    /// The directory of a workspace's gator and egress sockets (served by the daemon,
    /// mounted read-only into its agent container only).
    pub fn pod_sockets(&self, workspace: &str) -> PathBuf {
        self.runtime.join("gator").join(workspace)
    }

    /// The directory the agent's relay serves its API socket in (mounted read-write into
    /// that agent container only: what is in it is the agent's).
    pub fn agent_dir(&self, workspace: &str) -> PathBuf {
        self.runtime.join("agent").join(workspace)
    }

    /// The agent's API socket, as the daemon reaches it.
    pub fn agent_socket(&self, workspace: &str) -> PathBuf {
        self.agent_dir(workspace).join(crate::pods::plan::AGENT_API_SOCKET)
    }

    /// The plan of a workspace's agent container, kept for making its workers.
    pub fn agent_plan(&self, workspace: &str) -> PathBuf {
        self.data.join("agents").join(format!("{workspace}.json"))
    }

    /// What `devaipod kube` renders of a workspace, kept at `up`.
    pub fn kube_plan(&self, workspace: &str) -> PathBuf {
        self.data.join("kube").join(format!("{workspace}.json"))
    }

    /// The seccomp profile of agent containers (podman's default without user namespaces).
    pub fn agent_seccomp(&self) -> PathBuf {
        self.data.join("seccomp-agent.json")
    }

    pub fn repo(&self, workspace: &str) -> PathBuf {
        self.data.join("repos").join(format!("{workspace}.git"))
    }

    /// Records of workspaces whose objects are being removed (see `workspaces/removal.rs`).
    pub fn removals(&self) -> PathBuf {
        self.data.join("removals")
    }

    pub fn socket(&self) -> PathBuf {
        self.runtime.join("api.sock")
    }

    pub fn pid_file(&self) -> PathBuf {
        self.runtime.join("daemon.pid")
    }

    /// Held by the running daemon (one per instance); free once it has exited.
    pub fn lock_file(&self) -> PathBuf {
        self.runtime.join("daemon.lock")
    }
}

/// Creates `dir` (and its parents) and makes it 0700; one that exists must be a directory
/// of this user's (another's could be read or replaced by its owner).
pub fn private_dir(dir: &std::path::Path) -> Result<(), String> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let meta = std::fs::symlink_metadata(dir).map_err(|e| format!("cannot read {}: {e}", dir.display()))?;
    owned_dir(dir, meta.is_dir(), meta.uid(), crate::pods::socket::euid())?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .map_err(|e| format!("cannot make {} private (0700): {e}", dir.display()))
}

/// The rule of [`private_dir`]: a directory (not a link to one) whose owner is `me`.
fn owned_dir(dir: &std::path::Path, is_dir: bool, owner: u32, me: u32) -> Result<(), String> {
    if !is_dir {
        return Err(format!("{} is not a directory (a link or a file is in its place): remove it", dir.display()));
    }
    if owner != me {
        return Err(format!(
            "{} belongs to uid {owner}, not to you (uid {me}): refusing to keep devaipod's state there; remove it or choose another directory (DEVAIPOD_DATA_DIR, DEVAIPOD_RUNTIME_DIR)",
            dir.display()
        ));
    }
    Ok(())
}

pub struct Core<E> {
    pub config: Config,
    pub engine: E,
    store: Store,
    pub paths: Paths,
    pub opencode_dir: PathBuf,
    /// Makes the client of a workspace's agent (opencode; a fake in core's tests).
    agents: Arc<dyn AgentConnector>,
    bus: broadcast::Sender<BusEvent>,
    /// Workspaces whose objects are removed in the background, by name: the receiver turns
    /// `true` when the removal is over. They are hidden meanwhile.
    removing: dashmap::DashMap<String, tokio::sync::watch::Receiver<bool>>,
    /// The last known endpoint (URL, password) of each workspace's agent, so that a task
    /// starts without asking podman (the agent's answer proves it; see `remembered_agent`).
    agent_at: dashmap::DashMap<String, (String, String)>,
    /// Cancellation handles of the tasks being driven, by task id.
    running: dashmap::DashMap<String, tokio_util::sync::CancellationToken>,
    /// Approvals run one at a time, so that an action is never done twice.
    approve_lock: tokio::sync::Mutex<()>,
    /// The last workspace listing and when it was made (see `Core::list`).
    list_cache: std::sync::Mutex<Option<(std::time::Instant, Vec<WorkspaceStatus>)>>,
    /// One engine listing at a time; concurrent callers share its result.
    list_call: tokio::sync::Mutex<()>,
    /// Bumped by every change made here: a listing begun before it is not cached.
    list_generation: std::sync::atomic::AtomicU64,
    /// A background refresh of the listing is under way (see `Core::list_for_page`).
    list_refreshing: std::sync::atomic::AtomicBool,
    /// Gator's per-pod endpoints, set by the daemon (absent: pods get no gator).
    endpoints: std::sync::OnceLock<Arc<dyn PodEndpoints>>,
    /// Serializes bringing work out of each workspace's sandbox.
    bring_out_locks: dashmap::DashMap<String, Arc<tokio::sync::Mutex<()>>>,
    /// The HTTP client for GitHub (connections reused).
    github_http: reqwest::Client,
    /// The GitHub token read from a podman secret, once (and when the last try failed).
    github_secret: tokio::sync::Mutex<(Option<String>, Option<std::time::Instant>)>,
    /// When each workspace's agent last reached its LLM (see `Core::llm_gate`).
    llm_gates: dashmap::DashMap<String, std::time::Instant>,
    /// Each workspace's LLM key once read, or that it has none (see `Core::llm_upstream`).
    /// Never logged.
    llm_keys: dashmap::DashMap<String, Option<String>>,
    /// When reading a workspace's LLM key last failed, and why (retried after a minute).
    llm_key_failures: dashmap::DashMap<String, (std::time::Instant, String)>,
    /// The drivers of proposal sets, by set id (cancelled when the set is decided).
    set_drivers: dashmap::DashMap<String, tokio_util::sync::CancellationToken>,
    /// Sets given a new round while their driver was ending: it looks again.
    set_again: dashmap::DashSet<String>,
    /// `[fanout] max-parallel`: one permit per candidate container running.
    fanout_slots: Arc<tokio::sync::Semaphore>,
    /// The warm pool: workspaces bound to former members, the keeper's progress.
    pool: pool::PoolState,
}

impl<E: crate::pods::Engine> Core<E> {
    /// A core whose workspaces' agents are opencode.
    pub fn new(config: Config, engine: E, store: Store, paths: Paths) -> Arc<Self> {
        Self::with_agents(config, engine, store, paths, Arc::new(OpencodeConnector::new()))
    }

    /// A core that reaches workspaces' agents through `agents`.
    pub fn with_agents(
        config: Config,
        engine: E,
        store: Store,
        paths: Paths,
        agents: Arc<dyn AgentConnector>,
    ) -> Arc<Self> {
        let (bus, _) = broadcast::channel(1024);
        let slots = usize::from(config.fanout.max_parallel.max(1));
        Arc::new(Core {
            config,
            engine,
            store,
            paths,
            opencode_dir: opencode_dir(),
            agents,
            bus,
            removing: dashmap::DashMap::new(),
            agent_at: dashmap::DashMap::new(),
            running: dashmap::DashMap::new(),
            approve_lock: tokio::sync::Mutex::new(()),
            list_cache: std::sync::Mutex::new(None),
            list_call: tokio::sync::Mutex::new(()),
            list_generation: std::sync::atomic::AtomicU64::new(0),
            list_refreshing: std::sync::atomic::AtomicBool::new(false),
            endpoints: std::sync::OnceLock::new(),
            bring_out_locks: dashmap::DashMap::new(),
            github_http: crate::github::client::http_client(),
            github_secret: tokio::sync::Mutex::new((None, None)),
            llm_gates: dashmap::DashMap::new(),
            llm_keys: dashmap::DashMap::new(),
            llm_key_failures: dashmap::DashMap::new(),
            set_drivers: dashmap::DashMap::new(),
            set_again: dashmap::DashSet::new(),
            fanout_slots: Arc::new(tokio::sync::Semaphore::new(slots)),
            pool: pool::PoolState::default(),
        })
    }

    pub fn instance(&self) -> &str {
        self.config.instance.as_str()
    }

    /// The login-session table, for the web's authentication (the rest of the store is
    /// reached only through `Core`'s methods).
    pub fn sessions(&self) -> crate::store::Sessions {
        self.store.sessions()
    }

    /// The names of the workspaces in the store.
    pub async fn workspace_names(&self) -> Result<Vec<String>, CoreError> {
        Ok(self.store.workspace_names().await?)
    }

    pub fn subscribe(&self) -> broadcast::Receiver<BusEvent> {
        self.bus.subscribe()
    }

    fn publish(&self, event: BusEvent) {
        // No subscribers is fine.
        let _ = self.bus.send(event);
    }
}

#[cfg(test)]
mod paths_tests {
    use super::*;

    #[test]
    fn a_state_directory_must_be_the_users_own_directory() {
        let d = std::path::Path::new("/run/user/1000/devaipod/work");
        assert_eq!(owned_dir(d, true, 1000, 1000), Ok(()));
        let e = owned_dir(d, true, 0, 1000).unwrap_err();
        assert!(e.starts_with("/run/user/1000/devaipod/work belongs to uid 0, not to you (uid 1000): refusing"), "{e}");
        let e = owned_dir(d, false, 1000, 1000).unwrap_err();
        assert!(e.contains("is not a directory"), "{e}");
    }

    #[test]
    fn state_directories_are_created_private_and_a_foreign_one_is_refused() {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let tmp = tempfile::tempdir().unwrap();
        let paths = Paths { data: tmp.path().join("data/x"), runtime: tmp.path().join("run/x") };
        std::fs::create_dir_all(&paths.data).unwrap();
        std::fs::set_permissions(&paths.data, std::fs::Permissions::from_mode(0o755)).unwrap();
        paths.create().unwrap();
        for d in [&paths.data, &paths.runtime] {
            assert_eq!(std::fs::metadata(d).unwrap().mode() & 0o7777, 0o700, "{}", d.display());
        }
        let link = tmp.path().join("link");
        std::os::unix::fs::symlink(&paths.data, &link).unwrap();
        assert!(private_dir(&link).unwrap_err().contains("is not a directory"));
        if crate::pods::socket::is_root() {
            // Only root can give a directory away.
            let foreign = tmp.path().join("foreign");
            std::fs::create_dir(&foreign).unwrap();
            std::os::unix::fs::chown(&foreign, Some(4321), None).unwrap();
            let e = private_dir(&foreign).unwrap_err();
            assert!(e.contains("belongs to uid 4321, not to you (uid 0)"), "{e}");
        }
    }
}
