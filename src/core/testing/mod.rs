//! Test support for core: a fake [`Engine`](crate::pods::Engine) (`engine.rs`), a fake
//! agent (`agent.rs`) and a [`World`] that puts them behind a real `Core` with a real store
//! and a real source repository, so that policy is tested where it lives, in milliseconds.
//! Real-podman tests (`tests/`) then prove the wiring.

pub mod agent;
pub mod engine;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub use agent::{FakeAgent, Turn};
pub use engine::{FakeEngine, Op};
use tokio::sync::broadcast;

use super::{BusEvent, Core, Created, Paths, Progress, UpOutcome, UpRequest};
use crate::config::Config;
use crate::pods::naming::{Role, WorkspaceName};
use crate::store::{Store, Task, TaskEvent, TaskState};

/// The workspace every world's `up` makes.
pub const WS: &str = "ws";

/// A core over the fakes, a store in a temporary directory, and a source repository with
/// one commit and a devcontainer.json that builds its image.
pub struct World {
    pub core: Arc<Core<FakeEngine>>,
    pub engine: FakeEngine,
    pub agent: FakeAgent,
    /// The source repository (`…/r`, so the repository's folder is `/workspaces/r`).
    pub source: PathBuf,
    config: Config,
    dir: tempfile::TempDir,
}

impl World {
    pub async fn new() -> World {
        World::with_config(|_| {}).await
    }

    pub async fn with_config(change: impl FnOnce(&mut Config)) -> World {
        let dir = tempfile::Builder::new().prefix("devaipod-core-test-").tempdir_in(scratch()).expect("a directory");
        let mut config = Config::default();
        config.agent.ready_timeout_secs = 5;
        change(&mut config);
        let opencode = dir.path().join("opencode");
        std::fs::create_dir_all(&opencode).expect("the opencode directory");
        std::fs::write(opencode.join("opencode"), "").expect("a stand-in opencode binary");
        let source = dir.path().join("r");
        std::fs::create_dir_all(source.join(".devcontainer")).expect("the source repository");
        std::fs::write(source.join("README.md"), "hello\n").expect("README.md");
        std::fs::write(
            source.join(".devcontainer/devcontainer.json"),
            r#"{ "build": { "dockerfile": "Containerfile" } }"#,
        )
        .expect("devcontainer.json");
        std::fs::write(source.join(".devcontainer/Containerfile"), "FROM scratch\n").expect("Containerfile");
        git(&source, &["init", "-q", "-b", "main"]);
        git(&source, &["add", "-A"]);
        git(&source, &["commit", "-q", "-m", "first"]);
        let engine = FakeEngine::new();
        let agent = FakeAgent::new(engine.clone(), WS);
        let core = make_core(&config, &engine, &agent, dir.path());
        World { core, engine, agent, source, config, dir }
    }

    /// A new core over the same store file, engine and agent: the daemon after a restart.
    pub fn restart(&self) -> Arc<Core<FakeEngine>> {
        make_core(&self.config, &self.engine, &self.agent, self.dir.path())
    }

    /// What `up` of the source as workspace [`WS`] asks.
    pub fn request(&self) -> UpRequest {
        UpRequest {
            source: self.source.to_string_lossy().into_owned(),
            name: Some(WS.to_owned()),
            env: Some(Default::default()),
            ..Default::default()
        }
    }

    /// `up` of [`WS`], which must succeed.
    pub async fn up(&self) -> Created {
        match self.core.up(&self.request(), &Steps::default()).await {
            Ok(UpOutcome::Created(c)) => *c,
            Ok(UpOutcome::Planned(_)) => panic!("up planned only"),
            Err(e) => panic!("up failed: {e}"),
        }
    }

    /// The agent's clone on the host.
    pub fn agent_clone(&self) -> PathBuf {
        self.engine.workdir(&container(Role::Agent)).expect("the agent's container")
    }

    /// The human's repository on the host.
    pub fn workspace_clone(&self) -> PathBuf {
        self.engine.workdir(&container(Role::Workspace)).expect("the workspace container")
    }

    /// The daemon's bare repository of [`WS`].
    pub fn bare_repo(&self) -> PathBuf {
        paths(self.dir.path()).repo(WS)
    }
}

/// Where worlds keep their files: in memory (tmpfs) where there is one, which halves the
/// time git and SQLite take here.
pub fn scratch() -> PathBuf {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() { shm.to_owned() } else { std::env::temp_dir() }
}

fn paths(dir: &Path) -> Paths {
    Paths { data: dir.join("data"), runtime: dir.join("run") }
}

/// A core over the fakes with its store in `dir` (opened anew each time, as a daemon does).
fn make_core(config: &Config, engine: &FakeEngine, agent: &FakeAgent, dir: &Path) -> Arc<Core<FakeEngine>> {
    let paths = paths(dir);
    let store = Store::open(&paths.db()).expect("the store");
    let mut core = Core::with_agents(config.clone(), engine.clone(), store, paths, Arc::new(agent.clone()));
    Arc::get_mut(&mut core).expect("a core nobody else holds yet").opencode_dir = dir.join("opencode");
    core
}

/// The name of [`WS`]'s container of `role`.
pub fn container(role: Role) -> String {
    WorkspaceName::new(WS).expect("a valid name").container(role)
}

/// The name of [`WS`]'s pod.
pub fn pod() -> String {
    WorkspaceName::new(WS).expect("a valid name").pod()
}

/// Waits until `cond` holds; panics after 10 s.
pub async fn until(cond: impl Fn() -> bool) {
    let wait = async {
        while !cond() {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(10), wait).await.expect("the condition within 10 s");
}

/// Runs git in `dir` (test setup and checks); returns its trimmed stdout.
pub fn git(dir: &Path, args: &[&str]) -> String {
    let out = std::process::Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["-c", "user.name=t", "-c", "user.email=t@example.invalid", "-c", "commit.gpgSign=false"])
        .args(["-c", "maintenance.auto=false"])
        .args(args)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .output()
        .expect("git");
    assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// The steps `up` reported.
#[derive(Default)]
pub struct Steps(Mutex<Vec<String>>);

impl Steps {
    pub fn all(&self) -> Vec<String> {
        self.0.lock().map(|s| s.clone()).unwrap_or_default()
    }
}

impl Progress for Steps {
    fn step(&self, message: &str) {
        if let Ok(mut s) = self.0.lock() {
            s.push(message.to_owned());
        }
    }

    fn detail(&self, _line: &str) {}
}

/// Waits until the task satisfies `done` (woken by the bus, with a poll as a fallback);
/// panics after 10 s of (tokio's) time.
pub async fn wait_task(core: &Core<FakeEngine>, id: &str, done: impl Fn(&Task) -> bool) -> Task {
    let mut bus = core.subscribe();
    let wait = async {
        loop {
            let task = core.store.task(id).await.expect("the store").expect("the task");
            if done(&task) {
                return task;
            }
            tokio::select! {
                _ = bus.recv() => {}
                _ = tokio::time::sleep(Duration::from_millis(10)) => {}
            }
        }
    };
    match tokio::time::timeout(Duration::from_secs(10), wait).await {
        Ok(task) => task,
        Err(_) => panic!("task {id} did not get there: {:?}", core.store.task(id).await),
    }
}

/// Waits until the task has ended.
pub async fn wait_end(core: &Core<FakeEngine>, id: &str) -> Task {
    wait_task(core, id, |t| t.state.is_final()).await
}

/// The sequence numbers of `task`'s events on the bus, up to its final state.
pub async fn published(bus: &mut broadcast::Receiver<BusEvent>, task: &str) -> Vec<i64> {
    let mut seqs = Vec::new();
    loop {
        let ev = match tokio::time::timeout(Duration::from_secs(10), bus.recv()).await {
            Ok(Ok(ev)) => ev,
            other => panic!("no final state of {task} on the bus (after {seqs:?}): {other:?}"),
        };
        if ev.task_id.as_deref() != Some(task) {
            continue;
        }
        seqs.push(ev.seq);
        if ev.state.as_deref().and_then(TaskState::parse).is_some_and(TaskState::is_final) {
            return seqs;
        }
    }
}

/// The stored events' keys, in order.
pub fn keys(events: &[TaskEvent]) -> Vec<&str> {
    events.iter().map(|e| e.key.as_str()).collect()
}

/// A daemon whose runtime ends at a point of the test's choosing, as a killed process
/// does; the store, the engine and the agent (which plays on the test's runtime) live on.
pub struct Doomed(Option<tokio::runtime::Runtime>);

impl Doomed {
    pub fn new() -> Doomed {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build();
        Doomed(Some(rt.expect("a runtime")))
    }

    /// Runs `f` on this runtime (what it spawns runs there too) and returns its output.
    pub async fn run<T: Send + 'static>(&self, f: impl std::future::Future<Output = T> + Send + 'static) -> T {
        let rt = self.0.as_ref().expect("a runtime not killed yet");
        rt.spawn(f).await.expect("the daemon's call")
    }

    /// Starts a task in `core`, driven on this runtime.
    pub async fn run_task(&self, core: &Arc<Core<FakeEngine>>, prompt: &str) -> String {
        let (core, prompt) = (core.clone(), prompt.to_owned());
        self.run(async move { core.run_task(WS, &prompt).await }).await.expect("the task starts").id
    }

    /// The daemon dies: everything it spawned stops where it is.
    pub fn kill(self) {}
}

impl Drop for Doomed {
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}
