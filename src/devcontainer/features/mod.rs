//! Dev Container Features (containers.dev): what a feature reference names (a local
//! folder, an OCI artifact, a tarball URL), a feature's `devcontainer-feature.json`, the
//! options it is installed with (as the environment `install.sh` reads), and the install
//! order (`dependsOn`, `installsAfter`, `overrideFeatureInstallOrder`).
//!
//! Pure, but for `fetch` (registry and cache) and `build` (the derived image's context).

pub mod build;
pub mod fetch;
mod order;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use order::install_order;

use super::model::{LifecycleCommand, MountSpec};
use super::scalar;

/// Where a feature comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum FeatureSource {
    /// A folder beside devcontainer.json (`"./my-feature"`).
    Local {
        dir: PathBuf,
    },
    Oci(OciRef),
    /// A `.tgz` (or `.tar`) over HTTPS.
    Tarball {
        url: String,
    },
}

/// `registry/repository[:tag|@digest]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OciRef {
    pub registry: String,
    pub repository: String,
    /// A tag or a `sha256:…` digest.
    pub reference: String,
}

impl OciRef {
    /// The registry's base URL: plain HTTP for a registry on this machine only.
    pub fn base_url(&self) -> String {
        let host = self.registry.split(':').next().unwrap_or_default();
        let scheme = if host == "localhost" || host == "127.0.0.1" { "http" } else { "https" };
        format!("{scheme}://{}", self.registry)
    }
}

/// The layer of a feature's OCI artifact.
pub const LAYER_MEDIA_TYPE: &str = "application/vnd.devcontainers.layer.v1+tar";

/// What `id` (a key of `features`) names; `dc_dir` is devcontainer.json's folder.
pub fn classify(id: &str, dc_dir: &Path) -> Result<FeatureSource, String> {
    if id.starts_with("./") || id.starts_with("../") {
        let rel = Path::new(id);
        if rel.components().filter(|c| matches!(c, std::path::Component::ParentDir)).count() > 0 {
            return Err(format!("local feature `{id}` must be a folder inside {} (no `..`)", dc_dir.display()));
        }
        return Ok(FeatureSource::Local { dir: dc_dir.join(rel) });
    }
    if id.starts_with("https://") || id.starts_with("http://") {
        return Ok(FeatureSource::Tarball { url: id.to_owned() });
    }
    if id.starts_with('/') {
        return Err(format!("feature `{id}`: a local feature is written relative to devcontainer.json (`./name`)"));
    }
    let Some((registry, rest)) = id.split_once('/') else {
        return Err(format!(
            "feature `{id}` is a legacy (v1) short id, which the spec has retired: use its OCI reference, e.g. `ghcr.io/devcontainers/features/{id}:1`"
        ));
    };
    let (repository, reference) = if let Some((repo, digest)) = rest.split_once('@') {
        (repo, digest.to_owned())
    } else {
        match rest.rsplit_once(':') {
            Some((repo, tag)) if !tag.contains('/') => (repo, tag.to_owned()),
            _ => (rest, "latest".to_owned()),
        }
    };
    let valid_repo = !repository.is_empty()
        && repository.split('/').all(|p| {
            !p.is_empty() && p.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-".contains(c))
        });
    let valid_ref = !reference.is_empty()
        && reference.chars().all(|c| c.is_ascii_alphanumeric() || "._-:+".contains(c))
        && !reference.starts_with('.');
    let valid_registry = registry.contains(['.', ':']) || registry == "localhost";
    if !valid_repo || !valid_ref || !valid_registry {
        return Err(format!("feature `{id}` is not an OCI reference like ghcr.io/owner/repo/name:1"));
    }
    Ok(FeatureSource::Oci(OciRef { registry: registry.to_owned(), repository: repository.to_owned(), reference }))
}

/// The id used to match `dependsOn`, `installsAfter` and `overrideFeatureInstallOrder`
/// entries: the reference without its tag or digest (`ghcr.io/x/go`), or the local path.
pub fn canonical_id(id: &str) -> String {
    if id.starts_with("./") || id.starts_with("https://") || id.starts_with("http://") {
        return id.trim_end_matches('/').to_owned();
    }
    let id = id.split('@').next().unwrap_or(id);
    match id.rsplit_once(':') {
        Some((repo, tag)) if !tag.contains('/') => repo.to_owned(),
        _ => id.to_owned(),
    }
}

/// A feature's `devcontainer-feature.json`: the keys devaipod acts on.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct FeatureMeta {
    pub id: String,
    pub version: Option<String>,
    pub options: BTreeMap<String, OptionSpec>,
    #[serde(deserialize_with = "scalar::map")]
    pub container_env: BTreeMap<String, String>,
    pub mounts: Vec<MountSpec>,
    pub cap_add: Vec<String>,
    pub security_opt: Vec<String>,
    pub privileged: Option<bool>,
    pub init: Option<bool>,
    pub entrypoint: Option<String>,
    pub installs_after: Vec<String>,
    /// Feature id → its options.
    pub depends_on: BTreeMap<String, serde_json::Value>,
    pub on_create_command: Option<LifecycleCommand>,
    pub update_content_command: Option<LifecycleCommand>,
    pub post_create_command: Option<LifecycleCommand>,
    pub post_start_command: Option<LifecycleCommand>,
    pub post_attach_command: Option<LifecycleCommand>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct OptionSpec {
    pub default: Option<serde_json::Value>,
}

impl FeatureMeta {
    pub fn parse(text: &str, path: &Path) -> Result<FeatureMeta, String> {
        Self::parse_with(text, path, None)
    }

    /// Parses, substituting devcontainer variables (`${devcontainerId}` in mounts) first.
    pub fn parse_with(text: &str, path: &Path, vars: Option<&super::Vars<'_>>) -> Result<FeatureMeta, String> {
        let mut value: serde_json::Value = jsonc_parser::parse_to_serde_value(text, &Default::default())
            .map_err(|e| format!("{}:{}: {}", path.display(), e.line_display(), e.kind()))?;
        if let Some(vars) = vars {
            vars.substitute_json(&mut value);
        }
        serde_path_to_error::deserialize(&value)
            .map_err(|e| format!("{}: field `{}`: {}", path.display(), e.path(), e.inner()))
    }
}

/// The options a feature is used with in devcontainer.json: an object of options, a string
/// (its `version`), or `true`/`{}` for the defaults.
pub fn user_options(id: &str, value: &serde_json::Value) -> Result<BTreeMap<String, String>, String> {
    match value {
        serde_json::Value::Object(o) => o
            .iter()
            .map(|(k, v)| {
                scalar::to_string(v)
                    .map(|s| (k.clone(), s))
                    .ok_or_else(|| format!("features.{id}.{k}: an option is a string, a number or a boolean"))
            })
            .collect(),
        serde_json::Value::String(s) => Ok(BTreeMap::from([("version".to_owned(), s.clone())])),
        serde_json::Value::Bool(true) | serde_json::Value::Null => Ok(BTreeMap::new()),
        _ => Err(format!("features.{id}: expected an object of options, a version string, or true")),
    }
}

/// The variable name an option is given to `install.sh` as (the reference CLI's rule:
/// non-word characters become `_`, leading digits and underscores one `_`, upper case).
pub fn option_env_name(option: &str) -> String {
    let word: String = option.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' { c } else { '_' }).collect();
    let trimmed = word.trim_start_matches(|c: char| c.is_ascii_digit() || c == '_');
    let name = if trimmed.len() < word.len() { format!("_{trimmed}") } else { word };
    name.to_ascii_uppercase()
}

/// A feature ready to install: its files, what it declares, and its options.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ResolvedFeature {
    /// The key in devcontainer.json (or in a `dependsOn`).
    pub id: String,
    /// The folder holding `install.sh` and `devcontainer-feature.json`.
    pub dir: PathBuf,
    /// Content digest (`sha256:…`): the OCI layer's, or the hash of a local folder's files.
    pub digest: String,
    pub meta: FeatureMeta,
    /// Options given, by option name.
    pub options: BTreeMap<String, String>,
}

impl ResolvedFeature {
    /// The environment `install.sh` runs with: every declared option (given, else its
    /// default) and every option given, upper-cased.
    pub fn option_env(&self) -> BTreeMap<String, String> {
        let mut env = BTreeMap::new();
        for (name, spec) in &self.meta.options {
            if let Some(v) = spec.default.as_ref().and_then(scalar::to_string) {
                env.insert(option_env_name(name), v);
            }
        }
        for (name, v) in &self.options {
            env.insert(option_env_name(name), v.clone());
        }
        env
    }
}

#[cfg(test)]
mod tests;
