//! A workspace's plan as Kubernetes objects: PersistentVolumeClaims for its volumes, a Pod
//! for the human's workspace container, a Pod for the agent (with the podman plan's
//! hardening as its securityContext), Secrets (referenced; inlined only when asked) and a
//! NetworkPolicy that walls the agent's pod in.
//!
//! Why two Pods: in podman the agent has a network namespace of its own (loopback only),
//! while the containers of one Kubernetes Pod share theirs. Put together, the agent would
//! reach every port of the human's container and its way out. Apart, the NetworkPolicy
//! denies the agent's Pod all ingress and egress, and its only ways out stay the unix
//! sockets of its mounted directory, as in podman.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::pods::naming::{self, Role};
use crate::pods::plan::{self, ContainerPlan, MountPlan, PodPlan};

/// The key of a Secret holding one value (the agent's password, a podman secret's value).
pub const SECRET_KEY: &str = "value";
/// Default size requested by each PersistentVolumeClaim.
pub const DEFAULT_VOLUME_SIZE: &str = "10Gi";
/// Directory of seccomp profiles under the kubelet's seccomp root (`localhostProfile`).
pub const SECCOMP_DIR: &str = "devaipod";
/// The workspace container's idle process on Kubernetes (podman injects its own init there;
/// a cluster does not).
pub const KUBE_IDLE_COMMAND: [&str; 2] = ["/bin/sleep", "infinity"];

/// What `devaipod kube` renders: the parts of a workspace's [`PodPlan`] that become
/// Kubernetes objects, kept by the daemon at `up` (secret names only, never values).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KubePlan {
    pub pod: PodMeta,
    pub workspace: ContainerPlan,
    pub agent: ContainerPlan,
    pub volumes: Vec<Named>,
    /// The secrets the containers reference (by name; values are not kept).
    pub secrets: Vec<Named>,
    /// What the plan has that is not rendered (compose services).
    #[serde(default)]
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PodMeta {
    pub name: String,
    pub hostname: String,
    pub labels: BTreeMap<String, String>,
    pub ports: Vec<u16>,
    pub add_hosts: Vec<String>,
}

/// A volume or a secret: its name and labels.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Named {
    pub name: String,
    pub labels: BTreeMap<String, String>,
}

impl KubePlan {
    /// The plan `up` made, with the image both containers run (with devcontainer
    /// features, the derived one `up` built).
    pub fn of(p: &PodPlan, image: &str) -> KubePlan {
        let mut warnings = Vec::new();
        if let Some(c) = &p.compose {
            let names: Vec<&str> = c.services.iter().map(|s| s.service.as_str()).collect();
            warnings.push(format!("compose services are not rendered: {}", names.join(", ")));
        }
        // Only the secrets a container references: the LLM key's is the daemon's own.
        let referenced: Vec<&String> = p.workspace.secret_env.values().chain(p.agent.secret_env.values()).collect();
        KubePlan {
            pod: PodMeta {
                name: p.pod.name.clone(),
                hostname: p.pod.hostname.clone(),
                labels: p.pod.labels.clone(),
                ports: p.pod.ports.clone(),
                add_hosts: p.pod.add_hosts.clone(),
            },
            workspace: ContainerPlan { image: image.to_owned(), ..p.workspace.clone() },
            agent: ContainerPlan { image: image.to_owned(), ..p.agent.clone() },
            volumes: p.volumes.iter().map(|v| Named { name: v.name.clone(), labels: v.labels.clone() }).collect(),
            secrets: p
                .secrets
                .iter()
                .filter(|s| referenced.contains(&&s.name))
                .map(|s| Named { name: s.name.clone(), labels: s.labels.clone() })
                .collect(),
            warnings,
        }
    }

    /// The Secret holding the workspace container's trusted variables (one key each).
    pub fn trusted_env_secret(&self) -> String {
        trusted_secret(&self.pod.name)
    }

    /// The agent's Pod (beside the workspace's, which has the workspace's pod name).
    pub fn agent_pod(&self) -> String {
        self.agent.name.clone()
    }
}

/// The Secret holding pod `pod`'s trusted variables (its workspace container's, one key
/// each).
pub fn trusted_secret(pod: &str) -> String {
    format!("{pod}-trusted-env")
}

/// How to render.
#[derive(Debug, Clone, Default)]
pub struct RenderOptions {
    /// `metadata.namespace` of every object (none: the one `kubectl` is pointed at).
    pub namespace: Option<String>,
    /// Size each PersistentVolumeClaim requests ([`DEFAULT_VOLUME_SIZE`] when empty).
    pub volume_size: Option<String>,
    /// Secret name → key → value: these Secrets are printed with their data. Without,
    /// the Pods reference Secrets that must be created beside them.
    pub secrets: Option<BTreeMap<String, BTreeMap<String, String>>>,
    /// `PATH` as the containers run with it under podman (the image's, else podman's
    /// default): set in both containers, since not every runtime adds a default to an
    /// image without one.
    pub path: Option<String>,
}

/// The rendered objects, in the order to apply them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub documents: Vec<Value>,
    /// Secrets the Pods reference and that are not among `documents` (create them first).
    pub secrets_referenced: Vec<String>,
    /// What does not carry over, for the reader.
    pub warnings: Vec<String>,
}

impl Manifest {
    /// Comments printed above the YAML: what to create first, what does not carry over.
    pub fn comments(&self) -> Vec<String> {
        let mut c = Vec::new();
        if !self.secrets_referenced.is_empty() {
            c.push(format!(
                "Secrets referenced, not printed (create them first, key `{SECRET_KEY}` unless named otherwise, or print them with --show-secrets): {}",
                self.secrets_referenced.join(", ")
            ));
        }
        c.extend(self.warnings.iter().map(|w| format!("warning: {w}")));
        c
    }
}

/// The Kubernetes objects of a workspace: Secrets (only with `opts.secrets`), one
/// PersistentVolumeClaim per volume, the workspace's Pod, the agent's Pod, and the
/// NetworkPolicy walling the agent's Pod in.
pub fn render(p: &KubePlan, opts: &RenderOptions) -> Manifest {
    let mut warnings = p.warnings.clone();
    let ns = opts.namespace.as_deref();
    let size = opts.volume_size.as_deref().filter(|s| !s.is_empty()).unwrap_or(DEFAULT_VOLUME_SIZE);
    let mut documents = Vec::new();

    // Secrets: every one a container references.
    let mut wanted: Vec<(String, Vec<String>, BTreeMap<String, String>)> = Vec::new();
    for c in [&p.workspace, &p.agent] {
        for secret in c.secret_env.values() {
            if !wanted.iter().any(|(n, _, _)| n == secret) {
                let labels = p.secrets.iter().find(|s| &s.name == secret).map(|s| s.labels.clone());
                wanted.push((secret.clone(), vec![SECRET_KEY.into()], labels.unwrap_or_default()));
            }
        }
    }
    if !p.workspace.trusted_env.is_empty() {
        let keys = p.workspace.trusted_env.keys().cloned().collect();
        let labels = selector(&p.pod.labels);
        wanted.push((p.trusted_env_secret(), keys, labels));
    }
    let mut secrets_referenced = Vec::new();
    for (name, keys, labels) in wanted {
        match opts.secrets.as_ref().map(|s| s.get(&name)) {
            Some(Some(values)) => {
                let data: serde_json::Map<String, Value> = keys
                    .iter()
                    .filter_map(|k| {
                        values.get(k).map(|v| (k.clone(), Value::String(crate::encode::base64(v.as_bytes()))))
                    })
                    .collect();
                if data.len() < keys.len() {
                    warnings.push(format!("secret {name}: some of its keys have no value here ({})", keys.join(", ")));
                }
                documents.push(json!({
                    "apiVersion": "v1",
                    "kind": "Secret",
                    "metadata": metadata(&name, &labels, ns),
                    "type": "Opaque",
                    "data": data,
                }));
            }
            Some(None) => {
                warnings.push(format!("secret {name}: its value is not known here; create it before applying"));
                secrets_referenced.push(name);
            }
            None => secrets_referenced.push(name),
        }
    }

    for v in &p.volumes {
        documents.push(json!({
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": metadata(&v.name, &v.labels, ns),
            "spec": {
                "accessModes": ["ReadWriteOnce"],
                "resources": {"requests": {"storage": size}},
            },
        }));
    }

    documents.push(pod(p, &p.pod.name, &p.pod.labels, &p.workspace, opts, &mut warnings));
    documents.push(pod(p, &p.agent_pod(), &p.agent.labels, &p.agent, opts, &mut warnings));

    // The agent's walls: no ingress, no egress at all (its only ways out are the sockets
    // of its mounted directory, served on the node).
    documents.push(json!({
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": metadata(&format!("{}-walls", p.agent_pod()), &selector(&p.agent.labels), ns),
        "spec": {
            "podSelector": {"matchLabels": selector(&p.agent.labels)},
            "policyTypes": ["Ingress", "Egress"],
        },
    }));

    if p.workspace.image.starts_with("localhost/") {
        warnings.push(format!(
            "image {} is local to this host: push it to a registry the cluster pulls from and change `image`",
            p.workspace.image
        ));
    }
    warnings.dedup();
    Manifest { documents, secrets_referenced, warnings }
}

/// Labels whose values Kubernetes accepts as labels; the others (paths, URLs, JSON) go to
/// annotations.
fn split_labels(labels: &BTreeMap<String, String>) -> (BTreeMap<String, String>, BTreeMap<String, String>) {
    labels.iter().map(|(k, v)| (k.clone(), v.clone())).partition(|(_, v)| is_label_value(v))
}

/// A Kubernetes label value: at most 63 characters, alphanumerics with `-`, `_` and `.`
/// inside.
pub fn is_label_value(v: &str) -> bool {
    let ends = |c: Option<char>| c.is_none_or(|c| c.is_ascii_alphanumeric());
    v.len() <= 63
        && v.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && ends(v.chars().next())
        && ends(v.chars().last())
}

fn metadata(name: &str, labels: &BTreeMap<String, String>, ns: Option<&str>) -> Value {
    let (labels, annotations) = split_labels(labels);
    let mut m = json!({"name": name, "labels": labels});
    if !annotations.is_empty() {
        m["annotations"] = json!(annotations);
    }
    if let Some(ns) = ns {
        m["namespace"] = json!(ns);
    }
    m
}

/// The labels that pick a Pod: instance, workspace, role (and an extra agent's number).
pub fn selector(labels: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    labels
        .iter()
        .filter(|(k, v)| {
            [naming::LABEL_INSTANCE, naming::LABEL_WORKSPACE, naming::LABEL_ROLE].contains(&k.as_str())
                && is_label_value(v)
        })
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

fn pod(
    p: &KubePlan,
    name: &str,
    labels: &BTreeMap<String, String>,
    c: &ContainerPlan,
    opts: &RenderOptions,
    warnings: &mut Vec<String>,
) -> Value {
    let near = (c.role == Role::Agent).then(|| selector(&p.workspace.labels));
    container_pod(&p.pod, c, name, labels, near.as_ref(), &p.trusted_env_secret(), opts, warnings)
}

/// One container as a Pod of its own, named `name`: its mounts as volumes (claims,
/// hostPaths, memory), its hardening as its securityContext, the pod's hostname, ports
/// (the workspace container's) and host aliases; `near`: the labels of a Pod it must run
/// on the node of. The Kubernetes engine makes its Pods with this too.
#[allow(clippy::too_many_arguments)]
pub fn container_pod(
    meta: &PodMeta,
    c: &ContainerPlan,
    name: &str,
    labels: &BTreeMap<String, String>,
    near: Option<&BTreeMap<String, String>>,
    trusted_secret: &str,
    opts: &RenderOptions,
    warnings: &mut Vec<String>,
) -> Value {
    let ns = opts.namespace.as_deref();
    let mut volumes = Vec::new();
    let mut mounts = Vec::new();
    for (i, m) in c.mounts.iter().enumerate() {
        let vname = format!("m{i}");
        let (volume, readonly) = match m {
            MountPlan::Volume { name, readonly, .. } => {
                (json!({"name": vname, "persistentVolumeClaim": {"claimName": name}}), *readonly)
            }
            MountPlan::Bind { source, target, readonly } => {
                // The sockets' directories are the daemon's side on the node, made by it
                // (the API's writable by the agent's uid): they must be there.
                let kind = match target.as_str() {
                    plan::GATOR_SOCKET_DIR | plan::AGENT_API_DIR => "Directory",
                    plan::GATOR_BRIDGE => "File",
                    _ => "",
                };
                let mut host = json!({"path": source.to_string_lossy()});
                if !kind.is_empty() {
                    host["type"] = json!(kind);
                }
                (json!({"name": vname, "hostPath": host}), *readonly)
            }
            MountPlan::Tmpfs { .. } => (json!({"name": vname, "emptyDir": {"medium": "Memory"}}), false),
        };
        volumes.push(volume);
        let mut mount = json!({"name": vname, "mountPath": m.target()});
        if readonly {
            mount["readOnly"] = json!(true);
        }
        mounts.push(mount);
    }
    if let Some(size) = c.shm_size {
        volumes.push(json!({"name": "shm", "emptyDir": {"medium": "Memory", "sizeLimit": size.to_string()}}));
        mounts.push(json!({"name": "shm", "mountPath": "/dev/shm"}));
    }

    let mut container = json!({
        "name": c.role.as_str(),
        "image": c.image,
        "env": env(c, trusted_secret, opts.path.as_deref()),
        "securityContext": security_context(c, warnings),
        "volumeMounts": mounts,
    });
    let mut command = c.command.clone();
    if command.ends_with(&plan::IDLE_COMMAND.map(String::from)) {
        command.truncate(command.len() - plan::IDLE_COMMAND.len());
        command.extend(KUBE_IDLE_COMMAND.map(String::from));
    }
    if !command.is_empty() {
        container[if c.image_entrypoint { "args" } else { "command" }] = json!(command);
    }
    if !c.workdir.is_empty() {
        container["workingDir"] = json!(c.workdir);
    }
    if c.role == Role::Workspace && !meta.ports.is_empty() {
        let ports: Vec<Value> = meta.ports.iter().map(|port| json!({"containerPort": port})).collect();
        container["ports"] = json!(ports);
    }
    if !c.devices.is_empty() {
        warnings.push(format!("{}: devices are not rendered ({})", c.name, c.devices.join(", ")));
    }
    if !c.ulimits.is_empty() {
        warnings.push(format!("{}: ulimits are not rendered (Kubernetes has none per Pod)", c.name));
    }

    let mut spec = json!({
        "hostname": meta.hostname,
        "restartPolicy": "Always",
        // Neither container talks to the cluster's API.
        "automountServiceAccountToken": false,
        "enableServiceLinks": false,
        "containers": [container],
        "volumes": volumes,
    });
    if !c.sysctls.is_empty() {
        let s: Vec<Value> = c.sysctls.iter().map(|(k, v)| json!({"name": k, "value": v})).collect();
        spec["securityContext"] = json!({"sysctls": s});
    }
    let aliases: Vec<Value> = meta
        .add_hosts
        .iter()
        .filter_map(|h| h.rsplit_once(':').map(|(name, ip)| json!({"ip": ip, "hostnames": [name]})))
        .collect();
    if !aliases.is_empty() {
        spec["hostAliases"] = json!(aliases);
    }
    if let Some(near) = near {
        // On the workspace Pod's node: the volumes it shares (ReadWriteOnce) and the
        // daemon's sockets (hostPath) are there.
        spec["affinity"] = json!({"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [{
            "labelSelector": {"matchLabels": near},
            "topologyKey": "kubernetes.io/hostname",
        }]}});
    }
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": metadata(name, labels, ns),
        "spec": spec,
    })
}

fn env(c: &ContainerPlan, trusted_secret: &str, path: Option<&str>) -> Vec<Value> {
    let mut env: Vec<Value> = c.env.iter().map(|(k, v)| json!({"name": k, "value": v})).collect();
    if let Some(path) = path.filter(|_| !c.env.contains_key("PATH")) {
        env.insert(0, json!({"name": "PATH", "value": path}));
    }
    for k in c.trusted_env.keys() {
        env.push(json!({"name": k, "valueFrom": {"secretKeyRef": {"name": trusted_secret, "key": k}}}));
    }
    for (k, secret) in &c.secret_env {
        env.push(json!({"name": k, "valueFrom": {"secretKeyRef": {"name": secret, "key": SECRET_KEY}}}));
    }
    env
}

/// The podman plan's hardening, as Kubernetes says it.
fn security_context(c: &ContainerPlan, warnings: &mut Vec<String>) -> Value {
    let mut s = json!({});
    match c.user.as_deref().map(parse_user) {
        Some(Some((uid, gid))) => {
            s["runAsUser"] = json!(uid);
            if let Some(gid) = gid {
                s["runAsGroup"] = json!(gid);
            }
        }
        Some(None) => warnings.push(format!(
            "{}: user {:?} is not numeric; Kubernetes runs the image's user unless runAsUser is set",
            c.name,
            c.user.as_deref().unwrap_or_default()
        )),
        None => {}
    }
    let caps = |v: &[String]| -> Vec<String> {
        v.iter().map(|c| c.trim_start_matches("CAP_").trim_start_matches("cap_").to_ascii_uppercase()).collect()
    };
    if !c.cap_drop.is_empty() || !c.cap_add.is_empty() {
        let mut cap = json!({});
        if !c.cap_drop.is_empty() {
            cap["drop"] = json!(caps(&c.cap_drop));
        }
        if !c.cap_add.is_empty() {
            cap["add"] = json!(caps(&c.cap_add));
        }
        s["capabilities"] = cap;
    }
    if c.no_new_privileges {
        s["allowPrivilegeEscalation"] = json!(false);
    }
    if c.privileged {
        s["privileged"] = json!(true);
    }
    for opt in &c.security_opt {
        match opt.split_once('=') {
            Some(("seccomp", "unconfined")) => s["seccompProfile"] = json!({"type": "Unconfined"}),
            Some(("seccomp", path)) => {
                let file = Path::new(path).file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default();
                s["seccompProfile"] = json!({"type": "Localhost", "localhostProfile": format!("{SECCOMP_DIR}/{file}")});
            }
            _ => warnings.push(format!("{}: security option {opt:?} is not rendered", c.name)),
        }
    }
    s
}

/// `uid[:gid]`, numeric.
fn parse_user(u: &str) -> Option<(u32, Option<u32>)> {
    match u.split_once(':') {
        Some((uid, gid)) => Some((uid.parse().ok()?, Some(gid.parse().ok()?))),
        None => Some((u.parse().ok()?, None)),
    }
}
