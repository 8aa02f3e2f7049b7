//! The `Engine` contract: what devaipod needs from a container engine, in its own types.
//! Engines report state; `core` decides what it means. The podman implementation is in
//! `podman.rs`; a Kubernetes one could follow behind the same trait.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;

use bytes::Bytes;
use futures_util::stream::BoxStream;
use serde::Serialize;

use super::naming::Role;
use super::plan::{BuildPlan, ContainerPlan, MountPlan, PodSpec, SecretPlan, VolumePlan};
use super::spec::SpecError;

/// Who answered: [`PODMAN`] or [`KUBERNETES`], in the words of an [`EngineError`].
pub const PODMAN: &str = "podman";
pub const KUBERNETES: &str = "Kubernetes";

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("cannot reach podman at {}: {reason}\n  {}", socket.display(), super::socket::start_hint(socket))]
    Unavailable { socket: PathBuf, reason: String },
    /// HTTP 404: the object is not there. `message` is the engine's own reason; `engine`
    /// names it ([`PODMAN`], [`KUBERNETES`]).
    #[error("{engine} could not {op}: {message}")]
    NotFound { engine: &'static str, op: String, message: String },
    /// The engine said the object exists already (a pod, container, volume or secret of
    /// that name): read from its words, whatever the status (409, or podman's 500 for
    /// secrets).
    #[error("{engine} could not {op}: {message}")]
    AlreadyExists { engine: &'static str, op: String, message: String },
    /// HTTP 409 for anything else: the object is in a state that forbids the call (a volume
    /// in use, a container that is running, a pod that failed to start); `message` is
    /// the engine's.
    #[error("{engine} could not {op}: {message}")]
    Conflict { engine: &'static str, op: String, message: String },
    #[error("{engine} could not {op}: {message}")]
    Api { engine: &'static str, op: String, status: u16, message: String },
    #[error(transparent)]
    Spec(#[from] SpecError),
    #[error("{engine} did not finish {op} within {secs} s")]
    Timeout { engine: &'static str, op: String, secs: u64 },
    #[error("image {image} is not here and could not be pulled: {message}")]
    Pull { image: String, message: String },
    #[error("building the image failed: {message}")]
    Build { message: String },
    /// A streamed command printed more than its limit (its output is cut there, the run
    /// abandoned).
    #[error("`{command}` printed more than {limit} bytes")]
    OutputTooLarge { command: String, limit: u64 },
    #[error("writing the output of `{command}`: {message}")]
    Output { command: String, message: String },
    /// The Kubernetes engine's other failures (403, 401, 5xx, unreachable, unsupported);
    /// `status` 0 when no HTTP status applies.
    #[error("Kubernetes could not {op}: {message}")]
    Kubernetes { op: String, status: u16, message: String },
}

/// A pod as the engine reports it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PodInfo {
    pub name: String,
    /// Podman's pod status: Running, Degraded, Exited, Created, Stopped, …
    pub status: String,
    pub created: String,
    pub labels: BTreeMap<String, String>,
    pub containers: Vec<ContainerInfo>,
    /// Published ports; filled by `inspect_pod` only (listing does not report them).
    pub ports: Vec<PublishedPort>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ContainerInfo {
    pub name: String,
    /// `None` for the pod's infra container.
    pub role: Option<Role>,
    /// running, exited, created, …
    pub state: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize, schemars::JsonSchema)]
pub struct PublishedPort {
    pub container_port: u16,
    pub host_ip: String,
    pub host_port: u16,
}

/// A container's state (a compose service that must finish, or stay up, before another starts).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerState {
    /// running, exited, created, …
    pub status: String,
    /// Its main process's exit code, once it has exited.
    pub exit_code: Option<i64>,
}

/// What a derived image is built from: the base image's id and user (`USER`, may be empty).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageFacts {
    pub id: String,
    pub user: Option<String>,
}

/// What the engine reports about itself (for `devaipod doctor`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EngineInfo {
    /// Where the engine was reached.
    pub socket: PathBuf,
    pub version: String,
    pub api_version: String,
    pub rootless: bool,
    /// `v1` or `v2`.
    pub cgroup_version: String,
    /// `systemd` or `cgroupfs`.
    pub cgroup_manager: String,
    /// The OCI runtime's name (runc, crun) and its version line.
    pub runtime: String,
    pub runtime_version: String,
    /// The storage driver (overlay, vfs, …).
    pub storage_driver: String,
}

/// A throwaway container of no workspace and no pod, run to its end and removed (the LLM
/// probe of `devaipod doctor` and `devaipod init`). It carries `instance`'s helper labels
/// with `role`, so a daemon's start removes one a crash left.
#[derive(Debug, Clone, PartialEq)]
pub struct HelperRun {
    pub role: &'static str,
    pub image: String,
    pub argv: Vec<String>,
    /// Bind mounts (read-only ones, in practice).
    pub mounts: Vec<MountPlan>,
    pub env: BTreeMap<String, String>,
    /// Variable → podman secret, as for the agent.
    pub secret_env: BTreeMap<String, String>,
    pub user: Option<String>,
    pub instance: String,
    /// How long it may run before it is killed and the run fails.
    pub timeout_secs: u64,
}

/// What a [`HelperRun`] printed, and its exit code.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HelperOutput {
    pub exit_code: i64,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

/// A command to run in a container.
#[derive(Debug, Clone, Default)]
pub struct ExecSpec {
    pub argv: Vec<String>,
    pub user: Option<String>,
    pub workdir: Option<String>,
    pub env: BTreeMap<String, String>,
    pub stdin: bool,
    pub tty: bool,
}

/// Output of a running exec or a log stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    Stdout(Bytes),
    Stderr(Bytes),
}

pub struct ExecSession {
    pub id: String,
    pub output: BoxStream<'static, Result<Output, EngineError>>,
    pub input: Pin<Box<dyn tokio::io::AsyncWrite + Send>>,
}

/// How a streamed command ended ([`Engine::exec_to`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExecRun {
    pub exit_code: i64,
    /// How many bytes of stdout went to the writer.
    pub stdout_bytes: u64,
    /// The start of its stderr (at most [`STDERR_KEPT`] bytes).
    pub stderr: String,
}

/// How much of a streamed command's stderr is kept.
pub const STDERR_KEPT: usize = 16 * 1024;

/// Copies an exec's output into `out` (stdout, at most `limit` bytes) and keeps the start of
/// its stderr: the engines' shared half of [`Engine::exec_to`]. Returns the stdout bytes and
/// the stderr kept; the caller asks for the exit code.
pub async fn pump_to(
    output: &mut BoxStream<'static, Result<Output, EngineError>>,
    out: &mut (dyn tokio::io::AsyncWrite + Send + Unpin),
    limit: u64,
    command: &str,
) -> Result<(u64, String), EngineError> {
    use futures_util::StreamExt;
    use tokio::io::AsyncWriteExt;
    let (mut written, mut err) = (0u64, Vec::new());
    let failed = |e: std::io::Error| EngineError::Output { command: command.to_owned(), message: e.to_string() };
    while let Some(chunk) = output.next().await {
        match chunk? {
            Output::Stdout(b) => {
                written += b.len() as u64;
                if written > limit {
                    return Err(EngineError::OutputTooLarge { command: command.to_owned(), limit });
                }
                out.write_all(&b).await.map_err(failed)?;
            }
            Output::Stderr(b) => {
                let room = STDERR_KEPT.saturating_sub(err.len());
                err.extend_from_slice(&b[..b.len().min(room)]);
            }
        }
    }
    out.flush().await.map_err(failed)?;
    Ok((written, String::from_utf8_lossy(&err).into_owned()))
}

/// What a workspace needs from a container engine. Every call has a timeout.
pub trait Engine: Send + Sync + 'static {
    /// Fails with [`EngineError::Unavailable`] when the engine is not running.
    fn ping(&self) -> impl Future<Output = Result<(), EngineError>> + Send;
    /// Version, rootless or not, cgroups, runtime, storage.
    fn info(&self) -> impl Future<Output = Result<EngineInfo, EngineError>> + Send;
    /// Runs a throwaway container to its end (or its timeout) and removes it.
    fn run_helper(&self, run: &HelperRun) -> impl Future<Output = Result<HelperOutput, EngineError>> + Send;
    fn image_exists(&self, reference: &str) -> impl Future<Output = Result<bool, EngineError>> + Send;
    fn pull_image(&self, reference: &str) -> impl Future<Output = Result<(), EngineError>> + Send;
    /// A local image's id and the user it runs as.
    fn image_facts(&self, reference: &str) -> impl Future<Output = Result<ImageFacts, EngineError>> + Send;
    /// Builds an image from a context directory; `progress` receives the build's output lines.
    fn build_image(
        &self,
        build: &BuildPlan,
        labels: &BTreeMap<String, String>,
        progress: &(dyn Fn(&str) + Send + Sync),
    ) -> impl Future<Output = Result<(), EngineError>> + Send;
    fn secret_exists(&self, name: &str) -> impl Future<Output = Result<bool, EngineError>> + Send;
    /// Creates a podman secret with the plan's labels; its value travels in the request body
    /// only.
    fn create_secret(&self, secret: &SecretPlan) -> impl Future<Output = Result<(), EngineError>> + Send;
    fn remove_secret(&self, name: &str) -> impl Future<Output = Result<(), EngineError>> + Send;
    /// A secret's value, for the daemon's own use (the GitHub token). Podman before 4.5
    /// does not reveal secret data through its API: then a throwaway container without
    /// network, made from `image`, prints it into a log file in `scratch` (a private
    /// directory of the caller, never the journal) and is removed. That container carries
    /// `instance`'s helper labels, so that [`Engine::remove_helpers`] finds one a crash left.
    fn secret_value(
        &self,
        name: &str,
        image: &str,
        scratch: &std::path::Path,
        instance: &str,
    ) -> impl Future<Output = Result<String, EngineError>> + Send;
    /// Removes `instance`'s helper containers (secret readers, LLM probes) and the readers' log files: at a
    /// daemon's start, any there are were left by a crash. Other instances' are untouched.
    /// Returns the names removed.
    fn remove_helpers(&self, instance: &str) -> impl Future<Output = Result<Vec<String>, EngineError>> + Send;
    fn remove_image(&self, reference: &str) -> impl Future<Output = Result<(), EngineError>> + Send;
    /// The environment a container runs with (the image's and the container's own).
    fn container_env(&self, name: &str) -> impl Future<Output = Result<BTreeMap<String, String>, EngineError>> + Send;
    fn container_state(&self, name: &str) -> impl Future<Output = Result<ContainerState, EngineError>> + Send;
    fn pod_exists(&self, name: &str) -> impl Future<Output = Result<bool, EngineError>> + Send;
    fn create_volume(&self, volume: &VolumePlan) -> impl Future<Output = Result<(), EngineError>> + Send;
    fn create_pod(&self, pod: &PodSpec) -> impl Future<Output = Result<(), EngineError>> + Send;
    fn create_container(&self, pod: &str, c: &ContainerPlan) -> impl Future<Output = Result<(), EngineError>> + Send;
    fn start_container(&self, name: &str) -> impl Future<Output = Result<(), EngineError>> + Send;
    /// Stops a container, killing it after `grace_secs`; one not running is not an error.
    fn stop_container(&self, name: &str, grace_secs: u32) -> impl Future<Output = Result<(), EngineError>> + Send;
    /// Removes a container at once (no grace period), whatever its state; one that does
    /// not exist is [`EngineError::NotFound`].
    fn remove_container(&self, name: &str) -> impl Future<Output = Result<(), EngineError>> + Send;
    /// Starts a pod; one that runs already is not an error.
    fn start_pod(&self, name: &str) -> impl Future<Output = Result<(), EngineError>> + Send;
    /// Stops a pod, killing what has not exited after `grace_secs`; one that is not running
    /// (stopped, exited, created) is not an error.
    fn stop_pod(&self, name: &str, grace_secs: u32) -> impl Future<Output = Result<(), EngineError>> + Send;
    /// Removes a pod and its containers at once (no grace period), whatever its state.
    fn remove_pod(&self, name: &str) -> impl Future<Output = Result<(), EngineError>> + Send;
    /// Unpacks a tar archive into `dest_dir` of a running container (volumes included),
    /// owned by the container's user.
    fn upload_archive(
        &self,
        container: &str,
        dest_dir: &str,
        tar: Vec<u8>,
    ) -> impl Future<Output = Result<(), EngineError>> + Send;
    /// Pods whose labels match all of `labels`, with their containers: one round trip.
    fn list_pods(&self, labels: &[(&str, &str)]) -> impl Future<Output = Result<Vec<PodInfo>, EngineError>> + Send;
    fn inspect_pod(&self, name: &str) -> impl Future<Output = Result<PodInfo, EngineError>> + Send;
    fn list_volumes(&self, labels: &[(&str, &str)]) -> impl Future<Output = Result<Vec<String>, EngineError>> + Send;
    fn remove_volume(&self, name: &str) -> impl Future<Output = Result<(), EngineError>> + Send;
    fn exec(&self, container: &str, spec: &ExecSpec) -> impl Future<Output = Result<ExecSession, EngineError>> + Send;
    /// Runs a command to its end with its stdout streamed into `out`, never held in memory:
    /// more than `limit` bytes fails with [`EngineError::OutputTooLarge`] (and abandons the
    /// run). The caller bounds its time; dropping the future abandons the command.
    fn exec_to(
        &self,
        container: &str,
        spec: &ExecSpec,
        out: &mut (dyn tokio::io::AsyncWrite + Send + Unpin),
        limit: u64,
    ) -> impl Future<Output = Result<ExecRun, EngineError>> + Send;
    /// The exit code of a finished exec.
    fn exec_exit_code(&self, id: &str) -> impl Future<Output = Result<i64, EngineError>> + Send;
    fn logs(&self, container: &str, follow: bool, tail: Option<u32>)
    -> BoxStream<'static, Result<Output, EngineError>>;

    /// The host paths bind-mounted into `instance`'s containers, in any state (the daemon
    /// keeps the copies of its executable that these still use). Engines that cannot say
    /// fail, and the daemon then keeps every copy.
    fn bind_sources(
        &self,
        instance: &str,
    ) -> impl Future<Output = Result<std::collections::BTreeSet<PathBuf>, EngineError>> + Send {
        let _ = instance;
        async { Err(unsupported("list the containers' mounts")) }
    }

    /// Sets the terminal size of a running exec started with `tty` (SSH window changes,
    /// `exec -it`). Engines without terminals say so.
    fn resize_exec(&self, id: &str, rows: u16, cols: u16) -> impl Future<Output = Result<(), EngineError>> + Send {
        let _ = (id, rows, cols);
        async { Err(unsupported("resize a terminal")) }
    }
    /// Sends a signal (a number, e.g. 15) to a running exec's process (SSH `signal`).
    fn signal_exec(&self, id: &str, signal: i32) -> impl Future<Output = Result<(), EngineError>> + Send {
        let _ = (id, signal);
        async { Err(unsupported("signal a command")) }
    }
    /// A TCP connection to `127.0.0.1:port` as seen from inside `container`'s network
    /// namespace (SSH `direct-tcpip`, `devaipod forward`): ports the workspace's programs
    /// listen on, published or not.
    fn connect_port(&self, container: &str, port: u16) -> impl Future<Output = Result<PortStream, EngineError>> + Send {
        let _ = (container, port);
        async { Err(unsupported("connect to a port in a pod")) }
    }
}

/// Bytes both ways to a port inside a pod ([`Engine::connect_port`]): a TCP connection
/// made in the pod's namespace, or a relay process that entered it.
pub trait Duplex: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin> Duplex for T {}
pub type PortStream = Box<dyn Duplex>;

fn unsupported(op: &str) -> EngineError {
    EngineError::Api { engine: PODMAN, op: op.to_owned(), status: 501, message: "this engine cannot do that".into() }
}
