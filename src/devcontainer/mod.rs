//! devcontainer.json: discovery, JSONC parsing into a typed model, and variable
//! substitution. Knows nothing of podman: `pods::plan` turns the model into a pod.

pub mod compose;
mod discover;
pub mod features;
mod model;
pub mod run_args;
pub mod scalar;
mod subst;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub use discover::{DiscoverError, discover};
pub use model::{
    Build, DevContainer, LifecycleCommand, Mount, MountKind, MountObject, MountSpec, OneOrMany, ParallelCommand,
    PortSpec,
};
pub use run_args::RunArgs;
pub use subst::Vars;

#[derive(Debug, thiserror::Error)]
pub enum DevContainerError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}:{line}:{column}: {message}")]
    Syntax { path: PathBuf, line: usize, column: usize, message: String },
    #[error("{path}:{line}: field `{field}`: {message}")]
    Field { path: PathBuf, line: usize, field: String, message: String },
    #[error(transparent)]
    Discover(#[from] DiscoverError),
    #[error(transparent)]
    Compose(#[from] compose::ComposeError),
}

/// The host side of variable substitution. `Debug` shows the environment's names only.
#[derive(Clone)]
pub struct HostContext {
    pub env: BTreeMap<String, String>,
    /// The local workspace folder (`${localWorkspaceFolder}`).
    pub local_workspace_folder: String,
    pub devcontainer_id: String,
}

impl std::fmt::Debug for HostContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostContext")
            .field("env", &self.env.keys().collect::<Vec<_>>())
            .field("local_workspace_folder", &self.local_workspace_folder)
            .field("devcontainer_id", &self.devcontainer_id)
            .finish()
    }
}

/// A devcontainer.json read from disk, with host variables substituted.
#[derive(Debug, Clone, PartialEq)]
pub struct Loaded {
    pub path: PathBuf,
    pub config: DevContainer,
    /// Its features once fetched ([`features::fetch::resolve`]); empty until then.
    pub features: Vec<features::ResolvedFeature>,
    /// Its compose project once read ([`load_compose`]), when it names `dockerComposeFile`.
    pub compose: Option<compose::Project>,
}

impl Loaded {
    /// The folder holding devcontainer.json; `build.context` and `build.dockerfile` are
    /// relative to it.
    pub fn dir(&self) -> &Path {
        self.path.parent().unwrap_or(Path::new("."))
    }
}

/// Reads and parses a devcontainer.json, substituting host variables (`${localEnv:…}`,
/// `${localWorkspaceFolder}`, `${containerWorkspaceFolder}`, `${devcontainerId}`);
/// `${containerEnv:…}` is resolved later, against the container's environment.
pub fn load(path: &Path, host: &HostContext) -> Result<Loaded, DevContainerError> {
    let text =
        std::fs::read_to_string(path).map_err(|source| DevContainerError::Read { path: path.to_owned(), source })?;
    let config = parse(&text, path, host)?;
    Ok(Loaded { path: path.to_owned(), config, features: Vec::new(), compose: None })
}

/// Reads the compose files a devcontainer.json names (`dockerComposeFile`, relative to its
/// folder) in `checkout` (the repository they are in), with `host`'s environment for
/// interpolation, and checks `service` and `runServices` against them. Bind sources, found
/// in `checkout`, are made to point at the same place in `host`'s local workspace folder
/// (the user's own folder for a local source). Nothing to do without `dockerComposeFile`.
pub fn load_compose(loaded: &mut Loaded, host: &HostContext, checkout: &Path) -> Result<(), DevContainerError> {
    let Some(files) = &loaded.config.docker_compose_file else { return Ok(()) };
    let text = std::fs::read_to_string(&loaded.path).unwrap_or_default();
    let field = |keys: &[&str], message: String| DevContainerError::Field {
        path: loaded.path.clone(),
        line: line_of_key(&text, keys).unwrap_or(1),
        field: keys.join("."),
        message,
    };
    let Some(service) = &loaded.config.service else {
        return Err(field(
            &["dockerComposeFile"],
            "`service` is required with dockerComposeFile: it names the service devaipod makes the workspace container"
                .into(),
        ));
    };
    let dir = loaded.dir().to_owned();
    let paths: Vec<PathBuf> = files.to_vec().iter().map(|f| compose::normalize(&dir.join(f))).collect();
    if paths.is_empty() {
        return Err(field(&["dockerComposeFile"], "names no file".into()));
    }
    let mut project = compose::load(&paths, &compose::LoadContext { env: &host.env, repo: checkout })?;
    let local = Path::new(&host.local_workspace_folder);
    for s in project.services.values_mut() {
        for v in &mut s.volumes {
            if let compose::ServiceVolume::Bind { source, .. } = v
                && let Ok(rel) = source.strip_prefix(checkout)
            {
                *source = local.join(rel);
            }
        }
    }
    match compose::start_order(&project, service, loaded.config.run_services.as_deref()) {
        Ok(_) => {}
        Err(e @ compose::OrderError::NoSuchService(..)) => return Err(field(&["service"], e.to_string())),
        Err(e @ compose::OrderError::NoSuchRunService(..)) => return Err(field(&["runServices"], e.to_string())),
        Err(compose::OrderError::Compose(e)) => return Err(e.into()),
    }
    loaded.compose = Some(project);
    Ok(())
}

pub fn parse(text: &str, path: &Path, host: &HostContext) -> Result<DevContainer, DevContainerError> {
    let options = jsonc_parser::ParseOptions::default();
    let mut value: serde_json::Value =
        jsonc_parser::parse_to_serde_value(text, &options).map_err(|e| DevContainerError::Syntax {
            path: path.to_owned(),
            line: e.line_display(),
            column: e.column_display(),
            message: e.kind().to_string(),
        })?;
    if !value.is_object() {
        return Err(DevContainerError::Field {
            path: path.to_owned(),
            line: 1,
            field: "(top level)".into(),
            message: "a devcontainer.json must hold one JSON object".into(),
        });
    }

    let mut vars = Vars {
        local_env: &host.env,
        local_workspace_folder: &host.local_workspace_folder,
        container_workspace_folder: None,
        devcontainer_id: &host.devcontainer_id,
        container_env: None,
    };
    // `${containerWorkspaceFolder}` depends on workspaceFolder, which may itself use
    // host variables: resolve it first.
    let workspace_folder = match value.get("workspaceFolder") {
        Some(serde_json::Value::String(s)) => Some(vars.substitute(s)),
        _ => None,
    };
    let default_folder = default_workspace_folder(&host.local_workspace_folder);
    vars.container_workspace_folder = Some(workspace_folder.as_deref().unwrap_or(&default_folder));
    vars.substitute_json(&mut value);

    let config: DevContainer = serde_path_to_error::deserialize(&value).map_err(|e| {
        let field = e.path().to_string();
        let line = line_at(text, &path_segs(e.path())).unwrap_or(1);
        DevContainerError::Field { path: path.to_owned(), line, field, message: describe(e.inner()) }
    })?;
    validate(&config).map_err(|(field, message)| {
        let line = line_at(text, &field_segs(&field)).unwrap_or(1);
        DevContainerError::Field { path: path.to_owned(), line, field, message }
    })?;
    Ok(config)
}

/// `/workspaces/<basename of the local folder>`, as the reference CLI does.
pub fn default_workspace_folder(local_folder: &str) -> String {
    let base = local_folder.trim_end_matches('/').rsplit('/').next().unwrap_or("workspace");
    format!("/workspaces/{}", if base.is_empty() { "workspace" } else { base })
}

/// Checks the model beyond its JSON types.
fn validate(c: &DevContainer) -> Result<(), (String, String)> {
    for (i, m) in c.mounts.iter().enumerate() {
        m.parse().map_err(|e| (format!("mounts[{i}]"), e))?;
    }
    run_args::parse(&c.run_args).map_err(|e| (format!("runArgs[{}]", e.index), e.message))?;
    if let Some(f) = &c.workspace_folder
        && !f.starts_with('/')
    {
        return Err(("workspaceFolder".into(), format!("`{f}` must be an absolute path")));
    }
    for opt in &c.security_opt {
        run_args::check_security_opt(opt).map_err(|e| ("securityOpt".to_owned(), e))?;
    }
    if let Some(m) = &c.workspace_mount {
        Mount::parse_str(m).map_err(|e| ("workspaceMount".to_owned(), e))?;
    }
    for (key, cmd) in [
        ("initializeCommand", &c.initialize_command),
        ("onCreateCommand", &c.on_create_command),
        ("updateContentCommand", &c.update_content_command),
        ("postCreateCommand", &c.post_create_command),
        ("postStartCommand", &c.post_start_command),
        ("postAttachCommand", &c.post_attach_command),
    ] {
        let empty = match cmd {
            Some(LifecycleCommand::Argv(v)) => v.is_empty(),
            Some(LifecycleCommand::Parallel(m)) => {
                m.values().any(|c| matches!(c, ParallelCommand::Argv(v) if v.is_empty()))
            }
            _ => false,
        };
        if empty {
            return Err((key.into(), "an empty command array runs nothing: remove the key or give a command".into()));
        }
    }
    for (i, p) in c.forward_ports.iter().enumerate() {
        if let PortSpec::HostPort(s) = p {
            let ok = s.split_once(':').is_some_and(|(h, port)| !h.is_empty() && port.parse::<u16>().is_ok());
            if !ok {
                return Err((format!("forwardPorts[{i}]"), format!("`{s}` is not a port number or \"host:port\"")));
            }
        }
    }
    Ok(())
}

/// serde's untagged-enum messages say nothing about what was expected: say it here.
fn describe(e: &serde_json::Error) -> String {
    let msg = e.to_string();
    if msg.starts_with("data did not match any variant of untagged enum") {
        let what = msg.rsplit(' ').next().unwrap_or_default();
        let expected = match what {
            "LifecycleCommand" => "a string, an array of strings, or an object of named commands",
            "ParallelCommand" => "a string or an array of strings",
            "MountSpec" => "a mount string (\"type=bind,source=…,target=…\") or an object with type and target",
            "PortSpec" => "a port number or a \"host:port\" string",
            "OneOrMany" => "a string or an array of strings",
            _ => return msg,
        };
        return format!("expected {expected}");
    }
    msg
}

/// One step of a path into the document, for finding a field's line.
enum Seg<'a> {
    Key(&'a str),
    Index(usize),
}

fn path_segs(path: &serde_path_to_error::Path) -> Vec<Seg<'_>> {
    path.iter()
        .filter_map(|s| match s {
            serde_path_to_error::Segment::Map { key } => Some(Seg::Key(key)),
            serde_path_to_error::Segment::Seq { index } => Some(Seg::Index(*index)),
            _ => None,
        })
        .collect()
}

/// `mounts[2]` → [Key("mounts"), Index(2)]; `runArgs` → [Key("runArgs")].
fn field_segs(field: &str) -> Vec<Seg<'_>> {
    let (key, rest) = field.split_once('[').unwrap_or((field, ""));
    let mut segs = vec![Seg::Key(key)];
    if let Some(i) = rest.strip_suffix(']').and_then(|i| i.parse().ok()) {
        segs.push(Seg::Index(i));
    }
    segs
}

/// The line of the value at `keys` (object keys from the top) in a devcontainer.json's text.
pub fn line_of_key(text: &str, keys: &[&str]) -> Option<usize> {
    let segs: Vec<Seg<'_>> = keys.iter().map(|k| Seg::Key(k)).collect();
    line_at(text, &segs)
}

/// The line of the value at `segs`, found in the AST (the deepest part that exists).
fn line_at(text: &str, segs: &[Seg<'_>]) -> Option<usize> {
    use jsonc_parser::ast::Value;
    use jsonc_parser::common::Ranged;
    let parsed = jsonc_parser::parse_to_ast(text, &Default::default(), &Default::default()).ok()?;
    let mut node = parsed.value?;
    let mut offset = node.start();
    for seg in segs {
        node = match (seg, node) {
            (Seg::Key(key), Value::Object(o)) => {
                let prop = o.properties.into_iter().find(|p| p.name.as_str() == *key)?;
                offset = prop.range.start;
                prop.value
            }
            (Seg::Index(index), Value::Array(a)) => {
                let v = a.elements.into_iter().nth(*index)?;
                offset = v.start();
                v
            }
            _ => break,
        };
    }
    Some(crate::config::line_col(text, offset).0)
}

#[cfg(test)]
pub(crate) mod tests;
