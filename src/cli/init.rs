//! `devaipod init`: writes the `[agent]` section of the config file from flags, or from
//! answers to a few questions in a terminal: where the LLM is (an OpenAI-compatible URL, or
//! a server on this host), the model, where the key comes from (a variable or a podman
//! secret; the key itself is never asked for or written). Before saving, the doctor's
//! probe asks the endpoint from a container on the agents' network; what it finds is judged
//! by `core::doctor`. An existing file is replaced only with `--force` (kept as `.bak`).

use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};
use serde::Serialize;

use crate::config::{self, Config, EnvName};
use crate::core::doctor::{self, Check, EnvOwner, KeySource, Level, Via};
use crate::core::{CallerEnv, Paths};
use crate::pods::podman::default_socket;
use crate::pods::{Engine, Podman};

/// The port of a server on this host when none is given (Ollama's).
const LOCAL_PORT: u16 = 11434;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Provider {
    /// An OpenAI-compatible API at --base-url (hosted, or anywhere the agents reach).
    OpenaiCompatible,
    /// A server on this host (Ollama, llama.cpp, vLLM…) on --port, reached from containers as
    /// host.containers.internal.
    Local,
}

#[derive(Debug, Args)]
pub struct InitArgs {
    /// Where the LLM is (default: openai-compatible with --base-url, else asked).
    #[arg(long, value_enum)]
    pub provider: Option<Provider>,
    /// Base URL of the OpenAI-compatible API, as the agent's container reaches it (usually ending in /v1).
    #[arg(long)]
    pub base_url: Option<String>,
    /// Port of the server on this host (--provider local; default 11434).
    #[arg(long)]
    pub port: Option<u16>,
    /// The model's name, as the provider lists it.
    #[arg(long)]
    pub model: Option<String>,
    /// The environment variable that holds the API key (its name, not the key).
    #[arg(long, conflicts_with_all = ["api_key_secret", "no_key"])]
    pub api_key_env: Option<String>,
    /// The podman secret that holds the API key.
    #[arg(long, conflicts_with = "no_key")]
    pub api_key_secret: Option<String>,
    /// The provider needs no key (a local server).
    #[arg(long)]
    pub no_key: bool,
    /// Replace an existing config file (the old one is kept as <file>.bak).
    #[arg(long)]
    pub force: bool,
    /// Save without asking the endpoint first.
    #[arg(long)]
    pub no_check: bool,
}

/// Where the key comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Key {
    None,
    Env(EnvName),
    Secret(String),
}

/// What `init` writes.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Answers {
    base_url: String,
    model: String,
    key: Key,
}

/// What `--json` prints.
#[derive(Debug, Serialize)]
struct Written {
    config: String,
    /// The replaced file, kept.
    backup: Option<String>,
    /// The probe's verdict (absent with --no-check).
    check: Option<Check>,
}

pub async fn run(explicit: Option<&Path>, a: InitArgs, as_json: bool) -> Result<ExitCode> {
    let Some((path, _)) = super::config_location(explicit) else {
        bail!("no place for the config file: neither --config, DEVAIPOD_CONFIG nor $HOME is set");
    };
    if path.exists() && !a.force {
        bail!(
            "{} exists: devaipod init does not overwrite it; edit it, or pass --force to replace it (it is kept as {}.bak)",
            path.display(),
            path.display()
        );
    }
    let answers = if complete(&a) || !std::io::stdin().is_terminal() { from_flags(&a)? } else { ask(&a)? };
    let text = render(&answers);
    // The file as written must load: the config's own rules (an http(s) URL, names) refuse
    // it otherwise, naming the key.
    let mut config = config::parse(&text, &path).map_err(|e| anyhow::anyhow!("not saved: {e}"))?;
    config.file = Some(path.clone());
    if let Some(i) = super::instance_override()? {
        config.instance = i;
    }

    let check = if a.no_check { None } else { Some(check(&config, &path).await?) };
    let backup = write(&path, &text, a.force)?;
    let paths = Paths::for_instance(config.instance.as_str()).map_err(anyhow::Error::msg)?;
    let running = crate::client::healthy(&paths.socket()).await;
    if as_json {
        super::output::json(&Written {
            config: path.display().to_string(),
            backup: backup.as_ref().map(|b| b.display().to_string()),
            check,
        })?;
    } else {
        println!("wrote {}", path.display());
        if let Some(b) = &backup {
            println!("the previous file is {}", b.display());
        }
        if let Some(c) = &check {
            println!("{:<8} {:<12} {}", c.level.as_str(), c.id, super::output::clean(&c.summary));
            if let Some(fix) = &c.fix {
                println!("{:<21}fix: {}", "", super::output::clean(fix));
            }
        }
        if running {
            let pid = std::fs::read_to_string(paths.pid_file()).ok().and_then(|p| p.trim().parse::<u32>().ok());
            let how = pid.map(doctor::restart_hint).unwrap_or_else(|| "stop it".to_owned());
            println!("the daemon still runs with the previous config: restart it with {how}");
        }
        println!("next: `devaipod doctor` checks the whole setup");
    }
    Ok(ExitCode::SUCCESS)
}

/// Whether the flags say everything (then nothing is asked).
fn complete(a: &InitArgs) -> bool {
    let place = a.base_url.is_some() || a.provider == Some(Provider::Local);
    let model = a.model.is_some() || a.provider == Some(Provider::Local);
    let key = a.no_key || a.api_key_env.is_some() || a.api_key_secret.is_some() || a.provider == Some(Provider::Local);
    place && model && key
}

fn local_url(port: u16) -> String {
    format!("http://host.containers.internal:{port}/v1")
}

/// The answers from the flags alone.
fn from_flags(a: &InitArgs) -> Result<Answers> {
    let provider = a.provider.unwrap_or(Provider::OpenaiCompatible);
    let base_url = match (provider, &a.base_url) {
        (Provider::Local, Some(_)) => bail!("--provider local takes --port, not --base-url"),
        (Provider::Local, None) => local_url(a.port.unwrap_or(LOCAL_PORT)),
        (Provider::OpenaiCompatible, Some(url)) => url.clone(),
        (Provider::OpenaiCompatible, None) => {
            bail!(
                "give --base-url URL (or --provider local [--port N]), or run `devaipod init` in a terminal to be asked"
            )
        }
    };
    let model = match (&a.model, provider) {
        (Some(m), _) => model_name(m)?,
        (None, Provider::Local) => config::AgentConfig::default().model,
        (None, Provider::OpenaiCompatible) => bail!("give --model NAME (as the provider lists it)"),
    };
    let key = key_from_flags(a, provider)?;
    Ok(Answers { base_url, model, key })
}

fn key_from_flags(a: &InitArgs, provider: Provider) -> Result<Key> {
    if let Some(var) = &a.api_key_env {
        return Ok(Key::Env(env_name(var)?));
    }
    if let Some(secret) = &a.api_key_secret {
        return Ok(Key::Secret(secret.clone()));
    }
    if a.no_key || provider == Provider::Local {
        return Ok(Key::None);
    }
    bail!(
        "where does the API key come from? --api-key-env VAR (a variable that holds it), --api-key-secret NAME (a podman secret), or --no-key"
    )
}

/// A variable's name, refused without repeating what was given (it may be the key itself).
fn env_name(var: &str) -> Result<EnvName> {
    EnvName::try_from(var.to_owned()).map_err(|_| {
        anyhow::anyhow!(
            "the API key's variable is the name of an environment variable that holds the key (like OPENAI_API_KEY), not the key itself; the key is never written into the config"
        )
    })
}

/// A model's name: not blank.
fn model_name(model: &str) -> Result<String> {
    let m = model.trim();
    if m.is_empty() {
        bail!("the model's name is empty: give it as the provider lists it (GET <base-url>/models)");
    }
    Ok(m.to_owned())
}

/// The answers, asked in a terminal where the flags leave them open.
fn ask(a: &InitArgs) -> Result<Answers> {
    let stdin = std::io::stdin();
    let mut lines = stdin.lock().lines();
    let mut prompt = |question: &str, default: &str| -> Result<String> {
        let mut err = std::io::stderr();
        if default.is_empty() {
            write!(err, "{question}: ")?;
        } else {
            write!(err, "{question} [{default}]: ")?;
        }
        err.flush()?;
        let line = lines.next().transpose()?.context("no answer (end of input)")?;
        let line = line.trim();
        Ok(if line.is_empty() { default.to_owned() } else { line.to_owned() })
    };
    let provider = match (a.provider, &a.base_url) {
        (Some(p), _) => p,
        (None, Some(_)) => Provider::OpenaiCompatible,
        (None, None) => {
            eprintln!(
                "Where is the LLM?\n  1) an OpenAI-compatible API at a URL\n  2) a server on this host (Ollama, llama.cpp, vLLM…)"
            );
            match prompt("choice", "1")?.as_str() {
                "2" => Provider::Local,
                _ => Provider::OpenaiCompatible,
            }
        }
    };
    let base_url = match (provider, &a.base_url) {
        (_, Some(u)) => u.clone(),
        (Provider::Local, None) => {
            let port = match a.port {
                Some(p) => p,
                None => prompt("port of the server on this host", &LOCAL_PORT.to_string())?
                    .parse()
                    .context("the port is a number from 1 to 65535")?,
            };
            local_url(port)
        }
        (Provider::OpenaiCompatible, None) => prompt("base URL (usually ending in /v1)", "https://api.openai.com/v1")?,
    };
    let model = match &a.model {
        Some(m) => model_name(m)?,
        None => {
            let default =
                if provider == Provider::Local { config::AgentConfig::default().model } else { String::new() };
            again(|| model_name(&prompt("model", &default)?))?
        }
    };
    let key = if a.no_key || a.api_key_env.is_some() || a.api_key_secret.is_some() {
        key_from_flags(a, provider)?
    } else {
        eprintln!(
            "Where does the API key come from? (It is never written into the file.)\n  1) an environment variable\n  2) a podman secret\n  3) none"
        );
        let default = if provider == Provider::Local { "3" } else { "1" };
        match prompt("choice", default)?.as_str() {
            // Asked again when the answer is not a name (a pasted key, say): never repeated.
            "1" => Key::Env(again(|| env_name(&prompt("name of the variable that holds the key", "OPENAI_API_KEY")?))?),
            "2" => Key::Secret(prompt("podman secret name", "llm-key")?),
            _ => Key::None,
        }
    };
    Ok(Answers { base_url, model, key })
}

/// Asks until `ask` gives a valid answer, three times at most; each refusal is shown.
fn again<T>(mut ask: impl FnMut() -> Result<T>) -> Result<T> {
    for _ in 0..2 {
        match ask() {
            Ok(v) => return Ok(v),
            Err(e) => eprintln!("{e}"),
        }
    }
    ask()
}

/// The file: `[agent]` with the answers, as TOML (values quoted by the TOML writer).
fn render(a: &Answers) -> String {
    let q = |s: &str| toml::Value::String(s.to_owned()).to_string();
    let key = match &a.key {
        Key::None => "# No API key: the provider needs none.\n".to_owned(),
        Key::Env(var) => format!(
            "# The key is read from this variable of the shell that runs `devaipod up` (never written here).\napi-key-env = {}\n",
            q(var.as_str())
        ),
        Key::Secret(s) => {
            format!("# The key is in this podman secret (never written here).\napi-key-secret = {}\n", q(s))
        }
    };
    format!(
        "# devaipod configuration, written by `devaipod init`; docs/configuration.md lists every key.\n\n[agent]\n# An OpenAI-compatible API, as this host reaches it (devaipod's egress proxy connects for the agents).\nbase-url = {}\nmodel = {}\n{key}",
        q(&a.base_url),
        q(&a.model)
    )
}

/// Asks the endpoint as the doctor does; refuses (an error) unless it answers well enough.
async fn check(config: &Config, path: &Path) -> Result<Check> {
    let edit = path.display().to_string();
    let engine = Podman::new(&default_socket())?;
    let env = CallerEnv::current();
    let key = match (&config.agent.api_key_secret, &config.agent.api_key_env) {
        (Some(name), _) => KeySource::Secret {
            name: name.clone(),
            exists: tokio::time::timeout(std::time::Duration::from_secs(10), engine.secret_exists(name))
                .await
                .map_err(|_| "podman did not answer".to_owned())
                .and_then(|r| r.map_err(|e| e.to_string())),
        },
        (None, Some(var)) => KeySource::Env {
            var: var.to_string(),
            set: env.0.get(var.as_str()).is_some_and(|v| !v.is_empty()),
            owner: EnvOwner::Caller,
        },
        (None, None) => KeySource::None,
    };
    let key_check = doctor::judge::api_key(&key, &edit);
    if key_check.level == Level::Error {
        refuse(&key_check)?;
    }
    eprintln!("==> asking {} from this host, as devaipod's egress proxy reaches it", config.agent.base_url);
    let paths = crate::core::Paths::for_instance(config.instance.as_str()).map_err(anyhow::Error::msg)?;
    let probe = doctor::probe_from_host(&engine, config, &paths, Some(&env)).await;
    let line = doctor::judge::llm(&config.agent, &Via::Host, probe.as_ref().map_err(String::as_str), &key, &edit);
    if probe.is_err() || line.level == Level::Error {
        refuse(&line)?;
    }
    Ok(line)
}

fn refuse(c: &Check) -> Result<()> {
    bail!(
        "not saved: {}\n  fix: {}\n  (change the flags, or pass --no-check to save it unchecked)",
        c.summary,
        c.fix.as_deref().unwrap_or("-")
    )
}

/// Writes the file (its directory made when needed); with `force`, an existing file is
/// first kept as `<file>.bak`. Returns the backup's path.
fn write(path: &Path, text: &str, force: bool) -> Result<Option<PathBuf>> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let mut backup = None;
    if path.exists() {
        if !force {
            bail!("{} exists: pass --force to replace it", path.display());
        }
        let mut b = path.as_os_str().to_owned();
        b.push(".bak");
        let b = PathBuf::from(b);
        std::fs::copy(path, &b).with_context(|| format!("cannot keep the old file as {}", b.display()))?;
        backup = Some(b);
    }
    // Written whole, then renamed: a crash never leaves half a file.
    let tmp = path.with_extension("toml.tmp");
    std::fs::write(&tmp, text).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(backup)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args() -> InitArgs {
        InitArgs {
            provider: None,
            base_url: None,
            port: None,
            model: None,
            api_key_env: None,
            api_key_secret: None,
            no_key: false,
            force: false,
            no_check: true,
        }
    }

    #[test]
    fn flags_make_a_config_that_loads_and_holds_no_key() {
        let a = InitArgs {
            base_url: Some("https://llm.example.test/v1".into()),
            model: Some("m\"1".into()),
            api_key_env: Some("MY_KEY".into()),
            ..args()
        };
        assert!(complete(&a));
        let text = render(&from_flags(&a).unwrap());
        let c = config::parse(&text, Path::new("x.toml")).unwrap();
        assert_eq!(c.agent.base_url, "https://llm.example.test/v1");
        assert_eq!(c.agent.model, "m\"1", "quoted by the TOML writer");
        assert_eq!(c.agent.api_key_env.as_ref().map(|v| v.as_str()), Some("MY_KEY"));

        let local = from_flags(&InitArgs { provider: Some(Provider::Local), port: Some(8081), ..args() }).unwrap();
        assert_eq!(local.base_url, "http://host.containers.internal:8081/v1");
        assert_eq!(local.key, Key::None);
        assert_eq!(local.model, config::AgentConfig::default().model);
    }

    #[test]
    fn what_is_missing_or_wrong_is_named_and_a_key_is_never_repeated() {
        let e = from_flags(&InitArgs { model: Some("m".into()), ..args() }).unwrap_err().to_string();
        assert!(e.starts_with("give --base-url URL"), "{e}");
        let e = from_flags(&InitArgs { base_url: Some("https://x/v1".into()), ..args() }).unwrap_err().to_string();
        assert!(e.starts_with("give --model NAME"), "{e}");
        let e = from_flags(&InitArgs { base_url: Some("https://x/v1".into()), model: Some("m".into()), ..args() })
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("where does the API key come from?"), "{e}");
        let pasted = "sk-proj-abcdef0123456789";
        let e = env_name(pasted).unwrap_err().to_string();
        assert!(e.contains("not the key itself") && !e.contains(pasted), "{e}");
        let e = from_flags(&InitArgs { base_url: Some("https://x/v1".into()), model: Some(" ".into()), ..args() })
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("the model's name is empty"), "{e}");
        // A bad URL is refused by the config's own rule, naming the key and the line.
        let text = render(&Answers { base_url: "ftp://x".into(), model: "m".into(), key: Key::None });
        let e = config::parse(&text, Path::new("/c/devaipod.toml")).unwrap_err().to_string();
        assert!(e.starts_with("/c/devaipod.toml:5:") && e.contains("agent.base-url"), "{e}");
    }
}
