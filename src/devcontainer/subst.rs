//! Variable substitution in devcontainer.json strings (`${localEnv:X}` and friends).
//!
//! Unknown variables are left as they are, as the reference implementation does.

use std::collections::BTreeMap;

/// What the variables resolve to. `container_env` is `None` until the container's
/// environment is known; `${containerEnv:…}` is then left for a later pass.
#[derive(Debug, Clone)]
pub struct Vars<'a> {
    pub local_env: &'a BTreeMap<String, String>,
    pub local_workspace_folder: &'a str,
    pub container_workspace_folder: Option<&'a str>,
    pub devcontainer_id: &'a str,
    pub container_env: Option<&'a BTreeMap<String, String>>,
}

impl Vars<'_> {
    pub fn substitute(&self, input: &str) -> String {
        let mut out = String::with_capacity(input.len());
        let mut rest = input;
        while let Some(start) = rest.find("${") {
            out.push_str(&rest[..start]);
            let after = &rest[start + 2..];
            let Some(end) = after.find('}') else {
                out.push_str(&rest[start..]);
                return out;
            };
            let expr = &after[..end];
            match self.resolve(expr) {
                Some(v) => out.push_str(&v),
                None => {
                    out.push_str("${");
                    out.push_str(expr);
                    out.push('}');
                }
            }
            rest = &after[end + 1..];
        }
        out.push_str(rest);
        out
    }

    fn resolve(&self, expr: &str) -> Option<String> {
        let mut parts = expr.splitn(3, ':');
        let kind = parts.next()?;
        let name = parts.next();
        let default = parts.next();
        let lookup = |env: &BTreeMap<String, String>| {
            let name = name?;
            Some(env.get(name).cloned().or(default.map(str::to_owned)).unwrap_or_default())
        };
        match kind {
            "localEnv" | "env" => lookup(self.local_env),
            "containerEnv" => lookup(self.container_env?),
            "localWorkspaceFolder" => Some(self.local_workspace_folder.to_owned()),
            "localWorkspaceFolderBasename" => Some(basename(self.local_workspace_folder).to_owned()),
            "containerWorkspaceFolder" => self.container_workspace_folder.map(str::to_owned),
            "containerWorkspaceFolderBasename" => self.container_workspace_folder.map(|f| basename(f).to_owned()),
            "devcontainerId" => Some(self.devcontainer_id.to_owned()),
            _ => None,
        }
    }

    /// Substitutes every string inside a JSON value, keys of objects excluded.
    pub fn substitute_json(&self, value: &mut serde_json::Value) {
        match value {
            serde_json::Value::String(s) => *s = self.substitute(s),
            serde_json::Value::Array(a) => a.iter_mut().for_each(|v| self.substitute_json(v)),
            serde_json::Value::Object(o) => o.values_mut().for_each(|v| self.substitute_json(v)),
            _ => {}
        }
    }
}

fn basename(path: &str) -> &str {
    path.trim_end_matches('/').rsplit('/').next().unwrap_or(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn substitutes_every_documented_variable() {
        let local = BTreeMap::from([("HOME".to_owned(), "/home/u".to_owned())]);
        let cenv = BTreeMap::from([("PATH".to_owned(), "/usr/bin".to_owned())]);
        let vars = Vars {
            local_env: &local,
            local_workspace_folder: "/src/my-repo",
            container_workspace_folder: Some("/workspaces/my-repo"),
            devcontainer_id: "abc123",
            container_env: Some(&cenv),
        };
        for (input, want) in [
            ("${localEnv:HOME}/x", "/home/u/x"),
            ("${localEnv:NOPE}", ""),
            ("${localEnv:NOPE:fallback}", "fallback"),
            ("${localEnv:HOME:fallback}", "/home/u"),
            ("${env:HOME}", "/home/u"),
            ("${containerEnv:PATH}:/opt", "/usr/bin:/opt"),
            ("${containerEnv:X:d}", "d"),
            ("${localWorkspaceFolder}", "/src/my-repo"),
            ("${localWorkspaceFolderBasename}", "my-repo"),
            ("${containerWorkspaceFolder}/.venv", "/workspaces/my-repo/.venv"),
            ("${containerWorkspaceFolderBasename}", "my-repo"),
            ("id=${devcontainerId}", "id=abc123"),
            ("[$${severity}]", "[$${severity}]"),
            ("${unknown}", "${unknown}"),
            ("no close ${localEnv:HOME", "no close ${localEnv:HOME"),
            ("a ${localEnv:HOME} b ${devcontainerId} c", "a /home/u b abc123 c"),
        ] {
            assert_eq!(vars.substitute(input), want, "{input}");
        }
    }

    #[test]
    fn container_env_waits_for_its_pass() {
        let local = BTreeMap::new();
        let vars = Vars {
            local_env: &local,
            local_workspace_folder: "/r",
            container_workspace_folder: None,
            devcontainer_id: "i",
            container_env: None,
        };
        assert_eq!(vars.substitute("${containerEnv:PATH}"), "${containerEnv:PATH}");
        assert_eq!(vars.substitute("${containerWorkspaceFolder}"), "${containerWorkspaceFolder}");
    }
}
