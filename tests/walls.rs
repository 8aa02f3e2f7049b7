//! The walls between an agent and everything else, tried from inside a real agent
//! container as an attacker would: every connection that should fail fails from the agent,
//! and the same connection from an ordinary container succeeds (so a failure proves the
//! wall, not a broken probe).

mod common;

use common::*;

/// `bash`'s `/dev/tcp`: whether a TCP connection to `host:port` opens within 3 s, run in
/// `container` as its own user.
fn connects(container: &str, host: &str, port: u16) -> bool {
    let probe = format!("timeout 3 bash -c 'exec 3<>/dev/tcp/{host}/{port}' 2>/dev/null && echo open || echo closed");
    podman(&["exec", container, "bash", "-c", &probe]).trim() == "open"
}

/// The address of `pod`'s network namespace on podman's bridge.
fn pod_ip(pod: &str) -> String {
    let infra = podman(&["pod", "inspect", pod, "--format", "{{.InfraContainerID}}"]);
    podman(&["inspect", infra.trim(), "--format", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}"])
        .trim()
        .to_owned()
}

/// The default gateway of `container` (the host, on podman's bridge), from `/proc/net/route`.
fn gateway(container: &str) -> String {
    let routes = podman(&["exec", container, "cat", "/proc/net/route"]);
    let hex = routes
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|f| f.get(1) == Some(&"00000000"))
        .and_then(|f| f.get(2).map(|g| g.to_string()))
        .expect("a default route in the workspace container");
    let n = u32::from_str_radix(&hex, 16).unwrap();
    std::net::Ipv4Addr::from(n.to_le_bytes()).to_string()
}

/// Starts `git daemon` (a TCP listener every image with git has) in `container`.
fn listen(container: &str, addr: &str, port: u16) {
    let cmd = format!(
        "git daemon --reuseaddr --listen={addr} --port={port} --base-path=/tmp /tmp >/dev/null 2>&1 </dev/null &"
    );
    podman(&["exec", container, "sh", "-c", &cmd]);
}

#[test]
fn an_agent_reaches_nothing_but_its_relay_and_cannot_make_user_namespaces() {
    if !podman_available() {
        return;
    }
    let env = TestEnv::new("");
    // A listener on every address of this host, which containers reach through the bridge.
    let host = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
    let host_port = host.local_addr().unwrap().port();
    let id = std::process::id();
    let (a, b) = (format!("walla{id}"), format!("wallb{id}"));
    let repo = fixture_repo(env.dir.path(), "walls", &[("README.md", "walls\n")]);
    for name in [&a, &b] {
        env.ok(&["up", repo.to_str().unwrap(), "--name", name]);
    }
    let (agent, own, other) =
        (format!("devaipod-{a}-agent"), format!("devaipod-{a}-workspace"), format!("devaipod-{b}-workspace"));
    listen(&own, "127.0.0.1", 9101);
    listen(&own, "0.0.0.0", 9102);
    listen(&other, "0.0.0.0", 9103);
    let (own_ip, other_ip, gw) = (pod_ip(&format!("devaipod-{a}")), pod_ip(&format!("devaipod-{b}")), gateway(&own));

    let targets = [
        ("its own workspace container's 127.0.0.1 listener", "127.0.0.1", 9101, &own),
        ("its own workspace container's 0.0.0.0 listener", own_ip.as_str(), 9102, &own),
        ("another pod's 0.0.0.0 listener", other_ip.as_str(), 9103, &own),
        ("the host, through the bridge gateway", gw.as_str(), host_port, &own),
        ("the host as host.containers.internal", "host.containers.internal", host_port, &own),
    ];
    // Wait for the listeners (started in the background) where an ordinary container sees them.
    for (what, host, port, control) in &targets {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !connects(control, host, *port) {
            assert!(std::time::Instant::now() < deadline, "control: {control} cannot reach {what} ({host}:{port})");
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
    }
    for (what, host, port, _) in &targets {
        assert!(!connects(&agent, host, *port), "the agent reached {what} ({host}:{port})");
    }
    // No interface but loopback.
    let interfaces = podman(&["exec", &agent, "cat", "/proc/net/dev"]);
    let names: Vec<&str> = interfaces.lines().skip(2).filter_map(|l| l.split(':').next()).map(str::trim).collect();
    assert_eq!(names, ["lo"], "{interfaces}");

    // No user namespaces in the agent; the human's container is not restricted so.
    let unshare = |c: &str| podman(&["exec", c, "sh", "-c", "unshare -Ur true 2>&1 && echo made || echo refused"]);
    assert_eq!(unshare(&own).lines().last(), Some("made"), "control: the workspace container makes one");
    let refused = unshare(&agent);
    assert_eq!(refused.lines().last(), Some("refused"), "{refused}");

    // The agent's API answered through its socket (`up` waited for it). What the agent puts
    // in place of that socket is not followed: here a link to gator's socket.
    let plant = "ln -sfn /run/devaipod/gator/gator.sock /run/devaipod/agent/api.sock.new && mv -T /run/devaipod/agent/api.sock.new /run/devaipod/agent/api.sock";
    podman(&["exec", &agent, "sh", "-c", plant]);
    let refused = env.fails(&["run", "-w", &a, "-c", "say hello"]);
    assert!(refused.contains("not a socket"), "{refused}");
    drop(host);
    for name in [&a, &b] {
        env.ok(&["delete", name]);
    }
    assert_eq!(env.leftovers(), Vec::<String>::new());
}

/// Sends `request` to the agent's relay (its proxy port on loopback) from inside `container`
/// and returns the first line of the answer.
fn through_relay(container: &str, request: &str) -> String {
    let script = format!("exec 3<>/dev/tcp/127.0.0.1/3128 && printf '{request}' >&3 && timeout 5 head -n 1 <&3");
    podman(&["exec", container, "bash", "-c", &script]).trim().to_owned()
}

#[test]
fn the_agent_reaches_an_allowed_host_through_the_proxy_and_nothing_else() {
    if !podman_available() {
        return;
    }
    // A server on this host's loopback stands in for an allowed host on the internet: the
    // proxy's resolver names it (`[network] hosts`); the agent could never reach it itself.
    let allowed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = allowed.local_addr().unwrap().port();
    std::thread::spawn(move || {
        use std::io::{Read, Write};
        for mut s in allowed.incoming().flatten() {
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf);
            let _ = s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 7\r\nconnection: close\r\n\r\nallowed");
        }
    });
    let config = format!(
        "[network]\negress = \"allowlist\"\nallow-hosts = [\"allowed.test:{port}\"]\nhosts = {{ \"allowed.test\" = \"127.0.0.1\" }}\n"
    );
    let env = TestEnv::new(&config);
    let ws = format!("wallc{}", std::process::id());
    let repo = fixture_repo(env.dir.path(), "egress", &[("README.md", "egress\n")]);
    env.ok(&["up", repo.to_str().unwrap(), "--name", &ws]);
    let agent = format!("devaipod-{ws}-agent");

    // Allowed: a tunnel, and plain HTTP forwarding.
    let connect = format!("CONNECT allowed.test:{port} HTTP/1.1\\r\\nHost: allowed.test:{port}\\r\\n\\r\\n");
    assert!(through_relay(&agent, &connect).starts_with("HTTP/1.1 200"), "CONNECT to an allowed host");
    let get = format!("GET http://allowed.test:{port}/ HTTP/1.1\\r\\nHost: allowed.test:{port}\\r\\n\\r\\n");
    assert!(through_relay(&agent, &get).starts_with("HTTP/1.1 200"), "GET through the proxy");
    // Refused: a host off the list, the allowed host on another port, and this host's
    // loopback by address.
    for target in ["denied.test:443", &format!("allowed.test:{}", port.wrapping_add(1)), &format!("127.0.0.1:{port}")] {
        let line = through_relay(&agent, &format!("CONNECT {target} HTTP/1.1\\r\\nHost: {target}\\r\\n\\r\\n"));
        assert!(line.starts_with("HTTP/1.1 403"), "{target}: {line}");
    }
    // Every decision is audited, allowed and denied alike.
    let log = env.json(&["gator", "log", &ws]);
    let rows = log.as_array().unwrap();
    let egress = |decision: &str, target: &str| {
        rows.iter().any(|r| {
            r["tool"] == "egress"
                && r["decision"] == decision
                && r["target"].as_str().is_some_and(|t| t.contains(target))
        })
    };
    assert!(egress("allow", "allowed.test"), "{log:#}");
    assert!(egress("deny", "denied.test"), "{log:#}");
    env.ok(&["delete", &ws]);
    assert_eq!(env.leftovers(), Vec::<String>::new());
}
