//! The GitHub domain, below `core`: the scope grammar and the pure decision function
//! (`scope.rs`), the REST client with the daemon's token (`client.rs`), and what a GitHub URL
//! names (this file). It knows nothing of MCP, pods or the store; gator's per-pod MCP adapter
//! (`crate::gator`) and core's policy use it.

pub mod client;
pub mod scope;

pub use client::{Github, GithubError};
pub use scope::{Decision, RepoId, Request, Scope, ScopeError, decide};

/// What a GitHub URL given as a source names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GithubSource {
    pub repo: RepoId,
    /// `Some((kind, n))` for `…/issues/N` (`issue`) or `…/pull/N` (`pull`).
    pub item: Option<(ItemKind, u64)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ItemKind {
    Issue,
    Pull,
}

impl GithubSource {
    /// `http(s)://<host>/owner/repo[.git][/issues/N | /pull/N]` on the configured GitHub
    /// host; `None` for every other source.
    pub fn parse(source: &str, host: &str) -> Option<GithubSource> {
        let rest = source.strip_prefix("https://").or_else(|| source.strip_prefix("http://"))?;
        let (authority, path) = rest.split_once('/')?;
        if !authority.eq_ignore_ascii_case(host) {
            return None;
        }
        let parts: Vec<&str> = path.trim_end_matches('/').split('/').collect();
        let repo = match parts.as_slice() {
            [owner, repo, ..] => RepoId::parse(&format!("{owner}/{}", repo.trim_end_matches(".git"))).ok()?,
            _ => return None,
        };
        let item = match parts.as_slice() {
            [_, _] => None,
            [_, _, "issues", n] => Some((ItemKind::Issue, n.parse().ok()?)),
            [_, _, "pull", n] | [_, _, "pull", n, ..] => Some((ItemKind::Pull, n.parse().ok()?)),
            _ => return None,
        };
        Some(GithubSource { repo, item })
    }
}

/// The git remote of `repo`: `{repo}` in the configured template.
pub fn git_url(template: &str, repo: &RepoId) -> String {
    template.replace("{repo}", &repo.to_string())
}

/// The daemon's GitHub token, from `[trusted] github-token-env` or `github-token-file`.
pub fn token(trusted: &crate::config::Trusted) -> Option<String> {
    if let Some(var) = &trusted.github_token_env
        && let Ok(v) = std::env::var(var.as_str())
        && !v.trim().is_empty()
    {
        return Some(v.trim().to_owned());
    }
    let path = trusted.github_token_file.as_ref()?;
    let v = std::fs::read_to_string(path).ok()?;
    Some(v.trim().to_owned()).filter(|v| !v.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn github_sources() {
        let r = |s: &str| RepoId::parse(s).unwrap();
        let table = [
            ("https://github.com/o/r", Some(GithubSource { repo: r("o/r"), item: None })),
            ("https://github.com/o/r.git", Some(GithubSource { repo: r("o/r"), item: None })),
            ("https://github.com/o/r/", Some(GithubSource { repo: r("o/r"), item: None })),
            (
                "https://github.com/o/r/issues/12",
                Some(GithubSource { repo: r("o/r"), item: Some((ItemKind::Issue, 12)) }),
            ),
            (
                "https://GitHub.com/o/r/pull/3/files",
                Some(GithubSource { repo: r("o/r"), item: Some((ItemKind::Pull, 3)) }),
            ),
            ("https://github.com/o/r/issues/x", None),
            ("https://github.com/o/r/tree/main", None),
            ("https://github.com/o", None),
            ("https://gitlab.com/o/r", None),
            ("git@github.com:o/r.git", None),
            ("/home/me/r", None),
        ];
        for (input, want) in table {
            assert_eq!(GithubSource::parse(input, "github.com"), want, "{input}");
        }
        assert_eq!(git_url("https://github.com/{repo}.git", &r("o/r")), "https://github.com/o/r.git");
    }
}
