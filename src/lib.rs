//! devaipod runs AI coding agents in sandboxed podman pods, one pod per workspace.
//!
//! See `docs/ARCHITECTURE.md` for the map of modules and their invariants.

pub mod cli;
pub mod config;
pub mod core;
pub mod devcontainer;
pub mod pods;
