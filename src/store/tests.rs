use super::*;

fn task(id: &str) -> Task {
    Task {
        id: id.into(),
        workspace: "w".into(),
        prompt: "do it".into(),
        state: TaskState::Queued,
        session_id: None,
        delivered: false,
        base: None,
        follows_proposal: None,
        error: None,
        summary: None,
        created_at: 1,
        updated_at: 1,
        deadline_at: 100,
        turns_before: 0,
        parent: None,
        worker: None,
        workers: 0,
        set_id: None,
        candidate: None,
        model: None,
    }
}

fn proposal(id: &str, task_id: &str) -> Proposal {
    Proposal {
        id: id.into(),
        task_id: task_id.into(),
        workspace: "w".into(),
        branch: format!("devaipod/{task_id}"),
        base: "b".into(),
        head: "h".into(),
        commits: vec![("h".into(), "subject".into())],
        files: vec![ProposalFile { path: "a.txt".into(), added: Some(1), removed: Some(0) }],
        added: 1,
        removed: 0,
        summary: "did it".into(),
        state: ProposalState::Open,
        created_at: 2,
    }
}

#[test]
fn task_state_machine() {
    use TaskState::*;
    let all = [Queued, Running, NeedsInput, Completed, Failed, Cancelled];
    let allowed = [
        (Queued, Running),
        (Queued, Failed),
        (Queued, Cancelled),
        (Running, NeedsInput),
        (Running, Completed),
        (Running, Failed),
        (Running, Cancelled),
        (NeedsInput, Running),
        (NeedsInput, Completed),
        (NeedsInput, Failed),
        (NeedsInput, Cancelled),
    ];
    for from in all {
        for to in all {
            assert_eq!(from.can_move_to(to), allowed.contains(&(from, to)), "{from:?} → {to:?}");
        }
        assert_eq!(TaskState::parse(from.as_str()), Some(from));
    }
    assert!(Completed.is_final() && Failed.is_final() && Cancelled.is_final());
    assert!(!Queued.is_final() && !Running.is_final() && !NeedsInput.is_final());
}

#[tokio::test]
async fn tasks_round_trip_and_unfinished_ones_are_found() {
    let s = Store::open_in_memory().unwrap();
    s.insert_task(task("t1")).await.unwrap();
    s.insert_task(Task { created_at: 2, ..task("t2") }).await.unwrap();
    let mut t1 = s.task("t1").await.unwrap().unwrap();
    assert_eq!(t1, task("t1"));
    t1.state = TaskState::Completed;
    t1.session_id = Some("ses".into());
    t1.delivered = true;
    // Progress writes never move the state: only a transition (with its event) does.
    s.update_task(&t1).await.unwrap();
    let got = s.task("t1").await.unwrap().unwrap();
    assert_eq!((got.state, got.session_id.as_deref(), got.delivered), (TaskState::Queued, Some("ses"), true));
    let ev = s.transition_task(&t1, TaskState::Queued, "state:completed", "state", "completed").await.unwrap();
    assert_eq!(ev.map(|e| e.key), Some("state:completed".to_owned()));
    assert_eq!(s.task("t1").await.unwrap().unwrap().state, TaskState::Completed);
    // A transition from a state the task has left writes nothing (a cancel racing a driver).
    t1.state = TaskState::Cancelled;
    let e = s.transition_task(&t1, TaskState::Running, "state:cancelled", "state", "cancelled").await.unwrap_err();
    assert!(matches!(e, StoreError::StateMoved { .. }), "{e}");
    assert_eq!(s.task("t1").await.unwrap().unwrap().state, TaskState::Completed);
    assert!(s.events("t1").await.unwrap().iter().all(|e| e.key != "state:cancelled"));
    let unfinished: Vec<String> = s.unfinished_tasks().await.unwrap().into_iter().map(|t| t.id).collect();
    assert_eq!(unfinished, ["t2"]);
    let all: Vec<String> = s.tasks(Some("w")).await.unwrap().into_iter().map(|t| t.id).collect();
    assert_eq!(all, ["t2", "t1"]);
    assert!(s.tasks(Some("other")).await.unwrap().is_empty());
    assert!(s.task("nope").await.unwrap().is_none());
}

#[tokio::test]
async fn events_with_the_same_key_are_stored_once() {
    let s = Store::open_in_memory().unwrap();
    assert!(s.add_event("t1", "part-1:completed", "tool", "write a.txt").await.unwrap().is_some());
    assert!(s.add_event("t1", "part-1:completed", "tool", "write a.txt").await.unwrap().is_none());
    assert!(s.add_event("t2", "part-1:completed", "tool", "other task").await.unwrap().is_some());
    let ev = s.events("t1").await.unwrap();
    assert_eq!(ev.len(), 1);
    assert_eq!(ev[0].message, "write a.txt");
}

#[tokio::test]
async fn one_proposal_per_task_and_each_approval_once() {
    let s = Store::open_in_memory().unwrap();
    assert!(s.insert_proposal(proposal("p1", "t1")).await.unwrap());
    assert!(!s.insert_proposal(proposal("p2", "t1")).await.unwrap(), "a second proposal for the same task is refused");
    assert_eq!(s.proposal("p1").await.unwrap().unwrap(), proposal("p1", "t1"));
    assert!(s.proposal("p2").await.unwrap().is_none());
    assert!(s.record_approval("p1", "push", "pushed to x", ProposalState::Pushed).await.unwrap());
    assert!(!s.record_approval("p1", "push", "pushed to x", ProposalState::Pushed).await.unwrap());
    assert_eq!(s.proposal("p1").await.unwrap().unwrap().state, ProposalState::Pushed);
    assert_eq!(s.approvals("p1").await.unwrap().len(), 1);
    let (page, total) = s.proposals(Some("w"), Some(ProposalState::Pushed), 50, 0).await.unwrap();
    assert_eq!((page.len(), total), (1, 1));
    assert!(s.proposals(None, Some(ProposalState::Open), 50, 0).await.unwrap().0.is_empty());
    assert!(s.open_proposal_counts().await.unwrap().is_empty());
}

#[tokio::test]
async fn proposal_listings_page_newest_first() {
    let s = Store::open_in_memory().unwrap();
    for i in 0..5 {
        let mut p = proposal(&format!("p{i}"), &format!("t{i}"));
        p.created_at = i;
        p.workspace = if i % 2 == 0 { "even".into() } else { "odd".into() };
        s.insert_proposal(p).await.unwrap();
    }
    let ids = |page: Vec<Proposal>| page.into_iter().map(|p| p.id).collect::<Vec<_>>();
    let (page, total) = s.proposals(None, None, 2, 0).await.unwrap();
    assert_eq!((ids(page), total), (vec!["p4".to_owned(), "p3".to_owned()], 5));
    let (page, _) = s.proposals(None, None, 2, 4).await.unwrap();
    assert_eq!(ids(page), ["p0"]);
    let (page, total) = s.proposals(Some("even"), None, 10, 1).await.unwrap();
    assert_eq!((ids(page), total), (vec!["p2".to_owned(), "p0".to_owned()], 3));
    let counts = s.open_proposal_counts().await.unwrap();
    assert_eq!((counts.get("even"), counts.get("odd")), (Some(&3), Some(&2)));
}

#[tokio::test]
async fn a_file_store_survives_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    {
        let s = Store::open(&path).unwrap();
        s.insert_task(task("t1")).await.unwrap();
    }
    let s = Store::open(&path).unwrap();
    assert!(s.task("t1").await.unwrap().is_some());
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
}

#[tokio::test]
async fn an_unknown_task_state_in_the_database_is_an_error_not_a_failure() {
    let s = Store::open_in_memory().unwrap();
    s.insert_task(task("t1")).await.unwrap();
    s.with(|c| Ok(c.execute("UPDATE tasks SET state = 'paused' WHERE id = 't1'", [])?)).await.unwrap();
    let err = s.task("t1").await.unwrap_err().to_string();
    assert!(err.contains("task state `paused` is unknown"), "{err}");
}

// ---- upgrades: migrations from every released schema version ----

/// Each released migration's SHA-256: a released migration never changes (a database at
/// its version has it applied already), a change of schema is a new migration at the end.
const RELEASED_MIGRATIONS: &[(&str, &str)] = &[
    ("001_init.sql", "67474ca53f4ee13472fec0e832e5a98b7cb1959835cd68d25ae01adbb5dfbdf7"),
    ("002_gator.sql", "6aa0433aa66b386d85d94fb8f061034e5cfd17cd6d5b3eaaaf809006c757f42a"),
    ("003_sessions.sql", "3d4aa7aeacc31aaf914f345c656a359e44046e887db9f6cafacf1a3446a86c2d"),
    ("004_egress.sql", "1e52eb1fbdb0511c23c95d4f721e1a5ebb4b0504b439bf4d05d3ecd62920cf5f"),
    ("005_workers.sql", "23360d930cb48e8e9afc4df294a0a93b3ed8835ed3a3c549c553e4dfac48d339"),
    ("006_fanout.sql", "d954bec23c886e0a4579438bcf86cf7c5a87a6a221201cc147b549bff798f61b"),
];

#[test]
fn migrations_are_forward_only_and_every_file_is_applied() {
    use sha2::Digest;
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/store/migrations");
    let mut files: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".sql"))
        .collect();
    files.sort();
    assert_eq!(files.len(), MIGRATIONS.len(), "every file in {} is in MIGRATIONS: {files:?}", dir.display());
    for (i, (file, sql)) in files.iter().zip(MIGRATIONS).enumerate() {
        assert!(file.starts_with(&format!("{:03}_", i + 1)), "migration {} is {file}: numbered in order", i + 1);
        let on_disk = std::fs::read_to_string(dir.join(file)).unwrap();
        assert_eq!(&on_disk, sql, "MIGRATIONS[{i}] is {file}");
    }
    assert!(RELEASED_MIGRATIONS.len() <= MIGRATIONS.len());
    for (i, (file, sha)) in RELEASED_MIGRATIONS.iter().enumerate() {
        assert_eq!(&files[i], file);
        let got = format!("{:x}", sha2::Sha256::digest(MIGRATIONS[i].as_bytes()));
        assert_eq!(&got, sha, "{file} was released: do not change it, add a new migration");
    }
    assert_eq!(SCHEMA_VERSION as usize, MIGRATIONS.len());
}

/// A database as a devaipod of schema `version` left it, with rows in every table that
/// version had, written with that version's columns.
fn fixture_database(path: &std::path::Path, version: u32) {
    let c = rusqlite::Connection::open(path).unwrap();
    for sql in &MIGRATIONS[..version as usize] {
        c.execute_batch(sql).unwrap();
    }
    c.pragma_update(None, "user_version", version).unwrap();
    if version >= 1 {
        c.execute_batch(
            r#"
            INSERT INTO workspaces (name, source, agent_password, created_at, agent_head)
                VALUES ('w', '/src/w', 'pw', 10, 'abc');
            INSERT INTO tasks (id, workspace, prompt, state, session_id, delivered, turns_before, base, follows_proposal, error, summary, created_at, updated_at, deadline_at)
                VALUES ('t-done', 'w', 'do it', 'completed', 'ses-1', 1, 0, 'abc', NULL, NULL, 'did it', 11, 12, 99),
                       ('t-run', 'w', 'go on', 'running', 'ses-1', 1, 1, 'def', 'p-1', NULL, NULL, 13, 13, 99),
                       ('t-new', 'w', 'next', 'queued', NULL, 0, 0, NULL, NULL, NULL, NULL, 14, 14, 99);
            INSERT INTO task_events (task_id, key, kind, message, at)
                VALUES ('t-done', 'state:running', 'state', 'running', 11), ('t-done', 'part-1:completed', 'tool', 'write a.txt', 12);
            INSERT INTO proposals (id, task_id, workspace, branch, base, head, commits, files, added, removed, summary, state, created_at)
                VALUES ('p-1', 't-done', 'w', 'devaipod/t-done', 'abc', 'def', '[["def","subject"]]',
                        '[{"path":"a.txt","added":1,"removed":0}]', 1, 0, 'did it', 'applied', 12);
            INSERT INTO approvals (proposal_id, action, detail, at) VALUES ('p-1', 'apply', 'applied', 13);
            "#,
        )
        .unwrap();
    }
    if version >= 2 {
        c.execute_batch(
            "UPDATE workspaces SET github_repo = 'octo/w' WHERE name = 'w';
             INSERT INTO gator_scopes (workspace, scope, added_at) VALUES ('w', 'github:octo/w:read', 10);
             INSERT INTO audit (at, workspace, tool, target, decision, reason)
                 VALUES (12, 'w', 'github_read_issue', 'octo/w#1', 'allow', 'read allowed');",
        )
        .unwrap();
    }
    if version >= 3 {
        c.execute("INSERT INTO sessions (id_hash, created_at, expires_at) VALUES ('h', 1, ?1)", [now() + 3600])
            .unwrap();
    }
    if version >= 4 {
        c.execute_batch("INSERT INTO egress_hosts (workspace, pattern, added_at) VALUES ('w', '*.pypi.org', 10);")
            .unwrap();
    }
    if version >= 5 {
        c.execute_batch(
            "UPDATE tasks SET workers = 2 WHERE id = 't-run';
             INSERT INTO tasks (id, workspace, prompt, state, session_id, delivered, turns_before, base, created_at, updated_at, deadline_at, parent, worker)
                 VALUES ('t-wk', 'w', 'part', 'completed', 'ses-2', 1, 0, 'abc', 13, 14, 99, 't-run', 1);
             INSERT INTO proposals (id, task_id, workspace, branch, base, head, commits, files, added, removed, summary, state, created_at)
                 VALUES ('p-wk', 't-wk', 'w', 'devaipod/t-wk', 'abc', 'fed', '[]', '[]', 0, 0, 'part', 'open', 14);",
        )
        .unwrap();
    }
}

/// Every released schema version, with data in it, opens with this build: the rows are read
/// back as they were, the schema is the newest, and the tables a later migration added work.
#[tokio::test]
async fn a_database_of_every_released_schema_version_is_migrated_with_its_data() {
    for version in 0..=SCHEMA_VERSION {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        fixture_database(&path, version);
        let s = Store::open(&path).unwrap_or_else(|e| panic!("schema {version}: {e}"));
        let got: i64 = s.with(|c| Ok(c.pragma_query_value(None, "user_version", |r| r.get(0))?)).await.unwrap();
        assert_eq!(got, i64::from(SCHEMA_VERSION), "schema {version} is migrated to the newest");
        if version >= 1 {
            let w = s.workspace("w").await.unwrap().expect("the workspace survives");
            assert_eq!(
                (w.source.as_str(), w.agent_password.as_str(), w.agent_head.as_deref()),
                ("/src/w", "pw", Some("abc"))
            );
            let done = s.task("t-done").await.unwrap().unwrap();
            assert_eq!(
                (done.state, done.delivered, done.summary.as_deref()),
                (TaskState::Completed, true, Some("did it"))
            );
            let run = s.task("t-run").await.unwrap().unwrap();
            assert_eq!(
                (run.state, run.turns_before, run.follows_proposal.as_deref()),
                (TaskState::Running, 1, Some("p-1"))
            );
            assert!(!run.in_delivery() && s.task("t-new").await.unwrap().unwrap().in_delivery());
            let unfinished: Vec<String> = s.unfinished_tasks().await.unwrap().into_iter().map(|t| t.id).collect();
            assert_eq!(unfinished, ["t-run", "t-new"], "schema {version}: the tasks a restart resumes");
            assert_eq!(s.events("t-done").await.unwrap().len(), 2);
            assert!(
                s.add_event("t-done", "part-1:completed", "tool", "again").await.unwrap().is_none(),
                "still unique"
            );
            let p = s.proposal("p-1").await.unwrap().unwrap();
            assert_eq!((p.state, p.commits.len(), p.files[0].path.as_str()), (ProposalState::Applied, 1, "a.txt"));
            assert!(!s.insert_proposal(proposal("p-2", "t-done")).await.unwrap(), "one proposal per task, still");
            assert!(!s.record_approval("p-1", "apply", "again", ProposalState::Applied).await.unwrap());
        }
        let repo = if version >= 2 { Some("octo/w".to_owned()) } else { None };
        assert_eq!(s.github_repo("w").await.unwrap(), repo, "schema {version}");
        assert_eq!(s.audit_log(Some("w"), 10).await.unwrap().len(), usize::from(version >= 2));
        assert_eq!(s.scopes("w").await.unwrap().len(), usize::from(version >= 2));
        assert_eq!(s.session_expiry("h").await.unwrap().is_some(), version >= 3);
        assert_eq!(s.egress_hosts("w").await.unwrap().len(), usize::from(version >= 4));
        if version >= 1 {
            let run = s.task("t-run").await.unwrap().unwrap();
            assert_eq!(run.workers, if version >= 5 { 2 } else { 0 }, "schema {version}");
            let workers: Vec<(String, Option<u32>)> =
                s.worker_tasks("t-run").await.unwrap().into_iter().map(|t| (t.id, t.worker)).collect();
            let want: Vec<(String, Option<u32>)> =
                if version >= 5 { vec![("t-wk".into(), Some(1))] } else { Vec::new() };
            assert_eq!(workers, want, "schema {version}");
            // A worker's proposal is its owner's business: not in the human's list.
            let (page, total) = s.proposals(Some("w"), None, 10, 0).await.unwrap();
            assert_eq!((page.len(), total), (1, 1), "schema {version}");
            assert!(s.proposal_for_task("t-wk").await.unwrap().is_some() == (version >= 5));
        }
        // What later migrations added works on the migrated database.
        s.insert_task(task("t-after")).await.unwrap();
        assert!(s.add_scope("w", "github:octo/w:read,push-new-branch").await.unwrap());
        s.insert_session("h2", now() + 60).await.unwrap();
        assert!(s.session_expiry("h2").await.unwrap().is_some());
        assert_eq!(
            s.add_egress_hosts("w", &["pypi.org".into(), "*.pypi.org".into()]).await.unwrap(),
            1 + usize::from(version < 4)
        );
    }
}

#[test]
fn a_database_newer_than_this_build_is_refused_and_left_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    fixture_database(&path, SCHEMA_VERSION);
    let newer = SCHEMA_VERSION + 1;
    {
        let c = rusqlite::Connection::open(&path).unwrap();
        c.execute_batch("CREATE TABLE from_the_future (x INTEGER);").unwrap();
        c.pragma_update(None, "user_version", newer).unwrap();
    }
    let before = std::fs::read(&path).unwrap();
    let err = Store::open(&path).err().expect("refused").to_string();
    assert!(
        err.contains(&format!("has schema version {newer}, newer than this devaipod {}", env!("CARGO_PKG_VERSION")))
            && err.contains(&format!("(schema version {SCHEMA_VERSION})"))
            && err.contains(&path.display().to_string()),
        "{err}"
    );
    assert_eq!(std::fs::read(&path).unwrap(), before, "the database is not touched");
}

#[tokio::test]
async fn egress_hosts_are_kept_per_workspace_and_go_with_it() {
    let s = Store::open_in_memory().unwrap();
    assert_eq!(s.add_egress_hosts("a", &["x.org".into(), "y.org:22".into(), "x.org".into()]).await.unwrap(), 2);
    s.add_egress_hosts("b", &["z.org".into()]).await.unwrap();
    assert_eq!(s.egress_hosts("a").await.unwrap(), ["x.org", "y.org:22"]);
    assert!(s.remove_egress_host("a", "x.org").await.unwrap());
    assert!(!s.remove_egress_host("a", "x.org").await.unwrap());
    s.set_egress_hosts("a", &["q.org".into()]).await.unwrap();
    assert_eq!(s.egress_hosts("a").await.unwrap(), ["q.org"]);
    s.delete_workspace("a").await.unwrap();
    assert!(s.egress_hosts("a").await.unwrap().is_empty());
    assert_eq!(s.egress_hosts("b").await.unwrap(), ["z.org"]);
}

#[tokio::test]
async fn a_set_its_candidates_their_tasks_and_checks() {
    let s = Store::open_in_memory().unwrap();
    let set = SetRecord {
        id: "s-1".into(),
        workspace: "w".into(),
        prompt: "p".into(),
        base: "b".into(),
        check: Some("make test".into()),
        state: SetState::Running,
        round: 1,
        chosen: None,
        created_at: 1,
        updated_at: 1,
    };
    s.insert_set(set.clone(), vec!["m1".into(), "m2".into()]).await.unwrap();
    assert_eq!(s.set("s-1").await.unwrap(), Some(set.clone()));
    assert_eq!(s.running_sets().await.unwrap().len(), 1);
    let cs = s.candidates("s-1").await.unwrap();
    assert_eq!(cs.iter().map(|c| (c.n, c.model.as_str())).collect::<Vec<_>>(), [(1, "m1"), (2, "m2")]);
    assert!(cs.iter().all(|c| c.task_id.is_none() && c.check.is_none()));

    // A candidate's tasks, newest first; its latest recorded; its check only for that task.
    for (id, at) in [("t-a", 5), ("t-b", 9)] {
        s.insert_task(Task { set_id: Some("s-1".into()), candidate: Some(2), created_at: at, ..task(id) })
            .await
            .unwrap();
    }
    let tasks = s.candidate_tasks("s-1", 2).await.unwrap();
    assert_eq!(tasks.iter().map(|t| t.id.as_str()).collect::<Vec<_>>(), ["t-b", "t-a"]);
    s.set_candidate_feedback("s-1", 2, Some("more")).await.unwrap();
    s.set_candidate_task("s-1", 2, "t-b").await.unwrap();
    let check = CheckResult { exit_code: Some(2), duration_ms: 40, output: "boom".into(), error: None };
    assert!(!s.record_check("s-1", 2, "t-a", &check).await.unwrap(), "not its latest task");
    assert!(s.record_check("s-1", 2, "t-b", &check).await.unwrap());
    let two = s.candidates("s-1").await.unwrap().remove(1);
    assert_eq!((two.task_id.as_deref(), two.feedback, two.check), (Some("t-b"), None, Some(check)));
    s.set_candidate_error("s-1", 1, "no container").await.unwrap();
    assert_eq!(s.candidates("s-1").await.unwrap()[0].error.as_deref(), Some("no container"));

    // The set moves only from where the caller saw it.
    assert!(!s.move_set("s-1", &[SetState::Complete], SetState::Chosen, Some(1), None).await.unwrap());
    assert!(s.move_set("s-1", &[SetState::Running], SetState::Complete, None, None).await.unwrap());
    assert!(s.move_set("s-1", &[SetState::Complete], SetState::Running, None, Some(2)).await.unwrap());
    assert!(
        s.move_set("s-1", &[SetState::Running, SetState::Complete], SetState::Chosen, Some(2), None).await.unwrap()
    );
    let now = s.set("s-1").await.unwrap().unwrap();
    assert_eq!((now.state, now.round, now.chosen), (SetState::Chosen, 2, Some(2)));
    assert!(!s.move_set("nope", &[SetState::Running], SetState::Complete, None, None).await.unwrap());
    assert_eq!(s.sets(Some("w")).await.unwrap().len(), 1);
    assert!(s.sets(Some("other")).await.unwrap().is_empty());
    // A candidate's tasks are found by the reaper's question.
    assert!(s.any_worker_tasks().await.unwrap());
}
