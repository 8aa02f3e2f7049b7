//! The daemon's executable as agent containers get it. Each agent container bind-mounts
//! devaipod's binary as gator's stdio bridge; mounting the daemon's own executable by its
//! path breaks every later `up` (and every restart of an agent container) once an upgrade
//! or a rebuild replaces that file. So the daemon copies the executable it runs — read
//! through `/proc/self/exe`, which stays readable after the path is unlinked — into
//! `<data>/bin/devaipod-<sha256>` at start and mounts the copy. Copies no container of the
//! instance uses any more are removed at the next start ([`collect`]).

use std::collections::BTreeSet;
use std::io::Read;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// Copies are named `devaipod-<the first 16 hex digits of their SHA-256>`.
const PREFIX: &str = "devaipod-";
const HASH_DIGITS: usize = 16;
/// A copy being written: `.devaipod-<hash>.tmp-<pid>`.
const TMP_MARK: &str = ".tmp-";

#[derive(Debug, thiserror::Error)]
#[error("cannot copy devaipod's executable into {}: {what}: {source}", dir.display())]
pub struct ExeError {
    dir: PathBuf,
    what: String,
    source: std::io::Error,
}

/// The running executable (`/proc/self/exe` on Linux, whatever became of its path).
pub fn running() -> PathBuf {
    let proc = PathBuf::from("/proc/self/exe");
    if proc.exists() { proc } else { std::env::current_exe().unwrap_or(proc) }
}

/// Makes sure `dir` holds a copy of `exe` named by its content; returns the copy's path.
/// An existing copy of the same content is reused; a new one is written next to it and
/// renamed into place, read-only (0555), so a copy is always whole.
pub fn install(exe: &Path, dir: &Path) -> Result<PathBuf, ExeError> {
    let err = |what: &str, source| ExeError { dir: dir.to_owned(), what: what.to_owned(), source };
    std::fs::create_dir_all(dir).map_err(|e| err("create the directory", e))?;
    let (hash, len) = digest(exe).map_err(|e| err(&format!("read {}", exe.display()), e))?;
    let name = format!("{PREFIX}{}", &hash[..HASH_DIGITS]);
    let dest = dir.join(&name);
    if std::fs::metadata(&dest).is_ok_and(|m| m.is_file() && m.len() == len) {
        return Ok(dest);
    }
    write_copy(exe, &dest, len).map_err(|e| err(&format!("write {}", dest.display()), e))?;
    Ok(dest)
}

/// The daemon in a container (`DEVAIPOD_COPY_OPENCODE=1`, set by the image): the opencode
/// binary of its image is not on the host, and podman bind-mounts host paths only. So it is
/// copied into the data directory — mounted at the same path as on the host — as
/// `<data>/opencode/<sha256 prefix>/opencode` (0555), and that directory is the one the
/// agent containers mount. Returns that directory.
pub fn install_opencode(opencode_dir: &Path, data: &Path) -> Result<PathBuf, ExeError> {
    let src = opencode_dir.join("opencode");
    let parent = data.join("opencode");
    let err = |what: &str, source| ExeError { dir: parent.clone(), what: what.to_owned(), source };
    let (hash, len) = digest(&src).map_err(|e| err(&format!("read {}", src.display()), e))?;
    let dir = parent.join(&hash[..HASH_DIGITS]);
    let dest = dir.join("opencode");
    if std::fs::metadata(&dest).is_ok_and(|m| m.is_file() && m.len() == len) {
        return Ok(dir);
    }
    std::fs::create_dir_all(&dir).map_err(|e| err("create the directory", e))?;
    write_copy(&src, &dest, len).map_err(|e| err(&format!("write {}", dest.display()), e))?;
    Ok(dir)
}

/// Copies `src` (of length `len`) to `dest` whole: written next to it, made read-only
/// (0555), synced, renamed into place.
fn write_copy(src: &Path, dest: &Path, len: u64) -> std::io::Result<()> {
    let dir = dest.parent().unwrap_or(Path::new("."));
    let name = dest.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = dir.join(format!(".{name}{TMP_MARK}{}", std::process::id()));
    let written = (|| {
        // A running executable cannot be written to (ETXTBSY): what is copied is what was
        // hashed. (`fs::copy` copies in the kernel, or shares the blocks where it can.)
        let copied = std::fs::copy(src, &tmp)?;
        if copied != len {
            return Err(std::io::Error::other("the file changed while it was copied"));
        }
        let out = std::fs::File::open(&tmp)?;
        use std::os::unix::fs::PermissionsExt;
        out.set_permissions(std::fs::Permissions::from_mode(0o555))?;
        out.sync_all()?;
        std::fs::rename(&tmp, dest)?;
        // The rename is durable once the directory is.
        std::fs::File::open(dir)?.sync_all()
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

/// The SHA-256 (hex) and length of `path`.
fn digest(path: &Path) -> std::io::Result<(String, u64)> {
    let mut f = std::fs::File::open(path)?;
    let mut hash = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut len = 0u64;
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hash.update(&buf[..n]);
        len += n as u64;
    }
    Ok((format!("{:x}", hash.finalize()), len))
}

/// Removes the copies in `dir` other than `current` that no container mounts (`in_use`:
/// the bind sources of the instance's containers, compared by file name, as podman may
/// report another spelling of the same path), and copies left half-written. Touches
/// nothing else. Returns what it removed.
pub fn collect(dir: &Path, current: &Path, in_use: &BTreeSet<PathBuf>) -> Vec<PathBuf> {
    let used: BTreeSet<&std::ffi::OsStr> =
        in_use.iter().filter_map(|p| p.file_name()).chain(current.file_name()).collect();
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut removed = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(n) = name.to_str() else { continue };
        let copy = is_copy_name(n) && !used.contains(name.as_os_str());
        let half_written = n.starts_with(&format!(".{PREFIX}")) && n.contains(TMP_MARK);
        if (copy || half_written) && std::fs::remove_file(entry.path()).is_ok() {
            removed.push(entry.path());
        }
    }
    removed.sort();
    removed
}

fn is_copy_name(n: &str) -> bool {
    n.strip_prefix(PREFIX)
        .is_some_and(|h| h.len() == HASH_DIGITS && h.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    #[test]
    fn a_copy_is_named_by_its_content_read_only_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let exe = dir.path().join("devaipod");
        std::fs::write(&exe, b"build one").unwrap();
        let bin = dir.path().join("data/bin");
        let first = install(&exe, &bin).unwrap();
        let sha = format!("{:x}", Sha256::digest(b"build one"));
        assert_eq!(first, bin.join(format!("devaipod-{}", &sha[..16])));
        assert_eq!(std::fs::read(&first).unwrap(), b"build one");
        let meta = std::fs::metadata(&first).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o555);

        // The same content again: the same file, not rewritten.
        assert_eq!(install(&exe, &bin).unwrap(), first);
        assert_eq!(std::fs::metadata(&first).unwrap().ino(), meta.ino());

        // Replaced the way installers do (unlinked, then a new file): a second copy, the
        // first one untouched.
        std::fs::remove_file(&exe).unwrap();
        std::fs::write(&exe, b"build two").unwrap();
        let second = install(&exe, &bin).unwrap();
        assert_ne!(second, first);
        assert_eq!(std::fs::read(&first).unwrap(), b"build one");
        assert_eq!(std::fs::read(&second).unwrap(), b"build two");
        let names: Vec<String> =
            std::fs::read_dir(&bin).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        assert_eq!(names.len(), 2, "no temporary file is left: {names:?}");
    }

    #[test]
    fn opencode_is_copied_into_the_data_directory_by_content() {
        let dir = tempfile::tempdir().unwrap();
        let image = dir.path().join("image");
        std::fs::create_dir(&image).unwrap();
        std::fs::write(image.join("opencode"), b"opencode one").unwrap();
        let data = dir.path().join("data");
        let got = install_opencode(&image, &data).unwrap();
        let sha = format!("{:x}", Sha256::digest(b"opencode one"));
        assert_eq!(got, data.join("opencode").join(&sha[..16]));
        assert_eq!(std::fs::read(got.join("opencode")).unwrap(), b"opencode one");
        assert_eq!(std::fs::metadata(got.join("opencode")).unwrap().permissions().mode() & 0o777, 0o555);
        assert_eq!(install_opencode(&image, &data).unwrap(), got, "reused");
        assert_eq!(std::fs::read_dir(&got).unwrap().count(), 1, "no temporary file is left");
        let e = install_opencode(&dir.path().join("none"), &data).unwrap_err().to_string();
        assert!(e.contains("none/opencode"), "{e}");
    }

    #[test]
    fn the_running_executable_is_readable_through_proc_after_it_is_unlinked() {
        let dir = tempfile::tempdir().unwrap();
        let exe = dir.path().join("sleeper");
        std::fs::copy("/bin/sleep", &exe).unwrap();
        let mut child = std::process::Command::new(&exe).arg("30").spawn().unwrap();
        std::fs::remove_file(&exe).unwrap();
        let copy = install(Path::new(&format!("/proc/{}/exe", child.id())), &dir.path().join("bin"));
        let _ = child.kill();
        let _ = child.wait();
        assert_eq!(std::fs::read(copy.unwrap()).unwrap(), std::fs::read("/bin/sleep").unwrap());
    }

    #[test]
    fn only_copies_no_container_uses_are_collected() {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path();
        let (current, used, unused) =
            ("devaipod-0123456789abcdef", "devaipod-1111111111111111", "devaipod-2222222222222222");
        for f in [current, used, unused, ".devaipod-3333333333333333.tmp-77", "devaipod-notahash", "notes.txt"] {
            std::fs::write(bin.join(f), b"x").unwrap();
        }
        // Podman may spell the path differently: the file name decides.
        let in_use = BTreeSet::from([PathBuf::from("/elsewhere/bin").join(used), PathBuf::from("/opt/other")]);
        let removed = collect(bin, &bin.join(current), &in_use);
        assert_eq!(removed, [bin.join(".devaipod-3333333333333333.tmp-77"), bin.join(unused)]);
        let mut left: Vec<String> =
            std::fs::read_dir(bin).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        left.sort();
        assert_eq!(left, [current, used, "devaipod-notahash", "notes.txt"]);
        assert!(collect(&bin.join("missing"), &bin.join(current), &in_use).is_empty());
    }
}
