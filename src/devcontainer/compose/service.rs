//! One compose file's nodes → typed services and volumes, key by key: what devaipod
//! applies, what it ignores with a warning, what it refuses (with the file, the line and
//! the key); and the merge of a later file's service into an earlier one's.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::yaml::{self, Key, Node, Value};
use super::*;

pub(super) struct File {
    pub services: Vec<(String, Service)>,
    pub volumes: Vec<(String, NamedVolume)>,
}

/// Keys of a service that change nothing in a pod, taken without a word.
const QUIET: &[&str] = &["expose", "links", "init", "tty", "stdin_open", "version"];

/// Keys of a service ignored with a warning, and why.
const IGNORED: &[(&str, &str)] = &[
    ("container_name", "devaipod names the containers of a pod"),
    ("hostname", "the pod has one host name"),
    ("domainname", "the pod has one host name"),
    ("restart", "a pod's containers are started by `up` and `start`"),
    ("networks", "the pod is the project's one network: services reach each other by name"),
    ("dns", "the pod's DNS is podman's"),
    ("dns_search", "the pod's DNS is podman's"),
    ("external_links", "services reach each other by name in the pod"),
    ("stop_signal", "devaipod stops pods at once"),
    ("stop_grace_period", "devaipod stops pods at once"),
    ("logging", "`devaipod logs` reads podman's logs"),
    ("platform", "images are the host's platform"),
    ("pull_policy", "images come from the local store, pulled only when missing"),
    ("deploy", "there is no swarm"),
    ("mem_limit", "resource limits are not applied to services"),
    ("mem_reservation", "resource limits are not applied to services"),
    ("memswap_limit", "resource limits are not applied to services"),
    ("cpus", "resource limits are not applied to services"),
    ("cpu_shares", "resource limits are not applied to services"),
    ("shm_size", "resource limits are not applied to services"),
    ("ulimits", "resource limits are not applied to services"),
    ("sysctls", "not applied to services"),
    ("devices", "host devices are not given to services"),
    ("scale", "one container per service"),
    ("develop", "compose watch is not supported"),
];

/// Keys of a service refused, and why.
const REFUSED: &[(&str, &str)] = &[
    ("extends", "is not supported: copy the keys of the service it extends into this one"),
    ("pid", "would share a namespace with the host or another container, undoing the sandbox"),
    ("ipc", "would share a namespace with the host or another container, undoing the sandbox"),
    ("uts", "would share a namespace with the host, undoing the sandbox"),
    ("userns_mode", "would change the user namespace, undoing the sandbox"),
    ("cgroup", "would share the host's cgroup namespace"),
    ("cgroup_parent", "would place the container in a host cgroup"),
    ("volumes_from", "is not supported: declare the volumes under the top-level `volumes` and mount them"),
    ("secrets", "is not supported: use devaipod's [trusted] secrets"),
    ("configs", "is not supported: mount a file of the repository instead"),
    ("credential_spec", "is not supported"),
    ("isolation", "is not supported"),
    ("runtime", "is not supported"),
    ("privileged_mode", "is not supported"),
];

struct Cx<'a> {
    path: &'a Path,
    dir: &'a Path,
    repo: &'a Path,
    warnings: &'a mut Vec<String>,
}

impl Cx<'_> {
    fn at(&self, line: usize) -> At {
        At { file: self.path.to_owned(), line }
    }

    fn err(&self, line: usize, key: &str, message: impl Into<String>) -> ComposeError {
        self.at(line).error(key, message)
    }

    fn warn(&mut self, line: usize, key: &str, message: &str) {
        self.warnings.push(format!("{}:{line}: `{key}` is ignored: {message}", self.path.display()));
    }

    fn string(&self, node: &Node, key: &str) -> Result<String, ComposeError> {
        match &node.value {
            Value::Scalar { text, .. } => Ok(text.clone()),
            _ => Err(self.err(node.line, key, format!("expected a string, found {}", node.kind()))),
        }
    }

    fn bool(&self, node: &Node, key: &str) -> Result<bool, ComposeError> {
        match &node.value {
            Value::Scalar { text, plain: true } if text == "true" => Ok(true),
            Value::Scalar { text, plain: true } if text == "false" => Ok(false),
            _ => Err(self.err(node.line, key, "expected true or false")),
        }
    }

    fn map<'n>(&self, node: &'n Node, key: &str) -> Result<&'n [(Key, Node)], ComposeError> {
        match &node.value {
            Value::Map(m) => Ok(m),
            Value::Null => Ok(&[]),
            _ => Err(self.err(node.line, key, format!("expected a mapping, found {}", node.kind()))),
        }
    }

    /// A list of strings (a single string is a list of one).
    fn strings(&self, node: &Node, key: &str) -> Result<Vec<String>, ComposeError> {
        match &node.value {
            Value::Scalar { text, .. } => Ok(vec![text.clone()]),
            Value::Null => Ok(Vec::new()),
            Value::Seq(items) => items.iter().map(|n| self.string(n, key)).collect(),
            Value::Map(_) => Err(self.err(node.line, key, "expected a list of strings, found a mapping")),
        }
    }

    /// `{K: V}` or `["K=V"]` (a `K` alone, or `K:` with no value, is `None`).
    fn pairs(&self, node: &Node, key: &str) -> Result<Vec<(String, Option<String>)>, ComposeError> {
        match &node.value {
            Value::Map(m) => m
                .iter()
                .map(|(k, v)| match &v.value {
                    Value::Null => Ok((k.name.clone(), None)),
                    Value::Scalar { text, .. } => Ok((k.name.clone(), Some(text.clone()))),
                    _ => Err(self.err(v.line, &format!("{key}.{}", k.name), "expected a string, number or boolean")),
                })
                .collect(),
            Value::Seq(items) => items
                .iter()
                .map(|n| {
                    let s = self.string(n, key)?;
                    Ok(match s.split_once('=') {
                        Some((k, v)) => (k.to_owned(), Some(v.to_owned())),
                        None => (s, None),
                    })
                })
                .collect(),
            Value::Null => Ok(Vec::new()),
            Value::Scalar { .. } => Err(self.err(node.line, key, "expected a mapping or a list of KEY=VALUE")),
        }
    }

    /// A host path of the file, made absolute and normalized; it must be in the repository.
    fn host_path(&self, line: usize, key: &str, p: &str) -> Result<PathBuf, ComposeError> {
        if p.starts_with('~') {
            return Err(self.err(
                line,
                key,
                format!("`{p}` is in your home directory: devaipod mounts only the repository's files into a pod"),
            ));
        }
        let path = normalize(&self.dir.join(p));
        if !path.starts_with(self.repo) {
            return Err(self.err(
                line,
                key,
                format!(
                    "`{}` is outside the repository ({}): devaipod mounts only the repository's files into a pod",
                    path.display(),
                    self.repo.display()
                ),
            ));
        }
        Ok(path)
    }
}

/// Removes `.` and `..` components without touching the file system.
pub fn normalize(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for comp in p.components() {
        match comp {
            std::path::Component::ParentDir => {
                out.pop();
            }
            std::path::Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

/// Interpolates every scalar of the tree (values, not keys); an error names the key.
fn interpolate(node: &mut Node, env: &BTreeMap<String, String>, key: &str, path: &Path) -> Result<(), ComposeError> {
    match &mut node.value {
        Value::Scalar { text, .. } => {
            *text = interp::interpolate(text, env).map_err(|message| ComposeError::Key {
                path: path.to_owned(),
                line: node.line,
                key: key.to_owned(),
                message,
            })?;
        }
        Value::Seq(items) => {
            for (i, n) in items.iter_mut().enumerate() {
                interpolate(n, env, &format!("{key}[{i}]"), path)?;
            }
        }
        Value::Map(entries) => {
            for (k, n) in entries.iter_mut() {
                let key = if key.is_empty() { k.name.clone() } else { format!("{key}.{}", k.name) };
                interpolate(n, env, &key, path)?;
            }
        }
        Value::Null => {}
    }
    Ok(())
}

pub(super) fn read_file(
    path: &Path,
    text: &str,
    env: &BTreeMap<String, String>,
    repo: &Path,
    warnings: &mut Vec<String>,
) -> Result<File, ComposeError> {
    let syntax = |line, message| ComposeError::Syntax { path: path.to_owned(), line, message };
    let mut root = match yaml::parse(text).map_err(|e| syntax(e.line, e.message))? {
        Some(root) => root,
        None => return Err(syntax(1, "the file is empty: a compose file needs `services`".into())),
    };
    interpolate(&mut root, env, "", path)?;
    let dir = path.parent().unwrap_or(Path::new("/"));
    let mut cx = Cx { path, dir, repo, warnings };
    let Value::Map(top) = &root.value else {
        return Err(cx.err(root.line, "(top level)", "a compose file holds one mapping"));
    };
    let mut file = File { services: Vec::new(), volumes: Vec::new() };
    for (k, v) in top {
        match k.name.as_str() {
            "services" => {
                for (name, node) in cx.map(v, "services")? {
                    let key = format!("services.{}", name.name);
                    if name.name.is_empty()
                        || !name.name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
                    {
                        return Err(cx.err(name.line, &key, "a service name is letters, digits, `.`, `_` and `-`"));
                    }
                    let s = read_service(&mut cx, &name.name, name.line, node)?;
                    file.services.push((name.name.clone(), s));
                }
            }
            "volumes" => {
                for (name, node) in cx.map(v, "volumes")? {
                    let key = format!("volumes.{}", name.name);
                    let mut vol = NamedVolume::default();
                    for (vk, vv) in cx.map(node, &key)? {
                        let key = format!("{key}.{}", vk.name);
                        match vk.name.as_str() {
                            "external" => vol.external = cx.bool(vv, &key)?,
                            "name" => vol.name = Some(cx.string(vv, &key)?),
                            "labels" => {}
                            "driver" | "driver_opts" => cx.warn(vk.line, &key, "volumes are podman's local volumes"),
                            other if other.starts_with("x-") => {}
                            _ => cx.warn(vk.line, &key, "devaipod does not know this key"),
                        }
                    }
                    file.volumes.push((name.name.clone(), vol));
                }
            }
            "version" | "name" => {}
            "networks" => cx.warn(k.line, "networks", "the pod is the project's one network"),
            "include" => {
                return Err(cx.err(k.line, "include", "is not supported: list the files in dockerComposeFile"));
            }
            "secrets" | "configs" => {
                return Err(cx.err(
                    k.line,
                    &k.name,
                    "is not supported: use devaipod's [trusted] secrets or a file of the repository",
                ));
            }
            other if other.starts_with("x-") => {}
            _ => cx.warn(k.line, &k.name, "devaipod does not know this top-level key"),
        }
    }
    Ok(file)
}

fn read_service(cx: &mut Cx<'_>, name: &str, line: usize, node: &Node) -> Result<Service, ComposeError> {
    let base = format!("services.{name}");
    let mut s = Service {
        name: name.to_owned(),
        at: cx.at(line),
        image: None,
        build: None,
        environment: BTreeMap::new(),
        env_entries: Vec::new(),
        env_files: Vec::new(),
        volumes: Vec::new(),
        command: None,
        entrypoint: None,
        depends_on: BTreeMap::new(),
        healthcheck: None,
        cap_add: Vec::new(),
        cap_drop: Vec::new(),
        security_opt: Vec::new(),
        privileged: None,
        ports: Vec::new(),
        user: None,
        working_dir: None,
        extra_hosts: Vec::new(),
        labels: BTreeMap::new(),
        tmpfs: Vec::new(),
        profiles: Vec::new(),
    };
    for (k, v) in cx.map(node, &base)? {
        let key = format!("{base}.{}", k.name);
        let key = key.as_str();
        match k.name.as_str() {
            "image" => s.image = Some(cx.string(v, key)?),
            "build" => s.build = Some(read_build(cx, v, key)?),
            "environment" => s.env_entries = cx.pairs(v, key)?,
            "env_file" => s.env_files = read_env_files(cx, v, key)?,
            "volumes" => {
                let Value::Seq(items) = &v.value else {
                    return Err(cx.err(v.line, key, "expected a list of volumes"));
                };
                for (i, item) in items.iter().enumerate() {
                    s.volumes.push(read_volume(cx, item, &format!("{key}[{i}]"))?);
                }
            }
            "tmpfs" => s.tmpfs = cx.strings(v, key)?,
            "command" => s.command = Some(read_argv(cx, v, key)?),
            "entrypoint" => s.entrypoint = Some(read_argv(cx, v, key)?),
            "depends_on" => s.depends_on = read_depends_on(cx, v, key)?,
            "healthcheck" => s.healthcheck = read_healthcheck(cx, v, key)?,
            "cap_add" => s.cap_add = cx.strings(v, key)?,
            "cap_drop" => s.cap_drop = cx.strings(v, key)?,
            "security_opt" => {
                s.security_opt = cx.strings(v, key)?;
                for opt in &s.security_opt {
                    crate::devcontainer::run_args::check_security_opt(opt).map_err(|e| cx.err(v.line, key, e))?;
                }
            }
            "privileged" => s.privileged = Some(cx.bool(v, key)?),
            "ports" => s.ports = read_ports(cx, v, key)?,
            "user" => s.user = Some(cx.string(v, key)?),
            "working_dir" => s.working_dir = Some(cx.string(v, key)?),
            "extra_hosts" => {
                for (h, ip) in cx.pairs(v, key)? {
                    // The list form is `host:ip` (or `host=ip`); the mapping form `host: ip`.
                    let entry = match ip {
                        Some(ip) => format!("{h}:{ip}"),
                        None => h.clone(),
                    };
                    if !entry.contains(':') {
                        return Err(cx.err(v.line, key, format!("`{entry}` is not `host:ip`")));
                    }
                    s.extra_hosts.push(entry);
                }
            }
            "labels" => {
                s.labels = cx.pairs(v, key)?.into_iter().map(|(k, v)| (k, v.unwrap_or_default())).collect();
            }
            "profiles" => s.profiles = cx.strings(v, key)?,
            "network_mode" => {
                let mode = cx.string(v, key)?;
                match mode.as_str() {
                    "bridge" | "default" => {}
                    m if m.starts_with("service:") || m.starts_with("container:") => {}
                    "host" => {
                        return Err(cx.err(
                            v.line,
                            key,
                            "`host` would put the service on the host's network, outside the pod: remove it (the services of a pod share one network)",
                        ));
                    }
                    other => {
                        return Err(cx.err(
                            v.line,
                            key,
                            format!("`{other}` is not supported: the services of a pod share one network"),
                        ));
                    }
                }
            }
            other if QUIET.contains(&other) || other.starts_with("x-") => {}
            other => {
                if let Some((_, why)) = REFUSED.iter().find(|(r, _)| *r == other) {
                    return Err(cx.err(k.line, key, *why));
                }
                let why = IGNORED.iter().find(|(r, _)| *r == other).map(|(_, w)| *w);
                cx.warn(k.line, key, why.unwrap_or("devaipod does not know this key"));
            }
        }
    }
    Ok(s)
}

fn read_build(cx: &mut Cx<'_>, v: &Node, key: &str) -> Result<Build, ComposeError> {
    let (mut context, mut dockerfile, mut args, mut target) = (None, None, BTreeMap::new(), None);
    match &v.value {
        Value::Scalar { text, .. } => context = Some((v.line, text.clone())),
        Value::Map(entries) => {
            for (k, n) in entries {
                let key = format!("{key}.{}", k.name);
                match k.name.as_str() {
                    "context" => context = Some((n.line, cx.string(n, &key)?)),
                    "dockerfile" => dockerfile = Some((n.line, cx.string(n, &key)?)),
                    "args" => {
                        for (name, value) in cx.pairs(n, &key)? {
                            // An argument without a value takes the caller's (compose does).
                            if let Some(value) = value {
                                args.insert(name, value);
                            }
                        }
                    }
                    "target" => target = Some(cx.string(n, &key)?),
                    "dockerfile_inline" => {
                        return Err(cx.err(k.line, &key, "is not supported: put the Dockerfile in the repository"));
                    }
                    "ssh" | "secrets" => {
                        return Err(cx.err(k.line, &key, "is not supported: builds get no host credentials"));
                    }
                    "network" if cx.string(n, &key).is_ok_and(|m| m == "host") => {
                        return Err(cx.err(
                            k.line,
                            &key,
                            "`host` is not supported: builds run on podman's own network",
                        ));
                    }
                    other if other.starts_with("x-") => {}
                    _ => cx.warn(k.line, &key, "devaipod builds with context, dockerfile, args and target only"),
                }
            }
        }
        _ => return Err(cx.err(v.line, key, "expected a context path or a mapping")),
    }
    let (line, context) = context.unwrap_or((v.line, ".".into()));
    if context.contains("://") || context.starts_with("git@") {
        return Err(cx.err(line, key, format!("`{context}` is not a folder: only local build contexts are supported")));
    }
    let context = cx.host_path(line, key, &context)?;
    let dockerfile = match dockerfile {
        Some((line, f)) => {
            let p = normalize(&context.join(f));
            if !p.starts_with(cx.repo) {
                return Err(cx.err(line, key, format!("`{}` is outside the repository", p.display())));
            }
            p
        }
        None => context.join("Dockerfile"),
    };
    Ok(Build { context, dockerfile, args, target })
}

fn read_env_files(cx: &mut Cx<'_>, v: &Node, key: &str) -> Result<Vec<EnvFile>, ComposeError> {
    let items: Vec<&Node> = match &v.value {
        Value::Seq(items) => items.iter().collect(),
        _ => vec![v],
    };
    let mut out = Vec::new();
    for n in items {
        let (path, required) = match &n.value {
            Value::Map(_) => {
                let path = n.get("path").ok_or_else(|| cx.err(n.line, key, "an env_file entry needs `path`"))?;
                let required = match n.get("required") {
                    Some(r) => cx.bool(r, key)?,
                    None => true,
                };
                (cx.string(path, key)?, required)
            }
            _ => (cx.string(n, key)?, true),
        };
        let path = cx.host_path(n.line, key, &path)?;
        out.push(EnvFile { path, required, at: cx.at(n.line) });
    }
    Ok(out)
}

fn read_volume(cx: &mut Cx<'_>, n: &Node, key: &str) -> Result<ServiceVolume, ComposeError> {
    let target_ok = |cx: &Cx<'_>, t: &str| {
        if t.starts_with('/') {
            Ok(())
        } else {
            Err(cx.err(n.line, key, format!("target `{t}` must be an absolute path")))
        }
    };
    match &n.value {
        Value::Scalar { text, .. } => {
            let parts: Vec<&str> = text.split(':').collect();
            let (source, target, mode) = match parts.as_slice() {
                [t] => (None, *t, ""),
                [s, t] => (Some(*s), *t, ""),
                [s, t, m] => (Some(*s), *t, *m),
                _ => return Err(cx.err(n.line, key, format!("`{text}` is not `source:target[:mode]`"))),
            };
            target_ok(cx, target)?;
            let mut readonly = false;
            for m in mode.split(',').filter(|m| !m.is_empty()) {
                match m {
                    "ro" => readonly = true,
                    "rw" | "z" | "Z" | "cached" | "delegated" | "consistent" | "nocopy" => {}
                    other => return Err(cx.err(n.line, key, format!("volume mode `{other}` is not supported"))),
                }
            }
            let target = target.to_owned();
            Ok(match source {
                None => ServiceVolume::Anonymous { target },
                Some(s) if s.starts_with(['.', '/', '~']) => bind(cx, n.line, key, s, target, readonly)?,
                Some(name) => ServiceVolume::Named { name: name.to_owned(), target, readonly },
            })
        }
        Value::Map(_) => {
            let get = |k: &str| n.get(k).map(|v| cx.string(v, &format!("{key}.{k}"))).transpose();
            let kind = get("type")?.unwrap_or_else(|| "volume".into());
            let target = get("target")?.ok_or_else(|| cx.err(n.line, key, "a volume needs `target`"))?;
            target_ok(cx, &target)?;
            let readonly = match n.get("read_only") {
                Some(r) => cx.bool(r, &format!("{key}.read_only"))?,
                None => false,
            };
            let source = get("source")?;
            Ok(match (kind.as_str(), source) {
                ("volume", None) => ServiceVolume::Anonymous { target },
                ("volume", Some(name)) => ServiceVolume::Named { name, target, readonly },
                ("bind", Some(s)) => bind(cx, n.line, key, &s, target, readonly)?,
                ("bind", None) => return Err(cx.err(n.line, key, "a bind mount needs `source`")),
                ("tmpfs", _) => ServiceVolume::Tmpfs { target },
                (other, _) => {
                    return Err(cx.err(
                        n.line,
                        key,
                        format!("volume type `{other}` is not supported (volume, bind, tmpfs)"),
                    ));
                }
            })
        }
        _ => Err(cx.err(n.line, key, format!("expected a volume string or mapping, found {}", n.kind()))),
    }
}

/// A bind mount: of a folder inside the repository, or of the repository itself (or a
/// folder holding it, as the templates' `../..:/workspaces` does): then the repository's
/// place in the container.
fn bind(
    cx: &Cx<'_>,
    line: usize,
    key: &str,
    source: &str,
    target: String,
    readonly: bool,
) -> Result<ServiceVolume, ComposeError> {
    let path = normalize(&cx.dir.join(source));
    if cx.repo.starts_with(&path) && !source.starts_with('~') {
        let below = cx.repo.strip_prefix(&path).unwrap_or(Path::new(""));
        let at = Path::new(&target).join(below);
        return Ok(ServiceVolume::Repository { target: at.to_string_lossy().trim_end_matches('/').to_owned() });
    }
    Ok(ServiceVolume::Bind { source: cx.host_path(line, key, source)?, target, readonly })
}

fn read_argv(cx: &mut Cx<'_>, v: &Node, key: &str) -> Result<Vec<String>, ComposeError> {
    match &v.value {
        Value::Scalar { text, .. } => interp::split_words(text).map_err(|e| cx.err(v.line, key, e)),
        Value::Null => Ok(Vec::new()),
        _ => cx.strings(v, key),
    }
}

fn read_depends_on(cx: &mut Cx<'_>, v: &Node, key: &str) -> Result<BTreeMap<String, Dependency>, ComposeError> {
    let mut out = BTreeMap::new();
    match &v.value {
        Value::Seq(items) => {
            for n in items {
                let dep = Dependency { condition: Condition::ServiceStarted, required: true, at: cx.at(n.line) };
                out.insert(cx.string(n, key)?, dep);
            }
        }
        Value::Map(entries) => {
            for (name, n) in entries {
                let key = format!("{key}.{}", name.name);
                let mut dep = Dependency { condition: Condition::ServiceStarted, required: true, at: cx.at(name.line) };
                for (k, c) in cx.map(n, &key)? {
                    let key = format!("{key}.{}", k.name);
                    match k.name.as_str() {
                        "condition" => {
                            dep.condition = match cx.string(c, &key)?.as_str() {
                                "service_started" => Condition::ServiceStarted,
                                "service_healthy" => Condition::ServiceHealthy,
                                "service_completed_successfully" => Condition::ServiceCompletedSuccessfully,
                                other => {
                                    return Err(cx.err(c.line, &key, format!("`{other}` is not service_started, service_healthy or service_completed_successfully")));
                                }
                            }
                        }
                        "required" => dep.required = cx.bool(c, &key)?,
                        "restart" => {}
                        _ => cx.warn(k.line, &key, "devaipod does not know this key"),
                    }
                }
                out.insert(name.name.clone(), dep);
            }
        }
        _ => return Err(cx.err(v.line, key, "expected a list of services or a mapping")),
    }
    Ok(out)
}

/// `1m30s`, `500ms`, `10s`, `2h`; a bare number is seconds.
fn duration_ms(s: &str) -> Option<u64> {
    if let Ok(secs) = s.parse::<u64>() {
        return secs.checked_mul(1000);
    }
    let mut total = 0u64;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit() && c != '.')?;
        let (num, after) = rest.split_at(digits);
        let num: f64 = num.parse().ok()?;
        let unit_len = after.find(|c: char| c.is_ascii_digit()).unwrap_or(after.len());
        let (unit, next) = after.split_at(unit_len);
        let ms = match unit {
            "ms" => 1.0,
            "s" => 1000.0,
            "m" => 60_000.0,
            "h" => 3_600_000.0,
            "us" | "µs" => 0.001,
            _ => return None,
        };
        total = total.checked_add((num * ms) as u64)?;
        rest = next;
    }
    Some(total)
}

fn read_healthcheck(cx: &mut Cx<'_>, v: &Node, key: &str) -> Result<Option<Healthcheck>, ComposeError> {
    let mut h =
        Healthcheck { argv: Vec::new(), interval_ms: 30_000, timeout_ms: 30_000, retries: 3, start_period_ms: 0 };
    let mut disabled = false;
    for (k, n) in cx.map(v, key)? {
        let key = format!("{key}.{}", k.name);
        let dur = |cx: &Cx<'_>| -> Result<u64, ComposeError> {
            let s = cx.string(n, &key)?;
            duration_ms(&s).ok_or_else(|| cx.err(n.line, &key, format!("`{s}` is not a duration (e.g. 10s, 1m30s)")))
        };
        match k.name.as_str() {
            "test" => {
                let words = match &n.value {
                    Value::Scalar { text, .. } => vec!["CMD-SHELL".to_owned(), text.clone()],
                    _ => cx.strings(n, &key)?,
                };
                h.argv = match words.split_first() {
                    Some((first, rest)) if first == "CMD" && !rest.is_empty() => rest.to_vec(),
                    Some((first, [cmd])) if first == "CMD-SHELL" => vec!["/bin/sh".into(), "-c".into(), cmd.clone()],
                    Some((first, [])) if first == "NONE" => {
                        disabled = true;
                        Vec::new()
                    }
                    _ => {
                        return Err(cx.err(
                            n.line,
                            &key,
                            "expected [\"CMD\", …], [\"CMD-SHELL\", \"command\"], [\"NONE\"] or a command string",
                        ));
                    }
                };
            }
            "interval" => h.interval_ms = dur(cx)?,
            "timeout" => h.timeout_ms = dur(cx)?,
            "start_period" => h.start_period_ms = dur(cx)?,
            "start_interval" => {}
            "retries" => {
                let s = cx.string(n, &key)?;
                h.retries = s.parse().map_err(|_| cx.err(n.line, &key, format!("`{s}` is not a number")))?;
            }
            "disable" => disabled = cx.bool(n, &key)?,
            _ => cx.warn(k.line, &key, "devaipod does not know this key"),
        }
    }
    if disabled {
        return Ok(None);
    }
    if h.argv.is_empty() {
        return Err(cx.err(v.line, key, "a healthcheck needs `test` (or `disable: true`)"));
    }
    Ok(Some(h))
}

fn read_ports(cx: &mut Cx<'_>, v: &Node, key: &str) -> Result<Vec<Port>, ComposeError> {
    let Value::Seq(items) = &v.value else {
        return Err(cx.err(v.line, key, "expected a list of ports"));
    };
    let mut out = Vec::new();
    for (i, n) in items.iter().enumerate() {
        let key = format!("{key}[{i}]");
        let (spec, protocol) = match &n.value {
            Value::Map(_) => {
                let target = n.get("target").ok_or_else(|| cx.err(n.line, &key, "a port needs `target`"))?;
                let protocol = n.get("protocol").map(|p| cx.string(p, &key)).transpose()?;
                (cx.string(target, &key)?, protocol.unwrap_or_else(|| "tcp".into()))
            }
            _ => {
                let s = cx.string(n, &key)?;
                match s.rsplit_once('/') {
                    Some((spec, proto)) => (spec.to_owned(), proto.to_owned()),
                    None => (s, "tcp".into()),
                }
            }
        };
        if protocol != "tcp" {
            cx.warn(n.line, &key, "only TCP ports are published");
            continue;
        }
        // `[ip:][host:]container`; the container part may be a range.
        let container = spec.rsplit(':').next().unwrap_or_default();
        let bad = |cx: &Cx<'_>| {
            cx.err(n.line, &key, format!("`{spec}` is not a port, `host:container` or `ip:host:container`"))
        };
        let range: Vec<u16> = match container.split_once('-') {
            Some((a, b)) => {
                let (a, b): (u16, u16) = (a.parse().map_err(|_| bad(cx))?, b.parse().map_err(|_| bad(cx))?);
                if b < a || b - a >= 100 {
                    return Err(cx.err(n.line, &key, format!("`{spec}`: a range of at most 100 ports")));
                }
                (a..=b).collect()
            }
            None => vec![container.parse().map_err(|_| bad(cx))?],
        };
        if spec.contains(':') {
            cx.warnings.push(format!(
                "{}:{}: `{key}`: published on 127.0.0.1 at a free port (`devaipod status` shows it), not at the host port it names",
                cx.path.display(),
                n.line
            ));
        }
        for p in range {
            if p == 0 {
                return Err(bad(cx));
            }
            out.push(Port { container: p, at: cx.at(n.line) });
        }
    }
    Ok(out)
}

/// A later file's service merged into an earlier one's, as compose merges: single values
/// replaced, mappings merged by key, lists appended (volumes replaced by target).
pub(super) fn merge(base: &mut Service, over: Service) {
    fn replace<T>(a: &mut Option<T>, b: Option<T>) {
        if b.is_some() {
            *a = b;
        }
    }
    fn append(a: &mut Vec<String>, b: Vec<String>) {
        for x in b {
            if !a.contains(&x) {
                a.push(x);
            }
        }
    }
    match (&mut base.build, over.build) {
        (Some(b), Some(o)) => {
            b.context = o.context;
            b.dockerfile = o.dockerfile;
            b.args.extend(o.args);
            if o.target.is_some() {
                b.target = o.target;
            }
        }
        (b, o) => replace(b, o),
    }
    replace(&mut base.image, over.image);
    base.env_entries.extend(over.env_entries);
    base.env_files.extend(over.env_files);
    for v in over.volumes {
        base.volumes.retain(|b| b.target() != v.target());
        base.volumes.push(v);
    }
    replace(&mut base.command, over.command);
    replace(&mut base.entrypoint, over.entrypoint);
    base.depends_on.extend(over.depends_on);
    replace(&mut base.healthcheck, over.healthcheck);
    append(&mut base.cap_add, over.cap_add);
    append(&mut base.cap_drop, over.cap_drop);
    append(&mut base.security_opt, over.security_opt);
    replace(&mut base.privileged, over.privileged);
    for p in over.ports {
        if !base.ports.iter().any(|b| b.container == p.container) {
            base.ports.push(p);
        }
    }
    replace(&mut base.user, over.user);
    replace(&mut base.working_dir, over.working_dir);
    append(&mut base.extra_hosts, over.extra_hosts);
    base.labels.extend(over.labels);
    append(&mut base.tmpfs, over.tmpfs);
    append(&mut base.profiles, over.profiles);
}
