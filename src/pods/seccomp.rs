//! The agent container's seccomp profile: podman's own default profile (read from the
//! host, so it stays the one podman ships) with user namespaces taken away. Without
//! capabilities, a new user namespace is the only namespace an unprivileged process can
//! make, and it is needless kernel surface for an agent (`unshare -Ur` worked there).
//!
//! - `unshare` is not allowed at all (it falls to the profile's default action, `EPERM`):
//!   without `CAP_SYS_ADMIN` every other namespace needs a user namespace first.
//! - `clone` is allowed only without `CLONE_NEWUSER` in its flags (x86-64 and arm64 pass
//!   the flags as the first argument).
//! - `clone3` answers `ENOSYS`: its flags are in memory seccomp cannot read; libc then falls
//!   back to `clone` (Docker's default profile does the same).
//!
//! Pure: JSON in, JSON out; the caller reads the default and writes the result.

use serde_json::{Value, json};

/// Where podman's default seccomp profile is, in the order podman reads them.
pub const DEFAULT_PROFILES: [&str; 2] = ["/etc/containers/seccomp.json", "/usr/share/containers/seccomp.json"];

const CLONE_NEWUSER: u64 = 0x1000_0000;
const ENOSYS: u64 = 38;
const TAKEN: [&str; 3] = ["clone", "clone3", "unshare"];

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum SeccompError {
    #[error("podman's default seccomp profile is not one this version of devaipod can read: {0}")]
    Unreadable(String),
}

/// `default` (podman's profile) without user namespaces.
pub fn without_user_namespaces(default: &str) -> Result<String, SeccompError> {
    let mut profile: Value = serde_json::from_str(default).map_err(|e| SeccompError::Unreadable(e.to_string()))?;
    if profile.get("defaultAction").and_then(Value::as_str) != Some("SCMP_ACT_ERRNO") {
        // An allow-by-default profile would make the rules below the only ones.
        return Err(SeccompError::Unreadable("its defaultAction is not SCMP_ACT_ERRNO".into()));
    }
    let Some(rules) = profile.get_mut("syscalls").and_then(Value::as_array_mut) else {
        return Err(SeccompError::Unreadable("it has no syscalls list".into()));
    };
    for rule in rules.iter_mut() {
        if let Some(names) = rule.get_mut("names").and_then(Value::as_array_mut) {
            names.retain(|n| !n.as_str().is_some_and(|n| TAKEN.contains(&n)));
        }
    }
    rules.retain(|r| r.get("names").and_then(Value::as_array).is_none_or(|n| !n.is_empty()));
    rules.push(json!({
        "names": ["clone"],
        "action": "SCMP_ACT_ALLOW",
        "args": [{ "index": 0, "value": CLONE_NEWUSER, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ" }],
        "comment": "devaipod: clone without CLONE_NEWUSER"
    }));
    rules.push(json!({
        "names": ["clone3"],
        "action": "SCMP_ACT_ERRNO",
        "errnoRet": ENOSYS,
        "comment": "devaipod: clone3's flags cannot be checked; libc falls back to clone"
    }));
    serde_json::to_string_pretty(&profile).map_err(|e| SeccompError::Unreadable(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules_for<'a>(p: &'a Value, name: &str) -> Vec<&'a Value> {
        p["syscalls"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["names"].as_array().unwrap().iter().any(|n| n == name))
            .collect()
    }

    #[test]
    fn user_namespaces_are_taken_away_and_the_rest_stays() {
        let default = json!({
            "defaultAction": "SCMP_ACT_ERRNO",
            "syscalls": [
                { "names": ["read", "clone", "clone3", "unshare", "write"], "action": "SCMP_ACT_ALLOW" },
                { "names": ["unshare"], "action": "SCMP_ACT_ALLOW", "includes": { "caps": ["CAP_SYS_ADMIN"] } },
                { "names": ["setns"], "action": "SCMP_ACT_ERRNO" }
            ]
        });
        let out: Value = serde_json::from_str(&without_user_namespaces(&default.to_string()).unwrap()).unwrap();
        assert_eq!(out["defaultAction"], "SCMP_ACT_ERRNO");
        assert_eq!(out["syscalls"][0]["names"], json!(["read", "write"]));
        assert!(rules_for(&out, "unshare").is_empty(), "unshare falls to the default action");
        let clone = rules_for(&out, "clone");
        assert_eq!(clone.len(), 1);
        assert_eq!(clone[0]["args"][0]["value"], CLONE_NEWUSER);
        assert_eq!(clone[0]["args"][0]["op"], "SCMP_CMP_MASKED_EQ");
        let clone3 = rules_for(&out, "clone3");
        assert_eq!((clone3.len(), &clone3[0]["errnoRet"]), (1, &json!(38)));
        assert_eq!(rules_for(&out, "setns").len(), 1, "other rules stay");
    }

    #[test]
    fn a_profile_it_cannot_read_is_refused() {
        assert!(without_user_namespaces("{").is_err());
        assert!(without_user_namespaces(r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[]}"#).is_err());
        assert!(without_user_namespaces(r#"{"defaultAction":"SCMP_ACT_ERRNO"}"#).is_err());
    }

    #[test]
    fn the_hosts_default_profile_is_readable() {
        let Some(path) = DEFAULT_PROFILES.iter().find(|p| std::path::Path::new(p).exists()) else {
            eprintln!("SKIP: no podman default seccomp profile on this machine");
            return;
        };
        let out = without_user_namespaces(&std::fs::read_to_string(path).unwrap()).unwrap();
        let out: Value = serde_json::from_str(&out).unwrap();
        assert!(rules_for(&out, "unshare").is_empty());
        assert!(!rules_for(&out, "read").is_empty());
    }
}
