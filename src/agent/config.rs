//! The opencode configuration devaipod starts the agent with: an OpenAI-compatible
//! provider from `[agent]` reached through the daemon's egress proxy, offline model list,
//! unattended permissions, no secrets inline (the API key is referenced as
//! `{env:DEVAIPOD_LLM_API_KEY}`, which holds a placeholder: the proxy adds the real key).

use serde_json::{Value, json};

use crate::config::AgentConfig;

/// The agent's API key variable inside the agent container.
pub const API_KEY_ENV: &str = "DEVAIPOD_LLM_API_KEY";
/// The port opencode serves on, on the agent container's loopback.
pub const PORT: u16 = 4096;
/// What the agent holds instead of the LLM key; the egress proxy replaces it.
pub const PLACEHOLDER_KEY: &str = "devaipod-egress-proxy-adds-the-key";
/// The provider's name in opencode's configuration.
pub const PROVIDER: &str = "devaipod";
/// The path prefix of the egress proxy's LLM route.
pub const LLM_ROUTE: &str = "/llm";

/// `[agent]` as the agent sees it: the provider's base URL is the egress proxy's LLM route
/// on the agent's loopback (`http://127.0.0.1:<port>/llm`), which forwards to the real one.
pub fn through_proxy(agent: &AgentConfig, egress_port: u16) -> AgentConfig {
    AgentConfig { base_url: format!("http://127.0.0.1:{egress_port}{LLM_ROUTE}"), ..agent.clone() }
}

/// `gator`: the argv of the gator bridge inside the agent container, offered to the agent
/// as the local MCP server `gator` (its tools appear as `gator_<tool>`).
pub fn opencode_config(agent: &AgentConfig, gator: Option<&[String]>) -> Value {
    // Every model a task may choose (a fan-out's candidates name theirs per prompt).
    let models: serde_json::Map<String, Value> =
        agent.allowed_models().into_iter().map(|m| (m.clone(), json!({ "name": m }))).collect();
    let mut config = json!({
        "$schema": "https://opencode.ai/config.json",
        "provider": {
            "devaipod": {
                "npm": "@ai-sdk/openai-compatible",
                "name": "devaipod provider",
                "options": { "baseURL": agent.base_url, "apiKey": format!("{{env:{API_KEY_ENV}}}") },
                "models": models
            }
        },
        "model": format!("devaipod/{}", agent.model),
        "small_model": format!("devaipod/{}", agent.model),
        "enabled_providers": ["devaipod"],
        "permission": { "*": "allow", "external_directory": "allow", "doom_loop": "allow", "question": "deny" },
        "autoupdate": false,
        "share": "disabled"
    });
    if let Some(command) = gator {
        config["mcp"] = json!({ "gator": { "type": "local", "command": command, "enabled": true } });
    }
    config
}

/// An ACP agent's argv inside the agent container: `opencode` as the first word is the
/// opencode injected read-only at `inject_dir`; anything else is run as written (from the
/// image, or a path the user mounted).
pub fn acp_argv(command: &[String], inject_dir: &str) -> Vec<String> {
    let mut argv = command.to_vec();
    if let Some(first) = argv.first_mut().filter(|f| f.as_str() == "opencode") {
        *first = format!("{inject_dir}/opencode");
    }
    argv
}

/// The provider's base URL in an `OPENCODE_CONFIG_CONTENT` that [`opencode_config`] made:
/// what a running agent actually uses (its workspace may predate a change of the config).
pub fn base_url_of(config_content: &str) -> Option<String> {
    let v: Value = serde_json::from_str(config_content).ok()?;
    v.pointer("/provider/devaipod/options/baseURL")?.as_str().map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_points_at_the_provider_without_secrets() {
        let a = AgentConfig { base_url: "http://llm.test/v1".into(), model: "m1".into(), ..AgentConfig::default() };
        let c = opencode_config(&a, None);
        assert!(c.get("mcp").is_none());
        let bridge = ["/opt/b".to_owned(), "gator-bridge".to_owned(), "/run/s".to_owned()];
        let with_gator = opencode_config(&a, Some(&bridge));
        assert_eq!(with_gator["mcp"]["gator"]["command"], json!(["/opt/b", "gator-bridge", "/run/s"]));
        assert_eq!(c["provider"]["devaipod"]["options"]["baseURL"], "http://llm.test/v1");
        assert_eq!(c["provider"]["devaipod"]["options"]["apiKey"], "{env:DEVAIPOD_LLM_API_KEY}");
        assert_eq!(c["model"], "devaipod/m1");
        assert_eq!(c["provider"]["devaipod"]["models"], json!({ "m1": { "name": "m1" } }));
        let more = AgentConfig { models: vec!["m2".into(), "m1".into()], ..a.clone() };
        let keys: Vec<_> = opencode_config(&more, None)["provider"]["devaipod"]["models"]
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect();
        assert_eq!(keys, ["m1", "m2"]);
        assert_eq!(c["permission"]["question"], "deny");
        assert_eq!(base_url_of(&c.to_string()).as_deref(), Some("http://llm.test/v1"));
        assert_eq!(base_url_of("{}"), None);
        assert_eq!(base_url_of("not json"), None);
        let argv = |c: &[&str]| acp_argv(&c.iter().map(|s| s.to_string()).collect::<Vec<_>>(), "/opt/x");
        assert_eq!(argv(&["opencode", "acp"]), ["/opt/x/opencode", "acp"]);
        assert_eq!(argv(&["/usr/bin/codex-acp", "--x"]), ["/usr/bin/codex-acp", "--x"]);
        assert!(argv(&[]).is_empty());
    }
}
