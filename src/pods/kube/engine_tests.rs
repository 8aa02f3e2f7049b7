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

fn pod_list(items: Vec<Value>) -> Value {
    json!({"kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": items})
}

fn running_pod(name: &str, role: &str, pod: &str) -> Value {
    json!({
        "metadata": {"name": name, "labels": {"io.devaipod.instance": "t1", "io.devaipod.role": role, LABEL_POD: pod}},
        "spec": {"containers": [{"name": role, "image": "i"}]},
        "status": {"phase": "Running", "containerStatuses": [{"name": role, "ready": true, "restartCount": 0, "image": "i", "imageID": "", "state": {"running": {}}}]},
    })
}

/// create_pod looks for Pods of that name, create_container posts the container's Pod
/// (hardened, labelled with its pod), list_pods groups by pod, remove_pod deletes each.
#[tokio::test]
async fn create_list_and_delete_go_to_the_api_in_order() {
    let (kube, mut api) = engine();
    let plan = kube_plan("");
    let spec = PodSpec {
        name: plan.pod.name.clone(),
        hostname: plan.pod.hostname.clone(),
        labels: plan.pod.labels.clone(),
        ports: vec![],
        add_hosts: vec![],
    };
    let server = tokio::spawn(async move {
        let mut seen = Vec::new();
        seen.push(next(&mut api, 200, pod_list(vec![])).await);
        seen.push(next(&mut api, 201, json!({"metadata": {"name": "devaipod-hello-agent-walls"}})).await);
        seen.push(next(&mut api, 201, json!({"metadata": {"name": "devaipod-hello-agent"}})).await);
        let items = vec![
            running_pod("devaipod-hello-workspace", "workspace", "devaipod-hello"),
            running_pod("devaipod-hello-agent", "agent", "devaipod-hello"),
        ];
        seen.push(next(&mut api, 200, pod_list(items.clone())).await);
        seen.push(next(&mut api, 200, pod_list(items)).await);
        seen.push(next(&mut api, 200, json!({"metadata": {"name": "devaipod-hello-workspace"}})).await);
        let none =
            status(404, "NotFound", "networkpolicies.networking.k8s.io \"devaipod-hello-workspace-walls\" not found");
        seen.push(next(&mut api, 404, none).await);
        seen.push(next(&mut api, 200, json!({"metadata": {"name": "devaipod-hello-agent"}})).await);
        seen.push(next(&mut api, 200, json!({"kind": "Status", "apiVersion": "v1", "status": "Success"})).await);
        seen
    });
    kube.create_pod(&spec).await.unwrap();
    kube.create_container("devaipod-hello", &plan.agent).await.unwrap();
    let pods = kube.list_pods(&[("io.devaipod.instance", "t1")]).await.unwrap();
    kube.remove_pod("devaipod-hello").await.unwrap();
    let seen = server.await.unwrap();

    assert_eq!(seen[0].0, "GET");
    assert_eq!(seen[0].1, "/api/v1/namespaces/dev/pods?&labelSelector=io.devaipod.pod=devaipod-hello");
    // The agent's network wall comes first: its Pod never runs without it.
    let (method, uri, body) = &seen[1];
    assert_eq!((method.as_str(), uri.as_str()), ("POST", "/apis/networking.k8s.io/v1/namespaces/dev/networkpolicies?"));
    assert_eq!(body["metadata"]["name"], "devaipod-hello-agent-walls");
    assert_eq!(body["spec"]["policyTypes"], json!(["Ingress", "Egress"]));
    assert!(body["spec"].get("ingress").is_none() && body["spec"].get("egress").is_none(), "no rule: nothing allowed");
    let select = &body["spec"]["podSelector"]["matchLabels"];
    assert_eq!(select["io.devaipod.role"], "agent");
    assert_eq!(select[LABEL_POD], "devaipod-hello");
    let (method, uri, body) = &seen[2];
    assert_eq!((method.as_str(), uri.as_str()), ("POST", "/api/v1/namespaces/dev/pods?"));
    assert_eq!(body["metadata"]["name"], "devaipod-hello-agent");
    assert_eq!(body["metadata"]["labels"][LABEL_POD], "devaipod-hello");
    let sc = &body["spec"]["containers"][0]["securityContext"];
    assert_eq!(sc["capabilities"], json!({"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]}));
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(sc["runAsUser"], 1000);
    assert_eq!(
        body["spec"]["affinity"]["podAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][0]["labelSelector"]["matchLabels"]
            ["io.devaipod.role"],
        "workspace",
        "the agent's Pod goes to its workspace's node"
    );
    for (k, v) in select.as_object().unwrap() {
        assert_eq!(&body["metadata"]["labels"][k], v, "the policy selects the agent's Pod ({k})");
    }
    assert_eq!(seen[3].1, "/api/v1/namespaces/dev/pods?&labelSelector=io.devaipod.instance=t1");
    assert_eq!(pods.len(), 1);
    assert_eq!(pods[0].name, "devaipod-hello");
    assert_eq!(pods[0].status, "Running");
    let roles: Vec<Option<Role>> = pods[0].containers.iter().map(|c| c.role).collect();
    assert_eq!(roles, [Some(Role::Workspace), Some(Role::Agent)]);
    assert_eq!(seen[5].0, "DELETE");
    assert!(seen[5].1.starts_with("/api/v1/namespaces/dev/pods/devaipod-hello-workspace?"), "{}", seen[5].1);
    assert_eq!(seen[5].2["gracePeriodSeconds"], 0);
    // Each Pod's walls go with it; the workspace's has none (a 404 is fine).
    assert!(
        seen[6]
            .1
            .starts_with("/apis/networking.k8s.io/v1/namespaces/dev/networkpolicies/devaipod-hello-workspace-walls?"),
        "{}",
        seen[6].1
    );
    assert!(seen[7].1.starts_with("/api/v1/namespaces/dev/pods/devaipod-hello-agent?"), "{}", seen[7].1);
    assert_eq!(seen[8].0, "DELETE");
    assert!(
        seen[8].1.starts_with("/apis/networking.k8s.io/v1/namespaces/dev/networkpolicies/devaipod-hello-agent-walls?"),
        "{}",
        seen[8].1
    );
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
    assert!(e.to_string().contains("remove volume v (Kubernetes): persistentvolumeclaims \"v\" not found"), "{e}");

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

/// What Kubernetes has no call for says so, without a request.
#[tokio::test]
async fn unsupported_calls_say_so() {
    let (kube, _api) = engine();
    let e = kube.pull_image("img").await.unwrap_err();
    assert_eq!(
        e.to_string(),
        "Kubernetes could not pull image img: not supported on Kubernetes: the nodes pull images when a Pod starts"
    );
    let e = kube.stop_pod("p", 5).await.unwrap_err();
    assert!(matches!(e, EngineError::Kubernetes { status: 501, .. }), "{e:?}");
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
