//! The doctor's judgement as tables (pure), and over core's fakes: a task whose agent
//! cannot reach its LLM fails at once with the URL and the setting, and is never delivered;
//! a reachable one is probed once per minute; the report of a healthy fake machine.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::judge::{self, AgentBinary, ConfigRead, DaemonSeen, EnvOwner, Gate, KeySource, Level, TokenSource, Via};
use super::*;
use crate::agent::llm::Probe;
use crate::config::{AgentConfig, Config, ConfigError};
use crate::core::testing::{Turn, WS, World, container, wait_end};
use crate::core::{CoreError, PodEndpoints};
use crate::pods::engine::EngineInfo;
use crate::pods::naming::Role;
use crate::store::TaskState;

const FILE: &str = "/home/u/.config/devaipod.toml";

fn probe(status: Option<u16>, models: Option<&[&str]>, error: Option<&str>) -> Probe {
    Probe {
        base_url: "http://host.containers.internal:11434/v1".into(),
        status,
        models: models.map(|m| m.iter().map(|s| s.to_string()).collect()),
        error: error.map(str::to_owned),
        millis: 3,
    }
}

fn agent() -> AgentConfig {
    AgentConfig { model: "m1".into(), ..AgentConfig::default() }
}

/// (level, summary contains, fix contains) of a check.
fn is(c: &Check, level: Level, summary: &str, fix: &str) {
    assert_eq!(c.level, level, "{c:?}");
    assert!(c.summary.contains(summary), "summary of {c:?} lacks {summary:?}");
    match &c.fix {
        Some(f) => assert!(f.contains(fix), "fix of {c:?} lacks {fix:?}"),
        None => assert!(fix.is_empty() && level == Level::Ok, "{c:?} has no fix"),
    }
}

#[test]
fn the_llm_line_names_the_url_the_model_and_the_setting() {
    let via = Via::Host;
    let none = KeySource::None;
    // (the probe's result, the key's source, level, summary contains, fix contains)
    type Row<'a> = (Result<Probe, &'a str>, KeySource, Level, &'a str, &'a str);
    let rows: Vec<Row> = vec![
        (Ok(probe(Some(200), Some(&["m0", "m1"]), None)), none.clone(), Level::Ok, "model `m1` is offered", ""),
        (Ok(probe(Some(200), None, None)), none.clone(), Level::Ok, "lists no models", ""),
        (
            Ok(probe(Some(200), Some(&["a", "b", "c", "d", "e", "f"]), None)),
            none.clone(),
            Level::Error,
            "does not offer model `m1`; it offers a, b, c, d, e and 1 more",
            "set [agent] model in /home/u/.config/devaipod.toml, e.g. model = \"a\"",
        ),
        (
            Ok(probe(None, None, Some("connection refused"))),
            none.clone(),
            Level::Error,
            "http://host.containers.internal:11434/v1 cannot be reached from this host (where devaipod's egress proxy connects from) (connection refused)",
            "listening on port 11434 (127.0.0.1 is enough: devaipod's egress proxy connects from this host); or set [agent] base-url in /home/u/.config/devaipod.toml",
        ),
        (
            Ok(Probe { base_url: "http://127.0.0.1:8000/v1".into(), ..probe(None, None, Some("connection refused")) }),
            none.clone(),
            Level::Error,
            "http://127.0.0.1:8000/v1 cannot be reached",
            "start the LLM server on this host, listening on port 8000",
        ),
        (
            Ok(probe(Some(401), None, None)),
            none.clone(),
            Level::Error,
            "refused the key (401 to GET http://host.containers.internal:11434/v1/models)",
            "this provider needs a key: set [agent] api-key-env = \"OPENAI_API_KEY\"",
        ),
        (
            Ok(probe(Some(403), None, None)),
            KeySource::Env { var: "K".into(), set: true, owner: EnvOwner::Caller },
            Level::Error,
            "refused the key (403",
            "check the key in K",
        ),
        (Ok(probe(Some(404), None, None)), none.clone(), Level::Warning, "(404)", "usually end in /v1"),
        (Ok(probe(Some(503), None, None)), none.clone(), Level::Warning, "answered 503", "try again"),
        (Err("podman does not answer"), none, Level::Warning, "was not probed", "then run `devaipod doctor` again"),
    ];
    for (p, key, level, summary, fix) in rows {
        is(&judge::llm(&agent(), &via, p.as_ref().map_err(|e| *e), &key, FILE), level, summary, fix);
    }
    let from_ws = judge::llm(
        &agent(),
        &Via::Workspace("ws".into()),
        Ok(&probe(Some(200), Some(&["m1"]), None)),
        &KeySource::None,
        FILE,
    );
    is(&from_ws, Level::Ok, "answers from the agent of workspace `ws`", "");
}

#[test]
fn every_other_line_has_its_fix() {
    let invalid = crate::config::parse("[agent]\nbase-url = \"nope\"\n", Path::new(FILE)).unwrap_err();
    is(
        &judge::config_file(FILE, ConfigRead::Invalid(&invalid), "kill 1"),
        Level::Error,
        &format!("{FILE}:2:12: agent.base-url: `nope` is not an http:// or https:// URL"),
        &format!("edit line 2, column 12 of {FILE} (`agent.base-url`)"),
    );
    let unreadable = ConfigError::Read { path: FILE.into(), source: std::io::Error::other("denied") };
    is(&judge::config_file(FILE, ConfigRead::Invalid(&unreadable), "k"), Level::Error, "cannot read", "--config");
    is(&judge::config_file(FILE, ConfigRead::Valid { current: true }, "k"), Level::Ok, "is valid", "");
    is(
        &judge::config_file(FILE, ConfigRead::Valid { current: false }, "`kill 7`"),
        Level::Warning,
        "changed",
        "`kill 7`",
    );
    is(&judge::config_file(FILE, ConfigRead::Missing, "k"), Level::Warning, "no config file", "devaipod init");

    let log = Path::new("/d/daemon.log");
    let seen = DaemonSeen { version: "0.1.0", pid: 42, instance: "default", config_file: Some(FILE) };
    is(&judge::daemon("0.1.0", Some(FILE), Ok(seen), log), Level::Ok, "running (pid 42), version 0.1.0", "");
    is(&judge::daemon("0.2.0", Some(FILE), Ok(seen), log), Level::Warning, "this devaipod is 0.2.0", "kill 42");
    is(
        &judge::daemon("0.1.0", Some("/other.toml"), Ok(seen), log),
        Level::Warning,
        "this command read /other.toml",
        "kill 42",
    );
    let busy = "cannot listen on 127.0.0.1:8080: Address in use";
    is(&judge::daemon("0.1.0", None, Err(busy), log), Level::Error, "not running", "DEVAIPOD_LISTEN=127.0.0.1:8081");
    is(&judge::daemon("0.1.0", None, Err("it died"), log), Level::Error, "not running: it died", "/d/daemon.log");

    let info = EngineInfo {
        socket: "/run/podman/podman.sock".into(),
        version: "4.3.1".into(),
        api_version: "4.3.1".into(),
        rootless: true,
        cgroup_version: "v2".into(),
        cgroup_manager: "systemd".into(),
        runtime: "crun".into(),
        runtime_version: "crun version 1.8".into(),
        storage_driver: "vfs".into(),
    };
    let socket = Path::new("/run/podman/podman.sock");
    let lines = judge::podman(Ok(&info), socket, "unused");
    is(&lines[0], Level::Ok, "podman 4.3.1 (API 4.3.1) at /run/podman/podman.sock, rootless", "");
    is(&lines[1], Level::Warning, "crun (crun version 1.8), cgroups v2 (systemd), storage vfs", "overlay");
    let down = judge::podman(
        Err("cannot reach podman at /x: No such file\n  start it…"),
        socket,
        "start it with podman system service --time=0 unix:///run/podman/podman.sock &",
    );
    is(
        &down[0],
        Level::Error,
        "does not answer at /run/podman/podman.sock: cannot reach podman at /x: No such file",
        "podman system service --time=0 unix:///run/podman/podman.sock",
    );

    is(&judge::image("img:1", Ok(true), FILE), Level::Ok, "img:1 is here", "");
    is(&judge::image("img:1", Ok(false), FILE), Level::Error, "img:1 is not here", "default-image = ");
    let oc = Path::new("/c/opencode");
    is(
        &judge::opencode(oc, &AgentBinary::Found { version: Some("1.18.33".into()) }),
        Level::Ok,
        "opencode 1.18.33 at /c/opencode",
        "",
    );
    is(&judge::opencode(oc, &AgentBinary::Missing), Level::Error, "not installed at /c/opencode", "scripts/setup.sh");

    let env_key = |set, owner| KeySource::Env { var: "OPENAI_API_KEY".into(), set, owner };
    is(
        &judge::api_key(&env_key(true, EnvOwner::Caller), FILE),
        Level::Ok,
        "OPENAI_API_KEY is set in this shell's environment (value not shown)",
        "",
    );
    is(
        &judge::api_key(&env_key(false, EnvOwner::Daemon), FILE),
        Level::Error,
        "names OPENAI_API_KEY, which is not set in the daemon's environment",
        "export OPENAI_API_KEY=",
    );
    let secret = |exists| KeySource::Secret { name: "llm".into(), exists };
    is(&judge::api_key(&secret(Ok(true)), FILE), Level::Ok, "`llm` exists", "");
    is(&judge::api_key(&secret(Ok(false)), FILE), Level::Error, "does not exist", "podman secret create llm -");

    is(&judge::gator_token(&TokenSource::None, FILE), Level::Ok, "not configured", "");
    is(&judge::gator_token(&TokenSource::Env { var: "GH".into(), set: false }, FILE), Level::Error, "GH", "export GH");
    let file = |read, mode| TokenSource::File { path: "/t".into(), read, mode };
    is(&judge::gator_token(&file(Ok(()), 0o600), FILE), Level::Ok, "/t is readable", "");
    is(&judge::gator_token(&file(Ok(()), 0o644), FILE), Level::Warning, "mode 644", "chmod 600 /t");
    is(&judge::gator_token(&file(Err("gone".into()), 0), FILE), Level::Error, "cannot be read: gone", "mode 0600");

    let data = Path::new("/data");
    is(&judge::disk(data, Ok(40 << 30)), Level::Ok, "40.0 GiB free in /data", "");
    is(&judge::disk(data, Ok(1 << 30)), Level::Warning, "only 1.0 GiB", "podman system prune");
    is(&judge::disk(data, Ok(100 << 20)), Level::Error, "100 MiB free", "podman system prune");

    let mut checks = vec![judge::disk(data, Ok(1 << 40)), judge::image("i", Ok(false), FILE)];
    sort(&mut checks);
    assert_eq!(checks.iter().map(|c| c.id.as_str()).collect::<Vec<_>>(), ["image", "disk"]);
    assert!(!healthy(&checks));
}

#[test]
fn the_gate_stops_only_what_cannot_answer_and_errors_name_their_setting() {
    let config = Config { file: Some(FILE.into()), ..Config::default() };
    let refused = probe(None, None, Some("connection refused"));
    assert_eq!(
        judge::gate(Ok(&refused), &config),
        Gate::Fail(format!(
            "the agent cannot reach http://host.containers.internal:11434/v1 (connection refused): set [agent] base-url in {FILE}, see devaipod doctor"
        ))
    );
    assert_eq!(judge::gate(Ok(&probe(Some(401), None, None)), &config), Gate::Pass);
    assert_eq!(judge::gate(Ok(&probe(Some(404), None, None)), &config), Gate::Pass);
    assert_eq!(judge::gate(Err("exit 127"), &config), Gate::Unknown("exit 127".into()));

    let explain = |e: &str| explain_provider_error(e, &config);
    assert_eq!(
        explain("the LLM provider answered 401: invalid api key"),
        format!(
            "the LLM provider answered 401: invalid api key: the provider refused the key; check the key: none is configured; set [agent] api-key-env = \"OPENAI_API_KEY\" in {FILE}, see devaipod doctor"
        )
    );
    assert_eq!(
        explain("the LLM provider answered 404: model not found"),
        format!(
            "the LLM provider answered 404: model not found: check [agent] model (\"qwen2.5-coder\") and base-url (\"http://host.containers.internal:11434/v1\") in {FILE}; devaipod doctor lists the models it offers"
        )
    );
    let opencode = "APIError: Cannot connect to API: Unable to connect. Is the computer able to access the url?";
    assert_eq!(
        explain(opencode),
        format!(
            "the agent cannot reach http://host.containers.internal:11434/v1 (opencode: {opencode}): set [agent] base-url in {FILE}, see devaipod doctor"
        )
    );
    let quota = "the LLM provider answered 429: quota exceeded";
    assert_eq!(explain(quota), quota, "other errors stay as they are");
    let with_env = Config {
        agent: AgentConfig { api_key_env: Some("K".to_owned().try_into().unwrap()), ..AgentConfig::default() },
        ..config
    };
    assert!(
        explain_provider_error("the LLM provider answered 403: no", &with_env)
            .contains("check the key in K ([agent] api-key-env)")
    );
}

#[test]
fn a_probe_report_is_read_from_its_last_line_or_not_at_all() {
    let p = probe(Some(200), Some(&["m"]), None);
    let out = format!("noise\n{}\n", serde_json::to_string(&p).unwrap());
    assert_eq!(judge::read_probe(0, out.as_bytes(), b""), Ok(p));
    assert_eq!(
        judge::read_probe(127, b"", b"exec: /opt/devaipod/gator/devaipod: not found\nmore"),
        Err("the probe printed no report (exit code 127): exec: /opt/devaipod/gator/devaipod: not found".into())
    );
    assert_eq!(judge::read_probe(2, b"", b""), Err("the probe printed no report (exit code 2)".into()));
}

/// Gator's endpoints that do nothing: with them, agents get devaipod's binary (and so the
/// probe), as in the daemon.
struct NoEndpoints(PathBuf);

impl PodEndpoints for NoEndpoints {
    fn open(&self, workspace: &str) -> Result<PathBuf, CoreError> {
        Ok(self.0.join(workspace))
    }
    fn close(&self, _workspace: &str) {}
}

/// Puts a stand-in for `devaipod probe-llm` at `path` below `root`: it prints `report` and
/// counts its runs in `<root>/probe-runs`.
fn stand_in_probe(root: &Path, report: &Probe) {
    let file = root.join(GATOR_BRIDGE.trim_start_matches('/'));
    std::fs::create_dir_all(file.parent().expect("a parent")).expect("its directory");
    let script = format!(
        "#!/bin/sh\necho run >> '{}'\necho '{}'\n",
        root.join("probe-runs").display(),
        serde_json::to_string(report).expect("json")
    );
    std::fs::write(&file, script).expect("the stand-in");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o755)).expect("executable");
}

fn runs(root: &Path) -> usize {
    std::fs::read_to_string(root.join("probe-runs")).map(|s| s.lines().count()).unwrap_or(0)
}

async fn world_with_probe() -> World {
    let w = World::with_config(|c| c.file = Some(FILE.into())).await;
    w.core.set_endpoints(Arc::new(NoEndpoints(crate::core::testing::scratch())));
    w.up().await;
    w
}

#[tokio::test]
async fn a_task_whose_agent_cannot_reach_its_llm_fails_at_once_naming_the_url_and_setting() {
    let w = world_with_probe().await;
    let root = w.engine.host_path(&container(Role::Agent), "/").expect("the agent's root");
    stand_in_probe(&root, &probe(None, None, Some("connection refused")));

    let started = Instant::now();
    let task = w.core.run_task(WS, "say hello").await.expect("queued");
    let task = wait_end(&w.core, &task.id).await;
    assert!(started.elapsed() < Duration::from_secs(5), "failed after {:?}", started.elapsed());
    assert_eq!(task.state, TaskState::Failed);
    let want = format!(
        "the agent cannot reach http://host.containers.internal:11434/v1 (connection refused): set [agent] base-url in {FILE}, see devaipod doctor"
    );
    assert_eq!(task.error.as_deref(), Some(want.as_str()));
    let events = w.core.store.events(&task.id).await.expect("events");
    assert_eq!(events.last().map(|e| e.message.as_str()), Some(want.as_str()), "the failure is the last event");
    assert!(w.agent.prompts().is_empty(), "the prompt never went to the agent");
    assert_eq!(runs(&root), 1);

    // A failure is not remembered: once the endpoint answers, the next task goes through,
    // and the one after it does not ask again (within a minute).
    stand_in_probe(&root, &probe(Some(200), Some(&["qwen2.5-coder"]), None));
    for prompt in ["first", "second"] {
        w.agent.script(Turn::complete("done"));
        let t = w.core.run_task(WS, prompt).await.expect("queued");
        assert_eq!(wait_end(&w.core, &t.id).await.state, TaskState::Completed, "{prompt}");
    }
    assert_eq!(runs(&root), 2, "asked once for two tasks in a row");
}

#[tokio::test]
async fn a_probe_that_cannot_tell_lets_the_task_go_on_and_provider_errors_name_the_setting() {
    let w = world_with_probe().await;
    // No probe in the agent's container (an older workspace): exec fails with 127.
    w.agent.script(Turn::Fail("the LLM provider answered 401: invalid api key".into()));
    let t = w.core.run_task(WS, "say hello").await.expect("queued");
    let t = wait_end(&w.core, &t.id).await;
    assert_eq!(t.state, TaskState::Failed);
    assert_eq!(
        t.error.as_deref(),
        Some(format!(
            "the LLM provider answered 401: invalid api key: the provider refused the key; check the key: none is configured; set [agent] api-key-env = \"OPENAI_API_KEY\" in {FILE}, see devaipod doctor"
        ).as_str())
    );
    assert_eq!(w.agent.prompts().len(), 1, "delivered: the probe could not tell");
}

/// An LLM endpoint on this host's loopback that lists `model` for any request.
async fn models_server(model: &str) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("a port");
    let port = listener.local_addr().expect("its address").port();
    let body = serde_json::json!({ "data": [{ "id": model }] }).to_string();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let body = body.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf).await;
                let answer = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = s.write_all(answer.as_bytes()).await;
            });
        }
    });
    port
}

#[tokio::test]
async fn the_report_of_a_healthy_fake_machine_and_of_a_workspace() {
    let port = models_server("qwen2.5-coder").await;
    let w = World::with_config(|c| {
        c.file = Some(FILE.into());
        c.agent.base_url = format!("http://127.0.0.1:{port}/v1");
    })
    .await;
    w.core.set_endpoints(Arc::new(NoEndpoints(crate::core::testing::scratch())));
    w.up().await;
    w.engine.pull_image(crate::config::DEFAULT_IMAGE).await.expect("the base image");
    let answering = probe(Some(200), Some(&["qwen2.5-coder"]), None);
    let root = w.engine.host_path(&container(Role::Agent), "/").expect("the agent's root");
    stand_in_probe(&root, &answering);

    let report = w.core.doctor(&DoctorRequest { env: Some(Default::default()), workspace: None }).await;
    let ids: Vec<&str> = report.checks.iter().map(|c| c.id.as_str()).collect();
    assert_eq!(ids, ["config", "podman", "runtime", "image", "opencode", "api-key", "llm", "gator-token", "disk"]);
    let by = |id: &str| report.checks.iter().find(|c| c.id == id).cloned().expect(id);
    is(&by("podman"), Level::Ok, "podman 4.3.1 (API 4.3.1) at /run/fake/podman.sock, rootful", "");
    is(&by("image"), Level::Ok, "localhost/devaipod-base:latest is here", "");
    is(
        &by("llm"),
        Level::Ok,
        "answers from this host (where devaipod's egress proxy connects from); model `qwen2.5-coder` is offered",
        "",
    );
    assert_eq!(runs(&root), 0, "no container ran for it");
    assert_eq!((report.version.as_str(), report.pid), (VERSION, std::process::id()));

    let ws = w.core.doctor(&DoctorRequest { env: None, workspace: Some(WS.into()) }).await;
    let llm = ws.checks.iter().find(|c| c.id == "llm").expect("llm");
    is(llm, Level::Ok, "answers from the agent of workspace `ws`", "");
    assert_eq!(runs(&root), 1);

    // Without the image the LLM is still probed (from this host); the image line says it.
    w.engine.remove_image(crate::config::DEFAULT_IMAGE).await.expect("removed");
    let report = w.core.doctor(&DoctorRequest::default()).await;
    let by = |id: &str| report.checks.iter().find(|c| c.id == id).cloned().expect(id);
    is(&by("image"), Level::Error, "is not here", "scripts/setup.sh");
    assert_eq!(by("llm").level, Level::Ok, "{:?}", by("llm"));
}
