//! The server's host key (made once, 0600, in the data directory) and the client keys
//! allowed in (an OpenSSH `authorized_keys` file, read at each login so that an edit
//! applies at once).

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use russh::keys::ssh_key::{self, AuthorizedKeys, HashAlg, LineEnding, PrivateKey, PublicKey};

use super::SshError;

/// Where the host key lives in the data directory.
pub fn host_key_path(data: &Path) -> PathBuf {
    data.join("ssh").join("host_ed25519_key")
}

/// The host key's public half in OpenSSH's one-line form (`ssh-ed25519 AAAA…`), for
/// `known_hosts`. `None` before the daemon first made one.
pub fn host_public_line(data: &Path) -> Option<String> {
    let text = std::fs::read_to_string(host_key_path(data)).ok()?;
    let key = PrivateKey::from_openssh(text).ok()?;
    key.public_key().to_openssh().ok()
}

/// The host key: read, or made (Ed25519, from the system's random source) and written
/// 0600 when there is none. A key file that is not private is refused.
pub fn load_or_create_host_key(data: &Path) -> Result<PrivateKey, SshError> {
    use std::os::unix::fs::PermissionsExt;
    let path = host_key_path(data);
    let io = |e: std::io::Error| SshError::HostKey { path: path.clone(), message: e.to_string() };
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let mode = std::fs::metadata(&path).map_err(io)?.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                return Err(SshError::HostKey {
                    path: path.clone(),
                    message: format!("mode {mode:o} lets others read it: `chmod 600` it, or remove it for a new one"),
                });
            }
            PrivateKey::from_openssh(text).map_err(|e| SshError::HostKey { path: path.clone(), message: e.to_string() })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let dir = path.parent().unwrap_or(data);
            crate::core::private_dir(dir).map_err(|m| SshError::HostKey { path: path.clone(), message: m })?;
            let mut seed = [0u8; 32];
            rand::Rng::fill(&mut rand::rng(), &mut seed);
            let key = PrivateKey::from(ssh_key::private::Ed25519Keypair::from_seed(&seed));
            let text = key
                .to_openssh(LineEnding::LF)
                .map_err(|e| SshError::HostKey { path: path.clone(), message: e.to_string() })?;
            // Written beside and renamed into place: a crash never leaves half a key.
            let tmp = path.with_extension("tmp");
            let _ = std::fs::remove_file(&tmp);
            let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp).map_err(io)?;
            f.write_all(text.as_bytes()).and_then(|()| f.sync_all()).map_err(io)?;
            std::fs::rename(&tmp, &path).map_err(io)?;
            Ok(key)
        }
        Err(e) => Err(io(e)),
    }
}

/// The SHA-256 fingerprint as `ssh-keygen -l` prints it (`SHA256:…`): who a session is
/// in the audit log.
pub fn fingerprint(key: &PublicKey) -> String {
    key.fingerprint(HashAlg::Sha256).to_string()
}

/// Whether `key` is in the authorized keys text. Entries with options (`command=`,
/// `from=`, `restrict`, …) are not honoured by devaipod and so never let a key in: a key
/// the user limited for sshd is not given more here.
pub fn is_authorized(authorized: &str, key: &PublicKey) -> bool {
    AuthorizedKeys::new(authorized)
        .filter_map(Result::ok)
        .any(|entry| entry.config_opts().is_empty() && entry.public_key().key_data() == key.key_data())
}

/// Reads the authorized keys file; a missing file lets nobody in, and says so.
pub async fn read_authorized(path: &Path) -> Result<String, String> {
    tokio::fs::read_to_string(path).await.map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => {
            format!(
                "{} does not exist: no key may log in (set [ssh] authorized-keys or add your key there)",
                path.display()
            )
        }
        _ => format!("cannot read {}: {e}", path.display()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const ED: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJJO/81PkHyYa49rG/kOCTvawIVHnD6U4n8Tid4byFLk me@host";
    const OTHER: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKLyUcSVIyOvvFW3QL/w7uzpI8yUMkqZbPuaumBXzNB6 other";

    #[test]
    fn a_key_is_authorized_by_its_line_and_never_through_options() {
        let key = PublicKey::from_openssh(ED).unwrap();
        assert!(is_authorized(&format!("# comment\n\n{ED}\n"), &key));
        assert!(is_authorized(&format!("{OTHER}\n{}\n", ED.replace("me@host", "renamed")), &key));
        assert!(!is_authorized(OTHER, &key));
        assert!(!is_authorized(&format!("command=\"/bin/true\" {ED}"), &key));
        assert!(!is_authorized(&format!("restrict {ED}"), &key));
        assert!(!is_authorized("not a key at all", &key));
        assert!(fingerprint(&key).starts_with("SHA256:"));
    }

    #[test]
    fn the_host_key_is_made_once_private_and_kept() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let a = load_or_create_host_key(tmp.path()).unwrap();
        let path = host_key_path(tmp.path());
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        let b = load_or_create_host_key(tmp.path()).unwrap();
        assert_eq!(a.public_key(), b.public_key(), "the same key at the next start");
        assert_eq!(host_public_line(tmp.path()).unwrap(), a.public_key().to_openssh().unwrap());
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = load_or_create_host_key(tmp.path()).unwrap_err().to_string();
        assert!(e.contains("chmod 600"), "{e}");
    }
}
