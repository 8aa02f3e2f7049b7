//! CDI (Container Device Interface) devices: `--gpus` asks for `nvidia.com/gpu=…`, which
//! podman resolves from the host's CDI specs. Checked before the pod is made, so that a
//! host without them gets a clear error instead of podman's at container creation.

use std::path::Path;

/// Where podman reads CDI specs from.
pub const SPEC_DIRS: &[&str] = &["/etc/cdi", "/var/run/cdi"];

/// A CDI device name (`vendor.com/class=name`) as opposed to a device path.
pub fn kind_of(device: &str) -> Option<&str> {
    if device.starts_with('/') {
        return None;
    }
    let (kind, _) = device.split_once('=')?;
    kind.contains('/').then_some(kind)
}

/// Whether a spec file names `kind` (`"kind": "nvidia.com/gpu"` in JSON, `kind: nvidia.com/gpu` in YAML).
pub fn spec_names_kind(text: &str, kind: &str) -> bool {
    if let Ok(v) = serde_json::from_str::<serde_json::Value>(text) {
        return v["kind"] == kind;
    }
    text.lines().any(|l| l.strip_prefix("kind:").is_some_and(|v| v.trim().trim_matches(['"', '\'']) == kind))
}

/// The first CDI device of `devices` that no spec under `dirs` provides, with what to do.
pub async fn check(devices: &[String], dirs: &[&Path]) -> Result<(), String> {
    for device in devices {
        let Some(kind) = kind_of(device) else { continue };
        let mut found = false;
        for dir in dirs {
            let Ok(mut entries) = tokio::fs::read_dir(dir).await else { continue };
            while let Ok(Some(e)) = entries.next_entry().await {
                if let Ok(text) = tokio::fs::read_to_string(e.path()).await
                    && spec_names_kind(&text, kind)
                {
                    found = true;
                }
            }
        }
        if !found {
            let where_ = dirs.iter().map(|d| d.display().to_string()).collect::<Vec<_>>().join(" or ");
            return Err(format!(
                "runArgs asks for the CDI device {device} (from --gpus), but no CDI spec in {where_} provides {kind}: generate one (NVIDIA: `nvidia-ctk cdi generate --output=/etc/cdi/nvidia.yaml`) or remove --gpus"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_paths_are_not_cdi_names() {
        assert_eq!(kind_of("nvidia.com/gpu=all"), Some("nvidia.com/gpu"));
        assert_eq!(kind_of("/dev/fuse"), None);
        assert_eq!(kind_of("/dev/a=b"), None);
    }

    #[tokio::test]
    async fn a_gpu_without_a_cdi_spec_is_a_clear_error_and_with_one_passes() {
        let dir = tempfile::tempdir().unwrap();
        let devices = vec!["/dev/fuse".to_owned(), "nvidia.com/gpu=all".to_owned()];
        let e = check(&devices, &[dir.path()]).await.unwrap_err();
        assert!(e.contains("no CDI spec") && e.contains("nvidia.com/gpu") && e.contains("--gpus"), "{e}");
        std::fs::write(dir.path().join("nvidia.yaml"), "cdiVersion: 0.5.0\nkind: nvidia.com/gpu\ndevices: []\n")
            .unwrap();
        check(&devices, &[dir.path()]).await.unwrap();
        std::fs::write(dir.path().join("nvidia.yaml"), "{\"cdiVersion\": \"0.5.0\", \"kind\": \"nvidia.com/gpu\"}")
            .unwrap();
        check(&devices, &[dir.path()]).await.unwrap();
    }
}
