//! The pure container spec: a plan's pod, volumes, secrets and containers → the libpod
//! create requests (`wire.rs`). No I/O and no decisions: every value comes from the plan
//! (`plan.rs`), this only spells it the way podman reads it. Tested field by field below,
//! through `plan()`, so a security property of a workspace is checked where it ends up.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::engine::HelperRun;
use super::libpod::enc;
use super::naming::{self, ROLE_SECRET_READER};
use super::plan::{ContainerNetwork, ContainerPlan, MountPlan, PodSpec, SecretPlan, VolumePlan};
use super::wire::{
    ContainerCreate, Device, LogConfiguration, Mount, NamedVolume, Namespace, PodCreate, PortMapping, RLimit,
    VolumeCreate,
};

/// Published ports listen on this host address only.
pub const PUBLISH_IP: &str = "127.0.0.1";
/// The variable a secret reader prints.
pub const SECRET_READER_VAR: &str = "DEVAIPOD_SECRET";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    #[error(
        "container {container}: security option `{opt}` is not supported (seccomp=, apparmor=, label=, no-new-privileges)"
    )]
    SecurityOpt { container: String, opt: String },
}

/// The libpod spec of a container of pod `pod`. The plan's argv replaces the image's
/// ENTRYPOINT and CMD both; trusted env joins `env` (the workspace container's own), and
/// secrets stay references (`secret_env`) whose values podman fills in.
pub fn container(pod: &str, c: &ContainerPlan) -> Result<ContainerCreate, SpecError> {
    let mut env = c.env.clone();
    env.extend(c.trusted_env.iter().map(|(k, v)| (k.clone(), v.0.clone())));
    let (volumes, mounts) = mounts_of(&c.mounts);
    let mut spec = ContainerCreate {
        name: c.name.clone(),
        pod: Some(pod.to_owned()),
        image: c.image.clone(),
        entrypoint: None,
        command: None,
        work_dir: (!c.workdir.is_empty()).then(|| c.workdir.clone()),
        env,
        secret_env: c.secret_env.clone(),
        labels: c.labels.clone(),
        init: c.init,
        cap_drop: c.cap_drop.clone(),
        cap_add: c.cap_add.clone(),
        no_new_privileges: c.no_new_privileges,
        privileged: c.privileged,
        volumes,
        mounts,
        devices: c.devices.iter().map(|d| Device { path: d.clone() }).collect(),
        user: c.user.clone(),
        shm_size: c.shm_size,
        seccomp_profile_path: None,
        apparmor_profile: None,
        selinux_opts: Vec::new(),
        netns: None,
        ipcns: None,
        log_configuration: None,
        r_limits: c.ulimits.iter().map(|u| RLimit { kind: u.kind.clone(), hard: u.hard, soft: u.soft }).collect(),
        sysctl: c.sysctls.clone(),
    };
    if c.image_entrypoint {
        // The image's ENTRYPOINT stays; `command` (when given) replaces its CMD.
        spec.command = (!c.command.is_empty()).then(|| c.command.clone());
    } else {
        spec.entrypoint = Some(c.command.first().cloned().into_iter().collect());
        spec.command = Some(c.command.get(1..).unwrap_or_default().to_vec());
    }
    if c.network == ContainerNetwork::LoopbackOnly {
        spec.netns = Some(Namespace { nsmode: "none".into() });
        spec.ipcns = Some(Namespace { nsmode: "private".into() });
    }
    for opt in &c.security_opt {
        let (k, v) = opt.split_once(['=', ':']).unwrap_or((opt, ""));
        match k {
            "seccomp" => spec.seccomp_profile_path = Some(v.to_owned()),
            "apparmor" => spec.apparmor_profile = Some(v.to_owned()),
            "label" => spec.selinux_opts.push(v.to_owned()),
            "no-new-privileges" => spec.no_new_privileges = v != "false",
            _ => return Err(SpecError::SecurityOpt { container: c.name.clone(), opt: opt.clone() }),
        }
    }
    Ok(spec)
}

/// When a container asks for any resource limit, podman (as root) also sets the open-file
/// and process limits it was not given to its own default of 1,048,576, which fails where
/// the podman service's hard limits are lower (podman in a container, or under systemd
/// limits): those two are set to the service's own (`service`: name → (soft, hard), from
/// [`parse_proc_limits`]), which the container would have inherited without any limit.
pub fn keep_service_limits(spec: &mut ContainerCreate, service: &BTreeMap<String, (u64, u64)>) {
    if spec.r_limits.is_empty() {
        return;
    }
    for kind in ["nofile", "nproc"] {
        if let Some(&(soft, hard)) = service.get(kind)
            && !spec.r_limits.iter().any(|r| r.kind == kind)
        {
            spec.r_limits.push(RLimit { kind: kind.into(), soft, hard });
        }
    }
}

/// `/proc/<pid>/limits` → `nofile` and `nproc` (soft, hard); "unlimited" is `u64::MAX`.
pub fn parse_proc_limits(text: &str) -> BTreeMap<String, (u64, u64)> {
    let mut out = BTreeMap::new();
    for (kind, label) in [("nofile", "Max open files"), ("nproc", "Max processes")] {
        let Some(rest) = text.lines().find_map(|l| l.strip_prefix(label)) else { continue };
        let num = |s: &str| if s == "unlimited" { Some(u64::MAX) } else { s.parse().ok() };
        let mut words = rest.split_whitespace();
        if let (Some(soft), Some(hard)) = (words.next().and_then(num), words.next().and_then(num)) {
            out.insert(kind.to_owned(), (soft, hard));
        }
    }
    out
}

/// Mount plans → libpod's named volumes and mounts.
fn mounts_of(plans: &[MountPlan]) -> (Vec<NamedVolume>, Vec<Mount>) {
    let (mut volumes, mut mounts) = (Vec::new(), Vec::new());
    for m in plans {
        match m {
            MountPlan::Volume { name, target, readonly } => volumes.push(NamedVolume {
                name: name.clone(),
                dest: target.clone(),
                options: if *readonly { vec!["ro".into()] } else { Vec::new() },
            }),
            MountPlan::Bind { source, target, readonly } => {
                let mut options = vec!["rbind".to_owned()];
                if *readonly {
                    options.push("ro".into());
                }
                mounts.push(Mount {
                    kind: "bind".into(),
                    source: source.to_string_lossy().into_owned(),
                    destination: target.clone(),
                    options,
                });
            }
            MountPlan::Tmpfs { target } => mounts.push(Mount {
                kind: "tmpfs".into(),
                source: "tmpfs".into(),
                destination: target.clone(),
                options: ["rw", "nosuid", "nodev"].map(String::from).to_vec(),
            }),
        }
    }
    (volumes, mounts)
}

/// A helper container's spec ([`HelperRun`]): no pod, the default network (the one
/// workspaces' pods are on), every capability dropped, no new privileges, the instance's
/// helper labels with the run's role. When agents' pods get another network (the egress
/// allowlist of `[network]`), the LLM probe must follow them there to stay on their path.
pub fn helper(name: &str, run: &HelperRun) -> ContainerCreate {
    let (volumes, mounts) = mounts_of(&run.mounts);
    ContainerCreate {
        name: name.to_owned(),
        pod: None,
        image: run.image.clone(),
        entrypoint: Some(run.argv.first().cloned().into_iter().collect()),
        command: Some(run.argv.get(1..).unwrap_or_default().to_vec()),
        work_dir: None,
        env: run.env.clone(),
        secret_env: run.secret_env.clone(),
        labels: naming::helper_labels(&run.instance, run.role),
        init: false,
        cap_drop: vec!["ALL".into()],
        cap_add: Vec::new(),
        no_new_privileges: true,
        privileged: false,
        volumes,
        mounts,
        devices: Vec::new(),
        user: run.user.clone(),
        shm_size: None,
        seccomp_profile_path: None,
        apparmor_profile: None,
        selinux_opts: Vec::new(),
        netns: None,
        ipcns: None,
        log_configuration: None,
        r_limits: Vec::new(),
        sysctl: BTreeMap::new(),
    }
}

/// The pod: its ports published on [`PUBLISH_IP`] at a free host port each.
pub fn pod(p: &PodSpec) -> PodCreate {
    PodCreate {
        name: p.name.clone(),
        hostname: p.hostname.clone(),
        labels: p.labels.clone(),
        portmappings: p
            .ports
            .iter()
            .map(|&port| PortMapping {
                container_port: port,
                host_ip: PUBLISH_IP.into(),
                host_port: 0,
                protocol: "tcp".into(),
            })
            .collect(),
        hostadd: p.add_hosts.clone(),
    }
}

pub fn volume(v: &VolumePlan) -> VolumeCreate {
    VolumeCreate { name: v.name.clone(), labels: v.labels.clone() }
}

/// `POST` path that creates a secret with its labels (the value goes in the body only).
pub fn secret_create_path(s: &SecretPlan) -> String {
    let labels = serde_json::to_string(&s.labels).unwrap_or_else(|_| "{}".into());
    format!("/secrets/create?name={}&labels={}", enc(&s.name), enc(&labels))
}

/// Where the secret reader `container` writes its output, in the caller's `scratch` directory.
pub fn secret_reader_log(scratch: &Path, container: &str) -> PathBuf {
    scratch.join(format!("{container}.log"))
}

/// Whether `path` is a secret reader's log (`devaipod-secret-read-….log`): the only files a
/// sweep of leftover readers deletes.
pub fn is_secret_reader_log(path: &Path) -> bool {
    path.file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_prefix(naming::SECRET_READER_PREFIX))
        .and_then(|n| n.strip_suffix(".log"))
        .is_some_and(|id| !id.is_empty() && id.chars().all(|c| c.is_ascii_hexdigit()))
}

/// A throwaway container that prints one podman secret's value and exits.
#[derive(Debug, Clone, Copy)]
pub struct SecretReader<'a> {
    /// `devaipod-secret-read-<random>`.
    pub container: &'a str,
    pub secret: &'a str,
    pub image: &'a str,
    /// Where its output (the value) is written: a file in the caller's private directory.
    pub log: &'a Path,
    pub instance: &'a str,
}

/// The secret reader's spec: no pod, no network, no capabilities, the instance's helper
/// labels (so a daemon start removes one a crash left), output to a `k8s-file` log at
/// `log` (never the journal).
pub fn secret_reader(r: &SecretReader<'_>) -> ContainerCreate {
    ContainerCreate {
        name: r.container.to_owned(),
        pod: None,
        image: r.image.to_owned(),
        entrypoint: Some(vec!["printenv".into(), SECRET_READER_VAR.into()]),
        command: Some(Vec::new()),
        work_dir: None,
        env: Default::default(),
        secret_env: [(SECRET_READER_VAR.to_owned(), r.secret.to_owned())].into(),
        labels: naming::helper_labels(r.instance, ROLE_SECRET_READER),
        init: false,
        cap_drop: vec!["ALL".into()],
        cap_add: Vec::new(),
        no_new_privileges: true,
        privileged: false,
        volumes: Vec::new(),
        mounts: Vec::new(),
        devices: Vec::new(),
        user: None,
        shm_size: None,
        seccomp_profile_path: None,
        apparmor_profile: None,
        selinux_opts: Vec::new(),
        netns: Some(Namespace { nsmode: "none".into() }),
        ipcns: None,
        log_configuration: Some(LogConfiguration { driver: "k8s-file".into(), path: r.log.to_owned() }),
        r_limits: Vec::new(),
        sysctl: BTreeMap::new(),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde_json::{Value, json};

    use super::*;
    use crate::config::{self, Config};
    use crate::devcontainer::{self, HostContext, Loaded};
    use crate::pods::naming::WorkspaceName;
    use crate::pods::plan::{self, PlanRequest, PodPlan, Redacted};

    const VERSION: &str = env!("CARGO_PKG_VERSION");

    /// Trusted env and secrets, an allowlisted variable and an LLM key from the host.
    const CONFIG: &str = r#"
[env]
allowlist = ["TERM"]
vars = { EDITOR = "vi" }
[trusted.env]
allowlist = ["GH_TOKEN"]
vars = { NPM_TOKEN = "npm-secret-value" }
[trusted]
secrets = ["API_KEY=my-api-key"]
[agent]
api-key-env = "LLM_KEY"
"#;

    /// A devcontainer.json that asks for privileges: the workspace container gets them,
    /// the agent never.
    const PRIVILEGED: &str = r#"{
        "image": "localhost/img:1",
        "capAdd": ["SYS_PTRACE"],
        "securityOpt": ["seccomp=unconfined", "label=disable"],
        "privileged": true,
        "containerEnv": { "FROM_REPO": "1" },
        "forwardPorts": [8000],
        "runArgs": ["--cap-add=NET_ADMIN", "--device=/dev/fuse", "--label", "team=x"]
    }"#;

    fn request() -> PlanRequest {
        PlanRequest {
            name: WorkspaceName::new("hello").unwrap(),
            instance: "t1".into(),
            source: "/src/hello".into(),
            image_override: None,
            host_env: BTreeMap::from([
                ("TERM".to_owned(), "xterm".to_owned()),
                ("GH_TOKEN".to_owned(), "ghp-host-token".to_owned()),
                ("LLM_KEY".to_owned(), "llm-key-value".to_owned()),
            ]),
            opencode_dir: "/cache/opencode/bin".into(),
            checkout_dir: "/tmp/checkout/hello".into(),
            agent_password: Redacted("pw-123".into()),
            sandbox: plan::SandboxMounts {
                socket_dir: "/run/d/gator/hello".into(),
                api_dir: "/run/d/agent/hello".into(),
                bridge: "/usr/bin/devaipod".into(),
                seccomp: Some("/data/seccomp-agent.json".into()),
            },
        }
    }

    fn planned(devcontainer_json: Option<&str>) -> PodPlan {
        let config: Config = config::parse(CONFIG, Path::new("t.toml")).unwrap();
        let loaded = devcontainer_json.map(|text| {
            let path = PathBuf::from("/tmp/checkout/hello/.devcontainer/devcontainer.json");
            let host = HostContext {
                env: BTreeMap::new(),
                local_workspace_folder: "/tmp/checkout/hello".into(),
                devcontainer_id: "id".into(),
            };
            Loaded {
                config: devcontainer::parse(text, &path, &host).unwrap(),
                path,
                features: Vec::new(),
                compose: None,
            }
        });
        plan::plan(&config, loaded.as_ref(), &request()).unwrap()
    }

    /// The agent's create request as podman receives it (JSON), for a privileged devcontainer.
    fn agent() -> Value {
        let p = planned(Some(PRIVILEGED));
        serde_json::to_value(container(&p.pod.name, &p.agent).unwrap()).unwrap()
    }

    fn workspace(devcontainer_json: Option<&str>) -> Value {
        let p = planned(devcontainer_json);
        serde_json::to_value(container(&p.pod.name, &p.workspace).unwrap()).unwrap()
    }

    // The agent container.

    #[test]
    fn agent_drops_every_capability_but_net_bind_service() {
        let a = agent();
        assert_eq!(a["cap_drop"], json!(["ALL"]));
        assert_eq!(a["cap_add"], json!(["NET_BIND_SERVICE"]), "the devcontainer's capAdd is not the agent's");
    }

    #[test]
    fn agent_is_never_privileged_and_gets_no_devices_or_security_options() {
        let a = agent();
        assert_eq!(a["privileged"], json!(false));
        assert_eq!(a["devices"], json!([]));
        for key in ["apparmor_profile", "selinux_opts", "shm_size"] {
            assert_eq!(a.get(key), None, "{key}");
        }
        assert_eq!(a["seccomp_profile_path"], json!("/data/seccomp-agent.json"), "devaipod's: no user namespaces");
    }

    #[test]
    fn agent_has_no_network_but_loopback_and_its_own_ipc() {
        let a = agent();
        assert_eq!(a["netns"], json!({ "nsmode": "none" }));
        assert_eq!(a["ipcns"], json!({ "nsmode": "private" }));
        let w = workspace(None);
        assert_eq!((w.get("netns"), w.get("ipcns")), (None, None), "the human's container keeps the pod's");
    }

    #[test]
    fn agent_cannot_gain_privileges() {
        assert_eq!(agent()["no_new_privileges"], json!(true));
    }

    #[test]
    fn agent_runs_as_uid_1000() {
        assert_eq!(agent()["user"], json!("1000:1000"));
    }

    #[test]
    fn agent_sees_the_main_workspace_read_only_and_its_own_volumes_writable() {
        assert_eq!(
            agent()["volumes"],
            json!([
                { "Name": "devaipod-hello-agent-workspace", "Dest": "/workspaces/hello", "Options": [] },
                { "Name": "devaipod-hello-workspace", "Dest": "/mnt/main-workspace", "Options": ["ro"] },
                { "Name": "devaipod-hello-agent-home", "Dest": "/home/agent", "Options": [] },
            ])
        );
    }

    #[test]
    fn agent_binds_opencode_and_its_sockets_read_only_but_its_api_directory() {
        assert_eq!(
            agent()["mounts"],
            json!([
                { "type": "bind", "source": "/cache/opencode/bin", "destination": "/opt/devaipod/bin", "options": ["rbind", "ro"] },
                { "type": "bind", "source": "/run/d/gator/hello", "destination": crate::pods::plan::GATOR_SOCKET_DIR, "options": ["rbind", "ro"] },
                { "type": "bind", "source": "/run/d/agent/hello", "destination": crate::pods::plan::AGENT_API_DIR, "options": ["rbind"] },
                { "type": "bind", "source": "/usr/bin/devaipod", "destination": crate::pods::plan::GATOR_BRIDGE, "options": ["rbind", "ro"] },
            ])
        );
    }

    /// A worker is the agent's container (read back from its kept plan) with its own clone,
    /// HOME and sockets: every wall and hardening of the agent, nothing of the owner's.
    #[test]
    fn a_worker_is_the_agent_with_its_own_volumes_and_sockets() {
        let p = planned(Some(PRIVILEGED));
        let kept: plan::ContainerPlan = serde_json::from_str(&serde_json::to_string(&p.agent).unwrap()).unwrap();
        assert_eq!(kept, p.agent, "the agent's plan is kept as JSON and read back whole");
        let sandbox = plan::SandboxMounts {
            socket_dir: "/run/d/gator/hello.w2".into(),
            api_dir: "/run/d/agent/hello.w2".into(),
            bridge: "/usr/bin/devaipod".into(),
            seccomp: None,
        };
        let w = plan::worker(&kept, "t1", &p.name, 2, &sandbox);
        let w = serde_json::to_value(container(&p.pod.name, &w).unwrap()).unwrap();
        let a = agent();
        for key in [
            "cap_drop",
            "cap_add",
            "privileged",
            "no_new_privileges",
            "user",
            "netns",
            "ipcns",
            "seccomp_profile_path",
            "env",
            "secret_env",
            "command",
            "image",
        ] {
            assert_eq!(w[key], a[key], "{key}: the worker has the agent's");
        }
        assert_eq!(w["name"], json!("devaipod-hello-worker-2"));
        assert_eq!(
            w["volumes"],
            json!([
                { "Name": "devaipod-hello-worker-2-workspace", "Dest": "/workspaces/hello", "Options": [] },
                { "Name": "devaipod-hello-workspace", "Dest": "/mnt/main-workspace", "Options": ["ro"] },
                { "Name": "devaipod-hello-worker-2-home", "Dest": "/home/agent", "Options": [] },
            ])
        );
        let mounts = w["mounts"].to_string();
        assert!(mounts.contains("/run/d/gator/hello.w2") && mounts.contains("/run/d/agent/hello.w2"), "{mounts}");
        assert!(
            !mounts.contains("/run/d/gator/hello\"") && !mounts.contains("/run/d/agent/hello\""),
            "none of the owner's: {mounts}"
        );
        assert_eq!(w["labels"]["io.devaipod.role"], json!("worker"));
        assert_eq!(w["labels"]["io.devaipod.worker"], json!("2"));
    }

    /// A fan-out candidate is made the same way as a worker: the agent's walls and
    /// hardening, its own clone, HOME and sockets, named and labelled as a candidate.
    #[test]
    fn a_candidate_is_the_agent_with_its_own_volumes_and_sockets() {
        let p = planned(Some(PRIVILEGED));
        let sandbox = plan::SandboxMounts {
            socket_dir: "/run/d/gator/hello.c3".into(),
            api_dir: "/run/d/agent/hello.c3".into(),
            bridge: "/usr/bin/devaipod".into(),
            seccomp: None,
        };
        let c = plan::extra_agent(&p.agent, "t1", &p.name, crate::pods::naming::Extra::Candidate, 3, &sandbox);
        let c = serde_json::to_value(container(&p.pod.name, &c).unwrap()).unwrap();
        let a = agent();
        for key in ["cap_drop", "cap_add", "privileged", "no_new_privileges", "user", "netns", "ipcns", "secret_env"] {
            assert_eq!(c[key], a[key], "{key}: the candidate has the agent's");
        }
        assert_eq!(c["name"], json!("devaipod-hello-candidate-3"));
        let volumes = c["volumes"].to_string();
        assert!(
            volumes.contains("devaipod-hello-candidate-3-workspace")
                && volumes.contains("devaipod-hello-candidate-3-home")
        );
        assert!(!volumes.contains("devaipod-hello-agent-"), "none of the owner's: {volumes}");
        let mounts = c["mounts"].to_string();
        assert!(mounts.contains("/run/d/gator/hello.c3") && mounts.contains("/run/d/agent/hello.c3"), "{mounts}");
        assert_eq!(
            (&c["labels"]["io.devaipod.role"], &c["labels"]["io.devaipod.candidate"]),
            (&json!("candidate"), &json!("3"))
        );
    }

    #[test]
    fn agent_secrets_are_podman_secrets_of_type_env_never_values() {
        let a = agent();
        assert_eq!(
            a["secret_env"],
            json!({ "OPENCODE_SERVER_PASSWORD": "devaipod-hello-agent-password" }),
            "the LLM key is added by the egress proxy, never given to the agent"
        );
        let text = a.to_string();
        for value in ["pw-123", "llm-key-value", "ghp-host-token", "npm-secret-value", "my-api-key"] {
            assert!(!text.contains(value), "{value} in the agent's spec");
        }
    }

    #[test]
    fn agent_env_holds_the_allowlist_and_its_settings_only() {
        let a = agent();
        let keys: Vec<&str> = a["env"].as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                "DEVAIPOD_LLM_API_KEY",
                "EDITOR",
                "HOME",
                "HTTPS_PROXY",
                "HTTP_PROXY",
                "NO_PROXY",
                "OPENCODE_CONFIG_CONTENT",
                "OPENCODE_DISABLE_MODELS_FETCH",
                "TERM",
                "http_proxy",
                "https_proxy",
                "no_proxy"
            ]
        );
        assert_eq!(a["env"]["DEVAIPOD_LLM_API_KEY"], json!(crate::agent::config::PLACEHOLDER_KEY));
        assert_eq!(a["env"]["TERM"], json!("xterm"));
        assert_eq!(a["env"]["EDITOR"], json!("vi"));
        assert_eq!(a["env"]["HOME"], json!("/home/agent"));
    }

    #[test]
    fn agent_labels_are_instance_workspace_role_version() {
        assert_eq!(
            agent()["labels"],
            json!({
                "io.devaipod.instance": "t1",
                "io.devaipod.role": "agent",
                "io.devaipod.version": VERSION,
                "io.devaipod.workspace": "hello",
            })
        );
    }

    #[test]
    fn agent_argv_replaces_the_images_entrypoint_and_cmd() {
        let a = agent();
        assert_eq!(a["entrypoint"], json!([crate::pods::plan::GATOR_BRIDGE]));
        let command = a["command"].as_array().unwrap();
        assert_eq!(command[0], json!("agent-shim"));
        assert_eq!(
            command[command.len() - 6..],
            json!(["/opt/devaipod/bin/opencode", "serve", "--port", "4096", "--hostname", "127.0.0.1"])
                .as_array()
                .unwrap()[..]
        );
        assert_eq!(a["work_dir"], json!("/workspaces/hello"));
    }

    #[test]
    fn both_containers_run_an_init_in_the_pod() {
        let p = planned(None);
        for c in [&p.agent, &p.workspace] {
            let s = serde_json::to_value(container(&p.pod.name, c).unwrap()).unwrap();
            assert_eq!(s["init"], json!(true), "{}", c.name);
            assert_eq!(s["pod"], json!("devaipod-hello"), "{}", c.name);
            assert_eq!(s["image"], json!("localhost/devaipod-base:latest"), "{}", c.name);
        }
    }

    // The workspace container.

    #[test]
    fn workspace_argv_is_podmans_init_in_pause_mode() {
        let w = workspace(None);
        assert_eq!(w["entrypoint"], json!(["/run/podman-init"]));
        assert_eq!(w["command"], json!(["-P"]));
    }

    #[test]
    fn workspace_gets_no_privilege_the_devcontainer_does_not_ask_for() {
        let w = workspace(None);
        assert_eq!(w["cap_add"], json!([]));
        assert_eq!(w["cap_drop"], json!([]));
        assert_eq!(w["privileged"], json!(false));
        assert_eq!(w["no_new_privileges"], json!(false));
        assert_eq!(w["devices"], json!([]));
        for key in ["seccomp_profile_path", "apparmor_profile", "selinux_opts", "user"] {
            assert_eq!(w.get(key), None, "{key}");
        }
    }

    #[test]
    fn workspace_cap_add_comes_from_cap_add_and_run_args() {
        assert_eq!(workspace(Some(PRIVILEGED))["cap_add"], json!(["SYS_PTRACE", "NET_ADMIN"]));
    }

    #[test]
    fn workspace_privileged_comes_from_the_devcontainer() {
        let w = workspace(Some(PRIVILEGED));
        assert_eq!(w["privileged"], json!(true));
        assert_eq!(w["devices"], json!([{ "path": "/dev/fuse" }]));
    }

    #[test]
    fn workspace_security_opt_maps_to_libpod_fields() {
        let w = workspace(Some(PRIVILEGED));
        assert_eq!(w["seccomp_profile_path"], json!("unconfined"));
        assert_eq!(w["selinux_opts"], json!(["disable"]));
        assert_eq!(w.get("apparmor_profile"), None);
        let w = workspace(Some(r#"{"securityOpt": ["apparmor=unconfined", "no-new-privileges"]}"#));
        assert_eq!(w["apparmor_profile"], json!("unconfined"));
        assert_eq!(w["no_new_privileges"], json!(true));
        let w = workspace(Some(r#"{"securityOpt": ["no-new-privileges:false"]}"#));
        assert_eq!(w["no_new_privileges"], json!(false));
    }

    #[test]
    fn run_args_limits_sysctls_gpus_and_hosts_reach_podman_for_the_workspace_only() {
        let json = r#"{"runArgs": ["--ulimit", "nofile=1024:4096", "--sysctl", "net.core.somaxconn=1024",
            "--gpus", "all", "--add-host", "db.local:10.1.2.3", "--hostname", "devbox", "--network=host"]}"#;
        let p = planned(Some(json));
        let w = serde_json::to_value(container("p", &p.workspace).unwrap()).unwrap();
        assert_eq!(w["r_limits"], json!([{ "type": "nofile", "soft": 1024, "hard": 4096 }]));
        assert_eq!(w["sysctl"], json!({ "net.core.somaxconn": "1024" }));
        assert_eq!(w["devices"], json!([{ "path": "nvidia.com/gpu=all" }]));
        let a = serde_json::to_value(container("p", &p.agent).unwrap()).unwrap();
        for key in ["r_limits", "sysctl"] {
            assert_eq!(a.get(key), None, "{key}");
        }
        assert_eq!(a["devices"], json!([]));
        let pod = serde_json::to_value(pod(&p.pod)).unwrap();
        assert_eq!(pod["hostadd"], json!(["db.local:10.1.2.3"]));
        assert_eq!(pod["hostname"], json!("devbox"));
        assert!(p.warnings.iter().any(|w| w.starts_with("runArgs `--network=host` is ignored")), "{:?}", p.warnings);
    }

    #[test]
    fn a_container_with_limits_keeps_the_services_other_limits() {
        let proc_limits = "Limit                     Soft Limit           Hard Limit           Units     \n\
            Max processes             32768                32768                processes \n\
            Max open files            1024                 unlimited            files     \n";
        let service = parse_proc_limits(proc_limits);
        assert_eq!(service["nproc"], (32768, 32768));
        assert_eq!(service["nofile"], (1024, u64::MAX));
        let p = planned(Some(r#"{"runArgs": ["--ulimit", "nofile=100:200"]}"#));
        let mut c = container("p", &p.workspace).unwrap();
        keep_service_limits(&mut c, &service);
        assert_eq!(
            c.r_limits,
            [
                RLimit { kind: "nofile".into(), soft: 100, hard: 200 },
                RLimit { kind: "nproc".into(), soft: 32768, hard: 32768 }
            ]
        );
        let mut a = container("p", &planned(None).agent).unwrap();
        keep_service_limits(&mut a, &service);
        assert!(a.r_limits.is_empty(), "no limit asked, none added: the service's are inherited");
    }

    #[test]
    fn an_unknown_security_option_is_refused() {
        let p = planned(None);
        let bad = ContainerPlan { security_opt: vec!["systempaths=unconfined".into()], ..p.workspace };
        assert_eq!(
            container("devaipod-hello", &bad).unwrap_err(),
            SpecError::SecurityOpt {
                container: "devaipod-hello-workspace".into(),
                opt: "systempaths=unconfined".into()
            }
        );
    }

    #[test]
    fn workspace_holds_the_repository_volume_writable() {
        let w = workspace(None);
        assert_eq!(
            w["volumes"],
            json!([{ "Name": "devaipod-hello-workspace", "Dest": "/workspaces/hello", "Options": [] }])
        );
        assert_eq!(w["mounts"], json!([]), "no gator socket, no opencode in the human's container");
    }

    #[test]
    fn workspace_env_has_trusted_values_and_secrets_by_reference() {
        let w = workspace(Some(PRIVILEGED));
        assert_eq!(
            w["env"],
            json!({
                "EDITOR": "vi",
                "FROM_REPO": "1",
                "GH_TOKEN": "ghp-host-token",
                "NPM_TOKEN": "npm-secret-value",
                "TERM": "xterm",
            })
        );
        assert_eq!(w["secret_env"], json!({ "API_KEY": "my-api-key" }));
    }

    #[test]
    fn workspace_labels_are_ours_and_the_run_args_labels() {
        assert_eq!(
            workspace(Some(PRIVILEGED))["labels"],
            json!({
                "io.devaipod.instance": "t1",
                "io.devaipod.role": "workspace",
                "io.devaipod.version": VERSION,
                "io.devaipod.workspace": "hello",
                "team": "x",
            })
        );
        // (runArgs labels named io.devaipod.* are refused when devcontainer.json is read.)
    }

    #[test]
    fn tmpfs_mounts_are_nosuid_nodev() {
        let p = planned(Some(r#"{"mounts": [{"type": "tmpfs", "target": "/scratch"}]}"#));
        let w = serde_json::to_value(container(&p.pod.name, &p.workspace).unwrap()).unwrap();
        assert_eq!(
            w["mounts"],
            json!([{ "type": "tmpfs", "source": "tmpfs", "destination": "/scratch", "options": ["rw", "nosuid", "nodev"] }])
        );
    }

    // The pod, volumes and secrets.

    #[test]
    fn ports_are_published_on_loopback_only() {
        let p = planned(Some(PRIVILEGED));
        assert_eq!(
            serde_json::to_value(pod(&p.pod)).unwrap()["portmappings"],
            json!([{ "container_port": 8000, "host_ip": "127.0.0.1", "host_port": 0, "protocol": "tcp" }]),
            "the human's forwarded ports; the agent's API is its socket"
        );
    }

    #[test]
    fn pod_carries_instance_workspace_version_and_where_it_came_from() {
        let s = serde_json::to_value(pod(&planned(None).pod)).unwrap();
        assert_eq!(s["name"], json!("devaipod-hello"));
        assert_eq!(s["hostname"], json!("hello"));
        assert_eq!(
            s["labels"],
            json!({
                "io.devaipod.instance": "t1",
                "io.devaipod.source": "/src/hello",
                "io.devaipod.version": VERSION,
                "io.devaipod.workspace": "hello",
                "io.devaipod.workspace-folder": "/workspaces/hello",
            })
        );
    }

    #[test]
    fn volumes_carry_the_instance_label() {
        let p = planned(None);
        let s = serde_json::to_value(volume(&p.volumes[0])).unwrap();
        assert_eq!(
            s,
            json!({
                "Name": "devaipod-hello-workspace",
                "Labels": { "io.devaipod.instance": "t1", "io.devaipod.version": VERSION, "io.devaipod.workspace": "hello" },
            })
        );
    }

    #[test]
    fn secrets_are_created_with_their_labels_and_the_value_in_the_body_only() {
        let p = planned(None);
        let names: Vec<&str> = p.secrets.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["devaipod-hello-agent-password", "devaipod-hello-llm-key"]);
        let labels =
            json!({ "io.devaipod.instance": "t1", "io.devaipod.version": VERSION, "io.devaipod.workspace": "hello" });
        assert_eq!(
            secret_create_path(&p.secrets[0]),
            format!("/secrets/create?name=devaipod-hello-agent-password&labels={}", enc(&labels.to_string()))
        );
        assert!(!secret_create_path(&p.secrets[0]).contains("pw-123"));
    }

    // The secret reader.

    #[test]
    fn only_secret_reader_logs_are_swept() {
        let log = secret_reader_log(Path::new("/run/d/secrets"), "devaipod-secret-read-00ff");
        assert_eq!(log, Path::new("/run/d/secrets/devaipod-secret-read-00ff.log"));
        assert!(is_secret_reader_log(&log));
        for other in [
            "/etc/passwd",
            "/run/d/devaipod-secret-read-.log",
            "/x/devaipod-secret-read-00ff",
            "/x/devaipod-secret-read-../a.log",
            "/x/devaipod-secret-read-zz.log",
        ] {
            assert!(!is_secret_reader_log(Path::new(other)), "{other}");
        }
    }

    #[test]
    fn the_secret_reader_has_no_network_no_capabilities_and_the_instance_labels() {
        let r = SecretReader {
            container: "devaipod-secret-read-00ff",
            secret: "gh-token",
            image: "localhost/img:1",
            log: Path::new("/run/d/secrets/devaipod-secret-read-00ff.log"),
            instance: "t1",
        };
        assert_eq!(
            serde_json::to_value(secret_reader(&r)).unwrap(),
            json!({
                "name": "devaipod-secret-read-00ff",
                "image": "localhost/img:1",
                "entrypoint": ["printenv", "DEVAIPOD_SECRET"],
                "command": [],
                "env": {},
                "secret_env": { "DEVAIPOD_SECRET": "gh-token" },
                "labels": { "io.devaipod.instance": "t1", "io.devaipod.role": "secret-reader", "io.devaipod.version": VERSION },
                "init": false,
                "cap_drop": ["ALL"],
                "cap_add": [],
                "no_new_privileges": true,
                "privileged": false,
                "volumes": [],
                "mounts": [],
                "devices": [],
                "netns": { "nsmode": "none" },
                "log_configuration": { "driver": "k8s-file", "path": "/run/d/secrets/devaipod-secret-read-00ff.log" },
            })
        );
    }

    #[test]
    fn a_helper_has_no_pod_no_capabilities_and_the_instances_labels() {
        use crate::pods::engine::HelperRun;
        let run = HelperRun {
            role: naming::ROLE_LLM_PROBE,
            image: "img:1".into(),
            argv: vec!["/opt/devaipod/gator/devaipod".into(), "probe-llm".into()],
            mounts: vec![MountPlan::Bind {
                source: "/usr/bin/devaipod".into(),
                target: "/opt/devaipod/gator/devaipod".into(),
                readonly: true,
            }],
            env: BTreeMap::from([("DEVAIPOD_LLM_API_KEY".to_owned(), "none".to_owned())]),
            secret_env: BTreeMap::new(),
            user: Some("1000:1000".into()),
            instance: "t1".into(),
            timeout_secs: 15,
        };
        let v = serde_json::to_value(helper("devaipod-helper-0001", &run)).unwrap();
        assert_eq!(v["name"], "devaipod-helper-0001");
        assert!(v.get("pod").is_none() && v.get("netns").is_none(), "no pod, the default network: {v}");
        assert_eq!(
            (v["entrypoint"].clone(), v["command"].clone()),
            (json!(["/opt/devaipod/gator/devaipod"]), json!(["probe-llm"]))
        );
        assert_eq!((v["cap_drop"].clone(), v["cap_add"].clone()), (json!(["ALL"]), json!([])));
        assert_eq!(
            (v["no_new_privileges"].clone(), v["privileged"].clone(), v["user"].clone()),
            (json!(true), json!(false), json!("1000:1000"))
        );
        assert_eq!(
            v["mounts"],
            json!([{"type": "bind", "source": "/usr/bin/devaipod", "destination": "/opt/devaipod/gator/devaipod", "options": ["rbind", "ro"]}])
        );
        assert_eq!(
            v["labels"],
            json!({"io.devaipod.instance": "t1", "io.devaipod.role": "llm-probe", "io.devaipod.version": VERSION})
        );
    }
}
