//! The Kubernetes engine against a mocked API (kube's `Client::new` over a `tower_test`
//! service): the requests it makes, in order, and how the API's refusals read.

use std::time::Duration;

use http_body_util::BodyExt;
use hyper::{Request, Response};
use kube::client::Body;
use serde_json::{Value, json};
use tower_test::mock;

use super::*;
use crate::pods::kube::tests::kube_plan;
use crate::pods::plan::Redacted;

type Handle = mock::Handle<Request<Body>, Response<Body>>;

fn engine() -> (Kube, Handle) {
    let (svc, handle) = mock::pair::<Request<Body>, Response<Body>>();
    (Kube::new(kube::Client::new(svc, "dev")).with_timeout(Duration::from_millis(500)), handle)
}

/// The next request: method, path with query (decoded), JSON body (Null when empty).
async fn next(handle: &mut Handle, status: u16, answer: Value) -> (String, String, Value) {
    let (req, send) = handle.next_request().await.expect("a request");
    let method = req.method().to_string();
    let uri = req.uri().to_string();
    let uri = percent_decode(&uri);
    let bytes = req.into_body().collect().await.unwrap().to_bytes();
    let body = if bytes.is_empty() { Value::Null } else { serde_json::from_slice(&bytes).unwrap() };
    let resp = Response::builder().status(status).body(Body::from(serde_json::to_vec(&answer).unwrap())).unwrap();
    send.send_response(resp);
    (method, uri, body)
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16)
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8(out).unwrap()
}

fn status(code: u16, reason: &str, message: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": code, "reason": reason, "message": message})
}

/// A small stateful API for sequences with concurrent calls: Pods and NetworkPolicies
/// are kept by name (posted, read, listed by `io.devaipod.pod`, deleted); every request is
/// recorded. Pods read back as running. Ends when the client is dropped.
async fn stateful(mut api: Handle) -> Vec<(String, String, Value)> {
    let mut seen = Vec::new();
    let mut objects: BTreeMap<String, Value> = BTreeMap::new();
    while let Some((req, send)) = api.next_request().await {
        let method = req.method().to_string();
        let uri = percent_decode(&req.uri().to_string());
        let bytes = req.into_body().collect().await.unwrap().to_bytes();
        let body: Value = if bytes.is_empty() { Value::Null } else { serde_json::from_slice(&bytes).unwrap() };
        let path = uri.split('?').next().unwrap_or_default().to_owned();
        let kind = ["networkpolicies", "secrets", "persistentvolumeclaims"]
            .into_iter()
            .find(|k| path.contains(&format!("/{k}")))
            .unwrap_or("pod");
        let name = if path.ends_with(&format!("/{kind}")) || path.ends_with("/pods") {
            ""
        } else {
            path.rsplit('/').next().unwrap_or_default()
        };
        let key = |n: &str| format!("{kind}/{n}");
        let (code, answer) = match method.as_str() {
            "POST" => {
                let mut o = body.clone();
                let n = o["metadata"]["name"].as_str().unwrap_or_default().to_owned();
                if kind == "pod" {
                    let role = o["metadata"]["labels"]["io.devaipod.role"].clone();
                    o["status"] = json!({"phase": "Running", "containerStatuses": [{"name": role, "ready": true, "restartCount": 0, "image": "i", "imageID": "", "state": {"running": {}}}]});
                }
                objects.insert(key(&n), o.clone());
                (201, o)
            }
            "GET" if uri.contains("labelSelector=") => {
                let selector = uri.split("labelSelector=").nth(1).unwrap_or_default().to_owned();
                let items: Vec<Value> = objects
                    .iter()
                    .filter(|(k, _)| k.starts_with(&format!("{kind}/")))
                    .filter(|(_, o)| {
                        selector.split(',').all(|kv| {
                            let (k, v) = kv.split_once('=').unwrap_or_default();
                            o["metadata"]["labels"][k] == v
                        })
                    })
                    .map(|(_, o)| o.clone())
                    .collect();
                (200, json!({"kind": "List", "apiVersion": "v1", "metadata": {}, "items": items}))
            }
            "GET" => match objects.get(&key(name)) {
                Some(o) => (200, o.clone()),
                None => (404, status(404, "NotFound", &format!("\"{name}\" not found"))),
            },
            "DELETE" => match objects.remove(&key(name)) {
                Some(o) => (200, o),
                None => (404, status(404, "NotFound", &format!("\"{name}\" not found"))),
            },
            _ => (405, status(405, "MethodNotAllowed", "no")),
        };
        let resp = Response::builder().status(code).body(Body::from(serde_json::to_vec(&answer).unwrap())).unwrap();
        send.send_response(resp);
        seen.push((method, uri, body));
    }
    seen
}

/// create_pod looks for Pods of that name; create_container walls the agent in (a
/// NetworkPolicy selecting its Pod alone) before it posts the agent's Pod (hardened,
/// labelled with its pod and container); start waits for it to run; list_pods groups by
/// pod; remove_pod deletes each Pod, waits for it to be gone, and removes the walls.
#[tokio::test]
async fn create_list_and_delete_go_to_the_api_in_order() {
    let (kube, api) = engine();
    let kube = kube.with_node(Some("node-1".into()));
    let plan = kube_plan("");
    let spec = PodSpec {
        name: plan.pod.name.clone(),
        hostname: plan.pod.hostname.clone(),
        labels: plan.pod.labels.clone(),
        ports: vec![],
        add_hosts: vec![],
    };
    let server = tokio::spawn(stateful(api));
    kube.create_pod(&spec).await.unwrap();
    kube.create_container("devaipod-hello", &plan.workspace).await.unwrap();
    kube.create_container("devaipod-hello", &plan.agent).await.unwrap();
    kube.start_pod("devaipod-hello").await.unwrap();
    let pods = kube.list_pods(&[("io.devaipod.instance", "t1")]).await.unwrap();
    kube.remove_pod("devaipod-hello").await.unwrap();
    assert!(!kube.pod_exists("devaipod-hello").await.unwrap());
    drop(kube);
    let seen = server.await.unwrap();
    let calls: Vec<String> = seen.iter().map(|(m, u, _)| format!("{m} {}", u.split('?').next().unwrap())).collect();

    assert_eq!(seen[0].0, "GET");
    assert_eq!(seen[0].1, "/api/v1/namespaces/dev/pods?&labelSelector=io.devaipod.pod=devaipod-hello");
    // The workspace's Pod has no walls; the agent's are made before its Pod.
    assert_eq!(calls[1], "POST /api/v1/namespaces/dev/pods");
    assert_eq!(calls[2], "POST /apis/networking.k8s.io/v1/namespaces/dev/networkpolicies");
    let wall = &seen[2].2;
    assert_eq!(wall["metadata"]["name"], "devaipod-hello-agent-walls");
    assert_eq!(
        wall["spec"],
        json!({"podSelector": {"matchLabels": {LABEL_POD: "devaipod-hello", LABEL_CONTAINER: "devaipod-hello-agent"}}, "policyTypes": ["Ingress", "Egress"]}),
        "no rule: nothing in, nothing out"
    );
    let (method, uri, body) = &seen[3];
    assert_eq!((method.as_str(), uri.as_str()), ("POST", "/api/v1/namespaces/dev/pods?"));
    assert_eq!(body["metadata"]["name"], "devaipod-hello-agent");
    assert_eq!(body["metadata"]["labels"][LABEL_POD], "devaipod-hello");
    assert_eq!(body["metadata"]["labels"][LABEL_CONTAINER], "devaipod-hello-agent", "the walls select it");
    let sc = &body["spec"]["containers"][0]["securityContext"];
    assert_eq!(sc["capabilities"], json!({"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]}));
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(sc["runAsUser"], 1000);
    assert_eq!(body["spec"]["nodeSelector"], json!({"kubernetes.io/hostname": "node-1"}), "on the daemon's node");
    assert_eq!(
        body["spec"]["affinity"]["podAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][0]["labelSelector"]["matchLabels"]
            ["io.devaipod.role"],
        "workspace",
        "the agent's Pod goes to its workspace's node"
    );
    assert_eq!(pods.len(), 1);
    assert_eq!(pods[0].name, "devaipod-hello");
    assert_eq!(pods[0].status, "Running");
    let mut roles: Vec<Option<Role>> = pods[0].containers.iter().map(|c| c.role).collect();
    roles.sort_by_key(|r| r.map(Role::as_str));
    assert_eq!(roles, [Some(Role::Agent), Some(Role::Workspace)]);
    let deleted: Vec<&(String, String, Value)> = seen.iter().filter(|(m, _, _)| m == "DELETE").collect();
    for pod in ["devaipod-hello-workspace", "devaipod-hello-agent"] {
        let d = deleted.iter().find(|(_, u, _)| u.starts_with(&format!("/api/v1/namespaces/dev/pods/{pod}?")));
        assert_eq!(d.expect(pod).2["gracePeriodSeconds"], 0);
    }
    assert!(
        deleted.iter().any(|(_, u, _)| u.contains("/networkpolicies/devaipod-hello-agent-walls")),
        "the walls go with the pod: {calls:?}"
    );
    assert!(
        calls.iter().any(|c| c == "GET /api/v1/namespaces/dev/pods/devaipod-hello-agent"),
        "it waits for the Pod to be gone"
    );
}

/// Stopping a container deletes its Pod and keeps its walls; making it again needs no
/// memory of its pod (a worker made after the daemon restarted): its meta is read from
/// the pod's Pods.
#[tokio::test]
async fn a_stopped_container_is_made_again_from_its_pods_labels() {
    let (kube, api) = engine();
    let plan = kube_plan("");
    let server = tokio::spawn(stateful(api));
    // A daemon that made the pod earlier: its Pods exist, this engine has no memory of them.
    let earlier = engine_on_same(&kube);
    earlier
        .create_pod(&PodSpec {
            name: plan.pod.name.clone(),
            hostname: "hello-host".into(),
            labels: plan.pod.labels.clone(),
            ports: vec![],
            add_hosts: vec!["db:10.0.0.2".into()],
        })
        .await
        .unwrap();
    earlier.create_container("devaipod-hello", &plan.workspace).await.unwrap();
    kube.create_container("devaipod-hello", &plan.agent).await.unwrap();
    kube.start_container("devaipod-hello-agent").await.unwrap();
    kube.stop_container("devaipod-hello-agent", 5).await.unwrap();
    kube.stop_container("devaipod-hello-agent", 5).await.unwrap();
    kube.create_container("devaipod-hello", &plan.agent).await.unwrap();
    drop((kube, earlier));
    let seen = server.await.unwrap();
    let agent_posts: Vec<&Value> = seen
        .iter()
        .filter(|(m, u, b)| m == "POST" && u.contains("/pods") && b["metadata"]["name"] == "devaipod-hello-agent")
        .map(|(_, _, b)| b)
        .collect();
    assert_eq!(agent_posts.len(), 2);
    assert_eq!(agent_posts[1]["spec"]["hostname"], "hello-host", "the hostname read from the workspace's Pod");
    assert_eq!(agent_posts[1]["spec"]["hostAliases"], json!([{"ip": "10.0.0.2", "hostnames": ["db"]}]));
    let stop = seen.iter().find(|(m, u, _)| m == "DELETE" && u.contains("/pods/devaipod-hello-agent")).unwrap();
    assert_eq!(stop.2["gracePeriodSeconds"], 5);
    assert!(!seen.iter().any(|(m, u, _)| m == "DELETE" && u.contains("networkpolicies")), "stopping keeps the walls");
}

/// Another engine on the same mocked API (a daemon before a restart).
fn engine_on_same(kube: &Kube) -> Kube {
    Kube::new(kube.client.clone()).with_timeout(Duration::from_millis(500))
}

/// A Pod the kubelet cannot start fails its start with the kubelet's reason; one that
/// stays pending fails after the start timeout with what it waits for.
#[tokio::test]
async fn a_pod_that_cannot_start_says_why() {
    let (kube, mut api) = engine();
    let kube = kube.with_start_timeout(Duration::from_millis(300));
    let server = tokio::spawn(async move {
        let waiting = |reason: &str, message: &str| json!({"metadata": {"name": "p"}, "status": {"phase": "Pending", "containerStatuses": [{"name": "agent", "ready": false, "restartCount": 0, "image": "i", "imageID": "", "state": {"waiting": {"reason": reason, "message": message}}}]}});
        next(&mut api, 200, waiting("ContainerCreating", "")).await;
        next(&mut api, 200, waiting("ErrImagePull", "pull access denied for registry.example/nope")).await;
        let unscheduled = json!({"metadata": {"name": "q"}, "status": {"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": "0/3 nodes are available: 3 Insufficient memory."}]}});
        loop {
            let Some((_req, send)) = api.next_request().await else { break };
            send.send_response(
                Response::builder().status(200).body(Body::from(serde_json::to_vec(&unscheduled).unwrap())).unwrap(),
            );
        }
    });
    let e = kube.start_container("p").await.unwrap_err().to_string();
    assert_eq!(e, "Kubernetes could not start container p: ErrImagePull: pull access denied for registry.example/nope");
    let e = kube.start_container("q").await.unwrap_err().to_string();
    assert!(e.starts_with("Kubernetes could not start container q: not running after 0 s: PodScheduled (0/3 nodes are available: 3 Insufficient memory.)"), "{e}");
    drop(kube);
    server.await.unwrap();
}

/// Volumes are claims, secrets are Secrets whose value is base64 in `data.value`, both
/// listed and removed by name and label.
#[tokio::test]
async fn volumes_and_secrets_are_claims_and_secrets() {
    let (kube, mut api) = engine();
    let labels = BTreeMap::from([("io.devaipod.instance".to_owned(), "t1".to_owned())]);
    let server = tokio::spawn(async move {
        let mut seen = Vec::new();
        seen.push(next(&mut api, 201, json!({"metadata": {"name": "v"}})).await);
        seen.push(next(&mut api, 200, json!({"kind": "PersistentVolumeClaimList", "apiVersion": "v1", "metadata": {}, "items": [{"metadata": {"name": "v"}}]})).await);
        seen.push(next(&mut api, 201, json!({"metadata": {"name": "s"}})).await);
        seen.push(
            next(&mut api, 200, json!({"metadata": {"name": "s"}, "data": {"value": crate::encode::base64(b"pw")}}))
                .await,
        );
        seen
    });
    kube.create_volume(&VolumePlan { name: "v".into(), labels: labels.clone() }).await.unwrap();
    assert_eq!(kube.list_volumes(&[("io.devaipod.instance", "t1")]).await.unwrap(), ["v"]);
    kube.create_secret(&SecretPlan { name: "s".into(), value: Redacted("pw".into()), labels }).await.unwrap();
    assert_eq!(kube.secret_value("s", "", Path::new("/"), "t1").await.unwrap(), "pw");
    let seen = server.await.unwrap();
    assert_eq!((seen[0].0.as_str(), seen[0].1.as_str()), ("POST", "/api/v1/namespaces/dev/persistentvolumeclaims?"));
    assert_eq!(seen[0].2["spec"]["resources"]["requests"]["storage"], "10Gi");
    assert_eq!(seen[0].2["metadata"]["labels"]["io.devaipod.instance"], "t1");
    assert_eq!(seen[1].1, "/api/v1/namespaces/dev/persistentvolumeclaims?&labelSelector=io.devaipod.instance=t1");
    assert_eq!(seen[2].1, "/api/v1/namespaces/dev/secrets?");
    assert_eq!(seen[2].2["data"]["value"], crate::encode::base64(b"pw"), "the value travels in the body only");
    assert_eq!(seen[3].1, "/api/v1/namespaces/dev/secrets/s");
}

use std::path::Path;

/// 403, 404, 409 and a silent API read as a user should read them.
#[tokio::test]
async fn api_refusals_and_timeouts_have_clear_messages() {
    let (kube, mut api) = engine();
    let server = tokio::spawn(async move {
        next(&mut api, 403, status(403, "Forbidden", "persistentvolumeclaims is forbidden: User \"system:serviceaccount:dev:devaipod\" cannot create resource")).await;
        next(&mut api, 404, status(404, "NotFound", "persistentvolumeclaims \"v\" not found")).await;
        next(&mut api, 409, status(409, "AlreadyExists", "secrets \"s\" already exists")).await;
        next(&mut api, 409, status(409, "Conflict", "Operation cannot be fulfilled on pods \"p\"")).await;
        next(&mut api, 401, status(401, "Unauthorized", "Unauthorized")).await;
        // The next request is never answered.
        let (_req, _send) = api.next_request().await.unwrap();
        tokio::time::sleep(Duration::from_secs(5)).await;
    });
    let v = VolumePlan { name: "v".into(), labels: BTreeMap::new() };
    let e = kube.create_volume(&v).await.unwrap_err();
    assert!(matches!(e, EngineError::Kubernetes { status: 403, .. }), "{e:?}");
    let text = e.to_string();
    assert!(
        text.starts_with("Kubernetes could not create volume v: forbidden: persistentvolumeclaims is forbidden"),
        "{text}"
    );
    assert!(text.contains("Role of docs/kubernetes.md in namespace dev"), "{text}");

    let e = kube.remove_volume("v").await.unwrap_err();
    assert!(matches!(e, EngineError::NotFound { .. }), "{e:?}");
    assert!(e.to_string().contains("remove volume v: persistentvolumeclaims \"v\" not found"), "{e}");

    let s = SecretPlan { name: "s".into(), value: Redacted("x".into()), labels: BTreeMap::new() };
    let e = kube.create_secret(&s).await.unwrap_err();
    assert!(matches!(e, EngineError::AlreadyExists { .. }), "{e:?}");
    let e = kube.remove_container("p").await.unwrap_err();
    assert!(matches!(e, EngineError::Conflict { .. }), "{e:?}");
    let e = kube.ping().await.unwrap_err();
    assert!(e.to_string().contains("refused the credentials") && e.to_string().contains("kubeconfig"), "{e}");

    let start = std::time::Instant::now();
    let e = kube.pod_exists("p").await.unwrap_err();
    assert!(matches!(e, EngineError::Timeout { .. }), "{e:?}");
    assert!(start.elapsed() < Duration::from_secs(3), "bounded by the engine's timeout");
    assert!(e.to_string().contains("did not finish list the Pods of p"), "{e}");
    server.abort();
}

/// A command goes to the exec API with its working directory and environment put in front
/// of it (the API has neither); a refusal of the upgrade is an error naming the container.
#[tokio::test]
async fn exec_asks_the_exec_api_and_reports_its_refusal() {
    let (kube, mut api) = engine();
    let server =
        tokio::spawn(async move { next(&mut api, 403, status(403, "Forbidden", "pods/exec is forbidden")).await });
    let spec = ExecSpec {
        argv: vec!["git".into(), "status".into()],
        workdir: Some("/workspaces/hello".into()),
        env: BTreeMap::from([("A".to_owned(), "1".to_owned())]),
        ..Default::default()
    };
    let e = match kube.exec("devaipod-hello-agent", &spec).await {
        Ok(_) => panic!("the exec was refused"),
        Err(e) => e,
    };
    let (method, uri, _) = server.await.unwrap();
    assert_eq!(method, "GET");
    assert!(uri.starts_with("/api/v1/namespaces/dev/pods/devaipod-hello-agent/exec?"), "{uri}");
    for part in [
        "command=/usr/bin/env",
        "command=-C",
        "command=/workspaces/hello",
        "command=A=1",
        "command=git",
        "command=status",
        "stdout=true",
        "stderr=true",
    ] {
        assert!(uri.contains(part), "{part} in {uri}");
    }
    assert!(e.to_string().contains("run a command in devaipod-hello-agent"), "{e}");
}

/// What Kubernetes has no call for says so, without a request; images are the nodes'.
#[tokio::test]
async fn unsupported_calls_say_so() {
    let (kube, _api) = engine();
    assert!(kube.image_exists("img").await.unwrap(), "the node pulls it when the Pod starts");
    kube.pull_image("img").await.unwrap();
    let e = kube.image_facts("img").await.unwrap_err();
    assert!(
        e.to_string()
            .starts_with("Kubernetes could not read image img: not supported on Kubernetes: images are not inspected"),
        "{e}"
    );
    let e = kube.stop_pod("p", 5).await.unwrap_err();
    assert!(matches!(e, EngineError::Kubernetes { status: 501, .. }), "{e:?}");
    assert!(e.to_string().contains("keep it running, or delete it"), "{e}");
    let mut service = kube_plan("").workspace;
    service.role = Role::Service;
    let e = kube.create_container("devaipod-hello", &service).await.unwrap_err();
    assert!(e.to_string().contains("run compose projects on podman"), "{e}");
    let e = kube.connect_port("devaipod-hello-workspace", 8000).await.err().unwrap();
    assert!(e.to_string().starts_with("Kubernetes could not connect to port 8000"), "{e}");
    assert!(kube.remove_helpers("t1").await.unwrap().is_empty());
}

#[test]
fn exit_codes_from_the_exec_status() {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Status;
    let ok: Status = serde_json::from_value(json!({"status": "Success"})).unwrap();
    assert_eq!(exit_code(Some(ok)), 0);
    let failed: Status = serde_json::from_value(json!({"status": "Failure", "reason": "NonZeroExitCode", "details": {"causes": [{"reason": "ExitCode", "message": "3"}]}})).unwrap();
    assert_eq!(exit_code(Some(failed)), 3);
    assert_eq!(exit_code(None), -1);
}
