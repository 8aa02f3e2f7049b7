//! Compose's variable interpolation (`$VAR`, `${VAR}`, `${VAR:-default}`, `${VAR-default}`,
//! `${VAR:?error}`, `${VAR?error}`, `${VAR:+other}`, `${VAR+other}`, `$$` for a `$`), the
//! `.env` file format, and the splitting of a string `command` into words.

use std::collections::BTreeMap;

/// Interpolates `text` against `env`. An error is the message of a `${VAR:?message}` whose
/// variable is missing, or a malformed reference.
pub fn interpolate(text: &str, env: &BTreeMap<String, String>) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        if let Some(r) = after.strip_prefix('$') {
            out.push('$');
            rest = r;
        } else if let Some(r) = after.strip_prefix('{') {
            let end = closing_brace(r).ok_or_else(|| format!("`${{` without its `}}` in `{text}`"))?;
            out.push_str(&expand(&r[..end], env)?);
            rest = &r[end + 1..];
        } else {
            let len = after.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(after.len());
            if len == 0 {
                out.push('$');
            } else {
                out.push_str(env.get(&after[..len]).map(String::as_str).unwrap_or(""));
            }
            rest = &after[len..];
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// The index of the `}` closing a `${`, counting nested `${…}` in defaults.
fn closing_brace(s: &str) -> Option<usize> {
    let mut depth = 0usize;
    let bytes = s.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'$' if bytes.get(i + 1) == Some(&b'{') => {
                depth += 1;
                i += 1;
            }
            b'}' if depth == 0 => return Some(i),
            b'}' => depth -= 1,
            _ => {}
        }
        i += 1;
    }
    None
}

/// One `${…}`'s inside.
fn expand(inner: &str, env: &BTreeMap<String, String>) -> Result<String, String> {
    let name_len = inner.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(inner.len());
    let (name, op) = inner.split_at(name_len);
    if name.is_empty() {
        return Err(format!("`${{{inner}}}` names no variable"));
    }
    let value = env.get(name);
    let set_nonempty = value.is_some_and(|v| !v.is_empty());
    let (kind, arg) = match op {
        "" => return Ok(value.cloned().unwrap_or_default()),
        _ if op.starts_with(":-") => (":-", &op[2..]),
        _ if op.starts_with(":?") => (":?", &op[2..]),
        _ if op.starts_with(":+") => (":+", &op[2..]),
        _ if op.starts_with('-') => ("-", &op[1..]),
        _ if op.starts_with('?') => ("?", &op[1..]),
        _ if op.starts_with('+') => ("+", &op[1..]),
        _ => return Err(format!("`${{{inner}}}` is not a variable reference compose knows")),
    };
    match kind {
        ":-" if !set_nonempty => interpolate(arg, env),
        "-" if value.is_none() => interpolate(arg, env),
        ":?" if !set_nonempty => Err(missing(name, arg, env)),
        "?" if value.is_none() => Err(missing(name, arg, env)),
        ":+" if set_nonempty => interpolate(arg, env),
        "+" if value.is_some() => interpolate(arg, env),
        ":+" | "+" => Ok(String::new()),
        _ => Ok(value.cloned().unwrap_or_default()),
    }
}

fn missing(name: &str, message: &str, env: &BTreeMap<String, String>) -> String {
    let message = interpolate(message, env).unwrap_or_else(|_| message.to_owned());
    if message.is_empty() {
        format!("variable {name} is required and not set")
    } else {
        format!("variable {name} is required: {message}")
    }
}

/// Parses a `.env` (or `env_file`) text: `KEY=VALUE` lines, `export KEY=VALUE`, `#`
/// comments, values in single quotes (as written) or double quotes (`\n`, `\"`, `\\`
/// escapes), and ` #` comments after an unquoted value. A line `KEY` alone is skipped. An
/// error names the line.
pub fn parse_env_file(text: &str) -> Result<Vec<(String, String)>, (usize, String)> {
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").map(str::trim_start).unwrap_or(line);
        let Some((key, value)) = line.split_once('=') else { continue };
        let key = key.trim();
        if key.is_empty() || key.contains(char::is_whitespace) {
            return Err((i + 1, format!("`{key}` is not a variable name")));
        }
        let value = value.trim_start();
        let value = if let Some(v) = value.strip_prefix('\'') {
            v.split_once('\'').map(|(v, _)| v.to_owned()).ok_or((i + 1, "a single quote without its end".to_owned()))?
        } else if let Some(v) = value.strip_prefix('"') {
            let mut s = String::new();
            let mut chars = v.chars();
            let mut closed = false;
            while let Some(c) = chars.next() {
                match c {
                    '"' => {
                        closed = true;
                        break;
                    }
                    '\\' => match chars.next() {
                        Some('n') => s.push('\n'),
                        Some('t') => s.push('\t'),
                        Some(other) => s.push(other),
                        None => s.push('\\'),
                    },
                    c => s.push(c),
                }
            }
            if !closed {
                return Err((i + 1, "a double quote without its end".into()));
            }
            s
        } else {
            value.split(" #").next().unwrap_or_default().trim_end().to_owned()
        };
        out.push((key.to_owned(), value));
    }
    Ok(out)
}

/// Splits a string `command`/`entrypoint` into words as a POSIX shell would, without running
/// a shell: blanks separate words, single quotes keep everything, double quotes keep all
/// but `\"` and `\\`, a backslash outside quotes keeps the next character.
pub fn split_words(s: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut word: Option<String> = None;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => {
                if let Some(w) = word.take() {
                    words.push(w);
                }
            }
            '\'' => {
                let w = word.get_or_insert_with(String::new);
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => w.push(c),
                        None => return Err(format!("a single quote without its end in `{s}`")),
                    }
                }
            }
            '"' => {
                let w = word.get_or_insert_with(String::new);
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(c @ ('"' | '\\' | '$' | '`')) => w.push(c),
                            Some(c) => {
                                w.push('\\');
                                w.push(c);
                            }
                            None => return Err(format!("a double quote without its end in `{s}`")),
                        },
                        Some(c) => w.push(c),
                        None => return Err(format!("a double quote without its end in `{s}`")),
                    }
                }
            }
            '\\' => {
                if let Some(c) = chars.next() {
                    word.get_or_insert_with(String::new).push(c);
                }
            }
            c => word.get_or_insert_with(String::new).push(c),
        }
    }
    words.extend(word);
    Ok(words)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env() -> BTreeMap<String, String> {
        BTreeMap::from([("USER".into(), "alice".into()), ("EMPTY".into(), String::new())])
    }

    #[test]
    fn interpolation_follows_compose() {
        let env = env();
        let i = |s: &str| interpolate(s, &env);
        assert_eq!(i("$USER/${USER}/$$USER/${NOPE}").unwrap(), "alice/alice/$USER/");
        assert_eq!(i("${NOPE:-pg}:${EMPTY:-x}:${EMPTY-x}:${NOPE-y}").unwrap(), "pg:x::y");
        assert_eq!(i("${NOPE:-${USER}-db}").unwrap(), "alice-db");
        assert_eq!(i("${USER:+set}${NOPE:+set}${EMPTY+was}").unwrap(), "setwas");
        assert_eq!(i("cost: 5$").unwrap(), "cost: 5$");
        assert_eq!(
            i("${DB_PASSWORD:?set it in .env}").unwrap_err(),
            "variable DB_PASSWORD is required: set it in .env"
        );
        assert_eq!(i("${EMPTY?}").unwrap(), "");
        assert!(i("${USER").unwrap_err().contains("without its `}`"));
        assert!(i("${USER/x/y}").unwrap_err().contains("not a variable reference"));
    }

    #[test]
    fn env_files_parse_as_compose_reads_them() {
        let text = "# comment\nA=1\nexport B = two words # note\nC='single $x # kept'\nD=\"line\\nnext\"\nLONE\n\nE=\n";
        let got = parse_env_file(text).unwrap();
        let want = [("A", "1"), ("B", "two words"), ("C", "single $x # kept"), ("D", "line\nnext"), ("E", "")];
        assert_eq!(got, want.map(|(k, v)| (k.to_owned(), v.to_owned())));
        assert_eq!(parse_env_file("A=1\nB='open\n").unwrap_err().0, 2);
    }

    #[test]
    fn commands_split_into_words_without_a_shell() {
        assert_eq!(split_words("sleep infinity").unwrap(), ["sleep", "infinity"]);
        assert_eq!(
            split_words(r#"sh -c 'echo "$HOME"; exit 1' "a \"b\"" c\ d"#).unwrap(),
            ["sh", "-c", "echo \"$HOME\"; exit 1", "a \"b\"", "c d"]
        );
        assert_eq!(split_words("''").unwrap(), [""]);
        assert!(split_words("echo 'x").is_err());
    }
}
