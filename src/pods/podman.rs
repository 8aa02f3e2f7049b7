//! The podman implementation of [`Engine`], over the API socket: the libpod API for pods,
//! volumes, images and container creation (see `libpod.rs`), bollard's Docker-compatible
//! client for exec and logs, which need a hijacked or streamed connection.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bollard::Docker;
use bollard::exec::{CreateExecOptions, StartExecOptions, StartExecResults};
use futures_util::stream::BoxStream;
use futures_util::{StreamExt, TryStreamExt};
use hyper::Method;
use serde::Deserialize;
use serde_json::{Value, json};

use super::engine::{ContainerInfo, Engine, EngineError, ExecSession, ExecSpec, Output, PodInfo, PublishedPort};
use super::libpod::{Body, Libpod, enc, label_filter};
use super::naming::Role;
use super::plan::{BuildPlan, ContainerPlan, MountPlan, PodSpec, VolumePlan};

/// Where the podman API socket is: `CONTAINER_HOST`/`DOCKER_HOST` (`unix://…`), else the
/// rootless socket under `$XDG_RUNTIME_DIR` for non-root users, else `/run/podman/podman.sock`.
pub fn default_socket() -> PathBuf {
    for var in ["CONTAINER_HOST", "DOCKER_HOST"] {
        if let Ok(v) = std::env::var(var)
            && let Some(path) = v.strip_prefix("unix://")
        {
            return PathBuf::from(path);
        }
    }
    if !is_root()
        && let Some(dir) = std::env::var_os("XDG_RUNTIME_DIR")
    {
        return PathBuf::from(dir).join("podman/podman.sock");
    }
    PathBuf::from("/run/podman/podman.sock")
}

/// Whether devaipod runs as root (rootful podman, `/run` paths).
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc_geteuid() == 0 }
}

unsafe extern "C" {
    #[link_name = "geteuid"]
    fn libc_geteuid() -> u32;
}

#[derive(Clone)]
pub struct Podman {
    api: Libpod,
    docker: Docker,
}

impl Podman {
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

    /// Reads a stream of JSON lines (`{"stream": …}`, `{"error": …}`) from build or pull.
    async fn json_lines(
        stream: impl futures_util::Stream<Item = Result<bytes::Bytes, EngineError>>,
        progress: &(dyn Fn(&str) + Send + Sync),
    ) -> Result<Option<String>, EngineError> {
        let mut stream = std::pin::pin!(stream);
        let mut buf = Vec::new();
        let mut error = None;
        while let Some(chunk) = stream.next().await {
            buf.extend_from_slice(&chunk?);
            while let Some(pos) = buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = buf.drain(..=pos).collect();
                let Ok(v) = serde_json::from_slice::<Value>(&line) else {
                    continue;
                };
                if let Some(s) = v.get("stream").and_then(Value::as_str) {
                    for l in s.lines().filter(|l| !l.trim().is_empty()) {
                        progress(l);
                    }
                }
                if let Some(e) = v.get("error").and_then(Value::as_str) {
                    error = Some(e.trim().to_owned());
                }
            }
        }
        Ok(error)
    }
}

fn api_err(op: &str, message: impl Into<String>) -> EngineError {
    EngineError::Api { op: op.to_owned(), status: 0, message: message.into() }
}

/// The libpod container spec of a plan.
fn container_spec(pod: &str, c: &ContainerPlan) -> Result<Value, EngineError> {
    let op = format!("create container {}", c.name);
    let mut env = c.env.clone();
    env.extend(c.trusted_env.iter().map(|(k, v)| (k.clone(), v.0.clone())));
    let (mut volumes, mut mounts) = (Vec::new(), Vec::new());
    for m in &c.mounts {
        match m {
            MountPlan::Volume { name, target, readonly } => {
                let options: Vec<&str> = if *readonly { vec!["ro"] } else { vec![] };
                volumes.push(json!({ "Name": name, "Dest": target, "Options": options }));
            }
            MountPlan::Bind { source, target, readonly } => {
                let mut options = vec!["rbind"];
                if *readonly {
                    options.push("ro");
                }
                mounts.push(json!({ "type": "bind", "source": source, "destination": target, "options": options }));
            }
            MountPlan::Tmpfs { target } => {
                mounts.push(json!({ "type": "tmpfs", "source": "tmpfs", "destination": target, "options": ["rw", "nosuid", "nodev"] }));
            }
        }
    }
    let mut spec = json!({
        "name": c.name,
        "pod": pod,
        "image": c.image,
        // The plan's argv replaces the image's ENTRYPOINT and CMD both.
        "entrypoint": c.command.first().map(|e| vec![e.clone()]).unwrap_or_default(),
        "command": c.command.get(1..).unwrap_or_default(),
        "work_dir": c.workdir,
        "env": env,
        "secret_env": c.secret_env,
        "labels": c.labels,
        "init": c.init,
        "cap_drop": c.cap_drop,
        "cap_add": c.cap_add,
        "no_new_privileges": c.no_new_privileges,
        "privileged": c.privileged,
        "volumes": volumes,
        "mounts": mounts,
        "devices": c.devices.iter().map(|d| json!({ "path": d })).collect::<Vec<_>>(),
    });
    if let Some(user) = &c.user {
        spec["user"] = json!(user);
    }
    if let Some(size) = c.shm_size {
        spec["shm_size"] = json!(size);
    }
    let mut selinux = Vec::new();
    for opt in &c.security_opt {
        let (k, v) = opt.split_once(['=', ':']).unwrap_or((opt, ""));
        match k {
            "seccomp" => spec["seccomp_profile_path"] = json!(v),
            "apparmor" => spec["apparmor_profile"] = json!(v),
            "label" => selinux.push(v.to_owned()),
            "no-new-privileges" => spec["no_new_privileges"] = json!(v != "false"),
            _ => {
                return Err(api_err(
                    &op,
                    format!(
                        "security option `{opt}` is not supported (seccomp=, apparmor=, label=, no-new-privileges)"
                    ),
                ));
            }
        }
    }
    if !selinux.is_empty() {
        spec["selinux_opts"] = json!(selinux);
    }
    Ok(spec)
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ListedPod {
    name: String,
    status: String,
    #[serde(default)]
    created: String,
    #[serde(default)]
    labels: Option<BTreeMap<String, String>>,
    #[serde(default)]
    containers: Vec<ListedContainer>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ListedContainer {
    names: String,
    status: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct InspectedPod {
    name: String,
    state: String,
    #[serde(default)]
    created: String,
    #[serde(default)]
    labels: Option<BTreeMap<String, String>>,
    #[serde(default)]
    containers: Vec<InspectedContainer>,
    #[serde(default)]
    infra_config: Option<InfraConfig>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct InspectedContainer {
    name: String,
    state: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct InfraConfig {
    #[serde(default)]
    port_bindings: Option<BTreeMap<String, Vec<PortBinding>>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct PortBinding {
    #[serde(default)]
    host_ip: String,
    host_port: String,
}

/// Podman combines several label filters with OR for some object types (seen on 4.3 for
/// pods and volumes), so every listing checks all labels itself as well.
fn has_all(have: Option<&BTreeMap<String, String>>, want: &[(&str, &str)]) -> bool {
    want.iter().all(|(k, v)| have.and_then(|h| h.get(*k)).is_some_and(|x| x == v))
}

/// The role of a container, from its name `devaipod-<name>-<role>` (infra has none).
fn role_of(container: &str, pod: &str) -> Option<Role> {
    container.strip_prefix(pod)?.strip_prefix('-').and_then(Role::parse)
}

impl Engine for Podman {
    async fn ping(&self) -> Result<(), EngineError> {
        // `_ping`, not `/version`: the latter asks the OCI runtime and conmon for their
        // versions and costs ~100 ms.
        self.api.call_with_timeout("answer", Method::GET, "/_ping", Body::Empty, Duration::from_secs(5)).await?;
        Ok(())
    }

    async fn image_exists(&self, reference: &str) -> Result<bool, EngineError> {
        self.exists(&format!("find image {reference}"), &format!("/images/{}/exists", enc(reference))).await
    }

    async fn pull_image(&self, reference: &str) -> Result<(), EngineError> {
        let op = format!("pull image {reference}");
        let path = format!("/images/pull?reference={}&quiet=true", enc(reference));
        let pull = async {
            let stream = self.api.stream(&op, Method::POST, &path, Body::Empty, Duration::from_secs(120)).await?;
            Self::json_lines(stream, &|_| {}).await
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
        match Self::json_lines(stream, progress).await? {
            None => Ok(()),
            Some(message) => Err(EngineError::Build { message }),
        }
    }

    async fn secret_exists(&self, name: &str) -> Result<bool, EngineError> {
        self.exists(&format!("find secret {name}"), &format!("/secrets/{}/json", enc(name))).await
    }

    async fn create_secret(&self, name: &str, value: &str) -> Result<(), EngineError> {
        let op = format!("create secret {name}");
        let path = format!("/secrets/create?name={}", enc(name));
        self.api.call(&op, Method::POST, &path, Body::Raw(value.as_bytes().to_vec())).await?;
        Ok(())
    }

    async fn secret_value(&self, name: &str, image: &str, scratch: &std::path::Path) -> Result<String, EngineError> {
        let op = format!("read secret {name}");
        let info: serde_json::Value =
            self.api.get_json(&op, &format!("/secrets/{}/json?showsecret=true", enc(name))).await?;
        if let Some(data) = info["SecretData"].as_str().filter(|d| !d.is_empty()) {
            return Ok(data.to_owned());
        }
        let suffix: u64 = rand::random();
        let container = format!("devaipod-secret-read-{suffix:016x}");
        // The value goes to a k8s-file log in the caller's private directory (not the
        // journal, podman's default on systemd hosts), read back through the API.
        let log = scratch.join(format!("{container}.log"));
        let spec = json!({
            "name": container,
            "image": image,
            "entrypoint": ["printenv", "DEVAIPOD_SECRET"],
            "command": [],
            "secret_env": { "DEVAIPOD_SECRET": name },
            "netns": { "nsmode": "none" },
            "log_configuration": { "driver": "k8s-file", "path": log },
            "labels": { "io.devaipod.role": "secret-reader" },
        });
        // Detached: a caller that goes away cannot skip the cleanup.
        let this = self.clone();
        let task = tokio::spawn(async move {
            let remove = format!("/containers/{}?force=true", enc(&container));
            this.api.call(&op, Method::POST, "/containers/create", Body::Json(spec)).await?;
            let read = async {
                this.api
                    .call(&op, Method::POST, &format!("/containers/{}/start", enc(&container)), Body::Empty)
                    .await?;
                let wait = format!("/containers/{}/wait?condition=exited", enc(&container));
                this.api.call_with_timeout(&op, Method::POST, &wait, Body::Empty, Duration::from_secs(30)).await?;
                let mut out = Vec::new();
                let mut logs = this.logs(&container, false, None);
                while let Some(chunk) = logs.next().await {
                    if let Output::Stdout(b) = chunk? {
                        out.extend_from_slice(&b);
                    }
                }
                Ok::<_, EngineError>(String::from_utf8_lossy(&out).trim_end_matches('\n').to_owned())
            }
            .await;
            let _ = this.api.call(&op, Method::DELETE, &remove, Body::Empty).await;
            let _ = tokio::fs::remove_file(&log).await;
            let value = read?;
            if value.is_empty() {
                return Err(EngineError::Api { op, status: 0, message: "the secret is empty".into() });
            }
            Ok(value)
        });
        task.await.map_err(|e| EngineError::Api {
            op: format!("read secret {name}"),
            status: 0,
            message: e.to_string(),
        })?
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

    async fn container_env(&self, name: &str) -> Result<BTreeMap<String, String>, EngineError> {
        let v: Value =
            self.api.get_json(&format!("inspect container {name}"), &format!("/containers/{}/json", enc(name))).await?;
        let env = v.pointer("/Config/Env").and_then(Value::as_array).cloned().unwrap_or_default();
        Ok(env
            .iter()
            .filter_map(Value::as_str)
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect())
    }

    async fn pod_exists(&self, name: &str) -> Result<bool, EngineError> {
        self.exists(&format!("find pod {name}"), &format!("/pods/{}/exists", enc(name))).await
    }

    async fn create_volume(&self, v: &VolumePlan) -> Result<(), EngineError> {
        let body = json!({ "Name": v.name, "Labels": v.labels });
        self.api.call(&format!("create volume {}", v.name), Method::POST, "/volumes/create", Body::Json(body)).await?;
        Ok(())
    }

    async fn create_pod(&self, pod: &PodSpec) -> Result<(), EngineError> {
        let ports: Vec<Value> = pod
            .ports
            .iter()
            .map(|p| json!({ "container_port": p, "host_ip": "127.0.0.1", "host_port": 0, "protocol": "tcp" }))
            .collect();
        let body = json!({ "name": pod.name, "hostname": pod.hostname, "labels": pod.labels, "portmappings": ports });
        self.api.call(&format!("create pod {}", pod.name), Method::POST, "/pods/create", Body::Json(body)).await?;
        Ok(())
    }

    async fn create_container(&self, pod: &str, c: &ContainerPlan) -> Result<(), EngineError> {
        let spec = container_spec(pod, c)?;
        self.api
            .call(&format!("create container {}", c.name), Method::POST, "/containers/create", Body::Json(spec))
            .await?;
        Ok(())
    }

    async fn start_container(&self, name: &str) -> Result<(), EngineError> {
        let op = format!("start container {name}");
        self.api.call(&op, Method::POST, &format!("/containers/{}/start", enc(name)), Body::Empty).await?;
        Ok(())
    }

    async fn start_pod(&self, name: &str) -> Result<(), EngineError> {
        let op = format!("start pod {name}");
        let out = self.api.call(&op, Method::POST, &format!("/pods/{}/start", enc(name)), Body::Empty).await?;
        pod_errors(&op, &out)
    }

    async fn stop_pod(&self, name: &str, grace_secs: u32) -> Result<(), EngineError> {
        let op = format!("stop pod {name}");
        let path = format!("/pods/{}/stop?t={grace_secs}", enc(name));
        let timeout = CALL_TIMEOUT_FOR_STOP + Duration::from_secs(grace_secs.into());
        let out = self.api.call_with_timeout(&op, Method::POST, &path, Body::Empty, timeout).await?;
        pod_errors(&op, &out)
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
        let pods: Vec<ListedPod> =
            self.api.get_json("list pods", &format!("/pods/json?filters={}", label_filter(labels))).await?;
        Ok(pods
            .into_iter()
            .filter(|p| has_all(p.labels.as_ref(), labels))
            .map(|p| PodInfo {
                containers: p
                    .containers
                    .into_iter()
                    .map(|c| ContainerInfo { role: role_of(&c.names, &p.name), name: c.names, state: c.status })
                    .collect(),
                name: p.name,
                status: p.status,
                created: p.created,
                labels: p.labels.unwrap_or_default(),
                ports: Vec::new(),
            })
            .collect())
    }

    async fn inspect_pod(&self, name: &str) -> Result<PodInfo, EngineError> {
        let p: InspectedPod =
            self.api.get_json(&format!("inspect pod {name}"), &format!("/pods/{}/json", enc(name))).await?;
        let mut ports = Vec::new();
        for (key, bindings) in p.infra_config.and_then(|i| i.port_bindings).unwrap_or_default() {
            let Some(container_port) = key.split('/').next().and_then(|p| p.parse().ok()) else {
                continue;
            };
            for b in bindings {
                if let Ok(host_port) = b.host_port.parse() {
                    ports.push(PublishedPort { container_port, host_ip: b.host_ip, host_port });
                }
            }
        }
        Ok(PodInfo {
            containers: p
                .containers
                .into_iter()
                .map(|c| ContainerInfo { role: role_of(&c.name, &p.name), name: c.name, state: c.state })
                .collect(),
            name: p.name,
            status: p.state,
            created: p.created,
            labels: p.labels.unwrap_or_default(),
            ports,
        })
    }

    async fn list_volumes(&self, labels: &[(&str, &str)]) -> Result<Vec<String>, EngineError> {
        #[derive(Deserialize)]
        #[serde(rename_all = "PascalCase")]
        struct V {
            name: String,
            #[serde(default)]
            labels: Option<BTreeMap<String, String>>,
        }
        let vols: Vec<V> =
            self.api.get_json("list volumes", &format!("/volumes/json?filters={}", label_filter(labels))).await?;
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
                    cmd: Some(spec.argv.clone()),
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

    async fn exec_exit_code(&self, id: &str) -> Result<i64, EngineError> {
        // The output stream can end a moment before podman records the exit code.
        for _ in 0..50 {
            let info = self.docker.inspect_exec(id).await.map_err(|e| docker_err("inspect an exec", e))?;
            if info.running != Some(true)
                && let Some(code) = info.exit_code
            {
                return Ok(code);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(EngineError::Timeout { op: "wait for the command's exit code".into(), secs: 5 })
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

const CALL_TIMEOUT_FOR_STOP: Duration = Duration::from_secs(30);

fn log_output(o: bollard::container::LogOutput) -> Output {
    use bollard::container::LogOutput as L;
    match o {
        L::StdErr { message } => Output::Stderr(message),
        L::StdOut { message } | L::Console { message } | L::StdIn { message } => Output::Stdout(message),
    }
}

fn docker_err(op: &str, e: bollard::errors::Error) -> EngineError {
    use bollard::errors::Error as E;
    match e {
        E::DockerResponseServerError { status_code: 404, message } => {
            EngineError::NotFound { what: format!("{op}: {message}") }
        }
        E::DockerResponseServerError { status_code: 409, message } => {
            EngineError::Conflict { what: format!("{op}: {message}") }
        }
        E::DockerResponseServerError { status_code, message } => {
            EngineError::Api { op: op.to_owned(), status: status_code, message }
        }
        other => api_err(op, other.to_string()),
    }
}

/// Pod start/stop answer 200 with a list of per-container errors.
fn pod_errors(op: &str, body: &[u8]) -> Result<(), EngineError> {
    let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    match v.get("Errs").and_then(Value::as_array) {
        Some(errs) if !errs.is_empty() => {
            let msgs: Vec<String> =
                errs.iter().map(|e| e.as_str().map_or_else(|| e.to_string(), str::to_owned)).collect();
            Err(api_err(op, msgs.join("; ")))
        }
        _ => Ok(()),
    }
}

/// A tar of the build context; a Containerfile outside the context is added to it.
/// Returns the archive and the Containerfile's path inside it.
fn build_context(context: &Path, dockerfile: &Path) -> Result<(Vec<u8>, String), String> {
    if !context.is_dir() {
        return Err(format!("build context {} is not a directory", context.display()));
    }
    if !dockerfile.is_file() {
        return Err(format!("Containerfile {} does not exist", dockerfile.display()));
    }
    let mut tar = tar::Builder::new(Vec::new());
    tar.follow_symlinks(false);
    tar.append_dir_all(".", context).map_err(|e| format!("cannot read build context {}: {e}", context.display()))?;
    let inside = match dockerfile.strip_prefix(context) {
        Ok(rel) => rel.to_string_lossy().into_owned(),
        Err(_) => {
            let name = ".devaipod.Containerfile";
            tar.append_path_with_name(dockerfile, name)
                .map_err(|e| format!("cannot read {}: {e}", dockerfile.display()))?;
            name.to_owned()
        }
    };
    let bytes = tar.into_inner().map_err(|e| e.to_string())?;
    Ok((bytes, inside))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pods::naming::WorkspaceName;
    use crate::pods::plan::Redacted;

    #[test]
    fn container_spec_maps_the_plan() {
        let n = WorkspaceName::new("w").unwrap();
        let c = ContainerPlan {
            name: n.container(Role::Workspace),
            role: Role::Workspace,
            image: "img".into(),
            command: vec!["/run/podman-init".into(), "-P".into()],
            user: Some("1000:1000".into()),
            workdir: "/workspaces/w".into(),
            env: BTreeMap::from([("A".into(), "1".into())]),
            trusted_env: BTreeMap::from([("T".into(), Redacted("s".into()))]),
            secret_env: BTreeMap::from([("K".into(), "sec".into())]),
            mounts: vec![
                MountPlan::Volume { name: "v".into(), target: "/v".into(), readonly: true },
                MountPlan::Bind { source: "/h".into(), target: "/b".into(), readonly: false },
                MountPlan::Tmpfs { target: "/t".into() },
            ],
            cap_drop: vec!["ALL".into()],
            cap_add: vec!["NET_BIND_SERVICE".into()],
            no_new_privileges: true,
            privileged: false,
            security_opt: vec!["seccomp=unconfined".into(), "label=disable".into()],
            devices: vec!["/dev/fuse".into()],
            shm_size: Some(1024),
            init: true,
            labels: BTreeMap::new(),
        };
        let s = container_spec("devaipod-w", &c).unwrap();
        assert_eq!(s["pod"], "devaipod-w");
        assert_eq!(s["env"], json!({"A": "1", "T": "s"}));
        assert_eq!(s["secret_env"], json!({"K": "sec"}));
        assert_eq!(s["volumes"], json!([{"Name": "v", "Dest": "/v", "Options": ["ro"]}]));
        assert_eq!(s["mounts"][0], json!({"type": "bind", "source": "/h", "destination": "/b", "options": ["rbind"]}));
        assert_eq!(s["mounts"][1]["type"], "tmpfs");
        assert_eq!(s["cap_drop"], json!(["ALL"]));
        assert_eq!(s["no_new_privileges"], true);
        assert_eq!(s["init"], true);
        assert_eq!(s["seccomp_profile_path"], "unconfined");
        assert_eq!(s["selinux_opts"], json!(["disable"]));
        assert_eq!(s["devices"], json!([{"path": "/dev/fuse"}]));
        assert_eq!(s["user"], "1000:1000");

        let bad = ContainerPlan { security_opt: vec!["systempaths=unconfined".into()], ..c };
        let e = container_spec("p", &bad).unwrap_err().to_string();
        assert!(e.contains("security option `systempaths=unconfined` is not supported"), "{e}");
    }

    #[test]
    fn listings_require_every_label() {
        let have = BTreeMap::from([("a".to_owned(), "1".to_owned()), ("b".to_owned(), "2".to_owned())]);
        assert!(has_all(Some(&have), &[("a", "1"), ("b", "2")]));
        assert!(!has_all(Some(&have), &[("a", "1"), ("b", "3")]));
        assert!(!has_all(None, &[("a", "1")]));
        assert!(has_all(None, &[]));
    }

    #[test]
    fn roles_come_from_container_names() {
        assert_eq!(role_of("devaipod-w-agent", "devaipod-w"), Some(Role::Agent));
        assert_eq!(role_of("devaipod-w-workspace", "devaipod-w"), Some(Role::Workspace));
        assert_eq!(role_of("1234abcd-infra", "devaipod-w"), None);
    }
}
