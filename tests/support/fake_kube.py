#!/usr/bin/env python3
"""A fake Kubernetes API server backed by podman, for testing the Kubernetes engine
(`pods::kube::Kube`, kube-rs) on a machine without a cluster. It stands in for the
apiserver and one node's kubelet: the objects a client creates become podman objects.

    fake_kube.py [--config config.json] [--port 0] [--host 127.0.0.1] [--log requests.jsonl]
                 [--podman podman]

Prints "listening on PORT" once it serves (plain HTTP: kube-rs's rustls connector takes
`http://` servers as they are). The config (all optional):

    {"labels": {"k": "v"}}   # put on every podman object it makes (pods, volumes, secrets),
                             # beside the object's own labels: a test's cleanup finds them

What is faked (core/v1 under /api/v1/namespaces/NS/..., NetworkPolicies under
/apis/networking.k8s.io/v1/namespaces/NS/networkpolicies):

    GET /version, /api, /apis         a v1.33 server ("fake-kube" platform suffix)
    secrets                           create, get, list, delete. Create also makes a podman
                                      secret of the same name holding the JSON map
                                      {"key": "<base64 value>"} (the form podman 4.3's
                                      `kube play` resolves a secretKeyRef from); delete removes it
    persistentvolumeclaims            create (`podman volume create`, with the labels), get,
                                      list, delete (`podman volume rm`; a volume in use is a 409
                                      Conflict, where a cluster would keep it Terminating). Bound
                                      at once; the requested size is not enforced
    pods                              create runs the Pod at once with `podman kube play` of it
                                      (containers named <pod>-<container>) and answers when it
                                      started; get/list compute `status` live from podman (phase,
                                      containerStatuses[].state running/terminated/waiting);
                                      delete is `podman pod rm -f -t <gracePeriodSeconds>`, done
                                      before it answers
    pods/NAME/exec                    WebSocket, subprotocols v5.channel.k8s.io (preferred) and
                                      v4.channel.k8s.io: `podman exec [-i] [-t] <pod>-<container>
                                      argv...` as the container's user; channel 0 stdin, 1 stdout,
                                      2 stderr, 3 the final Status (Success, or Failure with reason
                                      NonZeroExitCode and a cause ExitCode N), 255 [255, 0] closes
                                      stdin (v5); a close frame closes stdin too (v4 has no other way)
    pods/NAME/log                     `podman logs` (follow, tailLines, timestamps, container),
                                      chunked, stdout and stderr merged
    networkpolicies                   create, get, list, delete: stored only. A Pod created while
                                      a policy selects it (podSelector.matchLabels) and denies
                                      both Ingress and Egress with no rule is played with
                                      `--network none` (loopback only): the wall holds here too,
                                      where podman itself ignores NetworkPolicies

    List selectors: labelSelector with `k=v`, `k==v`, `k!=v`, `k`, `!k`, joined by commas.
    Errors are `kind: Status` objects as the real API's: 404 NotFound, 409 AlreadyExists,
    409 Conflict, 400 BadRequest / Invalid, 500 InternalError (podman's message).

As a node with containerd would, a container whose image and Pod set no PATH gets the
default PATH (containerd's CRI adds it; podman's `kube play` does not).

What is not faked: watches, patch/update (PUT, PATCH), fieldSelector, set-based selectors
(`in`, `notin`), namespaces as objects (any name is accepted; podman's names are global, so
one name in two namespaces collides), resourceVersion checks, authentication and RBAC (every
request is allowed), admission, scheduling and affinity (one node: this host), resources,
seccompProfile (podman 4.3 reads it from annotations only), a NetworkPolicy created after
its Pod, policies with rules (only deny-all is enforced), restart back-off, attach and
port-forward, and Pods pending while images pull (a Pod podman cannot play is answered 201
and shows `waiting` with reason CreateContainerError and podman's message).

Every request is appended to the log as one JSON line when its answer's status is sent:
{"method", "path", "query", "status", "body"}; `query` maps each name to its value, or to a
list of values when it repeats (exec's `command`); `body` is the request's JSON (a Secret's
values replaced by "<redacted>"), or null.
"""

import argparse
import base64
import copy
import datetime
import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

LOCK = threading.Lock()
LOG_LOCK = threading.Lock()
WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# Bounds of podman calls (seconds): `kube play` may create volumes and a pause image.
PODMAN_TIMEOUT = 120
PLAY_TIMEOUT = 300
EXEC_TIMEOUT = 3600

# (api prefix, plural) -> (kind, apiVersion)
RESOURCES = {
    ("/api/v1", "secrets"): ("Secret", "v1"),
    ("/api/v1", "persistentvolumeclaims"): ("PersistentVolumeClaim", "v1"),
    ("/api/v1", "pods"): ("Pod", "v1"),
    ("/apis/networking.k8s.io/v1", "networkpolicies"): ("NetworkPolicy", "networking.k8s.io/v1"),
}
PATH_RE = re.compile(
    r"(?P<prefix>/api/v1|/apis/networking\.k8s\.io/v1)/namespaces/(?P<ns>[^/]+)/(?P<plural>[a-z]+)"
    r"(?:/(?P<name>[^/]+)(?:/(?P<sub>exec|log))?)?"
)


class Fake:
    """The store, the options, and podman."""

    store = {}  # (plural, namespace, name) -> object
    play_errors = {}  # (namespace, name) -> podman's message when a Pod could not be played
    resource_version = 0
    extra_labels = {}
    podman = "podman"
    log_path = None
    image_env = {}  # image -> its Env list (cache)


def now():
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def next_rv():
    Fake.resource_version += 1
    return str(Fake.resource_version)


def podman(args, input_bytes=None, timeout=PODMAN_TIMEOUT):
    """Runs podman; (exit code, stdout, stderr) as text. A timeout is exit code -1."""
    try:
        p = subprocess.run([Fake.podman] + args, input=input_bytes, capture_output=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return -1, "", "podman %s did not finish in %d s" % (args[0], timeout)
    return p.returncode, p.stdout.decode(errors="replace"), p.stderr.decode(errors="replace")


def status(code, reason, message, details=None):
    s = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
         "message": message, "reason": reason, "code": code}
    if details:
        s["details"] = details
    return s


def success(kind, name):
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
            "details": {"name": name, "kind": kind}}


class ApiError(Exception):
    def __init__(self, code, reason, message, details=None):
        super().__init__(message)
        self.status = status(code, reason, message, details)


def not_found(plural, name):
    return ApiError(404, "NotFound", '%s "%s" not found' % (plural, name),
                    {"name": name, "kind": plural})


def parse_selector(text):
    """labelSelector → list of (op, key, value); ApiError 400 on what is not supported."""
    terms = []
    for part in filter(None, (p.strip() for p in (text or "").split(","))):
        m = re.fullmatch(r"([A-Za-z0-9./_-]+)\s*(==|=|!=)\s*([A-Za-z0-9._-]*)", part)
        if m:
            terms.append(("!=" if m[2] == "!=" else "=", m[1], m[3]))
        elif re.fullmatch(r"![A-Za-z0-9./_-]+", part):
            terms.append(("!", part[1:], None))
        elif re.fullmatch(r"[A-Za-z0-9./_-]+", part):
            terms.append(("exists", part, None))
        else:
            raise ApiError(400, "BadRequest", "unable to parse requirement %r: fake-kube supports k=v, k!=v, k, !k" % part)
    return terms


def selects(terms, labels):
    for op, k, v in terms:
        if op == "=" and labels.get(k) != v:
            return False
        if op == "!=" and labels.get(k) == v:
            return False
        if op == "exists" and k not in labels:
            return False
        if op == "!" and k in labels:
            return False
    return True


def label_args(labels):
    args = []
    for k, v in sorted(dict(labels or {}, **Fake.extra_labels).items()):
        args += ["--label", "%s=%s" % (k, v)]
    return args


def to_utc(stamp):
    """podman's RFC 3339 (nanoseconds, any offset) → Kubernetes' (seconds, Z); None if unset."""
    m = re.match(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.\d+)?(Z|[+-]\d\d:\d\d)", stamp or "")
    if not m or m[1].startswith("0001-"):
        return None
    t = datetime.datetime.fromisoformat(m[1] + ("+00:00" if m[2] == "Z" else m[2]))
    return t.astimezone(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


# ---------------------------------------------------------------------------- objects


def new_meta(obj, ns, plural):
    meta = obj.setdefault("metadata", {})
    name = meta.get("name")
    if not isinstance(name, str) or not re.fullmatch(r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?", name):
        raise ApiError(422, "Invalid", "%s %r is invalid: metadata.name: a lowercase RFC 1123 name is required" % (plural, name))
    if meta.get("namespace", ns) != ns:
        raise ApiError(400, "BadRequest", "the namespace of the provided object does not match the namespace sent on the request")
    labels = meta.get("labels") or {}
    if not isinstance(labels, dict) or not all(isinstance(v, str) for v in labels.values()):
        raise ApiError(422, "Invalid", "%s %r is invalid: metadata.labels must be strings" % (plural, name))
    meta.update(namespace=ns, uid=str(uuid.uuid4()), creationTimestamp=now(), resourceVersion=next_rv(),
                labels=labels)
    return name


def reserve(plural, ns, obj):
    """Stores a new object (409 AlreadyExists if its name is taken); returns its name."""
    name = new_meta(obj, ns, plural)
    with LOCK:
        if (plural, ns, name) in Fake.store:
            raise ApiError(409, "AlreadyExists", '%s "%s" already exists' % (plural, name),
                           {"name": name, "kind": plural})
        Fake.store[(plural, ns, name)] = obj
    return name


def unreserve(plural, ns, name):
    with LOCK:
        Fake.store.pop((plural, ns, name), None)


def get(plural, ns, name):
    with LOCK:
        obj = Fake.store.get((plural, ns, name))
    if obj is None:
        raise not_found(plural, name)
    return obj


def create_secret(ns, obj):
    data = obj.get("data") or {}
    for k, v in (obj.pop("stringData", None) or {}).items():
        data[k] = base64.b64encode(str(v).encode()).decode()
    for k, v in data.items():
        try:
            base64.b64decode(v, validate=True)
        except (ValueError, TypeError):
            raise ApiError(400, "BadRequest", "Secret in version \"v1\" cannot be handled as a Secret: illegal base64 data at key %r" % k)
    obj["data"] = data
    obj.setdefault("type", "Opaque")
    name = reserve("secrets", ns, obj)
    rc, _, err = podman(["secret", "create"] + label_args(obj["metadata"]["labels"]) + [name, "-"],
                        input_bytes=json.dumps(data).encode())
    if rc != 0:
        unreserve("secrets", ns, name)
        if "already in use" in err or "exists" in err:
            raise ApiError(409, "AlreadyExists", 'secrets "%s" already exists (a podman secret): %s' % (name, err.strip()))
        raise ApiError(500, "InternalError", "podman secret create %s: %s" % (name, err.strip()))
    return obj


def delete_secret(ns, name):
    get("secrets", ns, name)
    rc, _, err = podman(["secret", "rm", name])
    if rc != 0 and "no such secret" not in err.lower():
        raise ApiError(500, "InternalError", "podman secret rm %s: %s" % (name, err.strip()))
    unreserve("secrets", ns, name)
    return success("secrets", name)


def create_claim(ns, obj):
    spec = obj.setdefault("spec", {})
    name = reserve("persistentvolumeclaims", ns, obj)
    rc, _, err = podman(["volume", "create"] + label_args(obj["metadata"]["labels"]) + [name])
    if rc != 0:
        unreserve("persistentvolumeclaims", ns, name)
        if "already exists" in err:
            raise ApiError(409, "AlreadyExists", 'persistentvolumeclaims "%s" already exists (a podman volume)' % name)
        raise ApiError(500, "InternalError", "podman volume create %s: %s" % (name, err.strip()))
    size = ((spec.get("resources") or {}).get("requests") or {}).get("storage", "1Gi")
    obj["status"] = {"phase": "Bound", "accessModes": spec.get("accessModes", ["ReadWriteOnce"]),
                     "capacity": {"storage": size}}
    return obj


def delete_claim(ns, name):
    obj = get("persistentvolumeclaims", ns, name)
    rc, _, err = podman(["volume", "rm", name])
    if rc != 0 and "no such volume" not in err.lower():
        if "in use" in err or "being used" in err:
            raise ApiError(409, "Conflict", 'persistentvolumeclaims "%s" is in use: %s' % (name, err.strip()))
        raise ApiError(500, "InternalError", "podman volume rm %s: %s" % (name, err.strip()))
    unreserve("persistentvolumeclaims", ns, name)
    gone = copy.deepcopy(obj)
    gone["metadata"]["deletionTimestamp"] = now()
    return gone


def denies_all(policy, labels):
    """Whether `policy` selects a Pod with `labels` and denies it all ingress and egress."""
    spec = policy.get("spec") or {}
    selector = spec.get("podSelector") or {}
    if selector.get("matchExpressions"):
        return False
    match = selector.get("matchLabels") or {}
    if any(labels.get(k) != v for k, v in match.items()):
        return False
    types = spec.get("policyTypes") or ["Ingress"]
    return "Ingress" in types and "Egress" in types and not spec.get("ingress") and not spec.get("egress")


def image_path(image):
    """The PATH in `image`'s own environment, or None."""
    if image not in Fake.image_env:
        rc, out, _ = podman(["image", "inspect", "--format", "json", image])
        env = []
        if rc == 0:
            try:
                env = (json.loads(out)[0].get("Config") or {}).get("Env") or []
            except (ValueError, IndexError, AttributeError):
                env = []
        Fake.image_env[image] = env
    return next((e[5:] for e in Fake.image_env[image] if e.startswith("PATH=")), None)


def create_pod(ns, obj):
    obj.pop("status", None)
    spec = obj.get("spec") or {}
    containers = spec.get("containers") or []
    if not containers or not all(isinstance(c, dict) and c.get("name") and c.get("image") for c in containers):
        raise ApiError(422, "Invalid", "Pod is invalid: spec.containers: each needs a name and an image")
    name = reserve("pods", ns, obj)
    labels = obj["metadata"]["labels"]
    with LOCK:
        policies = [p for (plural, pns, _), p in Fake.store.items() if plural == "networkpolicies" and pns == ns]
    walled = any(denies_all(p, labels) for p in policies)
    played = copy.deepcopy(obj)
    played["metadata"] = {"name": name, "labels": dict(labels, **Fake.extra_labels)}
    if obj["metadata"].get("annotations"):
        played["metadata"]["annotations"] = obj["metadata"]["annotations"]
    for c in played["spec"]["containers"]:
        env = c.setdefault("env", [])
        if not any(e.get("name") == "PATH" for e in env) and image_path(c["image"]) is None:
            env.insert(0, {"name": "PATH", "value": DEFAULT_PATH})
    with tempfile.NamedTemporaryFile("w", suffix=".json", prefix="fake-kube-") as f:
        json.dump(played, f)
        f.flush()
        args = ["kube", "play"] + (["--network", "none"] if walled else []) + [f.name]
        rc, _, err = podman(args, timeout=PLAY_TIMEOUT)
    if rc != 0:
        message = "podman kube play: %s" % err.strip()
        print("fake-kube: Pod %s/%s: %s" % (ns, name, message), file=sys.stderr, flush=True)
        with LOCK:
            Fake.play_errors[(ns, name)] = message
    return with_status(obj)


def inspect_container(name):
    rc, out, _ = podman(["container", "inspect", "--format", "json", name])
    if rc != 0:
        return None
    try:
        return json.loads(out)[0]
    except (ValueError, IndexError):
        return None


def with_status(obj):
    """A copy of the stored Pod with its status read from podman."""
    pod = copy.deepcopy(obj)
    meta = pod["metadata"]
    with LOCK:
        error = Fake.play_errors.get((meta["namespace"], meta["name"]))
    statuses, states = [], []
    for c in pod["spec"]["containers"]:
        info = None if error else inspect_container("%s-%s" % (meta["name"], c["name"]))
        st = (info or {}).get("State") or {}
        s = {"name": c["name"], "image": c["image"], "imageID": (info or {}).get("Image", ""),
             "ready": False, "restartCount": (info or {}).get("RestartCount", 0) or 0}
        if info:
            s["containerID"] = "podman://" + info.get("Id", "")
        what = st.get("Status", "")
        if what == "running":
            s["state"] = {"running": {"startedAt": to_utc(st.get("StartedAt")) or now()}}
            s["ready"] = s["started"] = True
            states.append("running")
        elif what in ("exited", "stopped"):
            code = int(st.get("ExitCode", 0) or 0)
            term = {"exitCode": code, "reason": "Completed" if code == 0 else "Error"}
            for field in ("startedAt", "finishedAt"):
                t = to_utc(st.get(field[0].upper() + field[1:]))
                if t:
                    term[field] = t
            s["state"] = {"terminated": term}
            states.append("ok" if code == 0 else "failed")
        elif error:
            s["state"] = {"waiting": {"reason": "CreateContainerError", "message": error}}
            states.append("waiting")
        else:
            s["state"] = {"waiting": {"reason": "ContainerCreating"}}
            states.append("waiting")
        statuses.append(s)
    if "running" in states:
        phase = "Running"
    elif states and all(s == "ok" for s in states):
        phase = "Succeeded"
    elif states and all(s in ("ok", "failed") for s in states):
        phase = "Failed"
    else:
        phase = "Pending"
    pod["status"] = {"phase": phase, "hostIP": "127.0.0.1", "startTime": meta["creationTimestamp"],
                     "containerStatuses": statuses}
    return pod


def delete_pod(ns, name, grace):
    obj = get("pods", ns, name)
    args = ["pod", "rm", "-f"] + (["-t", str(grace)] if grace is not None else []) + [name]
    rc, _, err = podman(args)
    if rc != 0 and "no such pod" not in err.lower():
        raise ApiError(500, "InternalError", "podman pod rm %s: %s" % (name, err.strip()))
    gone = with_status(obj)
    unreserve("pods", ns, name)
    with LOCK:
        Fake.play_errors.pop((ns, name), None)
    gone["metadata"]["deletionTimestamp"] = now()
    gone["metadata"]["deletionGracePeriodSeconds"] = grace if grace is not None else 30
    return gone


def container_of(pod, query):
    names = [c["name"] for c in pod["spec"]["containers"]]
    wanted = query.get("container", names[0])
    if isinstance(wanted, list) or wanted not in names:
        raise ApiError(400, "BadRequest", "container %s is not valid for pod %s" % (wanted, pod["metadata"]["name"]))
    return "%s-%s" % (pod["metadata"]["name"], wanted)


# ---------------------------------------------------------------------------- WebSocket


class WebSocket:
    """The server side of RFC 6455 over a handler's streams: unmasked frames out, masked in."""

    def __init__(self, rfile, wfile):
        self.rfile, self.wfile = rfile, wfile
        self.send_lock = threading.Lock()
        self.closed = False

    def send(self, opcode, payload):
        n = len(payload)
        if n < 126:
            head = bytes([0x80 | opcode, n])
        elif n < 65536:
            head = bytes([0x80 | opcode, 126]) + n.to_bytes(2, "big")
        else:
            head = bytes([0x80 | opcode, 127]) + n.to_bytes(8, "big")
        with self.send_lock:
            if self.closed:
                raise BrokenPipeError("the WebSocket is closed")
            self.wfile.write(head + payload)
            self.wfile.flush()

    def close(self, code=1000):
        try:
            self.send(0x8, code.to_bytes(2, "big"))
        except OSError:
            pass
        with self.send_lock:
            self.closed = True

    def read_exact(self, n):
        data = b""
        while len(data) < n:
            chunk = self.rfile.read(n - len(data))
            if not chunk:
                raise EOFError
            data += chunk
        return data

    def frames(self):
        """Yields (opcode, payload) of whole messages and control frames until EOF."""
        message, message_op = b"", None
        while True:
            try:
                b0, b1 = self.read_exact(2)
                n = b1 & 0x7F
                if n == 126:
                    n = int.from_bytes(self.read_exact(2), "big")
                elif n == 127:
                    n = int.from_bytes(self.read_exact(8), "big")
                mask = self.read_exact(4) if b1 & 0x80 else None
                payload = self.read_exact(n)
            except (EOFError, OSError, ValueError):
                return
            if mask:
                payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
            fin, opcode = b0 & 0x80, b0 & 0x0F
            if opcode >= 0x8:
                yield opcode, payload
                continue
            if opcode != 0:
                message, message_op = payload, opcode
            else:
                message += payload
            if fin:
                yield message_op, message
                message, message_op = b"", None


# ---------------------------------------------------------------------------- HTTP


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *_):
        pass

    def send_response(self, code, message=None):
        super().send_response(code, message)
        if Fake.log_path and not getattr(self, "logged", False):
            self.logged = True
            entry = {"method": self.command, "path": self.url_path, "query": self.query, "status": code,
                     "body": self.logged_body}
            with LOG_LOCK, open(Fake.log_path, "a") as f:
                f.write(json.dumps(entry) + "\n")

    def reply(self, code, obj):
        body = json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        self.handle_api()

    do_POST = do_DELETE = do_PUT = do_PATCH = do_GET

    def handle_api(self):
        url = urlsplit(self.path)
        self.url_path = url.path.rstrip("/") or "/"
        self.query = {k: v[0] if len(v) == 1 else v for k, v in parse_qs(url.query, keep_blank_values=True).items()}
        self.logged = False
        raw = self.rfile.read(int(self.headers.get("content-length") or 0))
        try:
            body = json.loads(raw) if raw.strip() else None
        except ValueError:
            self.logged_body = None
            return self.reply(400, status(400, "BadRequest", "the body is not JSON"))
        # As received (the handlers fill in metadata), a Secret's values redacted.
        self.logged_body = copy.deepcopy(body)
        if "/secrets" in self.url_path and isinstance(body, dict):
            for field in ("data", "stringData"):
                if isinstance(body.get(field), dict):
                    self.logged_body[field] = {k: "<redacted>" for k in body[field]}
        try:
            self.route(body)
        except ApiError as e:
            self.reply(e.status["code"], e.status)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def route(self, body):
        path, method = self.url_path, self.command
        if method == "GET" and path == "/version":
            return self.reply(200, {"major": "1", "minor": "33", "gitVersion": "v1.33.0-fake-kube",
                                    "gitCommit": "0", "gitTreeState": "clean", "buildDate": "2026-01-01T00:00:00Z",
                                    "goVersion": "go", "compiler": "gc", "platform": "linux/amd64"})
        if method == "GET" and path == "/api":
            host = self.headers.get("host") or "127.0.0.1"
            return self.reply(200, {"kind": "APIVersions", "versions": ["v1"],
                                    "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": host}]})
        if method == "GET" and path == "/apis":
            gv = {"groupVersion": "networking.k8s.io/v1", "version": "v1"}
            return self.reply(200, {"kind": "APIGroupList", "apiVersion": "v1", "groups": [
                {"name": "networking.k8s.io", "versions": [gv], "preferredVersion": gv}]})
        m = PATH_RE.fullmatch(path)
        if not m or (m["prefix"], m["plural"]) not in RESOURCES:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        kind, api_version = RESOURCES[(m["prefix"], m["plural"])]
        plural, ns, name, sub = m["plural"], m["ns"], m["name"], m["sub"]
        if sub:
            if plural != "pods":
                raise ApiError(404, "NotFound", "the server could not find the requested resource")
            pod = get("pods", ns, name)
            if sub == "exec" and method in ("GET", "POST"):
                return self.exec(pod)
            if sub == "log" and method == "GET":
                return self.logs(pod)
            raise ApiError(405, "MethodNotAllowed", "%s is not allowed on pods/%s" % (method, sub))
        if name is None and method == "GET":
            terms = parse_selector(self.query.get("labelSelector"))
            if self.query.get("fieldSelector"):
                raise ApiError(400, "BadRequest", "fake-kube does not support fieldSelector")
            with LOCK:
                items = [o for (p, n, _), o in sorted(Fake.store.items()) if p == plural and n == ns
                         and selects(terms, o["metadata"].get("labels") or {})]
            if plural == "pods":
                items = [with_status(o) for o in items]
            return self.reply(200, {"kind": kind + "List", "apiVersion": api_version,
                                    "metadata": {"resourceVersion": str(Fake.resource_version)}, "items": items})
        if name is None and method == "POST":
            if not isinstance(body, dict):
                raise ApiError(400, "BadRequest", "a %s object is required" % kind)
            obj = dict(body, kind=kind, apiVersion=api_version)
            if plural == "secrets":
                return self.reply(201, create_secret(ns, obj))
            if plural == "persistentvolumeclaims":
                return self.reply(201, create_claim(ns, obj))
            if plural == "pods":
                return self.reply(201, create_pod(ns, obj))
            reserve(plural, ns, obj)
            return self.reply(201, obj)
        if name is not None and method == "GET":
            obj = get(plural, ns, name)
            return self.reply(200, with_status(obj) if plural == "pods" else obj)
        if name is not None and method == "DELETE":
            if plural == "secrets":
                return self.reply(200, delete_secret(ns, name))
            if plural == "persistentvolumeclaims":
                return self.reply(200, delete_claim(ns, name))
            if plural == "pods":
                grace = (body or {}).get("gracePeriodSeconds", self.query.get("gracePeriodSeconds"))
                try:
                    grace = None if grace is None else max(int(grace), 0)
                except (TypeError, ValueError):
                    raise ApiError(400, "BadRequest", "gracePeriodSeconds must be a number")
                return self.reply(200, delete_pod(ns, name, grace))
            get(plural, ns, name)
            unreserve(plural, ns, name)
            return self.reply(200, success(plural, name))
        raise ApiError(405, "MethodNotAllowed", "%s is not supported on %s by fake-kube" % (method, plural))

    # -- pods/NAME/log

    def logs(self, pod):
        container = container_of(pod, self.query)
        if inspect_container(container) is None:
            raise ApiError(400, "BadRequest", 'container "%s" in pod "%s" is waiting to start: ContainerCreating'
                           % (container.rsplit("-", 1)[-1], pod["metadata"]["name"]))
        args = ["logs"]
        follow = self.query.get("follow") == "true"
        if follow:
            args.append("--follow")
        if "tailLines" in self.query:
            try:
                args += ["--tail", str(max(int(self.query["tailLines"]), 0))]
            except (TypeError, ValueError):
                raise ApiError(400, "BadRequest", "tailLines must be a number")
        if self.query.get("timestamps") == "true":
            args.append("--timestamps")
        proc = subprocess.Popen([Fake.podman] + args + [container], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        timer = None if follow else threading.Timer(PODMAN_TIMEOUT, proc.kill)
        if timer:
            timer.start()
        self.send_response(200)
        self.send_header("content-type", "text/plain")
        self.send_header("transfer-encoding", "chunked")
        self.end_headers()
        try:
            while True:
                chunk = os.read(proc.stdout.fileno(), 65536)
                if not chunk:
                    break
                self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                self.wfile.flush()
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        except OSError:
            self.close_connection = True
        finally:
            if timer:
                timer.cancel()
            proc.kill()
            proc.wait()

    # -- pods/NAME/exec

    def exec(self, pod):
        container = container_of(pod, self.query)
        command = self.query.get("command")
        command = [command] if isinstance(command, str) else command
        if not command:
            raise ApiError(400, "BadRequest", "you must specify at least 1 command")
        flag = lambda k: self.query.get(k) in ("true", "1")  # noqa: E731
        stdin, stdout, stderr, tty = flag("stdin"), flag("stdout"), flag("stderr"), flag("tty")
        if (self.headers.get("upgrade") or "").lower() != "websocket" or not self.headers.get("sec-websocket-key"):
            raise ApiError(400, "BadRequest", "Upgrade request required (fake-kube serves exec over WebSocket only)")
        offered = [p.strip() for p in (self.headers.get("sec-websocket-protocol") or "").split(",")]
        protocol = next((p for p in ("v5.channel.k8s.io", "v4.channel.k8s.io") if p in offered), None)
        if protocol is None:
            raise ApiError(400, "BadRequest", "fake-kube speaks v5.channel.k8s.io and v4.channel.k8s.io; offered: %s" % offered)
        accept = base64.b64encode(hashlib.sha1((self.headers["sec-websocket-key"].strip() + WS_GUID).encode()).digest())
        self.close_connection = True
        args = ["exec"] + (["-i"] if stdin else []) + (["-t"] if tty else []) + [container] + command
        proc = subprocess.Popen([Fake.podman] + args,
                                stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
                                stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT if tty else subprocess.PIPE)
        self.send_response(101, "Switching Protocols")
        self.send_header("Upgrade", "websocket")
        self.send_header("Connection", "Upgrade")
        self.send_header("Sec-WebSocket-Accept", accept.decode())
        self.send_header("Sec-WebSocket-Protocol", protocol)
        self.end_headers()
        self.wfile.flush()
        ws = WebSocket(self.rfile, self.wfile)
        killer = threading.Timer(EXEC_TIMEOUT, proc.kill)
        killer.start()

        def close_stdin():
            if proc.stdin and not proc.stdin.closed:
                try:
                    proc.stdin.close()
                except OSError:
                    pass

        def from_client():
            for opcode, payload in ws.frames():
                if opcode == 0x9:
                    try:
                        ws.send(0xA, payload)
                    except OSError:
                        break
                elif opcode == 0x8:
                    close_stdin()
                    break
                elif opcode in (0x1, 0x2) and payload:
                    channel, data = payload[0], payload[1:]
                    if channel == 0 and proc.stdin and not proc.stdin.closed:
                        try:
                            proc.stdin.write(data)
                            proc.stdin.flush()
                        except OSError:
                            close_stdin()
                    elif channel == 255 and data[:1] == b"\x00":
                        close_stdin()
            close_stdin()

        def pump(stream, channel, wanted):
            while True:
                chunk = os.read(stream.fileno(), 32768)
                if not chunk:
                    return
                if wanted:
                    try:
                        ws.send(0x2, bytes([channel]) + chunk)
                    except OSError:
                        proc.kill()
                        wanted = False

        reader = threading.Thread(target=from_client, daemon=True)
        reader.start()
        pumps = [threading.Thread(target=pump, args=(proc.stdout, 1, stdout or tty))]
        if not tty:
            pumps.append(threading.Thread(target=pump, args=(proc.stderr, 2, stderr)))
        for t in pumps:
            t.start()
        for t in pumps:
            t.join()
        code = proc.wait()
        killer.cancel()
        if code == 0:
            final = {"metadata": {}, "status": "Success"}
        else:
            final = {"metadata": {}, "status": "Failure",
                     "message": "command terminated with non-zero exit code: error executing command [%s], exit code %d"
                     % (" ".join(command), code),
                     "reason": "NonZeroExitCode",
                     "details": {"causes": [{"reason": "ExitCode", "message": str(code)}]}}
        try:
            ws.send(0x2, b"\x03" + json.dumps(final).encode())
        except OSError:
            pass
        ws.close()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--config")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--log")
    ap.add_argument("--podman", default="podman")
    a = ap.parse_args()
    config = {}
    if a.config:
        with open(a.config) as f:
            config = json.load(f)
    Fake.extra_labels = {str(k): str(v) for k, v in (config.get("labels") or {}).items()}
    Fake.podman, Fake.log_path = a.podman, a.log
    server = ThreadingHTTPServer((a.host, a.port), Handler)
    server.daemon_threads = True
    print("listening on %d" % server.server_address[1], flush=True)
    server.serve_forever()


if __name__ == "__main__":
    sys.exit(main())
