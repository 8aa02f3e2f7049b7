//! Real-world devcontainer.json files against real podman: the runArgs people use, type
//! coercion, features (local, and OCI from a registry the test starts).

mod common;

use common::*;

/// The flags real repositories put in runArgs come up: limits, namespaced sysctls, hosts
/// entries, the host name; the pod's own flags are ignored with a warning, not refused.
#[test]
fn run_args_people_use_come_up() {
    if !podman_available() {
        return;
    }
    let env = TestEnv::new("");
    let repo = fixture_repo(
        env.dir.path(),
        "dc-runargs",
        &[(
            ".devcontainer/devcontainer.json",
            r#"{
                "image": "localhost/devaipod-base:latest",
                "build": { "args": { "UNUSED": 1 } },
                "containerEnv": { "PORT": 8080, "CI": true },
                "runArgs": [
                    "--ulimit", "nofile=1024:4096",
                    "--sysctl", "net.ipv4.ip_unprivileged_port_start=0",
                    "--add-host=db.local:10.1.2.3",
                    "--hostname", "devbox",
                    "--network=host",
                    "--name", "mine",
                    "--userns=keep-id",
                    "--tmpfs", "/scratch",
                    "-it"
                ]
            }"#,
        )],
    );
    let up = env.run(&["up", repo.to_str().unwrap(), "--name", "dc-runargs"]);
    let stderr = text(&up.stderr);
    assert!(up.status.success(), "up failed:\n{stderr}");
    assert!(stderr.contains("runArgs `--network=host` is ignored: the pod owns the network"), "{stderr}");
    assert!(stderr.contains("runArgs `--name mine` is ignored"), "{stderr}");

    let sh = |script: &str| env.ok(&["exec", "dc-runargs", "--", "sh", "-c", script]);
    // The container's own limits (podman exec raises an exec's soft limit to the hard one).
    assert_eq!(sh("grep 'Max open files' /proc/1/limits | tr -s ' ' | cut -d' ' -f4,5"), "1024 4096\n");
    assert_eq!(sh("ulimit -Hn"), "4096\n");
    assert_eq!(sh("cat /proc/sys/net/ipv4/ip_unprivileged_port_start"), "0\n");
    assert_eq!(sh("grep db.local /etc/hosts | cut -f1"), "10.1.2.3\n");
    assert_eq!(sh("hostname"), "devbox\n");
    assert_eq!(sh("echo $PORT $CI"), "8080 true\n");
    assert_eq!(sh("awk '$2 == \"/scratch\" {print $3}' /proc/mounts"), "tmpfs\n");
    // The agent keeps its own limits.
    assert_ne!(env.ok(&["exec", "dc-runargs", "--agent", "--", "sh", "-c", "ulimit -Hn"]), "4096\n");

    env.ok(&["delete", "dc-runargs"]);
    assert_eq!(env.leftovers(), Vec::<String>::new());
}

/// A registry on 127.0.0.1 (Debian's `docker-registry`), stopped when dropped.
struct Registry {
    child: std::process::Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Registry {
    fn start() -> Registry {
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let config = dir.path().join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n",
                dir.path().join("data").display()
            ),
        )
        .unwrap();
        let child = std::process::Command::new("docker-registry")
            .args(["serve", config.to_str().unwrap()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("docker-registry (Debian package, installed by scripts/setup.sh)");
        let reg = Registry { child, port, _dir: dir };
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return reg;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        panic!("the registry did not listen on {port}");
    }

    /// Pushes a feature folder as the devcontainers OCI artifact (one tar layer of media
    /// type application/vnd.devcontainers.layer.v1+tar), as `devcontainer features publish`
    /// does, through the distribution API.
    fn push_feature(&self, repo: &str, tag: &str, files: &[(&str, &str)]) {
        use sha2::Digest;
        let mut tar = tar::Builder::new(Vec::new());
        for (name, content) in files {
            let mut h = tar::Header::new_gnu();
            h.set_size(content.len() as u64);
            h.set_mode(0o755);
            h.set_cksum();
            tar.append_data(&mut h, name, content.as_bytes()).unwrap();
        }
        let layer = tar.into_inner().unwrap();
        let config = b"{}".to_vec();
        let digest = |b: &[u8]| format!("sha256:{:x}", sha2::Sha256::digest(b));
        let base = format!("http://127.0.0.1:{}/v2/{repo}", self.port);
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let http = reqwest::Client::new();
            for blob in [&layer, &config] {
                let start = http.post(format!("{base}/blobs/uploads/")).send().await.unwrap();
                assert_eq!(start.status(), 202, "{:?}", start.text().await);
                let loc = start.headers()["location"].to_str().unwrap().to_owned();
                let loc = if loc.starts_with("http") { loc } else { format!("http://127.0.0.1:{}{loc}", self.port) };
                let sep = if loc.contains('?') { '&' } else { '?' };
                let put = http.put(format!("{loc}{sep}digest={}", digest(blob))).body(blob.clone()).send().await.unwrap();
                assert_eq!(put.status(), 201, "{:?}", put.text().await);
            }
            let manifest = serde_json::json!({
                "schemaVersion": 2,
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": { "mediaType": "application/vnd.devcontainers", "digest": digest(&config), "size": config.len() },
                "layers": [{
                    "mediaType": "application/vnd.devcontainers.layer.v1+tar",
                    "digest": digest(&layer),
                    "size": layer.len(),
                    "annotations": { "org.opencontainers.image.title": "devcontainer-feature.tgz" }
                }]
            });
            let put = http
                .put(format!("{base}/manifests/{tag}"))
                .header("content-type", "application/vnd.oci.image.manifest.v1+json")
                .body(manifest.to_string())
                .send()
                .await
                .unwrap();
            assert_eq!(put.status(), 201, "{:?}", put.text().await);
        });
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const GREETER_JSON: &str = r#"{
    "id": "greeter", "version": "1.0.0",
    "options": { "greeting": { "type": "string", "default": "hi" }, "count": { "type": "string", "default": "1" } },
    "dependsOn": { "./base-tool": { "level": true } },
    "containerEnv": { "GREETER_HOME": "/opt/greeter", "PATH": "/opt/greeter/bin:${PATH}" },
    "postCreateCommand": "echo feature >> /tmp/post"
}"#;
const GREETER_SH: &str = "#!/bin/sh\nset -e\nmkdir -p /opt/greeter/bin\n\
    printf '#!/bin/sh\\necho \"%s x %s\"\\n' \"$GREETING\" \"$COUNT\" > /opt/greeter/bin/greet\n\
    chmod +x /opt/greeter/bin/greet\necho \"$_REMOTE_USER $_REMOTE_USER_HOME $_CONTAINER_USER\" > /opt/greeter/users\n\
    echo greeter >> /opt/features-order\n";
const BASE_TOOL_JSON: &str =
    r#"{ "id": "base-tool", "options": { "level": { "type": "boolean", "default": false } } }"#;
const BASE_TOOL_SH: &str = "#!/bin/sh\necho \"base-tool LEVEL=$LEVEL\" >> /opt/features-order\n";
const MARKER_JSON: &str =
    r#"{ "id": "marker", "version": "1.2.0", "options": { "flavour": { "type": "string", "default": "plain" } } }"#;
const MARKER_SH: &str = "#!/bin/sh\necho \"marker $FLAVOUR\" >> /opt/features-order\n";

/// Local features (one depending on another, with options) and an OCI feature served by a
/// registry the test starts: installed once into one derived image, in order, with their
/// options; the workspace and the agent both have what they installed; the second `up`
/// reuses the image, and a third works from the cache with the registry gone.
#[test]
fn local_and_oci_features_are_installed_once_for_both_containers() {
    if !podman_available() {
        return;
    }
    let registry = Registry::start();
    registry.push_feature(
        "devaipod-test/marker",
        "1",
        &[("devcontainer-feature.json", MARKER_JSON), ("install.sh", MARKER_SH)],
    );
    let env = TestEnv::new("");
    let oci = format!("127.0.0.1:{}/devaipod-test/marker:1", registry.port);
    let dc = format!(
        r#"{{
            "image": "localhost/devaipod-base:latest",
            "features": {{
                "./greeter": {{ "greeting": "hello there", "count": 3 }},
                "{oci}": {{ "flavour": "oci" }}
            }},
            "postCreateCommand": "echo config >> /tmp/post"
        }}"#
    );
    let repo = fixture_repo(
        env.dir.path(),
        "dc-feat",
        &[
            (".devcontainer/devcontainer.json", &dc),
            (".devcontainer/greeter/devcontainer-feature.json", GREETER_JSON),
            (".devcontainer/greeter/install.sh", GREETER_SH),
            (".devcontainer/base-tool/devcontainer-feature.json", BASE_TOOL_JSON),
            (".devcontainer/base-tool/install.sh", BASE_TOOL_SH),
        ],
    );
    let repo = repo.to_str().unwrap();

    let up = env.run(&["up", repo, "--name", "dc-feat"]);
    let stderr = text(&up.stderr);
    assert!(up.status.success(), "up failed:\n{stderr}");
    assert!(stderr.contains("==> installing features ./base-tool, 127.0.0.1:"), "{stderr}");
    let sh = |who: &[&str], script: &str| {
        let mut args = vec!["exec", "dc-feat"];
        args.extend_from_slice(who);
        args.extend_from_slice(&["--", "sh", "-c", script]);
        env.ok(&args)
    };
    assert_eq!(sh(&[], "cat /opt/features-order"), "base-tool LEVEL=true\nmarker oci\ngreeter\n");
    assert_eq!(sh(&[], "greet"), "hello there x 3\n", "options as variables, containerEnv's PATH");
    assert_eq!(
        sh(&["--agent"], "greet; echo $GREETER_HOME"),
        "hello there x 3\n/opt/greeter\n",
        "the agent has the toolchain"
    );
    assert_eq!(sh(&[], "cat /opt/greeter/users"), "root /root root\n");
    assert_eq!(sh(&[], "cat /tmp/post"), "feature\nconfig\n", "the feature's command first");
    let image = podman(&["inspect", "--format", "{{.ImageName}}", "devaipod-dc-feat-agent"]);
    assert!(image.starts_with("localhost/devaipod-features-"), "{image}");
    env.ok(&["delete", "dc-feat"]);
    assert_eq!(env.leftovers(), Vec::<String>::new());

    // Nothing changed: the image is reused.
    let up = env.run(&["up", repo, "--name", "dc-feat"]);
    let stderr = text(&up.stderr);
    assert!(up.status.success(), "second up failed:\n{stderr}");
    assert!(stderr.contains("==> features already installed in localhost/devaipod-features-"), "{stderr}");
    assert!(!stderr.contains("installing features"), "{stderr}");
    env.ok(&["delete", "dc-feat"]);

    // The registry gone: the cached digest of the tag serves.
    drop(registry);
    let up = env.run(&["up", repo, "--name", "dc-feat"]);
    let stderr = text(&up.stderr);
    assert!(up.status.success(), "offline up failed:\n{stderr}");
    assert!(stderr.contains("registry out of reach") && stderr.contains("using the cached sha256:"), "{stderr}");
    assert!(stderr.contains("features already installed"), "{stderr}");
    assert_eq!(sh(&[], "greet"), "hello there x 3\n");
    env.ok(&["delete", "dc-feat"]);
    assert_eq!(env.leftovers(), Vec::<String>::new());
    podman(&["rmi", "-f", image.trim()]);
}

/// A feature that cannot be had is an error naming the key and its line, before anything
/// is made.
#[test]
fn a_feature_that_cannot_be_had_names_its_key_and_line() {
    let env = TestEnv::new("");
    for (id, why) in [
        ("./missing", "holds no devcontainer-feature.json"),
        ("node", "legacy (v1) short id"),
        ("127.0.0.1:9/devaipod-test/none:1", "cannot reach the registry 127.0.0.1:9"),
    ] {
        let dc = format!(
            "{{\n  \"image\": \"localhost/devaipod-base:latest\",\n  \"features\": {{\n    \"{id}\": {{}}\n  }}\n}}"
        );
        let repo = fixture_repo(env.dir.path(), "dc-badfeat", &[(".devcontainer/devcontainer.json", &dc)]);
        let e = env.fails(&["up", repo.to_str().unwrap(), "--name", "dc-badfeat", "--dry-run"]);
        let want = format!("devcontainer.json:4: field `features`: feature `{id}`: ");
        assert!(e.contains(&want) && e.contains(why), "{id}: want {want:?} … {why:?} in\n{e}");
        std::fs::remove_dir_all(&repo).unwrap();
    }
}

/// A database-like service built from the local base image (a TCP server in perl), the
/// workspace depending on it being healthy: `up` brings both, the workspace reaches the
/// service by its name and at the pod's address, the agent reaches it neither way, and
/// `delete` removes every container, volume and built image.
#[test]
fn a_compose_service_beside_the_workspace_is_reached_by_name_but_not_by_the_agent() {
    if !podman_available() {
        return;
    }
    let env = TestEnv::new("");
    let server = r#"use strict; use warnings; use IO::Socket::INET;
my $s = IO::Socket::INET->new(LocalAddr => '0.0.0.0', LocalPort => 7000, Listen => 16, ReuseAddr => 1) or die "listen: $!";
open(my $f, '>', '/data/ready') or die "volume: $!"; close $f;
while (my $c = $s->accept) { print $c "pong from $ENV{DB_NAME}\n"; close $c; }
"#;
    let repo = fixture_repo(
        env.dir.path(),
        "dc-compose",
        &[
            (
                ".devcontainer/devcontainer.json",
                r#"{
                    "dockerComposeFile": ["docker-compose.yml", "docker-compose.dev.yml"],
                    "service": "app",
                    "containerEnv": { "FROM_JSON": "json" }
                }"#,
            ),
            (
                ".devcontainer/docker-compose.yml",
                "services:\n  app:\n    image: localhost/devaipod-base:latest\n    volumes:\n      - ..:/workspaces/dc-compose:cached\n    command: sleep infinity\n    environment:\n      DB_ADDR: db:${DB_PORT:-7000}\n    depends_on:\n      db:\n        condition: service_healthy\n  db:\n    build: ./db\n    environment:\n      DB_NAME: ${DB_NAME}\n    volumes:\n      - dbdata:/data\n    healthcheck:\n      test: [\"CMD\", \"bash\", \"-c\", \"exec 3<>/dev/tcp/127.0.0.1/7000\"]\n      interval: 1s\n      retries: 30\nvolumes:\n  dbdata:\n",
            ),
            // A second file, merged over the first.
            (".devcontainer/docker-compose.dev.yml", "services:\n  app:\n    environment:\n      STAGE: dev\n"),
            (".devcontainer/.env", "DB_NAME=devdb\n"),
            (
                ".devcontainer/db/Dockerfile",
                "FROM localhost/devaipod-base:latest\nCOPY server.pl /usr/local/bin/server.pl\nCMD [\"perl\", \"/usr/local/bin/server.pl\"]\n",
            ),
            (".devcontainer/db/server.pl", server),
        ],
    );
    let ws = "dc-compose";
    let up = env.run(&["up", repo.to_str().unwrap(), "--name", ws]);
    let stderr = text(&up.stderr);
    assert!(up.status.success(), "up failed:\n{stderr}");
    assert!(stderr.contains("waiting for service db to be healthy"), "{stderr}");

    let pod = format!("devaipod-{ws}");
    let db = format!("{pod}_db");
    let filter = format!("label=io.devaipod.instance={}", env.instance);
    let containers =
        podman(&["ps", "-a", "--filter", &filter, "--format", "{{.Names}} {{index .Labels \"io.devaipod.role\"}}"]);
    assert!(containers.contains(&format!("{db} service")), "{containers}");
    let volumes = podman(&["volume", "ls", "--filter", &filter, "--format", "{{.Name}}"]);
    assert!(volumes.lines().any(|v| v == format!("{pod}_dbdata")), "{volumes}");
    let image = format!("localhost/devaipod-build/{}-{ws}_db:latest", env.instance);
    assert!(podman(&["image", "ls", "--format", "{{.Repository}}:{{.Tag}}"]).contains(&image), "{image}");

    // The workspace: the repository where the compose file mounts it, the environment of
    // both files and devcontainer.json, the service by its name and at the pod's address.
    let sh = |script: &str| env.ok(&["exec", ws, "--", "bash", "-c", script]);
    assert_eq!(sh("pwd; test -f README.md && echo repo"), "/workspaces/dc-compose\nrepo\n");
    assert_eq!(sh("echo $DB_ADDR $STAGE $FROM_JSON"), "db:7000 dev json\n");
    let by_name = "exec 3<>/dev/tcp/db/7000 && timeout 5 cat <&3";
    assert_eq!(sh(by_name), "pong from devdb\n");
    let ip = sh("hostname -I | cut -d' ' -f1").trim().to_owned();
    assert!(ip.parse::<std::net::Ipv4Addr>().is_ok_and(|a| !a.is_loopback()), "pod address: {ip:?}");
    let by_ip = format!("exec 3<>/dev/tcp/{ip}/7000 && timeout 5 cat <&3");
    assert_eq!(sh(&by_ip), "pong from devdb\n");

    // The agent reaches neither: it has a network namespace of its own (loopback only).
    for script in [by_name.to_owned(), by_ip] {
        let out = env.run(&["exec", ws, "--agent", "--", "timeout", "10", "bash", "-c", &script]);
        assert!(!out.status.success(), "the agent reached the service with `{script}`: {}", text(&out.stdout));
        assert!(!text(&out.stdout).contains("pong"), "{}", text(&out.stdout));
    }

    env.ok(&["delete", ws]);
    assert_eq!(env.leftovers(), Vec::<String>::new());
    let images = podman(&["image", "ls", "--format", "{{.Repository}}:{{.Tag}}"]);
    assert!(!images.contains(&image), "the service's image stays after delete: {images}");
}
