//! The typed model of devcontainer.json: the keys devaipod acts on. Keys it does not know
//! (editor customizations, `settings`, `extensions`, …) are allowed, as the spec allows
//! tool-specific properties, and ignored.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::scalar;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct DevContainer {
    pub name: Option<String>,
    pub image: Option<String>,
    pub build: Option<Build>,
    /// Legacy top-level form of `build.dockerfile`.
    #[serde(rename = "dockerFile")]
    pub docker_file: Option<String>,
    /// Legacy top-level form of `build.context`.
    pub context: Option<String>,
    pub docker_compose_file: Option<OneOrMany>,
    pub service: Option<String>,
    pub run_services: Option<Vec<String>>,
    /// Feature id → options (an object, or a version string / bool in the short form).
    pub features: BTreeMap<String, serde_json::Value>,
    pub override_feature_install_order: Option<Vec<String>>,
    pub mounts: Vec<MountSpec>,
    /// Numbers and booleans become strings, as the reference CLI takes them.
    #[serde(deserialize_with = "scalar::map")]
    pub container_env: BTreeMap<String, String>,
    /// `null` unsets a variable.
    #[serde(deserialize_with = "scalar::map_nullable")]
    pub remote_env: BTreeMap<String, Option<String>>,
    pub container_user: Option<String>,
    pub remote_user: Option<String>,
    pub workspace_folder: Option<String>,
    pub workspace_mount: Option<String>,
    pub run_args: Vec<String>,
    pub cap_add: Vec<String>,
    pub security_opt: Vec<String>,
    pub privileged: Option<bool>,
    pub init: Option<bool>,
    pub forward_ports: Vec<PortSpec>,
    pub initialize_command: Option<LifecycleCommand>,
    pub on_create_command: Option<LifecycleCommand>,
    pub update_content_command: Option<LifecycleCommand>,
    pub post_create_command: Option<LifecycleCommand>,
    pub post_start_command: Option<LifecycleCommand>,
    pub post_attach_command: Option<LifecycleCommand>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Build {
    pub dockerfile: Option<String>,
    pub context: Option<String>,
    #[serde(deserialize_with = "scalar::map")]
    pub args: BTreeMap<String, String>,
    pub target: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    pub fn to_vec(&self) -> Vec<String> {
        match self {
            OneOrMany::One(s) => vec![s.clone()],
            OneOrMany::Many(v) => v.clone(),
        }
    }
}

/// A lifecycle command: a shell string, an argv array, or named commands run in parallel.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum LifecycleCommand {
    Shell(String),
    Argv(Vec<String>),
    Parallel(BTreeMap<String, ParallelCommand>),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ParallelCommand {
    Shell(String),
    Argv(Vec<String>),
}

impl ParallelCommand {
    /// The argv that runs this command: a shell string goes through `/bin/sh -c`.
    pub fn argv(&self) -> Vec<String> {
        match self {
            ParallelCommand::Shell(s) => vec!["/bin/sh".into(), "-c".into(), s.clone()],
            ParallelCommand::Argv(v) => v.clone(),
        }
    }
}

impl LifecycleCommand {
    /// Commands to run, each with a label; more than one means "run in parallel".
    pub fn commands(&self) -> Vec<(Option<String>, Vec<String>)> {
        match self {
            LifecycleCommand::Shell(s) => {
                vec![(None, ParallelCommand::Shell(s.clone()).argv())]
            }
            LifecycleCommand::Argv(v) => vec![(None, v.clone())],
            LifecycleCommand::Parallel(m) => m.iter().map(|(k, c)| (Some(k.clone()), c.argv())).collect(),
        }
    }
}

/// A `mounts` entry: the Docker `--mount` string form or the object form.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum MountSpec {
    String(String),
    Object(MountObject),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MountObject {
    #[serde(rename = "type")]
    pub kind: MountKind,
    pub source: Option<String>,
    pub target: String,
    #[serde(default)]
    pub readonly: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MountKind {
    Bind,
    Volume,
    Tmpfs,
}

/// A `forwardPorts` entry: a port number, or `"host:port"`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum PortSpec {
    Number(u16),
    HostPort(String),
}

impl PortSpec {
    /// The port of this pod to publish, or `None` for another service's port.
    pub fn local_port(&self) -> Option<u16> {
        match self {
            PortSpec::Number(p) => Some(*p),
            PortSpec::HostPort(s) => match s.split_once(':') {
                Some(("localhost" | "127.0.0.1", port)) => port.parse().ok(),
                _ => None,
            },
        }
    }
}

/// A mount after parsing either form.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mount {
    pub kind: MountKind,
    pub source: Option<String>,
    pub target: String,
    pub readonly: bool,
}

impl MountSpec {
    pub fn parse(&self) -> Result<Mount, String> {
        match self {
            MountSpec::Object(o) => Mount::checked(o.kind, o.source.clone(), o.target.clone(), o.readonly),
            MountSpec::String(s) => Mount::parse_str(s),
        }
    }
}

impl Mount {
    /// Parses the `--mount` string form: `type=bind,source=/a,target=/b,readonly`.
    pub fn parse_str(s: &str) -> Result<Mount, String> {
        let (mut kind, mut source, mut target, mut readonly) = (None, None, None, false);
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (k, v) = part.split_once('=').unwrap_or((part, ""));
            match k {
                "type" => {
                    kind = Some(match v {
                        "bind" => MountKind::Bind,
                        "volume" => MountKind::Volume,
                        "tmpfs" => MountKind::Tmpfs,
                        other => {
                            return Err(format!("mount type `{other}` is not bind, volume or tmpfs"));
                        }
                    })
                }
                "source" | "src" => source = Some(v.to_owned()),
                "target" | "destination" | "dst" => target = Some(v.to_owned()),
                "readonly" | "ro" => readonly = v.is_empty() || v == "true" || v == "1",
                // Options with no effect on where data lives are accepted and ignored.
                "consistency" | "bind-propagation" | "volume-nocopy" => {}
                other => return Err(format!("mount option `{other}` is not supported")),
            }
        }
        let target = target.ok_or_else(|| format!("mount `{s}` has no target"))?;
        Mount::checked(kind.unwrap_or(MountKind::Volume), source, target, readonly)
    }

    fn checked(kind: MountKind, source: Option<String>, target: String, readonly: bool) -> Result<Mount, String> {
        if !target.starts_with('/') {
            return Err(format!("mount target `{target}` must be an absolute path"));
        }
        let source = source.filter(|s| !s.is_empty());
        if kind == MountKind::Bind {
            match &source {
                Some(s) if s.starts_with('/') => {}
                Some(s) => {
                    return Err(format!("bind mount source `{s}` must be an absolute host path"));
                }
                None => return Err(format!("bind mount to `{target}` has no source")),
            }
        }
        Ok(Mount { kind, source, target, readonly })
    }
}
