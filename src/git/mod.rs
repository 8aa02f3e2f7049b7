//! Hardened git on the daemon's side: the daemon-owned bare repository per workspace,
//! where agent work arrives as bundles and where diffs, stats and pushes run. Hooks,
//! fsmonitor, external diff and textconv are off and the `ext::` transport is never allowed,
//! so nothing an agent commits can make trusted git run its code.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;

const TIMEOUT: Duration = Duration::from_secs(300);

#[derive(Debug, thiserror::Error)]
pub enum GitError {
    #[error("git {what} failed: {message}")]
    Failed { what: String, message: String },
    #[error("git {what} took longer than {} s", TIMEOUT.as_secs())]
    Timeout { what: String },
    #[error("cannot run git: {0}")]
    Spawn(std::io::Error),
}

/// `git` with the hardening flags, in `repo`.
fn git(repo: &Path) -> tokio::process::Command {
    let mut c = tokio::process::Command::new("git");
    c.arg("-C").arg(repo);
    c.args([
        "-c",
        "core.hooksPath=/dev/null",
        "-c",
        "core.fsmonitor=false",
        "-c",
        "protocol.ext.allow=never",
        "-c",
        "diff.external=",
        "-c",
        "core.attributesFile=/dev/null",
    ]);
    c.env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    c
}

async fn run(mut cmd: tokio::process::Command, what: &str) -> Result<Vec<u8>, GitError> {
    let output = cmd.output();
    // Core's tests run in tokio's paused time, which jumps to the next timer whenever the
    // runtime waits on nothing but I/O: a blocking task holds it while git runs, as the
    // fake engine's commands do.
    #[cfg(test)]
    let output = {
        let handle = tokio::runtime::Handle::current();
        let output = tokio::task::spawn_blocking(move || handle.block_on(output));
        async move { output.await.unwrap_or_else(|e| Err(std::io::Error::other(e))) }
    };
    let out = tokio::time::timeout(TIMEOUT, output)
        .await
        .map_err(|_| GitError::Timeout { what: what.into() })?
        .map_err(GitError::Spawn)?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let message =
            err.lines().rfind(|l| !l.trim().is_empty()).unwrap_or("no message").trim().trim_start_matches("fatal: ");
        return Err(GitError::Failed { what: what.into(), message: message.to_owned() });
    }
    Ok(out.stdout)
}

/// The daemon-owned bare repository of one workspace.
#[derive(Debug, Clone)]
pub struct BareRepo {
    pub path: PathBuf,
}

/// What a branch changes relative to its base.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Stats {
    /// `(sha, subject)`, oldest first.
    pub commits: Vec<(String, String)>,
    pub files: Vec<crate::store::ProposalFile>,
    pub added: u64,
    pub removed: u64,
}

impl BareRepo {
    /// Creates the repository if needed.
    pub async fn init(path: PathBuf) -> Result<BareRepo, GitError> {
        if !path.join("HEAD").is_file() {
            tokio::fs::create_dir_all(&path).await.map_err(GitError::Spawn)?;
            let mut c = git(&path);
            c.args(["init", "--quiet", "--bare"]);
            run(c, "init").await?;
        }
        Ok(BareRepo { path })
    }

    /// Fetches the source checkout's history, so that agent bundles can be thin.
    pub async fn fetch_source(&self, checkout: &Path) -> Result<(), GitError> {
        let mut c = git(&self.path);
        c.args(["fetch", "--quiet", "--no-tags"]).arg(checkout).arg("+HEAD:refs/devaipod/source");
        run(c, "fetch the source").await.map(drop)
    }

    pub async fn has_commit(&self, sha: &str) -> bool {
        let mut c = git(&self.path);
        c.args(["cat-file", "-e", &format!("{sha}^{{commit}}")]);
        run(c, "cat-file").await.is_ok()
    }

    /// Fetches `src` (a full ref name) from a bundle file into `dst`, forced; returns its
    /// commit. Every object is checked as it arrives (`fetch.fsckObjects`).
    pub async fn fetch_bundle_ref(&self, bundle: &Path, src: &str, dst: &str) -> Result<String, GitError> {
        let mut c = git(&self.path);
        c.args(["-c", "fetch.fsckObjects=true", "fetch", "--quiet", "--no-tags", "--no-write-fetch-head"])
            .arg(bundle)
            .arg(format!("+{src}:{dst}"));
        run(c, "fetch the collected work").await?;
        self.rev(dst).await
    }

    /// The tree of a commit.
    pub async fn tree(&self, rev: &str) -> Result<String, GitError> {
        let mut c = git(&self.path);
        c.args(["rev-parse", "--verify", "--quiet", &format!("{rev}^{{tree}}")]);
        Ok(String::from_utf8_lossy(&run(c, "rev-parse").await?).trim().to_owned())
    }

    /// A new commit of `tree` on `parent`, by `identity` (name, email); returns it.
    pub async fn commit_tree(
        &self,
        tree: &str,
        parent: &str,
        message: &str,
        identity: (&str, &str),
    ) -> Result<String, GitError> {
        let mut c = git(&self.path);
        c.args(["-c", "commit.gpgSign=false", "commit-tree", tree, "-p", parent, "-m", message]);
        for who in ["AUTHOR", "COMMITTER"] {
            c.env(format!("GIT_{who}_NAME"), identity.0).env(format!("GIT_{who}_EMAIL"), identity.1);
        }
        Ok(String::from_utf8_lossy(&run(c, "commit-tree").await?).trim().to_owned())
    }

    /// A commit of `tree` with no parent (a worker's seed: the state without its history).
    pub async fn commit_root(&self, tree: &str, message: &str, identity: (&str, &str)) -> Result<String, GitError> {
        let mut c = git(&self.path);
        c.args(["-c", "commit.gpgSign=false", "commit-tree", tree, "-m", message]);
        for who in ["AUTHOR", "COMMITTER"] {
            c.env(format!("GIT_{who}_NAME"), identity.0).env(format!("GIT_{who}_EMAIL"), identity.1);
        }
        Ok(String::from_utf8_lossy(&run(c, "commit-tree").await?).trim().to_owned())
    }

    /// Points `name` at `commit`, whatever it pointed at.
    pub async fn set_ref(&self, name: &str, commit: &str) -> Result<(), GitError> {
        let mut c = git(&self.path);
        c.args(["update-ref", name, commit]);
        run(c, "update-ref").await.map(drop)
    }

    /// A bundle of the full ref `name`, without what `have` holds (the receiver has it).
    pub async fn bundle_ref(&self, name: &str, have: Option<&str>, out: &Path) -> Result<(), GitError> {
        let mut c = git(&self.path);
        c.args(["bundle", "create", "--quiet"]).arg(out).arg(name);
        if let Some(have) = have {
            c.arg(format!("^{have}"));
        }
        run(c, "bundle create").await.map(drop)
    }

    /// Points `name` at `commit`, only if it is at `old` now (`None`: only if it is not
    /// there yet): a compare-and-swap.
    pub async fn update_ref(&self, name: &str, commit: &str, old: Option<&str>) -> Result<(), GitError> {
        let mut c = git(&self.path);
        let absent = "0".repeat(commit.len().max(40));
        c.args(["update-ref", name, commit, old.unwrap_or(&absent)]);
        run(c, "update-ref").await.map(drop)
    }

    /// Removes a ref (one that is not there is not an error).
    pub async fn delete_ref(&self, name: &str) -> Result<(), GitError> {
        let mut c = git(&self.path);
        c.args(["update-ref", "-d", name]);
        run(c, "update-ref -d").await.map(drop)
    }

    pub async fn rev(&self, rev: &str) -> Result<String, GitError> {
        let mut c = git(&self.path);
        c.args(["rev-parse", "--verify", "--quiet", &format!("{rev}^{{commit}}")]);
        Ok(String::from_utf8_lossy(&run(c, "rev-parse").await?).trim().to_owned())
    }

    pub async fn stats(&self, base: &str, head: &str) -> Result<Stats, GitError> {
        let mut c = git(&self.path);
        c.args(["log", "--reverse", "--format=%H%x00%s", &format!("{base}..{head}")]);
        let log = String::from_utf8_lossy(&run(c, "log").await?).into_owned();
        let commits =
            log.lines().filter_map(|l| l.split_once('\0')).map(|(h, s)| (h.to_owned(), s.to_owned())).collect();
        let mut c = git(&self.path);
        c.args(["diff", "--no-ext-diff", "--no-textconv", "--no-renames", "--numstat", "-z", base, head]);
        let numstat = run(c, "diff --numstat").await?;
        let mut stats = Stats { commits, ..Stats::default() };
        for rec in numstat.split(|b| *b == 0).filter(|r| !r.is_empty()) {
            let rec = String::from_utf8_lossy(rec);
            let mut parts = rec.splitn(3, '\t');
            let (a, r, path) = (parts.next().unwrap_or("-"), parts.next().unwrap_or("-"), parts.next().unwrap_or(""));
            let (added, removed) = (a.parse::<u64>().ok(), r.parse::<u64>().ok());
            stats.added += added.unwrap_or(0);
            stats.removed += removed.unwrap_or(0);
            stats.files.push(crate::store::ProposalFile { path: path.to_owned(), added, removed });
        }
        Ok(stats)
    }

    pub async fn diff(&self, base: &str, head: &str) -> Result<String, GitError> {
        let mut c = git(&self.path);
        c.args(["diff", "--no-ext-diff", "--no-textconv", "--no-color", base, head]);
        Ok(String::from_utf8_lossy(&run(c, "diff").await?).into_owned())
    }

    /// A bundle of `branch` (whole history: the receiver may lack agent commits).
    pub async fn bundle(&self, branch: &str, out: &Path) -> Result<(), GitError> {
        let mut c = git(&self.path);
        c.args(["bundle", "create", "--quiet"]).arg(out).arg(format!("refs/heads/{branch}"));
        run(c, "bundle create").await.map(drop)
    }

    /// Pushes commit `head` to `remote` as `branch`; forced only when asked.
    /// `token`: a GitHub-style token sent as HTTP credentials (`x-access-token`).
    pub async fn push(
        &self,
        remote: &str,
        head: &str,
        branch: &str,
        force: bool,
        token: Option<&str>,
    ) -> Result<(), GitError> {
        run(self.push_command(remote, head, branch, force, token), "push").await.map(drop)
    }

    /// The push command. Credentials (in an `https://user:token@host/…` URL, or the token)
    /// never go into argv (where `ps` shows them): the URL is passed without them, and they
    /// travel as an `Authorization` header in git's environment-only configuration.
    fn push_command(
        &self,
        remote: &str,
        head: &str,
        branch: &str,
        force: bool,
        token: Option<&str>,
    ) -> tokio::process::Command {
        let mut c = git(&self.path);
        let (url, auth) = split_credentials(remote);
        let is_http = url.starts_with("http://") || url.starts_with("https://");
        let userinfo = auth.or_else(|| token.filter(|_| is_http).map(|t| format!("x-access-token:{t}")));
        if let Some(userinfo) = userinfo {
            c.env("GIT_CONFIG_COUNT", "1").env("GIT_CONFIG_KEY_0", "http.extraHeader").env(
                "GIT_CONFIG_VALUE_0",
                format!("Authorization: Basic {}", crate::encode::base64(userinfo.as_bytes())),
            );
        }
        let plus = if force { "+" } else { "" };
        c.args(["push", "--quiet", "--no-verify", &url, &format!("{plus}{head}:refs/heads/{branch}")]);
        c
    }
}

/// `https://user:token@host/path` → (`https://host/path`, `Some("user:token")`).
fn split_credentials(url: &str) -> (String, Option<String>) {
    let Some((scheme, rest)) = url.split_once("://") else { return (url.to_owned(), None) };
    if !scheme.starts_with("http") {
        return (url.to_owned(), None);
    }
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => (format!("{scheme}://{host}/{path}"), Some(userinfo.to_owned())),
        None => (url.to_owned(), None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(dir: &Path, args: &[&str]) {
        let ok = std::process::Command::new("git")
            .args(["-c", "user.name=t", "-c", "user.email=t@t.invalid"])
            .args(args)
            .current_dir(dir)
            .status()
            .unwrap()
            .success();
        assert!(ok, "git {args:?}");
    }

    #[test]
    fn push_keeps_url_credentials_out_of_argv() {
        let repo = BareRepo { path: "/tmp/r.git".into() };
        let c =
            repo.push_command("https://me:ghp_secret123@git.example/o/r.git", "abc123", "devaipod/t-1", false, None);
        let argv: Vec<String> = c.as_std().get_args().map(|a| a.to_string_lossy().into_owned()).collect();
        assert!(argv.iter().all(|a| !a.contains("ghp_secret123")), "{argv:?}");
        assert!(argv.contains(&"https://git.example/o/r.git".to_owned()), "{argv:?}");
        let env: Vec<(String, String)> = c
            .as_std()
            .get_envs()
            .filter_map(|(k, v)| Some((k.to_string_lossy().into_owned(), v?.to_string_lossy().into_owned())))
            .collect();
        assert!(env.contains(&(
            "GIT_CONFIG_VALUE_0".into(),
            format!("Authorization: Basic {}", crate::encode::base64(b"me:ghp_secret123"))
        )));
        // A token travels the same way, never in argv; a forced push says `+`.
        let c = repo.push_command("https://git.example/o/r.git", "abc123", "devaipod/t-1", true, Some("ghs_tok"));
        let argv: Vec<String> = c.as_std().get_args().map(|a| a.to_string_lossy().into_owned()).collect();
        assert!(argv.iter().all(|a| !a.contains("ghs_tok")), "{argv:?}");
        assert!(argv.contains(&"+abc123:refs/heads/devaipod/t-1".to_owned()), "{argv:?}");
        let value = c.as_std().get_envs().find(|(k, _)| *k == "GIT_CONFIG_VALUE_0").and_then(|(_, v)| v);
        assert_eq!(
            value.map(|v| v.to_string_lossy().into_owned()),
            Some(format!("Authorization: Basic {}", crate::encode::base64(b"x-access-token:ghs_tok")))
        );
        assert_eq!(split_credentials("file:///x/r.git"), ("file:///x/r.git".into(), None));
        assert_eq!(split_credentials("https://host/r"), ("https://host/r".into(), None));
    }

    #[tokio::test]
    async fn bundle_round_trip_stats_diff_and_push() {
        let d = tempfile::tempdir().unwrap();
        let src = d.path().join("src");
        std::fs::create_dir(&src).unwrap();
        sh(&src, &["init", "-q", "-b", "main"]);
        std::fs::write(src.join("a.txt"), "one\n").unwrap();
        sh(&src, &["add", "-A"]);
        sh(&src, &["commit", "-qm", "base"]);
        let bare = BareRepo::init(d.path().join("bare.git")).await.unwrap();
        bare.fetch_source(&src).await.unwrap();
        let base = bare.rev("refs/devaipod/source").await.unwrap();

        // The "agent" commits on its branch and sends a thin bundle.
        sh(&src, &["checkout", "-qb", "devaipod/t1"]);
        std::fs::write(src.join("a.txt"), "one\ntwo\n").unwrap();
        std::fs::write(src.join("b.bin"), [0u8, 1, 2, 0]).unwrap();
        // An attribute that would run a textconv program if trusted git honoured it.
        std::fs::write(src.join(".gitattributes"), "*.txt diff=evil\n").unwrap();
        sh(&src, &["add", "-A"]);
        sh(&src, &["commit", "-qm", "agent work"]);
        let bundle = d.path().join("t1.bundle");
        sh(&src, &["bundle", "create", "-q", bundle.to_str().unwrap(), &format!("{base}..devaipod/t1")]);
        assert!(bare.has_commit(&base).await);
        let branch = "refs/heads/devaipod/t1";
        let head = bare.fetch_bundle_ref(&bundle, branch, branch).await.unwrap();

        let s = bare.stats(&base, &head).await.unwrap();
        assert_eq!(s.commits.len(), 1);
        assert_eq!(s.commits[0].1, "agent work");
        let paths: Vec<&str> = s.files.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(paths, [".gitattributes", "a.txt", "b.bin"]);
        assert_eq!(s.files[2].added, None, "binary");
        assert_eq!((s.added, s.removed), (2, 0));
        let diff = bare.diff(&base, &head).await.unwrap();
        assert!(diff.contains("+two"), "{diff}");

        let remote = d.path().join("remote.git");
        sh(d.path(), &["init", "-q", "--bare", remote.to_str().unwrap()]);
        bare.push(remote.to_str().unwrap(), "refs/heads/devaipod/t1", "devaipod/t1", false, None).await.unwrap();
        let pushed = BareRepo { path: remote }.rev("refs/heads/devaipod/t1").await.unwrap();
        assert_eq!(pushed, head);
        let e = bare
            .push("ext::sh -c evil", "refs/heads/devaipod/t1", "devaipod/t1", false, None)
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("push failed"), "{e}");
    }
}
