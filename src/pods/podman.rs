//! `Podman`: the [`Engine`] over podman's API socket. The libpod API (`libpod.rs`) for
//! pods, volumes, images, secrets and container creation; bollard's Docker-compatible
//! client for exec and logs, which need a hijacked or streamed connection. What is sent is
//! built by `spec.rs` (pure), what is read back is parsed by `wire.rs` (pure); this file
//! only makes the calls.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use bollard::Docker;
use bollard::exec::{CreateExecOptions, StartExecOptions, StartExecResults};
use bytes::Bytes;
use futures_util::stream::BoxStream;
use futures_util::{StreamExt, TryStreamExt};
use hyper::Method;

use super::engine::{
    ContainerState, Engine, EngineError, EngineInfo, ExecRun, ExecSession, ExecSpec, HelperOutput, HelperRun,
    ImageFacts, Output, PodInfo, pump_to,
};
use super::image::{build_context, read_progress};
use super::libpod::{Body, CALL_TIMEOUT, Libpod, enc, label_filter};
use super::naming::{
    HELPER_PREFIX, LABEL_INSTANCE, LABEL_ROLE, ROLE_LLM_PROBE, ROLE_SECRET_READER, SECRET_READER_PREFIX,
};
use super::plan::{BuildPlan, ContainerPlan, PodSpec, SecretPlan, VolumePlan};
use super::spec::{self, SecretReader};
use super::wire::{
    ErrorBody, InspectedContainer, InspectedImage, InspectedPod, ListedContainer, ListedPod, ListedVolume,
    PodActionReport, SystemInfo, has_all,
};

pub use super::socket::{default_socket, is_root};

/// Extra time a pod stop may take beyond its grace period.
const CALL_TIMEOUT_FOR_STOP: Duration = Duration::from_secs(30);
/// A listing that met a removal is asked again this many times, this far apart.
const LISTING_TRIES: u32 = 5;
const LISTING_RETRY: Duration = Duration::from_millis(50);
/// How long an exec's exit code may take to be recorded and read, after its output ended.
const EXIT_CODE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a secret reader may run.
const SECRET_READ_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Clone)]
pub struct Podman {
    api: Libpod,
    docker: Docker,
}

impl Podman {
    /// The process and open-file limits (soft, hard) of the podman service behind the
    /// socket, read from `/proc/<pid>/limits` of the socket's peer. Empty when unknown.
    async fn service_limits(&self) -> BTreeMap<String, (u64, u64)> {
        let read = async {
            let stream = tokio::net::UnixStream::connect(self.api.socket()).await.ok()?;
            let pid = stream.peer_cred().ok()?.pid()?;
            tokio::fs::read_to_string(format!("/proc/{pid}/limits")).await.ok()
        };
        match tokio::time::timeout(CALL_TIMEOUT, read).await {
            Ok(Some(text)) => spec::parse_proc_limits(&text),
            _ => BTreeMap::new(),
        }
    }

    /// A client for the socket; nothing is contacted until the first call.
    pub fn new(socket: &Path) -> Result<Self, EngineError> {
        let docker = Docker::connect_with_unix(&socket.to_string_lossy(), 120, bollard::API_DEFAULT_VERSION)
            .map_err(|e| EngineError::Unavailable { socket: socket.to_owned(), reason: e.to_string() })?;
        Ok(Podman { api: Libpod::new(socket), docker })
    }

    pub fn socket(&self) -> &Path {
        self.api.socket()
    }

    async fn exists(&self, op: &str, path: &str) -> Result<bool, EngineError> {
        match self.api.call(op, Method::GET, path, Body::Empty).await {
            Ok(_) => Ok(true),
            Err(EngineError::NotFound { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// A listing. Podman 4.3 answers a listing with 404 when an object it lists is removed
    /// meanwhile ("no volume with name … found in database"), which happens while deleted
    /// workspaces are removed in the background: such a listing is asked again (a few
    /// times, [`LISTING_RETRY`] apart).
    async fn listing<T: serde::de::DeserializeOwned>(&self, op: &str, path: &str) -> Result<T, EngineError> {
        let mut tries = 0;
        loop {
            match self.api.get_json(op, path).await {
                Err(EngineError::NotFound { .. }) if tries < LISTING_TRIES => {
                    tries += 1;
                    tokio::time::sleep(LISTING_RETRY).await;
                }
                other => return other,
            }
        }
    }

    /// A start or stop of a pod or container. Podman answers 304 Not Modified when it is in
    /// that state already: that is success, with no report (`None`).
    async fn change_state(&self, op: &str, path: &str, timeout: Duration) -> Result<Option<Bytes>, EngineError> {
        match self.api.call_with_timeout(op, Method::POST, path, Body::Empty, timeout).await {
            Ok(body) => Ok(Some(body)),
            Err(EngineError::Api { status: 304, .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Removes one helper container and, when it is a secret reader's, its log file.
    async fn remove_helper(&self, c: &ListedContainer) -> Result<(), EngineError> {
        let name = c.names.first().unwrap_or(&c.id);
        let op = format!("remove helper container {name}");
        let inspect = format!("/containers/{}/json", enc(&c.id));
        let log = match self.api.get_json::<InspectedContainer>(&op, &inspect).await {
            Ok(info) => info.log_path().filter(|p| spec::is_secret_reader_log(p)).map(Path::to_owned),
            Err(EngineError::NotFound { .. }) => return Ok(()),
            Err(e) => return Err(e),
        };
        match self.api.call(&op, Method::DELETE, &format!("/containers/{}?force=true", enc(&c.id)), Body::Empty).await {
            Ok(_) | Err(EngineError::NotFound { .. }) => {}
            Err(e) => return Err(e),
        }
        // The log holds the secret's value when the reader got that far.
        if let Some(log) = log {
            match tokio::fs::remove_file(&log).await {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(api_err(&op, format!("cannot remove {}: {e}", log.display())));
                }
                _ => {}
            }
        }
        Ok(())
    }
}

fn api_err(op: &str, message: impl Into<String>) -> EngineError {
    EngineError::Api { engine: crate::pods::engine::PODMAN, op: op.to_owned(), status: 0, message: message.into() }
}

impl Engine for Podman {
    /// The host paths bind-mounted into `instance`'s containers, in any state (the daemon
    /// keeps the copies of its executable that these still use).
    async fn bind_sources(&self, instance: &str) -> Result<BTreeSet<PathBuf>, EngineError> {
        let labels = [(LABEL_INSTANCE, instance)];
        let path = format!("/containers/json?all=true&filters={}", label_filter(&labels));
        let listed: Vec<ListedContainer> = self.api.get_json("list containers", &path).await?;
        let mut sources = BTreeSet::new();
        for c in listed.iter().filter(|c| has_all(c.labels.as_ref(), &labels)) {
            let op = format!("inspect container {}", c.names.first().unwrap_or(&c.id));
            match self.api.get_json::<InspectedContainer>(&op, &format!("/containers/{}/json", enc(&c.id))).await {
                Ok(info) => sources.extend(info.bind_sources().map(Path::to_owned)),
                Err(EngineError::NotFound { .. }) => {} // removed meanwhile
                Err(e) => return Err(e),
            }
        }
        Ok(sources)
    }

    async fn ping(&self) -> Result<(), EngineError> {
        // `_ping`, not `/version`: the latter asks the OCI runtime and conmon for their
        // versions and costs ~100 ms.
        self.api.call_with_timeout("answer", Method::GET, "/_ping", Body::Empty, Duration::from_secs(5)).await?;
        Ok(())
    }

    async fn info(&self) -> Result<EngineInfo, EngineError> {
        let info: SystemInfo = self.api.get_json("describe itself", "/info").await?;
        Ok(info.into_info(self.socket().to_owned()))
    }

    async fn run_helper(&self, run: &HelperRun) -> Result<HelperOutput, EngineError> {
        let suffix: u64 = rand::random();
        let name = format!("{HELPER_PREFIX}{suffix:016x}");
        let op = format!("run the {} helper container {name}", run.role);
        let create = spec::helper(&name, run);
        let timeout = Duration::from_secs(run.timeout_secs);
        // Detached: a caller that goes away cannot skip the removal.
        let this = self.clone();
        let task = tokio::spawn(async move {
            let body = serde_json::to_value(&create).map_err(|e| api_err(&op, e.to_string()))?;
            this.api.call(&op, Method::POST, "/containers/create", Body::Json(body)).await?;
            let ran = async {
                this.api.call(&op, Method::POST, &format!("/containers/{}/start", enc(&name)), Body::Empty).await?;
                let wait = format!("/containers/{}/wait?condition=exited", enc(&name));
                let code = this.api.call_with_timeout(&op, Method::POST, &wait, Body::Empty, timeout).await?;
                let exit_code = String::from_utf8_lossy(&code).trim().parse::<i64>().unwrap_or(-1);
                let mut out = HelperOutput { exit_code, ..HelperOutput::default() };
                let mut logs = this.logs(&name, false, None);
                let collect = async {
                    while let Some(chunk) = logs.next().await {
                        match chunk? {
                            Output::Stdout(b) => out.stdout.extend_from_slice(&b),
                            Output::Stderr(b) => out.stderr.extend_from_slice(&b),
                        }
                    }
                    Ok::<_, EngineError>(())
                };
                tokio::time::timeout(CALL_TIMEOUT, collect).await.map_err(|_| EngineError::Timeout {
                    engine: crate::pods::engine::PODMAN,
                    op: op.clone(),
                    secs: CALL_TIMEOUT.as_secs(),
                })??;
                Ok::<_, EngineError>(out)
            }
            .await;
            let _ = this
                .api
                .call(&op, Method::DELETE, &format!("/containers/{}?force=true", enc(&name)), Body::Empty)
                .await;
            ran
        });
        task.await.map_err(|e| api_err("run a helper container", e.to_string()))?
    }

    async fn image_exists(&self, reference: &str) -> Result<bool, EngineError> {
        self.exists(&format!("find image {reference}"), &format!("/images/{}/exists", enc(reference))).await
    }

    async fn pull_image(&self, reference: &str) -> Result<(), EngineError> {
        let op = format!("pull image {reference}");
        let path = format!("/images/pull?reference={}&quiet=true", enc(reference));
        let pull = async {
            let stream = self.api.stream(&op, Method::POST, &path, Body::Empty, Duration::from_secs(120)).await?;
            read_progress(stream, &|_| {}).await
        };
        match pull.await {
            Ok(None) => Ok(()),
            Ok(Some(message)) => Err(EngineError::Pull { image: reference.to_owned(), message }),
            Err(e) => Err(EngineError::Pull { image: reference.to_owned(), message: e.to_string() }),
        }
    }

    async fn build_image(
        &self,
        build: &BuildPlan,
        labels: &BTreeMap<String, String>,
        progress: &(dyn Fn(&str) + Send + Sync),
    ) -> Result<(), EngineError> {
        let (context, dockerfile) = (build.context_dir.clone(), build.dockerfile.clone());
        let (tar, dockerfile_in_tar) = tokio::task::spawn_blocking(move || build_context(&context, &dockerfile))
            .await
            .map_err(|e| EngineError::Build { message: e.to_string() })?
            .map_err(|e| EngineError::Build { message: e })?;
        let mut path = format!(
            "/build?dockerfile={}&t={}&rm=true&buildargs={}&labels={}",
            enc(&dockerfile_in_tar),
            enc(&build.tag),
            enc(&serde_json::to_string(&build.args).unwrap_or_default()),
            enc(&serde_json::to_string(labels).unwrap_or_default()),
        );
        if let Some(target) = &build.target {
            path.push_str(&format!("&target={}", enc(target)));
        }
        let stream =
            self.api.stream("build the image", Method::POST, &path, Body::Tar(tar), Duration::from_secs(600)).await?;
        match read_progress(stream, progress).await? {
            None => Ok(()),
            Some(message) => Err(EngineError::Build { message }),
        }
    }

    async fn secret_exists(&self, name: &str) -> Result<bool, EngineError> {
        self.exists(&format!("find secret {name}"), &format!("/secrets/{}/json", enc(name))).await
    }

    async fn create_secret(&self, secret: &SecretPlan) -> Result<(), EngineError> {
        let op = format!("create secret {}", secret.name);
        let body = Body::Raw(secret.value.0.as_bytes().to_vec());
        self.api.call(&op, Method::POST, &spec::secret_create_path(secret), body).await?;
        Ok(())
    }

    async fn secret_value(
        &self,
        name: &str,
        image: &str,
        scratch: &Path,
        instance: &str,
    ) -> Result<String, EngineError> {
        let op = format!("read secret {name}");
        let info: serde_json::Value =
            self.api.get_json(&op, &format!("/secrets/{}/json?showsecret=true", enc(name))).await?;
        if let Some(data) = info["SecretData"].as_str().filter(|d| !d.is_empty()) {
            return Ok(data.to_owned());
        }
        let suffix: u64 = rand::random();
        let container = format!("{SECRET_READER_PREFIX}{suffix:016x}");
        // The value goes to a k8s-file log in the caller's private directory (not the
        // journal, podman's default on systemd hosts), read back through the API.
        let log = spec::secret_reader_log(scratch, &container);
        let create =
            spec::secret_reader(&SecretReader { container: &container, secret: name, image, log: &log, instance });
        // Detached: a caller that goes away cannot skip the cleanup.
        let this = self.clone();
        let task = tokio::spawn(async move {
            let remove = format!("/containers/{}?force=true", enc(&container));
            let body = serde_json::to_value(&create).map_err(|e| api_err(&op, e.to_string()))?;
            this.api.call(&op, Method::POST, "/containers/create", Body::Json(body)).await?;
            let read = async {
                this.api
                    .call(&op, Method::POST, &format!("/containers/{}/start", enc(&container)), Body::Empty)
                    .await?;
                let wait = format!("/containers/{}/wait?condition=exited", enc(&container));
                this.api.call_with_timeout(&op, Method::POST, &wait, Body::Empty, SECRET_READ_TIMEOUT).await?;
                let mut out = Vec::new();
                let mut logs = this.logs(&container, false, None);
                let collect = async {
                    while let Some(chunk) = logs.next().await {
                        if let Output::Stdout(b) = chunk? {
                            out.extend_from_slice(&b);
                        }
                    }
                    Ok::<_, EngineError>(())
                };
                tokio::time::timeout(SECRET_READ_TIMEOUT, collect).await.map_err(|_| EngineError::Timeout {
                    engine: crate::pods::engine::PODMAN,
                    op: op.clone(),
                    secs: SECRET_READ_TIMEOUT.as_secs(),
                })??;
                Ok::<_, EngineError>(String::from_utf8_lossy(&out).trim_end_matches('\n').to_owned())
            }
            .await;
            let _ = this.api.call(&op, Method::DELETE, &remove, Body::Empty).await;
            let _ = tokio::fs::remove_file(&log).await;
            let value = read?;
            if value.is_empty() {
                return Err(api_err(&op, "the secret is empty"));
            }
            Ok(value)
        });
        task.await.map_err(|e| api_err(&format!("read secret {name}"), e.to_string()))?
    }

    async fn remove_helpers(&self, instance: &str) -> Result<Vec<String>, EngineError> {
        // Every leftover gets its try; the first failure is reported after all were tried.
        let (mut removed, mut first_err) = (Vec::new(), None);
        for role in [ROLE_SECRET_READER, ROLE_LLM_PROBE] {
            let labels = [(LABEL_INSTANCE, instance), (LABEL_ROLE, role)];
            let path = format!("/containers/json?all=true&filters={}", label_filter(&labels));
            let listed: Vec<ListedContainer> = self.listing("list helper containers", &path).await?;
            for c in listed.iter().filter(|c| has_all(c.labels.as_ref(), &labels)) {
                match self.remove_helper(c).await {
                    Ok(()) => removed.push(c.names.first().unwrap_or(&c.id).clone()),
                    Err(e) => first_err = first_err.or(Some(e)),
                }
            }
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(removed),
        }
    }

    async fn remove_secret(&self, name: &str) -> Result<(), EngineError> {
        let op = format!("remove secret {name}");
        self.api.call(&op, Method::DELETE, &format!("/secrets/{}", enc(name)), Body::Empty).await?;
        Ok(())
    }

    async fn remove_image(&self, reference: &str) -> Result<(), EngineError> {
        let op = format!("remove image {reference}");
        self.api.call(&op, Method::DELETE, &format!("/images/{}?force=true", enc(reference)), Body::Empty).await?;
        Ok(())
    }

    async fn image_facts(&self, reference: &str) -> Result<ImageFacts, EngineError> {
        let op = format!("inspect image {reference}");
        let i: InspectedImage = self.api.get_json(&op, &format!("/images/{}/json", enc(reference))).await?;
        Ok(ImageFacts { id: i.id, user: i.config.and_then(|c| c.user).filter(|u| !u.is_empty()) })
    }

    async fn container_env(&self, name: &str) -> Result<BTreeMap<String, String>, EngineError> {
        let op = format!("inspect container {name}");
        let c: InspectedContainer = self.api.get_json(&op, &format!("/containers/{}/json", enc(name))).await?;
        Ok(c.env())
    }

    async fn container_state(&self, name: &str) -> Result<ContainerState, EngineError> {
        let op = format!("inspect container {name}");
        let c: InspectedContainer = self.api.get_json(&op, &format!("/containers/{}/json", enc(name))).await?;
        let state = c.state.unwrap_or_default();
        let exited = matches!(state.status.as_str(), "exited" | "stopped");
        Ok(ContainerState { exit_code: exited.then_some(state.exit_code), status: state.status })
    }

    async fn pod_exists(&self, name: &str) -> Result<bool, EngineError> {
        self.exists(&format!("find pod {name}"), &format!("/pods/{}/exists", enc(name))).await
    }

    async fn create_volume(&self, v: &VolumePlan) -> Result<(), EngineError> {
        let op = format!("create volume {}", v.name);
        let body = serde_json::to_value(spec::volume(v)).map_err(|e| api_err(&op, e.to_string()))?;
        self.api.call(&op, Method::POST, "/volumes/create", Body::Json(body)).await?;
        Ok(())
    }

    async fn create_pod(&self, pod: &PodSpec) -> Result<(), EngineError> {
        let op = format!("create pod {}", pod.name);
        let body = serde_json::to_value(spec::pod(pod)).map_err(|e| api_err(&op, e.to_string()))?;
        self.api.call(&op, Method::POST, "/pods/create", Body::Json(body)).await?;
        Ok(())
    }

    async fn create_container(&self, pod: &str, c: &ContainerPlan) -> Result<(), EngineError> {
        let op = format!("create container {}", c.name);
        let mut create = spec::container(pod, c)?;
        if !create.r_limits.is_empty() {
            spec::keep_service_limits(&mut create, &self.service_limits().await);
        }
        let body = serde_json::to_value(create).map_err(|e| api_err(&op, e.to_string()))?;
        self.api.call(&op, Method::POST, "/containers/create", Body::Json(body)).await?;
        Ok(())
    }

    async fn start_container(&self, name: &str) -> Result<(), EngineError> {
        let op = format!("start container {name}");
        let path = format!("/containers/{}/start", enc(name));
        self.change_state(&op, &path, CALL_TIMEOUT).await?;
        Ok(())
    }

    async fn stop_container(&self, name: &str, grace_secs: u32) -> Result<(), EngineError> {
        let op = format!("stop container {name}");
        let path = format!("/containers/{}/stop?t={grace_secs}", enc(name));
        let timeout = CALL_TIMEOUT_FOR_STOP + Duration::from_secs(grace_secs.into());
        self.change_state(&op, &path, timeout).await?;
        Ok(())
    }

    async fn remove_container(&self, name: &str) -> Result<(), EngineError> {
        let op = format!("remove container {name}");
        let path = format!("/containers/{}?force=true&t=0", enc(name));
        self.api.call(&op, Method::DELETE, &path, Body::Empty).await?;
        Ok(())
    }

    async fn start_pod(&self, name: &str) -> Result<(), EngineError> {
        let op = format!("start pod {name}");
        let path = format!("/pods/{}/start", enc(name));
        let report = self.change_state(&op, &path, CALL_TIMEOUT).await?;
        pod_errors(&op, report.as_deref())
    }

    async fn stop_pod(&self, name: &str, grace_secs: u32) -> Result<(), EngineError> {
        let op = format!("stop pod {name}");
        let path = format!("/pods/{}/stop?t={grace_secs}", enc(name));
        let timeout = CALL_TIMEOUT_FOR_STOP + Duration::from_secs(grace_secs.into());
        let report = self.change_state(&op, &path, timeout).await?;
        pod_errors(&op, report.as_deref())
    }

    async fn remove_pod(&self, name: &str) -> Result<(), EngineError> {
        // Stop with t=0 first: a PID 1 that ignores SIGTERM would otherwise cost 10 s.
        match self.stop_pod(name, 0).await {
            Ok(()) | Err(EngineError::NotFound { .. }) => {}
            Err(e) => return Err(e),
        }
        let op = format!("remove pod {name}");
        self.api.call(&op, Method::DELETE, &format!("/pods/{}?force=true", enc(name)), Body::Empty).await?;
        Ok(())
    }

    async fn upload_archive(&self, container: &str, dest_dir: &str, tar: Vec<u8>) -> Result<(), EngineError> {
        let op = format!("copy files into {container}:{dest_dir}");
        let path = format!("/containers/{}/archive?path={}", enc(container), enc(dest_dir));
        self.api.call_with_timeout(&op, Method::PUT, &path, Body::Tar(tar), Duration::from_secs(600)).await?;
        Ok(())
    }

    async fn list_pods(&self, labels: &[(&str, &str)]) -> Result<Vec<PodInfo>, EngineError> {
        let path = format!("/pods/json?filters={}", label_filter(labels));
        let pods: Vec<ListedPod> = self.listing("list pods", &path).await?;
        Ok(pods.into_iter().filter(|p| has_all(p.labels.as_ref(), labels)).map(ListedPod::into_info).collect())
    }

    async fn inspect_pod(&self, name: &str) -> Result<PodInfo, EngineError> {
        let op = format!("inspect pod {name}");
        let p: InspectedPod = self.api.get_json(&op, &format!("/pods/{}/json", enc(name))).await?;
        Ok(p.into_info())
    }

    async fn list_volumes(&self, labels: &[(&str, &str)]) -> Result<Vec<String>, EngineError> {
        let path = format!("/volumes/json?filters={}", label_filter(labels));
        let vols: Vec<ListedVolume> = self.listing("list volumes", &path).await?;
        Ok(vols.into_iter().filter(|v| has_all(v.labels.as_ref(), labels)).map(|v| v.name).collect())
    }

    async fn remove_volume(&self, name: &str) -> Result<(), EngineError> {
        let op = format!("remove volume {name}");
        self.api.call(&op, Method::DELETE, &format!("/volumes/{}", enc(name)), Body::Empty).await?;
        Ok(())
    }

    async fn exec(&self, container: &str, spec: &ExecSpec) -> Result<ExecSession, EngineError> {
        let op = format!("run a command in {container}");
        let env: Vec<String> = spec.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let created = self
            .docker
            .create_exec(
                container,
                CreateExecOptions {
                    cmd: Some(if spec.tty {
                        super::interactive::after_first_size(&spec.argv)
                    } else {
                        spec.argv.clone()
                    }),
                    user: spec.user.clone(),
                    working_dir: spec.workdir.clone(),
                    env: Some(env),
                    attach_stdin: Some(spec.stdin),
                    attach_stdout: Some(true),
                    attach_stderr: Some(true),
                    tty: Some(spec.tty),
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| docker_err(&op, e))?;
        let started = self
            .docker
            .start_exec(&created.id, Some(StartExecOptions { detach: false, tty: spec.tty, output_capacity: None }))
            .await
            .map_err(|e| docker_err(&op, e))?;
        match started {
            StartExecResults::Attached { output, input } => Ok(ExecSession {
                id: created.id,
                output: output.map_ok(log_output).map_err(move |e| docker_err(&op, e)).boxed(),
                input,
            }),
            StartExecResults::Detached => Err(api_err(&op, "the exec started detached")),
        }
    }

    async fn exec_to(
        &self,
        container: &str,
        spec: &ExecSpec,
        out: &mut (dyn tokio::io::AsyncWrite + Send + Unpin),
        limit: u64,
    ) -> Result<ExecRun, EngineError> {
        let mut session = self.exec(container, spec).await?;
        let command = spec.argv.first().cloned().unwrap_or_default();
        let (stdout_bytes, stderr) = pump_to(&mut session.output, out, limit, &command).await?;
        let exit_code = self.exec_exit_code(&session.id).await?;
        Ok(ExecRun { exit_code, stdout_bytes, stderr })
    }

    async fn resize_exec(&self, id: &str, rows: u16, cols: u16) -> Result<(), EngineError> {
        super::interactive::resize(&self.docker, id, rows, cols).await
    }

    async fn signal_exec(&self, id: &str, signal: i32) -> Result<(), EngineError> {
        super::interactive::signal(&self.docker, id, signal).await
    }

    async fn connect_port(&self, container: &str, port: u16) -> Result<super::engine::PortStream, EngineError> {
        super::interactive::connect_port(&self.docker, container, port).await
    }

    async fn exec_exit_code(&self, id: &str) -> Result<i64, EngineError> {
        // The output stream can end a moment before podman records the exit code: asked
        // every 100 ms, for EXIT_CODE_TIMEOUT in all (each answer included).
        let ask = async {
            loop {
                let info = self.docker.inspect_exec(id).await.map_err(|e| docker_err("inspect an exec", e))?;
                if info.running != Some(true)
                    && let Some(code) = info.exit_code
                {
                    return Ok(code);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        };
        tokio::time::timeout(EXIT_CODE_TIMEOUT, ask).await.map_err(|_| EngineError::Timeout {
            engine: crate::pods::engine::PODMAN,
            op: "wait for the command's exit code".into(),
            secs: EXIT_CODE_TIMEOUT.as_secs(),
        })?
    }

    fn logs(
        &self,
        container: &str,
        follow: bool,
        tail: Option<u32>,
    ) -> BoxStream<'static, Result<Output, EngineError>> {
        let opts = bollard::query_parameters::LogsOptions {
            follow,
            stdout: true,
            stderr: true,
            tail: tail.map_or_else(|| "all".to_owned(), |n| n.to_string()),
            ..Default::default()
        };
        let op = format!("read the logs of {container}");
        self.docker.logs(container, Some(opts)).map_ok(log_output).map_err(move |e| docker_err(&op, e)).boxed()
    }
}

fn log_output(o: bollard::container::LogOutput) -> Output {
    use bollard::container::LogOutput as L;
    match o {
        L::StdErr { message } => Output::Stderr(message),
        L::StdOut { message } | L::Console { message } | L::StdIn { message } => Output::Stdout(message),
    }
}

pub(super) fn docker_err(op: &str, e: bollard::errors::Error) -> EngineError {
    use bollard::errors::Error as E;
    match e {
        E::DockerResponseServerError { status_code: 404, message } => {
            EngineError::NotFound { engine: crate::pods::engine::PODMAN, op: op.to_owned(), message }
        }
        E::DockerResponseServerError { status_code: 400..=599, message }
            if ErrorBody::says_exists(message.as_bytes()) =>
        {
            EngineError::AlreadyExists { engine: crate::pods::engine::PODMAN, op: op.to_owned(), message }
        }
        E::DockerResponseServerError { status_code: 409, message } => {
            EngineError::Conflict { engine: crate::pods::engine::PODMAN, op: op.to_owned(), message }
        }
        E::DockerResponseServerError { status_code, message } => {
            EngineError::Api { engine: crate::pods::engine::PODMAN, op: op.to_owned(), status: status_code, message }
        }
        other => api_err(op, other.to_string()),
    }
}

/// Pod start/stop answer 200 with a list of per-container errors (or 304 and nothing).
fn pod_errors(op: &str, report: Option<&[u8]>) -> Result<(), EngineError> {
    match report.and_then(PodActionReport::errors) {
        Some(errors) => Err(api_err(op, errors)),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pod_report_with_container_errors_is_an_error() {
        assert!(pod_errors("stop pod p", None).is_ok(), "304: in that state already");
        assert!(pod_errors("stop pod p", Some(br#"{"Errs":null,"Id":"x"}"#)).is_ok());
        let e = pod_errors("start pod p", Some(br#"{"Errs":["c: no such file"],"Id":"x"}"#)).unwrap_err();
        assert_eq!(e.to_string(), "podman could not start pod p: c: no such file");
    }

    #[test]
    fn docker_errors_are_typed_like_libpods() {
        let err = |status_code, message: &str| bollard::errors::Error::DockerResponseServerError {
            status_code,
            message: message.into(),
        };
        let e = docker_err("run a command in c", err(404, "no container with name or ID c found"));
        assert!(matches!(e, EngineError::NotFound { .. }), "{e:?}");
        let e = docker_err("run a command in c", err(409, "container state improper"));
        assert_eq!(e.to_string(), "podman could not run a command in c: container state improper");
        assert!(matches!(docker_err("x", err(500, "boom")), EngineError::Api { status: 500, .. }));
    }
}
