//! Finding a repository's devcontainer.json: `.devcontainer/devcontainer.json`,
//! `.devcontainer.json`, or `.devcontainer/<name>/devcontainer.json` chosen by name.

use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum DiscoverError {
    #[error(
        "{root} has several devcontainer configurations ({}); choose one with --devcontainer <name>",
        .choices.join(", ")
    )]
    Ambiguous { root: PathBuf, choices: Vec<String> },
    #[error(
        "{root} has no devcontainer configuration named `{name}` (.devcontainer/{name}/devcontainer.json); {}",
        if .choices.is_empty() { "it has none in subfolders".to_owned() } else { format!("choose one of: {}", .choices.join(", ")) }
    )]
    NoSuchChoice { root: PathBuf, name: String, choices: Vec<String> },
}

/// Finds the devcontainer.json of the repository at `root`. `choice` names a
/// `.devcontainer/<name>/` subfolder. `Ok(None)`: the repository has none.
pub fn discover(root: &Path, choice: Option<&str>) -> Result<Option<PathBuf>, DiscoverError> {
    let folder = root.join(".devcontainer");
    let choices = subfolder_choices(&folder);
    if let Some(name) = choice {
        if choices.iter().any(|c| c == name) {
            return Ok(Some(folder.join(name).join("devcontainer.json")));
        }
        return Err(DiscoverError::NoSuchChoice { root: root.to_owned(), name: name.to_owned(), choices });
    }
    for candidate in [folder.join("devcontainer.json"), root.join(".devcontainer.json")] {
        if candidate.is_file() {
            return Ok(Some(candidate));
        }
    }
    match choices.len() {
        0 => Ok(None),
        1 => Ok(Some(folder.join(&choices[0]).join("devcontainer.json"))),
        _ => Err(DiscoverError::Ambiguous { root: root.to_owned(), choices }),
    }
}

/// Names of `.devcontainer/<name>/` folders that hold a devcontainer.json, sorted.
fn subfolder_choices(folder: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(folder) else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .filter_map(Result::ok)
        .filter(|e| e.path().join("devcontainer.json").is_file())
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    names.sort();
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    fn touch(p: &Path) {
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, "{}").unwrap();
    }

    #[test]
    fn finds_each_documented_location() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        assert_eq!(discover(r, None), Ok(None));

        touch(&r.join(".devcontainer/python/devcontainer.json"));
        assert_eq!(discover(r, None), Ok(Some(r.join(".devcontainer/python/devcontainer.json"))));

        touch(&r.join(".devcontainer/node/devcontainer.json"));
        let e = discover(r, None).unwrap_err().to_string();
        assert!(
            e.contains("several devcontainer configurations (node, python); choose one with --devcontainer <name>"),
            "{e}"
        );
        assert_eq!(discover(r, Some("node")), Ok(Some(r.join(".devcontainer/node/devcontainer.json"))));
        let e = discover(r, Some("rust")).unwrap_err().to_string();
        assert!(
            e.contains("no devcontainer configuration named `rust`") && e.contains("choose one of: node, python"),
            "{e}"
        );

        touch(&r.join(".devcontainer.json"));
        assert_eq!(discover(r, None), Ok(Some(r.join(".devcontainer.json"))));
        touch(&r.join(".devcontainer/devcontainer.json"));
        assert_eq!(discover(r, None), Ok(Some(r.join(".devcontainer/devcontainer.json"))));
    }
}
