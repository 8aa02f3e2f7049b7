//! Where a workspace comes from — a local git repository, a git URL, or a GitHub
//! repository, issue or pull request URL — and its checkout on the host, made with hardened
//! git (no hooks, no fsmonitor, no `ext::` transport).
//!
//! Every surface asks this module what a source string names ([`SourceKind::classify`]) and
//! how a caller's relative path becomes absolute ([`absolute`]): the CLI, MCP and the web
//! form cannot disagree about it.

use std::path::{Path, PathBuf};
use std::time::Duration;

const CLONE_TIMEOUT: Duration = Duration::from_secs(300);

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// The top level of a local repository (canonical path).
    Local(PathBuf),
    Remote(String),
}

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("{0} does not exist: give the path of a git repository or a git URL")]
    NotFound(PathBuf),
    #[error("{0} is a relative path: give an absolute path (the daemon does not know your working directory)")]
    Relative(PathBuf),
    #[error("{0} is not a directory: give the path of a git repository")]
    NotADirectory(PathBuf),
    #[error("{0} is not a git repository: run `git init` and commit there, or give a git URL")]
    NotARepository(PathBuf),
    #[error("{0} has no commits yet: commit something first (the workspace is a clone of it)")]
    NoCommits(PathBuf),
    #[error("cannot clone {url}: {reason}")]
    Clone { url: String, reason: String },
    #[error("cloning {url} took longer than {secs} s")]
    Timeout { url: String, secs: u64 },
    #[error("cannot run git: {0} (install git)")]
    Git(std::io::Error),
}

impl Source {
    pub fn parse(s: &str) -> Result<Source, SourceError> {
        if is_url(s) {
            return Ok(Source::Remote(s.to_owned()));
        }
        let path = Path::new(s);
        if path.is_relative() {
            return Err(SourceError::Relative(path.to_owned()));
        }
        let canon = std::fs::canonicalize(path).map_err(|_| SourceError::NotFound(path.to_owned()))?;
        if !canon.is_dir() {
            return Err(SourceError::NotADirectory(canon));
        }
        Ok(Source::Local(canon))
    }

    /// How the source is shown and labelled: never with credentials.
    pub fn label(&self) -> String {
        match self {
            Source::Local(p) => p.display().to_string(),
            Source::Remote(url) => strip_credentials(url),
        }
    }

    /// The repository's name, from which a workspace name is derived.
    pub fn basename(&self) -> String {
        let s = match self {
            Source::Local(p) => p.to_string_lossy().into_owned(),
            Source::Remote(u) => u.clone(),
        };
        let last = s.trim_end_matches('/').rsplit(['/', ':']).next().unwrap_or("").to_owned();
        last.strip_suffix(".git").map(str::to_owned).unwrap_or(last)
    }
}

/// Whether a source is a git URL (`scheme://…` or scp-like `user@host:path`).
pub fn is_url(s: &str) -> bool {
    if s.contains("://") {
        return true;
    }
    // scp-like `user@host:path`
    match s.split_once(':') {
        Some((head, _)) => head.contains('@') && !head.contains('/'),
        None => false,
    }
}

/// What a source string names. Decided here once; `up` and every client use it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceKind {
    /// A local path (absolute by the time it reaches the daemon).
    Path,
    /// A git URL that is not on the configured GitHub host.
    GitUrl,
    /// A repository on the configured GitHub host: cloned, with gator scopes on it.
    Github(crate::github::GithubSource),
}

impl SourceKind {
    pub fn classify(source: &str, github_host: &str) -> SourceKind {
        if let Some(g) = crate::github::GithubSource::parse(source, github_host) {
            return SourceKind::Github(g);
        }
        if is_url(source) { SourceKind::GitUrl } else { SourceKind::Path }
    }

    /// Whether the source brings its own first task (a GitHub issue or pull request).
    pub fn brings_task(&self) -> bool {
        matches!(self, SourceKind::Github(g) if g.item.is_some())
    }
}

/// A source as the daemon needs it: a local path made absolute against the caller's working
/// directory (the daemon has its own), a URL as given. Clients call this before sending;
/// the daemon refuses a relative path it is given directly.
pub fn absolute(source: &str, cwd: &Path) -> String {
    if is_url(source) || source.trim().is_empty() {
        return source.to_owned();
    }
    let path = Path::new(source);
    if path.is_absolute() {
        return source.to_owned();
    }
    let mut out = cwd.to_path_buf();
    for part in path.components() {
        match part {
            std::path::Component::CurDir => {}
            std::path::Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out.display().to_string()
}

/// The URL without `user:password@`.
pub fn strip_credentials(url: &str) -> String {
    if let Some((scheme, rest)) = url.split_once("://") {
        let (authority, path) = rest.split_once('/').map_or((rest, ""), |(a, p)| (a, p));
        if let Some((_, host)) = authority.rsplit_once('@') {
            return format!("{scheme}://{host}/{path}");
        }
    }
    url.to_owned()
}

fn git() -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new("git");
    cmd.args(["-c", "core.hooksPath=/dev/null", "-c", "core.fsmonitor=false", "-c", "protocol.ext.allow=never"])
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_ASKPASS", "true")
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    cmd
}

/// The commit checked out in a checkout.
pub async fn head(checkout: &Path) -> Option<String> {
    let out = git().arg("-C").arg(checkout).args(["rev-parse", "--verify", "-q", "HEAD"]).output().await.ok()?;
    let head = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    (out.status.success() && !head.is_empty()).then_some(head)
}

/// Clones the source into `parent/<basename>` and returns that directory.
pub async fn checkout(source: &Source, parent: &Path) -> Result<PathBuf, SourceError> {
    let (from, shown) = match source {
        Source::Local(p) => {
            let out = git()
                .arg("-C")
                .arg(p)
                .args(["rev-parse", "--show-toplevel"])
                .output()
                .await
                .map_err(SourceError::Git)?;
            if !out.status.success() {
                return Err(SourceError::NotARepository(p.clone()));
            }
            let head = git()
                .arg("-C")
                .arg(p)
                .args(["rev-parse", "--verify", "-q", "HEAD"])
                .output()
                .await
                .map_err(SourceError::Git)?;
            if !head.status.success() {
                return Err(SourceError::NoCommits(p.clone()));
            }
            let top = String::from_utf8_lossy(&out.stdout).trim().to_owned();
            (top, p.display().to_string())
        }
        Source::Remote(u) => (u.clone(), strip_credentials(u)),
    };
    let base = source.basename();
    let dest = parent.join(if base.is_empty() { "repo" } else { &base });
    let clone = git().args(["clone", "--quiet", "--no-hardlinks", "--"]).arg(&from).arg(&dest).output();
    let out = tokio::time::timeout(CLONE_TIMEOUT, clone)
        .await
        .map_err(|_| SourceError::Timeout { url: shown.clone(), secs: CLONE_TIMEOUT.as_secs() })?
        .map_err(SourceError::Git)?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let reason = stderr.lines().rfind(|l| !l.trim().is_empty()).unwrap_or("git clone failed").trim();
        return Err(SourceError::Clone { url: shown, reason: reason.trim_start_matches("fatal: ").to_owned() });
    }
    Ok(dest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_paths_are_told_apart() {
        assert_eq!(
            Source::parse("https://example.test/o/r.git").unwrap(),
            Source::Remote("https://example.test/o/r.git".into())
        );
        assert!(matches!(Source::parse("git@example.test:o/r.git").unwrap(), Source::Remote(_)));
        assert!(matches!(Source::parse("/definitely/not/here").unwrap_err(), SourceError::NotFound(_)));
        assert!(matches!(Source::parse("relative/dir").unwrap_err(), SourceError::Relative(_)));
        let d = tempfile::tempdir().unwrap();
        assert_eq!(Source::parse(d.path().to_str().unwrap()).unwrap(), Source::Local(d.path().canonicalize().unwrap()));
    }

    #[test]
    fn source_kinds() {
        use crate::github::ItemKind;
        let kind = |s: &str| SourceKind::classify(s, "github.com");
        assert_eq!(kind("/home/me/r"), SourceKind::Path);
        assert_eq!(kind("r"), SourceKind::Path);
        assert_eq!(kind("https://gitlab.example/o/r.git"), SourceKind::GitUrl);
        assert_eq!(kind("git@github.com:o/r.git"), SourceKind::GitUrl);
        assert!(matches!(kind("https://github.com/o/r"), SourceKind::Github(g) if g.item.is_none()));
        assert!(
            matches!(kind("https://github.com/o/r/issues/4"), SourceKind::Github(g) if g.item == Some((ItemKind::Issue, 4)))
        );
        assert!(kind("https://github.com/o/r/pull/5").brings_task());
        assert!(!kind("https://github.com/o/r").brings_task());
        assert!(!kind("https://gitlab.example/o/r/issues/4").brings_task());
    }

    #[test]
    fn relative_paths_become_absolute_against_the_callers_directory() {
        let cwd = Path::new("/home/me/src");
        assert_eq!(absolute(".", cwd), "/home/me/src");
        assert_eq!(absolute("proj", cwd), "/home/me/src/proj");
        assert_eq!(absolute("../other/./x", cwd), "/home/me/other/x");
        assert_eq!(absolute("/abs/p", cwd), "/abs/p");
        assert_eq!(absolute("https://h/o/r.git", cwd), "https://h/o/r.git");
        assert_eq!(absolute("git@h:o/r.git", cwd), "git@h:o/r.git");
        assert_eq!(absolute("", cwd), "");
        assert_eq!(absolute("  ", cwd), "  ", "blank stays blank: `up` says it is required");
    }

    #[test]
    fn labels_hide_credentials_and_basenames_drop_git() {
        let s = Source::Remote("https://user:tok@example.test/o/repo.git".into());
        assert_eq!(s.label(), "https://example.test/o/repo.git");
        assert_eq!(s.basename(), "repo");
        assert_eq!(Source::Remote("git@h:o/thing".into()).basename(), "thing");
        assert_eq!(Source::Local("/a/b/proj".into()).basename(), "proj");
    }
}
