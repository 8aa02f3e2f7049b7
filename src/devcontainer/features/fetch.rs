//! Getting features' files: local folders as they are, OCI artifacts through the
//! distribution API (manifest → the devcontainers layer → blob, with the anonymous-token
//! dance registries answer 401 with, and `auth.json` credentials when the user has some),
//! tarballs over HTTPS. Downloads are verified against their digest and cached, unpacked,
//! under `<cache>/sha256-<hex>/`; a tag's last digest is remembered so that a registry out
//! of reach does not stop an `up` whose features are cached.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use sha2::{Digest, Sha256};

use super::{
    FeatureMeta, FeatureSource, LAYER_MEDIA_TYPE, OciRef, ResolvedFeature, canonical_id, classify, user_options,
};
use crate::devcontainer::{DevContainer, HostContext, Vars};

/// The most a feature's archive may weigh.
const MAX_BLOB: usize = 256 << 20;
/// Each HTTP request's bound.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);
const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.manifest.v1+json";

#[derive(Debug, thiserror::Error)]
#[error("feature `{id}`: {message}")]
pub struct FeatureError {
    pub id: String,
    pub message: String,
}

/// Where features are cached and where registry credentials may be.
#[derive(Debug, Clone)]
pub struct FetchContext {
    pub cache_dir: PathBuf,
    /// `auth.json` files to look for credentials in, first found first.
    pub auth_files: Vec<PathBuf>,
}

/// The auth files podman and docker read, for the given environment.
pub fn default_auth_files(env: &BTreeMap<String, String>) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Some(f) = env.get("REGISTRY_AUTH_FILE") {
        out.push(PathBuf::from(f));
    }
    if let Some(d) = env.get("XDG_RUNTIME_DIR") {
        out.push(Path::new(d).join("containers/auth.json"));
    }
    if let Some(h) = env.get("HOME") {
        out.push(Path::new(h).join(".config/containers/auth.json"));
        out.push(Path::new(h).join(".docker/config.json"));
    }
    out
}

/// What resolving found: the features (in the order found, dependencies added) and what
/// the user should know.
#[derive(Debug, Default)]
pub struct Resolved {
    pub features: Vec<ResolvedFeature>,
    pub warnings: Vec<String>,
}

/// Fetches every feature of `config` and those they depend on.
pub async fn resolve(
    config: &DevContainer,
    dc_dir: &Path,
    ctx: &FetchContext,
    host: &HostContext,
) -> Result<Resolved, FeatureError> {
    let vars = Vars {
        local_env: &host.env,
        local_workspace_folder: &host.local_workspace_folder,
        container_workspace_folder: None,
        devcontainer_id: &host.devcontainer_id,
        container_env: None,
    };
    let http = reqwest::Client::builder()
        .timeout(REQUEST_TIMEOUT)
        .build()
        .map_err(|e| FeatureError { id: String::new(), message: e.to_string() })?;
    let mut out = Resolved::default();
    let mut queue: Vec<(String, BTreeMap<String, String>)> = Vec::new();
    for (id, value) in &config.features {
        let options = user_options(id, value).map_err(|message| FeatureError { id: id.clone(), message })?;
        queue.push((id.clone(), options));
    }
    let mut fetched: BTreeMap<String, (PathBuf, String, FeatureMeta)> = BTreeMap::new();
    while !queue.is_empty() {
        let (id, options) = queue.remove(0);
        let err = |message: String| FeatureError { id: id.clone(), message };
        let same = |f: &ResolvedFeature| canonical_id(&f.id) == canonical_id(&id) && f.options == options;
        if out.features.iter().any(same) {
            continue;
        }
        let (dir, digest, meta) = match fetched.get(&id) {
            Some(v) => v.clone(),
            None => {
                let source = classify(&id, dc_dir).map_err(err)?;
                let (dir, digest) = fetch(&http, &source, ctx, &mut out.warnings).await.map_err(err)?;
                let meta_path = dir.join("devcontainer-feature.json");
                let text = tokio::fs::read_to_string(&meta_path)
                    .await
                    .map_err(|e| err(format!("cannot read {}: {e}", meta_path.display())))?;
                let meta = FeatureMeta::parse_with(&text, &meta_path, Some(&vars)).map_err(err)?;
                if !dir.join("install.sh").is_file() {
                    return Err(err(format!("{} has no install.sh", dir.display())));
                }
                fetched.insert(id.clone(), (dir.clone(), digest.clone(), meta.clone()));
                (dir, digest, meta)
            }
        };
        for (dep, value) in &meta.depends_on {
            let options = user_options(dep, value).map_err(err)?;
            queue.push((dep.clone(), options));
        }
        out.features.push(ResolvedFeature { id, dir, digest, meta, options });
    }
    Ok(out)
}

async fn fetch(
    http: &reqwest::Client,
    source: &FeatureSource,
    ctx: &FetchContext,
    warnings: &mut Vec<String>,
) -> Result<(PathBuf, String), String> {
    match source {
        FeatureSource::Local { dir } => {
            // A repository's own folder, read on the host: no link may lead out of it.
            for path in [dir.clone(), dir.join("devcontainer-feature.json"), dir.join("install.sh")] {
                if tokio::fs::symlink_metadata(&path).await.is_ok_and(|m| m.file_type().is_symlink()) {
                    return Err(format!(
                        "{} is a symbolic link: a local feature's folder, devcontainer-feature.json and install.sh must be real files in the repository",
                        path.display()
                    ));
                }
            }
            if !dir.join("devcontainer-feature.json").is_file() {
                return Err(format!("{} holds no devcontainer-feature.json", dir.display()));
            }
            let d = dir.clone();
            let digest = tokio::task::spawn_blocking(move || folder_digest(&d))
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| format!("cannot read {}: {e}", dir.display()))?;
            Ok((dir.clone(), digest))
        }
        FeatureSource::Oci(r) => fetch_oci(http, r, ctx, warnings).await,
        FeatureSource::Tarball { url } => {
            let bytes = get_limited(http.get(url), url).await?;
            let digest = format!("sha256:{}", hex(&Sha256::digest(&bytes)));
            let dir = unpack_cached(&ctx.cache_dir, &digest, bytes).await?;
            Ok((dir, digest))
        }
    }
}

async fn fetch_oci(
    http: &reqwest::Client,
    r: &OciRef,
    ctx: &FetchContext,
    warnings: &mut Vec<String>,
) -> Result<(PathBuf, String), String> {
    let full = format!("{}/{}:{}", r.registry, r.repository, r.reference);
    let remembered = ctx.cache_dir.join("refs").join(hex(&Sha256::digest(full.as_bytes())));
    let mut client = Registry { http, r, basic: credentials(&ctx.auth_files, &r.registry).await, bearer: None };
    let manifest = match client.get(&format!("manifests/{}", r.reference), MANIFEST_ACCEPT).await {
        Ok(m) => m,
        Err(Unreachable(e)) => {
            // Out of reach: the digest this tag had last time, if its files are cached.
            if let Ok(digest) = tokio::fs::read_to_string(&remembered).await {
                let dir = ctx.cache_dir.join(digest.trim().replace(':', "-"));
                if dir.is_dir() {
                    warnings.push(format!(
                        "feature {full}: registry out of reach ({e}); using the cached {}",
                        digest.trim()
                    ));
                    return Ok((dir, digest.trim().to_owned()));
                }
            }
            return Err(format!("cannot reach the registry {}: {e}", r.registry));
        }
        Err(Refused(e)) => return Err(e),
    };
    let manifest: serde_json::Value =
        serde_json::from_slice(&manifest).map_err(|e| format!("the registry's manifest of {full} is not JSON: {e}"))?;
    let layers = manifest["layers"].as_array().cloned().unwrap_or_default();
    let layer = layers
        .iter()
        .find(|l| l["mediaType"] == LAYER_MEDIA_TYPE)
        .ok_or_else(|| format!("{full} is not a devcontainer feature: its manifest has no {LAYER_MEDIA_TYPE} layer"))?;
    let digest = layer["digest"].as_str().ok_or_else(|| format!("{full}: the layer has no digest"))?.to_owned();
    let hex_part = digest
        .strip_prefix("sha256:")
        .filter(|h| h.len() == 64 && h.chars().all(|c| c.is_ascii_hexdigit()))
        .ok_or_else(|| format!("{full}: layer digest `{digest}` is not sha256"))?;
    let dir = ctx.cache_dir.join(format!("sha256-{hex_part}"));
    if !dir.is_dir() {
        let blob = client.get(&format!("blobs/{digest}"), "*/*").await.map_err(|e| e.message())?;
        let got = hex(&Sha256::digest(&blob));
        if got != hex_part {
            return Err(format!("{full}: the layer's content does not match its digest {digest} (got sha256:{got})"));
        }
        unpack_cached(&ctx.cache_dir, &digest, blob).await?;
    }
    if let Some(parent) = remembered.parent() {
        let _ = tokio::fs::create_dir_all(parent).await;
        let _ = tokio::fs::write(&remembered, &digest).await;
    }
    Ok((dir, digest))
}

enum GetError {
    /// No answer at all (connection refused, DNS, timeout).
    Unreachable(String),
    /// An answer that says no.
    Refused(String),
}
use GetError::{Refused, Unreachable};

impl GetError {
    fn message(self) -> String {
        match self {
            Unreachable(m) | Refused(m) => m,
        }
    }
}

struct Registry<'a> {
    http: &'a reqwest::Client,
    r: &'a OciRef,
    /// `auth` of auth.json: base64 of `user:password`.
    basic: Option<String>,
    bearer: Option<String>,
}

impl Registry<'_> {
    /// GET `/v2/<repository>/<path>`, answering a 401's challenge once.
    async fn get(&mut self, path: &str, accept: &str) -> Result<Vec<u8>, GetError> {
        let url = format!("{}/v2/{}/{path}", self.r.base_url(), self.r.repository);
        for attempt in 0..2 {
            let mut req = self.http.get(&url).header(reqwest::header::ACCEPT, accept);
            if let Some(t) = &self.bearer {
                req = req.bearer_auth(t);
            } else if let Some(b) = &self.basic
                && attempt > 0
            {
                req = req.header(reqwest::header::AUTHORIZATION, format!("Basic {b}"));
            }
            let resp = req.send().await.map_err(|e| Unreachable(error_chain(&e)))?;
            if resp.status() == reqwest::StatusCode::UNAUTHORIZED && attempt == 0 {
                let challenge = resp
                    .headers()
                    .get(reqwest::header::WWW_AUTHENTICATE)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_owned();
                self.answer(&challenge).await?;
                continue;
            }
            if !resp.status().is_success() {
                let status = resp.status();
                let hint = if status == reqwest::StatusCode::UNAUTHORIZED || status == reqwest::StatusCode::FORBIDDEN {
                    format!(" (log in with `podman login {}` if it is private)", self.r.registry)
                } else {
                    String::new()
                };
                return Err(Refused(format!("{url}: the registry answered {status}{hint}")));
            }
            return read_limited(resp, &url).await.map_err(Refused);
        }
        Err(Refused(format!("{url}: the registry refused the credentials")))
    }

    /// Gets a token for a `Bearer` challenge (anonymous, or with the user's credentials).
    async fn answer(&mut self, challenge: &str) -> Result<(), GetError> {
        let Some(params) = challenge.strip_prefix("Bearer ") else {
            if challenge.starts_with("Basic") && self.basic.is_some() {
                return Ok(());
            }
            return Err(Refused(format!(
                "{} asks for credentials: log in with `podman login {}`",
                self.r.registry, self.r.registry
            )));
        };
        let params = challenge_params(params);
        let realm = params
            .get("realm")
            .ok_or_else(|| Refused(format!("{}: a Bearer challenge without realm", self.r.registry)))?;
        let scope = params.get("scope").cloned().unwrap_or_else(|| format!("repository:{}:pull", self.r.repository));
        let mut query = vec![("scope", scope)];
        if let Some(s) = params.get("service") {
            query.push(("service", s.clone()));
        }
        let mut req = self.http.get(realm).query(&query);
        if let Some(b) = &self.basic {
            req = req.header(reqwest::header::AUTHORIZATION, format!("Basic {b}"));
        }
        let resp = req.send().await.map_err(|e| Unreachable(error_chain(&e)))?;
        if !resp.status().is_success() {
            return Err(Refused(format!("{realm}: the token service answered {}", resp.status())));
        }
        let body: serde_json::Value = resp.json().await.map_err(|e| Refused(format!("{realm}: {e}")))?;
        let token = body["token"].as_str().or(body["access_token"].as_str());
        self.bearer = Some(token.ok_or_else(|| Refused(format!("{realm}: no token in the answer")))?.to_owned());
        Ok(())
    }
}

/// `realm="https://…",service="…",scope="…"` → its parameters.
pub fn challenge_params(s: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut rest = s.trim();
    while let Some((key, after)) = rest.split_once('=') {
        let key = key.trim().trim_start_matches(',').trim().to_owned();
        let (value, next) = if let Some(q) = after.strip_prefix('"') {
            match q.split_once('"') {
                Some((v, n)) => (v.to_owned(), n),
                None => (q.to_owned(), ""),
            }
        } else {
            match after.split_once(',') {
                Some((v, n)) => (v.trim().to_owned(), n),
                None => (after.trim().to_owned(), ""),
            }
        };
        out.insert(key, value);
        rest = next.trim_start_matches(',').trim();
    }
    out
}

/// The `auth` of `registry` in the first auth file that has it.
async fn credentials(files: &[PathBuf], registry: &str) -> Option<String> {
    for f in files {
        let Ok(text) = tokio::fs::read_to_string(f).await else { continue };
        let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) else { continue };
        for key in [registry.to_owned(), format!("https://{registry}"), format!("http://{registry}")] {
            if let Some(a) = v["auths"][&key]["auth"].as_str() {
                return Some(a.to_owned());
            }
        }
    }
    None
}

async fn get_limited(req: reqwest::RequestBuilder, what: &str) -> Result<Vec<u8>, String> {
    let resp = req.send().await.map_err(|e| format!("cannot download {what}: {}", error_chain(&e)))?;
    if !resp.status().is_success() {
        return Err(format!("{what}: the server answered {}", resp.status()));
    }
    read_limited(resp, what).await
}

async fn read_limited(mut resp: reqwest::Response, what: &str) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| format!("{what}: {}", error_chain(&e)))? {
        if out.len() + chunk.len() > MAX_BLOB {
            return Err(format!("{what} is larger than {} MiB", MAX_BLOB >> 20));
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

/// Unpacks an archive (tar, or gzip'd tar) into `<cache>/sha256-<hex>/` unless it is there.
async fn unpack_cached(cache: &Path, digest: &str, bytes: Vec<u8>) -> Result<PathBuf, String> {
    let dir = cache.join(digest.replace(':', "-"));
    let (cache, target) = (cache.to_owned(), dir.clone());
    tokio::task::spawn_blocking(move || -> Result<(), String> {
        if target.is_dir() {
            return Ok(());
        }
        std::fs::create_dir_all(&cache).map_err(|e| format!("cannot create {}: {e}", cache.display()))?;
        let tmp = tempfile::Builder::new()
            .prefix(".unpack-")
            .tempdir_in(&cache)
            .map_err(|e| format!("cannot create a folder in {}: {e}", cache.display()))?;
        let gz = bytes.starts_with(&[0x1f, 0x8b]);
        let reader: Box<dyn std::io::Read> =
            if gz { Box::new(flate2::read::GzDecoder::new(bytes.as_slice())) } else { Box::new(bytes.as_slice()) };
        let mut archive = tar::Archive::new(reader);
        archive.set_preserve_ownerships(false);
        archive.unpack(tmp.path()).map_err(|e| format!("cannot unpack the feature: {e}"))?;
        // Some archives hold one folder with the feature in it.
        let mut root = tmp.path().to_owned();
        if !root.join("devcontainer-feature.json").is_file() {
            let entries: Vec<_> = std::fs::read_dir(&root).map_err(|e| e.to_string())?.flatten().collect();
            if let [only] = entries.as_slice()
                && only.path().join("devcontainer-feature.json").is_file()
            {
                root = only.path();
            }
        }
        match std::fs::rename(&root, &target) {
            Ok(()) => Ok(()),
            Err(_) if target.is_dir() => Ok(()), // unpacked meanwhile by another up
            Err(e) => Err(format!("cannot move the feature into {}: {e}", target.display())),
        }
    })
    .await
    .map_err(|e| e.to_string())??;
    Ok(dir)
}

/// sha256 over a folder's files: each relative path and content, in path order.
fn folder_digest(dir: &Path) -> std::io::Result<String> {
    fn walk(dir: &Path, root: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
        for e in std::fs::read_dir(dir)? {
            let e = e?;
            if e.file_type()?.is_dir() {
                walk(&e.path(), root, out)?;
            } else {
                out.push(e.path().strip_prefix(root).unwrap_or(&e.path()).to_owned());
            }
        }
        Ok(())
    }
    let mut files = Vec::new();
    walk(dir, dir, &mut files)?;
    files.sort();
    let mut h = Sha256::new();
    for f in files {
        let path = f.to_string_lossy();
        h.update(path.len().to_le_bytes());
        h.update(path.as_bytes());
        let full = dir.join(&f);
        let content = if full.is_symlink() {
            std::fs::read_link(&full)?.to_string_lossy().into_owned().into_bytes()
        } else {
            std::fs::read(&full)?
        };
        h.update(content.len().to_le_bytes());
        h.update(&content);
    }
    Ok(format!("sha256:{}", hex(&h.finalize())))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        s.push_str(&format!(": {c}"));
        src = c.source();
    }
    s
}

#[cfg(test)]
mod local_tests {
    use super::*;

    /// A repository's local feature is read on the host: a link in its place (the folder,
    /// its devcontainer-feature.json, its install.sh) would read a host file, and is refused.
    #[tokio::test]
    async fn a_local_feature_made_of_links_is_refused() {
        let root = tempfile::tempdir().unwrap();
        let outside = root.path().join("outside");
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(outside.join("devcontainer-feature.json"), r#"{"id": "x"}"#).unwrap();
        std::fs::write(outside.join("install.sh"), "#!/bin/sh\n").unwrap();
        let dc = root.path().join("repo/.devcontainer");
        std::fs::create_dir_all(dc.join("real")).unwrap();
        std::fs::write(dc.join("real/install.sh"), "#!/bin/sh\n").unwrap();
        std::os::unix::fs::symlink(
            outside.join("devcontainer-feature.json"),
            dc.join("real/devcontainer-feature.json"),
        )
        .unwrap();
        std::os::unix::fs::symlink(&outside, dc.join("linked")).unwrap();
        let http = reqwest::Client::new();
        let ctx = FetchContext { cache_dir: root.path().join("cache"), auth_files: Vec::new() };
        for (name, link) in [("linked", "linked"), ("real", "real/devcontainer-feature.json")] {
            let mut warnings = Vec::new();
            let e = fetch(&http, &FeatureSource::Local { dir: dc.join(name) }, &ctx, &mut warnings).await.unwrap_err();
            assert!(e.contains(&format!("{} is a symbolic link", dc.join(link).display())), "{e}");
        }
        // The same files, really there, are taken.
        std::fs::remove_file(dc.join("real/devcontainer-feature.json")).unwrap();
        std::fs::write(dc.join("real/devcontainer-feature.json"), r#"{"id": "x"}"#).unwrap();
        let mut warnings = Vec::new();
        assert!(fetch(&http, &FeatureSource::Local { dir: dc.join("real") }, &ctx, &mut warnings).await.is_ok());
    }
}
