//! Approve (only the reviewed head, once per action, serialized) and reject (feedback to the
//! same session; the proposal stays open while the agent cannot take it).

use super::{last_session, with_proposal};
use crate::core::testing::{container, git, pod, wait_end};
use crate::core::{ApproveAction, CoreError};
use crate::pods::Engine;
use crate::pods::naming::Role;
use crate::store::{ProposalState, TaskState};

/// The state and hint of a `ProposalClosed` refusal (which `web/error.rs` answers with 409).
fn closed(r: Result<impl std::fmt::Debug, CoreError>) -> (String, String) {
    match r {
        Err(CoreError::ProposalClosed { state, hint, .. }) => (state, hint),
        other => panic!("expected ProposalClosed, got {other:?}"),
    }
}

#[tokio::test]
async fn approve_ships_the_reviewed_head_once_per_action() {
    let (w, p) = with_proposal().await;
    let branch = format!("refs/heads/{}", p.branch);
    let human = w.workspace_clone();

    // A branch moved since the review ships nothing.
    git(&w.bare_repo(), &["update-ref", &branch, &p.base]);
    let e = w.core.approve(&p.id, ApproveAction::Apply).await.unwrap_err();
    assert!(matches!(&e, CoreError::Conflict(m) if m.contains("has moved since proposal")), "{e}");
    assert!(e.to_string().ends_with("nothing was shipped"), "{e}");
    assert_eq!(git(&human, &["branch", "--list", &p.branch]), "", "nothing reached the workspace");
    let detail = w.core.proposal_detail(&p.id).await.unwrap();
    assert_eq!((detail.proposal.state, detail.approvals.len()), (ProposalState::Open, 0));

    // Back at the reviewed head: apply, once.
    git(&w.bare_repo(), &["update-ref", &branch, &p.head]);
    let done = w.core.approve(&p.id, ApproveAction::Apply).await.unwrap();
    assert_eq!(done.proposal.state, ProposalState::Applied);
    assert_eq!(
        (done.approvals[0].action.as_str(), done.approvals[0].detail.as_str()),
        ("apply", format!("branch {} is in the workspace repository at /workspaces/r", p.branch).as_str())
    );
    assert_eq!(git(&human, &["rev-parse", &branch]), p.head);
    let tmp = w.engine.host_path(&container(Role::Workspace), "/tmp").unwrap();
    assert_eq!(std::fs::read_dir(tmp).unwrap().count(), 0, "the bundle is removed");
    assert_eq!(closed(w.core.approve(&p.id, ApproveAction::Apply).await), ("approved (apply)".into(), String::new()));

    // Two pushes at once: one pushes, the other is refused.
    let (a, b) = tokio::join!(w.core.approve(&p.id, ApproveAction::Push), w.core.approve(&p.id, ApproveAction::Push));
    let (ok, refused) = match (a, b) {
        (Ok(ok), refused) | (refused, Ok(ok)) => (ok, refused),
        (a, b) => panic!("neither push went through: {a:?}, {b:?}"),
    };
    assert_eq!(ok.proposal.state, ProposalState::Pushed);
    assert_eq!(closed(refused), ("approved (push)".into(), "; nothing was pushed again".into()));
    // The source (a local repository) has the reviewed head.
    assert_eq!(git(&w.source, &["rev-parse", &branch]), p.head);
    let actions: Vec<String> =
        w.core.proposal_detail(&p.id).await.unwrap().approvals.into_iter().map(|a| a.action).collect();
    assert_eq!(actions, ["apply", "push"]);

    assert_eq!(closed(w.core.reject(&p.id, None).await), ("pushed".into(), ": it cannot be rejected".into()));
}

#[tokio::test]
async fn reject_with_feedback_continues_in_the_same_session() {
    let (w, p) = with_proposal().await;
    let session = last_session(&w.agent);

    // While the agent cannot take the feedback, the proposal stays open.
    w.engine.stop_container(&container(Role::Agent));
    let e = w.core.reject(&p.id, Some("also add b.txt")).await.unwrap_err();
    assert!(matches!(e, CoreError::NotRunning { role: "agent", .. }), "{e}");
    assert_eq!(w.core.proposal(&p.id).await.unwrap().state, ProposalState::Open, "the feedback is not lost");
    assert_eq!((w.core.store.tasks(None).await.unwrap().len(), w.agent.prompts().len()), (1, 1));

    w.core.engine.start_pod(&pod()).await.unwrap();
    w.agent.script(crate::core::testing::Turn::complete("added b.txt too").writes("b.txt", "b\n"));
    let rejected = w.core.reject(&p.id, Some("  also add b.txt ")).await.unwrap();
    assert_eq!(rejected.proposal.state, ProposalState::Rejected);
    let follow_up = rejected.follow_up_task.expect("a follow-up task");
    assert_eq!(follow_up.follows_proposal.as_deref(), Some(p.id.as_str()));
    assert_eq!((follow_up.session_id.as_deref(), follow_up.turns_before), (Some(session.as_str()), 1));

    let done = wait_end(&w.core, &follow_up.id).await;
    assert_eq!(done.state, TaskState::Completed);
    assert_eq!(w.agent.prompts()[1], (session.clone(), "also add b.txt".to_owned()), "the same session");
    assert_eq!(w.agent.sessions(), [session], "no new session");
    // The follow-up's proposal ships all the branch adds to the source.
    let next = w.core.store.proposal_for_task(&follow_up.id).await.unwrap().expect("a proposal");
    let files: Vec<&str> = next.files.iter().map(|f| f.path.as_str()).collect();
    assert_eq!((files, next.commits.len()), (vec!["a.txt", "b.txt"], 2));

    assert_eq!(
        closed(w.core.approve(&p.id, ApproveAction::Apply).await),
        ("rejected".into(), ": it cannot be approved".into())
    );
    assert_eq!(closed(w.core.reject(&p.id, Some("again")).await).0, "rejected");

    // Without feedback, rejecting needs no agent and starts nothing.
    let rejected = w.core.reject(&next.id, None).await.unwrap();
    assert_eq!((rejected.proposal.state, rejected.follow_up_task), (ProposalState::Rejected, None));
    assert_eq!(w.agent.prompts().len(), 2);
}
