//! The service layer: workspaces (and, later, tasks and proposals). The only place with
//! policy; adapters (`cli`, later `mcp` and `web`) call it and print what it returns.

mod error;
mod lifecycle;
pub mod source;
mod workspaces;

pub use error::CoreError;
pub use workspaces::{
    ExecTarget, Progress, UpOutcome, UpRequest, WorkspaceStatus, Workspaces, opencode_dir,
};
