//! Running devcontainer lifecycle commands: `initializeCommand` on the host, the others
//! in the workspace container through the engine. Named commands run in parallel.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use futures_util::StreamExt;

use super::CoreError;
use super::workspaces::Progress;
use crate::devcontainer::LifecycleCommand;
use crate::pods::Engine;
use crate::pods::engine::{ExecSpec, Output};

const HOST_TIMEOUT: Duration = Duration::from_secs(600);

pub(super) async fn run_on_host(
    phase: &'static str,
    cmd: &LifecycleCommand,
    dir: &Path,
    progress: &dyn Progress,
) -> Result<(), CoreError> {
    let runs = cmd.commands().into_iter().map(|(label, argv)| async move {
        progress.step(&format!("{phase}{} on the host: {}", label_text(&label), argv.join(" ")));
        let mut c = tokio::process::Command::new(&argv[0]);
        c.args(&argv[1..]).current_dir(dir).stdin(std::process::Stdio::null()).kill_on_drop(true);
        let out = tokio::time::timeout(HOST_TIMEOUT, c.output())
            .await
            .map_err(|_| CoreError::Lifecycle { phase, command: argv.join(" "), code: None })?
            .map_err(|e| CoreError::Io(format!("{phase}: cannot run `{}`: {e}", argv[0])))?;
        for line in String::from_utf8_lossy(&out.stdout).lines().chain(String::from_utf8_lossy(&out.stderr).lines()) {
            progress.detail(line);
        }
        if out.status.success() {
            Ok(())
        } else {
            Err(CoreError::Lifecycle { phase, command: argv.join(" "), code: out.status.code().map(i64::from) })
        }
    });
    first_error(futures_util::future::join_all(runs).await)
}

pub(super) struct InContainer<'a, E> {
    pub engine: &'a E,
    pub container: &'a str,
    pub user: Option<String>,
    pub workdir: String,
    pub env: BTreeMap<String, String>,
    pub timeout: Duration,
}

impl<E: Engine> InContainer<'_, E> {
    pub async fn run(
        &self,
        phase: &'static str,
        cmd: &LifecycleCommand,
        progress: &dyn Progress,
    ) -> Result<(), CoreError> {
        let runs = cmd.commands().into_iter().map(|(label, argv)| async move {
            progress.step(&format!("{phase}{}: {}", label_text(&label), argv.join(" ")));
            let spec = ExecSpec {
                argv: argv.clone(),
                user: self.user.clone(),
                workdir: Some(self.workdir.clone()),
                env: self.env.clone(),
                stdin: false,
                tty: false,
            };
            let mut session = self.engine.exec(self.container, &spec).await?;
            let pump = async {
                let mut pending = String::new();
                while let Some(chunk) = session.output.next().await {
                    let bytes = match chunk? {
                        Output::Stdout(b) | Output::Stderr(b) => b,
                    };
                    pending.push_str(&String::from_utf8_lossy(&bytes));
                    while let Some(pos) = pending.find('\n') {
                        progress.detail(&pending[..pos]);
                        pending.drain(..=pos);
                    }
                }
                if !pending.is_empty() {
                    progress.detail(&pending);
                }
                Ok::<(), CoreError>(())
            };
            tokio::time::timeout(self.timeout, pump).await.map_err(|_| CoreError::Lifecycle {
                phase,
                command: format!("{} (no end after {} s)", argv.join(" "), self.timeout.as_secs()),
                code: None,
            })??;
            let code = self.engine.exec_exit_code(&session.id).await?;
            if code == 0 {
                Ok(())
            } else {
                Err(CoreError::Lifecycle { phase, command: argv.join(" "), code: Some(code) })
            }
        });
        first_error(futures_util::future::join_all(runs).await)
    }
}

fn label_text(label: &Option<String>) -> String {
    label.as_ref().map(|l| format!(" [{l}]")).unwrap_or_default()
}

fn first_error(results: Vec<Result<(), CoreError>>) -> Result<(), CoreError> {
    results.into_iter().collect()
}
