//! `Kube`: the [`Engine`] on a Kubernetes API (kube-rs), for `[engine] kind = "kubernetes"`.
//!
//! The mapping: a devaipod pod is the set of Kubernetes Pods labelled
//! `io.devaipod.pod=<pod>`; each of its containers is a Pod of its own, named as the
//! container (the agent needs a network namespace of its own: see `render`), made by
//! [`render::container_pod`] when the container is created (Pods start when created;
//! "start" waits until it runs). A container on a loopback-only network (an agent,
//! a worker, a candidate) gets a NetworkPolicy selecting its Pod alone, made before the
//! Pod, that denies it all ingress and egress. Volumes are PersistentVolumeClaims,
//! secrets are Secrets (key `value`). Commands run through the exec API (as the
//! container's user), logs stream from the log API, lists select by label. Images are the
//! nodes' business (they pull when a Pod starts; a Pod whose image cannot be pulled fails
//! its start with the kubelet's reason). Stopping a container deletes its Pod (its claims
//! stay; devaipod makes a worker's or candidate's container again from its kept plan).
//! What Kubernetes has no call for (building or inspecting images, stopping a whole
//! workspace, throwaway helper containers, compose services) fails with a message saying
//! so. Every call is bounded by the engine's timeout.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream::{self, BoxStream, StreamExt};
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod, Secret};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::{Api, AttachParams, DeleteParams, ListParams, LogParams, PostParams};
use serde_json::json;

use super::render::{self, PodMeta, RenderOptions, SECRET_KEY, trusted_secret};
use crate::pods::engine::{
    ContainerInfo, ContainerState, Engine, EngineError, EngineInfo, ExecRun, ExecSession, ExecSpec, HelperOutput,
    HelperRun, ImageFacts, KUBERNETES, Output, PodInfo, pump_to,
};
use crate::pods::naming::{self, Role};
use crate::pods::plan::{BuildPlan, ContainerNetwork, ContainerPlan, PodSpec, SecretPlan, VolumePlan};

/// The label joining a devaipod pod's Kubernetes Pods.
pub const LABEL_POD: &str = "io.devaipod.pod";
/// The label naming the container a Pod runs: its NetworkPolicy selects it by that.
pub const LABEL_CONTAINER: &str = "io.devaipod.container";
/// Default bound of one API call.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a Pod may take to run (scheduled, its image pulled, started) before its start
/// fails.
pub const START_TIMEOUT: Duration = Duration::from_secs(300);
/// How often a starting or a deleted Pod is looked at.
const POLL: Duration = Duration::from_millis(250);
/// The kubelet's reasons for a container that will not start without a change.
const STUCK: [&str; 7] = [
    "ErrImagePull",
    "ImagePullBackOff",
    "InvalidImageName",
    "ErrImageNeverPull",
    "CreateContainerConfigError",
    "CreateContainerError",
    "CrashLoopBackOff",
];

type ExitStatus =
    futures_util::future::BoxFuture<'static, Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Status>>;

pub struct Kube {
    client: kube::Client,
    namespace: String,
    timeout: Duration,
    start_timeout: Duration,
    /// The node every Pod goes to (the daemon's: its sockets' directories are there).
    node: Option<String>,
    /// Pods created but whose containers are not all made yet (their hostname, ports).
    pods: Mutex<HashMap<String, PodSpec>>,
    /// Running execs' exit statuses, by id.
    execs: Arc<Mutex<HashMap<String, ExitStatus>>>,
    volume_size: String,
}

impl Kube {
    /// An engine on `client`, in its default namespace.
    pub fn new(client: kube::Client) -> Kube {
        Kube {
            namespace: client.default_namespace().to_owned(),
            client,
            timeout: CALL_TIMEOUT,
            start_timeout: START_TIMEOUT,
            node: None,
            pods: Mutex::new(HashMap::new()),
            execs: Arc::new(Mutex::new(HashMap::new())),
            volume_size: render::DEFAULT_VOLUME_SIZE.to_owned(),
        }
    }

    /// The cluster of the kubeconfig (`KUBECONFIG`, `~/.kube/config`; `context` or its
    /// current one) or, inside a Pod, of the ServiceAccount; `namespace` or the config's.
    pub async fn connect(context: Option<&str>, namespace: Option<&str>) -> Result<Kube, EngineError> {
        let unavailable = |reason: String| EngineError::Kubernetes { op: "connect".into(), status: 0, message: reason };
        let config = match context {
            Some(ctx) => {
                let opts = kube::config::KubeConfigOptions { context: Some(ctx.to_owned()), ..Default::default() };
                kube::Config::from_kubeconfig(&opts)
                    .await
                    .map_err(|e| unavailable(format!("kubeconfig context {ctx}: {e}")))?
            }
            None => kube::Config::infer().await.map_err(|e| {
                unavailable(format!("no kubeconfig and not in a cluster ({e}): set KUBECONFIG or run in a Pod"))
            })?,
        };
        let mut config = config;
        if let Some(ns) = namespace {
            config.default_namespace = ns.to_owned();
        }
        let client = kube::Client::try_from(config).map_err(|e| unavailable(e.to_string()))?;
        Ok(Kube::new(client))
    }

    /// Bounds every call by `timeout` instead of [`CALL_TIMEOUT`].
    pub fn with_timeout(mut self, timeout: Duration) -> Kube {
        self.timeout = timeout;
        self
    }

    /// Puts every Pod on node `node` (its `kubernetes.io/hostname` label): the daemon's,
    /// where the agents' socket directories are.
    pub fn with_node(mut self, node: Option<String>) -> Kube {
        self.node = node.filter(|n| !n.is_empty());
        self
    }

    /// Gives a starting Pod `timeout` instead of [`START_TIMEOUT`].
    pub fn with_start_timeout(mut self, timeout: Duration) -> Kube {
        self.start_timeout = timeout;
        self
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    fn pods_api(&self) -> Api<Pod> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }
    fn claims(&self) -> Api<PersistentVolumeClaim> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }
    fn secrets(&self) -> Api<Secret> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }
    fn policies(&self) -> Api<NetworkPolicy> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    /// One API call, bounded, its error in devaipod's words.
    async fn call<T>(&self, op: &str, f: impl Future<Output = Result<T, kube::Error>>) -> Result<T, EngineError> {
        match tokio::time::timeout(self.timeout, f).await {
            Ok(r) => r.map_err(|e| map_error(op, &self.namespace, e)),
            Err(_) => {
                Err(EngineError::Timeout { engine: KUBERNETES, op: op.to_owned(), secs: self.timeout.as_secs().max(1) })
            }
        }
    }

    async fn pods_of(&self, pod: &str) -> Result<Vec<Pod>, EngineError> {
        let lp = ListParams::default().labels(&format!("{LABEL_POD}={pod}"));
        Ok(self.call(&format!("list the Pods of {pod}"), self.pods_api().list(&lp)).await?.items)
    }

    /// What a new container of `pod` runs with: the pod as created, or, for one created
    /// before this daemon started (a worker made later), as its Pods carry it.
    async fn pod_meta(&self, pod: &str, container: &str) -> Result<PodMeta, EngineError> {
        let known = self.pods.lock().map_err(|_| poisoned())?.get(pod).cloned();
        if let Some(spec) = known {
            return Ok(PodMeta {
                name: spec.name,
                hostname: spec.hostname,
                labels: spec.labels,
                ports: spec.ports,
                add_hosts: spec.add_hosts,
            });
        }
        let existing = self.pods_of(pod).await?;
        let Some(first) = existing.first() else {
            return Err(EngineError::NotFound {
                engine: KUBERNETES,
                op: format!("create container {container}"),
                message: format!("pod {pod} does not exist (no Pod is labelled {LABEL_POD}={pod})"),
            });
        };
        let mut labels = devaipod_labels(&first.metadata);
        labels.retain(|k, _| ![naming::LABEL_ROLE, LABEL_POD, LABEL_CONTAINER].contains(&k.as_str()));
        let spec = first.spec.as_ref();
        let add_hosts = spec
            .and_then(|s| s.host_aliases.as_ref())
            .map(|a| {
                a.iter().flat_map(|h| h.hostnames.iter().flatten().map(move |n| format!("{n}:{}", h.ip))).collect()
            })
            .unwrap_or_default();
        Ok(PodMeta {
            name: pod.to_owned(),
            hostname: spec.and_then(|s| s.hostname.clone()).unwrap_or_else(|| pod.to_owned()),
            labels,
            ports: Vec::new(),
            add_hosts,
        })
    }

    /// The NetworkPolicy that walls a loopback-only container's Pod in: it selects that Pod
    /// alone and lists Ingress and Egress with no rule, so nothing reaches it and it reaches
    /// nothing. Made before the Pod; one left by a stopped container is kept.
    async fn wall(&self, pod: &str, container: &str, labels: &BTreeMap<String, String>) -> Result<(), EngineError> {
        let mut own = render::selector(labels);
        own.insert(LABEL_POD.into(), pod.to_owned());
        let policy: NetworkPolicy = serde_json::from_value(json!({
            "metadata": {"name": walls_of(container), "labels": own},
            "spec": {
                "podSelector": {"matchLabels": {LABEL_POD: pod, LABEL_CONTAINER: container}},
                "policyTypes": ["Ingress", "Egress"],
            },
        }))
        .map_err(|e| EngineError::Kubernetes {
            op: "make a NetworkPolicy".into(),
            status: 0,
            message: e.to_string(),
        })?;
        let op = format!("wall in container {container}");
        match self.call(&op, self.policies().create(&PostParams::default(), &policy)).await {
            Ok(_) | Err(EngineError::AlreadyExists { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Waits until Pod `name` runs: every container running. A container the kubelet
    /// will not start (its image cannot be pulled, its config is wrong, it crashes) or
    /// that exited fails at once with the kubelet's reason; a Pod still pending after the
    /// start timeout fails with what it waits for.
    async fn wait_running(&self, name: &str) -> Result<(), EngineError> {
        let op = format!("start container {name}");
        let deadline = tokio::time::Instant::now() + self.start_timeout;
        loop {
            let p = self.call(&op, self.pods_api().get(name)).await?;
            match starting(&p) {
                Start::Running => return Ok(()),
                Start::Failed(why) => {
                    return Err(EngineError::Kubernetes { op, status: 0, message: why });
                }
                Start::Pending(why) if tokio::time::Instant::now() >= deadline => {
                    return Err(EngineError::Kubernetes {
                        op,
                        status: 0,
                        message: format!("not running after {} s: {why}", self.start_timeout.as_secs()),
                    });
                }
                Start::Pending(_) => tokio::time::sleep(POLL).await,
            }
        }
    }

    /// Deletes Pod `name` and waits until it is gone (so that one of the same name can be
    /// made again). `NotFound` when there was none.
    async fn delete_pod(&self, name: &str, grace_secs: u32, op: &str) -> Result<(), EngineError> {
        let dp = DeleteParams { grace_period_seconds: Some(grace_secs), ..Default::default() };
        self.call(op, self.pods_api().delete(name, &dp)).await?;
        let deadline = tokio::time::Instant::now() + self.timeout + Duration::from_secs(u64::from(grace_secs));
        while self.call(op, self.pods_api().get_opt(name)).await?.is_some() {
            if tokio::time::Instant::now() >= deadline {
                return Err(EngineError::Timeout {
                    engine: KUBERNETES,
                    op: format!("{op} (the Pod is still terminating)"),
                    secs: (self.timeout.as_secs() + u64::from(grace_secs)).max(1),
                });
            }
            tokio::time::sleep(POLL).await;
        }
        Ok(())
    }

    async fn unwall(&self, container: &str) -> Result<(), EngineError> {
        let op = format!("remove the walls of {container}");
        match self.call(&op, self.policies().delete(&walls_of(container), &DeleteParams::default())).await {
            Ok(_) | Err(EngineError::NotFound { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }
}

/// A Pod's labels, with devaipod's labels whose values Kubernetes refuses as labels (the
/// workspace folder, the source URL), which `render` made annotations, read back as labels.
fn devaipod_labels(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> BTreeMap<String, String> {
    let mut labels = meta.labels.clone().unwrap_or_default();
    for (k, v) in meta.annotations.iter().flatten() {
        if k.starts_with("io.devaipod.") {
            labels.entry(k.clone()).or_insert_with(|| v.clone());
        }
    }
    labels
}

/// The NetworkPolicy of a loopback-only container.
pub fn walls_of(container: &str) -> String {
    format!("{container}-walls")
}

/// Where a starting Pod is.
#[derive(Debug, PartialEq)]
enum Start {
    Running,
    /// Not yet, and why (the kubelet's or the scheduler's words).
    Pending(String),
    /// It will not run without a change.
    Failed(String),
}

fn starting(p: &Pod) -> Start {
    let Some(status) = p.status.as_ref() else { return Start::Pending("not scheduled yet".into()) };
    if status.phase.as_deref() == Some("Failed") {
        let why = status.message.clone().or_else(|| status.reason.clone()).unwrap_or_else(|| "failed".into());
        return Start::Failed(format!("the Pod failed: {why}"));
    }
    let containers = status.container_statuses.as_deref().unwrap_or_default();
    for c in containers {
        let Some(state) = c.state.as_ref() else { continue };
        if let Some(w) = &state.waiting {
            let reason = w.reason.clone().unwrap_or_default();
            let said = w.message.clone().map(|m| format!(": {m}")).unwrap_or_default();
            if STUCK.contains(&reason.as_str()) {
                return Start::Failed(format!("{reason}{said}"));
            }
        }
        if let Some(t) = &state.terminated {
            let said = t.message.clone().or_else(|| t.reason.clone()).map(|m| format!(" ({m})")).unwrap_or_default();
            return Start::Failed(format!("its container exited with code {}{said}", t.exit_code));
        }
    }
    if !containers.is_empty() && containers.iter().all(|c| c.state.as_ref().is_some_and(|s| s.running.is_some())) {
        return Start::Running;
    }
    // Why it waits: a container's reason, else the scheduler's condition.
    let waiting = containers.iter().find_map(|c| {
        let w = c.state.as_ref()?.waiting.as_ref()?;
        Some(format!(
            "{}{}",
            w.reason.clone().unwrap_or_default(),
            w.message.clone().map(|m| format!(": {m}")).unwrap_or_default()
        ))
    });
    let condition = status
        .conditions
        .iter()
        .flatten()
        .find(|c| c.status == "False")
        .map(|c| format!("{} ({})", c.type_, c.message.clone().or_else(|| c.reason.clone()).unwrap_or_default()));
    Start::Pending(
        waiting.or(condition).unwrap_or_else(|| format!("phase {}", status.phase.as_deref().unwrap_or("Pending"))),
    )
}

/// A Kubernetes API error as the user should read it.
pub fn map_error(op: &str, namespace: &str, e: kube::Error) -> EngineError {
    match e {
        kube::Error::Api(s) => {
            let message = if s.message.is_empty() { s.reason.clone() } else { s.message.clone() };
            match s.code {
                404 => EngineError::NotFound { engine: KUBERNETES, op: op.to_owned(), message },
                409 if s.reason == "AlreadyExists" => {
                    EngineError::AlreadyExists { engine: KUBERNETES, op: op.to_owned(), message }
                }
                409 => EngineError::Conflict { engine: KUBERNETES, op: op.to_owned(), message },
                403 => EngineError::Kubernetes {
                    op: op.to_owned(),
                    status: 403,
                    message: format!(
                        "forbidden: {message}; the daemon's account needs the Role of docs/kubernetes.md in namespace {namespace}"
                    ),
                },
                401 => EngineError::Kubernetes {
                    op: op.to_owned(),
                    status: 401,
                    message: format!(
                        "the cluster refused the credentials ({message}): check the kubeconfig or the ServiceAccount token"
                    ),
                },
                code => EngineError::Kubernetes { op: op.to_owned(), status: code, message },
            }
        }
        other => EngineError::Kubernetes {
            op: op.to_owned(),
            status: 0,
            message: format!("cannot reach the Kubernetes API: {other}"),
        },
    }
}

fn unsupported(op: &str, instead: &str) -> EngineError {
    EngineError::Kubernetes {
        op: op.to_owned(),
        status: 501,
        message: format!("not supported on Kubernetes: {instead}"),
    }
}

/// devaipod's labels on the Kubernetes object (those Kubernetes accepts as labels).
fn labels_of(labels: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    labels.iter().filter(|(_, v)| render::is_label_value(v)).map(|(k, v)| (k.clone(), v.clone())).collect()
}

fn selector(labels: &[(&str, &str)]) -> String {
    labels.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",")
}

fn pod_state(p: &Pod) -> (String, Option<i64>) {
    let status = p.status.as_ref();
    let state =
        status.and_then(|s| s.container_statuses.as_ref()).and_then(|c| c.first()).and_then(|c| c.state.as_ref());
    match state {
        Some(s) if s.running.is_some() => ("running".into(), None),
        Some(s) if s.terminated.is_some() => ("exited".into(), s.terminated.as_ref().map(|t| i64::from(t.exit_code))),
        Some(_) => ("created".into(), None),
        None => (status.and_then(|s| s.phase.clone()).unwrap_or_else(|| "Pending".into()).to_ascii_lowercase(), None),
    }
}

/// The exit code in the exec API's final status: `Success`, or a cause `ExitCode`.
fn exit_code(status: Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Status>) -> i64 {
    match status {
        None => -1,
        Some(s) if s.status.as_deref() == Some("Success") => 0,
        Some(s) => s
            .details
            .and_then(|d| d.causes)
            .and_then(|c| c.into_iter().find(|c| c.reason.as_deref() == Some("ExitCode")))
            .and_then(|c| c.message?.parse().ok())
            .unwrap_or(-1),
    }
}

/// A command with its working directory and environment (the exec API has neither).
fn wrapped(spec: &ExecSpec) -> Vec<String> {
    if spec.workdir.is_none() && spec.env.is_empty() {
        return spec.argv.clone();
    }
    let mut argv = vec!["/usr/bin/env".to_owned()];
    if let Some(dir) = &spec.workdir {
        argv.extend(["-C".to_owned(), dir.clone()]);
    }
    argv.extend(spec.env.iter().map(|(k, v)| format!("{k}={v}")));
    argv.extend(spec.argv.iter().cloned());
    argv
}

fn read_stream(
    r: impl tokio::io::AsyncRead + Send + Unpin + 'static,
    wrap: fn(Bytes) -> Output,
) -> BoxStream<'static, Result<Output, EngineError>> {
    tokio_util::io::ReaderStream::new(r)
        .map(move |chunk| {
            chunk.map(wrap).map_err(|e| EngineError::Output { command: "exec".into(), message: e.to_string() })
        })
        .boxed()
}

impl Engine for Kube {
    async fn ping(&self) -> Result<(), EngineError> {
        self.call("reach the API", self.client.apiserver_version()).await.map(|_| ())
    }

    async fn info(&self) -> Result<EngineInfo, EngineError> {
        let v = self.call("read the API's version", self.client.apiserver_version()).await?;
        Ok(EngineInfo {
            socket: format!("kubernetes namespace {}", self.namespace).into(),
            version: v.git_version,
            api_version: format!("{}.{}", v.major, v.minor),
            rootless: false,
            cgroup_version: String::new(),
            cgroup_manager: String::new(),
            runtime: "kubernetes".into(),
            runtime_version: v.platform,
            storage_driver: String::new(),
        })
    }

    async fn run_helper(&self, run: &HelperRun) -> Result<HelperOutput, EngineError> {
        Err(unsupported(&format!("run a {} helper", run.role), "there are no throwaway helper containers"))
    }

    /// Always: the node pulls the image when the Pod starts, and a Pod whose image cannot
    /// be pulled fails its start with the kubelet's reason (`ErrImagePull`).
    async fn image_exists(&self, _reference: &str) -> Result<bool, EngineError> {
        Ok(true)
    }

    async fn pull_image(&self, _reference: &str) -> Result<(), EngineError> {
        Ok(())
    }

    async fn image_facts(&self, reference: &str) -> Result<ImageFacts, EngineError> {
        Err(unsupported(
            &format!("read image {reference}"),
            "images are not inspected through the API, and devcontainer features need a local build: build the image with its features elsewhere, push it, and name it in `image`",
        ))
    }

    async fn build_image(
        &self,
        build: &BuildPlan,
        _labels: &BTreeMap<String, String>,
        _progress: &(dyn Fn(&str) + Send + Sync),
    ) -> Result<(), EngineError> {
        Err(unsupported(&format!("build {}", build.tag), "build the image elsewhere and push it to a registry"))
    }

    async fn secret_exists(&self, name: &str) -> Result<bool, EngineError> {
        Ok(self.call(&format!("read secret {name}"), self.secrets().get_opt(name)).await?.is_some())
    }

    async fn create_secret(&self, secret: &SecretPlan) -> Result<(), EngineError> {
        let s: Secret = serde_json::from_value(json!({
            "metadata": {"name": secret.name, "labels": labels_of(&secret.labels)},
            "type": "Opaque",
            "data": {SECRET_KEY: crate::encode::base64(secret.value.0.as_bytes())},
        }))
        .map_err(|e| EngineError::Kubernetes {
            op: "make a Secret".into(),
            status: 0,
            message: e.to_string(),
        })?;
        let op = format!("create secret {}", secret.name);
        self.call(&op, self.secrets().create(&PostParams::default(), &s)).await.map(|_| ())
    }

    async fn remove_secret(&self, name: &str) -> Result<(), EngineError> {
        let op = format!("remove secret {name}");
        self.call(&op, self.secrets().delete(name, &DeleteParams::default())).await.map(|_| ())
    }

    async fn secret_value(
        &self,
        name: &str,
        _image: &str,
        _scratch: &std::path::Path,
        _instance: &str,
    ) -> Result<String, EngineError> {
        let op = format!("read secret {name}");
        let s = self.call(&op, self.secrets().get(name)).await?;
        let value = s.data.and_then(|mut d| d.remove(SECRET_KEY)).ok_or_else(|| EngineError::Kubernetes {
            op: op.clone(),
            status: 0,
            message: format!("the Secret has no key `{SECRET_KEY}`"),
        })?;
        String::from_utf8(value.0).map_err(|_| EngineError::Kubernetes {
            op,
            status: 0,
            message: "the value is not UTF-8".into(),
        })
    }

    async fn remove_helpers(&self, _instance: &str) -> Result<Vec<String>, EngineError> {
        // No helper containers are made on Kubernetes: none can be left.
        Ok(Vec::new())
    }

    async fn remove_image(&self, reference: &str) -> Result<(), EngineError> {
        // Nothing was built here; the nodes' image caches are the kubelet's.
        Err(EngineError::NotFound {
            engine: KUBERNETES,
            op: format!("remove image {reference}"),
            message: "images are not kept by devaipod on Kubernetes".into(),
        })
    }

    async fn container_env(&self, name: &str) -> Result<BTreeMap<String, String>, EngineError> {
        let p = self.call(&format!("read Pod {name}"), self.pods_api().get(name)).await?;
        let env = p.spec.and_then(|s| s.containers.into_iter().next()).and_then(|c| c.env).unwrap_or_default();
        Ok(env.into_iter().filter_map(|e| e.value.map(|v| (e.name, v))).collect())
    }

    async fn container_state(&self, name: &str) -> Result<ContainerState, EngineError> {
        let p = self.call(&format!("read Pod {name}"), self.pods_api().get(name)).await?;
        let (status, exit_code) = pod_state(&p);
        Ok(ContainerState { status, exit_code })
    }

    async fn pod_exists(&self, name: &str) -> Result<bool, EngineError> {
        Ok(!self.pods_of(name).await?.is_empty())
    }

    async fn create_volume(&self, volume: &VolumePlan) -> Result<(), EngineError> {
        let pvc: PersistentVolumeClaim = serde_json::from_value(json!({
            "metadata": {"name": volume.name, "labels": labels_of(&volume.labels)},
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": self.volume_size}}},
        }))
        .map_err(|e| EngineError::Kubernetes {
            op: "make a claim".into(),
            status: 0,
            message: e.to_string(),
        })?;
        let op = format!("create volume {}", volume.name);
        self.call(&op, self.claims().create(&PostParams::default(), &pvc)).await.map(|_| ())
    }

    async fn create_pod(&self, pod: &PodSpec) -> Result<(), EngineError> {
        // Kubernetes has no group of Pods to make: its containers' Pods carry its label.
        if self.pod_exists(&pod.name).await? {
            return Err(EngineError::AlreadyExists {
                engine: KUBERNETES,
                op: format!("create pod {}", pod.name),
                message: format!("Pods labelled {LABEL_POD}={} exist", pod.name),
            });
        }
        self.pods.lock().map_err(|_| poisoned())?.insert(pod.name.clone(), pod.clone());
        Ok(())
    }

    async fn create_container(&self, pod: &str, c: &ContainerPlan) -> Result<(), EngineError> {
        let op = format!("create container {}", c.name);
        if c.role == Role::Service {
            return Err(unsupported(
                &op,
                "compose services would need the workspace container's network namespace, which a Pod of their own does not share: run compose projects on podman",
            ));
        }
        if !render::is_label_value(&c.name) {
            return Err(EngineError::Kubernetes {
                op,
                status: 0,
                message: "the name is not a valid Kubernetes label value (at most 63 characters): choose a shorter workspace name".into(),
            });
        }
        let meta = self.pod_meta(pod, &c.name).await?;
        // The pod's labels (its folder, its source, …) on each of its Pods, as podman keeps
        // them on the pod: the container's own over them.
        let mut labels = meta.labels.clone();
        labels.extend(c.labels.iter().map(|(k, v)| (k.clone(), v.clone())));
        labels.insert(LABEL_POD.into(), pod.to_owned());
        labels.insert(LABEL_CONTAINER.into(), c.name.clone());
        let near = (c.role != Role::Workspace).then(|| {
            let mut l = render::selector(&labels);
            l.insert(naming::LABEL_ROLE.into(), Role::Workspace.as_str().into());
            l
        });
        let trusted = trusted_secret(pod);
        if !c.trusted_env.is_empty() {
            let data: BTreeMap<&String, String> =
                c.trusted_env.iter().map(|(k, v)| (k, crate::encode::base64(v.0.as_bytes()))).collect();
            let mut own = render::selector(&labels);
            own.insert(LABEL_POD.into(), pod.to_owned());
            let secret: Secret = serde_json::from_value(json!({
                "metadata": {"name": trusted, "labels": own},
                "type": "Opaque",
                "data": data,
            }))
            .map_err(|e| EngineError::Kubernetes {
                op: "make a Secret".into(),
                status: 0,
                message: e.to_string(),
            })?;
            let sop = format!("create secret {trusted}");
            match self.call(&sop, self.secrets().create(&PostParams::default(), &secret)).await {
                Ok(_) => {}
                Err(EngineError::AlreadyExists { .. }) => {
                    self.call(&sop, self.secrets().replace(&trusted, &PostParams::default(), &secret)).await?;
                }
                Err(e) => return Err(e),
            }
        }
        let mut warnings = Vec::new();
        let mut value = render::container_pod(
            &meta,
            c,
            &c.name,
            &labels,
            near.as_ref(),
            &trusted,
            &RenderOptions::default(),
            &mut warnings,
        );
        if let Some(node) = &self.node {
            value["spec"]["nodeSelector"] = json!({"kubernetes.io/hostname": node});
        }
        let object: Pod = serde_json::from_value(value).map_err(|e| EngineError::Kubernetes {
            op: format!("make Pod {}", c.name),
            status: 0,
            message: e.to_string(),
        })?;
        for w in warnings {
            tracing::warn!("{}: {w}", c.name);
        }
        let walled = c.network == ContainerNetwork::LoopbackOnly;
        if walled {
            self.wall(pod, &c.name, &labels).await?;
        }
        match self.call(&op, self.pods_api().create(&PostParams::default(), &object)).await {
            Ok(_) => Ok(()),
            Err(e) => {
                // No walls without their Pod (an earlier Pod of that name keeps its own).
                if walled && !matches!(e, EngineError::AlreadyExists { .. }) {
                    let _ = self.unwall(&c.name).await;
                }
                Err(e)
            }
        }
    }

    async fn start_container(&self, name: &str) -> Result<(), EngineError> {
        // A Pod starts when it is created: it must be there, and is waited for.
        self.wait_running(name).await
    }

    /// Deletes the container's Pod (its claims and walls stay): Kubernetes does not stop a
    /// Pod. A worker's or candidate's container is made again from its kept plan when it is
    /// next needed.
    async fn stop_container(&self, name: &str, grace_secs: u32) -> Result<(), EngineError> {
        match self.delete_pod(name, grace_secs, &format!("stop container {name}")).await {
            Ok(()) | Err(EngineError::NotFound { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn remove_container(&self, name: &str) -> Result<(), EngineError> {
        self.delete_pod(name, 0, &format!("remove container {name}")).await?;
        self.unwall(name).await
    }

    async fn start_pod(&self, name: &str) -> Result<(), EngineError> {
        let pods = self.pods_of(name).await?;
        if pods.is_empty() {
            return Err(EngineError::NotFound {
                engine: KUBERNETES,
                op: format!("start pod {name}"),
                message: format!("no Pod is labelled {LABEL_POD}={name}"),
            });
        }
        let names: Vec<String> = pods.into_iter().filter_map(|p| p.metadata.name).collect();
        futures_util::future::try_join_all(names.iter().map(|n| self.wait_running(n))).await.map(|_| ())
    }

    async fn stop_pod(&self, name: &str, _grace_secs: u32) -> Result<(), EngineError> {
        Err(unsupported(
            &format!("stop pod {name}"),
            "a workspace's Pods are not stopped (Kubernetes only deletes a Pod): keep it running, or delete it",
        ))
    }

    async fn remove_pod(&self, name: &str) -> Result<(), EngineError> {
        let pods = self.pods_of(name).await?;
        let known = self.pods.lock().map_err(|_| poisoned())?.remove(name).is_some();
        if pods.is_empty() && !known {
            return Err(EngineError::NotFound {
                engine: KUBERNETES,
                op: format!("remove pod {name}"),
                message: format!("no Pod is labelled {LABEL_POD}={name}"),
            });
        }
        let names: Vec<String> = pods.into_iter().filter_map(|p| p.metadata.name).collect();
        let removed = futures_util::future::join_all(names.iter().map(|n| self.remove_container(n))).await;
        for r in removed {
            match r {
                Ok(()) | Err(EngineError::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        // The walls of stopped containers and the trusted variables' Secret go with it.
        let lp = ListParams::default().labels(&format!("{LABEL_POD}={name}"));
        let walls = self.call(&format!("list the walls of {name}"), self.policies().list(&lp)).await?.items;
        for w in walls.into_iter().filter_map(|w| w.metadata.name) {
            let op = format!("remove NetworkPolicy {w}");
            match self.call(&op, self.policies().delete(&w, &DeleteParams::default())).await {
                Ok(_) | Err(EngineError::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        let trusted = trusted_secret(name);
        match self
            .call(&format!("remove secret {trusted}"), self.secrets().delete(&trusted, &DeleteParams::default()))
            .await
        {
            Ok(_) | Err(EngineError::NotFound { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn upload_archive(&self, container: &str, dest_dir: &str, tar: Vec<u8>) -> Result<(), EngineError> {
        let spec = ExecSpec {
            argv: vec!["tar".into(), "-x".into(), "-C".into(), dest_dir.into()],
            stdin: true,
            ..Default::default()
        };
        let mut session = self.exec(container, &spec).await?;
        use tokio::io::AsyncWriteExt;
        let failed = |e: std::io::Error| EngineError::Output { command: "tar -x".into(), message: e.to_string() };
        session.input.write_all(&tar).await.map_err(failed)?;
        session.input.shutdown().await.map_err(failed)?;
        let mut sink = tokio::io::sink();
        let (_, stderr) = pump_to(&mut session.output, &mut sink, u64::MAX, "tar -x").await?;
        match self.exec_exit_code(&session.id).await? {
            0 => Ok(()),
            code => Err(EngineError::Kubernetes {
                op: format!("upload into {container}:{dest_dir}"),
                status: 0,
                message: format!("tar exited with {code}: {}", stderr.trim()),
            }),
        }
    }

    async fn list_pods(&self, labels: &[(&str, &str)]) -> Result<Vec<PodInfo>, EngineError> {
        let lp = ListParams::default().labels(&selector(labels));
        let items = self.call("list Pods", self.pods_api().list(&lp)).await?.items;
        let mut by_pod: BTreeMap<String, PodInfo> = BTreeMap::new();
        for p in items {
            let meta = &p.metadata;
            let labels = devaipod_labels(meta);
            let Some(pod) = labels.get(LABEL_POD).cloned() else { continue };
            let (state, _) = pod_state(&p);
            let info = by_pod.entry(pod.clone()).or_insert_with(|| PodInfo {
                name: pod,
                status: String::new(),
                created: meta.creation_timestamp.as_ref().map(|t| t.0.to_string()).unwrap_or_default(),
                labels: labels
                    .iter()
                    .filter(|(k, _)| *k != naming::LABEL_ROLE)
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
                containers: Vec::new(),
                ports: Vec::new(),
            });
            info.containers.push(ContainerInfo {
                name: meta.name.clone().unwrap_or_default(),
                role: labels.get(naming::LABEL_ROLE).and_then(|r| Role::parse(r)),
                state,
            });
        }
        Ok(by_pod
            .into_values()
            .map(|mut p| {
                let running = p.containers.iter().filter(|c| c.state == "running").count();
                p.status = match running {
                    0 => "Exited",
                    n if n == p.containers.len() => "Running",
                    _ => "Degraded",
                }
                .into();
                p
            })
            .collect())
    }

    async fn inspect_pod(&self, name: &str) -> Result<PodInfo, EngineError> {
        self.list_pods(&[(LABEL_POD, name)]).await?.into_iter().next().ok_or_else(|| EngineError::NotFound {
            engine: KUBERNETES,
            op: format!("inspect pod {name}"),
            message: format!("no Pod is labelled {LABEL_POD}={name}"),
        })
    }

    async fn list_volumes(&self, labels: &[(&str, &str)]) -> Result<Vec<String>, EngineError> {
        let lp = ListParams::default().labels(&selector(labels));
        let items = self.call("list volumes", self.claims().list(&lp)).await?.items;
        Ok(items.into_iter().filter_map(|c| c.metadata.name).collect())
    }

    async fn remove_volume(&self, name: &str) -> Result<(), EngineError> {
        let op = format!("remove volume {name}");
        self.call(&op, self.claims().delete(name, &DeleteParams::default())).await.map(|_| ())
    }

    async fn exec(&self, container: &str, spec: &ExecSpec) -> Result<ExecSession, EngineError> {
        let ap = AttachParams {
            container: None,
            stdin: spec.stdin,
            stdout: true,
            stderr: !spec.tty,
            tty: spec.tty,
            ..Default::default()
        };
        let op = format!("run a command in {container}");
        let mut proc = self.call(&op, self.pods_api().exec(container, wrapped(spec), &ap)).await?;
        let stdout = proc.stdout().map(|r| read_stream(r, Output::Stdout));
        let stderr = proc.stderr().map(|r| read_stream(r, Output::Stderr));
        let output = stream::select(
            stdout.unwrap_or_else(|| stream::empty().boxed()),
            stderr.unwrap_or_else(|| stream::empty().boxed()),
        )
        .boxed();
        let input: std::pin::Pin<Box<dyn tokio::io::AsyncWrite + Send>> = match proc.stdin() {
            Some(w) => Box::pin(w),
            None => Box::pin(tokio::io::sink()),
        };
        let id = format!("kx-{:016x}", rand::random::<u64>());
        if let Some(status) = proc.take_status() {
            self.execs.lock().map_err(|_| poisoned())?.insert(id.clone(), Box::pin(status));
        }
        // The process ends when its streams do; the connection is kept until then.
        tokio::spawn(async move {
            let _ = proc.join().await;
        });
        Ok(ExecSession { id, output, input })
    }

    async fn exec_to(
        &self,
        container: &str,
        spec: &ExecSpec,
        out: &mut (dyn tokio::io::AsyncWrite + Send + Unpin),
        limit: u64,
    ) -> Result<ExecRun, EngineError> {
        let mut session = self.exec(container, spec).await?;
        let command = spec.argv.join(" ");
        let (stdout_bytes, stderr) = pump_to(&mut session.output, out, limit, &command).await?;
        let exit_code = self.exec_exit_code(&session.id).await?;
        Ok(ExecRun { exit_code, stdout_bytes, stderr })
    }

    async fn exec_exit_code(&self, id: &str) -> Result<i64, EngineError> {
        let status = self.execs.lock().map_err(|_| poisoned())?.remove(id);
        let Some(status) = status else {
            return Err(EngineError::NotFound {
                engine: KUBERNETES,
                op: format!("read the exit code of {id}"),
                message: "no such exec (or its code was read already)".into(),
            });
        };
        match tokio::time::timeout(self.timeout, status).await {
            Ok(s) => Ok(exit_code(s)),
            Err(_) => Err(EngineError::Timeout {
                engine: KUBERNETES,
                op: format!("read the exit code of {id}"),
                secs: self.timeout.as_secs(),
            }),
        }
    }

    /// The hostPaths of the instance's Pods (the copies of devaipod's executable among them).
    async fn bind_sources(
        &self,
        instance: &str,
    ) -> Result<std::collections::BTreeSet<std::path::PathBuf>, EngineError> {
        let lp = ListParams::default().labels(&format!("{}={instance}", naming::LABEL_INSTANCE));
        let items = self.call("list Pods", self.pods_api().list(&lp)).await?.items;
        Ok(items
            .iter()
            .filter_map(|p| p.spec.as_ref()?.volumes.as_ref())
            .flatten()
            .filter_map(|v| Some(std::path::PathBuf::from(&v.host_path.as_ref()?.path)))
            .collect())
    }

    async fn resize_exec(&self, id: &str, _rows: u16, _cols: u16) -> Result<(), EngineError> {
        Err(unsupported(&format!("resize the terminal of {id}"), "terminals are not resized through the exec API here"))
    }

    async fn signal_exec(&self, id: &str, _signal: i32) -> Result<(), EngineError> {
        Err(unsupported(&format!("signal {id}"), "the exec API has no signals"))
    }

    async fn connect_port(&self, container: &str, port: u16) -> Result<crate::pods::engine::PortStream, EngineError> {
        Err(unsupported(
            &format!("connect to port {port} of {container}"),
            "reach a Pod's ports with `kubectl port-forward` (SSH forwarding and `devaipod forward` need podman)",
        ))
    }

    fn logs(
        &self,
        container: &str,
        follow: bool,
        tail: Option<u32>,
    ) -> BoxStream<'static, Result<Output, EngineError>> {
        let api = self.pods_api();
        let (name, ns, timeout) = (container.to_owned(), self.namespace.clone(), self.timeout);
        let lp = LogParams { follow, tail_lines: tail.map(i64::from), ..Default::default() };
        stream::once(async move {
            let op = format!("read the logs of {name}");
            let opened = tokio::time::timeout(timeout, api.log_stream(&name, &lp)).await;
            match opened {
                Err(_) => stream::iter([Err(EngineError::Timeout { engine: KUBERNETES, op, secs: timeout.as_secs() })])
                    .boxed(),
                Ok(Err(e)) => stream::iter([Err(map_error(&op, &ns, e))]).boxed(),
                Ok(Ok(r)) => read_stream(tokio_util::compat::FuturesAsyncReadCompatExt::compat(r), Output::Stdout),
            }
        })
        .flatten()
        .boxed()
    }
}

fn poisoned() -> EngineError {
    EngineError::Kubernetes { op: "keep the engine's state".into(), status: 0, message: "a lock was poisoned".into() }
}

#[cfg(test)]
#[path = "engine_tests.rs"]
mod tests;
