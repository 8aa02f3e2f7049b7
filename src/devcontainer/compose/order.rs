//! Which services of a project run, and in which order: `runServices` (default: every
//! service without `profiles`), always the workspace's `service`, and every service one of
//! them `depends_on`; started dependencies first.

use std::collections::{BTreeMap, BTreeSet};

use super::{ComposeError, Project};

/// Why no start order exists, and where to fix it.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum OrderError {
    #[error("`{0}` is not a service of the compose project (it has: {1})")]
    NoSuchService(String, String),
    #[error("`{0}` is not a service of the compose project (it has: {1})")]
    NoSuchRunService(String, String),
    #[error(transparent)]
    Compose(#[from] ComposeError),
}

/// The services to start, each after the services it depends on (ties by name).
pub fn start_order(
    project: &Project,
    service: &str,
    run_services: Option<&[String]>,
) -> Result<Vec<String>, OrderError> {
    let names = || project.services.keys().cloned().collect::<Vec<_>>().join(", ");
    if !project.services.contains_key(service) {
        return Err(OrderError::NoSuchService(service.to_owned(), names()));
    }
    let mut wanted: Vec<String> = match run_services {
        Some(list) => {
            for s in list {
                if !project.services.contains_key(s) {
                    return Err(OrderError::NoSuchRunService(s.clone(), names()));
                }
            }
            list.to_vec()
        }
        None => project.services.values().filter(|s| s.profiles.is_empty()).map(|s| s.name.clone()).collect(),
    };
    wanted.push(service.to_owned());
    // Close over depends_on.
    let mut selected = BTreeSet::new();
    while let Some(name) = wanted.pop() {
        if !selected.insert(name.clone()) {
            continue;
        }
        let s = &project.services[&name];
        for (dep, d) in &s.depends_on {
            if project.services.contains_key(dep) {
                wanted.push(dep.clone());
            } else if d.required {
                return Err(d
                    .at
                    .error(
                        format!("services.{name}.depends_on"),
                        format!("`{dep}` is not a service of the project (it has: {})", names()),
                    )
                    .into());
            }
        }
    }
    // Kahn's algorithm over the selected services.
    let mut pending: BTreeMap<&str, BTreeSet<&str>> = selected
        .iter()
        .map(|n| {
            let deps =
                project.services[n].depends_on.keys().filter(|d| selected.contains(*d)).map(String::as_str).collect();
            (n.as_str(), deps)
        })
        .collect();
    let mut order = Vec::new();
    while !pending.is_empty() {
        let ready: Vec<&str> = pending.iter().filter(|(_, deps)| deps.is_empty()).map(|(n, _)| *n).collect();
        if ready.is_empty() {
            let circle: Vec<&str> = pending.keys().copied().collect();
            let first = &project.services[circle[0]];
            let line = first.depends_on.values().map(|d| d.at.clone()).next().unwrap_or(first.at.clone());
            return Err(line
                .error(
                    format!("services.{}.depends_on", first.name),
                    format!("the services {} depend on each other in a circle", circle.join(", ")),
                )
                .into());
        }
        for n in ready {
            pending.remove(n);
            for deps in pending.values_mut() {
                deps.remove(n);
            }
            order.push(n.to_owned());
        }
    }
    Ok(order)
}
