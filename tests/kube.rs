//! `devaipod kube`: a workspace's YAML, played by `podman kube play`, runs; its containers
//! have the capabilities and no-new-privileges of the podman plan's (read from the running
//! workspace before), the agent answers on its API socket, and `podman kube down` removes it.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

/// What `podman kube play` made: removed even when the test fails.
struct Played {
    file: std::path::PathBuf,
    pods: Vec<String>,
    volumes: Vec<String>,
    secrets: Vec<String>,
}

impl Drop for Played {
    fn drop(&mut self) {
        podman(&["kube", "down", self.file.to_str().unwrap()]);
        for p in &self.pods {
            podman(&["pod", "rm", "-f", "-t", "0", p]);
        }
        for v in &self.volumes {
            podman(&["volume", "rm", "-f", v]);
        }
        for s in &self.secrets {
            podman(&["secret", "rm", s]);
        }
    }
}

/// `CapEff` and `NoNewPrivs` of a container's process 1.
fn walls(container: &str) -> (String, String) {
    let status = podman(&["exec", container, "/bin/cat", "/proc/1/status"]);
    let field = |name: &str| {
        status.lines().find_map(|l| l.strip_prefix(name).map(|v| v.trim().to_owned())).unwrap_or_else(|| {
            let state = podman(&["inspect", container, "--format", "{{.State.Status}} {{.State.Error}}"]);
            let logs = Command::new("podman").args(["logs", container]).output().unwrap();
            panic!(
                "{container} ({state}): no {name} in {status:?}; its logs:\n{}{}",
                text(&logs.stdout),
                text(&logs.stderr)
            )
        })
    };
    (field("CapEff:"), field("NoNewPrivs:"))
}

fn base64_decode(s: &str) -> String {
    let mut child = Command::new("base64")
        .arg("-d")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), s.as_bytes()).unwrap();
    text(&child.wait_with_output().unwrap().stdout)
}

fn docs<'a>(m: &'a Value, kind: &str) -> Vec<&'a Value> {
    m["documents"].as_array().unwrap().iter().filter(|d| d["kind"] == kind).collect()
}

#[test]
fn podman_kube_play_of_the_yaml_runs_hardened_and_the_agent_answers() {
    if !podman_available() {
        return;
    }
    let env = TestEnv::new("");
    let ws = format!("kube{}", std::process::id());
    let repo = fixture_repo(env.dir.path(), "kube", &[("README.md", "kube\n")]);
    env.ok(&["up", repo.to_str().unwrap(), "--name", &ws]);
    let (pod, agent_pod) = (format!("devaipod-{ws}"), format!("devaipod-{ws}-agent"));

    // The podman plan's walls, as podman applied them.
    let podman_agent = walls(&format!("devaipod-{ws}-agent"));
    let podman_workspace = walls(&format!("devaipod-{ws}-workspace"));
    assert_eq!(podman_agent, ("0000000000000400".to_owned(), "1".to_owned()), "NET_BIND_SERVICE only");

    // Secrets: referenced by default, printed only when asked.
    let shown = env.json(&["kube", &ws, "--show-secrets"]);
    let secret = docs(&shown, "Secret").into_iter().find(|s| s["metadata"]["name"] == format!("{pod}-agent-password"));
    let password = base64_decode(secret.expect("the agent's password Secret")["data"]["value"].as_str().unwrap());
    assert!(password.len() >= 16, "{password:?}");
    let yaml = env.ok(&["kube", &ws]);
    assert!(!yaml.contains(&password), "the password is not printed without --show-secrets:\n{yaml}");
    assert!(yaml.contains("secretKeyRef") && yaml.contains("kind: NetworkPolicy"), "{yaml}");
    let plain = env.json(&["kube", &ws]);
    assert!(docs(&plain, "Secret").is_empty());
    let claims: Vec<String> = docs(&plain, "PersistentVolumeClaim")
        .iter()
        .map(|d| d["metadata"]["name"].as_str().unwrap().to_owned())
        .collect();
    let agent_doc = docs(&plain, "Pod").into_iter().find(|p| p["metadata"]["name"] == agent_pod.as_str()).unwrap();
    let host_dir = |part: &str| {
        agent_doc["spec"]["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .find_map(|v| v["hostPath"]["path"].as_str().filter(|p| p.contains(part)))
            .unwrap_or_else(|| panic!("the agent's {part} directory"))
            .to_owned()
    };
    let (api_dir, socket_dir) = (host_dir("/agent/"), host_dir("/gator/"));

    // Its podman pod goes (names are the same); the YAML brings it back under podman kube play.
    env.ok(&["delete", &ws]);
    env.wait_for_removals();
    // The node's side of the agent's sockets, as the daemon makes it at `up` (the API's
    // directory writable by the agent's uid).
    for dir in [&api_dir, &socket_dir] {
        std::fs::create_dir_all(dir).unwrap();
    }
    std::fs::set_permissions(&api_dir, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    let file = env.dir.path().join("kube.yaml");
    std::fs::write(&file, &yaml).unwrap();
    let secret_name = format!("{pod}-agent-password");
    let played = Played {
        file: file.clone(),
        pods: vec![pod.clone(), agent_pod.clone()],
        volumes: claims.clone(),
        secrets: vec![secret_name.clone()],
    };
    // Podman 4.3 reads a secretKeyRef's Secret as a JSON map of base64 values (a Secret
    // document it plays itself is stored in a form it cannot read back: docs/kubernetes.md).
    let value = format!(r#"{{"value":"{}"}}"#, devaipod::encode::base64(password.as_bytes()));
    let mut create = Command::new("podman")
        .args(["secret", "create", &secret_name, "-"])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(create.stdin.as_mut().unwrap(), value.as_bytes()).unwrap();
    assert!(create.wait().unwrap().success());
    let out = Command::new("podman").args(["kube", "play", file.to_str().unwrap()]).output().unwrap();
    assert!(out.status.success(), "podman kube play:\n{}{}", text(&out.stdout), text(&out.stderr));

    assert_eq!(walls(&format!("{agent_pod}-agent")), podman_agent, "the agent: as in the podman plan");
    assert_eq!(walls(&format!("{pod}-workspace")), podman_workspace, "the workspace: as in the podman plan");

    // The agent answers on its API socket, with its password.
    let socket = Path::new(&api_dir).join("api.sock");
    let start = Instant::now();
    let answer = loop {
        let out = Command::new("curl")
            .args(["-sS", "--max-time", "5", "-o", "/dev/null", "-w", "%{http_code}", "--unix-socket"])
            .arg(&socket)
            .args(["-u", &format!("opencode:{password}"), "http://agent/config"])
            .output()
            .unwrap();
        let code = text(&out.stdout);
        if code.trim() == "200" || start.elapsed() > Duration::from_secs(90) {
            break code;
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    assert_eq!(answer.trim(), "200", "the agent did not answer at {}", socket.display());
    let wrong = Command::new("curl")
        .args(["-sS", "--max-time", "5", "-o", "/dev/null", "-w", "%{http_code}", "--unix-socket"])
        .arg(&socket)
        .args(["-u", "opencode:wrong", "http://agent/config"])
        .output()
        .unwrap();
    assert_eq!(text(&wrong.stdout).trim(), "401", "its password is the one the Secret holds");

    let out = Command::new("podman").args(["kube", "down", file.to_str().unwrap()]).output().unwrap();
    assert!(out.status.success(), "podman kube down: {}", text(&out.stderr));
    for p in [&pod, &agent_pod] {
        assert!(!Command::new("podman").args(["pod", "exists", p]).status().unwrap().success(), "{p} is gone");
    }
    drop(played);
}

/// The daemon on the Kubernetes engine (`[engine] kind = "kubernetes"`) against the
/// podman-backed fake API (`tests/support/fake_kube.py`): `up` makes every object through
/// the API (the agent's walls before its Pod), the agent's Pod has loopback only and the
/// podman plan's hardening, a task runs to a proposal that `approve --apply` delivers,
/// `exec` and `logs` go through the API, `stop` says why not, and `delete` leaves nothing.
#[test]
fn the_daemon_runs_a_workspace_through_the_kubernetes_api() {
    if !podman_available() {
        return;
    }
    let ws = format!("kd{}", std::process::id());
    let llm = ScriptedLlm::start(&serde_json::json!({"rules": [{"match": "please write the greeting", "steps": [
        {"tool": "write", "args": {"filePath": format!("/workspaces/{ws}/hello.txt"), "content": "hi from kube\n"}},
        {"text": "Wrote hello.txt"}
    ]}]}));
    let env = TestEnv::new(&format!("{}\n[engine]\nkind = \"kubernetes\"\n", llm.agent_config()));
    let kube = FakeKube::start(&serde_json::json!({"io.devaipod.instance": env.instance}), "devaipod-test");
    let env = env.with_env("KUBECONFIG", kube.kubeconfig.to_str().unwrap());
    let repo = fixture_repo(env.dir.path(), &ws, &[("README.md", "kd\n")]);

    let out = env.run(&["--json", "run", repo.to_str().unwrap(), "--name", &ws, "-c", "please write the greeting"]);
    assert!(out.status.success(), "run on Kubernetes failed:\n{}", text(&out.stderr));
    let done: Value = serde_json::from_str(&text(&out.stdout)).unwrap();
    assert_eq!(done["task"]["state"], "completed", "{done:#}");
    let task_id = done["task"]["id"].as_str().unwrap().to_owned();
    let pid = done["proposal"].as_str().expect("a proposal").to_owned();

    // Every object went through the API; the agent's walls before its Pod.
    let reqs = kube.requests();
    let at = |method: &str, part: &str, name: &str| {
        reqs.iter().position(|r| {
            r["method"] == method
                && r["path"].as_str().unwrap_or_default().contains(part)
                && r["body"]["metadata"]["name"] == name
        })
    };
    let walls =
        at("POST", "/networkpolicies", &format!("devaipod-{ws}-agent-walls")).expect("the agent's NetworkPolicy");
    let agent_pod = at("POST", "/pods", &format!("devaipod-{ws}-agent")).expect("the agent's Pod");
    assert!(walls < agent_pod, "the walls before the Pod");
    assert!(at("POST", "/pods", &format!("devaipod-{ws}-workspace")).is_some());
    assert!(
        reqs.iter().any(|r| r["method"] == "POST" && r["path"].as_str().unwrap().ends_with("/persistentvolumeclaims"))
    );
    let listed = env.json(&["list"]);
    assert_eq!(listed[0]["name"], ws.as_str(), "{listed:#}");

    // The agent: loopback only, NET_BIND_SERVICE only, no new privileges (read through the
    // exec API).
    let net = env.ok(&["exec", "--agent", &ws, "--", "cat", "/proc/net/dev"]);
    let ifaces: Vec<&str> = net.lines().skip(2).filter_map(|l| l.split(':').next()).map(str::trim).collect();
    assert_eq!(ifaces, ["lo"], "{net}");
    let status = env.ok(&["exec", "--agent", &ws, "--", "cat", "/proc/1/status"]);
    assert!(status.lines().any(|l| l.starts_with("CapEff:") && l.ends_with("0000000000000400")), "{status}");
    assert!(status.lines().any(|l| l.starts_with("NoNewPrivs:") && l.ends_with('1')), "{status}");
    assert!(
        kube.requests()
            .iter()
            .any(|r| r["path"].as_str().unwrap().ends_with(&format!("/pods/devaipod-{ws}-agent/exec"))),
        "exec went through the API"
    );

    // Delivered only on approval, into the workspace's container.
    let branch = format!("devaipod/{task_id}");
    assert_eq!(env.json(&["approve", &pid, "--apply"])["state"], "applied");
    assert_eq!(env.ok(&["exec", &ws, "--", "git", "show", &format!("{branch}:hello.txt")]), "hi from kube\n");
    let logs = env.run(&["logs", &ws, "--agent", "--tail", "20"]);
    assert!(logs.status.success(), "{}", text(&logs.stderr));
    let e = env.fails(&["stop", &ws]);
    assert!(e.contains("keep it running, or delete it"), "{e}");

    env.ok(&["delete", &ws]);
    env.wait_for_removals();
    let reqs = kube.requests();
    assert!(
        reqs.iter().any(|r| r["method"] == "DELETE"
            && r["path"].as_str().unwrap().ends_with(&format!("/networkpolicies/devaipod-{ws}-agent-walls"))),
        "the walls go with the workspace"
    );
    assert!(env.leftovers().is_empty(), "{:?}", env.leftovers());
    let volumes = podman(&["volume", "ls", "-q", "--filter", &format!("label=io.devaipod.instance={}", env.instance)]);
    assert!(volumes.trim().is_empty(), "{volumes}");
}
