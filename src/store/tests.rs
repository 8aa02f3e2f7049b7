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
