//! Everything that talks to podman, and the pure plan of what a workspace's pod is.
//!
//! `pods` knows nothing of MCP, HTTP, SSH or SQL; nothing outside `pods` talks to podman.

pub mod cdi;
pub mod engine;
pub mod image;
pub mod interactive;
pub mod kube;
pub mod libpod;
pub mod naming;
pub mod plan;
pub mod podman;
pub mod seccomp;
pub mod socket;
pub mod spec;
pub mod wire;

pub use engine::{Engine, EngineError};
pub use podman::Podman;
