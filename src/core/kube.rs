//! `devaipod kube`: a workspace's plan, kept at `up`, rendered as Kubernetes objects
//! (`pods::kube`). The rendering is pure; this adds what only the daemon has: the kept
//! plan and, when asked, the secrets' values.

use std::collections::BTreeMap;

use super::{Core, CoreError};
use crate::pods::Engine;
use crate::pods::kube::{KubePlan, Manifest, RenderOptions, render, render::SECRET_KEY};

/// What `GET /api/v1/workspaces/{name}/kube` is asked.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KubeRequest {
    /// `metadata.namespace` of every object.
    #[serde(default)]
    pub namespace: Option<String>,
    /// Size each PersistentVolumeClaim requests (e.g. `10Gi`).
    #[serde(default)]
    pub volume_size: Option<String>,
    /// Print the Secrets with their values (the agent's password, trusted variables).
    #[serde(default)]
    pub show_secrets: bool,
}

impl<E: Engine> Core<E> {
    /// Keeps what `devaipod kube` renders of a workspace (secret names only).
    pub(in crate::core) async fn keep_kube_plan(&self, ws: &str, plan: &KubePlan) -> Result<(), CoreError> {
        super::workers::keep_json(&self.paths.kube_plan(ws), "the Kubernetes plan", plan).await
    }

    /// The workspace as Kubernetes objects.
    pub async fn kube_manifest(&self, ws: &str, req: &KubeRequest) -> Result<Manifest, CoreError> {
        let record = self.store.workspace(ws).await?.ok_or_else(|| CoreError::NotFound(ws.to_owned()))?;
        if let Some(ns) = &req.namespace
            && !crate::config::is_dns_label(ns)
        {
            return Err(CoreError::Invalid(format!(
                "namespace {ns:?} is not a Kubernetes namespace name (lowercase letters, digits and `-`, at most 63)"
            )));
        }
        if let Some(size) = &req.volume_size
            && !is_quantity(size)
        {
            return Err(CoreError::Invalid(format!(
                "volume size {size:?} is not a Kubernetes quantity: a number with an optional suffix, e.g. 10Gi or 500Mi"
            )));
        }
        let path = self.paths.kube_plan(ws);
        let text = tokio::fs::read(&path).await.map_err(|_| {
            CoreError::Invalid(format!(
                "{ws} was made by a devaipod that did not keep its Kubernetes plan (no {}): recreate the workspace (`devaipod delete {ws}`, then `devaipod up`)",
                path.display()
            ))
        })?;
        let plan: KubePlan = serde_json::from_slice(&text)
            .map_err(|e| CoreError::Io(format!("the kept Kubernetes plan {}: {e}", path.display())))?;
        let secrets =
            if req.show_secrets { Some(self.kube_secrets(&plan, &record.agent_password).await?) } else { None };
        // PATH as the containers have it under podman (the image's or podman's default).
        let path = self.engine.container_env(&plan.workspace.name).await.ok().and_then(|mut e| e.remove("PATH"));
        let known = path.is_some();
        let opts =
            RenderOptions { namespace: req.namespace.clone(), volume_size: req.volume_size.clone(), secrets, path };
        let mut m = render(&plan, &opts);
        if !known {
            m.warnings.push(format!(
                "PATH is not set: it is read from the running workspace container (start it with `devaipod start {ws}`); an image without PATH in its config needs one"
            ));
        }
        Ok(m)
    }

    /// The values of the Secrets the Pods reference: the agent's password (the store's)
    /// and the workspace container's trusted variables (read from the running container).
    async fn kube_secrets(
        &self,
        plan: &KubePlan,
        agent_password: &str,
    ) -> Result<BTreeMap<String, BTreeMap<String, String>>, CoreError> {
        let mut out = BTreeMap::new();
        for secret in plan.agent.secret_env.values() {
            if secret.ends_with("-agent-password") {
                out.insert(secret.clone(), BTreeMap::from([(SECRET_KEY.to_owned(), agent_password.to_owned())]));
            }
        }
        if !plan.workspace.trusted_env.is_empty() {
            let env = self.engine.container_env(&plan.workspace.name).await.map_err(|e| {
                CoreError::Invalid(format!(
                    "the trusted variables are read from the running workspace container, which could not be read ({e}): start it (`devaipod start`) or leave out --show-secrets"
                ))
            })?;
            let values =
                plan.workspace.trusted_env.keys().filter_map(|k| env.get(k).map(|v| (k.clone(), v.clone()))).collect();
            out.insert(plan.trusted_env_secret(), values);
        }
        Ok(out)
    }
}

/// A Kubernetes quantity as a size is written: digits, an optional fraction, an optional
/// binary or decimal suffix.
fn is_quantity(s: &str) -> bool {
    let digits_end = s.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(s.len());
    let (num, suffix) = s.split_at(digits_end);
    !num.is_empty()
        && num.parse::<f64>().is_ok()
        && ["", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei", "k", "M", "G", "T", "P", "E"].contains(&suffix)
}

#[cfg(test)]
mod tests {
    #[test]
    fn quantities() {
        for ok in ["10Gi", "500Mi", "1", "1.5G"] {
            assert!(super::is_quantity(ok), "{ok}");
        }
        for bad in ["", "Gi", "10 Gi", "10gb", "-1Gi", "1e3"] {
            assert!(!super::is_quantity(bad), "{bad}");
        }
    }
}
