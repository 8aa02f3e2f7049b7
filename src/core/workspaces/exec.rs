//! Running commands in a workspace's containers: where (`exec_target`), and captured
//! (`exec_capture`, `capture_at`: bounded output, a deadline).

use super::*;
use crate::core::{Core, CoreError};
use crate::pods::Engine;
use crate::pods::engine::Output;
use crate::pods::naming::{self, Role};
use crate::pods::plan::{self};

/// The most a captured command (git in the sandbox: status, commit, bundle, fetch) may take,
/// as long as the daemon's own git commands (`git::TIMEOUT`).
const EXEC_TIMEOUT: Duration = Duration::from_secs(300);

/// The most a captured command may print (stdout and stderr each): what it prints is held
/// in memory, and in the agent's container the agent decides what that is. Large output
/// goes through [`Engine::exec_to`] to a file instead.
const CAPTURE_LIMIT: usize = 1024 * 1024;

impl<E: Engine> Core<E> {
    /// Where commands run in a workspace's container: the running container, its user and
    /// the repository's folder.
    pub async fn exec_target(&self, name: &str, target: ExecTarget) -> Result<ExecPlace, CoreError> {
        let pod = self.find(name).await?;
        let role = target.role();
        let container = pod.containers.iter().find(|c| c.role == Some(role));
        let Some(container) = container.filter(|c| c.state.eq_ignore_ascii_case("running")) else {
            return Err(CoreError::NotRunning {
                name: name.to_owned(),
                role: role.as_str(),
                status: pod.status.clone(),
            });
        };
        let user = match role {
            Role::Agent => Some(plan::AGENT_USER.to_owned()),
            Role::Workspace => pod.labels.get(naming::LABEL_USER).cloned(),
            Role::Service => None,
        };
        let workdir = pod.labels.get(naming::LABEL_FOLDER).cloned();
        let (mut env, mut post_attach) = (BTreeMap::new(), Vec::new());
        if role == Role::Workspace {
            if let Some(json) = pod.labels.get(naming::LABEL_REMOTE_ENV) {
                let remote: BTreeMap<String, Option<String>> = serde_json::from_str(json)
                    .map_err(|e| CoreError::Io(format!("the pod's remoteEnv label is not readable: {e}")))?;
                let container_env = self.engine.container_env(&container.name).await?;
                env = resolve_remote_env(&remote, workdir.as_deref(), &container_env);
            }
            if let Some(json) = pod.labels.get(naming::LABEL_POST_ATTACH) {
                // The features' commands first, then devcontainer.json's.
                let cmds: Vec<crate::devcontainer::LifecycleCommand> = serde_json::from_str(json)
                    .map_err(|e| CoreError::Io(format!("the pod's postAttachCommand label is not readable: {e}")))?;
                post_attach = cmds.iter().flat_map(|cmd| cmd.commands().into_iter().map(|(_, argv)| argv)).collect();
            }
        }
        Ok(ExecPlace { container: container.name.clone(), user, workdir, env, post_attach })
    }

    /// Runs an argv in a workspace's container; returns (exit code, stdout, stderr). The
    /// whole run (start, output, exit code) takes at most [`EXEC_TIMEOUT`].
    pub(in crate::core) async fn exec_capture(
        &self,
        name: &str,
        target: ExecTarget,
        argv: &[&str],
    ) -> Result<(i64, Vec<u8>, String), CoreError> {
        let place = self.exec_target(name, target).await?;
        self.capture_at(&place, target.role().as_str(), argv, BTreeMap::new()).await
    }

    /// Runs an argv at `place` (the `what` container: for messages) with `env` added;
    /// returns (exit code, stdout, stderr), each at most [`CAPTURE_LIMIT`], within
    /// [`EXEC_TIMEOUT`].
    pub(in crate::core) async fn capture_at(
        &self,
        place: &ExecPlace,
        what: &str,
        argv: &[&str],
        env: BTreeMap<String, String>,
    ) -> Result<(i64, Vec<u8>, String), CoreError> {
        use futures_util::StreamExt;
        let mut spec = place.spec(argv.iter().map(|s| s.to_string()).collect(), false);
        spec.env.extend(env);
        let run = async {
            let mut s = self.engine.exec(&place.container, &spec).await?;
            let (mut out, mut err) = (Vec::new(), Vec::new());
            while let Some(chunk) = s.output.next().await {
                let (buf, b) = match chunk? {
                    Output::Stdout(b) => (&mut out, b),
                    Output::Stderr(b) => (&mut err, b),
                };
                if buf.len() + b.len() > CAPTURE_LIMIT {
                    return Err(CoreError::Io(format!(
                        "`{}` in the {what} container printed more than {} KiB",
                        argv.join(" "),
                        CAPTURE_LIMIT / 1024
                    )));
                }
                buf.extend_from_slice(&b);
            }
            let code = self.engine.exec_exit_code(&s.id).await?;
            Ok((code, out, String::from_utf8_lossy(&err).into_owned()))
        };
        tokio::time::timeout(EXEC_TIMEOUT, run).await.map_err(|_| {
            CoreError::Io(format!(
                "`{}` in the {what} container did not finish within {} s",
                argv.join(" "),
                EXEC_TIMEOUT.as_secs()
            ))
        })?
    }
}

/// `remoteEnv` with `${containerEnv:…}` (and the workspace folder) resolved; a variable set
/// to null is left out.
fn resolve_remote_env(
    remote: &BTreeMap<String, Option<String>>,
    workdir: Option<&str>,
    container_env: &BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    let no_env = BTreeMap::new();
    let vars = crate::devcontainer::Vars {
        local_env: &no_env,
        local_workspace_folder: "",
        container_workspace_folder: workdir,
        devcontainer_id: "",
        container_env: Some(container_env),
    };
    remote.iter().filter_map(|(k, v)| Some((k.clone(), vars.substitute(v.as_ref()?)))).collect()
}

#[cfg(test)]
mod remote_env_tests {
    use super::*;

    #[test]
    fn remote_env_resolves_against_the_containers_environment() {
        let remote: BTreeMap<String, Option<String>> = [
            ("PATH".to_owned(), Some("${containerEnv:PATH}:/extra".to_owned())),
            ("AT".to_owned(), Some("${containerWorkspaceFolder}/x".to_owned())),
            ("GONE".to_owned(), None),
        ]
        .into();
        let env: BTreeMap<String, String> = [("PATH".to_owned(), "/usr/bin".to_owned())].into();
        let got = resolve_remote_env(&remote, Some("/workspaces/r"), &env);
        assert_eq!(got["PATH"], "/usr/bin:/extra");
        assert_eq!(got["AT"], "/workspaces/r/x");
        assert!(!got.contains_key("GONE"));
    }
}
