//! **Pure**: what an SSH login names and what runs for each request. The SSH user is the
//! target (`<workspace>`, or `<workspace>+agent` for the agent's container); an `exec`
//! request's command line goes to `/bin/sh -c` as sshd gives it to the user's shell; a
//! `shell` request runs the user's login shell; the `sftp` subsystem runs the container's
//! own `sftp-server`, as the target user.

use crate::core::ExecTarget;

/// Who a login is for: a workspace's container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub workspace: String,
    pub agent: bool,
}

impl Target {
    /// Reads an SSH user name: `<workspace>` or `<workspace>+agent`.
    pub fn parse(user: &str) -> Result<Target, String> {
        let (workspace, agent) = match user.split_once('+') {
            None => (user, false),
            Some((ws, "agent")) => (ws, true),
            Some((_, _)) => {
                return Err(format!(
                    "`{user}`: the part after `+` names a container and may only be `agent` (ssh <workspace>+agent@…)"
                ));
            }
        };
        if !crate::config::is_dns_label(workspace) {
            return Err(format!(
                "`{workspace}` is not a workspace name: log in as the workspace's name (`devaipod list` shows them)"
            ));
        }
        Ok(Target { workspace: workspace.to_owned(), agent })
    }

    pub fn exec_target(&self) -> ExecTarget {
        if self.agent { ExecTarget::Agent } else { ExecTarget::Workspace }
    }

    /// How it reads in audit rows and messages: the SSH user name.
    pub fn label(&self) -> String {
        if self.agent { format!("{}+agent", self.workspace) } else { self.workspace.clone() }
    }
}

/// What a session channel runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Run {
    /// An `exec` request's command line.
    Command(String),
    /// A `shell` request: the user's login shell.
    Shell,
    /// The `sftp` subsystem.
    Sftp,
}

/// Runs the target user's login shell (from the container's passwd; `/bin/sh` when it
/// names none). A fixed script: nothing of the request is spliced into it.
const LOGIN_SHELL: &str = r#"shell=$(getent passwd "$(id -un)" 2>/dev/null | cut -d: -f7)
[ -x "$shell" ] || shell=/bin/sh
export SHELL="$shell"
exec "$shell" -l"#;

/// Runs the container's own `sftp-server` (Debian's and Fedora's places, then `$PATH`). A
/// fixed script: nothing of the request is spliced into it.
const SFTP_SERVER: &str = r#"for s in /usr/lib/openssh/sftp-server /usr/libexec/openssh/sftp-server /usr/lib/ssh/sftp-server /usr/libexec/sftp-server; do
  [ -x "$s" ] && exec "$s"
done
command -v sftp-server >/dev/null 2>&1 && exec sftp-server
echo "devaipod: this container has no sftp-server: install the image's openssh-sftp-server (Debian) or openssh-server package" >&2
exit 127"#;

impl Run {
    /// The argv that runs it in the container.
    pub fn argv(&self) -> Vec<String> {
        let script = match self {
            Run::Command(line) => line.as_str(),
            Run::Shell => LOGIN_SHELL,
            Run::Sftp => SFTP_SERVER,
        };
        vec!["/bin/sh".into(), "-c".into(), script.into()]
    }

    /// A subsystem request by name; `None` for one not served.
    pub fn subsystem(name: &str) -> Option<Run> {
        (name == "sftp").then_some(Run::Sftp)
    }
}

/// Whether a `direct-tcpip` destination is the pod itself: forwards reach the pod's own
/// loopback only (its ports, published or not), never other hosts through the pod.
pub fn forward_host_ok(host: &str) -> bool {
    matches!(host, "localhost" | "127.0.0.1" | "::1" | "[::1]" | "0.0.0.0" | "")
}

/// Whether a client's environment variable may be set (`env` requests, `ssh -o SendEnv`):
/// a plain name, and none that changes how programs load.
pub fn env_name_ok(name: &str) -> bool {
    let plain = !name.is_empty()
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    plain && !name.starts_with("LD_")
}

/// The number of a signal named by SSH (`TERM`, `INT`, …), as the kernel knows it.
pub fn signal_number(name: &str) -> Option<i32> {
    Some(match name {
        "HUP" => 1,
        "INT" => 2,
        "QUIT" => 3,
        "ILL" => 4,
        "ABRT" => 6,
        "FPE" => 8,
        "KILL" => 9,
        "USR1" => 10,
        "SEGV" => 11,
        "USR2" => 12,
        "PIPE" => 13,
        "ALRM" => 14,
        "TERM" => 15,
        _ => return None,
    })
}

/// The exit status an SSH client sees for an exec's exit code (podman gives 128+n for a
/// signal, as a shell does; anything out of range is a failure).
pub fn exit_status(code: i64) -> u32 {
    u32::try_from(code).ok().filter(|c| *c <= 255).unwrap_or(255)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_user_names_the_workspace_and_optionally_its_agent() {
        assert_eq!(Target::parse("myrepo").unwrap(), Target { workspace: "myrepo".into(), agent: false });
        let t = Target::parse("myrepo+agent").unwrap();
        assert_eq!(t, Target { workspace: "myrepo".into(), agent: true });
        assert_eq!(t.exec_target(), ExecTarget::Agent);
        assert_eq!(t.label(), "myrepo+agent");
        let e = Target::parse("myrepo+root").unwrap_err();
        assert!(e.contains("may only be `agent`"), "{e}");
        let e = Target::parse("../etc").unwrap_err();
        assert!(e.contains("is not a workspace name"), "{e}");
        assert!(Target::parse("").is_err());
        assert!(Target::parse("UPPER").is_err());
    }

    #[test]
    fn a_command_line_goes_to_sh_as_one_argument() {
        let argv = Run::Command("echo $PWD; exit 3".into()).argv();
        assert_eq!(argv, ["/bin/sh", "-c", "echo $PWD; exit 3"]);
        assert_eq!(Run::subsystem("sftp"), Some(Run::Sftp));
        assert_eq!(Run::subsystem("netconf"), None);
        assert!(Run::Shell.argv()[2].ends_with("exec \"$shell\" -l"));
    }

    #[test]
    fn forwards_reach_the_pods_loopback_only() {
        for ok in ["localhost", "127.0.0.1", "::1"] {
            assert!(forward_host_ok(ok), "{ok}");
        }
        for no in ["10.0.0.1", "example.com", "host.containers.internal", "127.0.0.2"] {
            assert!(!forward_host_ok(no), "{no}");
        }
    }

    #[test]
    fn client_environment_names_are_plain_and_not_the_loaders() {
        for ok in ["TERM", "LANG", "LC_ALL", "MY_VAR1"] {
            assert!(env_name_ok(ok), "{ok}");
        }
        for no in ["", "1X", "A-B", "A=B", "LD_PRELOAD", "LD_LIBRARY_PATH"] {
            assert!(!env_name_ok(no), "{no}");
        }
    }

    #[test]
    fn exit_codes_and_signals_map_as_ssh_expects() {
        assert_eq!(exit_status(3), 3);
        assert_eq!(exit_status(130), 130);
        assert_eq!(exit_status(-1), 255);
        assert_eq!(exit_status(4096), 255);
        assert_eq!(signal_number("TERM"), Some(15));
        assert_eq!(signal_number("INT"), Some(2));
        assert_eq!(signal_number("WINCH"), None);
    }
}
