//! Which connections the egress proxy makes: `decide` for a host and port (the allow
//! lists, or `egress = "open"`), then the private-address rule for the addresses the name
//! resolves to. Pure; the proxy resolves and connects.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use crate::config::{HostPattern, Network, NetworkEgress};

/// What applies to one workspace's connections, read at each request.
#[derive(Debug, Clone)]
pub struct Policy {
    pub workspace: String,
    pub mode: NetworkEgress,
    /// `[network] allow-hosts`.
    pub config: Vec<HostPattern>,
    /// The workspace's own patterns (store).
    pub own: Vec<HostPattern>,
    /// `[network] hosts`: names resolved to these addresses before DNS (lowercase).
    pub hosts: BTreeMap<String, IpAddr>,
    /// The host of `[agent] base-url` (lowercase): exempt from the private-address rule.
    pub llm_host: Option<String>,
}

pub use crate::config::HOST_CONTAINERS_INTERNAL;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Allowed, and by what (for the audit).
    Allow(String),
    /// Refused, and why (the agent hears it).
    Deny(String),
}

fn norm(host: &str) -> String {
    host.trim_end_matches('.').to_ascii_lowercase()
}

impl Policy {
    pub fn new(workspace: &str, network: &Network, llm_base_url: &str, own: Vec<HostPattern>) -> Policy {
        let llm_host = reqwest::Url::parse(llm_base_url).ok().and_then(|u| u.host_str().map(norm));
        Policy {
            workspace: workspace.to_owned(),
            mode: network.egress,
            config: network.allow_hosts.clone(),
            own,
            hosts: network.hosts.iter().map(|(k, v)| (k.as_str().to_owned(), *v)).collect(),
            llm_host,
        }
    }

    /// The address the owner gave `host` (`[network] hosts`; `host.containers.internal`
    /// as the LLM's host is the host's loopback), used instead of DNS.
    pub fn mapped(&self, host: &str) -> Option<IpAddr> {
        let host = norm(host);
        if let Some(ip) = self.hosts.get(&host) {
            return Some(*ip);
        }
        Network::default().daemon_address(&host, self.llm_host.as_deref())
    }

    /// Whether `host`'s addresses are exempt from the private-address rule: the owner named
    /// them (`[network] hosts`) or it is the LLM endpoint's host.
    pub fn exempt(&self, host: &str) -> bool {
        let host = norm(host);
        self.hosts.contains_key(&host) || self.llm_host.as_deref() == Some(host.as_str())
    }
}

/// Whether the workspace may connect to `host:port` (by name; the addresses are checked
/// after resolution with [`usable`]).
pub fn decide(p: &Policy, host: &str, port: u16) -> Decision {
    let host = norm(host);
    if let Some(pat) = p.own.iter().find(|pat| pat.matches(&host, port)) {
        return Decision::Allow(format!("{}'s allow-hosts {pat}", p.workspace));
    }
    if let Some(pat) = p.config.iter().find(|pat| pat.matches(&host, port)) {
        return Decision::Allow(format!("allow-hosts {pat}"));
    }
    match p.mode {
        NetworkEgress::Open => Decision::Allow("egress = open".into()),
        NetworkEgress::Allowlist => Decision::Deny(format!(
            "{host}:{port} is not in [network] allow-hosts nor {ws}'s own (the owner can open it: devaipod egress allow {ws} {host}{})",
            if port == 80 || port == 443 { String::new() } else { format!(":{port}") },
            ws = p.workspace,
        )),
    }
}

/// Why the proxy never connects to `ip` (unless its name is exempt), or `None`.
pub fn forbidden(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => forbidden_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return forbidden_v4(v4);
            }
            let seg0 = v6.segments()[0];
            if v6.is_loopback() {
                Some("loopback")
            } else if v6.is_unspecified() {
                Some("unspecified")
            } else if v6.is_multicast() {
                Some("multicast")
            } else if seg0 & 0xfe00 == 0xfc00 {
                Some("private (unique local)")
            } else if seg0 & 0xffc0 == 0xfe80 {
                Some("link-local")
            } else if v6.segments()[..6] == [0, 0, 0, 0, 0, 0] {
                // IPv4-compatible (deprecated) addresses.
                Some("reserved")
            } else {
                None
            }
        }
    }
}

fn forbidden_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, ..] = ip.octets();
    if ip.is_loopback() {
        Some("loopback")
    } else if ip.is_unspecified() || a == 0 {
        Some("unspecified")
    } else if ip.is_private() {
        // 10/8 holds podman's default bridge (10.88/16) and rootless networks (10.0.2/24).
        Some("private")
    } else if ip.is_link_local() {
        Some("link-local")
    } else if a == 100 && (64..128).contains(&b) {
        Some("shared address space (CGNAT)")
    } else if ip.is_multicast() {
        Some("multicast")
    } else if ip.is_broadcast() || a >= 240 {
        Some("reserved")
    } else if a == 192 && b == 0 && ip.octets()[2] == 0 {
        Some("reserved (IETF protocol assignments)")
    } else if a == 198 && (b == 18 || b == 19) {
        Some("reserved (benchmarking)")
    } else {
        None
    }
}

/// The addresses a connection to `host` may use: all of them when the host is exempt,
/// else those [`forbidden`] does not refuse; refused (with why) when none is left.
pub fn usable(host: &str, resolved: &[SocketAddr], exempt: bool) -> Result<Vec<SocketAddr>, String> {
    if resolved.is_empty() {
        return Err(format!("{host} has no address"));
    }
    if exempt {
        return Ok(resolved.to_vec());
    }
    let ok: Vec<SocketAddr> = resolved.iter().copied().filter(|a| forbidden(a.ip()).is_none()).collect();
    if ok.is_empty() {
        let a = resolved[0].ip();
        let why = forbidden(a).unwrap_or("internal");
        return Err(format!(
            "{host} resolves to {a}, a {why} address: agents do not reach the host's or internal networks (name it in [network] hosts to allow it)"
        ));
    }
    Ok(ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(mode: NetworkEgress, config: &[&str], own: &[&str]) -> Policy {
        let network = Network {
            egress: mode,
            allow_hosts: config.iter().map(|p| HostPattern::parse(p).unwrap()).collect(),
            hosts: [("git.internal".to_owned().try_into().unwrap(), "127.0.0.1".parse().unwrap())].into(),
        };
        Policy::new(
            "ws",
            &network,
            "http://host.containers.internal:11434/v1",
            own.iter().map(|p| HostPattern::parse(p).unwrap()).collect(),
        )
    }

    #[test]
    fn decide_follows_the_lists_and_the_mode() {
        let allow =
            policy(NetworkEgress::Allowlist, &["pypi.org", "*.github.com", "git.example.org:22"], &["crates.io:8443"]);
        let open = policy(NetworkEgress::Open, &["pypi.org"], &[]);
        let cases: &[(&Policy, &str, u16, Result<&str, &str>)] = &[
            (&allow, "pypi.org", 443, Ok("allow-hosts pypi.org")),
            (&allow, "PYPI.org.", 80, Ok("allow-hosts pypi.org")),
            (
                &allow,
                "pypi.org",
                8080,
                Err(
                    "pypi.org:8080 is not in [network] allow-hosts nor ws's own (the owner can open it: devaipod egress allow ws pypi.org:8080)",
                ),
            ),
            (&allow, "api.github.com", 443, Ok("allow-hosts *.github.com")),
            (
                &allow,
                "github.com",
                443,
                Err(
                    "github.com:443 is not in [network] allow-hosts nor ws's own (the owner can open it: devaipod egress allow ws github.com)",
                ),
            ),
            (&allow, "git.example.org", 22, Ok("allow-hosts git.example.org:22")),
            (&allow, "crates.io", 8443, Ok("ws's allow-hosts crates.io:8443")),
            (&allow, "crates.io", 443, Err("crates.io:443 is not in")),
            (&open, "anything.example", 443, Ok("egress = open")),
            (&open, "pypi.org", 443, Ok("allow-hosts pypi.org")),
        ];
        for (p, host, port, want) in cases {
            let got = decide(p, host, *port);
            match (want, &got) {
                (Ok(w), Decision::Allow(r)) => assert_eq!(r, w, "{host}:{port}"),
                (Err(w), Decision::Deny(r)) => assert!(r.starts_with(w), "{host}:{port}: {r}"),
                _ => panic!("{host}:{port}: {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn internal_addresses_are_forbidden() {
        let cases: &[(&str, Option<&str>)] = &[
            ("127.0.0.1", Some("loopback")),
            ("127.8.9.1", Some("loopback")),
            ("10.88.0.1", Some("private")),
            ("172.16.5.4", Some("private")),
            ("192.168.1.1", Some("private")),
            ("169.254.169.254", Some("link-local")),
            ("100.64.0.1", Some("shared address space (CGNAT)")),
            ("0.0.0.0", Some("unspecified")),
            ("224.0.0.1", Some("multicast")),
            ("255.255.255.255", Some("reserved")),
            ("::1", Some("loopback")),
            ("::", Some("unspecified")),
            ("fd00::1", Some("private (unique local)")),
            ("fe80::1", Some("link-local")),
            ("ff02::1", Some("multicast")),
            ("::ffff:127.0.0.1", Some("loopback")),
            ("::ffff:10.0.0.1", Some("private")),
            ("93.184.215.14", None),
            ("100.128.0.1", None),
            ("2606:4700::1111", None),
        ];
        for (ip, want) in cases {
            assert_eq!(forbidden(ip.parse().unwrap()), *want, "{ip}");
        }
    }

    #[test]
    fn usable_addresses_keep_the_walls_except_for_names_the_owner_gave() {
        let a = |s: &str| -> SocketAddr { s.parse().unwrap() };
        let e = usable("evil.example", &[a("127.0.0.1:443")], false).unwrap_err();
        assert_eq!(
            e,
            "evil.example resolves to 127.0.0.1, a loopback address: agents do not reach the host's or internal networks (name it in [network] hosts to allow it)"
        );
        assert_eq!(
            usable("mixed.example", &[a("10.0.0.1:443"), a("93.184.215.14:443")], false).unwrap(),
            [a("93.184.215.14:443")]
        );
        assert_eq!(usable("git.internal", &[a("127.0.0.1:80")], true).unwrap(), [a("127.0.0.1:80")]);
        assert!(usable("none.example", &[], true).is_err());

        let p = policy(NetworkEgress::Open, &[], &[]);
        assert_eq!(p.mapped("Git.Internal"), Some("127.0.0.1".parse().unwrap()));
        assert!(p.exempt("git.internal") && p.exempt("host.containers.internal") && !p.exempt("localhost"));
        assert_eq!(
            p.mapped("host.containers.internal"),
            Some("127.0.0.1".parse().unwrap()),
            "the LLM's host, from the daemon"
        );
        assert_eq!(p.mapped("localhost"), None);
        let other_llm = Policy::new("ws", &Network::default(), "https://api.example/v1", vec![]);
        assert_eq!(other_llm.mapped("host.containers.internal"), None, "only as the LLM's host");
        assert!(other_llm.exempt("api.example") && !other_llm.exempt("host.containers.internal"));
    }
}
