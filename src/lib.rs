//! devaipod runs AI coding agents in sandboxed podman pods, one pod per workspace.
//!
//! See `docs/ARCHITECTURE.md` for the map of modules and their invariants.

pub mod agent;
pub mod cli;
pub mod client;
pub mod config;
pub mod core;
pub mod daemon;
pub mod devcontainer;
pub mod egress;
pub mod encode;
pub mod gator;
pub mod git;
pub mod github;
pub mod mcp;
pub mod pods;
pub mod ssh;
pub mod store;
pub mod web;
