//! The compose services of a workspace at `up`: their images (local, pulled when missing,
//! or built), and the start of the pod's containers in `depends_on` order, each after what
//! it waits for (a dependency started, healthy by its health check, or finished with 0).

use std::time::Duration;

use futures_util::StreamExt;

use super::Progress;
use crate::core::{Core, CoreError};
use crate::devcontainer::compose::{Condition, Healthcheck};
use crate::pods::engine::ExecSpec;
use crate::pods::naming;
use crate::pods::plan::{ComposePlan, ImagePlan, PodPlan, Wait};
use crate::pods::{Engine, EngineError};

/// The longest wait for one dependency (healthy, or finished), whatever its health check says.
const WAIT_LIMIT: Duration = Duration::from_secs(600);
/// How often a dependency that must finish is looked at.
const POLL: Duration = Duration::from_millis(250);
/// The most a health check's interval is waited between tries: `up` should not sleep 30 s
/// (compose's default interval) after a service is ready.
const MAX_CHECK_INTERVAL: Duration = Duration::from_secs(1);

impl<E: Engine> Core<E> {
    /// Makes sure every service's image is there: an existing one is pulled when missing, a
    /// `build` is built (and recorded in `built`, for a rollback).
    pub(super) async fn ensure_service_images(
        &self,
        plan: &PodPlan,
        built: &mut Vec<String>,
        progress: &dyn Progress,
    ) -> Result<(), CoreError> {
        let Some(compose) = &plan.compose else { return Ok(()) };
        for s in &compose.services {
            match &s.image {
                ImagePlan::Existing { reference } => {
                    if self.engine.image_exists(reference).await? {
                        continue;
                    }
                    progress.step(&format!("pulling {reference} for service {}", s.service));
                    self.engine.pull_image(reference).await.map_err(|e| match e {
                        EngineError::Pull { image, message } => CoreError::ImageMissing { image, reason: message },
                        other => other.into(),
                    })?;
                }
                ImagePlan::Build(build) => {
                    progress.step(&format!(
                        "building {} for service {} from {}",
                        build.tag,
                        s.service,
                        build.dockerfile.display()
                    ));
                    let labels = naming::labels(self.instance(), &plan.name, None);
                    let detail = |line: &str| progress.detail(line);
                    self.engine.build_image(build, &labels, &detail).await?;
                    built.push(build.tag.clone());
                }
            }
        }
        Ok(())
    }

    /// Starts the pod's containers in the compose order, each after its waits, then the agent.
    pub(super) async fn start_in_order(
        &self,
        plan: &PodPlan,
        compose: &ComposePlan,
        progress: &dyn Progress,
    ) -> Result<(), CoreError> {
        for step in &compose.start {
            for w in &step.waits {
                self.wait_for(w, progress).await?;
            }
            progress.step(&format!("starting {}", step.container));
            self.engine.start_container(&step.container).await?;
        }
        self.engine.start_container(&plan.agent.name).await?;
        Ok(())
    }

    async fn wait_for(&self, w: &Wait, progress: &dyn Progress) -> Result<(), CoreError> {
        match (w.condition, &w.healthcheck) {
            (Condition::ServiceStarted, _) => Ok(()),
            (Condition::ServiceHealthy, Some(h)) => {
                progress.step(&format!("waiting for service {} to be healthy", w.service));
                self.wait_healthy(w, h).await
            }
            // The plan waits for a start only when there is no health check.
            (Condition::ServiceHealthy, None) => Ok(()),
            (Condition::ServiceCompletedSuccessfully, _) => {
                progress.step(&format!("waiting for service {} to finish", w.service));
                self.wait_finished(w).await
            }
        }
    }

    /// Runs the health check in the service's container until it passes: after its start
    /// period, `retries` failures in a row (or the container's end) fail `up`.
    async fn wait_healthy(&self, w: &Wait, h: &Healthcheck) -> Result<(), CoreError> {
        let start = tokio::time::Instant::now();
        let start_period = Duration::from_millis(h.start_period_ms);
        let interval = Duration::from_millis(h.interval_ms).min(MAX_CHECK_INTERVAL);
        let timeout = Duration::from_millis(h.timeout_ms.max(1));
        let mut failures = 0u32;
        loop {
            let state = self.engine.container_state(&w.container).await?;
            if state.status != "running" {
                return Err(CoreError::Invalid(format!(
                    "service {} stopped ({}, exit code {}) before it was healthy: see `podman logs {}`",
                    w.service,
                    state.status,
                    state.exit_code.map_or("unknown".into(), |c| c.to_string()),
                    w.container
                )));
            }
            let last = match tokio::time::timeout(timeout, self.check_once(&w.container, &h.argv)).await {
                Ok(Ok(0)) => return Ok(()),
                Ok(Ok(code)) => format!("exit code {code}"),
                Ok(Err(e)) => e.to_string(),
                Err(_) => format!("no answer within {} ms", h.timeout_ms),
            };
            if start.elapsed() >= start_period {
                failures += 1;
            }
            // `retries` counts checks at the service's own interval; tried faster here, the
            // same span of time is allowed.
            let allowed = start_period + Duration::from_millis(h.interval_ms.max(1)) * h.retries.max(1);
            if (failures > h.retries && start.elapsed() >= allowed) || start.elapsed() >= WAIT_LIMIT {
                return Err(CoreError::Invalid(format!(
                    "service {} is not healthy: its health check `{}` failed ({last})",
                    w.service,
                    h.argv.join(" ")
                )));
            }
            tokio::time::sleep(interval).await;
        }
    }

    /// One run of a health check; its exit code.
    async fn check_once(&self, container: &str, argv: &[String]) -> Result<i64, CoreError> {
        let spec = ExecSpec {
            argv: argv.to_vec(),
            user: None,
            workdir: None,
            env: Default::default(),
            stdin: false,
            tty: false,
        };
        let mut s = self.engine.exec(container, &spec).await?;
        // The output is not kept: drained so that the command can finish.
        while let Some(chunk) = s.output.next().await {
            chunk?;
        }
        Ok(self.engine.exec_exit_code(&s.id).await?)
    }

    /// Waits until a one-shot service has exited with 0.
    async fn wait_finished(&self, w: &Wait) -> Result<(), CoreError> {
        let deadline = tokio::time::Instant::now() + WAIT_LIMIT;
        loop {
            let state = self.engine.container_state(&w.container).await?;
            match state.exit_code {
                Some(0) => return Ok(()),
                Some(code) => {
                    return Err(CoreError::Invalid(format!(
                        "service {} exited with {code}: see `podman logs {}`",
                        w.service, w.container
                    )));
                }
                None if tokio::time::Instant::now() >= deadline => {
                    return Err(CoreError::Invalid(format!(
                        "service {} did not finish within {} s",
                        w.service,
                        WAIT_LIMIT.as_secs()
                    )));
                }
                None => tokio::time::sleep(POLL).await,
            }
        }
    }
}
