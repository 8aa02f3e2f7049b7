//! `runArgs`: the `podman run` flags that make sense for a container of a pod, applied to
//! the workspace container. Flags the pod owns (network, published ports, names) are
//! ignored with a warning saying why, so that the repository still comes up; flags that
//! would undo the sandbox (host namespaces) are refused with the reason.

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
    /// Device paths and CDI device names (`nvidia.com/gpu=all` from `--gpus`).
    pub devices: Vec<String>,
    pub mounts: Vec<Mount>,
    pub labels: BTreeMap<String, String>,
    pub shm_size: Option<u64>,
    pub ulimits: Vec<Ulimit>,
    /// Namespaced sysctls only (`net.*`, IPC's `kernel.*`, `fs.mqueue.*`).
    pub sysctls: BTreeMap<String, String>,
    /// `--add-host name:ip` entries, for the pod's hosts file.
    pub add_hosts: Vec<String>,
    /// `--hostname`: the pod's host name.
    pub hostname: Option<String>,
    /// Flags ignored, each with the reason.
    pub warnings: Vec<String>,
}

/// A `--ulimit name=soft[:hard]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Ulimit {
    /// `nofile`, `nproc`, … (libpod adds the `RLIMIT_`).
    pub kind: String,
    pub soft: u64,
    pub hard: u64,
}

/// Flags that undo the sandbox: refused, with the reason.
const REJECTED: &[(&str, &str)] = &[
    ("--pid", "host namespaces are not shared with a workspace"),
    ("--ipc", "host namespaces are not shared with a workspace"),
    ("--uts", "host namespaces are not shared with a workspace"),
    ("--cgroupns", "host namespaces are not shared with a workspace"),
    ("--userns", "host namespaces are not shared with a workspace (only --userns=keep-id is taken)"),
    ("--volumes-from", "containers of other workspaces are not shared"),
];

/// Flags the pod owns: ignored with a warning, so the repository still comes up.
const POD_OWNED: &[(&str, &str)] = &[
    ("--network", "the pod owns the network (see [network] in devaipod.toml)"),
    ("--net", "the pod owns the network (see [network] in devaipod.toml)"),
    ("-p", "ports are published by the pod on 127.0.0.1; use forwardPorts"),
    ("--publish", "ports are published by the pod on 127.0.0.1; use forwardPorts"),
    ("--name", "devaipod names the containers"),
    ("--pod", "devaipod creates the pod"),
    ("--dns", "DNS belongs to the pod"),
    ("--dns-search", "DNS belongs to the pod"),
    ("--dns-option", "DNS belongs to the pod"),
    ("--entrypoint", "devaipod runs its own idle process; use lifecycle commands"),
];

/// Flags without a value that the pod owns or that change nothing for a long-running
/// workspace container.
const POD_OWNED_SWITCHES: &[(&str, &str)] = &[
    ("-P", "ports are published by the pod on 127.0.0.1; use forwardPorts"),
    ("--publish-all", "ports are published by the pod on 127.0.0.1; use forwardPorts"),
    ("--rm", "devaipod manages the container's lifetime"),
];

const TAKES_VALUE: &[&str] = &[
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
    "--ulimit",
    "--sysctl",
    "--gpus",
    "--add-host",
    "--hostname",
    "-h",
];

const SUPPORTED: &str = "-e/--env, --cap-add, --cap-drop, --security-opt, --privileged, --init, -u/--user, --device, --gpus, -v/--volume, --mount, --tmpfs, -l/--label, --shm-size, --ulimit, --sysctl, --add-host, --hostname, --userns=keep-id";

/// A refused `runArgs` entry: which one (its index), and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct RunArgError {
    pub index: usize,
    pub message: String,
}

pub fn parse(args: &[String]) -> Result<RunArgs, RunArgError> {
    let mut out = RunArgs::default();
    let mut i = 0;
    while i < args.len() {
        let index = i;
        parse_one(args, &mut i, &mut out).map_err(|message| RunArgError { index, message })?;
    }
    Ok(out)
}

/// Reads the flag at `*i` (and its value), moving `*i` past them.
fn parse_one(args: &[String], i: &mut usize, out: &mut RunArgs) -> Result<(), String> {
    let arg = args[*i].as_str();
    *i += 1;
    let (flag, inline) = match arg.split_once('=') {
        Some((f, v)) if f.starts_with('-') => (f, Some(v.to_owned())),
        _ => (arg, None),
    };
    if flag == "--userns" {
        let value = match inline {
            Some(v) => v,
            None => take(args, i, flag)?,
        };
        if value == "keep-id" || value.starts_with("keep-id:") {
            out.warnings.push(format!(
                "runArgs `--userns={value}` is ignored: the repository is copied into the workspace's volume, owned by the container's user, not bind-mounted from the host"
            ));
            return Ok(());
        }
        return Err(format!(
            "runArgs `--userns={value}` is not allowed: host namespaces are not shared with a workspace"
        ));
    }
    if let Some((_, why)) = REJECTED.iter().find(|(f, _)| *f == flag) {
        return Err(format!("runArgs `{arg}` is not allowed: {why}"));
    }
    if let Some((_, why)) = POD_OWNED_SWITCHES.iter().find(|(f, _)| *f == flag) {
        out.warnings.push(format!("runArgs `{arg}` is ignored: {why}"));
        return Ok(());
    }
    if let Some((_, why)) = POD_OWNED.iter().find(|(f, _)| *f == flag) {
        let shown = match inline {
            Some(_) => arg.to_owned(),
            None => format!("{flag} {}", take(args, i, flag)?),
        };
        out.warnings.push(format!("runArgs `{shown}` is ignored: {why}"));
        return Ok(());
    }
    match flag {
        "--privileged" => out.privileged = inline.as_deref().is_none_or(|v| v == "true"),
        "--init" => out.init = Some(inline.as_deref().is_none_or(|v| v == "true")),
        // Interactive flags make no difference to a long-running workspace container.
        "-i" | "-t" | "-it" | "-ti" | "--interactive" | "--tty" | "-d" | "--detach" => {}
        _ => {
            if !TAKES_VALUE.contains(&flag) {
                return Err(format!("runArgs `{arg}` is not supported by devaipod (supported: {SUPPORTED})"));
            }
            let value = match inline {
                Some(v) => v,
                None => take(args, i, flag)?,
            };
            apply(out, flag, value)?;
        }
    }
    Ok(())
}

/// The value after a flag given as two arguments.
fn take(args: &[String], i: &mut usize, flag: &str) -> Result<String, String> {
    let v = args.get(*i).ok_or_else(|| format!("runArgs `{flag}` needs a value"))?;
    *i += 1;
    Ok(v.clone())
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
        "--ulimit" => out.ulimits.push(parse_ulimit(&value)?),
        "--sysctl" => {
            let (k, v) = value.split_once('=').ok_or_else(|| format!("runArgs `--sysctl {value}`: use name=value"))?;
            check_sysctl(k)?;
            out.sysctls.insert(k.to_owned(), v.to_owned());
        }
        "--gpus" => out.devices.extend(gpu_devices(&value)?),
        "--add-host" => {
            let (host, ip) = value
                .split_once(':')
                .filter(|(h, ip)| !h.is_empty() && ip.parse::<std::net::IpAddr>().is_ok())
                .ok_or_else(|| format!("runArgs `--add-host {value}`: use name:ip"))?;
            out.add_hosts.push(format!("{host}:{ip}"));
        }
        "--hostname" | "-h" => {
            let ok = !value.is_empty()
                && value.len() <= 63
                && value.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.');
            if !ok {
                return Err(format!("runArgs `--hostname {value}` is not a host name"));
            }
            out.hostname = Some(value);
        }
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

/// `nofile=1024:2048`, `memlock=-1`, `nproc=512`.
fn parse_ulimit(value: &str) -> Result<Ulimit, String> {
    const NAMES: &[&str] = &[
        "as",
        "core",
        "cpu",
        "data",
        "fsize",
        "locks",
        "memlock",
        "msgqueue",
        "nice",
        "nofile",
        "nproc",
        "rss",
        "rtprio",
        "rttime",
        "sigpending",
        "stack",
    ];
    let bad = || format!("runArgs `--ulimit {value}`: use name=soft[:hard], e.g. nofile=1024:2048");
    let (name, limits) = value.split_once('=').ok_or_else(bad)?;
    if !NAMES.contains(&name) {
        return Err(format!("runArgs `--ulimit {value}`: `{name}` is not a resource limit ({})", NAMES.join(", ")));
    }
    let num = |s: &str| -> Result<u64, String> {
        if s == "-1" || s == "unlimited" { Ok(u64::MAX) } else { s.parse().map_err(|_| bad()) }
    };
    let (soft, hard) = match limits.split_once(':') {
        Some((s, h)) => (num(s)?, num(h)?),
        None => (num(limits)?, num(limits)?),
    };
    if soft > hard {
        return Err(format!("runArgs `--ulimit {value}`: the soft limit is above the hard one"));
    }
    Ok(Ulimit { kind: name.to_owned(), soft, hard })
}

/// Only sysctls of the namespaces a container has of its own (as Docker allows them): the
/// network's, IPC's, and the message queues'.
fn check_sysctl(name: &str) -> Result<(), String> {
    const IPC: &[&str] = &[
        "kernel.msgmax",
        "kernel.msgmnb",
        "kernel.msgmni",
        "kernel.sem",
        "kernel.shmall",
        "kernel.shmmax",
        "kernel.shmmni",
        "kernel.shm_rmid_forced",
    ];
    if name.starts_with("net.") || name.starts_with("fs.mqueue.") || IPC.contains(&name) {
        Ok(())
    } else {
        Err(format!(
            "runArgs `--sysctl {name}` is not allowed: only namespaced sysctls (net.*, fs.mqueue.*, kernel.msg*/sem/shm*) can be set for one container; this one would change the host"
        ))
    }
}

/// `--gpus all`, `--gpus device=0,1` (also quoted as Docker's docs write it) → CDI device
/// names; whether the host has CDI specs for them is checked before the pod is made.
fn gpu_devices(value: &str) -> Result<Vec<String>, String> {
    let v = value.trim_matches(|c| c == '"' || c == '\'');
    if v == "all" {
        return Ok(vec![format!("{GPU_CDI_KIND}=all")]);
    }
    if let Some(ids) = v.strip_prefix("device=") {
        let ids: Vec<String> =
            ids.split(',').filter(|d| !d.is_empty()).map(|d| format!("{GPU_CDI_KIND}={d}")).collect();
        if !ids.is_empty() {
            return Ok(ids);
        }
    }
    Err(format!(
        "runArgs `--gpus {value}`: use `all` or `device=0,1` (GPUs are given to the container as CDI devices {GPU_CDI_KIND}=…)"
    ))
}

/// The CDI kind `--gpus` maps to (the NVIDIA Container Toolkit's `nvidia-ctk cdi generate`).
pub const GPU_CDI_KIND: &str = "nvidia.com/gpu";

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
    fn a_refusal_says_which_entry() {
        let e = parse(&args(&["--init", "-e", "A=1", "--pid=host"])).unwrap_err();
        assert_eq!(e.index, 3);
    }

    #[test]
    fn flags_people_use_in_real_repositories_are_applied() {
        let r = parse(&args(&[
            "--ulimit",
            "nofile=1024:4096",
            "--ulimit=memlock=-1",
            "--sysctl",
            "net.ipv4.ip_unprivileged_port_start=0",
            "--sysctl=kernel.shmmax=68719476736",
            "--gpus",
            "all",
            "--add-host=host.docker.internal:10.0.0.1",
            "--hostname",
            "devbox",
            "--tmpfs",
            "/tmp/x:size=64m",
            "--mount",
            "type=volume,target=/cache",
        ]))
        .unwrap();
        assert_eq!(
            r.ulimits,
            [
                Ulimit { kind: "nofile".into(), soft: 1024, hard: 4096 },
                Ulimit { kind: "memlock".into(), soft: u64::MAX, hard: u64::MAX }
            ]
        );
        assert_eq!(r.sysctls["net.ipv4.ip_unprivileged_port_start"], "0");
        assert_eq!(r.sysctls["kernel.shmmax"], "68719476736");
        assert_eq!(r.devices, ["nvidia.com/gpu=all"]);
        assert_eq!(r.add_hosts, ["host.docker.internal:10.0.0.1"]);
        assert_eq!(r.hostname.as_deref(), Some("devbox"));
        assert_eq!(r.mounts.len(), 2);
        assert!(r.warnings.is_empty(), "{:?}", r.warnings);
        let r = parse(&args(&["--gpus", "\"device=0,2\""])).unwrap();
        assert_eq!(r.devices, ["nvidia.com/gpu=0", "nvidia.com/gpu=2"]);
    }

    #[test]
    fn flags_the_pod_owns_are_ignored_with_the_reason() {
        let r = parse(&args(&[
            "--network=host",
            "--net",
            "host",
            "-p",
            "8080:80",
            "--name",
            "x",
            "--pod=p",
            "-P",
            "--rm",
            "--userns=keep-id",
            "--cap-add",
            "SYS_PTRACE",
        ]))
        .unwrap();
        assert_eq!(r.cap_add, ["SYS_PTRACE"], "the flags after the ignored ones are still read");
        let w = r.warnings.join("\n");
        for want in [
            "runArgs `--network=host` is ignored: the pod owns the network",
            "runArgs `--net host` is ignored: the pod owns the network",
            "runArgs `-p 8080:80` is ignored: ports are published by the pod on 127.0.0.1; use forwardPorts",
            "runArgs `--name x` is ignored: devaipod names the containers",
            "runArgs `--pod=p` is ignored: devaipod creates the pod",
            "runArgs `-P` is ignored",
            "runArgs `--rm` is ignored",
            "runArgs `--userns=keep-id` is ignored",
        ] {
            assert!(w.contains(want), "missing {want:?} in\n{w}");
        }
        assert_eq!(r.warnings.len(), 8);
    }

    #[test]
    fn flags_that_undo_the_sandbox_or_make_no_sense_are_refused_with_a_reason() {
        for (a, why) in [
            (&["--pid=host"][..], "host namespaces"),
            (&["--ipc", "host"][..], "host namespaces"),
            (&["--userns=host"][..], "host namespaces"),
            (&["--sysctl", "kernel.panic=1"][..], "would change the host"),
            (&["--sysctl", "vm.swappiness=0"][..], "only namespaced sysctls"),
            (&["--ulimit", "bogus=1"][..], "is not a resource limit"),
            (&["--ulimit", "nofile=2:1"][..], "soft limit is above"),
            (&["--ulimit", "nofile"][..], "use name=soft[:hard]"),
            (&["--gpus", "2"][..], "use `all` or `device=0,1`"),
            (&["--add-host", "nohost"][..], "use name:ip"),
            (&["--hostname", "a b"][..], "is not a host name"),
            (&["--memory-swappiness=0"][..], "is not supported by devaipod"),
            (&["--network"][..], "needs a value"),
            (&["-e"][..], "needs a value"),
            (&["-e", "NOEQUALS"][..], "use NAME=value"),
            (&["-l", "io.devaipod.instance=x"][..], "belong to devaipod"),
            (&["--shm-size", "lots"][..], "is not a size"),
        ] {
            let e = parse(&args(a)).unwrap_err().message;
            assert!(e.contains(why), "{a:?}: {e}");
        }
    }
}
