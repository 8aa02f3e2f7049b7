//! `~/.config/devaipod.toml`: the user's configuration, its defaults and its validation.
//!
//! A missing file means defaults. Anything else that is wrong (an unknown key, a wrong
//! type, a bad value) is a [`ConfigError`] naming the file, the line and the key, because
//! a config that is silently half-applied is worse than none.

mod model;
mod values;

use std::path::{Path, PathBuf};

pub use model::{
    AgentConfig, AgentKind, AgentPreset, BUILTIN_AGENTS, ClientSection, Config, EngineKind, EngineSection, EnvSection,
    Fanout, HOST_CONTAINERS_INTERNAL, Network, NetworkEgress, Orchestration, PoolSection, RepoPermissions,
    ServiceGator, ServiceGatorGh, Ssh, Trusted, WORKSPACE_HOST, WorkerGator,
};
pub use values::{
    EnvName, HOST_PATTERN_GRAMMAR, HostName, HostPattern, InstanceId, RepoPattern, SecretRef, daemon_url, is_dns_label,
};

/// The base image built by `scripts/setup.sh`, used when neither the request, the
/// devcontainer.json nor the config names one.
pub const DEFAULT_IMAGE: &str = "localhost/devaipod-base:latest";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}:{line}:{column}: {key}: {message}")]
    Invalid {
        path: PathBuf,
        line: usize,
        column: usize,
        /// Dotted path of the offending key, e.g. `trusted.secrets[0]`.
        key: String,
        message: String,
    },
}

/// Where the config lives when neither `--config` nor `DEVAIPOD_CONFIG` says otherwise:
/// `$XDG_CONFIG_HOME/devaipod.toml`, else `~/.config/devaipod.toml`.
pub fn default_path() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("XDG_CONFIG_HOME").filter(|d| !d.is_empty()) {
        return Some(PathBuf::from(dir).join("devaipod.toml"));
    }
    std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".config/devaipod.toml"))
}

/// Loads the config at `path`. A file that does not exist yields the defaults only when
/// `must_exist` is false (the default location); an explicitly named file must exist.
pub fn load(path: &Path, must_exist: bool) -> Result<Config, ConfigError> {
    match std::fs::read_to_string(path) {
        Ok(text) => parse(&text, path),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !must_exist => Ok(Config::default()),
        Err(source) => Err(ConfigError::Read { path: path.to_owned(), source }),
    }
}

/// Parses config text; `path` is only used in error messages.
pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
    let invalid = |span: Option<std::ops::Range<usize>>, key: String, message: String| {
        let (line, column) = span.map(|s| line_col(text, s.start)).unwrap_or((1, 1));
        ConfigError::Invalid { path: path.to_owned(), line, column, key, message }
    };
    let de = toml::Deserializer::parse(text)
        .map_err(|e| invalid(e.span(), "(syntax)".into(), e.message().trim().to_owned()))?;
    serde_path_to_error::deserialize::<_, Config>(de).map_err(|e| {
        let key = e.path().to_string();
        let inner = e.into_inner();
        let key = if key == "." { "(top level)".to_owned() } else { key };
        invalid(inner.span(), key, inner.message().trim().to_owned())
    })
}

/// 1-based line and column of a byte offset.
pub(crate) fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

#[cfg(test)]
mod tests;
