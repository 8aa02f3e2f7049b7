//! The handshake between a client (the CLI, `devaipod mcp`) and the daemon it reaches: what
//! each reports (`GET /api/v1/version`), how they meet ([`meet`]) and what the client does
//! about it ([`next_step`]): carry on, say so, restart the daemon with the client's binary,
//! or refuse. Pure; `mod.rs` asks and acts.

use std::cmp::Ordering;

use serde::{Deserialize, Serialize};

/// The version of the daemon's API this build speaks. Bumped when an older client would
/// misread a newer daemon's answers, or a newer client send what an older daemon refuses.
pub const API_VERSION: u32 = 1;

/// Makes this build report another version (tests only: one binary plays two releases).
/// Read by the client and the daemon alike, so a daemon started by such a client reports
/// the same.
pub const TEST_VERSION_ENV: &str = "DEVAIPOD_TEST_VERSION";
/// Makes this build report another API version (tests only).
pub const TEST_API_VERSION_ENV: &str = "DEVAIPOD_TEST_API_VERSION";
/// `0` stops clients from restarting an older daemon by themselves (they say so instead).
pub const AUTO_RESTART_ENV: &str = "DEVAIPOD_AUTO_RESTART";

/// A build's version and API version, and where it runs from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Build {
    pub version: String,
    pub api: u32,
    /// Its executable (`None` when unknown).
    pub exe: Option<String>,
}

impl Build {
    /// This build (or what [`TEST_VERSION_ENV`] and [`TEST_API_VERSION_ENV`] make it say).
    pub fn own() -> Build {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
        Build {
            version: var(TEST_VERSION_ENV).unwrap_or_else(|| env!("CARGO_PKG_VERSION").to_owned()),
            api: var(TEST_API_VERSION_ENV).and_then(|v| v.trim().parse().ok()).unwrap_or(API_VERSION),
            exe: std::env::current_exe().ok().map(|p| p.display().to_string()),
        }
    }
}

/// Whether this client may restart an older daemon by itself ([`AUTO_RESTART_ENV`]).
pub fn auto_restart() -> bool {
    std::env::var(AUTO_RESTART_ENV).map_or(true, |v| v.trim() != "0")
}

/// What the daemon says of itself (`GET /api/v1/version`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct DaemonVersion {
    /// devaipod's version.
    pub version: String,
    /// The API version it speaks ([`API_VERSION`]).
    pub api: u32,
    /// Its store's schema version.
    pub schema: u32,
    pub pid: u32,
    /// The executable it was started from.
    pub exe: String,
    /// That path no longer holds the running executable: devaipod was rebuilt or
    /// reinstalled since the daemon started.
    pub exe_replaced: bool,
    /// The copy of its executable that agent containers run (gator's bridge).
    pub bridge: Option<String>,
    /// The service manager running the daemon, if any: restart it there.
    pub supervisor: Option<Supervisor>,
}

/// A service manager that runs the daemon.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Supervisor {
    /// e.g. `systemd unit devaipod.service`.
    pub name: String,
    /// The command that restarts the daemon there.
    pub restart: String,
}

/// How a client and its daemon meet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Meeting {
    /// Same version and API, and the daemon's executable still in place.
    Same,
    /// The daemon runs an older devaipod than this client (`why` says how that is known).
    /// `compatible`: it speaks this client's API, so the client works meanwhile.
    DaemonOlder { why: String, compatible: bool },
    /// The daemon's executable was replaced since it started, by a file other than this
    /// client's: the new one should restart it.
    DaemonStale,
    /// This client is older than the daemon, and speaks its API.
    ClientOlder,
    /// The daemon speaks a newer API than this client.
    ClientTooOld,
}

/// How `client` and `daemon` meet; `None` for a daemon from before version reporting
/// (which speaks API 1).
pub fn meet(client: &Build, daemon: Option<&DaemonVersion>) -> Meeting {
    let Some(d) = daemon else {
        return Meeting::DaemonOlder {
            why: "is older than this devaipod (it does not report its version)".to_owned(),
            compatible: client.api == 1,
        };
    };
    if d.api > client.api {
        return Meeting::ClientTooOld;
    }
    if d.api < client.api {
        return Meeting::DaemonOlder {
            why: format!(
                "runs devaipod {} (API {}), older than this devaipod {} (API {})",
                d.version, d.api, client.version, client.api
            ),
            compatible: false,
        };
    }
    match compare(&client.version, &d.version) {
        Some(Ordering::Greater) => Meeting::DaemonOlder {
            why: format!("runs devaipod {}, older than this devaipod {}", d.version, client.version),
            compatible: true,
        },
        Some(Ordering::Less) => Meeting::ClientOlder,
        // Replaced by this client's own executable: this client is the newer build.
        _ if d.exe_replaced && client.exe.as_deref() == Some(d.exe.as_str()) => Meeting::DaemonOlder {
            why: format!("runs an older build: its executable {} was replaced since it started", d.exe),
            compatible: true,
        },
        _ if d.exe_replaced => Meeting::DaemonStale,
        _ => Meeting::Same,
    }
}

/// What the client does next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    Proceed,
    /// Proceed, saying this on stderr.
    Note(String),
    /// Restart the daemon with this client's binary, saying this on stderr.
    Restart(String),
    /// Stop: the client cannot talk to this daemon.
    Refuse(String),
}

/// The step after `meeting`. `delivering`: tasks whose prompt is on its way to the agent
/// (a restart waits for none of them: it happens only when there are none); `auto`: the
/// client may restart the daemon by itself ([`auto_restart`]).
pub fn next_step(
    client: &Build,
    daemon: Option<&DaemonVersion>,
    meeting: &Meeting,
    delivering: &[String],
    auto: bool,
) -> Next {
    let who = match daemon {
        Some(d) => format!("the devaipod daemon (pid {})", d.pid),
        None => "the devaipod daemon".to_owned(),
    };
    let (why, compatible) = match meeting {
        Meeting::Same => return Next::Proceed,
        Meeting::ClientOlder => {
            let d = daemon.map_or("?", |d| d.version.as_str());
            let exe = daemon.map_or("?", |d| d.exe.as_str());
            return Next::Note(format!(
                "note: this devaipod {} is older than {who}, which runs devaipod {d} ({exe})",
                client.version
            ));
        }
        Meeting::DaemonStale => {
            let exe = daemon.map_or("?", |d| d.exe.as_str());
            return Next::Note(format!(
                "note: {who} runs an older build: its executable {exe} was replaced since it started; \
                 `{exe} restart-daemon` restarts it with the new one"
            ));
        }
        Meeting::ClientTooOld => {
            let (dv, da, exe) = daemon.map_or(("?", 0, "?"), |d| (d.version.as_str(), d.api, d.exe.as_str()));
            return Next::Refuse(format!(
                "this devaipod {} (API {}) cannot talk to {who}: it runs devaipod {dv} (API {da}). Use the newer devaipod ({exe})",
                client.version, client.api
            ));
        }
        Meeting::DaemonOlder { why, compatible } => (why, *compatible),
    };
    let blocker = if let Some(s) = daemon.and_then(|d| d.supervisor.as_ref()) {
        Some(format!("it runs under {}: restart it with `{}`", s.name, s.restart))
    } else if !delivering.is_empty() {
        Some(format!(
            "task {} is being delivered to its agent: run `devaipod restart-daemon` in a moment",
            delivering.join(", ")
        ))
    } else if !auto {
        Some("run `devaipod restart-daemon` to restart it with this devaipod".to_owned())
    } else {
        None
    };
    match (blocker, compatible) {
        (None, _) => Next::Restart(format!(
            "{who} {why}: restarting it with this devaipod {} (no task is being delivered; running tasks resume)",
            client.version
        )),
        (Some(b), true) => Next::Note(format!("note: {who} {why}; {b}")),
        (Some(b), false) => Next::Refuse(format!(
            "this devaipod {} (API {}) cannot talk to {who}, which {why}; {b}",
            client.version, client.api
        )),
    }
}

/// Orders two versions `MAJOR.MINOR.PATCH[-PRE][+BUILD]` (a pre-release before its release;
/// build metadata ignored); `None` when either does not parse.
pub fn compare(a: &str, b: &str) -> Option<Ordering> {
    fn parse(v: &str) -> Option<(Vec<u64>, Option<&str>)> {
        let v = v.trim().trim_start_matches('v');
        let v = v.split('+').next()?;
        let (core, pre) = match v.split_once('-') {
            Some((c, p)) => (c, Some(p)),
            None => (v, None),
        };
        let nums = core.split('.').map(|n| n.parse().ok()).collect::<Option<Vec<u64>>>()?;
        (!nums.is_empty()).then_some((nums, pre))
    }
    let (an, ap) = parse(a)?;
    let (bn, bp) = parse(b)?;
    let len = an.len().max(bn.len());
    let pad = |n: &[u64]| (0..len).map(|i| n.get(i).copied().unwrap_or(0)).collect::<Vec<_>>();
    Some(pad(&an).cmp(&pad(&bn)).then_with(|| match (ap, bp) {
        (None, None) => Ordering::Equal,
        (None, Some(_)) => Ordering::Greater,
        (Some(_), None) => Ordering::Less,
        (Some(x), Some(y)) => x.cmp(y),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn build(version: &str, api: u32) -> Build {
        Build { version: version.into(), api, exe: Some("/usr/bin/devaipod".into()) }
    }

    fn daemon(version: &str, api: u32) -> DaemonVersion {
        DaemonVersion {
            version: version.into(),
            api,
            schema: 3,
            pid: 42,
            exe: "/usr/bin/devaipod".into(),
            exe_replaced: false,
            bridge: None,
            supervisor: None,
        }
    }

    #[test]
    fn versions_order_like_semver() {
        use Ordering::*;
        for (a, b, want) in [
            ("0.1.0", "0.1.0", Some(Equal)),
            ("0.2.0", "0.1.9", Some(Greater)),
            ("0.10.0", "0.9.0", Some(Greater)),
            ("1.0", "1.0.0", Some(Equal)),
            ("1.0.0-rc.1", "1.0.0", Some(Less)),
            ("1.0.0+abc", "1.0.0", Some(Equal)),
            ("v2.0.0", "1.0.0", Some(Greater)),
            ("weird", "1.0.0", None),
        ] {
            assert_eq!(compare(a, b), want, "{a} vs {b}");
        }
    }

    #[test]
    fn how_a_client_and_a_daemon_meet() {
        let replaced = DaemonVersion { exe_replaced: true, ..daemon("0.1.0", 1) };
        let older = |why: &str, compatible| Meeting::DaemonOlder { why: why.into(), compatible };
        for (client, d, want) in [
            (build("0.1.0", 1), Some(daemon("0.1.0", 1)), Meeting::Same),
            (
                build("0.2.0", 1),
                Some(daemon("0.1.0", 1)),
                older("runs devaipod 0.1.0, older than this devaipod 0.2.0", true),
            ),
            (build("0.1.0", 1), Some(daemon("0.2.0", 1)), Meeting::ClientOlder),
            (build("0.1.0", 1), Some(daemon("0.2.0", 2)), Meeting::ClientTooOld),
            (
                build("0.2.0", 2),
                Some(daemon("0.1.0", 1)),
                older("runs devaipod 0.1.0 (API 1), older than this devaipod 0.2.0 (API 2)", false),
            ),
            (
                build("0.1.0", 1),
                Some(replaced.clone()),
                older("runs an older build: its executable /usr/bin/devaipod was replaced since it started", true),
            ),
            // A newer client: the version says it; a replaced executable changes nothing.
            (
                build("0.2.0", 1),
                Some(replaced.clone()),
                older("runs devaipod 0.1.0, older than this devaipod 0.2.0", true),
            ),
            // Replaced by another file than this client's: that one is the newer build.
            (
                Build { exe: Some("/opt/devaipod".into()), ..build("0.1.0", 1) },
                Some(replaced.clone()),
                Meeting::DaemonStale,
            ),
            (Build { exe: None, ..build("0.1.0", 1) }, Some(replaced), Meeting::DaemonStale),
            (build("0.1.0", 1), None, older("is older than this devaipod (it does not report its version)", true)),
            (build("0.2.0", 2), None, older("is older than this devaipod (it does not report its version)", false)),
        ] {
            assert_eq!(meet(&client, d.as_ref()), want, "{client:?} and {d:?}");
        }
    }

    #[test]
    fn an_older_daemon_is_restarted_only_when_nothing_is_being_delivered_and_no_one_else_runs_it() {
        let client = build("0.2.0", 1);
        let d = daemon("0.1.0", 1);
        let m = meet(&client, Some(&d));
        let restart = next_step(&client, Some(&d), &m, &[], true);
        assert_eq!(
            restart,
            Next::Restart(
                "the devaipod daemon (pid 42) runs devaipod 0.1.0, older than this devaipod 0.2.0: restarting it with \
                 this devaipod 0.2.0 (no task is being delivered; running tasks resume)"
                    .into()
            )
        );
        let busy = next_step(&client, Some(&d), &m, &["t-1".into()], true);
        assert_eq!(
            busy,
            Next::Note(
                "note: the devaipod daemon (pid 42) runs devaipod 0.1.0, older than this devaipod 0.2.0; task t-1 is \
                 being delivered to its agent: run `devaipod restart-daemon` in a moment"
                    .into()
            )
        );
        let Next::Note(off) = next_step(&client, Some(&d), &m, &[], false) else { panic!("a note") };
        assert!(off.ends_with("run `devaipod restart-daemon` to restart it with this devaipod"), "{off}");
        let supervised = DaemonVersion {
            supervisor: Some(Supervisor {
                name: "systemd unit devaipod.service".into(),
                restart: "systemctl --user restart devaipod.service".into(),
            }),
            ..d.clone()
        };
        let Next::Note(s) = next_step(&client, Some(&supervised), &m, &[], true) else { panic!("a note") };
        assert!(
            s.ends_with("it runs under systemd unit devaipod.service: restart it with `systemctl --user restart devaipod.service`"),
            "{s}"
        );

        // Another API: restarted when it can be, refused (naming both versions) when not.
        let newer_api = build("0.2.0", 2);
        let m = meet(&newer_api, Some(&d));
        assert!(matches!(next_step(&newer_api, Some(&d), &m, &[], true), Next::Restart(_)));
        let Next::Refuse(r) = next_step(&newer_api, Some(&d), &m, &["t-1".into()], true) else { panic!("refused") };
        assert!(r.starts_with("this devaipod 0.2.0 (API 2) cannot talk to the devaipod daemon (pid 42), which runs devaipod 0.1.0 (API 1)"), "{r}");

        let old_client = build("0.1.0", 1);
        let newer = daemon("0.3.0", 2);
        let Next::Refuse(r) = next_step(&old_client, Some(&newer), &meet(&old_client, Some(&newer)), &[], true) else {
            panic!("refused")
        };
        assert_eq!(
            r,
            "this devaipod 0.1.0 (API 1) cannot talk to the devaipod daemon (pid 42): it runs devaipod 0.3.0 (API 2). \
             Use the newer devaipod (/usr/bin/devaipod)"
        );
        let newer = daemon("0.3.0", 1);
        let Next::Note(n) = next_step(&old_client, Some(&newer), &meet(&old_client, Some(&newer)), &[], true) else {
            panic!("a note")
        };
        assert!(
            n.contains("this devaipod 0.1.0 is older than the devaipod daemon (pid 42), which runs devaipod 0.3.0"),
            "{n}"
        );
        assert_eq!(next_step(&old_client, Some(&daemon("0.1.0", 1)), &Meeting::Same, &[], true), Next::Proceed);
        assert_eq!(
            next_step(&old_client, Some(&daemon("0.1.0", 1)), &Meeting::DaemonStale, &[], true),
            Next::Note(
                "note: the devaipod daemon (pid 42) runs an older build: its executable /usr/bin/devaipod was replaced \
                 since it started; `/usr/bin/devaipod restart-daemon` restarts it with the new one"
                    .into()
            )
        );
    }
}
