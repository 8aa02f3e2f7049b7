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
