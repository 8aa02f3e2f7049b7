//! docker-compose files of a devcontainer.json (`dockerComposeFile`, `service`,
//! `runServices`): read (several files merged in order), interpolated (`${VAR}`,
//! `${VAR:-default}` from the caller's environment and the `.env` file beside the first
//! file), checked key by key, and ordered by `depends_on`. Pure but for reading the files
//! (`load`); `pods::plan` turns the result into containers of the workspace's pod.
//!
//! Every refusal names the file, the line and the key (`services.db.network_mode`); what
//! devaipod ignores is a warning naming the key.

pub mod interp;
mod order;
mod service;
pub mod yaml;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Serialize;

pub use order::{OrderError, start_order};
pub use service::normalize;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ComposeError {
    #[error("cannot read {path}: {message}")]
    Read { path: PathBuf, message: String },
    #[error("{path}:{line}: {message}")]
    Syntax { path: PathBuf, line: usize, message: String },
    #[error("{path}:{line}: `{key}`: {message}")]
    Key { path: PathBuf, line: usize, key: String, message: String },
}

/// Where something was written: a compose file and a line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct At {
    pub file: PathBuf,
    pub line: usize,
}

impl At {
    pub fn error(&self, key: impl Into<String>, message: impl Into<String>) -> ComposeError {
        ComposeError::Key { path: self.file.clone(), line: self.line, key: key.into(), message: message.into() }
    }
}

/// The merged project of one or several compose files.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Project {
    pub files: Vec<PathBuf>,
    pub services: BTreeMap<String, Service>,
    /// Top-level `volumes`: the named volumes services may use.
    pub volumes: BTreeMap<String, NamedVolume>,
    /// Keys devaipod does not apply, each named.
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Default)]
pub struct NamedVolume {
    /// `external: true`: a volume that exists already, used by its name and never removed.
    pub external: bool,
    /// `name:` (the real name of an external volume).
    pub name: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Service {
    pub name: String,
    /// Where the service is first defined.
    pub at: At,
    pub image: Option<String>,
    pub build: Option<Build>,
    /// `env_file`s (in order, read by [`load`]), then `environment`.
    pub environment: BTreeMap<String, String>,
    #[serde(skip)]
    pub(crate) env_entries: Vec<(String, Option<String>)>,
    #[serde(skip)]
    pub(crate) env_files: Vec<EnvFile>,
    pub volumes: Vec<ServiceVolume>,
    pub command: Option<Vec<String>>,
    pub entrypoint: Option<Vec<String>>,
    pub depends_on: BTreeMap<String, Dependency>,
    pub healthcheck: Option<Healthcheck>,
    pub cap_add: Vec<String>,
    pub cap_drop: Vec<String>,
    pub security_opt: Vec<String>,
    pub privileged: Option<bool>,
    pub ports: Vec<Port>,
    pub user: Option<String>,
    pub working_dir: Option<String>,
    /// `host:ip` entries.
    pub extra_hosts: Vec<String>,
    pub labels: BTreeMap<String, String>,
    pub tmpfs: Vec<String>,
    pub profiles: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Build {
    /// Absolute, on the host.
    pub context: PathBuf,
    /// Absolute, on the host (default `<context>/Dockerfile`).
    pub dockerfile: PathBuf,
    pub args: BTreeMap<String, String>,
    pub target: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct EnvFile {
    pub path: PathBuf,
    pub required: bool,
    pub at: At,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum ServiceVolume {
    /// A volume of the top-level `volumes`.
    Named {
        name: String,
        target: String,
        readonly: bool,
    },
    /// A volume without a name (`- /var/lib/data`): one of this service's own.
    Anonymous {
        target: String,
    },
    /// The repository (a bind of its folder, or of a folder holding it): `target` is where
    /// the repository itself appears.
    Repository {
        target: String,
    },
    /// A host path, absolute and inside the repository.
    Bind {
        source: PathBuf,
        target: String,
        readonly: bool,
    },
    Tmpfs {
        target: String,
    },
}

impl ServiceVolume {
    pub fn target(&self) -> &str {
        match self {
            ServiceVolume::Named { target, .. }
            | ServiceVolume::Anonymous { target }
            | ServiceVolume::Repository { target }
            | ServiceVolume::Bind { target, .. }
            | ServiceVolume::Tmpfs { target } => target,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Condition {
    ServiceStarted,
    ServiceHealthy,
    ServiceCompletedSuccessfully,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Dependency {
    pub condition: Condition,
    /// `required: false`: a dependency that may be missing.
    pub required: bool,
    pub at: At,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Healthcheck {
    /// The argv of one check (`CMD-SHELL` as `/bin/sh -c …`).
    pub argv: Vec<String>,
    pub interval_ms: u64,
    pub timeout_ms: u64,
    pub retries: u32,
    pub start_period_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Port {
    /// The container's port (published on 127.0.0.1 at a free port).
    pub container: u16,
    pub at: At,
}

/// What a project is read with.
pub struct LoadContext<'a> {
    /// The caller's environment (interpolation; `environment` entries without a value).
    pub env: &'a BTreeMap<String, String>,
    /// The repository on the host: bind sources must be inside it.
    pub repo: &'a Path,
}

/// Reads, interpolates, checks and merges the compose files (in order; the `.env` beside
/// the first one supplies variables the caller's environment does not set).
pub fn load(files: &[PathBuf], cx: &LoadContext<'_>) -> Result<Project, ComposeError> {
    let read = |path: &Path| {
        std::fs::read_to_string(path).map_err(|e| ComposeError::Read { path: path.to_owned(), message: e.to_string() })
    };
    let mut env = BTreeMap::new();
    if let Some(dir) = files.first().and_then(|f| f.parent()) {
        let dotenv = dir.join(".env");
        if dotenv.is_file() {
            let text = read(&dotenv)?;
            let pairs = interp::parse_env_file(&text).map_err(|(line, message)| ComposeError::Syntax {
                path: dotenv.clone(),
                line,
                message,
            })?;
            env.extend(pairs);
        }
    }
    env.extend(cx.env.iter().map(|(k, v)| (k.clone(), v.clone())));
    let mut texts = Vec::new();
    for f in files {
        texts.push((f.clone(), read(f)?));
    }
    let mut project = parse_files(&texts, &env, cx.repo)?;
    for s in project.services.values_mut() {
        let mut resolved = BTreeMap::new();
        for f in &s.env_files {
            let text = match std::fs::read_to_string(&f.path) {
                Ok(t) => t,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound && !f.required => continue,
                Err(e) => {
                    return Err(f.at.error(
                        format!("services.{}.env_file", s.name),
                        format!("cannot read {}: {e}", f.path.display()),
                    ));
                }
            };
            let pairs = interp::parse_env_file(&text).map_err(|(line, message)| ComposeError::Syntax {
                path: f.path.clone(),
                line,
                message,
            })?;
            resolved.extend(pairs);
        }
        resolved.extend(std::mem::take(&mut s.environment));
        s.environment = resolved;
    }
    Ok(project)
}

/// The pure part of [`load`]: compose texts (with their paths) → the merged project, with
/// `env` for interpolation. `env_file`s are not read here.
pub fn parse_files(
    texts: &[(PathBuf, String)],
    env: &BTreeMap<String, String>,
    repo: &Path,
) -> Result<Project, ComposeError> {
    let mut project =
        Project { files: Vec::new(), services: BTreeMap::new(), volumes: BTreeMap::new(), warnings: Vec::new() };
    for (path, text) in texts {
        project.files.push(path.clone());
        let file = service::read_file(path, text, env, repo, &mut project.warnings)?;
        for (name, v) in file.volumes {
            project.volumes.insert(name, v);
        }
        for (name, s) in file.services {
            match project.services.get_mut(&name) {
                Some(base) => service::merge(base, s),
                None => {
                    project.services.insert(name, s);
                }
            }
        }
    }
    for s in project.services.values_mut() {
        // `KEY` without a value takes the caller's (or `.env`'s), and is left out when unset.
        s.environment = s
            .env_entries
            .iter()
            .filter_map(|(k, v)| Some((k.clone(), v.clone().or_else(|| env.get(k).cloned())?)))
            .collect();
    }
    for s in project.services.values() {
        if s.image.is_none() && s.build.is_none() {
            return Err(s.at.error(format!("services.{}", s.name), "a service needs `image` or `build`"));
        }
        for v in &s.volumes {
            if let ServiceVolume::Named { name, .. } = v
                && !project.volumes.contains_key(name)
            {
                return Err(s.at.error(
                    format!("services.{}.volumes", s.name),
                    format!("volume `{name}` is not declared under the top-level `volumes`"),
                ));
            }
        }
    }
    Ok(project)
}

#[cfg(test)]
mod tests;
