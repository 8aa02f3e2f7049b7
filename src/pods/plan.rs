//! `PodPlan`: a pure function of (config, devcontainer.json, request) → everything the pod
//! of a workspace is: image, volumes, pod, both containers, their env, mounts and security
//! options, and the lifecycle commands. The engine only executes plans; `up --dry-run`
//! prints one.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::naming::{self, Role, WorkspaceName};
use crate::agent::config as agent_config;
use crate::config::Config;
use crate::devcontainer::features::{self, ResolvedFeature};
use crate::devcontainer::run_args::Ulimit;
use crate::devcontainer::{self, LifecycleCommand, Loaded, Mount, MountKind, RunArgs, Vars};

/// Where opencode and other injected tools appear inside the agent container.
pub const INJECT_DIR: &str = "/opt/devaipod/bin";
/// Where `[agent] inject-dir` (another agent than opencode) is mounted read-only.
pub const AGENT_INJECT_DIR: &str = "/opt/devaipod/agent";
/// Where the human's workspace appears, read-only, in the agent container.
pub const MAIN_WORKSPACE: &str = "/mnt/main-workspace";
pub const AGENT_HOME: &str = "/home/agent";
/// The agent runs as this uid/gid (numeric, so the image needs no such user).
pub const AGENT_USER: &str = "1000:1000";
/// Where the pod's gator socket directory appears in the agent container.
pub const GATOR_SOCKET_DIR: &str = "/run/devaipod/gator";
/// The gator socket's file name (in the host directory and in the pod).
pub const GATOR_SOCKET_NAME: &str = "gator.sock";
/// The egress proxy's socket file name, beside gator's (served by the daemon).
pub const EGRESS_SOCKET_NAME: &str = "egress.sock";
/// Where the directory of the agent's API socket appears in the agent container (the one
/// directory it shares with the host that it may write).
pub const AGENT_API_DIR: &str = "/run/devaipod/agent";
/// The agent's API socket's file name (in the host directory and in the pod).
pub const AGENT_API_SOCKET: &str = "api.sock";
/// The agent's way out: its relay listens here on the container's loopback and carries
/// each connection to the egress proxy's socket.
pub const EGRESS_PORT: u16 = 3128;
/// Where the devaipod binary appears in the agent container: the relay the container runs
/// (`agent-shim`), gator's stdio bridge and the LLM probe.
pub const GATOR_BRIDGE: &str = "/opt/devaipod/gator/devaipod";
/// The idle process of the workspace container: podman's init (catatonit, static,
/// injected by podman with `init: true`) in pause mode. It needs nothing from the image,
/// not even a shell.
pub const IDLE_COMMAND: [&str; 2] = ["/run/podman-init", "-P"];

/// What the caller asks for; everything host-specific is passed in so that planning stays pure.
/// `Debug` shows the host environment's names only (it may hold anything of the caller's).
#[derive(Clone)]
pub struct PlanRequest {
    pub name: WorkspaceName,
    pub instance: String,
    /// Where the workspace came from, for labels (never with credentials).
    pub source: String,
    pub image_override: Option<String>,
    /// The host's environment, for `[env] allowlist` and `[trusted.env] allowlist`.
    pub host_env: BTreeMap<String, String>,
    /// Host directory holding the `opencode` binary.
    pub opencode_dir: PathBuf,
    /// The checkout on the host (`${localWorkspaceFolder}`).
    pub checkout_dir: PathBuf,
    /// The password of the agent's API (random per pod).
    pub agent_password: Redacted,
    /// The host side of the agent's sockets and the files its container runs with.
    pub sandbox: SandboxMounts,
}

impl std::fmt::Debug for PlanRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PlanRequest")
            .field("name", &self.name)
            .field("instance", &self.instance)
            .field("source", &self.source)
            .field("image_override", &self.image_override)
            .field("host_env", &self.host_env.keys().collect::<Vec<_>>())
            .field("opencode_dir", &self.opencode_dir)
            .field("checkout_dir", &self.checkout_dir)
            .field("agent_password", &self.agent_password)
            .field("sandbox", &self.sandbox)
            .finish()
    }
}

/// The host side of what connects an agent container to the daemon. The container has no
/// network but loopback: these are its only ways out and in.
#[derive(Debug, Clone, PartialEq)]
pub struct SandboxMounts {
    /// This pod's gator and egress sockets, served by the daemon (mounted read-only).
    pub socket_dir: PathBuf,
    /// Where the agent's relay serves its API socket for the daemon (mounted read-write).
    pub api_dir: PathBuf,
    /// The devaipod binary: the relay, gator's stdio bridge, the LLM probe.
    pub bridge: PathBuf,
    /// The seccomp profile of the agent container (no user namespaces), when known.
    pub seccomp: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum PlanError {
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
    /// A compose file's refusal, naming its file, line and key.
    #[error(transparent)]
    Compose(#[from] crate::devcontainer::compose::ComposeError),
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PodPlan {
    pub name: WorkspaceName,
    pub instance: String,
    pub image: ImagePlan,
    pub volumes: Vec<VolumePlan>,
    pub pod: PodSpec,
    pub workspace: ContainerPlan,
    pub agent: ContainerPlan,
    /// The repository's path in both containers.
    pub workspace_folder: String,
    pub lifecycle: Lifecycle,
    /// Podman secrets devaipod creates for this pod (and removes with it).
    pub secrets: Vec<SecretPlan>,
    /// devcontainer features in install order, installed into one image derived from
    /// `image` (`up` builds it; both containers run it).
    pub features: Vec<ResolvedFeature>,
    /// The compose project's other services and the start order (`dockerComposeFile`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub compose: Option<ComposePlan>,
    /// Things the user should know: parts of devcontainer.json devaipod does not apply.
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum ImagePlan {
    /// An image that must exist locally or be pullable.
    Existing { reference: String },
    /// An image built from a Containerfile/Dockerfile, tagged `tag`.
    Build(BuildPlan),
}

impl ImagePlan {
    pub fn reference(&self) -> &str {
        match self {
            ImagePlan::Existing { reference } => reference,
            ImagePlan::Build(b) => &b.tag,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BuildPlan {
    pub context_dir: PathBuf,
    /// Absolute path of the Containerfile/Dockerfile on the host.
    pub dockerfile: PathBuf,
    pub args: BTreeMap<String, String>,
    pub target: Option<String>,
    pub tag: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VolumePlan {
    pub name: String,
    pub labels: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SecretPlan {
    pub name: String,
    pub value: Redacted,
    /// Instance, workspace and version, like every object of the pod.
    pub labels: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PodSpec {
    pub name: String,
    pub hostname: String,
    pub labels: BTreeMap<String, String>,
    /// Container ports published on 127.0.0.1 at a free host port.
    pub ports: Vec<u16>,
    /// Extra hosts entries (`name:ip`) of the pod.
    pub add_hosts: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct ContainerPlan {
    pub name: String,
    pub role: Role,
    pub image: String,
    pub command: Vec<String>,
    /// `command` is the arguments of the image's own ENTRYPOINT (the image's CMD when it
    /// is empty): a compose service that does not override its entrypoint.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub image_entrypoint: bool,
    pub user: Option<String>,
    /// Empty: the image's own working directory.
    pub workdir: String,
    pub env: BTreeMap<String, String>,
    /// Trusted variables: values are shown as `<redacted>` in a printed plan.
    pub trusted_env: BTreeMap<String, Redacted>,
    /// Variable name → podman secret name (`type=env`).
    pub secret_env: BTreeMap<String, String>,
    pub mounts: Vec<MountPlan>,
    pub cap_drop: Vec<String>,
    pub cap_add: Vec<String>,
    pub no_new_privileges: bool,
    pub privileged: bool,
    pub security_opt: Vec<String>,
    pub devices: Vec<String>,
    pub shm_size: Option<u64>,
    /// `--ulimit`s (workspace container only).
    pub ulimits: Vec<Ulimit>,
    /// Namespaced sysctls (workspace container only).
    pub sysctls: BTreeMap<String, String>,
    pub init: bool,
    /// Which network the container is on.
    pub network: ContainerNetwork,
    pub labels: BTreeMap<String, String>,
}

/// A container's network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ContainerNetwork {
    /// The pod's: its ports, its way out (the human's workspace container).
    Pod,
    /// A network namespace of its own with loopback only, and its own IPC namespace: no
    /// route to the pod's other container, other pods, the host or anywhere else.
    LoopbackOnly,
}

/// The podman secret holding a workspace's LLM key taken from the caller's environment.
pub fn llm_key_secret(name: &WorkspaceName) -> String {
    format!("{}-llm-key", name.pod())
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum MountPlan {
    Volume { name: String, target: String, readonly: bool },
    Bind { source: PathBuf, target: String, readonly: bool },
    Tmpfs { target: String },
}

impl MountPlan {
    pub fn target(&self) -> &str {
        match self {
            MountPlan::Volume { target, .. } | MountPlan::Bind { target, .. } | MountPlan::Tmpfs { target } => target,
        }
    }
}

/// A value that is used but never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Redacted(pub String);

impl Serialize for Redacted {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("<redacted>")
    }
}

/// Read back as it was written (a kept plan holds no values: agents get none).
impl<'de> serde::Deserialize<'de> for Redacted {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Redacted)
    }
}

impl std::fmt::Debug for Redacted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Lifecycle {
    /// Runs on the host, in the checkout, before anything is created.
    pub initialize: Option<LifecycleCommand>,
    /// Each phase: the features' commands (in install order), then devcontainer.json's.
    pub on_create: Vec<LifecycleCommand>,
    pub update_content: Vec<LifecycleCommand>,
    pub post_create: Vec<LifecycleCommand>,
    pub post_start: Vec<LifecycleCommand>,
    /// Run when a person attaches (an interactive exec).
    pub post_attach: Vec<LifecycleCommand>,
    /// User the in-container commands run as (`remoteUser`, else the container's user).
    pub user: Option<String>,
    /// `remoteEnv`, with `${containerEnv:…}` resolved; `None` unsets.
    pub env: BTreeMap<String, Option<String>>,
}

pub fn plan(config: &Config, dc: Option<&Loaded>, req: &PlanRequest) -> Result<PodPlan, PlanError> {
    let empty = devcontainer::DevContainer::default();
    let (c, dc_path) = match dc {
        Some(l) => (&l.config, l.path.clone()),
        None => (&empty, PathBuf::new()),
    };
    let invalid = |message: String| PlanError::Invalid { path: dc_path.clone(), message };
    let mut warnings = Vec::new();
    let name = &req.name;

    // A compose project: its `service` is the workspace container, the others run beside it.
    let compose = compose::of(dc, req, &invalid, &mut warnings)?;

    // The image.
    let image = if let Some(reference) = &req.image_override {
        ImagePlan::Existing { reference: reference.clone() }
    } else if let Some(parts) = &compose {
        parts.image.clone()
    } else if let Some(reference) = &c.image {
        ImagePlan::Existing { reference: reference.clone() }
    } else if let Some(dockerfile) = c.build.as_ref().and_then(|b| b.dockerfile.clone()).or(c.docker_file.clone()) {
        let dir = dc.map(Loaded::dir).unwrap_or(Path::new("."));
        let build = c.build.clone().unwrap_or_default();
        let context = build.context.or(c.context.clone()).unwrap_or_else(|| ".".into());
        ImagePlan::Build(BuildPlan {
            context_dir: devcontainer::compose::normalize(&dir.join(context)),
            dockerfile: devcontainer::compose::normalize(&dir.join(dockerfile)),
            args: build.args,
            target: build.target,
            tag: build_tag(&req.instance, name),
        })
    } else {
        if c.build.is_some() {
            return Err(invalid("`build` needs `dockerfile`".into()));
        }
        ImagePlan::Existing { reference: config.default_image.clone() }
    };
    let image_ref = image.reference().to_owned();

    let run_args: RunArgs = devcontainer::run_args::parse(&c.run_args)
        .map_err(|e| invalid(format!("runArgs[{}]: {}", e.index, e.message)))?;
    warnings.extend(run_args.warnings.iter().cloned());

    // Features, in install order; what they ask of the workspace container.
    let features: Vec<ResolvedFeature> = match dc {
        Some(l) if !l.features.is_empty() => {
            let over = c.override_feature_install_order.clone().unwrap_or_default();
            let order = features::install_order(&l.features, &over).map_err(|e| invalid(format!("features: {e}")))?;
            order.into_iter().map(|i| l.features[i].clone()).collect()
        }
        _ => Vec::new(),
    };
    if features.is_empty() && !c.features.is_empty() {
        let ids: Vec<&str> = c.features.keys().map(String::as_str).collect();
        warnings.push(format!("features are not fetched yet (`up` fetches and installs them): {}", ids.join(", ")));
    }
    let mut feature_mounts = Vec::new();
    for f in &features {
        for (i, m) in f.meta.mounts.iter().enumerate() {
            feature_mounts.push(m.parse().map_err(|e| invalid(format!("feature {}: mounts[{i}]: {e}", f.id)))?);
        }
        for opt in &f.meta.security_opt {
            devcontainer::run_args::check_security_opt(opt)
                .map_err(|e| invalid(format!("feature {}: securityOpt: {e}", f.id)))?;
        }
    }

    // Where the repository lives in the containers.
    let checkout = req.checkout_dir.to_string_lossy().into_owned();
    let repository_target = compose.as_ref().and_then(|p| p.repository_target.clone());
    let workspace_folder = match (&c.workspace_folder, &c.workspace_mount, repository_target) {
        (Some(f), _, _) => f.clone(),
        (None, Some(m), _) => Mount::parse_str(m).map_err(invalid)?.target,
        // Where the compose service mounts the repository.
        (None, None, Some(t)) => t,
        (None, None, None) => devcontainer::default_workspace_folder(&checkout),
    };
    let folder = workspace_folder.trim_end_matches('/');
    let overlaps =
        |r: &str| folder == r || folder.starts_with(&format!("{r}/")) || r.starts_with(&format!("{folder}/"));
    if let Some(r) = [AGENT_HOME, INJECT_DIR, MAIN_WORKSPACE].into_iter().find(|r| overlaps(r)) {
        return Err(invalid(format!(
            "workspaceFolder `{workspace_folder}` overlaps {r}, where devaipod mounts the agent's own files"
        )));
    }
    if c.workspace_mount.is_some() {
        warnings.push(format!(
            "workspaceMount: only its target is used; the repository lives in volume {}",
            name.workspace_volume()
        ));
    }

    // Environment, partitioned: common (both), workspace-only, trusted (workspace only, redacted).
    let mut common = BTreeMap::new();
    for var in &config.env.allowlist {
        if let Some(v) = req.host_env.get(var.as_str()) {
            common.insert(var.to_string(), v.clone());
        }
    }
    for (k, v) in &config.env.vars {
        common.insert(k.to_string(), v.clone());
    }
    let mut trusted_env = BTreeMap::new();
    for var in &config.trusted.env.allowlist {
        if let Some(v) = req.host_env.get(var.as_str()) {
            trusted_env.insert(var.to_string(), Redacted(v.clone()));
        }
    }
    for (k, v) in &config.trusted.env.vars {
        trusted_env.insert(k.to_string(), Redacted(v.clone()));
    }
    let service = compose.as_ref().map(|p| p.service);
    let mut workspace_env = service.map(|s| s.environment.clone()).unwrap_or_default();
    workspace_env.extend(c.container_env.clone());
    workspace_env.extend(run_args.env.clone());
    workspace_env.extend(common.clone());
    let secret_env: BTreeMap<String, String> =
        config.trusted.secrets.iter().map(|s| (s.env.to_string(), s.secret.clone())).collect();

    // Mounts of the workspace container: the repository volume, then devcontainer.json's.
    let mut volumes = vec![
        VolumePlan { name: name.workspace_volume(), labels: naming::labels(&req.instance, name, None) },
        VolumePlan { name: name.agent_workspace_volume(), labels: naming::labels(&req.instance, name, None) },
        VolumePlan { name: name.agent_home_volume(), labels: naming::labels(&req.instance, name, None) },
    ];
    let mut ws_mounts =
        vec![MountPlan::Volume { name: name.workspace_volume(), target: workspace_folder.clone(), readonly: false }];
    let dc_mounts =
        c.mounts.iter().enumerate().map(|(i, m)| m.parse().map_err(|e| invalid(format!("mounts[{i}]: {e}"))));
    let compose_mounts = compose.as_ref().map(|p| p.mounts.clone()).unwrap_or_default();
    let extra: Vec<Mount> = compose_mounts
        .into_iter()
        .chain(feature_mounts)
        .chain(dc_mounts.collect::<Result<Vec<_>, _>>()?)
        .chain(run_args.mounts.clone())
        .collect();
    for (i, m) in extra.into_iter().enumerate() {
        if m.target == workspace_folder || m.target == MAIN_WORKSPACE {
            return Err(invalid(format!("mount target {} is where devaipod puts the repository", m.target)));
        }
        ws_mounts.push(match (m.kind, m.source) {
            (MountKind::Bind, Some(source)) => {
                MountPlan::Bind { source: source.into(), target: m.target, readonly: m.readonly }
            }
            (MountKind::Bind, None) => unreachable!("bind mounts are checked to have a source"),
            (MountKind::Volume, Some(source)) => {
                MountPlan::Volume { name: source, target: m.target, readonly: m.readonly }
            }
            (MountKind::Volume, None) => {
                // An anonymous volume: ours, named and labelled so that delete removes it.
                let vol = format!("{}-mount-{i}", name.pod());
                volumes.push(VolumePlan { name: vol.clone(), labels: naming::labels(&req.instance, name, None) });
                MountPlan::Volume { name: vol, target: m.target, readonly: m.readonly }
            }
            (MountKind::Tmpfs, _) => MountPlan::Tmpfs { target: m.target },
        });
    }

    let mut ws_labels = run_args.labels.clone();
    ws_labels.extend(naming::labels(&req.instance, name, Some(Role::Workspace)));
    let workspace = ContainerPlan {
        name: name.container(Role::Workspace),
        role: Role::Workspace,
        image: image_ref.clone(),
        // Features' entrypoints (e.g. a Docker daemon's start script) run first and end
        // by running what follows them (`exec "$@"`), as the reference CLI chains them.
        command: features
            .iter()
            .filter_map(|f| f.meta.entrypoint.clone())
            .chain(IDLE_COMMAND.map(String::from))
            .collect(),
        image_entrypoint: false,
        user: run_args.user.clone().or(c.container_user.clone()).or(service.and_then(|s| s.user.clone())),
        workdir: workspace_folder.clone(),
        env: workspace_env.clone(),
        trusted_env,
        secret_env,
        mounts: ws_mounts,
        cap_drop: service
            .map(|s| s.cap_drop.clone())
            .unwrap_or_default()
            .into_iter()
            .chain(run_args.cap_drop.clone())
            .collect(),
        cap_add: service
            .into_iter()
            .flat_map(|s| &s.cap_add)
            .chain(features.iter().flat_map(|f| &f.meta.cap_add))
            .chain(&c.cap_add)
            .chain(&run_args.cap_add)
            .fold(Vec::new(), |mut v, cap| {
                if !v.contains(cap) {
                    v.push(cap.clone());
                }
                v
            }),
        no_new_privileges: false,
        privileged: c.privileged.unwrap_or(false)
            || service.is_some_and(|s| s.privileged == Some(true))
            || run_args.privileged
            || features.iter().any(|f| f.meta.privileged == Some(true)),
        security_opt: service
            .into_iter()
            .flat_map(|s| &s.security_opt)
            .chain(features.iter().flat_map(|f| &f.meta.security_opt))
            .chain(&c.security_opt)
            .chain(&run_args.security_opt)
            .cloned()
            .collect(),
        devices: run_args.devices.clone(),
        shm_size: run_args.shm_size,
        ulimits: run_args.ulimits.clone(),
        sysctls: run_args.sysctls.clone(),
        init: true,
        network: ContainerNetwork::Pod,
        labels: ws_labels,
    };
    if c.init == Some(false) || run_args.init == Some(false) {
        warnings.push("init: false is ignored; devaipod always runs an init so that stop is quick".into());
    }

    // The agent: same image, hardened, its own clone, the human's workspace read-only, no
    // network but loopback (its relay carries the API in and the egress out through the
    // sockets below), no user namespaces, and no credential: the LLM key is added by the
    // daemon's egress proxy, so the agent holds a placeholder.
    let mut agent_env = common;
    agent_env.insert("HOME".into(), AGENT_HOME.into());
    agent_env.insert("OPENCODE_DISABLE_MODELS_FETCH".into(), "1".into());
    let proxy = format!("http://127.0.0.1:{EGRESS_PORT}");
    for var in ["HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"] {
        agent_env.insert(var.into(), proxy.clone());
    }
    for var in ["NO_PROXY", "no_proxy"] {
        agent_env.insert(var.into(), "127.0.0.1,localhost".into());
    }
    let sandbox = &req.sandbox;
    let gator_command =
        [GATOR_BRIDGE.to_owned(), "gator-bridge".to_owned(), format!("{GATOR_SOCKET_DIR}/{GATOR_SOCKET_NAME}")];
    let llm = agent_config::through_proxy(&config.agent, EGRESS_PORT);
    // An ACP agent is handed gator as an MCP server of its sessions (by the shim); opencode
    // over ACP must not see it twice.
    let acp = config.agent.kind == crate::config::AgentKind::Acp;
    let opencode_config = agent_config::opencode_config(&llm, (!acp).then_some(&gator_command[..]));
    agent_env.insert("OPENCODE_CONFIG_CONTENT".into(), opencode_config.to_string());
    agent_env.insert(agent_config::API_KEY_ENV.into(), agent_config::PLACEHOLDER_KEY.into());
    let password_secret = format!("{}-agent-password", name.pod());
    let secret_labels = naming::labels(&req.instance, name, None);
    let mut secrets = vec![SecretPlan {
        name: password_secret.clone(),
        value: req.agent_password.clone(),
        labels: secret_labels.clone(),
    }];
    let agent_secret_env = BTreeMap::from([("OPENCODE_SERVER_PASSWORD".to_owned(), password_secret)]);
    // The key from the caller's environment is kept as a podman secret that no container
    // mounts: the daemon reads it for the egress proxy (`[agent] api-key-secret` likewise).
    if let (None, Some(var)) = (&config.agent.api_key_secret, &config.agent.api_key_env) {
        let value = req.host_env.get(var.as_str()).ok_or_else(|| {
            invalid(format!(
                "[agent] api-key-env names {var}, which is not set in the environment `up` was run from: set it there (e.g. `{var}=… devaipod up …`), or use [agent] api-key-secret"
            ))
        })?;
        secrets.push(SecretPlan {
            name: llm_key_secret(name),
            value: Redacted(value.clone()),
            labels: secret_labels.clone(),
        });
    }
    let mut command = vec![
        GATOR_BRIDGE.to_owned(),
        "agent-shim".into(),
        "--api".into(),
        format!("{AGENT_API_DIR}/{AGENT_API_SOCKET}"),
    ];
    if !acp {
        command.extend(["--to".into(), format!("127.0.0.1:{}", agent_config::PORT)]);
    }
    command.extend([
        "--egress-port".into(),
        EGRESS_PORT.to_string(),
        "--egress".into(),
        format!("{GATOR_SOCKET_DIR}/{EGRESS_SOCKET_NAME}"),
    ]);
    if acp {
        // The shim holds the ACP connection over the agent's stdio and serves its API.
        command.extend([
            "--acp".into(),
            "--gator".into(),
            format!("{GATOR_SOCKET_DIR}/{GATOR_SOCKET_NAME}"),
            "--".into(),
        ]);
        command.extend(agent_config::acp_argv(&config.agent.acp_command(), INJECT_DIR));
    } else {
        command.extend([
            "--".into(),
            format!("{INJECT_DIR}/opencode"),
            "serve".into(),
            "--port".into(),
            agent_config::PORT.to_string(),
            "--hostname".into(),
            "127.0.0.1".into(),
        ]);
    }
    let agent = ContainerPlan {
        name: name.container(Role::Agent),
        role: Role::Agent,
        image: image_ref,
        command,
        image_entrypoint: false,
        user: Some(AGENT_USER.into()),
        workdir: workspace_folder.clone(),
        env: agent_env,
        trusted_env: BTreeMap::new(),
        secret_env: agent_secret_env,
        mounts: vec![
            MountPlan::Volume {
                name: name.agent_workspace_volume(),
                target: workspace_folder.clone(),
                readonly: false,
            },
            MountPlan::Volume { name: name.workspace_volume(), target: MAIN_WORKSPACE.into(), readonly: true },
            MountPlan::Volume { name: name.agent_home_volume(), target: AGENT_HOME.into(), readonly: false },
            MountPlan::Bind { source: req.opencode_dir.clone(), target: INJECT_DIR.into(), readonly: true },
            MountPlan::Bind { source: sandbox.socket_dir.clone(), target: GATOR_SOCKET_DIR.into(), readonly: true },
            MountPlan::Bind { source: sandbox.api_dir.clone(), target: AGENT_API_DIR.into(), readonly: false },
            MountPlan::Bind { source: sandbox.bridge.clone(), target: GATOR_BRIDGE.into(), readonly: true },
        ]
        .into_iter()
        .chain(config.agent.inject_dir.iter().map(|dir| MountPlan::Bind {
            source: dir.clone(),
            target: AGENT_INJECT_DIR.into(),
            readonly: true,
        }))
        .collect(),
        cap_drop: vec!["ALL".into()],
        cap_add: vec!["NET_BIND_SERVICE".into()],
        no_new_privileges: true,
        privileged: false,
        security_opt: sandbox.seccomp.iter().map(|p| format!("seccomp={}", p.display())).collect(),
        devices: Vec::new(),
        shm_size: None,
        ulimits: Vec::new(),
        sysctls: BTreeMap::new(),
        init: true,
        network: ContainerNetwork::LoopbackOnly,
        labels: naming::labels(&req.instance, name, Some(Role::Agent)),
    };

    // The pod: the human's forwarded ports published on loopback only (the agent's API is
    // its socket, not a port).
    let mut ports = Vec::new();
    // `[network] agent-ports`: the egress proxy reaches them for the agent at these.
    for port in config.network.agent_ports.iter().map(|p| p.get()) {
        if !ports.contains(&port) {
            ports.push(port);
        }
    }
    // The services' `ports`, like forwardPorts: on 127.0.0.1 at a free port.
    for port in compose.iter().flat_map(|p| &p.ports) {
        if !ports.contains(port) {
            ports.push(*port);
        }
    }
    for p in &c.forward_ports {
        match p.local_port() {
            Some(port) if !ports.contains(&port) => ports.push(port),
            Some(_) => {}
            None => warnings.push(format!("forwardPorts {p:?}: ports of other services are not forwarded")),
        }
    }
    let mut pod_labels = naming::labels(&req.instance, name, None);
    pod_labels.insert(naming::LABEL_SOURCE.into(), req.source.clone());
    pod_labels.insert(naming::LABEL_FOLDER.into(), workspace_folder.clone());

    // Lifecycle commands, with remoteEnv's `${containerEnv:…}` resolved against the
    // workspace container's environment.
    let no_local = BTreeMap::new();
    let vars = Vars {
        local_env: &no_local,
        local_workspace_folder: &checkout,
        container_workspace_folder: Some(&workspace_folder),
        devcontainer_id: "",
        container_env: Some(&workspace_env),
    };
    let lifecycle = Lifecycle {
        initialize: c.initialize_command.clone(),
        on_create: phase(&features, |m| &m.on_create_command, &c.on_create_command),
        update_content: phase(&features, |m| &m.update_content_command, &c.update_content_command),
        post_create: phase(&features, |m| &m.post_create_command, &c.post_create_command),
        post_start: phase(&features, |m| &m.post_start_command, &c.post_start_command),
        post_attach: phase(&features, |m| &m.post_attach_command, &c.post_attach_command),
        user: c.remote_user.clone().or(workspace.user.clone()),
        env: c.remote_env.iter().map(|(k, v)| (k.clone(), v.as_deref().map(|v| vars.substitute(v)))).collect(),
    };
    if let Some(user) = &lifecycle.user {
        pod_labels.insert(naming::LABEL_USER.into(), user.clone());
    }
    // Interactive sessions (SSH, exec, attach) read these back from the pod: remoteEnv is
    // resolved against the container's environment when a session starts; postAttachCommand
    // (the features' first, then devcontainer.json's) runs at `attach`.
    if !c.remote_env.is_empty()
        && let Ok(json) = serde_json::to_string(&c.remote_env)
    {
        pod_labels.insert(naming::LABEL_REMOTE_ENV.into(), json);
    }
    if !lifecycle.post_attach.is_empty()
        && let Ok(json) = serde_json::to_string(&lifecycle.post_attach)
    {
        pod_labels.insert(naming::LABEL_POST_ATTACH.into(), json);
    }
    let mut add_hosts = run_args.add_hosts.clone();
    let compose_plan = compose.map(|parts| parts.finish(&mut add_hosts, &mut volumes, &mut pod_labels));
    let pod = PodSpec {
        name: name.pod(),
        hostname: run_args.hostname.clone().unwrap_or_else(|| name.as_str().to_owned()),
        labels: pod_labels,
        ports,
        add_hosts,
    };

    Ok(PodPlan {
        name: name.clone(),
        instance: req.instance.clone(),
        image,
        volumes,
        pod,
        workspace,
        agent,
        workspace_folder,
        lifecycle,
        secrets,
        features,
        compose: compose_plan,
        warnings,
    })
}

/// Worker agent `n`'s container, made from the workspace's agent container (its plan, as
/// `up` made it): the same image, hardening, walls, environment and command; its own clone
/// and HOME (volumes of its own), and its own sockets (`sandbox`: the gator and egress
/// sockets it is served on, and the directory of its API socket). The human's workspace
/// stays read-only in it.
pub fn worker(
    agent: &ContainerPlan,
    instance: &str,
    name: &WorkspaceName,
    n: u32,
    sandbox: &SandboxMounts,
) -> ContainerPlan {
    extra_agent(agent, instance, name, naming::Extra::Worker, n, sandbox)
}

/// An extra agent's container (a worker or a fan-out candidate), as [`worker`] says.
pub fn extra_agent(
    agent: &ContainerPlan,
    instance: &str,
    name: &WorkspaceName,
    kind: naming::Extra,
    n: u32,
    sandbox: &SandboxMounts,
) -> ContainerPlan {
    let (own_clone, own_home) = (name.agent_workspace_volume(), name.agent_home_volume());
    let mounts = agent
        .mounts
        .iter()
        .map(|m| match m {
            MountPlan::Volume { name: v, target, readonly } if *v == own_clone => MountPlan::Volume {
                name: name.extra_workspace_volume(kind, n),
                target: target.clone(),
                readonly: *readonly,
            },
            MountPlan::Volume { name: v, target, readonly } if *v == own_home => {
                MountPlan::Volume { name: name.extra_home_volume(kind, n), target: target.clone(), readonly: *readonly }
            }
            MountPlan::Bind { target, readonly, .. } if target == GATOR_SOCKET_DIR => {
                MountPlan::Bind { source: sandbox.socket_dir.clone(), target: target.clone(), readonly: *readonly }
            }
            MountPlan::Bind { target, readonly, .. } if target == AGENT_API_DIR => {
                MountPlan::Bind { source: sandbox.api_dir.clone(), target: target.clone(), readonly: *readonly }
            }
            other => other.clone(),
        })
        .collect();
    ContainerPlan {
        name: name.extra_container(kind, n),
        mounts,
        labels: naming::extra_labels(instance, name, kind, n),
        ..agent.clone()
    }
}

/// The volumes of worker agent `n` (its clone and HOME), labelled as its.
pub fn worker_volumes(instance: &str, name: &WorkspaceName, n: u32) -> Vec<VolumePlan> {
    extra_volumes(instance, name, naming::Extra::Worker, n)
}

/// The volumes of an extra agent (its clone and HOME), labelled as its.
pub fn extra_volumes(instance: &str, name: &WorkspaceName, kind: naming::Extra, n: u32) -> Vec<VolumePlan> {
    [name.extra_workspace_volume(kind, n), name.extra_home_volume(kind, n)]
        .into_iter()
        .map(|v| VolumePlan { name: v, labels: naming::extra_labels(instance, name, kind, n) })
        .collect()
}

/// One lifecycle phase: the features' commands in install order, then devcontainer.json's.
fn phase(
    features: &[ResolvedFeature],
    of: impl Fn(&features::FeatureMeta) -> &Option<LifecycleCommand>,
    config: &Option<LifecycleCommand>,
) -> Vec<LifecycleCommand> {
    features.iter().filter_map(|f| of(&f.meta).clone()).chain(config.clone()).collect()
}

/// The tag of a workspace's built image (per instance, so that instances never share one).
pub fn build_tag(instance: &str, name: &WorkspaceName) -> String {
    format!("localhost/devaipod-build/{instance}-{name}:latest")
}

mod compose;
pub mod pool;
pub use compose::{ComposePlan, ServicePlan, Start, Wait, service_build_tag};

#[cfg(test)]
mod tests;
