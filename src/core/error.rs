use crate::agent::AgentError;
use crate::config::ConfigError;
use crate::devcontainer::DevContainerError;
use crate::git::GitError;
use crate::pods::EngineError;
use crate::pods::naming::InvalidName;
use crate::pods::plan::PlanError;
use crate::store::StoreError;

use super::source::SourceError;

#[derive(Debug, thiserror::Error)]
pub enum CoreError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error(transparent)]
    DevContainer(#[from] DevContainerError),
    #[error(transparent)]
    Plan(#[from] PlanError),
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error(transparent)]
    InvalidName(#[from] InvalidName),
    #[error("workspace `{0}` already exists (pod devaipod-{0}): choose another --name, or `devaipod delete {0}`")]
    NameTaken(String),
    #[error("no workspace named `{0}` (see `devaipod list`)")]
    NotFound(String),
    #[error(
        "image {image} does not exist locally and could not be pulled ({reason}); build it, pass another --image, or run scripts/setup.sh for the default image"
    )]
    ImageMissing { image: String, reason: String },
    #[error(
        "podman secret `{secret}` (for {env} in [trusted] secrets) does not exist: create it with `printf %s VALUE | podman secret create {secret} -`"
    )]
    SecretMissing { secret: String, env: String },
    #[error("opencode is not installed at {0}: run scripts/setup.sh (or set DEVAIPOD_OPENCODE_DIR)")]
    OpencodeMissing(String),
    #[error("{phase} failed{}: {command}", exit_text(*.code))]
    Lifecycle { phase: &'static str, command: String, code: Option<i64> },
    #[error(
        "workspace `{name}`: its {role} container is not running (pod status {status}); try `devaipod start {name}`"
    )]
    NotRunning { name: String, role: &'static str, status: String },
    #[error("{0}")]
    Io(String),
    #[error(
        "the task's work is larger than [agent] max-proposal-mb ({limit_mb} MiB of new content): remove large or generated files from the agent's clone (or add them to .gitignore), or raise it in devaipod.toml"
    )]
    ProposalTooLarge { limit_mb: u64 },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Git(#[from] GitError),
    #[error(transparent)]
    Agent(#[from] AgentError),
    #[error(
        "volume {volume} of an earlier workspace `{name}` is still here (deleted with --keep-volumes?): remove it with `podman volume rm {volume}`, or choose another --name"
    )]
    VolumesLeft { name: String, volume: String },
    #[error(
        "the agent of `{name}` did not answer within {secs} s; see `devaipod logs {name} --agent` (and [agent] ready-timeout-secs)"
    )]
    AgentNotReady { name: String, secs: u64 },
    #[error(
        "the pod of workspace `{0}` is gone (removed outside devaipod): remove the rest with `devaipod delete {0}`, then `devaipod up` again"
    )]
    PodGone(String),
    #[error(
        "workspace `{workspace}` is busy with task {task}: wait for it (`devaipod task {task}`) or cancel it (`devaipod cancel {task}`)"
    )]
    Busy { workspace: String, task: String },
    #[error("no task `{0}` (see `devaipod tasks`)")]
    TaskNotFound(String),
    #[error("no proposal set `{0}` (see `devaipod sets`)")]
    SetNotFound(String),
    #[error("no proposal `{0}` (see `devaipod proposals`)")]
    ProposalNotFound(String),
    /// The request cannot be done as given: the message says what to change.
    #[error("{0}")]
    Invalid(String),
    /// The request conflicts with the current state (already ended, moved, taken).
    #[error("{0}")]
    Conflict(String),
    /// GitHub (an upstream service) failed or refused.
    #[error("{0}")]
    Github(String),
    #[error("task {id} already ended ({state})")]
    TaskEnded { id: String, state: String },

    #[error("proposal {id} was already {state}{}", .hint)]
    ProposalClosed { id: String, state: String, hint: String },
}

fn exit_text(code: Option<i64>) -> String {
    code.map(|c| format!(" (exit code {c})")).unwrap_or_default()
}
