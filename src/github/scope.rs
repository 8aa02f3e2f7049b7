//! The scope grammar and the decision function: pure, so every rule is unit-tested.
//!
//! ```text
//! scope   = "readonly-all" | "github:" owner "/" (repo | "*") [":" perm ("," perm)*]
//! perm    = "read" | "create-draft" | "push-new-branch" | "pending-review" | "write"
//! ```
//! A `github:` scope without permissions grants `read`. `write` implies every other
//! permission (and is the only one that allows a force push or a comment).

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::config::{RepoPermissions, ServiceGator};

/// A repository on the GitHub host: `owner/repo`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct RepoId {
    pub owner: String,
    pub repo: String,
}

impl RepoId {
    /// Parses `owner/repo` (GitHub's character set for both parts).
    pub fn parse(s: &str) -> Result<RepoId, ScopeError> {
        match s.split_once('/') {
            Some((owner, repo)) if name_ok(owner) && name_ok(repo) && repo != "*" => {
                Ok(RepoId { owner: owner.to_owned(), repo: repo.trim_end_matches(".git").to_owned() })
            }
            _ => Err(ScopeError { input: s.to_owned(), part: s.to_owned(), why: "is not `owner/repo`".into() }),
        }
    }
}

impl fmt::Display for RepoId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.owner, self.repo)
    }
}

fn name_ok(p: &str) -> bool {
    !p.is_empty()
        && p != "."
        && p != ".."
        && p.len() <= 100
        && p.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
}

/// A scope string that does not parse; `part` is the piece that is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("scope `{input}`: `{part}` {why}")]
pub struct ScopeError {
    pub input: String,
    pub part: String,
    pub why: String,
}

/// One permission of a repository scope.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Perm {
    Read,
    CreateDraft,
    PushNewBranch,
    PendingReview,
    Write,
}

impl Perm {
    pub const ALL: [Perm; 5] = [Perm::Read, Perm::CreateDraft, Perm::PushNewBranch, Perm::PendingReview, Perm::Write];

    pub fn as_str(self) -> &'static str {
        match self {
            Perm::Read => "read",
            Perm::CreateDraft => "create-draft",
            Perm::PushNewBranch => "push-new-branch",
            Perm::PendingReview => "pending-review",
            Perm::Write => "write",
        }
    }

    fn parse(s: &str) -> Option<Perm> {
        Perm::ALL.into_iter().find(|p| p.as_str() == s)
    }
}

/// The repositories a scope covers.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RepoMatch {
    One(RepoId),
    /// `owner/*`.
    Owner(String),
}

impl RepoMatch {
    fn covers(&self, repo: &RepoId) -> bool {
        match self {
            RepoMatch::One(r) => r.owner.eq_ignore_ascii_case(&repo.owner) && r.repo.eq_ignore_ascii_case(&repo.repo),
            RepoMatch::Owner(o) => o.eq_ignore_ascii_case(&repo.owner),
        }
    }
}

/// One parsed scope.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Scope {
    /// Read every repository the token can see.
    ReadonlyAll,
    Github {
        repos: RepoMatch,
        perms: Vec<Perm>,
    },
}

impl Scope {
    pub fn parse(input: &str) -> Result<Scope, ScopeError> {
        let s = input.trim();
        let err =
            |part: &str, why: &str| ScopeError { input: s.to_owned(), part: part.to_owned(), why: why.to_owned() };
        if s == "readonly-all" {
            return Ok(Scope::ReadonlyAll);
        }
        let Some(rest) = s.strip_prefix("github:") else {
            let head = s.split(':').next().unwrap_or(s);
            return Err(err(
                head,
                "is not a scope kind: use `github:owner/repo[:perms]`, `github:owner/*` or `readonly-all`",
            ));
        };
        let (target, perms) = match rest.split_once(':') {
            Some((t, p)) => (t, Some(p)),
            None => (rest, None),
        };
        let repos = match target.split_once('/') {
            Some((owner, "*")) if name_ok(owner) => RepoMatch::Owner(owner.to_owned()),
            Some((owner, repo)) if name_ok(owner) && name_ok(repo) => {
                RepoMatch::One(RepoId { owner: owner.to_owned(), repo: repo.to_owned() })
            }
            Some((owner, _)) if !name_ok(owner) => {
                return Err(err(owner, "is not a GitHub owner (letters, digits, `.`, `_`, `-`)"));
            }
            Some((_, repo)) => return Err(err(repo, "is not a repository name or `*`")),
            None => return Err(err(target, "is not `owner/repo` or `owner/*`")),
        };
        let mut list = Vec::new();
        match perms {
            None => list.push(Perm::Read),
            Some(p) => {
                for part in p.split(',') {
                    let part = part.trim();
                    let perm = Perm::parse(part).ok_or_else(|| {
                        err(part, "is not a permission: use read, create-draft, push-new-branch, pending-review, write")
                    })?;
                    if !list.contains(&perm) {
                        list.push(perm);
                    }
                }
            }
        }
        list.sort();
        Ok(Scope::Github { repos, perms: list })
    }

    /// The scopes the `[service-gator]` TOML grants every workspace.
    pub fn from_config(gator: &ServiceGator) -> Vec<Scope> {
        let mut out = Vec::new();
        if gator.gh.read {
            out.push(Scope::ReadonlyAll);
        }
        for (pattern, p) in &gator.gh.repos {
            let repos = match &pattern.repo {
                Some(r) => RepoMatch::One(RepoId { owner: pattern.owner.clone(), repo: r.clone() }),
                None => RepoMatch::Owner(pattern.owner.clone()),
            };
            let perms = perms_of(p);
            if !perms.is_empty() {
                out.push(Scope::Github { repos, perms });
            }
        }
        out
    }

    /// The scopes a workspace gets by default for a GitHub repository source.
    pub fn defaults_for(repo: &RepoId, read_only: bool) -> Scope {
        let perms = if read_only { vec![Perm::Read] } else { vec![Perm::Read, Perm::CreateDraft, Perm::PushNewBranch] };
        Scope::Github { repos: RepoMatch::One(repo.clone()), perms }
    }

    fn grants(&self, repo: &RepoId, need: Perm) -> bool {
        match self {
            Scope::ReadonlyAll => need == Perm::Read,
            Scope::Github { repos, perms } => {
                repos.covers(repo) && (perms.contains(&need) || perms.contains(&Perm::Write))
            }
        }
    }
}

fn perms_of(p: &RepoPermissions) -> Vec<Perm> {
    let flags = [p.read, p.create_draft, p.push_new_branch, p.pending_review, p.write];
    Perm::ALL.into_iter().zip(flags).filter(|(_, on)| *on).map(|(perm, _)| perm).collect()
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scope::ReadonlyAll => f.write_str("readonly-all"),
            Scope::Github { repos, perms } => {
                match repos {
                    RepoMatch::One(r) => write!(f, "github:{r}")?,
                    RepoMatch::Owner(o) => write!(f, "github:{o}/*")?,
                }
                let list: Vec<&str> = perms.iter().map(|p| p.as_str()).collect();
                write!(f, ":{}", list.join(","))
            }
        }
    }
}

/// What a gator call wants to do, as the decision function sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request<'a> {
    Read {
        repo: &'a RepoId,
    },
    /// Open a pull request from `head`; `draft: false` is never allowed, and the head must
    /// be one of this workspace's branches.
    OpenPr {
        repo: &'a RepoId,
        draft: bool,
        own_head: bool,
    },
    Comment {
        repo: &'a RepoId,
    },
    /// Push `branch` to `repo`. `own_branches` are the branches this workspace's tasks own.
    Push {
        repo: &'a RepoId,
        branch: &'a str,
        force: bool,
        own_branch: bool,
    },
}

impl Request<'_> {
    pub fn repo(&self) -> &RepoId {
        match self {
            Request::Read { repo }
            | Request::OpenPr { repo, .. }
            | Request::Comment { repo }
            | Request::Push { repo, .. } => repo,
        }
    }
}

/// The decision on one request, with the reason that goes into the audit log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    pub reason: String,
}

impl Decision {
    fn allow(reason: impl Into<String>) -> Decision {
        Decision { allowed: true, reason: reason.into() }
    }
    fn deny(reason: impl Into<String>) -> Decision {
        Decision { allowed: false, reason: reason.into() }
    }
}

/// Whether any scope grants `need` on some repository (so a tool needing it is listed).
pub fn offers(scopes: &[Scope], need: Perm) -> bool {
    scopes.iter().any(|s| match s {
        Scope::ReadonlyAll => need == Perm::Read,
        Scope::Github { perms, .. } => perms.contains(&need) || perms.contains(&Perm::Write),
    })
}

/// Whether `scopes` allow `req`. Denials say which permission was missing.
pub fn decide(scopes: &[Scope], req: &Request<'_>) -> Decision {
    let repo = req.repo();
    let find = |need: Perm| scopes.iter().find(|s| s.grants(repo, need));
    let need = |need: Perm, what: &str| match find(need) {
        Some(s) => Decision::allow(format!("{what} allowed by `{s}`")),
        None => Decision::deny(format!("{what} on {repo} needs `{}`, which no scope grants", need.as_str())),
    };
    match *req {
        Request::Read { .. } => need(Perm::Read, "read"),
        Request::OpenPr { draft: false, .. } => {
            Decision::deny("pull requests from an agent are always drafts (draft: false was asked)")
        }
        Request::OpenPr { own_head: false, .. } => {
            Decision::deny("a pull request's head must be a devaipod/* branch of this workspace's tasks")
        }
        Request::OpenPr { draft: true, .. } => need(Perm::CreateDraft, "draft pull request"),
        Request::Comment { .. } => need(Perm::Write, "comment"),
        Request::Push { branch, force, own_branch, .. } => {
            if !branch.starts_with("devaipod/") {
                return Decision::deny(format!("only devaipod/* branches may be pushed, not `{branch}`"));
            }
            let allowed = if force { need(Perm::Write, "force push") } else { need(Perm::PushNewBranch, "push") };
            if allowed.allowed && !own_branch {
                return Decision::deny(format!("`{branch}` is not the branch of this workspace's running task"));
            }
            allowed
        }
    }
}

#[cfg(test)]
mod tests;
