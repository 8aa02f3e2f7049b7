//! The CLI's client of the daemon, over the daemon's unix socket. When no daemon answers,
//! one is started in the background (one owner of state, never two writers).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use bytes::Bytes;
use futures_util::StreamExt;
use http_body_util::{BodyExt, BodyStream, Full};
use hyper::{Method, Request};
use hyper_util::client::legacy::Client as HyperClient;
use hyperlocal::{UnixClientExt, UnixConnector};
use serde_json::Value;

use crate::core::Paths;

const CALL_TIMEOUT: Duration = Duration::from_secs(600);

pub struct Client {
    http: HyperClient<UnixConnector, Full<Bytes>>,
    socket: PathBuf,
}

/// Whether a daemon answers `/healthz` on `socket`.
pub async fn healthy(socket: &Path) -> bool {
    let http: HyperClient<UnixConnector, Full<Bytes>> = HyperClient::unix();
    let uri: hyper::Uri = hyperlocal::Uri::new(socket, "/healthz").into();
    let Ok(req) = Request::get(uri).body(Full::new(Bytes::new())) else {
        return false;
    };
    matches!(tokio::time::timeout(Duration::from_secs(2), http.request(req)).await, Ok(Ok(r)) if r.status().is_success())
}

impl Client {
    /// Connects to this instance's daemon, starting one when none answers.
    pub async fn connect(paths: &Paths, config: Option<&Path>) -> Result<Client> {
        let socket = paths.socket();
        let client = Client { http: HyperClient::unix(), socket: socket.clone() };
        if healthy(&socket).await {
            return Ok(client);
        }
        std::fs::create_dir_all(&paths.data).with_context(|| format!("cannot create {}", paths.data.display()))?;
        let log = paths.data.join("daemon.log");
        let out = std::fs::OpenOptions::new().create(true).append(true).open(&log)?;
        let exe = std::env::current_exe().context("cannot find the devaipod binary to start the daemon")?;
        let mut cmd = std::process::Command::new(exe);
        cmd.arg("serve").stdin(std::process::Stdio::null()).stdout(out.try_clone()?).stderr(out);
        if let Some(c) = config {
            cmd.env("DEVAIPOD_CONFIG", c);
        }
        use std::os::unix::process::CommandExt;
        cmd.process_group(0); // not killed by the terminal's Ctrl-C
        let mut child = cmd.spawn().context("cannot start the devaipod daemon")?;
        for _ in 0..150 {
            if healthy(&socket).await {
                eprintln!("started the devaipod daemon in the background (pid {}; log {})", child.id(), log.display());
                return Ok(client);
            }
            if let Ok(Some(_)) = child.try_wait() {
                break; // it exited: its log says why
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let tail = std::fs::read_to_string(&log).unwrap_or_default();
        let tail: Vec<&str> = tail.lines().rev().take(5).collect();
        bail!(
            "the devaipod daemon did not start (log {}):\n{}",
            log.display(),
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        )
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<hyper::Response<hyper::body::Incoming>> {
        let uri: hyper::Uri = hyperlocal::Uri::new(&self.socket, path).into();
        let mut req = Request::builder().method(method).uri(uri);
        let body = match body {
            Some(v) => {
                req = req.header("content-type", "application/json");
                Full::new(Bytes::from(serde_json::to_vec(v)?))
            }
            None => Full::new(Bytes::new()),
        };
        self.http
            .request(req.body(body)?)
            .await
            .map_err(|e| anyhow!("the daemon does not answer on {}: {e}", self.socket.display()))
    }

    /// A call whose answer is JSON; a non-2xx answer becomes an error with its message.
    pub async fn call(&self, method: Method, path: &str, body: Option<&Value>) -> Result<Value> {
        let text = self.text(method, path, body).await?;
        serde_json::from_str(&text).with_context(|| format!("the daemon's answer to {path} is not JSON"))
    }

    pub async fn text(&self, method: Method, path: &str, body: Option<&Value>) -> Result<String> {
        let fut = async {
            let resp = self.send(method, path, body).await?;
            let status = resp.status();
            let bytes = resp.into_body().collect().await?.to_bytes();
            let text = String::from_utf8_lossy(&bytes).into_owned();
            if !status.is_success() {
                let msg = serde_json::from_str::<Value>(&text)
                    .ok()
                    .and_then(|v| v.get("error").and_then(Value::as_str).map(str::to_owned))
                    .unwrap_or(text);
                bail!("{msg}");
            }
            Ok(text)
        };
        tokio::time::timeout(CALL_TIMEOUT, fut)
            .await
            .map_err(|_| anyhow!("the daemon did not answer {path} within {} s", CALL_TIMEOUT.as_secs()))?
    }

    pub async fn get(&self, path: &str) -> Result<Value> {
        self.call(Method::GET, path, None).await
    }

    pub async fn post(&self, path: &str, body: &Value) -> Result<Value> {
        self.call(Method::POST, path, Some(body)).await
    }

    /// A streamed answer, line by line (NDJSON, or SSE `data:` lines); `on` returns false to stop.
    pub async fn lines(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        mut on: impl FnMut(Value) -> bool,
    ) -> Result<()> {
        let resp = self.send(method, path, body).await?;
        if !resp.status().is_success() {
            let bytes = resp.into_body().collect().await?.to_bytes();
            let v: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            bail!("{}", v.get("error").and_then(Value::as_str).unwrap_or("the daemon refused the request"));
        }
        let mut body = BodyStream::new(resp.into_body());
        let mut buf = String::new();
        while let Some(frame) = body.next().await {
            let Ok(data) = frame?.into_data() else {
                continue;
            };
            buf.push_str(&String::from_utf8_lossy(&data));
            while let Some(pos) = buf.find('\n') {
                let line: String = buf.drain(..=pos).collect();
                let line = line.trim();
                let json = line.strip_prefix("data:").map(str::trim).unwrap_or(line);
                if json.is_empty() || line.starts_with("event:") || line.starts_with(':') {
                    continue;
                }
                if let Ok(v) = serde_json::from_str::<Value>(json)
                    && !on(v)
                {
                    return Ok(());
                }
            }
        }
        Ok(())
    }
}

/// Percent-encodes a path segment or query value.
pub fn enc(s: &str) -> String {
    crate::pods::libpod::enc(s)
}
