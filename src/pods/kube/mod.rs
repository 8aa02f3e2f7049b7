//! Kubernetes: a workspace's plan rendered as Kubernetes objects (`devaipod kube`).
//!
//! `render` is pure: the plan the daemon kept at `up` ([`KubePlan`]) in, the documents out.
//! `yaml` prints them. Nothing here talks to a cluster.

pub mod engine;
pub mod render;
pub mod yaml;

pub use engine::Kube;
pub use render::{KubePlan, Manifest, RenderOptions, render};

#[cfg(test)]
mod tests;
