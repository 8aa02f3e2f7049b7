//! The podman engine against real podman: what podman 4.3 answers for objects in a given
//! state, and what a daemon's start removes. Every object carries the test's instance id.

mod common;

use std::collections::BTreeMap;

use common::*;
use devaipod::pods::naming::{self, Role, WorkspaceName};
use devaipod::pods::plan::{ContainerPlan, IDLE_COMMAND, PodSpec, Redacted, SecretPlan};
use devaipod::pods::podman::default_socket;
use devaipod::pods::{Engine, EngineError, Podman};

fn engine() -> Podman {
    Podman::new(&default_socket()).unwrap()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

/// A bare pod of the test's instance: one idle container, no agent.
async fn bare_pod(e: &Podman, instance: &str, name: &WorkspaceName) {
    pod_running(e, instance, name, &IDLE_COMMAND).await
}

/// A bare pod of the test's instance whose one container runs `command` (as PID 1 unless it
/// is the idle command, which runs under an init).
async fn pod_running(e: &Podman, instance: &str, name: &WorkspaceName, command: &[&str]) {
    let init = command == IDLE_COMMAND;
    let pod = PodSpec {
        name: name.pod(),
        hostname: name.as_str().to_owned(),
        labels: naming::labels(instance, name, None),
        ports: Vec::new(),
        add_hosts: Vec::new(),
    };
    e.create_pod(&pod).await.unwrap();
    let idle = ContainerPlan {
        name: name.container(Role::Workspace),
        role: Role::Workspace,
        image: devaipod::config::DEFAULT_IMAGE.into(),
        command: command.iter().map(|s| s.to_string()).collect(),
        image_entrypoint: false,
        user: None,
        workdir: "/".into(),
        env: BTreeMap::new(),
        trusted_env: BTreeMap::new(),
        secret_env: BTreeMap::new(),
        mounts: Vec::new(),
        cap_drop: vec!["ALL".into()],
        cap_add: Vec::new(),
        no_new_privileges: true,
        privileged: false,
        security_opt: Vec::new(),
        devices: Vec::new(),
        shm_size: None,
        ulimits: Vec::new(),
        sysctls: BTreeMap::new(),
        init,
        network: devaipod::pods::plan::ContainerNetwork::Pod,
        labels: naming::labels(instance, name, Some(Role::Workspace)),
    };
    e.create_container(&pod.name, &idle).await.unwrap();
}

fn pod_status(pod: &str) -> String {
    podman(&["pod", "inspect", pod, "--format", "{{.State}}"]).trim().to_owned()
}

/// Podman answers 304 to a stop of a pod that is not running and a start of one that is:
/// both are done, not errors, and a stopped or never-started pod can be removed.
#[test]
fn stop_and_start_are_idempotent_and_any_pod_can_be_removed() {
    if !podman_available() {
        return;
    }
    let env = TestEnv::new("");
    let e = engine();
    runtime().block_on(async {
        // Created, never started: stop is a no-op, removal works.
        let created = WorkspaceName::new("created").unwrap();
        bare_pod(&e, &env.instance, &created).await;
        assert_eq!(pod_status(&created.pod()), "Created");
        e.stop_pod(&created.pod(), 0).await.expect("stop of a created pod");
        e.remove_pod(&created.pod()).await.expect("remove of a created pod");
        assert!(!e.pod_exists(&created.pod()).await.unwrap());

        let p = WorkspaceName::new("twice").unwrap();
        bare_pod(&e, &env.instance, &p).await;
        e.start_pod(&p.pod()).await.unwrap();
        e.start_pod(&p.pod()).await.expect("start of a running pod");
        e.start_container(&p.container(Role::Workspace)).await.expect("start of a running container");
        assert_eq!(pod_status(&p.pod()), "Running");
        e.stop_pod(&p.pod(), 0).await.unwrap();
        e.stop_pod(&p.pod(), 0).await.expect("stop of a stopped pod");
        assert_ne!(pod_status(&p.pod()), "Running");
        e.remove_pod(&p.pod()).await.expect("remove of a stopped pod");
        assert!(!e.pod_exists(&p.pod()).await.unwrap());

        // Errors carry podman's own reason; a 404 is typed.
        let gone = e.stop_pod(&p.pod(), 0).await.unwrap_err();
        assert!(matches!(gone, EngineError::NotFound { .. }), "{gone:?}");
        assert_eq!(
            gone.to_string(),
            format!("podman could not stop pod {0}: no pod with name or ID {0} found: no such pod", p.pod())
        );
    });
    assert_eq!(env.leftovers(), Vec::<String>::new());
}

/// A pod whose start fails (its container's command does not exist) says so in podman's
/// words, and is removed like any other.
#[test]
fn a_pod_whose_start_failed_says_why_and_is_removed() {
    if !podman_available() {
        return;
    }
    let env = TestEnv::new("");
    let e = engine();
    runtime().block_on(async {
        let p = WorkspaceName::new("nostart").unwrap();
        pod_running(&e, &env.instance, &p, &["/nonexistent-devaipod-cmd"]).await;
        let failed = e.start_pod(&p.pod()).await.expect_err("the container cannot start");
        let said = failed.to_string();
        assert!(said.starts_with(&format!("podman could not start pod {}", p.pod())), "{said}");
        assert!(said.contains("/nonexistent-devaipod-cmd"), "podman's reason: {said}");
        assert!(!matches!(failed, EngineError::AlreadyExists { .. } | EngineError::NotFound { .. }), "{failed:?}");
        e.stop_pod(&p.pod(), 0).await.expect("stop of a pod that never ran");
        e.remove_pod(&p.pod()).await.expect("remove of a pod whose start failed");
        assert!(!e.pod_exists(&p.pod()).await.unwrap());

        // A name podman has already: said so, typed.
        let taken = WorkspaceName::new("taken").unwrap();
        bare_pod(&e, &env.instance, &taken).await;
        let spec = PodSpec {
            name: taken.pod(),
            hostname: "taken".into(),
            labels: naming::labels(&env.instance, &taken, None),
            ports: Vec::new(),
            add_hosts: Vec::new(),
        };
        let again = e.create_pod(&spec).await.unwrap_err();
        assert!(matches!(again, EngineError::AlreadyExists { .. }), "{again:?}");
        e.remove_pod(&taken.pod()).await.unwrap();
    });
    assert_eq!(env.leftovers(), Vec::<String>::new());
}

/// Secrets devaipod creates carry the pod's labels (podman 4.3 accepts labels on
/// `secrets/create`, though it cannot filter secrets by label).
#[test]
fn secrets_are_created_with_the_instance_label() {
    if !podman_available() {
        return;
    }
    let env = TestEnv::new("");
    let name = WorkspaceName::new("sec").unwrap();
    let secret = SecretPlan {
        name: format!("{}-{}-agent-password", name.pod(), env.instance),
        value: Redacted("pw-4c1d".into()),
        labels: naming::labels(&env.instance, &name, None),
    };
    struct Remove(String);
    impl Drop for Remove {
        fn drop(&mut self) {
            podman(&["secret", "rm", &self.0]);
        }
    }
    let _remove = Remove(secret.name.clone());
    let e = engine();
    runtime().block_on(async {
        e.create_secret(&secret).await.unwrap();
        assert!(e.secret_exists(&secret.name).await.unwrap());
        let again = e.create_secret(&secret).await.unwrap_err();
        assert!(again.to_string().ends_with("secret name in use"), "podman's reason: {again}");
    });
    let labels: BTreeMap<String, String> =
        serde_json::from_str(&podman(&["secret", "inspect", &secret.name, "--format", "{{json .Spec.Labels}}"]))
            .unwrap();
    assert_eq!(labels, naming::labels(&env.instance, &name, None));
    runtime().block_on(e.remove_secret(&secret.name)).unwrap();
}

/// Removes everything labelled with another instance id, also when the test fails.
struct OtherInstance(String);

impl Drop for OtherInstance {
    fn drop(&mut self) {
        cleanup(&self.0);
    }
}

fn leftover_container(name: &str, instance: &str, role: &str, log: &std::path::Path) {
    let out = std::process::Command::new("podman")
        .args(["create", "--name", name, "--network", "none"])
        .args(["--label", &format!("{}={instance}", naming::LABEL_INSTANCE)])
        .args(["--label", &format!("{}={role}", naming::LABEL_ROLE)])
        .args(["--log-driver", "k8s-file", "--log-opt", &format!("path={}", log.display())])
        .args([devaipod::config::DEFAULT_IMAGE, "true"])
        .output()
        .unwrap();
    assert!(out.status.success(), "podman create {name}: {}", text(&out.stderr));
}

fn container_exists(name: &str) -> bool {
    std::process::Command::new("podman").args(["container", "exists", name]).status().unwrap().success()
}

/// A secret reader a crashed daemon left (with the secret in its log) is removed when the
/// next daemon of its instance starts; another instance's reader and this instance's
/// other containers stay.
#[test]
fn a_daemon_start_removes_its_instances_leftover_secret_readers_only() {
    if !podman_available() {
        return;
    }
    let env = TestEnv::new("");
    let other = OtherInstance(format!("{}-other", env.instance));
    let scratch = env.dir.path().join("scratch");
    std::fs::create_dir_all(&scratch).unwrap();
    let id = &env.instance[env.instance.len() - 8..]; // the instance's random part, hex
    let ours = format!("{}{id}01", naming::SECRET_READER_PREFIX);
    let theirs = format!("{}{id}02", naming::SECRET_READER_PREFIX);
    let not_a_reader = format!("devaipod-{}-not-a-reader", env.instance);
    let log = |name: &str| scratch.join(format!("{name}.log"));
    leftover_container(&ours, &env.instance, naming::ROLE_SECRET_READER, &log(&ours));
    leftover_container(&theirs, &other.0, naming::ROLE_SECRET_READER, &log(&theirs));
    leftover_container(&not_a_reader, &env.instance, "agent", &log(&not_a_reader));
    for name in [&ours, &theirs, &not_a_reader] {
        std::fs::write(log(name), "leaked-token-value\n").unwrap();
    }

    env.ok(&["list"]); // starts this instance's daemon

    assert!(!container_exists(&ours), "this instance's leftover reader is removed");
    assert!(!log(&ours).exists(), "with its log, which may hold the secret");
    assert!(container_exists(&theirs), "another instance's reader stays");
    assert!(log(&theirs).exists());
    assert!(container_exists(&not_a_reader), "a container of another role stays");
    assert!(log(&not_a_reader).exists());
}

/// A helper container (the doctor's LLM probe) runs to its end as asked — uid 1000, no
/// capabilities, a read-only bind, plain env and a podman secret as env —, its stdout,
/// stderr and exit code are read back, and it is gone afterwards. `info` says what podman
/// is. A probe a crashed daemon left is removed at the next daemon's start, like a reader.
#[test]
fn a_helper_container_runs_to_its_end_and_is_removed() {
    if !podman_available() {
        return;
    }
    use devaipod::pods::engine::HelperRun;
    use devaipod::pods::plan::MountPlan;
    let env = TestEnv::new("");
    let input = env.dir.path().join("in");
    std::fs::create_dir_all(&input).unwrap();
    std::fs::write(input.join("hello"), "from the host\n").unwrap();
    let secret = format!("{}{}-key", naming::HELPER_PREFIX, env.instance);
    runtime().block_on(async {
        let e = engine();
        let info = e.info().await.unwrap();
        assert!(
            info.version.starts_with('4') && !info.runtime.is_empty() && !info.cgroup_version.is_empty(),
            "{info:?}"
        );
        let plan = SecretPlan {
            name: secret.clone(),
            value: Redacted("s3cret".into()),
            labels: naming::helper_labels(&env.instance, naming::ROLE_LLM_PROBE),
        };
        e.create_secret(&plan).await.unwrap();
        let script = "id -u; cat /mnt/in/hello; printf '%s/%s\\n' \"$PLAIN\" \"$FROM_SECRET\"; \
                      touch /mnt/in/x 2>/dev/null || echo read-only; echo to-stderr >&2; exit 3";
        let run = HelperRun {
            role: naming::ROLE_LLM_PROBE,
            image: devaipod::config::DEFAULT_IMAGE.into(),
            argv: vec!["bash".into(), "-c".into(), script.into()],
            mounts: vec![MountPlan::Bind { source: input.clone(), target: "/mnt/in".into(), readonly: true }],
            env: BTreeMap::from([("PLAIN".to_owned(), "plain".to_owned())]),
            secret_env: BTreeMap::from([("FROM_SECRET".to_owned(), secret.clone())]),
            user: Some("1000:1000".into()),
            instance: env.instance.clone(),
            timeout_secs: 30,
        };
        let out = e.run_helper(&run).await.unwrap();
        assert_eq!(out.exit_code, 3);
        assert_eq!(text(&out.stdout), "1000\nfrom the host\nplain/s3cret\nread-only\n");
        assert_eq!(text(&out.stderr), "to-stderr\n");
        e.remove_secret(&secret).await.unwrap();
        // A missing image is an error, not an empty run.
        let missing = HelperRun { image: "localhost/devaipod-missing:none".into(), ..run };
        assert!(e.run_helper(&missing).await.is_err());
    });
    assert_eq!(env.leftovers(), Vec::<String>::new(), "the helper container is gone");

    let id = &env.instance[env.instance.len() - 8..];
    let left = format!("{}{id}03", naming::HELPER_PREFIX);
    leftover_container(&left, &env.instance, naming::ROLE_LLM_PROBE, &env.dir.path().join("left.log"));
    env.ok(&["list"]); // starts this instance's daemon
    assert!(!container_exists(&left), "a leftover probe is removed at the daemon's start");
}
