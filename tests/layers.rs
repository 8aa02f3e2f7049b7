//! The dependency direction of docs/ARCHITECTURE.md, checked against the code: a module
//! uses only modules of lower layers (never one of its own layer or above), so there is no
//! import cycle and the policy layer (`core`) sits below every adapter. The table here and
//! the one in ARCHITECTURE.md are the same; change both together.

use std::collections::BTreeMap;
use std::path::Path;

/// Layers, lowest first. A module may use any module of a lower layer.
const LAYERS: &[&[&str]] = &[
    &["encode", "store", "config"],
    &["devcontainer", "git", "agent", "github"],
    &["pods"],
    &["core"],
    &["client", "egress"],
    &["gator", "mcp"],
    &["web", "ssh"],
    &["daemon"],
    &["cli"],
];

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|l| l.contains(&module))
}

/// `crate::<module>` references in a file's code (comments skipped).
fn uses(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for line in text.lines() {
        let code = line.split("//").next().unwrap_or("");
        let mut rest = code;
        while let Some(i) = rest.find("crate::") {
            rest = &rest[i + "crate::".len()..];
            let name: String = rest.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
            if !name.is_empty() {
                out.push(name);
            }
        }
    }
    out
}

fn walk(dir: &Path, files: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let p = entry.unwrap().path();
        if p.is_dir() {
            walk(&p, files);
        } else if p.extension().is_some_and(|e| e == "rs") {
            files.push(p);
        }
    }
}

#[test]
fn modules_use_only_lower_layers() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    walk(&src, &mut files);
    let mut wrong: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut seen_modules = std::collections::BTreeSet::new();
    for file in files {
        let rel = file.strip_prefix(&src).unwrap();
        let first = rel.components().next().unwrap().as_os_str().to_string_lossy().into_owned();
        let module = first.trim_end_matches(".rs").to_owned();
        if module == "lib" || module == "main" {
            continue;
        }
        seen_modules.insert(module.clone());
        let Some(own) = layer_of(&module) else {
            panic!("module `{module}` is in no layer: add it to LAYERS here and in docs/ARCHITECTURE.md");
        };
        let text = std::fs::read_to_string(&file).unwrap();
        assert!(
            !text.lines().any(|l| l.split("//").next().unwrap_or("").contains("crate::{")),
            "{}: a grouped `crate::{{…}}` import hides which modules it uses from this check; write one `use` per module",
            rel.display()
        );
        for used in uses(&text) {
            if used == module {
                continue;
            }
            let Some(theirs) = layer_of(&used) else { continue };
            if theirs >= own {
                wrong
                    .entry(format!("{module} (layer {own})"))
                    .or_default()
                    .push(format!("{} uses {used} (layer {theirs})", rel.display()));
            }
        }
    }
    assert!(wrong.is_empty(), "uses against the dependency direction:\n{wrong:#?}");
    // Every layer names modules that exist.
    for m in LAYERS.iter().flat_map(|l| l.iter()) {
        assert!(seen_modules.contains(*m), "LAYERS names `{m}`, which is not a module");
    }
}

#[test]
fn the_scanner_sees_uses_and_skips_comments() {
    assert_eq!(uses("use crate::core::Core; // crate::web"), ["core"]);
    assert_eq!(uses("let x = crate::pods::plan::X + crate::encode::enc(y);"), ["pods", "encode"]);
    assert!(uses("//! see crate::gator").is_empty());
}
