//! A small GitHub REST client (reqwest) for the calls gator makes on an agent's behalf and
//! for reading an issue given as a source. The token is the daemon's; it never enters a pod.

use std::time::Duration;

use serde_json::{Value, json};

use super::scope::RepoId;

const TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum GithubError {
    #[error("GitHub answered {status}: {message}")]
    Status { status: u16, message: String },
    #[error("cannot reach the GitHub API at {api}: {reason}")]
    Unreachable { api: String, reason: String },
    #[error(
        "no GitHub token: set [trusted] github-token-env, github-token-file or github-token-secret in devaipod.toml"
    )]
    NoToken,
}

#[derive(Debug, Clone)]
pub struct Github {
    http: reqwest::Client,
    api: String,
    token: Option<String>,
}

/// An issue or pull request, trimmed to what an agent or a person needs.
pub fn trim_item(v: &Value) -> Value {
    let mut out = json!({
        "number": v["number"],
        "title": v["title"],
        "state": v["state"],
        "body": v["body"],
        "html_url": v["html_url"],
        "user": v["user"]["login"],
        "labels": v["labels"].as_array().map(|l| l.iter().map(|x| x["name"].clone()).collect::<Vec<_>>()).unwrap_or_default(),
    });
    if v.get("head").is_some() {
        out["draft"] = v["draft"].clone();
        out["head"] = v["head"]["ref"].clone();
        out["base"] = v["base"]["ref"].clone();
    }
    out
}

/// The client GitHub calls share: a timeout on every call, TLS with the webpki roots.
pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(TIMEOUT)
        .user_agent(concat!("devaipod/", env!("CARGO_PKG_VERSION")))
        .build()
        .unwrap_or_default()
}

impl Github {
    pub fn new(http: reqwest::Client, api: &str, token: Option<String>) -> Github {
        Github { http, api: api.trim_end_matches('/').to_owned(), token }
    }

    pub fn has_token(&self) -> bool {
        self.token.is_some()
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> Result<Value, GithubError> {
        let token = self.token.as_deref().ok_or(GithubError::NoToken)?;
        let resp = req
            .bearer_auth(token)
            .header("accept", "application/vnd.github+json")
            .header("x-github-api-version", "2022-11-28")
            .send()
            .await
            .map_err(|e| GithubError::Unreachable { api: self.api.clone(), reason: e.to_string() })?;
        let status = resp.status();
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            let mut message = body["message"].as_str().unwrap_or("no message").to_owned();
            if let Some(errors) = body["errors"].as_array().filter(|e| !e.is_empty()) {
                message.push_str(&format!(" ({})", Value::Array(errors.clone())));
            }
            return Err(GithubError::Status { status: status.as_u16(), message });
        }
        Ok(body)
    }

    pub async fn issue(&self, repo: &RepoId, number: u64) -> Result<Value, GithubError> {
        let url = format!("{}/repos/{repo}/issues/{number}", self.api);
        Ok(trim_item(&self.send(self.http.get(url)).await?))
    }

    pub async fn pull(&self, repo: &RepoId, number: u64) -> Result<Value, GithubError> {
        let url = format!("{}/repos/{repo}/pulls/{number}", self.api);
        Ok(trim_item(&self.send(self.http.get(url)).await?))
    }

    /// `kind`: `issues` or `pulls`; `state`: open, closed or all.
    pub async fn list(&self, repo: &RepoId, kind: &str, state: &str, limit: u32) -> Result<Value, GithubError> {
        let url = format!("{}/repos/{repo}/{kind}", self.api);
        let per_page = limit.clamp(1, 100).to_string();
        let v = self.send(self.http.get(url).query(&[("state", state), ("per_page", per_page.as_str())])).await?;
        Ok(Value::Array(v.as_array().map(|a| a.iter().map(trim_item).collect()).unwrap_or_default()))
    }

    /// Opens a pull request; gator only ever asks for drafts.
    pub async fn create_draft_pr(
        &self,
        repo: &RepoId,
        head: &str,
        base: &str,
        title: &str,
        body: &str,
    ) -> Result<Value, GithubError> {
        let url = format!("{}/repos/{repo}/pulls", self.api);
        let req = json!({ "title": title, "head": head, "base": base, "body": body, "draft": true });
        Ok(trim_item(&self.send(self.http.post(url).json(&req)).await?))
    }

    pub async fn comment(&self, repo: &RepoId, number: u64, body: &str) -> Result<Value, GithubError> {
        let url = format!("{}/repos/{repo}/issues/{number}/comments", self.api);
        let v = self.send(self.http.post(url).json(&json!({ "body": body }))).await?;
        Ok(json!({ "id": v["id"], "html_url": v["html_url"] }))
    }

    /// The repository's default branch (the base of a draft PR when none is given).
    pub async fn default_branch(&self, repo: &RepoId) -> Result<String, GithubError> {
        let url = format!("{}/repos/{repo}", self.api);
        let v = self.send(self.http.get(url)).await?;
        Ok(v["default_branch"].as_str().unwrap_or("main").to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The default API is https: the client must speak TLS (a closed local port answers
    /// with a connection error, not "scheme is not http").
    #[tokio::test]
    async fn https_is_supported() {
        let gh = Github::new(http_client(), "https://127.0.0.1:9", Some("t".into()));
        let repo = RepoId::parse("o/r").unwrap();
        let e = gh.issue(&repo, 1).await.unwrap_err().to_string();
        assert!(!e.contains("scheme"), "{e}");
        assert!(e.contains("cannot reach"), "{e}");
    }
}
