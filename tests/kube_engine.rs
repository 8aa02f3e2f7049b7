//! The Kubernetes engine (`pods::kube::Kube`, kube-rs) against the podman-backed fake API
//! (`tests/support/fake_kube.py`): a workspace's secret, volumes, workspace and agent Pods
//! made as the daemon makes them, then exec (output, exit codes, stdin), upload, logs, the
//! agent's walls read from inside it, and removal that leaves nothing in podman.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use devaipod::pods::engine::{Engine, EngineError, ExecSpec, Output};
use devaipod::pods::kube::Kube;
use devaipod::pods::naming::{Role, WorkspaceName};
use devaipod::pods::plan::{self, MountPlan, PlanRequest, Redacted, SandboxMounts};
use futures_util::StreamExt;
use serde_json::json;

const IMAGE: &str = "localhost/devaipod-base:latest";

/// The podman secrets of the plan: [`TestEnv`]'s cleanup finds them only through a pod.
struct Secrets(Vec<String>);

impl Drop for Secrets {
    fn drop(&mut self) {
        for s in &self.0 {
            podman(&["secret", "rm", s]);
        }
    }
}

fn argv(args: &[&str]) -> ExecSpec {
    ExecSpec { argv: args.iter().map(|s| s.to_string()).collect(), ..Default::default() }
}

/// Runs `spec` in `container`: (exit code, stdout, stderr).
async fn run(kube: &Kube, container: &str, spec: &ExecSpec) -> (i64, String, String) {
    let mut out = Vec::new();
    let r = kube.exec_to(container, spec, &mut out, u64::MAX).await.unwrap_or_else(|e| panic!("{spec:?}: {e}"));
    assert_eq!(r.stdout_bytes, out.len() as u64);
    (r.exit_code, text(&out), r.stderr)
}

fn field(status: &str, name: &str) -> String {
    status.lines().find_map(|l| l.strip_prefix(name)).map(|v| v.trim().to_owned()).unwrap_or_default()
}

fn tar_of(files: &[(&str, &str)]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (path, content) in files {
        let mut h = tar::Header::new_gnu();
        h.set_size(content.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, path, content.as_bytes()).unwrap();
    }
    b.into_inner().unwrap()
}

fn podman_exists(what: &str, name: &str) -> bool {
    std::process::Command::new("podman").args([what, "exists", name]).status().is_ok_and(|s| s.success())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kube_engine_runs_a_workspace_on_the_podman_backed_fake() {
    if !podman_available() {
        return;
    }
    if !podman_exists("image", IMAGE) {
        assert_ne!(
            std::env::var("DEVAIPOD_REQUIRE_PODMAN").as_deref(),
            Ok("1"),
            "{IMAGE} is missing: run scripts/setup.sh"
        );
        eprintln!("\n*** SKIPPED: no {IMAGE}; run scripts/setup.sh ***\n");
        return;
    }
    let start = Instant::now();
    let env = TestEnv::new("");
    let fake = FakeKube::start(&json!({LABEL_INSTANCE: env.instance}), "devaipod-it");

    // The plan `up` makes, with the host side of the agent's sockets in this test's directory.
    let suffix = env.instance.rsplit('-').next().unwrap();
    let name = WorkspaceName::new(&format!("fk{suffix}")).unwrap();
    let host = |p: &str| env.dir.path().join(p);
    for dir in ["sockets", "api", "opencode"] {
        std::fs::create_dir_all(host(dir)).unwrap();
    }
    std::fs::write(host("bridge"), "").unwrap();
    let password = format!("pw-{suffix}");
    let req = PlanRequest {
        name: name.clone(),
        instance: env.instance.clone(),
        source: "https://example.com/o/fk.git".into(),
        image_override: None,
        host_env: BTreeMap::new(),
        opencode_dir: host("opencode"),
        checkout_dir: host("checkout"),
        agent_password: Redacted(password.clone()),
        sandbox: SandboxMounts {
            socket_dir: host("sockets"),
            api_dir: host("api"),
            bridge: host("bridge"),
            seccomp: None,
        },
    };
    let config = devaipod::config::parse("", Path::new("t.toml")).unwrap();
    let p = plan::plan(&config, None, &req).unwrap();
    let _secrets = Secrets(p.secrets.iter().map(|s| s.name.clone()).collect());
    let workspace = plan::ContainerPlan { image: IMAGE.into(), ..p.workspace.clone() };
    // The agent as planned (hardening, mounts, network), idle: there is no opencode here.
    let agent = plan::ContainerPlan {
        image: IMAGE.into(),
        command: vec!["/bin/sleep".into(), "infinity".into()],
        ..p.agent.clone()
    };
    assert!(agent.mounts.iter().any(|m| matches!(m, MountPlan::Bind { .. })), "hostPaths are played too");

    let kubeconfig = kube::config::Kubeconfig::read_from(&fake.kubeconfig).unwrap();
    let kconfig = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await.unwrap();
    let kube = Kube::new(kube::Client::try_from(kconfig).unwrap()).with_timeout(Duration::from_secs(60));
    assert_eq!(kube.namespace(), "devaipod-it");
    let info = kube.info().await.unwrap();
    assert_eq!((info.version.as_str(), info.api_version.as_str()), ("v1.33.0-fake-kube", "1.33"));

    // Secrets, volumes, the pod and its two containers, as the daemon's `up` asks for them.
    for s in &p.secrets {
        kube.create_secret(s).await.unwrap();
    }
    let pw_secret = &p.secrets[0].name;
    assert!(kube.secret_exists(pw_secret).await.unwrap());
    assert_eq!(kube.secret_value(pw_secret, IMAGE, env.dir.path(), &env.instance).await.unwrap(), password);
    let again = kube.create_secret(&p.secrets[0]).await.unwrap_err();
    assert!(matches!(again, EngineError::AlreadyExists { .. }), "{again:?}");
    for v in &p.volumes {
        kube.create_volume(v).await.unwrap();
    }
    let mut volumes = kube.list_volumes(&[(LABEL_INSTANCE, &env.instance)]).await.unwrap();
    volumes.sort();
    let mut planned: Vec<String> = p.volumes.iter().map(|v| v.name.clone()).collect();
    planned.sort();
    assert_eq!(volumes, planned);
    for v in &planned {
        assert!(podman_exists("volume", v), "podman volume {v}");
    }

    kube.create_pod(&p.pod).await.unwrap();
    kube.create_container(&p.pod.name, &workspace).await.unwrap();
    kube.create_container(&p.pod.name, &agent).await.unwrap();
    kube.start_container(&workspace.name).await.unwrap();
    kube.start_container(&agent.name).await.unwrap();
    kube.start_pod(&p.pod.name).await.unwrap();
    let made = start.elapsed();

    let pods = kube.list_pods(&[(LABEL_INSTANCE, &env.instance)]).await.unwrap();
    assert_eq!(pods.len(), 1, "{pods:?}");
    assert_eq!((pods[0].name.as_str(), pods[0].status.as_str()), (p.pod.name.as_str(), "Running"), "{pods:?}");
    let mut roles: Vec<(Option<Role>, String)> = pods[0].containers.iter().map(|c| (c.role, c.state.clone())).collect();
    roles.sort_by_key(|(r, _)| r.map(|r| r.as_str().to_owned()));
    assert_eq!(roles, [(Some(Role::Agent), "running".into()), (Some(Role::Workspace), "running".into())]);
    assert_eq!(kube.container_state(&agent.name).await.unwrap().status, "running");
    assert!(kube.pod_exists(&p.pod.name).await.unwrap());
    assert_eq!(kube.container_env(&agent.name).await.unwrap().get("HOME").map(String::as_str), Some(plan::AGENT_HOME));

    // exec: stdout, stderr and the exit code, apart; the working directory and environment.
    let (code, out, err) = run(&kube, &workspace.name, &argv(&["sh", "-c", "echo out; echo err >&2; exit 3"])).await;
    assert_eq!((code, out.as_str(), err.trim()), (3, "out\n", "err"));
    let spec = ExecSpec {
        workdir: Some("/tmp".into()),
        env: BTreeMap::from([("GREETING".to_owned(), "hi there".to_owned())]),
        ..argv(&["sh", "-c", "pwd; echo \"$GREETING\""])
    };
    assert_eq!(run(&kube, &workspace.name, &spec).await, (0, "/tmp\nhi there\n".into(), String::new()));
    let big = run(&kube, &workspace.name, &argv(&["head", "-c", "300000", "/dev/zero"])).await;
    assert_eq!((big.0, big.1.len()), (0, 300_000), "output larger than a frame arrives whole");

    // upload_archive: a tar on stdin, stdin closed, unpacked; the agent sees it read-only
    // through the shared claim.
    let files = [("hello.txt", "hello from the fake\n"), ("sub/dir/n.txt", "42\n")];
    kube.upload_archive(&workspace.name, &p.workspace_folder, tar_of(&files)).await.unwrap();
    let cat = argv(&["cat", &format!("{}/sub/dir/n.txt", p.workspace_folder)]);
    assert_eq!(run(&kube, &workspace.name, &cat).await, (0, "42\n".into(), String::new()));
    let seen = run(&kube, &agent.name, &argv(&["cat", &format!("{}/hello.txt", plan::MAIN_WORKSPACE)])).await;
    assert_eq!(seen, (0, "hello from the fake\n".into(), String::new()));
    let e = kube.upload_archive(&workspace.name, "/tmp", b"not a tar archive".repeat(100)).await.unwrap_err();
    assert!(e.to_string().contains("tar exited with"), "{e}");

    // logs: what the container's main process wrote.
    let line = format!("log line {suffix}");
    let spec = argv(&["sh", "-c", &format!("echo first > /proc/1/fd/1; echo '{line}' > /proc/1/fd/1")]);
    assert_eq!(run(&kube, &workspace.name, &spec).await.0, 0);
    let logs: Vec<Output> = kube.logs(&workspace.name, false, Some(1)).map(|o| o.unwrap()).collect().await;
    let logged: String = logs
        .iter()
        .map(|o| match o {
            Output::Stdout(b) | Output::Stderr(b) => text(b),
        })
        .collect();
    assert_eq!(logged, format!("{line}\n"), "tail 1");

    // The agent's walls, from inside: capabilities, no-new-privileges, its uid, and no
    // network but loopback (its Pod's NetworkPolicy, played as --network none).
    let (code, status, _) = run(&kube, &agent.name, &argv(&["cat", "/proc/self/status"])).await;
    assert_eq!(code, 0);
    assert_eq!((field(&status, "CapEff:"), field(&status, "NoNewPrivs:")), ("0000000000000400".into(), "1".into()));
    assert_eq!(field(&status, "Uid:").split_whitespace().next(), Some("1000"));
    let (_, nets, _) = run(&kube, &agent.name, &argv(&["ls", "/sys/class/net"])).await;
    assert_eq!(nets.split_whitespace().collect::<Vec<_>>(), ["lo"], "the agent has loopback only");
    let (_, nets, _) = run(&kube, &workspace.name, &argv(&["ls", "/sys/class/net"])).await;
    assert!(nets.split_whitespace().any(|n| n != "lo"), "the workspace keeps its network: {nets}");

    // Removal leaves nothing, in the API or in podman.
    kube.remove_pod(&p.pod.name).await.unwrap();
    assert!(!kube.pod_exists(&p.pod.name).await.unwrap());
    for c in [&workspace.name, &agent.name] {
        assert!(!podman_exists("pod", c), "podman pod {c} is gone");
    }
    let e = kube.remove_pod(&p.pod.name).await.unwrap_err();
    assert!(matches!(e, EngineError::NotFound { .. }), "{e:?}");
    for v in &planned {
        kube.remove_volume(v).await.unwrap();
        assert!(!podman_exists("volume", v), "podman volume {v} is gone");
    }
    for s in &p.secrets {
        kube.remove_secret(&s.name).await.unwrap();
        assert!(!podman(&["secret", "ls", "--format", "{{.Name}}"]).lines().any(|l| l == s.name), "secret {}", s.name);
    }
    assert!(!kube.secret_exists(pw_secret).await.unwrap());
    assert_eq!(leftovers(&env.instance), Vec::<String>::new());

    // What went over the wire: the agent's wall before its Pod, exec over its subresource,
    // and no server error.
    let requests = fake.requests();
    let at = |method: &str, path: &str| {
        requests
            .iter()
            .position(|r| r["method"] == method && r["path"].as_str() == Some(path))
            .unwrap_or_else(|| panic!("no {method} {path} in {requests:#?}"))
    };
    let ns = "/api/v1/namespaces/devaipod-it";
    let policies = "/apis/networking.k8s.io/v1/namespaces/devaipod-it/networkpolicies";
    let agent_pod = requests
        .iter()
        .position(|r| r["method"] == "POST" && r["body"]["metadata"]["name"].as_str() == Some(&agent.name))
        .unwrap_or_else(|| panic!("no POST of the agent's Pod in {requests:#?}"));
    assert_eq!(requests[agent_pod]["path"].as_str(), Some(format!("{ns}/pods").as_str()));
    assert!(at("POST", policies) < agent_pod, "the agent's walls come before its Pod");
    at("DELETE", &format!("{policies}/{}-walls", agent.name));
    let exec_path = format!("{ns}/pods/{}/exec", agent.name);
    let exec = requests
        .iter()
        .find(|r| {
            r["path"].as_str() == Some(&exec_path) && r["query"]["command"] == json!(["cat", "/proc/self/status"])
        })
        .unwrap_or_else(|| panic!("no exec of cat /proc/self/status in {requests:#?}"));
    assert_eq!((&exec["method"], &exec["status"]), (&json!("GET"), &json!(101)));
    assert_eq!((&exec["query"]["stdout"], &exec["query"]["stderr"]), (&json!("true"), &json!("true")));
    assert!(requests.iter().all(|r| r["status"].as_u64().is_some_and(|s| s < 500)), "{requests:#?}");
    eprintln!("kube engine on the fake: objects made in {made:?}, all done in {:?}", start.elapsed());
}
