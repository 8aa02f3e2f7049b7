use std::collections::BTreeMap;
use std::path::Path;

use serde_json::{Value, json};

use super::render::*;
use crate::config;
use crate::pods::naming::WorkspaceName;
use crate::pods::plan::{self, PlanRequest, Redacted, SandboxMounts};

fn request() -> PlanRequest {
    PlanRequest {
        name: WorkspaceName::new("hello").unwrap(),
        instance: "t1".into(),
        source: "https://example.com/o/hello.git".into(),
        image_override: None,
        host_env: BTreeMap::from([("GH_TOKEN".to_owned(), "ghp_supersecret".to_owned())]),
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

const TRUSTED: &str = r#"
[trusted.env]
allowlist = ["GH_TOKEN"]
"#;

pub(crate) fn kube_plan(config_text: &str) -> KubePlan {
    let config = config::parse(config_text, Path::new("t.toml")).unwrap();
    let p = plan::plan(&config, None, &request()).unwrap();
    // Kept as JSON at `up` and read back by the daemon.
    let kept = serde_json::to_string(&KubePlan::of(&p, "registry.example/img:1")).unwrap();
    serde_json::from_str(&kept).unwrap()
}

fn kind<'a>(m: &'a Manifest, kind: &str) -> Vec<&'a Value> {
    m.documents.iter().filter(|d| d["kind"] == kind).collect()
}

fn pod<'a>(m: &'a Manifest, name: &str) -> &'a Value {
    kind(m, "Pod").into_iter().find(|d| d["metadata"]["name"] == name).unwrap()
}

/// The agent's Pod carries the podman plan's hardening: all capabilities dropped but
/// NET_BIND_SERVICE, no privilege escalation, uid/gid 1000, the seccomp profile.
#[test]
fn the_agent_pod_has_the_podman_plans_hardening() {
    let opts = RenderOptions { path: Some("/usr/bin:/bin".into()), ..Default::default() };
    let m = render(&kube_plan(""), &opts);
    let agent = pod(&m, "devaipod-hello-agent");
    let c = &agent["spec"]["containers"][0];
    assert_eq!(c["env"][0], json!({"name": "PATH", "value": "/usr/bin:/bin"}), "the PATH podman runs it with");
    assert_eq!(c["name"], "agent");
    assert_eq!(c["image"], "registry.example/img:1");
    let sc = &c["securityContext"];
    assert_eq!(sc["capabilities"], json!({"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]}));
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(sc["runAsUser"], 1000);
    assert_eq!(sc["runAsGroup"], 1000);
    assert_eq!(sc["seccompProfile"], json!({"type": "Localhost", "localhostProfile": "devaipod/seccomp-agent.json"}));
    assert!(sc.get("privileged").is_none());
    assert_eq!(agent["spec"]["automountServiceAccountToken"], false);
    // On the workspace Pod's node.
    let affinity = &agent["spec"]["affinity"]["podAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][0];
    assert_eq!(affinity["labelSelector"]["matchLabels"]["io.devaipod.role"], "workspace");
    assert_eq!(affinity["topologyKey"], "kubernetes.io/hostname");
    // The workspace container: the image's defaults, no escalation setting of its own.
    let ws = &pod(&m, "devaipod-hello")["spec"]["containers"][0];
    assert!(ws["securityContext"].get("allowPrivilegeEscalation").is_none());
    assert!(ws["securityContext"].get("capabilities").is_none());
    assert_eq!(ws["command"], json!(["/bin/sleep", "infinity"]), "podman's injected init is not there");
}

/// The NetworkPolicy selects exactly the agent's Pod and denies it all traffic.
#[test]
fn a_network_policy_walls_the_agent_in() {
    let m = render(&kube_plan(""), &RenderOptions::default());
    let np = kind(&m, "NetworkPolicy");
    assert_eq!(np.len(), 1);
    let spec = &np[0]["spec"];
    assert_eq!(spec["policyTypes"], json!(["Ingress", "Egress"]));
    assert!(spec.get("ingress").is_none() && spec.get("egress").is_none(), "no rule: nothing allowed");
    let sel = spec["podSelector"]["matchLabels"].as_object().unwrap();
    let agent_labels = pod(&m, "devaipod-hello-agent")["metadata"]["labels"].as_object().unwrap();
    for (k, v) in sel {
        assert_eq!(agent_labels.get(k), Some(v), "the agent's Pod matches {k}");
    }
    assert_eq!(sel["io.devaipod.role"], "agent");
    let ws_labels = pod(&m, "devaipod-hello")["metadata"]["labels"].as_object().unwrap();
    assert_ne!(ws_labels.get("io.devaipod.role"), sel.get("io.devaipod.role"), "the workspace's Pod is not selected");
}

/// One claim per volume, mounted where the podman plan mounts it (read-only stays so);
/// the daemon's sockets are hostPath directories; labels Kubernetes refuses are annotations.
#[test]
fn volumes_become_claims_and_binds_host_paths() {
    let m = render(&kube_plan(""), &RenderOptions { volume_size: Some("5Gi".into()), ..Default::default() });
    let claims: Vec<&str> =
        kind(&m, "PersistentVolumeClaim").iter().map(|d| d["metadata"]["name"].as_str().unwrap()).collect();
    assert_eq!(claims, ["devaipod-hello-workspace", "devaipod-hello-agent-workspace", "devaipod-hello-agent-home"]);
    assert_eq!(kind(&m, "PersistentVolumeClaim")[0]["spec"]["resources"]["requests"]["storage"], "5Gi");
    let agent = pod(&m, "devaipod-hello-agent");
    let mounts = agent["spec"]["containers"][0]["volumeMounts"].as_array().unwrap();
    let volumes = agent["spec"]["volumes"].as_array().unwrap();
    let at = |target: &str| -> (&Value, &Value) {
        let mount = mounts.iter().find(|m| m["mountPath"] == target).unwrap();
        (mount, volumes.iter().find(|v| v["name"] == mount["name"]).unwrap())
    };
    let (mount, vol) = at(plan::MAIN_WORKSPACE);
    assert_eq!(mount["readOnly"], true);
    assert_eq!(vol["persistentVolumeClaim"]["claimName"], "devaipod-hello-workspace");
    let (mount, vol) = at(plan::AGENT_API_DIR);
    assert!(mount.get("readOnly").is_none());
    assert_eq!(vol["hostPath"], json!({"path": "/run/d/agent/hello", "type": "Directory"}));
    let (mount, vol) = at(plan::GATOR_BRIDGE);
    assert_eq!(mount["readOnly"], true);
    assert_eq!(vol["hostPath"]["type"], "File");
    let meta = &pod(&m, "devaipod-hello")["metadata"];
    assert_eq!(meta["labels"]["io.devaipod.instance"], "t1");
    assert!(meta["labels"].get("io.devaipod.source").is_none());
    assert_eq!(meta["annotations"]["io.devaipod.source"], "https://example.com/o/hello.git");
}

/// Secrets are referenced and never printed unless given; given, they are base64 data.
#[test]
fn secrets_are_referenced_unless_asked_for() {
    let p = kube_plan(TRUSTED);
    let m = render(&p, &RenderOptions::default());
    assert!(kind(&m, "Secret").is_empty());
    assert_eq!(m.secrets_referenced, ["devaipod-hello-agent-password", "devaipod-hello-trusted-env"]);
    let text = super::yaml::to_yaml(&m.comments(), &m.documents);
    assert!(!text.contains("pw-123") && !text.contains("ghp_supersecret"), "{text}");
    assert!(text.contains("--show-secrets"), "the reader is told what to create: {text}");
    let agent_env = &pod(&m, "devaipod-hello-agent")["spec"]["containers"][0]["env"];
    let pw = agent_env.as_array().unwrap().iter().find(|e| e["name"] == "OPENCODE_SERVER_PASSWORD").unwrap();
    assert_eq!(pw["valueFrom"]["secretKeyRef"], json!({"name": "devaipod-hello-agent-password", "key": "value"}));
    let ws_env = &pod(&m, "devaipod-hello")["spec"]["containers"][0]["env"];
    let gh = ws_env.as_array().unwrap().iter().find(|e| e["name"] == "GH_TOKEN").unwrap();
    assert_eq!(gh["valueFrom"]["secretKeyRef"], json!({"name": "devaipod-hello-trusted-env", "key": "GH_TOKEN"}));

    let values = BTreeMap::from([
        ("devaipod-hello-agent-password".to_owned(), BTreeMap::from([("value".to_owned(), "pw-123".to_owned())])),
        ("devaipod-hello-trusted-env".to_owned(), BTreeMap::from([("GH_TOKEN".to_owned(), "ghp_x".to_owned())])),
    ]);
    let m = render(&p, &RenderOptions { secrets: Some(values), namespace: Some("dev".into()), ..Default::default() });
    assert!(m.secrets_referenced.is_empty());
    let secrets = kind(&m, "Secret");
    assert_eq!(secrets[0]["data"]["value"], crate::encode::base64(b"pw-123"));
    assert_eq!(secrets[1]["data"]["GH_TOKEN"], crate::encode::base64(b"ghp_x"));
    assert!(m.documents.iter().all(|d| d["metadata"]["namespace"] == "dev"));
    assert_eq!(m.documents[0]["kind"], "Secret", "Secrets come before the Pods that use them");
}

#[test]
fn label_values_kubernetes_accepts() {
    for ok in ["t1", "0.1.0", "a_b-c.d", ""] {
        assert!(is_label_value(ok), "{ok}");
    }
    for bad in ["/tmp/x", "https://h/x", "-a", "a-", &"x".repeat(64), "{\"a\":1}"] {
        assert!(!is_label_value(bad), "{bad}");
    }
}

/// A local image is flagged: a cluster cannot pull it.
#[test]
fn a_local_image_is_flagged() {
    let config = config::parse("", Path::new("t.toml")).unwrap();
    let p = plan::plan(&config, None, &request()).unwrap();
    let m = render(&KubePlan::of(&p, "localhost/devaipod-build/x:latest"), &RenderOptions::default());
    assert!(m.warnings.iter().any(|w| w.contains("localhost/devaipod-build/x:latest")), "{:?}", m.warnings);
}
