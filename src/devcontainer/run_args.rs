//! `runArgs`: the safe subset of `podman run` flags that devaipod applies to the workspace
//! container. Flags that would undo the pod's design (networking, host namespaces, names,
//! published ports) are rejected with the reason, never silently dropped.

use std::collections::BTreeMap;

use serde::Serialize;

use super::model::Mount;

/// What the accepted `runArgs` ask for.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct RunArgs {
    pub env: BTreeMap<String, String>,
    pub cap_add: Vec<String>,
    pub cap_drop: Vec<String>,
    pub security_opt: Vec<String>,
    pub privileged: bool,
    pub init: Option<bool>,
    pub user: Option<String>,
    pub devices: Vec<String>,
    pub mounts: Vec<Mount>,
    pub labels: BTreeMap<String, String>,
    pub shm_size: Option<u64>,
}

/// Flags that take a value, with what to do with it.
const REJECTED: &[(&str, &str)] = &[
    ("--network", "the pod owns the network; see [network] in devaipod.toml"),
    ("--net", "the pod owns the network; see [network] in devaipod.toml"),
    ("-p", "ports are published by the pod; use forwardPorts"),
    ("--publish", "ports are published by the pod; use forwardPorts"),
    ("-P", "ports are published by the pod; use forwardPorts"),
    ("--publish-all", "ports are published by the pod; use forwardPorts"),
    ("--name", "devaipod names the containers"),
    ("--pod", "devaipod creates the pod"),
    ("--rm", "devaipod manages the container's lifetime"),
    ("--pid", "host namespaces are not shared with a workspace"),
    ("--ipc", "host namespaces are not shared with a workspace"),
    ("--uts", "host namespaces are not shared with a workspace"),
    ("--userns", "host namespaces are not shared with a workspace"),
    ("--hostname", "the pod sets the host name"),
    ("-h", "the pod sets the host name"),
    ("--add-host", "hosts entries belong to the pod"),
    ("--dns", "DNS belongs to the pod"),
    ("--entrypoint", "devaipod runs its own idle process; use lifecycle commands"),
];

pub fn parse(args: &[String]) -> Result<RunArgs, String> {
    let mut out = RunArgs::default();
    let mut i = 0;
    while i < args.len() {
        let arg = args[i].as_str();
        i += 1;
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with('-') => (f, Some(v.to_owned())),
            _ => (arg, None),
        };
        if let Some((_, why)) = REJECTED.iter().find(|(f, _)| *f == flag) {
            return Err(format!("runArgs `{arg}` is not allowed: {why}"));
        }
        match flag {
            "--privileged" => out.privileged = inline.as_deref().is_none_or(|v| v == "true"),
            "--init" => out.init = Some(inline.as_deref().is_none_or(|v| v == "true")),
            // Interactive flags make no difference to a long-running workspace container.
            "-i" | "-t" | "-it" | "--interactive" | "--tty" | "-d" | "--detach" => {}
            _ => {
                let takes_value = [
                    "-e",
                    "--env",
                    "--cap-add",
                    "--cap-drop",
                    "--security-opt",
                    "-u",
                    "--user",
                    "--device",
                    "-v",
                    "--volume",
                    "--mount",
                    "-l",
                    "--label",
                    "--shm-size",
                    "--tmpfs",
                ];
                if !takes_value.contains(&flag) {
                    return Err(format!(
                        "runArgs `{arg}` is not supported by devaipod (supported: -e/--env, --cap-add, --cap-drop, --security-opt, --privileged, --init, -u/--user, --device, -v/--volume, --mount, --tmpfs, -l/--label, --shm-size)"
                    ));
                }
                let value = match inline {
                    Some(v) => v,
                    None => {
                        let v = args.get(i).ok_or_else(|| format!("runArgs `{flag}` needs a value"))?;
                        i += 1;
                        v.clone()
                    }
                };
                apply(&mut out, flag, value)?;
            }
        }
    }
    Ok(out)
}

fn apply(out: &mut RunArgs, flag: &str, value: String) -> Result<(), String> {
    match flag {
        "-e" | "--env" => {
            let (k, v) = value.split_once('=').ok_or_else(|| format!("runArgs `{flag} {value}`: use NAME=value"))?;
            out.env.insert(k.to_owned(), v.to_owned());
        }
        "--cap-add" => out.cap_add.push(value),
        "--cap-drop" => out.cap_drop.push(value),
        "--security-opt" => {
            check_security_opt(&value)?;
            out.security_opt.push(value)
        }
        "-u" | "--user" => out.user = Some(value),
        "--device" => out.devices.push(value),
        "-l" | "--label" => {
            let (k, v) = value.split_once('=').unwrap_or((&value, ""));
            if k.starts_with("io.devaipod.") {
                return Err(format!("runArgs label `{k}`: io.devaipod.* labels belong to devaipod"));
            }
            out.labels.insert(k.to_owned(), v.to_owned());
        }
        "--shm-size" => out.shm_size = Some(parse_size(&value)?),
        "--mount" => out.mounts.push(Mount::parse_str(&value)?),
        "--tmpfs" => {
            let target = value.split(':').next().unwrap_or_default().to_owned();
            out.mounts.push(Mount::parse_str(&format!("type=tmpfs,target={target}"))?);
        }
        "-v" | "--volume" => {
            let parts: Vec<&str> = value.split(':').collect();
            let (source, target, opts) = match parts.as_slice() {
                [s, t] => (*s, *t, ""),
                [s, t, o] => (*s, *t, *o),
                _ => return Err(format!("runArgs `{flag} {value}`: use source:target[:ro]")),
            };
            let kind = if source.starts_with('/') { "bind" } else { "volume" };
            let ro = if opts.split(',').any(|o| o == "ro") { ",readonly" } else { "" };
            out.mounts.push(Mount::parse_str(&format!("type={kind},source={source},target={target}{ro}"))?);
        }
        _ => unreachable!("flag list and match arms agree"),
    }
    Ok(())
}

/// The `--security-opt` values devaipod can apply: `seccomp=`, `apparmor=`, `label=`,
/// `no-new-privileges`.
pub fn check_security_opt(opt: &str) -> Result<(), String> {
    let key = opt.split(['=', ':']).next().unwrap_or(opt);
    if ["seccomp", "apparmor", "label", "no-new-privileges"].contains(&key) {
        Ok(())
    } else {
        Err(format!("security option `{opt}` is not supported (seccomp=, apparmor=, label=, no-new-privileges)"))
    }
}

/// `64m`, `1g`, `512k`, `1024` (bytes).
fn parse_size(s: &str) -> Result<u64, String> {
    let lower = s.to_ascii_lowercase();
    let lower = lower.trim_end_matches('b');
    let (digits, mult) = match lower.chars().last() {
        Some('k') => (&lower[..lower.len() - 1], 1 << 10),
        Some('m') => (&lower[..lower.len() - 1], 1 << 20),
        Some('g') => (&lower[..lower.len() - 1], 1 << 30),
        _ => (lower, 1),
    };
    let n = digits.parse::<u64>().map_err(|_| format!("runArgs --shm-size `{s}` is not a size like 64m"))?;
    n.checked_mul(mult).ok_or_else(|| format!("runArgs --shm-size `{s}` is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn safe_subset_is_applied() {
        let r = parse(&args(&[
            "--cap-add=SYS_PTRACE",
            "--security-opt",
            "seccomp=unconfined",
            "-e",
            "A=1",
            "--env=B=two=2",
            "--privileged",
            "--init",
            "-u",
            "1000",
            "--device=/dev/fuse",
            "-v",
            "/host/data:/data:ro",
            "-v",
            "cache:/cache",
            "--shm-size=64m",
            "-it",
            "-l",
            "team=x",
        ]))
        .unwrap();
        assert_eq!(r.cap_add, ["SYS_PTRACE"]);
        assert_eq!(r.security_opt, ["seccomp=unconfined"]);
        assert_eq!(r.env["A"], "1");
        assert_eq!(r.env["B"], "two=2");
        assert!(r.privileged);
        assert_eq!(r.init, Some(true));
        assert_eq!(r.user.as_deref(), Some("1000"));
        assert_eq!(r.devices, ["/dev/fuse"]);
        assert_eq!(r.mounts.len(), 2);
        assert!(r.mounts[0].readonly && r.mounts[0].source.as_deref() == Some("/host/data"));
        assert_eq!(r.mounts[1].kind, super::super::model::MountKind::Volume);
        assert_eq!(r.shm_size, Some(64 << 20));
        assert_eq!(r.labels["team"], "x");
    }

    #[test]
    fn unsafe_flags_are_rejected_with_a_reason() {
        for (a, why) in [
            (&["--network=host"][..], "the pod owns the network"),
            (&["--net", "host"][..], "the pod owns the network"),
            (&["-p", "8080:80"][..], "use forwardPorts"),
            (&["--pid=host"][..], "host namespaces"),
            (&["--name", "x"][..], "devaipod names the containers"),
            (&["--memory-swappiness=0"][..], "is not supported by devaipod"),
            (&["-e"][..], "needs a value"),
            (&["-e", "NOEQUALS"][..], "use NAME=value"),
            (&["-l", "io.devaipod.instance=x"][..], "belong to devaipod"),
            (&["--shm-size", "lots"][..], "is not a size"),
        ] {
            let e = parse(&args(a)).unwrap_err();
            assert!(e.contains(why), "{a:?}: {e}");
        }
    }
}
