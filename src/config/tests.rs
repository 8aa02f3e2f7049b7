use std::path::Path;

use super::*;

fn err(text: &str) -> String {
    parse(text, Path::new("/home/u/.config/devaipod.toml")).unwrap_err().to_string()
}

#[test]
fn empty_file_is_defaults() {
    let c = parse("", Path::new("x.toml")).unwrap();
    assert_eq!(c, Config::default());
    assert_eq!(c.default_image, DEFAULT_IMAGE);
    assert_eq!(c.instance.as_str(), "default");
    assert_eq!(c.orchestration.max_workers, 2);
    assert_eq!(c.ssh.listen, "127.0.0.1:2222");
    assert!(c.ssh.enabled, "the SSH server is on unless turned off");
    assert_eq!(c.ssh.authorized_keys, None);
}

#[test]
fn missing_default_file_is_defaults_but_missing_named_file_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("nope.toml");
    assert_eq!(load(&p, false).unwrap(), Config::default());
    let e = load(&p, true).unwrap_err().to_string();
    assert!(e.starts_with(&format!("cannot read config file {}", p.display())), "{e}");
}

#[test]
fn full_config_parses() {
    let c = parse(
        r#"
default-image = "localhost/mine:1"
instance = "ci-42"
[env]
allowlist = ["TERM", "LANG"]
vars = { EDITOR = "vi" }
[trusted.env]
allowlist = ["GH_TOKEN"]
[trusted.env.vars]
NPM_REGISTRY_TOKEN = "t"
[trusted]
secrets = ["GH_TOKEN=gh_token", "AWS_KEY=aws.key-1"]
[service-gator.gh]
read = true
[service-gator.gh.repos]
"octo/hello" = { read = true, create-draft = true, push-new-branch = true }
"octo/*" = { read = true }
[orchestration]
enabled = true
max-workers = 4
worker-gator = "none"
worker-timeout-secs = 60
[fanout]
max-agents = 3
max-parallel = 2
check = "cargo test -q"
[pool]
size = 2
images = ["localhost/mine:1", "localhost/other:2", "localhost/mine:1"]
[agent]
models = ["small", "large"]
[ssh]
enabled = false
listen = "127.0.0.1:2200"
authorized-keys = "/etc/devaipod/keys"
identity-file = "~/.ssh/id_ed25519"
[network]
egress = "allowlist"
allow-hosts = ["api.example.test", "*.pypi.org:443", "10.1.2.3:8080"]
hosts = { "git.internal" = "127.0.0.1" }
"#,
        Path::new("x.toml"),
    )
    .unwrap();
    assert_eq!(c.default_image, "localhost/mine:1");
    assert_eq!(c.instance.as_str(), "ci-42");
    assert_eq!(c.env.allowlist.len(), 2);
    assert_eq!(c.env.vars.values().next().map(String::as_str), Some("vi"));
    assert_eq!(c.trusted.secrets[1].env.as_str(), "AWS_KEY");
    assert_eq!(c.trusted.secrets[1].secret, "aws.key-1");
    assert!(c.service_gator.gh.read);
    let perms: Vec<_> = c.service_gator.gh.repos.iter().collect();
    assert_eq!(perms.len(), 2);
    let hello = perms.iter().find(|(k, _)| k.repo.as_deref() == Some("hello")).unwrap().1;
    assert!(hello.create_draft && hello.push_new_branch && !hello.write);
    assert_eq!(c.orchestration.max_workers, 4);
    assert_eq!(c.orchestration.limit(), 4);
    assert_eq!(c.orchestration.worker_gator, crate::config::WorkerGator::None);
    assert_eq!((c.orchestration.worker_timeout_secs, c.orchestration.worker_idle_secs), (60, 300));
    assert_eq!((c.fanout.max_agents, c.fanout.max_parallel), (3, 2));
    assert_eq!(c.fanout.check.as_deref(), Some("cargo test -q"));
    assert_eq!(c.fanout.check_timeout_secs, 600);
    assert_eq!(c.pool.images(&c.default_image), ["localhost/mine:1", "localhost/other:2"]);
    assert_eq!(c.agent.allowed_models(), ["qwen2.5-coder", "small", "large"]);
    assert!(!c.ssh.enabled);
    assert_eq!(c.ssh.authorized_keys_path(), Path::new("/etc/devaipod/keys"));
    assert_eq!(c.ssh.identity_file.as_deref(), Some(Path::new("~/.ssh/id_ed25519")));
    assert_eq!(c.network.egress, NetworkEgress::Allowlist);
    let hosts: Vec<String> = c.network.allow_hosts.iter().map(ToString::to_string).collect();
    assert_eq!(hosts, ["api.example.test", "*.pypi.org:443", "10.1.2.3:8080"]);
    let mapped: Vec<_> = c.network.hosts.iter().map(|(k, v)| (k.as_str(), v.to_string())).collect();
    assert_eq!(mapped, [("git.internal", "127.0.0.1".to_owned())]);
}

#[test]
fn egress_is_an_allowlist_unless_opened() {
    assert_eq!(Config::default().network.egress, NetworkEgress::Allowlist);
    let c = parse("[network]\negress = \"open\"\n", Path::new("x.toml")).unwrap();
    assert_eq!(c.network.egress, NetworkEgress::Open);
}

#[test]
fn host_patterns_follow_their_grammar() {
    let good: &[(&str, &str, bool, Option<u16>)] = &[
        ("pypi.org", "pypi.org", false, None),
        ("PyPI.org:8443", "pypi.org", false, Some(8443)),
        ("*.github.com", "github.com", true, None),
        ("*.example.org:443", "example.org", true, Some(443)),
        ("10.0.0.1", "10.0.0.1", false, None),
        ("[::1]:80", "[::1]", false, Some(80)),
        ("localhost", "localhost", false, None),
    ];
    for (text, host, wildcard, port) in good {
        let p = HostPattern::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"));
        assert_eq!((p.host.as_str(), p.wildcard, p.port), (*host, *wildcard, *port), "{text}");
        assert_eq!(HostPattern::parse(&p.to_string()).unwrap(), p, "{text} round-trips");
    }
    let bad: &[(&str, &str)] = &[
        ("", "empty"),
        ("*", "`*` only as the first label"),
        ("a.*.org", "`*` only as the first label"),
        ("*.org", "needs a domain with a dot"),
        ("example.org:0", "port `0` is not 1 to 65535"),
        ("example.org:http", "port `http` is not 1 to 65535"),
        ("exa mple.org", "not a DNS name"),
        ("https://example.org", "a URL or path: give the host only"),
        ("*.10.0.0.1", "not an address"),
        ("[nope]", "not an IPv6 address"),
        ("-a.org", "not a DNS name"),
    ];
    for (text, why) in bad {
        let e = HostPattern::parse(text).expect_err(text);
        assert!(e.starts_with(&format!("`{text}` is not a host pattern")) && e.contains(why), "{text}: {e}");
        assert!(e.ends_with(crate::config::HOST_PATTERN_GRAMMAR), "{e}");
    }
}

#[test]
fn host_patterns_match_hosts_and_ports() {
    let p = |s: &str| HostPattern::parse(s).unwrap();
    let cases: &[(&str, &str, u16, bool)] = &[
        ("example.org", "example.org", 443, true),
        ("example.org", "EXAMPLE.org.", 80, true),
        ("example.org", "example.org", 22, false),
        ("example.org", "www.example.org", 443, false),
        ("example.org:8443", "example.org", 8443, true),
        ("example.org:8443", "example.org", 443, false),
        ("*.example.org", "a.example.org", 443, true),
        ("*.example.org", "a.b.example.org", 80, true),
        ("*.example.org", "example.org", 443, false),
        ("*.example.org", "badexample.org", 443, false),
        ("*.example.org:22", "git.example.org", 22, true),
        ("*.example.org:22", "git.example.org", 443, false),
    ];
    for (pattern, host, port, want) in cases {
        assert_eq!(p(pattern).matches(host, *port), *want, "{pattern} vs {host}:{port}");
    }
}

#[test]
fn errors_name_file_line_and_key() {
    let cases: &[(&str, &str)] = &[
        ("default-image = \"x\"\nbogus = 1\n", "/home/u/.config/devaipod.toml:2:1: bogus: unknown field `bogus`"),
        ("[env]\nallowlist = \"TERM\"\n", "/home/u/.config/devaipod.toml:2:13: env.allowlist: invalid type: string"),
        (
            "[trusted]\nsecrets = [\"GH_TOKEN\"]\n",
            ":2:11: trusted.secrets[0]: `GH_TOKEN` must have the form ENV=podman_secret_name",
        ),
        ("[trusted]\nsecrets = [\"1X=s\"]\n", "trusted.secrets[0]: `1X` is not an environment variable name"),
        ("[trusted]\nsecrets = [\"X=bad name\"]\n", "`bad name` is not a podman secret name"),
        (
            "[orchestration]\nmax-workers = 99\n",
            ":2:15: orchestration.max-workers: 99 is out of range: use 0 (no workers) to 8",
        ),
        (
            "[orchestration]\nmax-depth = 2\n",
            ":2:13: orchestration.max-depth: 2 is not supported: workers do not delegate further (use 1)",
        ),
        ("[fanout]\nmax-agents = 0\n", ":2:14: fanout.max-agents: 0 is out of range: use 1 to 16 candidates"),
        ("[pool]\nsize = 17\n", ":2:8: pool.size: 17 is out of range: use 0 (no pool) to 16 members per image"),
        ("[pool]\nsizes = 1\n", "pool.sizes: unknown field `sizes`, expected `size` or `images`"),
        ("[fanout]\nmax-parallel = 40\n", "fanout.max-parallel: 40 is out of range: use 1 to 16 containers at once"),
        ("[orchestration]\nworker-gator = \"all\"\n", "orchestration.worker-gator: unknown variant `all`"),
        ("[ssh]\nlisten = \"everywhere\"\n", "ssh.listen: `everywhere` is not an address"),
        (
            "[network]\negress = \"closed\"\n",
            "network.egress: unknown variant `closed`, expected `open` or `allowlist`",
        ),
        (
            "[network]\nallow-hosts = [\"ok.org\", \"*.bad\"]\n",
            ":2:15: network.allow-hosts[1]: `*.bad` is not a host pattern (`*.` needs a domain with a dot, e.g. *.example.org): use host, host:port, *.domain",
        ),
        ("[network]\nhosts = { \"a.org\" = \"nope\" }\n", "network.hosts.a.org: invalid IP address syntax"),
        (
            "[service-gator.gh.repos]\n\"nope\" = {}\n",
            "2:1: service-gator.gh.repos.nope: `nope` is not `owner/repo` or `owner/*`",
        ),
        (
            "[service-gator.gh.repos]\n\"a/b\" = { merge = true }\n",
            "2:11: service-gator.gh.repos.a/b.merge: unknown field `merge`",
        ),
        ("instance = \"Not_A_Label\"\n", ":1:12: instance: `Not_A_Label` is not a valid instance id"),
        ("[env\n", "/home/u/.config/devaipod.toml:1:5: (syntax):"),
    ];
    for (text, want) in cases {
        let got = err(text);
        assert!(got.contains(want), "config {text:?}\n  got:  {got}\n  want: {want}");
    }
}

#[test]
fn dns_labels_are_rfc_1123() {
    for good in ["a", "a-1", "0abc", &"a".repeat(63)] {
        assert!(is_dns_label(good), "{good}");
    }
    for bad in ["", "-a", "a-", "A", "a_b", "a.b", &"a".repeat(64)] {
        assert!(!is_dns_label(bad), "{bad}");
    }
}

#[test]
fn client_urls_are_scheme_host_and_port_only() {
    for (good, want) in [
        ("http://127.0.0.1:8080", "http://127.0.0.1:8080"),
        ("http://127.0.0.1:8080/", "http://127.0.0.1:8080"),
        ("https://devaipod.example.org:443", "https://devaipod.example.org:443"),
        ("http://[::1]:8080", "http://[::1]:8080"),
    ] {
        assert_eq!(daemon_url(good).as_deref(), Ok(want), "{good}");
    }
    for (bad, why) in [
        ("127.0.0.1:8080", "not http:// or https://"),
        ("http://", "no host"),
        ("http://localhost", "no port"),
        ("http://localhost:0", "the host or the port is missing or wrong"),
        ("http://localhost:99999", "the host or the port is missing or wrong"),
        ("http://localhost:8080/api", "no path, query or user"),
        ("http://me@localhost:8080", "no path, query or user"),
    ] {
        let e = daemon_url(bad).unwrap_err();
        assert!(e.contains(why) && e.contains("http://host:port"), "{bad}: {e}");
    }
    let c = parse("[client]\nurl = \"http://127.0.0.1:8080/\"\ntoken-file = \"/t\"\n", Path::new("x.toml")).unwrap();
    assert_eq!(c.client.url.as_deref(), Some("http://127.0.0.1:8080"));
    assert_eq!(c.client.token_file.as_deref(), Some(Path::new("/t")));
    let e = parse("[client]\nurl = \"localhost:8080\"\n", Path::new("x.toml")).unwrap_err().to_string();
    assert!(e.contains("x.toml:2:7: client.url: `localhost:8080` is not a daemon URL"), "{e}");
}

#[test]
fn the_engine_is_podman_unless_kubernetes_is_asked_for() {
    let c = parse("", Path::new("x.toml")).unwrap();
    assert_eq!(c.engine.kind, EngineKind::Podman);
    let c = parse(
        "[engine]\nkind = \"kubernetes\"\nnamespace = \"dev\"\ncontext = \"kind-dev\"\nnode = \"n1\"\n",
        Path::new("x.toml"),
    )
    .unwrap();
    assert_eq!(c.engine.kind, EngineKind::Kubernetes);
    assert_eq!(c.engine.namespace.as_deref(), Some("dev"));
    assert_eq!(c.engine.context.as_deref(), Some("kind-dev"));
    assert_eq!(c.engine.node.as_deref(), Some("n1"));
    let e = parse("[engine]\nkind = \"docker\"\n", Path::new("x.toml")).unwrap_err().to_string();
    assert!(e.contains("docker") && e.contains("podman") && e.contains("kubernetes"), "{e}");
    let e = parse("[engine]\nsocket = \"/x\"\n", Path::new("x.toml")).unwrap_err().to_string();
    assert!(e.contains("socket"), "{e}");
}
