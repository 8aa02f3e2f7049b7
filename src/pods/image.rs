//! Image builds and pulls: the build context sent to podman, and the progress stream podman
//! answers with (JSON lines of `{"stream": …}` and `{"error": …}`).

use std::path::Path;

use futures_util::{Stream, StreamExt};

use super::engine::EngineError;
use super::wire::ProgressLine;

/// Name of a Containerfile that lies outside its context, inside the context's archive.
const OUTSIDE_CONTAINERFILE: &str = ".devaipod.Containerfile";

/// A tar of the build context; a Containerfile outside the context is added to it.
/// Returns the archive and the Containerfile's path inside it. Symlinks are archived as
/// links, never followed.
pub fn build_context(context: &Path, dockerfile: &Path) -> Result<(Vec<u8>, String), String> {
    if !context.is_dir() {
        return Err(format!("build context {} is not a directory", context.display()));
    }
    if !dockerfile.is_file() {
        return Err(format!("Containerfile {} does not exist", dockerfile.display()));
    }
    let mut tar = tar::Builder::new(Vec::new());
    tar.follow_symlinks(false);
    tar.append_dir_all(".", context).map_err(|e| format!("cannot read build context {}: {e}", context.display()))?;
    let inside = match dockerfile.strip_prefix(context) {
        Ok(rel) => rel.to_string_lossy().into_owned(),
        Err(_) => {
            tar.append_path_with_name(dockerfile, OUTSIDE_CONTAINERFILE)
                .map_err(|e| format!("cannot read {}: {e}", dockerfile.display()))?;
            OUTSIDE_CONTAINERFILE.to_owned()
        }
    };
    let bytes = tar.into_inner().map_err(|e| e.to_string())?;
    Ok((bytes, inside))
}

/// Reads a build or pull stream to its end: each non-blank output line goes to `progress`;
/// returns the last error podman reported in the stream, if any.
pub async fn read_progress(
    stream: impl Stream<Item = Result<bytes::Bytes, EngineError>>,
    progress: &(dyn Fn(&str) + Send + Sync),
) -> Result<Option<String>, EngineError> {
    let mut stream = std::pin::pin!(stream);
    let mut buf = Vec::new();
    let mut error = None;
    while let Some(chunk) = stream.next().await {
        buf.extend_from_slice(&chunk?);
        while let Some(pos) = buf.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = buf.drain(..=pos).collect();
            let Ok(line) = serde_json::from_slice::<ProgressLine>(&line) else {
                continue;
            };
            for l in line.stream.iter().flat_map(|s| s.lines()).filter(|l| !l.trim().is_empty()) {
                progress(l);
            }
            if let Some(e) = line.error {
                error = Some(e.trim().to_owned());
            }
        }
    }
    Ok(error)
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use bytes::Bytes;

    use super::*;

    #[tokio::test]
    async fn progress_lines_split_across_chunks_are_read_whole() {
        let chunks: Vec<Result<Bytes, EngineError>> = vec![
            Ok(Bytes::from_static(b"{\"stream\":\"STEP 1/2: FROM x\\n\"}\n{\"str")),
            Ok(Bytes::from_static(b"eam\":\"\\n  \\nSTEP 2/2: RUN y\\n\"}\nnot json\n")),
            Ok(Bytes::from_static(b"{\"error\":\"RUN y: exit status 1\\n\"}\n")),
        ];
        let seen = Mutex::new(Vec::new());
        let record = |l: &str| seen.lock().unwrap().push(l.to_owned());
        let error = read_progress(futures_util::stream::iter(chunks), &record).await.unwrap();
        assert_eq!(error.as_deref(), Some("RUN y: exit status 1"));
        assert_eq!(*seen.lock().unwrap(), ["STEP 1/2: FROM x", "STEP 2/2: RUN y"]);
    }

    #[test]
    fn a_containerfile_outside_the_context_is_added_under_its_own_name() {
        let dir = tempfile::tempdir().unwrap();
        let ctx = dir.path().join("ctx");
        std::fs::create_dir(&ctx).unwrap();
        std::fs::write(ctx.join("Containerfile"), "FROM x\n").unwrap();
        std::fs::write(dir.path().join("Other"), "FROM y\n").unwrap();
        let (_, inside) = build_context(&ctx, &ctx.join("Containerfile")).unwrap();
        assert_eq!(inside, "Containerfile");
        let (tar, inside) = build_context(&ctx, &dir.path().join("Other")).unwrap();
        assert_eq!(inside, OUTSIDE_CONTAINERFILE);
        let mut archive = tar::Archive::new(tar.as_slice());
        let names: Vec<String> =
            archive.entries().unwrap().map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned()).collect();
        assert!(names.contains(&OUTSIDE_CONTAINERFILE.to_owned()), "{names:?}");
        let e = build_context(&dir.path().join("nope"), &ctx.join("Containerfile")).unwrap_err();
        assert!(e.ends_with("nope is not a directory"), "{e}");
    }
}
