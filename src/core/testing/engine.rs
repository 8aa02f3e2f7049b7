//! An in-memory [`Engine`]: pods, containers, volumes, secrets and images in maps, with
//! podman's rules where core depends on them (a volume in use cannot be removed, a
//! command runs only in a running container, names are unique). Commands run for real on
//! the host: each container has a root directory, its paths map below it (argv
//! arguments included), so that git in the "sandbox" really commits and bundles.
//! A test makes the next call of an operation fail with [`FakeEngine::fail_next`], or its
//! calls wait until released with [`FakeEngine::hold`].

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::stream::BoxStream;

use crate::pods::engine::{
    ContainerInfo, ContainerState, EngineInfo, ExecRun, ExecSession, ExecSpec, HelperOutput, HelperRun, Output,
    PodInfo, PublishedPort, STDERR_KEPT,
};
use crate::pods::plan::{BuildPlan, ContainerPlan, MountPlan, PodSpec, SecretPlan, VolumePlan};
use crate::pods::{Engine, EngineError};

/// An engine operation a test can make fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Op {
    Ping,
    PullImage,
    BuildImage,
    CreateSecret,
    CreateVolume,
    CreatePod,
    CreateContainer,
    StartPod,
    UploadArchive,
    Exec,
    /// A streamed exec ([`Engine::exec_to`]), held before its command starts (a slow
    /// command). Its failures are [`Op::Exec`]'s.
    ExecTo,
    /// A streamed exec, held after its command ended and its output was written, before
    /// the caller hears of it.
    ExecToEnd,
    RemovePod,
    RemoveVolume,
}

#[derive(Clone)]
pub struct FakeEngine {
    state: Arc<Mutex<State>>,
    /// Wakes calls waiting on a held operation.
    released: Arc<tokio::sync::Notify>,
    /// Holds every container's root directory.
    dir: Arc<tempfile::TempDir>,
}

#[derive(Default)]
struct State {
    pods: BTreeMap<String, Pod>,
    containers: BTreeMap<String, Container>,
    volumes: BTreeMap<String, BTreeMap<String, String>>,
    /// Value and labels, by name.
    secrets: BTreeMap<String, (String, BTreeMap<String, String>)>,
    images: BTreeSet<String>,
    /// Exit codes of finished execs, by id.
    execs: BTreeMap<String, i64>,
    /// Operations whose next call fails.
    fail: BTreeSet<Op>,
    /// Operations whose calls wait until released.
    held: BTreeSet<Op>,
    /// Every call, by operation name, in order.
    calls: Vec<String>,
    /// Containers whose process exits as soon as their pod starts.
    exit_on_start: BTreeSet<String>,
    /// Containers whose process exited that way (exit code 1).
    failed: BTreeSet<String>,
    /// Containers whose process ends at once with 0 when started (a one-shot job).
    finish_on_start: BTreeSet<String>,
    next_id: u32,
}

struct Pod {
    spec: PodSpec,
    ports: Vec<PublishedPort>,
}

struct Container {
    pod: String,
    plan: ContainerPlan,
    state: &'static str,
    root: PathBuf,
}

const RUNNING: &str = "running";

fn injected(op: Op) -> EngineError {
    EngineError::Api {
        engine: crate::pods::engine::PODMAN,
        op: format!("{op:?} (injected)"),
        status: 500,
        message: "injected failure".into(),
    }
}

/// Podman's 404: `op` could not be done, there is no such `what`.
fn not_found(op: &str, what: &str) -> EngineError {
    EngineError::NotFound { engine: crate::pods::engine::PODMAN, op: op.to_owned(), message: format!("no such {what}") }
}

/// Podman's 409: `op` could not be done, for `message`.
fn conflict(op: &str, message: &str) -> EngineError {
    EngineError::Conflict { engine: crate::pods::engine::PODMAN, op: op.to_owned(), message: message.to_owned() }
}

/// Podman saying the object exists already.
fn exists(op: &str, message: &str) -> EngineError {
    EngineError::AlreadyExists { engine: crate::pods::engine::PODMAN, op: op.to_owned(), message: message.to_owned() }
}

impl FakeEngine {
    pub fn new() -> FakeEngine {
        let dir = tempfile::Builder::new()
            .prefix("devaipod-fake-engine-")
            .tempdir_in(super::scratch())
            .expect("a temporary directory");
        FakeEngine { state: Arc::default(), released: Arc::default(), dir: Arc::new(dir) }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records a call of `name`; fails it when a test asked for that.
    fn call(&self, name: &str, op: Option<Op>) -> Result<MutexGuard<'_, State>, EngineError> {
        let mut s = self.state();
        s.calls.push(name.to_owned());
        match op {
            Some(op) if s.fail.remove(&op) => Err(injected(op)),
            _ => Ok(s),
        }
    }

    /// The next call of `op` fails.
    pub fn fail_next(&self, op: Op) {
        self.state().fail.insert(op);
    }

    /// Calls of `op` wait (a slow podman) until [`FakeEngine::release`].
    pub fn hold(&self, op: Op) {
        self.state().held.insert(op);
    }

    pub fn release(&self, op: Op) {
        self.state().held.remove(&op);
        self.released.notify_waiters();
    }

    /// Returns once `op` is not held.
    async fn unless_held(&self, op: Op) {
        loop {
            let released = self.released.notified();
            if !self.state().held.contains(&op) {
                return;
            }
            released.await;
        }
    }

    /// The container's process exits as soon as its pod starts (a broken entrypoint).
    pub fn exit_on_start(&self, container: &str) {
        self.state().exit_on_start.insert(container.to_owned());
    }

    /// The container's process ends with 0 as soon as it starts (a one-shot job that works).
    pub fn finish_on_start(&self, container: &str) {
        self.state().finish_on_start.insert(container.to_owned());
    }

    /// Failures asked for that no call has met yet.
    pub fn pending_failures(&self) -> Vec<Op> {
        self.state().fail.iter().copied().collect()
    }

    /// Every engine call so far, by operation name.
    pub fn calls(&self) -> Vec<String> {
        self.state().calls.clone()
    }

    pub fn pods(&self) -> Vec<String> {
        self.state().pods.keys().cloned().collect()
    }

    pub fn containers(&self) -> Vec<String> {
        self.state().containers.keys().cloned().collect()
    }

    pub fn volumes(&self) -> Vec<String> {
        self.state().volumes.keys().cloned().collect()
    }

    pub fn secrets(&self) -> Vec<String> {
        self.state().secrets.keys().cloned().collect()
    }

    pub fn secret(&self, name: &str) -> Option<String> {
        self.state().secrets.get(name).map(|(value, _)| value.clone())
    }

    pub fn images(&self) -> Vec<String> {
        self.state().images.iter().cloned().collect()
    }

    /// The root directory of every helper container ([`Engine::run_helper`]): a test puts a
    /// stand-in program here.
    pub fn helper_root(&self) -> PathBuf {
        self.dir.path().join("helpers")
    }

    /// The container's state (running, exited, created), if it exists.
    pub fn container_state(&self, name: &str) -> Option<&'static str> {
        self.state().containers.get(name).map(|c| c.state)
    }

    /// The container's process ends (as when it crashes or is killed).
    pub fn stop_container(&self, name: &str) {
        if let Some(c) = self.state().containers.get_mut(name) {
            c.state = "exited";
        }
    }

    /// The host directory bind-mounted at `target` in `container`.
    pub fn bind_source(&self, container: &str, target: &str) -> Option<PathBuf> {
        let s = self.state();
        s.containers.get(container)?.plan.mounts.iter().find_map(|m| match m {
            crate::pods::plan::MountPlan::Bind { source, target: t, .. } if t == target => Some(source.clone()),
            _ => None,
        })
    }

    /// Where a path inside a container is on the host.
    pub fn host_path(&self, container: &str, path: &str) -> Option<PathBuf> {
        let s = self.state();
        Some(below(&s.containers.get(container)?.root, path))
    }

    /// The host directory of the container's working directory (the repository's folder).
    pub fn workdir(&self, container: &str) -> Option<PathBuf> {
        let s = self.state();
        let c = s.containers.get(container)?;
        Some(below(&c.root, &c.plan.workdir))
    }

    fn pod_info(&self, s: &State, name: &str, with_ports: bool) -> Option<PodInfo> {
        let pod = s.pods.get(name)?;
        let containers: Vec<ContainerInfo> = s
            .containers
            .iter()
            .filter(|(_, c)| c.pod == name)
            .map(|(n, c)| ContainerInfo { name: n.clone(), role: Some(c.plan.role), state: c.state.to_owned() })
            .collect();
        let running = containers.iter().filter(|c| c.state == RUNNING).count();
        let status = match running {
            0 if containers.iter().all(|c| c.state == "created") => "Created",
            0 => "Exited",
            n if n == containers.len() => "Running",
            _ => "Degraded",
        };
        Some(PodInfo {
            name: name.to_owned(),
            status: status.to_owned(),
            created: "2026-01-01T00:00:00Z".to_owned(),
            labels: pod.spec.labels.clone(),
            containers,
            ports: if with_ports { pod.ports.clone() } else { Vec::new() },
        })
    }

    fn running_root(&self, container: &str) -> Result<PathBuf, EngineError> {
        let s = self.state();
        let op = format!("run a command in {container}");
        let c = s.containers.get(container).ok_or_else(|| not_found(&op, "container"))?;
        if c.state != RUNNING {
            return Err(conflict(&op, &format!("container state improper ({})", c.state)));
        }
        Ok(c.root.clone())
    }
}

impl Default for FakeEngine {
    fn default() -> Self {
        FakeEngine::new()
    }
}

/// `path` (absolute in the container) below `root` on the host.
fn below(root: &Path, path: &str) -> PathBuf {
    root.join(path.trim_start_matches('/'))
}

/// An argument that names a path inside the container (its first component exists in the
/// container's root) is rewritten to that path on the host.
fn map_arg(root: &Path, arg: &str) -> String {
    let Some(rest) = arg.strip_prefix('/') else { return arg.to_owned() };
    let first = rest.split('/').next().unwrap_or_default();
    if !first.is_empty() && root.join(first).exists() {
        below(root, arg).to_string_lossy().into_owned()
    } else {
        arg.to_owned()
    }
}

/// Runs `argv` on the host below `root` (container paths in it mapped), to its end:
/// (exit code, stdout, stderr); a program that cannot start exits 127, as in a container.
async fn run_below(
    root: &Path,
    argv: &[String],
    workdir: Option<&str>,
    env: &BTreeMap<String, String>,
) -> Result<(i64, Vec<u8>, Vec<u8>), EngineError> {
    let Some((program, args)) = argv.split_first() else {
        return Err(EngineError::Api {
            engine: crate::pods::engine::PODMAN,
            op: "exec".into(),
            status: 400,
            message: "no command".into(),
        });
    };
    let dir = below(root, workdir.unwrap_or("/"));
    let mut cmd = std::process::Command::new(map_arg(root, program));
    cmd.args(args.iter().map(|a| map_arg(root, a)))
        .current_dir(&dir)
        .envs(env)
        .env("HOME", root)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .stdin(std::process::Stdio::null());
    let ran = tokio::task::spawn_blocking(move || {
        std::fs::create_dir_all(&dir)?;
        cmd.output()
    })
    .await
    .map_err(|e| EngineError::Api {
        engine: crate::pods::engine::PODMAN,
        op: "exec".into(),
        status: 500,
        message: e.to_string(),
    })?;
    Ok(match ran {
        Ok(out) => (i64::from(out.status.code().unwrap_or(137)), out.stdout, out.stderr),
        Err(e) => (127, Vec::new(), format!("{program}: {e}").into_bytes()),
    })
}

fn labels_match(have: &BTreeMap<String, String>, want: &[(&str, &str)]) -> bool {
    want.iter().all(|(k, v)| have.get(*k).is_some_and(|h| h == v))
}

impl Engine for FakeEngine {
    async fn ping(&self) -> Result<(), EngineError> {
        self.call("ping", Some(Op::Ping)).map(drop)
    }

    async fn info(&self) -> Result<EngineInfo, EngineError> {
        drop(self.call("info", Some(Op::Ping))?);
        Ok(EngineInfo {
            socket: "/run/fake/podman.sock".into(),
            version: "4.3.1".into(),
            api_version: "4.3.1".into(),
            rootless: false,
            cgroup_version: "v2".into(),
            cgroup_manager: "systemd".into(),
            runtime: "crun".into(),
            runtime_version: "crun version 1.8".into(),
            storage_driver: "overlay".into(),
        })
    }

    /// Runs the argv on the host below [`FakeEngine::helper_root`], when the image exists.
    async fn run_helper(&self, run: &HelperRun) -> Result<HelperOutput, EngineError> {
        if !self.call("run_helper", None)?.images.contains(&run.image) {
            return Err(not_found("run a helper container", "image"));
        }
        let (exit_code, stdout, stderr) = run_below(&self.helper_root(), &run.argv, None, &run.env).await?;
        Ok(HelperOutput { exit_code, stdout, stderr })
    }

    async fn image_exists(&self, reference: &str) -> Result<bool, EngineError> {
        Ok(self.call("image_exists", None)?.images.contains(reference))
    }

    async fn image_facts(&self, reference: &str) -> Result<crate::pods::engine::ImageFacts, EngineError> {
        drop(self.call("image_facts", None)?);
        Ok(crate::pods::engine::ImageFacts { id: format!("sha256:fake-{reference}"), user: None })
    }

    async fn pull_image(&self, reference: &str) -> Result<(), EngineError> {
        self.call("pull_image", Some(Op::PullImage))
            .map_err(|e| EngineError::Pull { image: reference.to_owned(), message: e.to_string() })?
            .images
            .insert(reference.to_owned());
        Ok(())
    }

    async fn build_image(
        &self,
        build: &BuildPlan,
        _labels: &BTreeMap<String, String>,
        progress: &(dyn Fn(&str) + Send + Sync),
    ) -> Result<(), EngineError> {
        let mut s = self
            .call("build_image", Some(Op::BuildImage))
            .map_err(|e| EngineError::Build { message: e.to_string() })?;
        if !build.dockerfile.is_file() {
            return Err(EngineError::Build { message: format!("no {}", build.dockerfile.display()) });
        }
        s.images.insert(build.tag.clone());
        progress(&format!("built {}", build.tag));
        Ok(())
    }

    async fn secret_exists(&self, name: &str) -> Result<bool, EngineError> {
        Ok(self.call("secret_exists", None)?.secrets.contains_key(name))
    }

    async fn create_secret(&self, secret: &SecretPlan) -> Result<(), EngineError> {
        let mut s = self.call("create_secret", Some(Op::CreateSecret))?;
        if s.secrets.contains_key(&secret.name) {
            return Err(exists(&format!("create secret {}", secret.name), "secret name in use"));
        }
        s.secrets.insert(secret.name.clone(), (secret.value.0.clone(), secret.labels.clone()));
        Ok(())
    }

    async fn remove_secret(&self, name: &str) -> Result<(), EngineError> {
        let mut s = self.call("remove_secret", None)?;
        s.secrets.remove(name).map(drop).ok_or_else(|| not_found(&format!("remove secret {name}"), "secret"))
    }

    async fn secret_value(
        &self,
        name: &str,
        _image: &str,
        _scratch: &Path,
        _instance: &str,
    ) -> Result<String, EngineError> {
        let s = self.call("secret_value", None)?;
        s.secrets
            .get(name)
            .map(|(value, _)| value.clone())
            .ok_or_else(|| not_found(&format!("read secret {name}"), "secret"))
    }

    /// The fake never leaves a helper container behind.
    async fn remove_helpers(&self, _instance: &str) -> Result<Vec<String>, EngineError> {
        self.call("remove_helpers", None).map(|_| Vec::new())
    }

    async fn remove_image(&self, reference: &str) -> Result<(), EngineError> {
        let mut s = self.call("remove_image", None)?;
        if s.images.remove(reference) { Ok(()) } else { Err(not_found(&format!("remove image {reference}"), "image")) }
    }

    async fn container_env(&self, name: &str) -> Result<BTreeMap<String, String>, EngineError> {
        let s = self.call("container_env", None)?;
        let c = s.containers.get(name).ok_or_else(|| not_found(&format!("inspect container {name}"), "container"))?;
        let mut env = BTreeMap::from([("PATH".to_owned(), "/usr/bin:/bin".to_owned())]);
        env.extend(c.plan.env.clone());
        Ok(env)
    }

    async fn container_state(&self, name: &str) -> Result<ContainerState, EngineError> {
        let s = self.call("container_state", None)?;
        let c = s.containers.get(name).ok_or_else(|| not_found(&format!("inspect container {name}"), "container"))?;
        let code = if s.failed.contains(name) { 1 } else { 0 };
        Ok(ContainerState { status: c.state.to_owned(), exit_code: (c.state == "exited").then_some(code) })
    }

    async fn pod_exists(&self, name: &str) -> Result<bool, EngineError> {
        Ok(self.call("pod_exists", None)?.pods.contains_key(name))
    }

    async fn create_volume(&self, volume: &VolumePlan) -> Result<(), EngineError> {
        let mut s = self.call("create_volume", Some(Op::CreateVolume))?;
        if s.volumes.contains_key(&volume.name) {
            return Err(exists(&format!("create volume {}", volume.name), "volume already exists"));
        }
        s.volumes.insert(volume.name.clone(), volume.labels.clone());
        Ok(())
    }

    async fn create_pod(&self, pod: &PodSpec) -> Result<(), EngineError> {
        let mut s = self.call("create_pod", Some(Op::CreatePod))?;
        if s.pods.contains_key(&pod.name) {
            return Err(exists(&format!("create pod {}", pod.name), "pod already exists"));
        }
        let mut ports = Vec::new();
        for &container_port in &pod.ports {
            s.next_id += 1;
            ports.push(PublishedPort {
                container_port,
                host_ip: "127.0.0.1".into(),
                host_port: 40000 + (s.next_id % 20000) as u16,
            });
        }
        s.pods.insert(pod.name.clone(), Pod { spec: pod.clone(), ports });
        Ok(())
    }

    async fn create_container(&self, pod: &str, c: &ContainerPlan) -> Result<(), EngineError> {
        let mut s = self.call("create_container", Some(Op::CreateContainer))?;
        if !s.pods.contains_key(pod) {
            return Err(not_found(&format!("create a container in pod {pod}"), "pod"));
        }
        if s.containers.contains_key(&c.name) {
            return Err(exists(&format!("create container {}", c.name), "container name in use"));
        }
        if !s.images.contains(&c.image) {
            return Err(not_found(&format!("create container {}", c.name), &format!("image {}", c.image)));
        }
        for m in &c.mounts {
            if let MountPlan::Volume { name, .. } = m
                && !s.volumes.contains_key(name)
            {
                return Err(not_found(&format!("create container {}", c.name), &format!("volume {name}")));
            }
        }
        let root = self.dir.path().join(&c.name);
        std::fs::create_dir_all(&root).map_err(|e| EngineError::Api {
            engine: crate::pods::engine::PODMAN,
            op: "create a container".into(),
            status: 500,
            message: e.to_string(),
        })?;
        // A new container of an old one's name has not failed yet.
        s.failed.remove(&c.name);
        s.containers.insert(c.name.clone(), Container { pod: pod.to_owned(), plan: c.clone(), state: "created", root });
        Ok(())
    }

    async fn start_container(&self, name: &str) -> Result<(), EngineError> {
        let mut s = self.call("start_container", None)?;
        let exits = s.exit_on_start.remove(name);
        let finishes = s.finish_on_start.remove(name);
        let c = s.containers.get_mut(name).ok_or_else(|| not_found(&format!("start container {name}"), "container"))?;
        c.state = if exits || finishes { "exited" } else { RUNNING };
        if exits {
            s.failed.insert(name.to_owned());
        }
        Ok(())
    }

    async fn stop_container(&self, name: &str, _grace_secs: u32) -> Result<(), EngineError> {
        let mut s = self.call("stop_container", None)?;
        let c = s.containers.get_mut(name).ok_or_else(|| not_found(&format!("stop container {name}"), "container"))?;
        c.state = "exited";
        Ok(())
    }

    async fn remove_container(&self, name: &str) -> Result<(), EngineError> {
        let mut s = self.call("remove_container", None)?;
        let c = s.containers.remove(name).ok_or_else(|| not_found(&format!("remove container {name}"), "container"))?;
        let _ = std::fs::remove_dir_all(&c.root);
        Ok(())
    }

    async fn start_pod(&self, name: &str) -> Result<(), EngineError> {
        let mut s = self.call("start_pod", Some(Op::StartPod))?;
        if !s.pods.contains_key(name) {
            return Err(not_found(&format!("start pod {name}"), "pod"));
        }
        let exits = std::mem::take(&mut s.exit_on_start);
        for (n, c) in s.containers.iter_mut().filter(|(_, c)| c.pod == name) {
            c.state = if exits.contains(n) { "exited" } else { RUNNING };
        }
        s.failed.extend(exits);
        Ok(())
    }

    async fn stop_pod(&self, name: &str, _grace_secs: u32) -> Result<(), EngineError> {
        let mut s = self.call("stop_pod", None)?;
        if !s.pods.contains_key(name) {
            return Err(not_found(&format!("stop pod {name}"), "pod"));
        }
        for c in s.containers.values_mut().filter(|c| c.pod == name) {
            c.state = "exited";
        }
        Ok(())
    }

    async fn remove_pod(&self, name: &str) -> Result<(), EngineError> {
        self.unless_held(Op::RemovePod).await;
        let mut s = self.call("remove_pod", Some(Op::RemovePod))?;
        s.pods.remove(name).ok_or_else(|| not_found(&format!("remove pod {name}"), "pod"))?;
        let gone: Vec<String> = s.containers.iter().filter(|(_, c)| c.pod == name).map(|(n, _)| n.clone()).collect();
        for n in gone {
            if let Some(c) = s.containers.remove(&n) {
                let _ = std::fs::remove_dir_all(&c.root);
            }
        }
        Ok(())
    }

    async fn upload_archive(&self, container: &str, dest_dir: &str, tar: Vec<u8>) -> Result<(), EngineError> {
        let root = {
            let s = self.call("upload_archive", Some(Op::UploadArchive))?;
            s.containers
                .get(container)
                .ok_or_else(|| not_found(&format!("copy files into {container}"), "container"))?
                .root
                .clone()
        };
        let dest = below(&root, dest_dir);
        let op = format!("copy files into {container}:{dest_dir}");
        tokio::task::spawn_blocking(move || {
            std::fs::create_dir_all(&dest)?;
            tar::Archive::new(tar.as_slice()).unpack(&dest)
        })
        .await
        .map_err(|e| EngineError::Api {
            engine: crate::pods::engine::PODMAN,
            op: op.clone(),
            status: 500,
            message: e.to_string(),
        })?
        .map_err(|e| EngineError::Api {
            engine: crate::pods::engine::PODMAN,
            op,
            status: 500,
            message: e.to_string(),
        })
    }

    async fn list_pods(&self, labels: &[(&str, &str)]) -> Result<Vec<PodInfo>, EngineError> {
        let s = self.call("list_pods", None)?;
        Ok(s.pods
            .iter()
            .filter(|(_, p)| labels_match(&p.spec.labels, labels))
            .filter_map(|(n, _)| self.pod_info(&s, n, false))
            .collect())
    }

    async fn inspect_pod(&self, name: &str) -> Result<PodInfo, EngineError> {
        let s = self.call("inspect_pod", None)?;
        self.pod_info(&s, name, true).ok_or_else(|| not_found(&format!("inspect pod {name}"), "pod"))
    }

    async fn list_volumes(&self, labels: &[(&str, &str)]) -> Result<Vec<String>, EngineError> {
        let s = self.call("list_volumes", None)?;
        Ok(s.volumes.iter().filter(|(_, l)| labels_match(l, labels)).map(|(n, _)| n.clone()).collect())
    }

    async fn remove_volume(&self, name: &str) -> Result<(), EngineError> {
        self.unless_held(Op::RemoveVolume).await;
        let mut s = self.call("remove_volume", Some(Op::RemoveVolume))?;
        if !s.volumes.contains_key(name) {
            return Err(not_found(&format!("remove volume {name}"), "volume"));
        }
        let user = s
            .containers
            .iter()
            .find(|(_, c)| c.plan.mounts.iter().any(|m| matches!(m, MountPlan::Volume { name: v, .. } if v == name)));
        if let Some((user, _)) = user {
            return Err(conflict(
                &format!("remove volume {name}"),
                &format!("volume is being used by container {user}"),
            ));
        }
        s.volumes.remove(name);
        Ok(())
    }

    /// Runs the argv on the host, below the container's root, to its end; the session
    /// replays its output.
    async fn exec(&self, container: &str, spec: &ExecSpec) -> Result<ExecSession, EngineError> {
        drop(self.call("exec", Some(Op::Exec))?);
        let root = self.running_root(container)?;
        let (code, stdout, stderr) = run_below(&root, &spec.argv, spec.workdir.as_deref(), &spec.env).await?;
        let id = {
            let mut s = self.state();
            s.next_id += 1;
            let id = format!("exec-{}", s.next_id);
            s.execs.insert(id.clone(), code);
            id
        };
        let output = futures_util::stream::iter([
            Ok(Output::Stdout(Bytes::from(stdout))),
            Ok(Output::Stderr(Bytes::from(stderr))),
        ])
        .boxed();
        Ok(ExecSession { id, output, input: Box::pin(tokio::io::sink()) })
    }

    /// Runs the argv on the host below the container's root, its stdout copied into `out`
    /// as it comes; the process is killed when the future is dropped. (Its pipe is read on
    /// a blocking thread: as for [`Engine::exec`], tokio's paused time does not jump ahead
    /// while a command runs.)
    async fn exec_to(
        &self,
        container: &str,
        spec: &ExecSpec,
        out: &mut (dyn tokio::io::AsyncWrite + Send + Unpin),
        limit: u64,
    ) -> Result<ExecRun, EngineError> {
        use std::io::Read;
        use tokio::io::AsyncWriteExt;
        drop(self.call("exec_to", Some(Op::Exec))?);
        self.unless_held(Op::ExecTo).await;
        let root = self.running_root(container)?;
        let Some((program, args)) = spec.argv.split_first() else {
            return Err(EngineError::Api {
                engine: crate::pods::engine::PODMAN,
                op: "exec".into(),
                status: 400,
                message: "no command".into(),
            });
        };
        let dir = below(&root, spec.workdir.as_deref().unwrap_or("/"));
        let mut cmd = std::process::Command::new(map_arg(&root, program));
        cmd.args(args.iter().map(|a| map_arg(&root, a)))
            .current_dir(&dir)
            .env("HOME", &root)
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .envs(&spec.env)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let api = |e: std::io::Error| EngineError::Api {
            engine: crate::pods::engine::PODMAN,
            op: "exec".into(),
            status: 500,
            message: e.to_string(),
        };
        let mut child = cmd.spawn().map_err(api)?;
        let (stdout, stderr) = (child.stdout.take(), child.stderr.take());
        // Killed when this future is dropped (a cancelled or abandoned run).
        struct Kill(Arc<Mutex<std::process::Child>>);
        impl Drop for Kill {
            fn drop(&mut self) {
                if let Ok(mut c) = self.0.lock() {
                    let _ = c.kill();
                    let _ = c.wait();
                }
            }
        }
        let child = Kill(Arc::new(Mutex::new(child)));
        let keep = std::thread::spawn(move || {
            let mut err = Vec::new();
            if let Some(mut stderr) = stderr {
                let _ = (&mut stderr).take(STDERR_KEPT as u64).read_to_end(&mut err);
                let _ = std::io::copy(&mut stderr, &mut std::io::sink());
            }
            err
        });
        let (tx, mut rx) = tokio::sync::mpsc::channel::<std::io::Result<Vec<u8>>>(4);
        let reader = tokio::task::spawn_blocking(move || {
            let Some(mut stdout) = stdout else { return };
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                match stdout.read(&mut buf) {
                    Ok(0) => return,
                    Ok(n) => {
                        if tx.blocking_send(Ok(buf[..n].to_vec())).is_err() {
                            return;
                        }
                    }
                    Err(e) => {
                        let _ = tx.blocking_send(Err(e));
                        return;
                    }
                }
            }
        });
        let mut written = 0u64;
        while let Some(chunk) = rx.recv().await {
            let chunk = chunk.map_err(api)?;
            written += chunk.len() as u64;
            if written > limit {
                return Err(EngineError::OutputTooLarge { command: program.clone(), limit });
            }
            out.write_all(&chunk).await.map_err(api)?;
        }
        out.flush().await.map_err(api)?;
        let _ = reader.await;
        let status = {
            let waited = child.0.clone();
            tokio::task::spawn_blocking(move || waited.lock().map_err(|_| std::io::Error::other("poisoned"))?.wait())
                .await
                .map_err(|e| api(std::io::Error::other(e)))?
                .map_err(api)?
        };
        let err = keep.join().unwrap_or_default();
        self.unless_held(Op::ExecToEnd).await;
        Ok(ExecRun {
            exit_code: i64::from(status.code().unwrap_or(137)),
            stdout_bytes: written,
            stderr: String::from_utf8_lossy(&err).into_owned(),
        })
    }

    async fn exec_exit_code(&self, id: &str) -> Result<i64, EngineError> {
        let s = self.call("exec_exit_code", None)?;
        s.execs.get(id).copied().ok_or_else(|| not_found(&format!("inspect exec {id}"), "exec session"))
    }

    fn logs(
        &self,
        container: &str,
        _follow: bool,
        _tail: Option<u32>,
    ) -> BoxStream<'static, Result<Output, EngineError>> {
        let line = format!("{container} started\n");
        futures_util::stream::iter([Ok(Output::Stdout(Bytes::from(line)))]).boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_paths_in_argv_map_below_the_root() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("workspaces/r")).unwrap();
        let host = |p: &str| root.path().join(p).to_string_lossy().into_owned();
        assert_eq!(map_arg(root.path(), "/workspaces/r"), host("workspaces/r"));
        assert_eq!(map_arg(root.path(), "/workspaces/r/x.bundle"), host("workspaces/r/x.bundle"));
        // Paths the container does not have, and non-paths, stay as they are.
        assert_eq!(map_arg(root.path(), "/dev/null"), "/dev/null");
        assert_eq!(map_arg(root.path(), "core.hooksPath=/dev/null"), "core.hooksPath=/dev/null");
        assert_eq!(map_arg(root.path(), "/"), "/");
    }
}
