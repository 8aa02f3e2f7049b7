//! The compose part of a plan: the project's services (but the workspace's own) as
//! containers of the pod, their images, volumes, ports and host entries, their start
//! order with what each waits for; and what the workspace's `service` brings to the
//! workspace container. Pure, like the rest of `plan`.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Serialize;

use super::{BuildPlan, ContainerNetwork, ContainerPlan, ImagePlan, MountPlan, PlanError, PlanRequest, VolumePlan};
use crate::devcontainer::compose::{self, Condition, Healthcheck, Project, Service, ServiceVolume};
use crate::devcontainer::{Loaded, Mount, MountKind};
use crate::pods::naming::{self, Role, WorkspaceName};

/// Where the services run and in which order they start.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ComposePlan {
    /// The compose files, in merge order.
    pub files: Vec<std::path::PathBuf>,
    /// The workspace's `service`.
    pub service: String,
    /// The other services that run, in start order.
    pub services: Vec<ServicePlan>,
    /// Every container to start, in order (the workspace container among them, where its
    /// `depends_on` puts it); the agent starts after all of them.
    pub start: Vec<Start>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ServicePlan {
    pub service: String,
    pub image: ImagePlan,
    pub container: ContainerPlan,
    pub healthcheck: Option<Healthcheck>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Start {
    pub container: String,
    /// What must hold before it starts.
    pub waits: Vec<Wait>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Wait {
    pub service: String,
    pub container: String,
    pub condition: Condition,
    /// The dependency's health check (for `service_healthy`).
    pub healthcheck: Option<Healthcheck>,
}

/// What the compose project gives the plan.
pub(super) struct Parts<'p> {
    pub image: ImagePlan,
    /// The workspace's service.
    pub service: &'p Service,
    /// Where the repository appears in the workspace's service (its bind of the repository).
    pub repository_target: Option<String>,
    /// The workspace service's volumes as devcontainer mounts (named ones are ours).
    pub mounts: Vec<Mount>,
    pub volumes: Vec<VolumePlan>,
    pub ports: Vec<u16>,
    pub add_hosts: Vec<String>,
    pub plan: ComposePlan,
    pub warnings: Vec<String>,
}

/// The compose part of a plan, when devcontainer.json names `dockerComposeFile` (and
/// `--image` does not replace the project, which a warning says).
pub(super) fn of<'p>(
    dc: Option<&'p Loaded>,
    req: &PlanRequest,
    invalid: &dyn Fn(String) -> PlanError,
    warnings: &mut Vec<String>,
) -> Result<Option<Parts<'p>>, PlanError> {
    let Some(l) = dc.filter(|l| l.config.docker_compose_file.is_some()) else { return Ok(None) };
    if req.image_override.is_some() {
        warnings.push("dockerComposeFile is ignored: --image gives the image, and no service runs".into());
        return Ok(None);
    }
    let project = l.compose.as_ref().ok_or_else(|| {
        invalid("dockerComposeFile: the compose files were not read (devcontainer::load_compose)".into())
    })?;
    let service = l.config.service.as_deref().ok_or_else(|| invalid("dockerComposeFile needs `service`".into()))?;
    let run_services = l.config.run_services.as_deref();
    let parts = parts(project, service, run_services, &req.instance, &req.name, &req.checkout_dir, invalid)?;
    warnings.extend(parts.warnings.iter().cloned());
    Ok(Some(parts))
}

impl Parts<'_> {
    /// What the pod gets: every service's name as a hosts entry of its own address, the
    /// named volumes, the label naming the images built for services (`delete` removes
    /// them); the compose plan.
    pub(super) fn finish(
        self,
        add_hosts: &mut Vec<String>,
        volumes: &mut Vec<VolumePlan>,
        pod_labels: &mut BTreeMap<String, String>,
    ) -> ComposePlan {
        add_hosts.extend(self.add_hosts);
        volumes.extend(self.volumes);
        let built: Vec<&str> = self
            .plan
            .services
            .iter()
            .filter_map(|s| match &s.image {
                ImagePlan::Build(b) => Some(b.tag.as_str()),
                ImagePlan::Existing { .. } => None,
            })
            .collect();
        if !built.is_empty() {
            pod_labels.insert(naming::LABEL_SERVICE_IMAGES.into(), built.join(","));
        }
        self.plan
    }
}

/// The image tag of a service `up` builds: lowercase, other characters as `-`.
pub fn service_build_tag(instance: &str, name: &WorkspaceName, service: &str) -> String {
    let svc: String =
        service.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '-' }).collect();
    format!("localhost/devaipod-build/{instance}-{name}_{}:latest", svc.trim_matches('-'))
}

fn image_of(s: &Service, instance: &str, name: &WorkspaceName) -> ImagePlan {
    match (&s.build, &s.image) {
        (Some(b), _) => ImagePlan::Build(BuildPlan {
            context_dir: b.context.clone(),
            dockerfile: b.dockerfile.clone(),
            args: b.args.clone(),
            target: b.target.clone(),
            // `image` beside `build` names the result in compose; here the tag is ours, so
            // that `delete` removes it and instances never share it.
            tag: service_build_tag(instance, name, &s.name),
        }),
        (None, Some(reference)) => ImagePlan::Existing { reference: reference.clone() },
        (None, None) => ImagePlan::Existing { reference: String::new() },
    }
}

pub(super) fn parts<'p>(
    project: &'p Project,
    service: &str,
    run_services: Option<&[String]>,
    instance: &str,
    name: &WorkspaceName,
    checkout: &Path,
    invalid: &dyn Fn(String) -> PlanError,
) -> Result<Parts<'p>, PlanError> {
    let order = compose::start_order(project, service, run_services).map_err(|e| invalid(e.to_string()))?;
    let ws = &project.services[service];
    let mut warnings = project.warnings.clone();
    let labels = || naming::labels(instance, name, None);

    // Named volumes of the project that a running service mounts: ours, labelled, so
    // that `delete` removes them (external ones are used by their name and never removed).
    let volume_name = |v: &str| match project.volumes.get(v) {
        Some(decl) if decl.external => decl.name.clone().unwrap_or_else(|| v.to_owned()),
        _ => name.compose_volume(v),
    };
    let mut volumes: Vec<VolumePlan> = Vec::new();
    let mut ports: Vec<u16> = Vec::new();
    let mut port_owner: BTreeMap<u16, String> = BTreeMap::new();
    let mut add_hosts: Vec<String> = Vec::new();
    for svc in &order {
        let s = &project.services[svc];
        // Every service is reached by its name at the pod's own address.
        add_hosts.push(format!("{svc}:127.0.0.1"));
        for h in &s.extra_hosts {
            if !add_hosts.contains(h) {
                add_hosts.push(h.clone());
            }
        }
        for p in &s.ports {
            match port_owner.get(&p.container) {
                Some(other) if other != svc => {
                    return Err(PlanError::Compose(p.at.error(
                        format!("services.{svc}.ports"),
                        format!(
                            "port {} is also published by service `{other}`: the services of a pod share one network, so two cannot listen on one port",
                            p.container
                        ),
                    )));
                }
                Some(_) => {}
                None => {
                    port_owner.insert(p.container, svc.clone());
                    ports.push(p.container);
                }
            }
        }
        for v in &s.volumes {
            if let ServiceVolume::Named { name: vol, .. } = v
                && !project.volumes.get(vol).is_some_and(|d| d.external)
            {
                let n = name.compose_volume(vol);
                if !volumes.iter().any(|p| p.name == n) {
                    volumes.push(VolumePlan { name: n, labels: labels() });
                }
            }
        }
    }

    // The workspace's service: its volumes become the workspace container's mounts.
    let mut mounts = Vec::new();
    let mut repository_target = None;
    for v in &ws.volumes {
        mounts.push(match v {
            ServiceVolume::Repository { target } => {
                repository_target = Some(target.clone());
                continue;
            }
            ServiceVolume::Named { name: vol, target, readonly } => Mount {
                kind: MountKind::Volume,
                source: Some(volume_name(vol)),
                target: target.clone(),
                readonly: *readonly,
            },
            ServiceVolume::Anonymous { target } => {
                Mount { kind: MountKind::Volume, source: None, target: target.clone(), readonly: false }
            }
            ServiceVolume::Bind { source, target, readonly } => Mount {
                kind: MountKind::Bind,
                source: Some(source.to_string_lossy().into_owned()),
                target: target.clone(),
                readonly: *readonly,
            },
            ServiceVolume::Tmpfs { target } => {
                Mount { kind: MountKind::Tmpfs, source: None, target: target.clone(), readonly: false }
            }
        });
    }
    for t in &ws.tmpfs {
        mounts.push(Mount { kind: MountKind::Tmpfs, source: None, target: t.clone(), readonly: false });
    }
    let keeps_alive = |argv: &[String]| argv.first().is_some_and(|c| c == "sleep" || c.ends_with("/sleep"));
    if ws.entrypoint.is_some() || ws.command.as_deref().is_some_and(|c| !keeps_alive(c)) {
        warnings.push(format!(
            "services.{service}: its command and entrypoint do not run: the workspace container runs devaipod's idle process (run a server with postStartCommand)"
        ));
    }

    // The other services, in start order; the workspace container takes its place in it.
    let mut services = Vec::new();
    let mut start = Vec::new();
    for svc in &order {
        let s = &project.services[svc];
        let container = if svc == service { name.container(Role::Workspace) } else { name.service_container(svc) };
        let mut waits = Vec::new();
        for (dep, d) in &s.depends_on {
            let Some(target) = project.services.get(dep).filter(|_| order.contains(dep)) else { continue };
            let mut condition = d.condition;
            if condition == Condition::ServiceHealthy && target.healthcheck.is_none() {
                warnings.push(format!(
                    "services.{svc}.depends_on.{dep}: service_healthy, but `{dep}` has no healthcheck in the compose file: waiting for it to start only"
                ));
                condition = Condition::ServiceStarted;
            }
            let dep_container =
                if dep == service { name.container(Role::Workspace) } else { name.service_container(dep) };
            waits.push(Wait {
                service: dep.clone(),
                container: dep_container,
                condition,
                healthcheck: target.healthcheck.clone(),
            });
        }
        start.push(Start { container: container.clone(), waits });
        if svc == service {
            continue;
        }
        let image = image_of(s, instance, name);
        let mut container = service_container(s, container, instance, name, checkout, &volume_name);
        container.image = image.reference().to_owned();
        services.push(ServicePlan { service: svc.clone(), image, container, healthcheck: s.healthcheck.clone() });
    }
    // The workspace's image keeps the tag a devcontainer.json `build` gets.
    let mut image = image_of(ws, instance, name);
    if let ImagePlan::Build(b) = &mut image {
        b.tag = super::build_tag(instance, name);
    }
    Ok(Parts {
        image,
        service: ws,
        repository_target,
        mounts,
        volumes,
        ports,
        add_hosts,
        plan: ComposePlan { files: project.files.clone(), service: service.to_owned(), services, start },
        warnings,
    })
}

/// A service's container: its image's ENTRYPOINT and CMD unless the service overrides
/// them, its environment, volumes, capabilities; the pod's network (the agent's walls keep
/// the agent out of it); an init, as every container of a pod has.
fn service_container(
    s: &Service,
    container: String,
    instance: &str,
    name: &WorkspaceName,
    checkout: &Path,
    volume_name: &dyn Fn(&str) -> String,
) -> ContainerPlan {
    let (command, image_entrypoint) = match (&s.entrypoint, &s.command) {
        (Some(e), c) => (e.iter().chain(c.iter().flatten()).cloned().collect(), false),
        (None, Some(c)) => (c.clone(), true),
        (None, None) => (Vec::new(), true),
    };
    let mut mounts = Vec::new();
    for (i, v) in s.volumes.iter().enumerate() {
        mounts.push(match v {
            ServiceVolume::Named { name: vol, target, readonly } => {
                MountPlan::Volume { name: volume_name(vol), target: target.clone(), readonly: *readonly }
            }
            ServiceVolume::Anonymous { target } => {
                MountPlan::Volume { name: name.service_volume(&s.name, i), target: target.clone(), readonly: false }
            }
            // The repository's checkout on the host (where the bind of its folder points).
            ServiceVolume::Repository { target } => {
                MountPlan::Bind { source: checkout.to_owned(), target: target.clone(), readonly: false }
            }
            ServiceVolume::Bind { source, target, readonly } => {
                MountPlan::Bind { source: source.clone(), target: target.clone(), readonly: *readonly }
            }
            ServiceVolume::Tmpfs { target } => MountPlan::Tmpfs { target: target.clone() },
        });
    }
    mounts.extend(s.tmpfs.iter().map(|t| MountPlan::Tmpfs { target: t.clone() }));
    let mut labels = s.labels.clone();
    labels.extend(naming::labels(instance, name, Some(Role::Service)));
    labels.insert(naming::LABEL_SERVICE.into(), s.name.clone());
    ContainerPlan {
        name: container,
        role: Role::Service,
        image: String::new(),
        command,
        image_entrypoint,
        user: s.user.clone(),
        workdir: s.working_dir.clone().unwrap_or_default(),
        env: s.environment.clone(),
        trusted_env: BTreeMap::new(),
        secret_env: BTreeMap::new(),
        mounts,
        cap_drop: s.cap_drop.clone(),
        cap_add: s.cap_add.clone(),
        no_new_privileges: false,
        privileged: s.privileged.unwrap_or(false),
        security_opt: s.security_opt.clone(),
        devices: Vec::new(),
        shm_size: None,
        ulimits: Vec::new(),
        sysctls: BTreeMap::new(),
        init: true,
        network: ContainerNetwork::Pod,
        labels,
    }
}
