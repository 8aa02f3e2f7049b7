//! The derived image: one build on top of the base image that installs every feature in
//! order. Its tag is a hash of everything that goes into it (the base image's id, the
//! Containerfile, each feature's content digest and options), so an unchanged workspace
//! reuses it and any change builds anew.

use std::path::Path;

use sha2::{Digest, Sha256};

use super::ResolvedFeature;

/// The script that runs one feature's install.sh (shipped in every context).
const INSTALL_SCRIPT: &str = include_str!("install-feature.sh");
/// Where the context is copied to in the build (removed after the installs).
const IN_IMAGE: &str = "/tmp/devaipod-features";

/// The users the features are installed for (`_REMOTE_USER`, `_CONTAINER_USER`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Users {
    pub container_user: String,
    pub remote_user: String,
}

impl Users {
    /// `containerUser`, else the image's user, else root; `remoteUser`, else that.
    pub fn of(container_user: Option<&str>, remote_user: Option<&str>, image_user: Option<&str>) -> Users {
        let nonempty = |u: Option<&str>| u.filter(|u| !u.is_empty()).map(str::to_owned);
        let container_user = nonempty(container_user).or(nonempty(image_user)).unwrap_or_else(|| "root".into());
        let remote_user = nonempty(remote_user).unwrap_or_else(|| container_user.clone());
        Users { container_user, remote_user }
    }
}

/// The `NAME=value` lines of a feature's environment file (users and options).
pub fn env_file(f: &ResolvedFeature, users: &Users) -> Result<String, String> {
    let mut env = f.option_env();
    env.insert("_REMOTE_USER".into(), users.remote_user.clone());
    env.insert("_CONTAINER_USER".into(), users.container_user.clone());
    let mut out = String::new();
    for (k, v) in env {
        if v.contains(['\n', '\r', '\0']) {
            return Err(format!("feature {}: option {k} holds a line break, which install.sh cannot be given", f.id));
        }
        out.push_str(&format!("{k}={v}\n"));
    }
    Ok(out)
}

fn env_name_ok(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// A Containerfile string literal (`"…"`, with `\` and `"` escaped; `$` still expands, as
/// features' `"PATH": "/usr/local/go/bin:${PATH}"` need).
fn quoted(v: &str) -> String {
    format!("\"{}\"", v.replace('\\', "\\\\").replace('"', "\\\""))
}

/// The Containerfile: as root, each feature's `containerEnv` then its install, in order;
/// back to the image's user at the end.
pub fn containerfile(base: &str, ordered: &[&ResolvedFeature], image_user: Option<&str>) -> Result<String, String> {
    let mut out = format!("FROM {base}\nUSER root\nCOPY . {IN_IMAGE}/\n");
    for (n, f) in ordered.iter().enumerate() {
        for (k, v) in &f.meta.container_env {
            if !env_name_ok(k) {
                return Err(format!("feature {}: containerEnv name `{k}` is not a variable name", f.id));
            }
            out.push_str(&format!("ENV {k}={}\n", quoted(v)));
        }
        out.push_str(&format!("RUN sh {IN_IMAGE}/install-feature.sh {IN_IMAGE}/{n}\n"));
    }
    out.push_str(&format!("RUN rm -rf {IN_IMAGE}\n"));
    if let Some(u) = image_user.filter(|u| !u.is_empty()) {
        if u.contains(char::is_whitespace) {
            return Err(format!("the base image's user `{u}` is not a user name"));
        }
        out.push_str(&format!("USER {u}\n"));
    }
    Ok(out)
}

/// The derived image's tag: `localhost/devaipod-features-<instance>:<hash>`.
pub fn tag(
    instance: &str,
    base_id: &str,
    containerfile: &str,
    ordered: &[&ResolvedFeature],
    env_files: &[String],
) -> String {
    let mut h = Sha256::new();
    for part in [base_id, containerfile, INSTALL_SCRIPT] {
        h.update(part.len().to_le_bytes());
        h.update(part.as_bytes());
    }
    for (f, env) in ordered.iter().zip(env_files) {
        for part in [f.digest.as_str(), env.as_str()] {
            h.update(part.len().to_le_bytes());
            h.update(part.as_bytes());
        }
    }
    let hex: String = h.finalize().iter().take(8).map(|b| format!("{b:02x}")).collect();
    format!("localhost/devaipod-features-{instance}:{hex}")
}

/// Everything the build needs, computed before any file is written.
#[derive(Debug, Clone, PartialEq)]
pub struct DerivedImage {
    pub tag: String,
    pub containerfile: String,
    /// Feature folder on the host, and its environment file, in install order.
    pub features: Vec<(std::path::PathBuf, String)>,
}

pub fn derive(
    instance: &str,
    base: &str,
    base_id: &str,
    image_user: Option<&str>,
    users: &Users,
    ordered: &[&ResolvedFeature],
) -> Result<DerivedImage, String> {
    let containerfile = containerfile(base, ordered, image_user)?;
    let envs: Vec<String> = ordered.iter().map(|f| env_file(f, users)).collect::<Result<_, _>>()?;
    let tag = tag(instance, base_id, &containerfile, ordered, &envs);
    Ok(DerivedImage { tag, containerfile, features: ordered.iter().map(|f| f.dir.clone()).zip(envs).collect() })
}

/// Writes the build context into `ctx` (empty): the Containerfile, the install script, and
/// one folder per feature (`0/`, `1/`, … in install order) with its environment file.
pub fn write_context(d: &DerivedImage, ctx: &Path) -> Result<(), String> {
    let io =
        |what: &Path, e: std::io::Error| format!("cannot write the features' build context {}: {e}", what.display());
    std::fs::write(ctx.join("Containerfile"), &d.containerfile).map_err(|e| io(ctx, e))?;
    std::fs::write(ctx.join("install-feature.sh"), INSTALL_SCRIPT).map_err(|e| io(ctx, e))?;
    for (n, (dir, env)) in d.features.iter().enumerate() {
        let to = ctx.join(n.to_string());
        copy_dir(dir, &to).map_err(|e| format!("cannot copy feature {}: {e}", dir.display()))?;
        std::fs::write(to.join("devaipod-feature.env"), env).map_err(|e| io(&to, e))?;
    }
    Ok(())
}

/// Copies files and folders (symlinks as links, never followed).
fn copy_dir(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for e in std::fs::read_dir(from)? {
        let e = e?;
        let (src, dst) = (e.path(), to.join(e.file_name()));
        let kind = e.file_type()?;
        if kind.is_dir() {
            copy_dir(&src, &dst)?;
        } else if kind.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(&src)?, &dst)?;
        } else {
            std::fs::copy(&src, &dst)?;
        }
    }
    Ok(())
}
