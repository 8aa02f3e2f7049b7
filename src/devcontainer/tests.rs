use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::*;

fn host() -> HostContext {
    HostContext {
        env: BTreeMap::from([("USER".to_owned(), "alice".to_owned())]),
        local_workspace_folder: "/src/proj".into(),
        devcontainer_id: "0123abcd".into(),
    }
}

fn parse_str(text: &str) -> Result<DevContainer, DevContainerError> {
    parse(text, Path::new("/src/proj/.devcontainer/devcontainer.json"), &host())
}

pub(crate) fn conformance_root() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/conformance");
    assert!(
        root.is_dir(),
        "the conformance files are missing: expected {} (the shared folder beside the checkout)",
        root.display()
    );
    root
}

pub(crate) fn conformance_files(root: &Path) -> Vec<String> {
    fn walk(dir: &Path, root: &Path, out: &mut Vec<String>) {
        for e in std::fs::read_dir(dir).unwrap().map(Result::unwrap) {
            let p = e.path();
            if p.is_dir() {
                walk(&p, root, out);
            } else {
                let name = e.file_name().into_string().unwrap();
                if name.starts_with("devcontainer") && name.ends_with(".json") {
                    out.push(p.strip_prefix(root).unwrap().to_string_lossy().into_owned());
                }
            }
        }
    }
    let mut out = Vec::new();
    walk(root, root, &mut out);
    out.sort();
    out
}

/// Every devcontainer*.json of the shared conformance set, with what it describes.
/// None of them is invalid; a file added there must be added here.
const CONFORMANCE: &[(&str, &str)] = &[
    ("devcontainer-cli/configs/compose-Dockerfile-alpine/.devcontainer/devcontainer.json", "compose"),
    ("devcontainer-cli/configs/compose-Dockerfile-with-features/.devcontainer/devcontainer.json", "compose"),
    ("devcontainer-cli/configs/compose-Dockerfile-with-target/.devcontainer/devcontainer.json", "compose"),
    ("devcontainer-cli/configs/compose-Dockerfile-without-features/.devcontainer/devcontainer.json", "compose"),
    ("devcontainer-cli/configs/compose-image-with-features/.devcontainer/devcontainer.json", "compose"),
    ("devcontainer-cli/configs/compose-image-with-mounts/.devcontainer/devcontainer.json", "compose"),
    ("devcontainer-cli/configs/compose-image-without-features-minimal/.devcontainer/devcontainer.json", "compose"),
    ("devcontainer-cli/configs/compose-image-without-features/.devcontainer/devcontainer.json", "compose"),
    ("devcontainer-cli/configs/compose-with-name-and-custom-yaml/.devcontainer/devcontainer.json", "compose"),
    ("devcontainer-cli/configs/compose-with-name-using-env-var/.devcontainer/devcontainer.json", "compose"),
    ("devcontainer-cli/configs/compose-with-name/.devcontainer/devcontainer.json", "compose"),
    ("devcontainer-cli/configs/compose-without-name/.devcontainer/devcontainer.json", "compose"),
    ("devcontainer-cli/configs/disallowed-features/.devcontainer/allowed/devcontainer.json", "image"),
    ("devcontainer-cli/configs/disallowed-features/.devcontainer/disallowed/devcontainer.json", "image"),
    ("devcontainer-cli/configs/dockerfile-without-features/.devcontainer/subfolder/devcontainer.json", "build"),
    ("devcontainer-cli/configs/image-containerEnv-issue/.devcontainer/devcontainer.json", "compose"),
    ("devcontainer-cli/configs/image-metadata-containerEnv/.devcontainer/devcontainer.json", "image"),
    ("devcontainer-cli/configs/image-metadata/.devcontainer/devcontainer.json", "image"),
    ("devcontainer-cli/configs/image-with-mounts/.devcontainer/devcontainer.json", "image"),
    ("devcontainer-cli/configs/set-up-with-config/devcontainer.json", "none"),
    (
        "devcontainer-cli/container-features/configs/dockerfile-with-v2-local-features-config-inside-dev-container-folder/.devcontainer/devcontainer.json",
        "build",
    ),
    (
        "devcontainer-cli/container-features/configs/feature-dependencies/dependsOn-and-installsAfter/local-simple/.devcontainer/devcontainer.json",
        "image",
    ),
    (
        "devcontainer-cli/container-features/configs/feature-dependencies/dependsOn/invalid-circular/.devcontainer/devcontainer.json",
        "image",
    ),
    (
        "devcontainer-cli/container-features/configs/feature-dependencies/dependsOn/local-simple/.devcontainer/devcontainer.json",
        "image",
    ),
    (
        "devcontainer-cli/container-features/configs/feature-dependencies/dependsOn/local-with-options/.devcontainer/devcontainer.json",
        "image",
    ),
    (
        "devcontainer-cli/container-features/configs/feature-dependencies/dependsOn/oci-ab/.devcontainer/devcontainer.json",
        "image",
    ),
    (
        "devcontainer-cli/container-features/configs/feature-dependencies/dependsOn/oci-fgh/.devcontainer/devcontainer.json",
        "image",
    ),
    (
        "devcontainer-cli/container-features/configs/feature-dependencies/dependsOn/oci-ij/.devcontainer/devcontainer.json",
        "image",
    ),
    (
        "devcontainer-cli/container-features/configs/feature-dependencies/dependsOn/tgz-ab/.devcontainer/devcontainer.json",
        "image",
    ),
    (
        "devcontainer-cli/container-features/configs/feature-dependencies/installsAfter/invalid-circular/.devcontainer/devcontainer.json",
        "image",
    ),
    (
        "devcontainer-cli/container-features/configs/feature-dependencies/installsAfter/local-simple/.devcontainer/devcontainer.json",
        "image",
    ),
    (
        "devcontainer-cli/container-features/configs/feature-dependencies/overrideFeatureInstallOrder/image-with-v1-features-with-overrideFeatureInstallOrder/.devcontainer/devcontainer.json",
        "image",
    ),
    (
        "devcontainer-cli/container-features/configs/feature-dependencies/overrideFeatureInstallOrder/image-with-v2-features-with-overrideFeatureInstallOrder/.devcontainer/devcontainer.json",
        "image",
    ),
    (
        "devcontainer-cli/container-features/configs/feature-dependencies/overrideFeatureInstallOrder/local-intermediate/.devcontainer/devcontainer.json",
        "image",
    ),
    (
        "devcontainer-cli/container-features/configs/feature-dependencies/overrideFeatureInstallOrder/local-roundPriority/.devcontainer/devcontainer.json",
        "image",
    ),
    (
        "devcontainer-cli/container-features/configs/feature-dependencies/overrideFeatureInstallOrder/local-simple/.devcontainer/devcontainer.json",
        "image",
    ),
    (
        "devcontainer-cli/container-features/configs/feature-dependencies/overrideFeatureInstallOrder/mixed/.devcontainer/devcontainer.json",
        "image",
    ),
    ("devcontainer-cli/container-features/configs/lifecycle-hooks-advanced/.devcontainer/devcontainer.json", "build"),
    (
        "devcontainer-cli/container-features/configs/lifecycle-hooks-inline-commands/.devcontainer/devcontainer.json",
        "build",
    ),
    (
        "devcontainer-cli/container-features/configs/lifecycle-hooks-resume-existing-container/.devcontainer/devcontainer.json",
        "build",
    ),
    (
        "devcontainer-cli/container-features/configs/lockfile-generate-from-empty-file-frozen/.devcontainer/devcontainer.json",
        "image",
    ),
    (
        "devcontainer-cli/container-features/configs/lockfile-generate-from-empty-file/.devcontainer/devcontainer.json",
        "image",
    ),
];

fn kind(c: &DevContainer) -> &'static str {
    if c.docker_compose_file.is_some() {
        "compose"
    } else if c.build.is_some() || c.docker_file.is_some() {
        "build"
    } else if c.image.is_some() {
        "image"
    } else {
        "none"
    }
}

#[test]
fn conformance_table_covers_every_shared_file_and_each_parses() {
    let root = conformance_root();
    let files = conformance_files(&root);
    let table: Vec<String> = CONFORMANCE.iter().map(|(p, _)| p.to_string()).collect();
    assert_eq!(files, table, "the table must list exactly the shared files");
    for (rel, want) in CONFORMANCE {
        let path = root.join(rel);
        let loaded = load(&path, &host()).unwrap_or_else(|e| panic!("{rel}: {e}"));
        assert_eq!(kind(&loaded.config), *want, "{rel}");
    }
}

#[test]
fn conformance_details_are_kept() {
    let root = conformance_root();
    let get = |rel: &str| load(&root.join("devcontainer-cli").join(rel), &host()).unwrap().config;

    let c = get("container-features/configs/lifecycle-hooks-advanced/.devcontainer/devcontainer.json");
    let LifecycleCommand::Parallel(p) = c.post_create_command.unwrap() else { panic!("parallel form") };
    assert_eq!(p["parallel1"].argv(), ["/bin/sh", "-c", ".devcontainer/helper_script.sh parallel_postCreateCommand_1"]);
    assert_eq!(p["parallel2"].argv(), [".devcontainer/helper_script.sh", "parallel_postCreateCommand_2"]);
    assert_eq!(c.features.len(), 2);

    let c = get("container-features/configs/lifecycle-hooks-inline-commands/.devcontainer/devcontainer.json");
    assert_eq!(
        c.post_create_command.unwrap().commands(),
        [(
            None,
            vec![".devcontainer/createMarker.sh".to_owned(), "devContainer.postCreateCommand.testMarker".to_owned()]
        )]
    );

    let c = get("configs/image-with-mounts/.devcontainer/devcontainer.json");
    let m = c.mounts[0].parse().unwrap();
    assert_eq!((m.kind, m.source, m.target.as_str()), (MountKind::Volume, None, "/home/test_devcontainer_config"));

    let c = get("configs/image-containerEnv-issue/.devcontainer/devcontainer.json");
    assert_eq!(c.container_env["VAR_WITH_BACK_SLASH"], "value with \\back slash");
    assert_eq!(
        c.container_env["ROSCONSOLE_FORMAT"],
        "[$${severity}] [$${walltime:%Y-%m-%d %H:%M:%S}] [$${node}]: $${message}"
    );

    let c = get("configs/set-up-with-config/devcontainer.json");
    assert_eq!(
        c.remote_env["TEST_RE"].as_deref(),
        Some("${containerEnv:TEST_CE}"),
        "containerEnv waits for the container"
    );

    let c = get("configs/compose-Dockerfile-alpine/.devcontainer/devcontainer.json");
    assert_eq!(c.docker_compose_file, Some(OneOrMany::One("docker-compose.yml".into())));
    assert_eq!(c.service.as_deref(), Some("test"));
    assert_eq!(c.remote_user.as_deref(), Some("bar"));
}

#[test]
fn jsonc_comments_trailing_commas_and_substitution() {
    let c = parse_str(
        r#"{
        // a comment
        "image": "localhost/x:${localEnv:USER}", /* another */
        "workspaceFolder": "/work/${localWorkspaceFolderBasename}",
        "containerEnv": { "WS": "${containerWorkspaceFolder}", "ID": "${devcontainerId}", "D": "${localEnv:NOPE:dflt}", },
        "mounts": ["source=/tmp,target=/host-tmp,type=bind,readonly", {"type": "volume", "source": "cache", "target": "/cache"}],
        "forwardPorts": [3000, "localhost:8080", "db:5432"],
        "initializeCommand": ["echo", "hi"],
        "onCreateCommand": "make setup",
        "build": { "dockerfile": "Containerfile", "context": "..", "args": { "V": "1" }, "target": "dev" },
        "capAdd": ["SYS_PTRACE"], "securityOpt": ["seccomp=unconfined"], "privileged": false,
        "remoteEnv": { "UNSET": null, "P": "${containerEnv:PATH}:/x" },
        "customizations": { "vscode": { "extensions": ["a.b"] } },
    }"#,
    )
    .unwrap();
    assert_eq!(c.image.as_deref(), Some("localhost/x:alice"));
    assert_eq!(c.workspace_folder.as_deref(), Some("/work/proj"));
    assert_eq!(c.container_env["WS"], "/work/proj");
    assert_eq!(c.container_env["ID"], "0123abcd");
    assert_eq!(c.container_env["D"], "dflt");
    let m: Vec<Mount> = c.mounts.iter().map(|m| m.parse().unwrap()).collect();
    assert_eq!(
        m[0],
        Mount { kind: MountKind::Bind, source: Some("/tmp".into()), target: "/host-tmp".into(), readonly: true }
    );
    assert_eq!(m[1].source.as_deref(), Some("cache"));
    let ports: Vec<_> = c.forward_ports.iter().map(PortSpec::local_port).collect();
    assert_eq!(ports, [Some(3000), Some(8080), None]);
    let b = c.build.unwrap();
    assert_eq!(
        (b.dockerfile.as_deref(), b.context.as_deref(), b.target.as_deref()),
        (Some("Containerfile"), Some(".."), Some("dev"))
    );
    assert_eq!(c.remote_env["UNSET"], None);
    assert_eq!(c.remote_env["P"].as_deref(), Some("${containerEnv:PATH}:/x"));
}

#[test]
fn default_workspace_folder_is_under_workspaces() {
    let c = parse_str(r#"{"containerEnv": {"W": "${containerWorkspaceFolder}"}}"#).unwrap();
    assert_eq!(c.container_env["W"], "/workspaces/proj");
}

#[test]
fn errors_name_file_line_and_field() {
    let file = "/src/proj/.devcontainer/devcontainer.json";
    for (text, want) in [
        ("{\n  \"image\": \"x\",\n  \"image2\" \"y\"\n}", format!("{file}:3:")),
        ("{\n \"image\": 42\n}", format!("{file}:2: field `image`: invalid type: integer `42`, expected a string")),
        (
            "{\n \"postCreateCommand\": 7\n}",
            format!(
                "{file}:2: field `postCreateCommand`: expected a string, an array of strings, or an object of named commands"
            ),
        ),
        (
            "{\n \"mounts\": [\n  \"target=/a\",\n  \"type=bind,target=/b\"\n ]\n}",
            format!("{file}:4: field `mounts[1]`: bind mount to `/b` has no source"),
        ),
        (
            "{\n \"mounts\": [{\"type\": \"nfs\", \"target\": \"/x\"}]\n}",
            format!("{file}:2: field `mounts[0]`: expected a mount string"),
        ),
        (
            "{\"runArgs\": [\n \"--init\",\n \"--pid=host\"]}",
            format!("{file}:3: field `runArgs[1]`: runArgs `--pid=host` is not allowed: host namespaces"),
        ),
        (
            "{\n\n \"workspaceFolder\": \"rel\"}",
            format!("{file}:3: field `workspaceFolder`: `rel` must be an absolute path"),
        ),
        ("{\"forwardPorts\": [\"nope\"]}", format!("{file}:1: field `forwardPorts[0]`: `nope` is not a port number")),
        ("{\"forwardPorts\": [70000]}", format!("{file}:1: field `forwardPorts[0]`: expected a port number")),
        (
            "{\"build\": {\"args\": {\n \"A\": [1]}}}",
            format!("{file}:2: field `build.args.A`: invalid type: sequence, expected a string, a number or a boolean"),
        ),
        (
            "{\"containerEnv\": {\"A\": null}}",
            format!("{file}:1: field `containerEnv.A`: invalid type: null, expected a string, a number or a boolean"),
        ),
        ("[1]", format!("{file}:1: field `(top level)`: a devcontainer.json must hold one JSON object")),
        (
            "{\"onCreateCommand\": []}",
            format!("{file}:1: field `onCreateCommand`: an empty command array runs nothing"),
        ),
        (
            "{\"initializeCommand\": {\"x\": []}}",
            format!("{file}:1: field `initializeCommand`: an empty command array runs nothing"),
        ),
        (
            "{\"runArgs\": [\"--shm-size=99999999999g\"]}",
            format!("{file}:1: field `runArgs[0]`: runArgs --shm-size `99999999999g` is too large"),
        ),
        (
            "{\"securityOpt\": [\"systempaths=unconfined\"]}",
            format!("{file}:1: field `securityOpt`: security option `systempaths=unconfined` is not supported"),
        ),
    ] {
        let got = parse_str(text).unwrap_err().to_string();
        assert!(got.starts_with(&want), "input {text:?}\n  got:  {got}\n  want: {want}…");
    }
}

/// Real repositories write `"LLVM_VERSION": 20`: the reference CLI takes numbers and
/// booleans as their JSON text.
#[test]
fn numbers_and_booleans_become_strings() {
    let c = parse_str(
        r#"{
        "build": { "dockerfile": "Dockerfile", "args": { "LLVM_VERSION": 20, "DEBUG": false, "RATIO": 1.5, "S": "x" } },
        "containerEnv": { "PORT": 8080, "CI": true },
        "remoteEnv": { "N": -3, "GONE": null }
    }"#,
    )
    .unwrap();
    let args = c.build.unwrap().args;
    assert_eq!(
        args,
        BTreeMap::from([
            ("LLVM_VERSION".to_owned(), "20".to_owned()),
            ("DEBUG".to_owned(), "false".to_owned()),
            ("RATIO".to_owned(), "1.5".to_owned()),
            ("S".to_owned(), "x".to_owned()),
        ])
    );
    assert_eq!(c.container_env["PORT"], "8080");
    assert_eq!(c.container_env["CI"], "true");
    assert_eq!(c.remote_env["N"].as_deref(), Some("-3"));
    assert_eq!(c.remote_env["GONE"], None);
}
