use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::*;
use crate::agent::config as agent_config;
use crate::config;
use crate::devcontainer::HostContext;
use crate::devcontainer::compose::Condition;

fn request() -> PlanRequest {
    PlanRequest {
        name: WorkspaceName::new("hello").unwrap(),
        instance: "t1".into(),
        source: "/src/hello".into(),
        image_override: None,
        host_env: BTreeMap::from([
            ("TERM".to_owned(), "xterm".to_owned()),
            ("GH_TOKEN".to_owned(), "ghp_supersecret".to_owned()),
            ("UNLISTED".to_owned(), "x".to_owned()),
        ]),
        opencode_dir: "/cache/opencode/bin".into(),
        checkout_dir: "/tmp/checkout/hello".into(),
        agent_password: Redacted("pw-123".into()),
        sandbox: SandboxMounts {
            socket_dir: "/run/d/gator/hello".into(),
            api_dir: "/run/d/agent/hello".into(),
            bridge: "/usr/bin/devaipod".into(),
            seccomp: Some("/data/seccomp-agent.json".into()),
        },
    }
}

fn config(text: &str) -> Config {
    config::parse(text, Path::new("t.toml")).unwrap()
}

fn loaded(json: &str) -> Loaded {
    let path = PathBuf::from("/tmp/checkout/hello/.devcontainer/devcontainer.json");
    let host = HostContext {
        env: BTreeMap::new(),
        local_workspace_folder: "/tmp/checkout/hello".into(),
        devcontainer_id: "id".into(),
    };
    Loaded { config: devcontainer::parse(json, &path, &host).unwrap(), path, features: Vec::new(), compose: None }
}

/// A devcontainer.json with its compose files read from `files` (path beside it, text).
fn compose_loaded(json: &str, files: &[(&str, &str)]) -> Loaded {
    let mut l = loaded(json);
    let dir = l.dir().to_owned();
    let texts: Vec<(PathBuf, String)> = files.iter().map(|(f, t)| (dir.join(f), t.to_string())).collect();
    let env = BTreeMap::from([("DB_PASSWORD".to_owned(), "dev".to_owned())]);
    let project = devcontainer::compose::parse_files(&texts, &env, Path::new("/tmp/checkout/hello")).unwrap();
    l.compose = Some(project);
    l
}

const TRUSTED: &str = r#"
[env]
allowlist = ["TERM", "NOT_SET_ON_HOST"]
vars = { EDITOR = "vi" }
[trusted.env]
allowlist = ["GH_TOKEN"]
vars = { NPM_TOKEN = "npm_secret" }
[trusted]
secrets = ["API_KEY=my_api_key"]
"#;

#[test]
fn plan_without_devcontainer_uses_default_image_and_design_names() {
    let p = plan(&Config::default(), None, &request()).unwrap();
    assert_eq!(p.image, ImagePlan::Existing { reference: config::DEFAULT_IMAGE.into() });
    assert_eq!(p.pod.name, "devaipod-hello");
    assert_eq!(p.pod.hostname, "hello");
    assert_eq!(p.workspace.name, "devaipod-hello-workspace");
    assert_eq!(p.agent.name, "devaipod-hello-agent");
    assert_eq!(p.workspace_folder, "/workspaces/hello");
    let vols: Vec<&str> = p.volumes.iter().map(|v| v.name.as_str()).collect();
    assert_eq!(vols, ["devaipod-hello-workspace", "devaipod-hello-agent-workspace", "devaipod-hello-agent-home"]);
    let secret_labels = p.secrets.iter().map(|s| &s.labels);
    for labels in p.volumes.iter().map(|v| &v.labels).chain(secret_labels).chain([
        &p.pod.labels,
        &p.workspace.labels,
        &p.agent.labels,
    ]) {
        assert_eq!(labels[naming::LABEL_INSTANCE], "t1");
        assert_eq!(labels[naming::LABEL_WORKSPACE], "hello");
    }
    assert_eq!(p.workspace.labels[naming::LABEL_ROLE], "workspace");
    assert_eq!(p.agent.labels[naming::LABEL_ROLE], "agent");
    assert_eq!(p.pod.labels[naming::LABEL_SOURCE], "/src/hello");
    assert!(p.warnings.is_empty(), "{:?}", p.warnings);
    assert_eq!(p.workspace.command, IDLE_COMMAND);
    // The relay runs the agent, which serves on its own loopback only.
    assert_eq!(
        p.agent.command,
        [
            GATOR_BRIDGE,
            "agent-shim",
            "--api",
            "/run/devaipod/agent/api.sock",
            "--to",
            "127.0.0.1:4096",
            "--egress-port",
            "3128",
            "--egress",
            "/run/devaipod/gator/egress.sock",
            "--",
            "/opt/devaipod/bin/opencode",
            "serve",
            "--port",
            "4096",
            "--hostname",
            "127.0.0.1"
        ]
    );
    assert!(p.pod.ports.is_empty(), "the agent's API is its socket, not a port: {:?}", p.pod.ports);
    assert_eq!((p.workspace.network, p.agent.network), (ContainerNetwork::Pod, ContainerNetwork::LoopbackOnly));
    assert_eq!(p.secrets.len(), 1);
    assert_eq!(p.secrets[0].name, "devaipod-hello-agent-password");
    assert_eq!(p.agent.secret_env["OPENCODE_SERVER_PASSWORD"], "devaipod-hello-agent-password");
    assert_eq!(p.agent.env["DEVAIPOD_LLM_API_KEY"], agent_config::PLACEHOLDER_KEY);
    assert!(p.workspace.init && p.agent.init);
}

#[test]
fn agent_is_hardened_and_sees_the_workspace_read_only() {
    let p = plan(
        &config(TRUSTED),
        Some(&loaded(r#"{"capAdd": ["SYS_PTRACE"], "privileged": true, "runArgs": ["--device=/dev/fuse"]}"#)),
        &request(),
    )
    .unwrap();
    let a = &p.agent;
    assert_eq!(a.cap_drop, ["ALL"]);
    assert_eq!(a.cap_add, ["NET_BIND_SERVICE"]);
    assert!(a.no_new_privileges && !a.privileged);
    assert!(a.devices.is_empty());
    assert_eq!(a.security_opt, ["seccomp=/data/seccomp-agent.json"], "no user namespaces");
    assert_eq!(a.network, ContainerNetwork::LoopbackOnly);
    assert_eq!(a.user.as_deref(), Some(AGENT_USER));
    assert_eq!(
        a.mounts,
        [
            MountPlan::Volume {
                name: "devaipod-hello-agent-workspace".into(),
                target: "/workspaces/hello".into(),
                readonly: false
            },
            MountPlan::Volume {
                name: "devaipod-hello-workspace".into(),
                target: MAIN_WORKSPACE.into(),
                readonly: true
            },
            MountPlan::Volume { name: "devaipod-hello-agent-home".into(), target: AGENT_HOME.into(), readonly: false },
            MountPlan::Bind { source: "/cache/opencode/bin".into(), target: INJECT_DIR.into(), readonly: true },
            MountPlan::Bind { source: "/run/d/gator/hello".into(), target: GATOR_SOCKET_DIR.into(), readonly: true },
            MountPlan::Bind { source: "/run/d/agent/hello".into(), target: AGENT_API_DIR.into(), readonly: false },
            MountPlan::Bind { source: "/usr/bin/devaipod".into(), target: GATOR_BRIDGE.into(), readonly: true },
        ]
    );
    // The devcontainer's privileges go to the human's container only.
    assert_eq!(p.workspace.cap_add, ["SYS_PTRACE"]);
    assert!(p.workspace.privileged);
    assert_eq!(p.workspace.devices, ["/dev/fuse"]);
}

#[test]
fn env_is_partitioned_and_trusted_values_never_print() {
    let p = plan(&config(TRUSTED), Some(&loaded(r#"{"containerEnv": {"FROM_REPO": "1"}}"#)), &request()).unwrap();
    let agent_env: Vec<&str> = p.agent.env.keys().map(String::as_str).collect();
    assert_eq!(
        agent_env,
        [
            "DEVAIPOD_LLM_API_KEY",
            "EDITOR",
            "HOME",
            "HTTPS_PROXY",
            "HTTP_PROXY",
            "NO_PROXY",
            "OPENCODE_CONFIG_CONTENT",
            "OPENCODE_DISABLE_MODELS_FETCH",
            "TERM",
            "http_proxy",
            "https_proxy",
            "no_proxy"
        ],
        "agent: allowlisted env, fixed vars and its own settings only"
    );
    assert!(p.agent.trusted_env.is_empty());
    let agent_secrets: Vec<&str> = p.agent.secret_env.keys().map(String::as_str).collect();
    assert_eq!(agent_secrets, ["OPENCODE_SERVER_PASSWORD"], "no trusted secret reaches the agent");
    assert_eq!(p.workspace.env["FROM_REPO"], "1");
    assert_eq!(p.workspace.env["TERM"], "xterm");
    assert!(!p.workspace.env.contains_key("UNLISTED"));
    assert_eq!(p.workspace.trusted_env["GH_TOKEN"].0, "ghp_supersecret");
    assert_eq!(p.workspace.trusted_env["NPM_TOKEN"].0, "npm_secret");
    assert_eq!(p.workspace.secret_env["API_KEY"], "my_api_key");
    let printed = serde_json::to_string(&p).unwrap();
    assert!(
        !printed.contains("ghp_supersecret") && !printed.contains("npm_secret") && !printed.contains("pw-123"),
        "{printed}"
    );
    assert!(printed.contains(r#""GH_TOKEN":"<redacted>""#));
    assert!(!format!("{p:?}").contains("ghp_supersecret"));
    for labels in [&p.pod.labels, &p.workspace.labels, &p.agent.labels] {
        assert!(!labels.values().any(|v| v.contains("secret")), "{labels:?}");
    }
}

#[test]
fn build_ports_mounts_and_lifecycle_come_from_devcontainer_json() {
    let p = plan(
        &Config::default(),
        Some(&loaded(
            r#"{
            "build": {"dockerfile": "Containerfile", "context": "..", "args": {"V": "2"}, "target": "dev"},
            "workspaceFolder": "/src",
            "forwardPorts": [3000, 3000, "db:5432"],
            "mounts": [{"type": "volume", "target": "/cache"}, "type=bind,source=/etc/hosts,target=/h,readonly", "type=tmpfs,target=/scratch"],
            "containerUser": "vscode",
            "remoteUser": "dev",
            "containerEnv": {"PATH": "/usr/bin"},
            "remoteEnv": {"PATH": "${containerEnv:PATH}:/extra", "GONE": null},
            "postCreateCommand": {"a": "make", "b": ["npm", "ci"]},
            "features": {"ghcr.io/devcontainers/features/go:1": {}}
        }"#,
        )),
        &request(),
    )
    .unwrap();
    let ImagePlan::Build(b) = &p.image else { panic!("build plan") };
    assert_eq!(b.context_dir, Path::new("/tmp/checkout/hello"));
    assert_eq!(b.dockerfile, Path::new("/tmp/checkout/hello/.devcontainer/Containerfile"));
    assert_eq!((b.args["V"].as_str(), b.target.as_deref()), ("2", Some("dev")));
    assert_eq!(p.workspace.image, b.tag);
    assert_eq!(p.agent.image, b.tag);
    assert_eq!(p.pod.ports, [3000]);
    assert_eq!(p.workspace_folder, "/src");
    assert_eq!(p.agent.workdir, "/src");
    assert_eq!(p.workspace.user.as_deref(), Some("vscode"));
    assert_eq!(p.lifecycle.user.as_deref(), Some("dev"));
    assert_eq!(p.lifecycle.env["PATH"].as_deref(), Some("/usr/bin:/extra"));
    assert_eq!(p.lifecycle.env["GONE"], None);
    assert_eq!(
        p.workspace.mounts[1],
        MountPlan::Volume { name: "devaipod-hello-mount-0".into(), target: "/cache".into(), readonly: false }
    );
    assert_eq!(
        p.workspace.mounts[2],
        MountPlan::Bind { source: "/etc/hosts".into(), target: "/h".into(), readonly: true }
    );
    assert_eq!(p.workspace.mounts[3], MountPlan::Tmpfs { target: "/scratch".into() });
    assert!(p.volumes.iter().any(|v| v.name == "devaipod-hello-mount-0" && v.labels[naming::LABEL_INSTANCE] == "t1"));
    assert!(p.warnings.iter().any(|w| w.contains("db:5432")));
    assert!(p.warnings.iter().any(|w| w.contains("features are not fetched yet") && w.contains("features/go:1")));
    assert!(p.features.is_empty());
}

#[test]
fn image_override_wins_over_compose_with_a_warning() {
    let mut compose = compose_loaded(
        r#"{"dockerComposeFile": "c.yml", "service": "app"}"#,
        &[("c.yml", "services:\n  app:\n    image: x\n")],
    );
    let mut req = request();
    req.image_override = Some("localhost/other:1".into());
    let p = plan(&Config::default(), Some(&compose), &req).unwrap();
    assert_eq!(p.image.reference(), "localhost/other:1");
    assert!(p.compose.is_none());
    assert!(p.warnings.iter().any(|w| w.contains("dockerComposeFile is ignored: --image")), "{:?}", p.warnings);
    // Without the files read, planning says so rather than guessing.
    compose.compose = None;
    let e = plan(&Config::default(), Some(&compose), &request()).unwrap_err();
    assert!(e.to_string().contains("the compose files were not read"), "{e}");
}

#[test]
fn a_mount_over_the_repository_is_refused() {
    let e =
        plan(&Config::default(), Some(&loaded(r#"{"mounts": ["type=volume,target=/workspaces/hello"]}"#)), &request())
            .unwrap_err();
    assert!(e.to_string().contains("where devaipod puts the repository"), "{e}");
}

#[test]
fn every_conformance_file_plans_or_gives_a_clear_error() {
    let root = crate::devcontainer::tests::conformance_root();
    for rel in crate::devcontainer::tests::conformance_files(&root) {
        let host =
            HostContext { env: BTreeMap::new(), local_workspace_folder: "/tmp/r".into(), devcontainer_id: "x".into() };
        let mut l = devcontainer::load(&root.join(&rel), &host).unwrap();
        // The shared compose configs come without their compose files: reading them must
        // fail naming the missing file, and nothing else.
        let checkout = l.dir().parent().unwrap().to_owned();
        if let Err(e) = devcontainer::load_compose(&mut l, &host, &checkout) {
            let first = l.config.docker_compose_file.as_ref().unwrap().to_vec()[0].clone();
            let missing = devcontainer::compose::normalize(&l.dir().join(first));
            assert_eq!(
                e.to_string(),
                format!("cannot read {}: No such file or directory (os error 2)", missing.display()),
                "{rel}"
            );
            continue;
        }
        match plan(&Config::default(), Some(&l), &request()) {
            Ok(p) => assert!(!p.image.reference().is_empty(), "{rel}"),
            Err(e) => panic!("{rel}: {e}"),
        }
    }
}

#[test]
fn the_llm_key_never_enters_a_container() {
    let c = config("[agent]\nbase-url = \"http://llm.test/v1\"\nmodel = \"m\"\napi-key-env = \"GH_TOKEN\"\n");
    let p = plan(&c, None, &request()).unwrap();
    // Kept as a podman secret no container mounts: the daemon's egress proxy reads it.
    assert_eq!(p.secrets[1].name, "devaipod-hello-llm-key");
    assert_eq!(p.secrets[1].value.0, "ghp_supersecret");
    for c in [&p.workspace, &p.agent] {
        assert!(!c.secret_env.values().any(|s| s.contains("llm-key")), "{:?}", c.secret_env);
        assert!(!format!("{:?}", c.env).contains("ghp_supersecret"));
    }
    assert_eq!(p.agent.env["DEVAIPOD_LLM_API_KEY"], agent_config::PLACEHOLDER_KEY);
    // The agent's provider is the proxy's LLM route on its loopback, and its way out is the relay.
    let cfg: serde_json::Value = serde_json::from_str(&p.agent.env["OPENCODE_CONFIG_CONTENT"]).unwrap();
    assert_eq!(cfg["provider"]["devaipod"]["options"]["baseURL"], "http://127.0.0.1:3128/llm");
    assert_eq!(p.agent.env["HTTPS_PROXY"], "http://127.0.0.1:3128");

    let c = config("[agent]\napi-key-secret = \"my_llm_key\"\n");
    let p = plan(&c, None, &request()).unwrap();
    assert!(!p.agent.secret_env.values().any(|s| s == "my_llm_key"), "the user's secret is read by the daemon only");
    assert_eq!(p.secrets.len(), 1);

    let c = config("[agent]\napi-key-env = \"NOT_SET_ANYWHERE\"\n");
    let e = plan(&c, None, &request()).unwrap_err().to_string();
    assert!(e.contains("api-key-env names NOT_SET_ANYWHERE, which is not set"), "{e}");
}

#[test]
fn a_folder_over_the_agent_mounts_is_refused() {
    for folder in ["/", "/home/agent", "/mnt", "/opt/devaipod/bin/x"] {
        let e = plan(&Config::default(), Some(&loaded(&format!(r#"{{"workspaceFolder": "{folder}"}}"#))), &request())
            .unwrap_err()
            .to_string();
        assert!(e.contains("where devaipod mounts the agent's own files"), "{folder}: {e}");
    }
}

#[test]
fn gator_reaches_the_agent_only_through_its_socket_directory() {
    let req = request();
    let p = plan(&config(""), None, &req).unwrap();
    let gator_dir =
        MountPlan::Bind { source: "/run/d/gator/hello".into(), target: GATOR_SOCKET_DIR.into(), readonly: true };
    let bridge = MountPlan::Bind { source: "/usr/bin/devaipod".into(), target: GATOR_BRIDGE.into(), readonly: true };
    assert!(p.agent.mounts.contains(&gator_dir) && p.agent.mounts.contains(&bridge), "{:?}", p.agent.mounts);
    assert!(!p.workspace.mounts.contains(&gator_dir), "the human's container has no gator socket");
    let config: serde_json::Value = serde_json::from_str(&p.agent.env["OPENCODE_CONFIG_CONTENT"]).unwrap();
    assert_eq!(
        config["mcp"]["gator"]["command"],
        serde_json::json!([GATOR_BRIDGE, "gator-bridge", "/run/devaipod/gator/gator.sock"])
    );
    // No token, scope or GitHub setting travels into the pod.
    let env = format!("{:?}{:?}", p.agent.env, p.agent.secret_env);
    assert!(!env.contains("GH_TOKEN") && !env.contains("github"), "{env}");
}

#[test]
fn remote_env_and_post_attach_travel_with_the_pod_for_interactive_sessions() {
    let dc =
        r#"{ "remoteEnv": { "P": "${containerEnv:PATH}:/x", "GONE": null }, "postAttachCommand": ["echo", "hi"] }"#;
    let plan_dc = |json: &str| plan(&Config::default(), Some(&loaded(json)), &request()).unwrap();
    let p = plan_dc(dc);
    let env: serde_json::Value = serde_json::from_str(&p.pod.labels[naming::LABEL_REMOTE_ENV]).unwrap();
    assert_eq!(env, serde_json::json!({ "P": "${containerEnv:PATH}:/x", "GONE": null }));
    assert_eq!(p.pod.labels[naming::LABEL_POST_ATTACH], r#"[["echo","hi"]]"#);
    assert!(!p.warnings.iter().any(|w| w.contains("postAttachCommand")), "{:?}", p.warnings);
    let plain = plan_dc("{}");
    assert!(!plain.pod.labels.contains_key(naming::LABEL_REMOTE_ENV));
    assert!(!plain.pod.labels.contains_key(naming::LABEL_POST_ATTACH));
}

fn resolved(id: &str, meta: serde_json::Value) -> devcontainer::features::ResolvedFeature {
    devcontainer::features::ResolvedFeature {
        id: id.into(),
        dir: format!("/cache/{id}").into(),
        digest: format!("sha256:{id}"),
        meta: serde_json::from_value(meta).unwrap(),
        options: BTreeMap::new(),
    }
}

/// Features' privileges, mounts, entrypoints and commands reach the workspace container;
/// the agent keeps its walls (only the image, derived by `up`, is shared).
#[test]
fn features_contribute_to_the_workspace_container_only_and_run_their_commands_first() {
    let mut l = loaded(
        r#"{"image": "localhost/img:1", "capAdd": ["SYS_PTRACE"],
            "features": {"./dind": {}, "./tools": {}},
            "overrideFeatureInstallOrder": ["./tools"],
            "postCreateCommand": "echo config"}"#,
    );
    l.features = vec![
        resolved(
            "./dind",
            serde_json::json!({"id": "dind", "privileged": true, "capAdd": ["SYS_PTRACE", "NET_ADMIN"],
                "securityOpt": ["seccomp=unconfined"], "entrypoint": "/usr/local/share/docker-init.sh",
                "mounts": [{"type": "volume", "source": "dind-var", "target": "/var/lib/docker"}],
                "postCreateCommand": "echo dind", "postStartCommand": ["dockerd-check"]}),
        ),
        resolved("./tools", serde_json::json!({"id": "tools", "postCreateCommand": "echo tools"})),
    ];
    let p = plan(&Config::default(), Some(&l), &request()).unwrap();
    let ids: Vec<&str> = p.features.iter().map(|f| f.id.as_str()).collect();
    assert_eq!(ids, ["./tools", "./dind"], "overrideFeatureInstallOrder first");
    assert!(p.workspace.privileged);
    assert_eq!(p.workspace.cap_add, ["SYS_PTRACE", "NET_ADMIN"], "once each");
    assert_eq!(p.workspace.security_opt, ["seccomp=unconfined"]);
    assert_eq!(p.workspace.command, ["/usr/local/share/docker-init.sh", "/run/podman-init", "-P"]);
    assert!(p.workspace.mounts.contains(&MountPlan::Volume {
        name: "dind-var".into(),
        target: "/var/lib/docker".into(),
        readonly: false
    }));
    let shell = |s: &str| LifecycleCommand::Shell(s.into());
    assert_eq!(p.lifecycle.post_create, [shell("echo tools"), shell("echo dind"), shell("echo config")]);
    assert_eq!(p.lifecycle.post_start, [LifecycleCommand::Argv(vec!["dockerd-check".into()])]);
    // The agent: none of it.
    assert!(!p.agent.privileged);
    assert_eq!(p.agent.cap_add, ["NET_BIND_SERVICE"]);
    assert_eq!(p.agent.cap_drop, ["ALL"]);
    assert!(p.agent.mounts.iter().all(|m| m.target() != "/var/lib/docker"));
    assert!(!p.agent.command.iter().any(|c| c.contains("docker-init")));
    assert!(p.warnings.is_empty(), "{:?}", p.warnings);

    l.features[1].meta.depends_on = BTreeMap::from([("./dind".into(), serde_json::json!({}))]);
    l.features[0].meta.depends_on = BTreeMap::from([("./tools".into(), serde_json::json!({}))]);
    let e = plan(&Config::default(), Some(&l), &request()).unwrap_err();
    assert!(e.to_string().contains("features: features depend on each other in a circle"), "{e}");
}

/// The shape people write: the app built from the repository, a database from an image with
/// a named volume and a health check, a one-shot migration, the app waiting for both.
const APP_DB: &str = r#"
services:
  app:
    build:
      context: ..
      dockerfile: .devcontainer/Dockerfile
    volumes:
      - ..:/workspaces/hello:cached
      - cache:/home/dev/.cache
    command: sleep infinity
    environment:
      DATABASE_URL: postgres://app:${DB_PASSWORD}@db:5432/app
      FROM_COMPOSE: compose
    cap_add: [SYS_PTRACE]
    depends_on:
      db:
        condition: service_healthy
      migrate:
        condition: service_completed_successfully
  db:
    image: localhost/postgres:16
    environment:
      POSTGRES_PASSWORD: ${DB_PASSWORD}
    volumes:
      - pgdata:/var/lib/postgresql/data
      - ../db/init.sql:/docker-entrypoint-initdb.d/init.sql:ro
    ports:
      - "5432:5432"
    healthcheck:
      test: ["CMD-SHELL", "pg_isready -U app"]
      interval: 2s
  migrate:
    build: ../db
    command: ["./migrate", "up"]
    depends_on: [db]
  docs:
    image: localhost/docs:1
    profiles: [docs]
volumes:
  pgdata:
  cache:
"#;

#[test]
fn a_compose_project_becomes_containers_of_the_pod() {
    let l = compose_loaded(
        r#"{"dockerComposeFile": ["docker-compose.yml"], "service": "app", "containerEnv": {"FROM_COMPOSE": "json"}}"#,
        &[("docker-compose.yml", APP_DB)],
    );
    let p = plan(&Config::default(), Some(&l), &request()).unwrap();
    // The workspace container is the `app` service: its build, its repository mount's place,
    // its environment (containerEnv wins), volumes and capabilities; devaipod's idle process.
    let ImagePlan::Build(b) = &p.image else { panic!("{:?}", p.image) };
    assert_eq!(b.tag, build_tag("t1", &request().name));
    assert_eq!(b.context_dir, Path::new("/tmp/checkout/hello"));
    assert_eq!(b.dockerfile, Path::new("/tmp/checkout/hello/.devcontainer/Dockerfile"));
    assert_eq!(p.workspace_folder, "/workspaces/hello");
    assert_eq!(p.workspace.env["DATABASE_URL"], "postgres://app:dev@db:5432/app");
    assert_eq!(p.workspace.env["FROM_COMPOSE"], "json");
    assert_eq!(p.workspace.command, IDLE_COMMAND);
    assert!(p.workspace.cap_add.contains(&"SYS_PTRACE".to_owned()));
    assert!(p.workspace.mounts.contains(&MountPlan::Volume {
        name: "devaipod-hello_cache".into(),
        target: "/home/dev/.cache".into(),
        readonly: false
    }));
    // The agent is what it always is: the same image, no network but loopback.
    assert_eq!(p.agent.network, ContainerNetwork::LoopbackOnly);
    assert_eq!(p.agent.image, p.workspace.image);
    assert!(p.agent.env.keys().all(|k| k != "DATABASE_URL" && k != "POSTGRES_PASSWORD"));

    // The other services (not the profiled one), in start order, labelled as the pod's.
    let c = p.compose.as_ref().unwrap();
    let names: Vec<&str> = c.services.iter().map(|s| s.service.as_str()).collect();
    assert_eq!(names, ["db", "migrate"]);
    let db = &c.services[0];
    assert_eq!(db.image, ImagePlan::Existing { reference: "localhost/postgres:16".into() });
    assert_eq!(db.container.name, "devaipod-hello_db");
    assert_eq!(db.container.image, "localhost/postgres:16");
    assert_eq!(db.container.network, ContainerNetwork::Pod);
    assert!(db.container.image_entrypoint && db.container.command.is_empty());
    assert_eq!(db.container.workdir, "");
    assert_eq!(db.container.env["POSTGRES_PASSWORD"], "dev");
    assert_eq!(db.container.labels[naming::LABEL_ROLE], "service");
    assert_eq!(db.container.labels[naming::LABEL_SERVICE], "db");
    assert_eq!(db.container.labels[naming::LABEL_INSTANCE], "t1");
    assert_eq!(db.container.labels[naming::LABEL_WORKSPACE], "hello");
    assert_eq!(
        db.container.mounts,
        [
            MountPlan::Volume {
                name: "devaipod-hello_pgdata".into(),
                target: "/var/lib/postgresql/data".into(),
                readonly: false
            },
            MountPlan::Bind {
                source: "/tmp/checkout/hello/db/init.sql".into(),
                target: "/docker-entrypoint-initdb.d/init.sql".into(),
                readonly: true
            },
        ]
    );
    assert_eq!(db.healthcheck.as_ref().unwrap().argv, ["/bin/sh", "-c", "pg_isready -U app"]);
    let migrate = &c.services[1];
    let ImagePlan::Build(mb) = &migrate.image else { panic!() };
    assert_eq!(mb.tag, "localhost/devaipod-build/t1-hello_migrate:latest");
    assert_eq!(mb.context_dir, Path::new("/tmp/checkout/hello/db"));
    assert_eq!(migrate.container.image, mb.tag);
    assert!(migrate.container.image_entrypoint);
    assert_eq!(migrate.container.command, ["./migrate", "up"]);
    assert_eq!(p.pod.labels[naming::LABEL_SERVICE_IMAGES], mb.tag);

    // Started in order; the workspace waits for a healthy db and a finished migration.
    let order: Vec<&str> = c.start.iter().map(|s| s.container.as_str()).collect();
    assert_eq!(order, ["devaipod-hello_db", "devaipod-hello_migrate", "devaipod-hello-workspace"]);
    let waits: Vec<(&str, Condition)> = c.start[2].waits.iter().map(|w| (w.container.as_str(), w.condition)).collect();
    assert_eq!(
        waits,
        [
            ("devaipod-hello_db", Condition::ServiceHealthy),
            ("devaipod-hello_migrate", Condition::ServiceCompletedSuccessfully)
        ]
    );
    assert_eq!(c.start[1].waits[0].condition, Condition::ServiceStarted);

    // Names resolve to the pod's own address; ports are published like forwardPorts; the
    // named volumes are the pod's, removed by delete.
    for h in ["app:127.0.0.1", "db:127.0.0.1", "migrate:127.0.0.1"] {
        assert!(p.pod.add_hosts.contains(&h.to_owned()), "{:?}", p.pod.add_hosts);
    }
    assert!(!p.pod.add_hosts.iter().any(|h| h.starts_with("docs:")));
    assert_eq!(p.pod.ports, [5432]);
    for v in ["devaipod-hello_pgdata", "devaipod-hello_cache"] {
        let vol = p.volumes.iter().find(|x| x.name == v).unwrap_or_else(|| panic!("{v}: {:?}", p.volumes));
        assert_eq!(vol.labels[naming::LABEL_WORKSPACE], "hello");
    }
    assert!(
        p.warnings.iter().any(|w| w.contains("ports[0]`: published on 127.0.0.1 at a free port")),
        "{:?}",
        p.warnings
    );
    assert!(!p.warnings.iter().any(|w| w.contains("command")), "sleep infinity needs no warning: {:?}", p.warnings);

    // The service containers' libpod specs: the image's entrypoint kept, the command as CMD.
    let spec =
        serde_json::to_value(crate::pods::spec::container("devaipod-hello", &migrate.container).unwrap()).unwrap();
    assert!(spec.get("entrypoint").is_none(), "{spec}");
    assert_eq!(spec["command"], serde_json::json!(["./migrate", "up"]));
    assert!(spec.get("work_dir").is_none(), "{spec}");
    let spec = serde_json::to_value(crate::pods::spec::container("devaipod-hello", &db.container).unwrap()).unwrap();
    assert!(spec.get("entrypoint").is_none() && spec.get("command").is_none(), "{spec}");
}

#[test]
fn compose_conflicts_name_the_key_and_line() {
    let two_on_one_port =
        "services:\n  app:\n    image: x\n    ports: ['8080']\n  web:\n    image: y\n    ports:\n      - 8080\n";
    let l = compose_loaded(r#"{"dockerComposeFile": "c.yml", "service": "app"}"#, &[("c.yml", two_on_one_port)]);
    let e = plan(&Config::default(), Some(&l), &request()).unwrap_err().to_string();
    assert_eq!(
        e,
        "/tmp/checkout/hello/.devcontainer/c.yml:8: `services.web.ports`: port 8080 is also published by service `app`: the services of a pod share one network, so two cannot listen on one port"
    );
    // A running command of the workspace's service is not run, and the user hears why.
    let l = compose_loaded(
        r#"{"dockerComposeFile": "c.yml", "service": "app"}"#,
        &[(
            "c.yml",
            "services:\n  app:\n    image: x\n    command: npm start\n  db:\n    image: y\n  w:\n    image: z\n    depends_on:\n      db:\n        condition: service_healthy\n",
        )],
    );
    let p = plan(&Config::default(), Some(&l), &request()).unwrap();
    assert!(
        p.warnings.iter().any(|w| w.contains("services.app: its command and entrypoint do not run")),
        "{:?}",
        p.warnings
    );
    assert!(
        p.warnings.iter().any(|w| w.contains("services.w.depends_on.db: service_healthy, but `db` has no healthcheck")),
        "{:?}",
        p.warnings
    );
    assert_eq!(p.workspace_folder, "/workspaces/hello");
}

/// The compose fixtures of this repository (`tests/fixtures/compose/`), read from disk as
/// `up` reads them (`.env`, `env_file`, several files), each planned or refused naming the
/// file, the line and the key.
#[test]
fn compose_fixtures_plan_or_refuse_naming_the_key() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/compose");
    let load = |name: &str| {
        let repo = root.join(name);
        let host = HostContext {
            env: BTreeMap::new(),
            local_workspace_folder: repo.to_string_lossy().into_owned(),
            devcontainer_id: "x".into(),
        };
        let mut l = devcontainer::load(&repo.join(".devcontainer/devcontainer.json"), &host).unwrap();
        devcontainer::load_compose(&mut l, &host, &repo).map(|()| l).map_err(|e| e.to_string())
    };
    let planned = |name: &str| {
        let l = load(name).unwrap_or_else(|e| panic!("{name}: {e}"));
        plan(&Config::default(), Some(&l), &request()).unwrap_or_else(|e| panic!("{name}: {e}"))
    };
    let services = |p: &PodPlan| -> Vec<String> {
        p.compose.as_ref().unwrap().services.iter().map(|s| s.service.clone()).collect()
    };

    let p = planned("node-mongo");
    assert_eq!(services(&p), ["db"]);
    assert_eq!(p.workspace_folder, "/workspaces/node-mongo");
    assert!(matches!(&p.image, ImagePlan::Build(b) if b.dockerfile.ends_with("node-mongo/.devcontainer/Dockerfile")));
    let db = &p.compose.as_ref().unwrap().services[0];
    assert_eq!(
        db.container.mounts[0],
        MountPlan::Volume { name: "devaipod-hello_mongodb-data".into(), target: "/data/db".into(), readonly: false }
    );
    assert_eq!(p.pod.ports, [3000]);
    assert!(
        p.warnings.iter().any(|w| w.contains("docker-compose.yml:17: `services.db.restart` is ignored")),
        "{:?}",
        p.warnings
    );

    let p = planned("python-postgres");
    assert_eq!(services(&p), ["db"], "runServices leaves pgadmin (a profile) out");
    let env = &p.workspace.env;
    for (k, v) in [
        ("DJANGO_SETTINGS_MODULE", "app.settings.dev"),
        ("POSTGRES_USER", "postgres"),
        ("POSTGRES_HOST", "db"),
        ("DEBUG", "true"),
        ("PYTHONUNBUFFERED", "1"),
    ] {
        assert_eq!(env.get(k).map(String::as_str), Some(v), "{k}: {env:?}");
    }
    assert!(p.workspace.cap_add.contains(&"SYS_PTRACE".to_owned()));
    assert_eq!(p.workspace.security_opt, ["seccomp=unconfined"]);
    let c = p.compose.as_ref().unwrap();
    let db = &c.services[0];
    assert_eq!(db.container.env["POSTGRES_PASSWORD"], "postgres", "from .env");
    assert_eq!(db.healthcheck.as_ref().unwrap().argv, ["/bin/sh", "-c", "pg_isready -U ${POSTGRES_USER}"]);
    let initdb = root.join("python-postgres/.devcontainer/initdb");
    assert!(db.container.mounts.contains(&MountPlan::Bind {
        source: initdb,
        target: "/docker-entrypoint-initdb.d".into(),
        readonly: true
    }));
    assert_eq!(c.start[1].waits[0].condition, Condition::ServiceHealthy);
    assert_eq!(p.pod.ports, [5432]);

    let p = planned("rails-redis");
    assert_eq!(services(&p), ["redis", "selenium", "sidekiq"]);
    let c = p.compose.as_ref().unwrap();
    let redis = &c.services[0];
    assert!(redis.container.image_entrypoint);
    assert_eq!(redis.container.command, ["redis-server", "--appendonly", "yes"]);
    let ImagePlan::Build(sidekiq) = &c.services[2].image else { panic!() };
    assert_eq!(sidekiq.args["RUBY_VERSION"], "3.3.0");
    assert_eq!(c.services[2].container.env["REDIS_URL"], "redis://redis:6379/1");
    assert_eq!(p.workspace.env["REDIS_URL"], "redis://redis:6379/1");
    assert!(p.warnings.iter().any(|w| w.contains("`services.selenium.shm_size` is ignored")), "{:?}", p.warnings);

    let e = load("docker-from-docker").unwrap_err();
    assert!(
        e.contains("docker-from-docker/.devcontainer/docker-compose.yml:7: `services.app.volumes[1]`: `/var/run/docker.sock` is outside the repository"),
        "{e}"
    );
    let e = load("extends").unwrap_err();
    assert!(e.contains("extends/.devcontainer/docker-compose.yml:5: `services.app.extends`: is not supported"), "{e}");
}

#[test]
fn an_acp_agent_runs_under_the_shims_bridge_with_the_same_walls() {
    let http = plan(&Config::default(), None, &request()).unwrap();
    let c = config("[agent]\nkind = \"acp\"\n[agents.codex]\nkind = \"acp\"\ncommand = [\"/opt/agents/codex-acp\"]\n");
    let acp = plan(&c, None, &request()).unwrap();
    assert_eq!(
        acp.agent.command,
        [
            GATOR_BRIDGE,
            "agent-shim",
            "--api",
            "/run/devaipod/agent/api.sock",
            "--egress-port",
            "3128",
            "--egress",
            "/run/devaipod/gator/egress.sock",
            "--acp",
            "--gator",
            "/run/devaipod/gator/gator.sock",
            "--",
            "/opt/devaipod/bin/opencode",
            "acp"
        ],
        "the default ACP agent is the injected opencode"
    );
    // The walls, mounts, user and secrets are the HTTP agent's.
    assert_eq!(
        (&acp.agent.mounts, &acp.agent.cap_drop, &acp.agent.network, &acp.agent.user, &acp.agent.secret_env),
        (&http.agent.mounts, &http.agent.cap_drop, &http.agent.network, &http.agent.user, &http.agent.secret_env)
    );
    // gator is handed to the sessions by the bridge, not listed in opencode's config too.
    let oc: serde_json::Value = serde_json::from_str(&acp.agent.env["OPENCODE_CONFIG_CONTENT"]).unwrap();
    assert!(oc.get("mcp").is_none(), "{oc}");
    let oc: serde_json::Value = serde_json::from_str(&http.agent.env["OPENCODE_CONFIG_CONTENT"]).unwrap();
    assert!(oc["mcp"]["gator"].is_object());

    // A workspace's choice.
    let codex = plan(&c.with_agent(Some("codex")).unwrap(), None, &request()).unwrap();
    assert_eq!(codex.agent.command.last().map(String::as_str), Some("/opt/agents/codex-acp"));
    // An agent from the host is mounted read-only; the image need not contain it.
    let injected =
        config("[agents.x]\nkind = \"acp\"\ncommand = [\"/opt/devaipod/agent/x\"]\ninject-dir = \"/cache/x/bin\"\n");
    let x = plan(&injected.with_agent(Some("x")).unwrap(), None, &request()).unwrap();
    let extra: Vec<_> = x.agent.mounts.iter().filter(|m| !http.agent.mounts.contains(m)).collect();
    assert_eq!(
        extra,
        [&MountPlan::Bind { source: "/cache/x/bin".into(), target: AGENT_INJECT_DIR.into(), readonly: true }]
    );
    assert!(
        !x.workspace.mounts.iter().any(|m| matches!(m, MountPlan::Bind { target, .. } if target == AGENT_INJECT_DIR))
    );
    let back = plan(&c.with_agent(Some("opencode")).unwrap(), None, &request()).unwrap();
    assert_eq!(back.agent.command, http.agent.command);
    let e = c.with_agent(Some("gemini")).unwrap_err();
    assert!(e.contains("no agent named `gemini`: choose one of opencode, opencode-acp, codex"), "{e}");
    assert!(matches!(c.with_agent(Some(" ")).unwrap(), std::borrow::Cow::Borrowed(_)), "blank is the default");
    let e = config::parse("[agent]\nkind = \"gemini\"\n", Path::new("t.toml")).unwrap_err().to_string();
    assert!(e.contains("agent.kind") && e.contains("opencode") && e.contains("acp"), "{e}");
}
