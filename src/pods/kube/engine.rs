//! `Kube`: the [`Engine`] on a Kubernetes API (kube-rs), for `[engine] kind = "kubernetes"`.
//!
//! The mapping: a devaipod pod is the set of Kubernetes Pods labelled
//! `io.devaipod.pod=<pod>`; each of its containers is a Pod of its own, named as the
//! container (the agent needs a network namespace of its own: see `render`), made by
//! [`render::container_pod`] when the container is created (Pods start when created);
//! a container with a network of its own (the agent: loopback only under podman) gets a
//! NetworkPolicy denying its Pod all ingress and egress, made before its Pod and deleted
//! with it; volumes are PersistentVolumeClaims, secrets are Secrets (key `value`). Commands run
//! through the exec API (as the container's user), logs stream from the log API, lists
//! select by label. What Kubernetes has no call for (building, pulling or removing
//! images, stopping a Pod, throwaway helper containers) fails with a message saying so.
//! Every call is bounded by the engine's timeout.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream::{self, BoxStream, StreamExt};
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod, Secret};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::{Api, AttachParams, DeleteParams, ListParams, LogParams, PostParams};
use serde_json::json;

use super::render::{self, PodMeta, RenderOptions, SECRET_KEY};
use crate::pods::engine::{
    ContainerInfo, ContainerState, Engine, EngineError, EngineInfo, ExecRun, ExecSession, ExecSpec, HelperOutput,
    HelperRun, ImageFacts, Output, PodInfo, pump_to,
};
use crate::pods::naming::{self, Role};
use crate::pods::plan::{BuildPlan, ContainerNetwork, ContainerPlan, PodSpec, SecretPlan, VolumePlan};

/// The label joining a devaipod pod's Kubernetes Pods.
pub const LABEL_POD: &str = "io.devaipod.pod";
/// Default bound of one API call.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(60);

type ExitStatus =
    futures_util::future::BoxFuture<'static, Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Status>>;

pub struct Kube {
    client: kube::Client,
    namespace: String,
    timeout: Duration,
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
            Err(_) => Err(EngineError::Timeout { op: op.to_owned(), secs: self.timeout.as_secs().max(1) }),
        }
    }

    async fn pods_of(&self, pod: &str) -> Result<Vec<Pod>, EngineError> {
        let lp = ListParams::default().labels(&format!("{LABEL_POD}={pod}"));
        Ok(self.call(&format!("list the Pods of {pod}"), self.pods_api().list(&lp)).await?.items)
    }
}

/// A Kubernetes API error as the user should read it.
pub fn map_error(op: &str, namespace: &str, e: kube::Error) -> EngineError {
    match e {
        kube::Error::Api(s) => {
            let message = if s.message.is_empty() { s.reason.clone() } else { s.message.clone() };
            match s.code {
                404 => EngineError::NotFound { op: format!("{op} (Kubernetes)"), message },
                409 if s.reason == "AlreadyExists" => {
                    EngineError::AlreadyExists { op: format!("{op} (Kubernetes)"), message }
                }
                409 => EngineError::Conflict { op: format!("{op} (Kubernetes)"), message },
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

/// The NetworkPolicy walling in the Pod of container `name`.
pub fn walls_name(name: &str) -> String {
    format!("{name}-walls")
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

    async fn image_exists(&self, reference: &str) -> Result<bool, EngineError> {
        Err(unsupported(&format!("look for image {reference}"), "the nodes pull images; push it to a registry"))
    }

    async fn pull_image(&self, reference: &str) -> Result<(), EngineError> {
        Err(unsupported(&format!("pull image {reference}"), "the nodes pull images when a Pod starts"))
    }

    async fn image_facts(&self, reference: &str) -> Result<ImageFacts, EngineError> {
        Err(unsupported(&format!("read image {reference}"), "images are not inspected through the API"))
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
        Err(unsupported(&format!("remove image {reference}"), "the nodes' image caches are the kubelet's"))
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
                op: format!("create pod {} (Kubernetes)", pod.name),
                message: format!("Pods labelled {LABEL_POD}={} exist", pod.name),
            });
        }
        self.pods.lock().map_err(|_| poisoned())?.insert(pod.name.clone(), pod.clone());
        Ok(())
    }

    async fn create_container(&self, pod: &str, c: &ContainerPlan) -> Result<(), EngineError> {
        let spec =
            self.pods.lock().map_err(|_| poisoned())?.get(pod).cloned().ok_or_else(|| EngineError::NotFound {
                op: format!("create container {} (Kubernetes)", c.name),
                message: format!("pod {pod} was not created by this daemon"),
            })?;
        let meta = PodMeta {
            name: spec.name.clone(),
            hostname: spec.hostname.clone(),
            labels: spec.labels.clone(),
            ports: spec.ports.clone(),
            add_hosts: spec.add_hosts.clone(),
        };
        let mut labels = c.labels.clone();
        labels.insert(LABEL_POD.into(), pod.to_owned());
        let near = (c.role != Role::Workspace).then(|| {
            let mut l = render::selector(&labels);
            l.insert(naming::LABEL_ROLE.into(), Role::Workspace.as_str().into());
            l
        });
        let mut warnings = Vec::new();
        let value = render::container_pod(
            &meta,
            c,
            &c.name,
            &labels,
            near.as_ref(),
            &format!("{pod}-trusted-env"),
            &RenderOptions::default(),
            &mut warnings,
        );
        let object: Pod = serde_json::from_value(value).map_err(|e| EngineError::Kubernetes {
            op: format!("make Pod {}", c.name),
            status: 0,
            message: e.to_string(),
        })?;
        for w in warnings {
            tracing::warn!("{}: {w}", c.name);
        }
        if c.network == ContainerNetwork::LoopbackOnly {
            // The network wall, before the Pod exists: nothing reaches it, it reaches nothing
            // (as `devaipod kube` renders it; its sockets are its only ways out).
            let mut select = render::selector(&labels);
            select.insert(LABEL_POD.into(), pod.to_owned());
            let policy: NetworkPolicy = serde_json::from_value(json!({
                "metadata": {"name": walls_name(&c.name), "labels": labels_of(&labels)},
                "spec": {"podSelector": {"matchLabels": select}, "policyTypes": ["Ingress", "Egress"]},
            }))
            .map_err(|e| EngineError::Kubernetes {
                op: format!("make the NetworkPolicy of {}", c.name),
                status: 0,
                message: e.to_string(),
            })?;
            let op = format!("wall in container {}", c.name);
            // One left by an earlier attempt walls the same Pod.
            match self.call(&op, self.policies().create(&PostParams::default(), &policy)).await {
                Ok(_) | Err(EngineError::AlreadyExists { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        let op = format!("create container {}", c.name);
        let created = self.call(&op, self.pods_api().create(&PostParams::default(), &object)).await.map(|_| ());
        if c.network == ContainerNetwork::LoopbackOnly
            && matches!(created, Err(ref e) if !matches!(e, EngineError::AlreadyExists { .. }))
        {
            // No Pod, no walls (best effort: the error to report is the Pod's).
            let _ = self.call(&op, self.policies().delete(&walls_name(&c.name), &DeleteParams::default())).await;
        }
        created
    }

    async fn start_container(&self, name: &str) -> Result<(), EngineError> {
        // A Pod starts when it is created: it must be there.
        self.call(&format!("start container {name}"), self.pods_api().get(name)).await.map(|_| ())
    }

    async fn stop_container(&self, name: &str, _grace_secs: u32) -> Result<(), EngineError> {
        Err(unsupported(&format!("stop container {name}"), "a Pod is not stopped, only deleted"))
    }

    async fn remove_container(&self, name: &str) -> Result<(), EngineError> {
        let dp = DeleteParams { grace_period_seconds: Some(0), ..Default::default() };
        let removed = self.call(&format!("remove container {name}"), self.pods_api().delete(name, &dp)).await;
        if let Ok(_) | Err(EngineError::NotFound { .. }) = removed {
            // Its walls, if it had them (a workspace's Pod has none), even when the Pod went
            // before them.
            let walls = walls_name(name);
            let op = format!("remove the NetworkPolicy {walls}");
            match self.call(&op, self.policies().delete(&walls, &DeleteParams::default())).await {
                Ok(_) | Err(EngineError::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        removed.map(|_| ())
    }

    async fn start_pod(&self, name: &str) -> Result<(), EngineError> {
        if self.pods_of(name).await?.is_empty() {
            return Err(EngineError::NotFound {
                op: format!("start pod {name} (Kubernetes)"),
                message: format!("no Pod is labelled {LABEL_POD}={name}"),
            });
        }
        Ok(())
    }

    async fn stop_pod(&self, name: &str, _grace_secs: u32) -> Result<(), EngineError> {
        Err(unsupported(&format!("stop pod {name}"), "a Pod is not stopped, only deleted"))
    }

    async fn remove_pod(&self, name: &str) -> Result<(), EngineError> {
        let pods = self.pods_of(name).await?;
        if pods.is_empty() {
            return Err(EngineError::NotFound {
                op: format!("remove pod {name} (Kubernetes)"),
                message: format!("no Pod is labelled {LABEL_POD}={name}"),
            });
        }
        for p in pods {
            let Some(n) = p.metadata.name else { continue };
            match self.remove_container(&n).await {
                Ok(()) | Err(EngineError::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        if let Ok(mut pending) = self.pods.lock() {
            pending.remove(name);
        }
        Ok(())
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
            let labels = meta.labels.clone().unwrap_or_default();
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
            op: format!("inspect pod {name} (Kubernetes)"),
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
                op: format!("read the exit code of {id} (Kubernetes)"),
                message: "no such exec (or its code was read already)".into(),
            });
        };
        match tokio::time::timeout(self.timeout, status).await {
            Ok(s) => Ok(exit_code(s)),
            Err(_) => {
                Err(EngineError::Timeout { op: format!("read the exit code of {id}"), secs: self.timeout.as_secs() })
            }
        }
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
                Err(_) => stream::iter([Err(EngineError::Timeout { op, secs: timeout.as_secs() })]).boxed(),
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
