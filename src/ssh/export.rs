//! **Pure**: `devaipod ssh-config`'s text (one `Host devaipod-<ws>` entry per workspace and
//! one `devaipod-<ws>-agent` for its agent, to include from `~/.ssh/config`) and the
//! `known_hosts` line that pins the daemon's host key, so the first connection is already
//! verified.

use std::fmt::Write;
use std::net::SocketAddr;
use std::path::Path;

/// What the entries need.
#[derive(Debug, Clone)]
pub struct Export<'a> {
    pub instance: &'a str,
    /// Where the daemon's SSH server listens.
    pub addr: SocketAddr,
    /// The known_hosts file that holds [`known_hosts_line`].
    pub known_hosts: &'a Path,
    /// `[ssh] identity-file`, when set.
    pub identity_file: Option<&'a Path>,
}

/// The name every entry gives the server's key (`HostKeyAlias`): one key per instance.
pub fn host_key_alias(instance: &str) -> String {
    format!("devaipod-{instance}")
}

/// The host's name in ssh's configuration: `devaipod-<ws>`.
pub fn host_name(workspace: &str) -> String {
    format!("devaipod-{workspace}")
}

/// The line of the known_hosts file: the alias and the host key's public half.
pub fn known_hosts_line(instance: &str, public_key: &str) -> String {
    format!("{} {}\n", host_key_alias(instance), public_key.trim())
}

/// Where a client connects: the address the server listens on, or loopback for a
/// wildcard listen address.
fn connect_host(addr: &SocketAddr) -> String {
    match addr.ip() {
        ip if ip.is_unspecified() && ip.is_ipv4() => "127.0.0.1".into(),
        ip if ip.is_unspecified() => "::1".into(),
        ip => ip.to_string(),
    }
}

/// The options every entry shares (also `devaipod ssh`'s `-o` options).
pub fn options(e: &Export) -> Vec<(&'static str, String)> {
    let mut o = vec![
        ("HostName", connect_host(&e.addr)),
        ("Port", e.addr.port().to_string()),
        ("HostKeyAlias", host_key_alias(e.instance)),
        ("UserKnownHostsFile", quote(&e.known_hosts.display().to_string())),
        ("StrictHostKeyChecking", "yes".into()),
    ];
    if let Some(id) = e.identity_file {
        o.push(("IdentityFile", quote(&id.display().to_string())));
        o.push(("IdentitiesOnly", "yes".into()));
    }
    o
}

/// ssh_config quoting for a path with spaces.
fn quote(s: &str) -> String {
    if s.contains(char::is_whitespace) { format!("\"{s}\"") } else { s.to_owned() }
}

/// The `Host` entries for `workspaces`.
pub fn render(e: &Export, workspaces: &[String]) -> String {
    let mut out = format!(
        "# devaipod (instance {}): SSH into workspaces. Include this file from ~/.ssh/config:\n#   devaipod ssh-config > ~/.ssh/devaipod.conf; echo 'Include ~/.ssh/devaipod.conf' >> ~/.ssh/config\n",
        e.instance
    );
    for ws in workspaces {
        for (host, user) in [(host_name(ws), ws.clone()), (format!("{}-agent", host_name(ws)), format!("{ws}+agent"))] {
            let _ = writeln!(out, "\nHost {host}");
            let _ = writeln!(out, "    User {user}");
            for (k, v) in options(e) {
                let _ = writeln!(out, "    {k} {v}");
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_workspace_gets_an_entry_and_one_for_its_agent() {
        let kh = Path::new("/root/.local/share/devaipod/default/ssh/known_hosts");
        let e =
            Export { instance: "default", addr: "0.0.0.0:2222".parse().unwrap(), known_hosts: kh, identity_file: None };
        let text = render(&e, &["myrepo".into()]);
        let expected = "
Host devaipod-myrepo
    User myrepo
    HostName 127.0.0.1
    Port 2222
    HostKeyAlias devaipod-default
    UserKnownHostsFile /root/.local/share/devaipod/default/ssh/known_hosts
    StrictHostKeyChecking yes

Host devaipod-myrepo-agent
    User myrepo+agent
    HostName 127.0.0.1
    Port 2222
    HostKeyAlias devaipod-default
    UserKnownHostsFile /root/.local/share/devaipod/default/ssh/known_hosts
    StrictHostKeyChecking yes
";
        assert!(text.starts_with("# devaipod (instance default)"), "{text}");
        assert!(text.ends_with(expected), "{text}");
    }

    #[test]
    fn an_identity_file_is_named_and_used_alone() {
        let kh = Path::new("/d/known hosts");
        let id = Path::new("/home/u/.ssh/id_ed25519");
        let e =
            Export { instance: "x", addr: "127.0.0.1:2200".parse().unwrap(), known_hosts: kh, identity_file: Some(id) };
        let o = options(&e);
        assert!(o.contains(&("IdentityFile", "/home/u/.ssh/id_ed25519".into())));
        assert!(o.contains(&("IdentitiesOnly", "yes".into())));
        assert!(o.contains(&("UserKnownHostsFile", "\"/d/known hosts\"".into())));
        assert_eq!(known_hosts_line("x", "ssh-ed25519 AAAA\n"), "devaipod-x ssh-ed25519 AAAA\n");
    }
}
