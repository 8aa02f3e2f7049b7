//! Warm pool members' plans (**pure**). A member is a pod planned like a workspace's with
//! no repository yet: its agent container, hardened and walled as any, runs opencode in
//! [`POOL_FOLDER`], where its clone volume is mounted (the repository arrives later in
//! `<POOL_FOLDER>/<folder name>`, the very path a cold workspace's clone has). Its
//! workspace container is made when a workspace takes it. A workspace takes a member when
//! its own plan, made with the member's key, has the same [`shape`].

use serde_json::{Value, json};

use super::{ContainerPlan, ImagePlan, MountPlan, PodPlan};
use crate::pods::naming::{self, WorkspaceName};

/// Where a member's agent clone volume is mounted and its agent starts.
pub const POOL_FOLDER: &str = "/workspaces";

/// Why a workspace's plan cannot take any pool member (it is made cold), or `None`.
pub fn unfit(plan: &PodPlan, pool_images: &[&str]) -> Option<String> {
    let image = match &plan.image {
        ImagePlan::Existing { reference } => reference,
        ImagePlan::Build(_) => return Some("its image is built from a Dockerfile".into()),
    };
    if plan.compose.is_some() {
        return Some("it is a docker-compose project".into());
    }
    if !plan.features.is_empty() {
        return Some("it installs devcontainer features".into());
    }
    if !pool_images.contains(&image.as_str()) {
        return Some(format!("no pool is kept for image {image} ([pool] images)"));
    }
    if folder_name(&plan.workspace_folder).is_none() {
        return Some(format!("its workspace folder {} is not directly under {POOL_FOLDER}", plan.workspace_folder));
    }
    if plan.pod.hostname != plan.name.as_str() {
        return Some("it sets the pod's hostname".into());
    }
    None
}

/// `/workspaces/<name>` → `<name>`: the folder a member's clone volume holds the repository in.
pub fn folder_name(workspace_folder: &str) -> Option<&str> {
    let rest = workspace_folder.strip_prefix(POOL_FOLDER)?.strip_prefix('/')?;
    (!rest.is_empty() && !rest.contains('/') && rest != "." && rest != "..").then_some(rest)
}

/// The agent container as a member runs it: its clone volume at [`POOL_FOLDER`], started there.
pub fn member_agent(agent: &ContainerPlan) -> ContainerPlan {
    let mut a = agent.clone();
    a.workdir = POOL_FOLDER.to_owned();
    let clone = naming_agent_volume(agent);
    for m in &mut a.mounts {
        if let MountPlan::Volume { name, target, .. } = m
            && Some(name.as_str()) == clone.as_deref()
        {
            *target = POOL_FOLDER.to_owned();
        }
    }
    a
}

/// The agent's clone volume: the one mounted at its working directory.
fn naming_agent_volume(agent: &ContainerPlan) -> Option<String> {
    agent.mounts.iter().find_map(|m| match m {
        MountPlan::Volume { name, target, readonly: false } if *target == agent.workdir => Some(name.clone()),
        _ => None,
    })
}

/// What a member and a workspace's plan (made with the member's key) must share for the
/// workspace to take the member: the image, the agent container as the member runs it, and
/// the pod's published ports and hosts. Everything else (the workspace container, the
/// lifecycle commands) is made when the member is taken.
pub fn shape(plan: &PodPlan) -> Value {
    json!({
        "image": plan.image.reference(),
        "agent": member_agent(&plan.agent),
        "ports": plan.pod.ports,
        "add_hosts": plan.pod.add_hosts,
    })
}

/// The parts of two shapes that differ, named for a message (`agent.env`, `ports`, …).
pub fn differences(a: &Value, b: &Value) -> Vec<String> {
    let mut out = Vec::new();
    for key in ["image", "agent", "ports", "add_hosts"] {
        if a[key] == b[key] {
            continue;
        }
        match (a[key].as_object(), b[key].as_object()) {
            (Some(x), Some(y)) => {
                let mut fields: Vec<&String> = x.keys().chain(y.keys()).filter(|k| x.get(*k) != y.get(*k)).collect();
                fields.sort();
                fields.dedup();
                out.extend(fields.into_iter().map(|f| format!("{key}.{f}")));
            }
            _ => out.push(key.to_owned()),
        }
    }
    out
}

/// A member's plan from a workspace-like plan made for the member's key without a
/// repository: no workspace-only secret (the LLM key is the taker's), the member label on
/// the pod, no source or folder (a taker's are kept by devaipod's store).
pub fn member_plan(mut plan: PodPlan) -> PodPlan {
    let image = plan.image.reference().to_owned();
    let llm_key = super::llm_key_secret(&plan.name);
    plan.secrets.retain(|s| s.name != llm_key);
    plan.pod.labels.remove(naming::LABEL_SOURCE);
    plan.pod.labels.remove(naming::LABEL_FOLDER);
    plan.pod.labels.insert(naming::LABEL_POOL.to_owned(), image);
    plan.agent = member_agent(&plan.agent);
    plan
}

/// The labels a workspace's own pod would carry, kept for a workspace in a member's pod
/// (its source, folder, user, …), its workspace label its name.
pub fn taker_labels(plan: &PodPlan, name: &WorkspaceName) -> std::collections::BTreeMap<String, String> {
    let mut labels = plan.pod.labels.clone();
    labels.insert(naming::LABEL_WORKSPACE.to_owned(), name.as_str().to_owned());
    labels.remove(naming::LABEL_POOL);
    labels
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::pods::plan::{PlanRequest, Redacted, SandboxMounts, plan};

    fn request(name: WorkspaceName, checkout: &str) -> PlanRequest {
        PlanRequest {
            name,
            instance: "run-1".into(),
            source: "/src/hello".into(),
            image_override: None,
            host_env: Default::default(),
            opencode_dir: "/opt/opencode".into(),
            checkout_dir: checkout.into(),
            agent_password: Redacted("pw".into()),
            sandbox: SandboxMounts {
                socket_dir: "/run/d/gator/pool.0123abcd".into(),
                api_dir: "/run/d/agent/pool.0123abcd".into(),
                bridge: "/data/bin/devaipod-x".into(),
                seccomp: Some("/data/seccomp-agent.json".into()),
            },
        }
    }

    const KEY: &str = "pool.0123abcd";

    #[test]
    fn a_member_runs_the_agent_of_any_workspace_of_its_image_in_the_pool_folder() {
        let config = Config::default();
        let member =
            member_plan(plan(&config, None, &request(WorkspaceName::pool_member(KEY).unwrap(), "/x/pool")).unwrap());
        assert_eq!(member.agent.workdir, POOL_FOLDER);
        assert!(member.agent.mounts.iter().any(|m| matches!(m,
            MountPlan::Volume { name, target, readonly: false } if name == "devaipod-pool.0123abcd-agent-workspace" && target == POOL_FOLDER)));
        assert_eq!(member.pod.labels[naming::LABEL_POOL], config.default_image);
        assert!(!member.pod.labels.contains_key(naming::LABEL_FOLDER));
        // The hardening and walls are the planner's own, untouched.
        assert_eq!(
            (member.agent.cap_drop.as_slice(), member.agent.no_new_privileges),
            (["ALL".to_owned()].as_slice(), true)
        );

        // A repository without devcontainer.json, planned with the member's key, fits it.
        let name = WorkspaceName::new("hello").unwrap().in_pool_member(Some(KEY.into()));
        let taker = plan(&config, None, &request(name.clone(), "/src/hello")).unwrap();
        assert_eq!(unfit(&taker, &[config.default_image.as_str()]), None);
        assert_eq!(shape(&taker), shape(&member));
        assert_eq!(folder_name(&taker.workspace_folder), Some("hello"));
        let labels = taker_labels(&taker, &name);
        assert_eq!(labels[naming::LABEL_WORKSPACE], "hello");
        assert_eq!(labels[naming::LABEL_FOLDER], "/workspaces/hello");

        // Another image, or other agent settings, do not.
        assert!(unfit(&taker, &["localhost/other:1"]).unwrap().contains("no pool is kept for image"));
        let mut other = config.clone();
        other.env.vars.insert(crate::config::EnvName::try_from("EDITOR".to_owned()).unwrap(), "vi".into());
        let differs = plan(&other, None, &request(name, "/src/hello")).unwrap();
        assert_eq!(differences(&shape(&differs), &shape(&member)), ["agent.env"]);
    }

    #[test]
    fn only_folders_directly_under_the_pool_folder_fit() {
        assert_eq!(folder_name("/workspaces/x"), Some("x"));
        for bad in ["/workspaces", "/workspaces/", "/workspaces/a/b", "/app", "/workspacesx/a", "/workspaces/.."] {
            assert_eq!(folder_name(bad), None, "{bad}");
        }
    }
}
