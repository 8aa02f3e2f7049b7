use super::*;

fn repo(s: &str) -> RepoId {
    RepoId::parse(s).expect("test repo")
}

#[test]
fn grammar_table() {
    let ok = [
        ("readonly-all", "readonly-all"),
        ("github:o/r", "github:o/r:read"),
        ("github:o/r:read", "github:o/r:read"),
        ("github:o/*:read,create-draft", "github:o/*:read,create-draft"),
        ("github:o/r:write,read,write", "github:o/r:read,write"),
        (
            "github:my-org/my.repo_1:push-new-branch,pending-review",
            "github:my-org/my.repo_1:push-new-branch,pending-review",
        ),
        ("  github:o/r:create-draft  ", "github:o/r:create-draft"),
    ];
    for (input, shown) in ok {
        let s = Scope::parse(input).unwrap_or_else(|e| panic!("{input}: {e}"));
        assert_eq!(s.to_string(), shown, "{input}");
        assert_eq!(Scope::parse(&s.to_string()).as_ref(), Ok(&s), "round trip of {input}");
    }
    // (input, the part the error must name)
    let bad = [
        ("gitlab:o/r", "gitlab"),
        ("github:o/r:pushh", "pushh"),
        ("github:o/r:read,", ""),
        ("github:o", "o"),
        ("github:o w/r", "o w"),
        ("github:o/r r", "r r"),
        ("github:/r", ""),
        ("readonly", "readonly"),
        ("github:o/r:read,Write", "Write"),
        ("github:o/..:read", ".."),
        ("github:./r", "."),
    ];
    for (input, part) in bad {
        let e = Scope::parse(input).expect_err(input);
        assert_eq!(e.part, part, "{input}: {e}");
        assert!(e.to_string().contains(&format!("`{part}`")), "{e}");
    }
}

#[test]
fn decision_table() {
    let scopes = [
        Scope::parse("github:o/r:read,create-draft,push-new-branch").unwrap(),
        Scope::parse("github:team/*:read").unwrap(),
        Scope::parse("github:w/r:write").unwrap(),
    ];
    let (or, other, team, w, upper) = (repo("o/r"), repo("x/y"), repo("team/any"), repo("w/r"), repo("O/R"));
    let push = |repo, branch, force, own_branch| Request::Push { repo, branch, force, own_branch };
    let table: Vec<(Request<'_>, bool, &str)> = vec![
        (Request::Read { repo: &or }, true, "allowed by `github:o/r"),
        (Request::Read { repo: &upper }, true, "allowed"),
        (Request::Read { repo: &team }, true, "github:team/*:read"),
        (Request::Read { repo: &other }, false, "x/y needs `read`"),
        (Request::OpenPr { repo: &or, draft: true, own_head: true }, true, "draft pull request allowed"),
        (Request::OpenPr { repo: &or, draft: false, own_head: true }, false, "always drafts"),
        (Request::OpenPr { repo: &or, draft: true, own_head: false }, false, "head must be"),
        (Request::OpenPr { repo: &w, draft: false, own_head: true }, false, "always drafts"),
        (Request::OpenPr { repo: &team, draft: true, own_head: true }, false, "needs `create-draft`"),
        (Request::Comment { repo: &or }, false, "needs `write`"),
        (Request::Comment { repo: &w }, true, "github:w/r:write"),
        (push(&or, "devaipod/t-1", false, true), true, "push allowed"),
        (push(&or, "main", false, true), false, "only devaipod/*"),
        (push(&or, "devaipod/t-other", false, false), false, "not the branch of this workspace's running task"),
        (push(&or, "devaipod/t-other", true, false), false, "force push on o/r needs `write`"),
        (push(&w, "devaipod/t-other", true, false), false, "not the branch of this workspace's running task"),
        (push(&or, "devaipod/t-1", true, true), false, "force push on o/r needs `write`"),
        (push(&w, "devaipod/t-1", true, true), true, "force push allowed"),
        (push(&w, "main", true, true), false, "only devaipod/*"),
        (push(&team, "devaipod/t-1", false, true), false, "needs `push-new-branch`"),
    ];
    for (req, allowed, reason) in table {
        let d = decide(&scopes, &req);
        assert_eq!(d.allowed, allowed, "{req:?}: {}", d.reason);
        assert!(d.reason.contains(reason), "{req:?}: {} (wanted {reason})", d.reason);
    }
}

#[test]
fn readonly_all_reads_only() {
    let scopes = [Scope::ReadonlyAll];
    let r = repo("any/thing");
    assert!(decide(&scopes, &Request::Read { repo: &r }).allowed);
    assert!(!decide(&scopes, &Request::OpenPr { repo: &r, draft: true, own_head: true }).allowed);
    assert!(!decide(&[], &Request::Read { repo: &r }).allowed);
}

#[test]
fn defaults_and_config_form() {
    let r = repo("o/r");
    assert_eq!(Scope::defaults_for(&r, false).to_string(), "github:o/r:read,create-draft,push-new-branch");
    assert_eq!(Scope::defaults_for(&r, true).to_string(), "github:o/r:read");
    let cfg: crate::config::Config = toml::from_str(
        r#"
        [service-gator.gh]
        read = true
        [service-gator.gh.repos]
        "o/r" = { read = true, create-draft = true }
        "team/*" = { push-new-branch = true }
        "#,
    )
    .unwrap();
    let shown: Vec<String> = Scope::from_config(&cfg.service_gator).iter().map(|s| s.to_string()).collect();
    assert_eq!(shown, ["readonly-all", "github:o/r:read,create-draft", "github:team/*:push-new-branch"]);
}

#[test]
fn offered_permissions_decide_which_tools_are_listed() {
    let read_only = [Scope::parse("github:o/r:read").unwrap()];
    assert!(offers(&read_only, Perm::Read));
    assert!(!offers(&read_only, Perm::PushNewBranch) && !offers(&read_only, Perm::CreateDraft));
    let write = [Scope::parse("github:o/*:write").unwrap()];
    assert!(Perm::ALL.iter().all(|p| offers(&write, *p)));
    assert!(!offers(&[], Perm::Read));
}
