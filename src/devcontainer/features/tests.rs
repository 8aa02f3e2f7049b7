use std::collections::BTreeMap;
use std::path::Path;

use super::build::{self, Users};
use super::fetch::challenge_params;
use super::*;

fn feature(id: &str, depends: &[&str], after: &[&str]) -> ResolvedFeature {
    ResolvedFeature {
        id: id.into(),
        dir: format!("/f/{id}").into(),
        digest: format!("sha256:{id}"),
        meta: FeatureMeta {
            id: id.into(),
            installs_after: after.iter().map(|s| s.to_string()).collect(),
            depends_on: depends.iter().map(|d| (d.to_string(), serde_json::json!({}))).collect(),
            ..Default::default()
        },
        options: BTreeMap::new(),
    }
}

fn order(fs: &[ResolvedFeature], over: &[&str]) -> Result<Vec<String>, String> {
    let over: Vec<String> = over.iter().map(|s| s.to_string()).collect();
    Ok(install_order(fs, &over)?.into_iter().map(|i| fs[i].id.clone()).collect())
}

#[test]
fn feature_references_are_classified() {
    let dc = Path::new("/r/.devcontainer");
    assert_eq!(classify("./go", dc).unwrap(), FeatureSource::Local { dir: "/r/.devcontainer/go".into() });
    assert_eq!(
        classify("ghcr.io/devcontainers/features/go:1", dc).unwrap(),
        FeatureSource::Oci(OciRef {
            registry: "ghcr.io".into(),
            repository: "devcontainers/features/go".into(),
            reference: "1".into()
        })
    );
    let FeatureSource::Oci(r) = classify("127.0.0.1:5000/f/node", dc).unwrap() else { panic!() };
    assert_eq!((r.reference.as_str(), r.base_url().as_str()), ("latest", "http://127.0.0.1:5000"));
    let d = format!("ghcr.io/a/b@sha256:{}", "0".repeat(64));
    let FeatureSource::Oci(r) = classify(&d, dc).unwrap() else { panic!() };
    assert_eq!(r.reference, format!("sha256:{}", "0".repeat(64)));
    assert_eq!(r.base_url(), "https://ghcr.io");
    assert_eq!(
        classify("https://x.example/f.tgz", dc).unwrap(),
        FeatureSource::Tarball { url: "https://x.example/f.tgz".into() }
    );
    for (bad, why) in [
        ("node", "legacy (v1) short id"),
        ("../up", "no `..`"),
        ("/abs", "relative to devcontainer.json"),
        ("ghcr.io/A/B:1", "is not an OCI reference"),
        ("nodots/x", "is not an OCI reference"),
    ] {
        let e = classify(bad, dc).unwrap_err();
        assert!(e.contains(why), "{bad}: {e}");
    }
}

#[test]
fn canonical_ids_drop_tags_and_digests() {
    assert_eq!(canonical_id("ghcr.io/x/go:1"), "ghcr.io/x/go");
    assert_eq!(canonical_id("ghcr.io/x/go@sha256:ab"), "ghcr.io/x/go");
    assert_eq!(canonical_id("localhost:5000/x/go"), "localhost:5000/x/go");
    assert_eq!(canonical_id("./a/"), "./a");
}

#[test]
fn options_become_install_sh_variables() {
    assert_eq!(option_env_name("version"), "VERSION");
    assert_eq!(option_env_name("installTools"), "INSTALLTOOLS");
    assert_eq!(option_env_name("dotnet-version"), "DOTNET_VERSION");
    assert_eq!(option_env_name("3d_x"), "_D_X");
    let mut f = feature("./a", &[], &[]);
    f.meta.options = BTreeMap::from([
        ("version".into(), OptionSpec { default: Some(serde_json::json!("latest")) }),
        ("install-tools".into(), OptionSpec { default: Some(serde_json::json!(true)) }),
        ("noDefault".into(), OptionSpec { default: None }),
    ]);
    f.options = user_options("./a", &serde_json::json!({"version": 20, "extra": "x"})).unwrap();
    assert_eq!(
        f.option_env(),
        BTreeMap::from([
            ("VERSION".into(), "20".into()),
            ("INSTALL_TOOLS".into(), "true".into()),
            ("EXTRA".into(), "x".into()),
        ])
    );
    assert_eq!(user_options("g", &serde_json::json!("1.21")).unwrap()["version"], "1.21");
    assert!(user_options("g", &serde_json::json!(true)).unwrap().is_empty());
    let e = user_options("g", &serde_json::json!({"a": [1]})).unwrap_err();
    assert!(e.contains("features.g.a"), "{e}");
}

#[test]
fn install_order_follows_depends_on_installs_after_and_the_override() {
    let fs = [feature("./c", &["./a"], &[]), feature("./b", &[], &["./c"]), feature("./a", &[], &[])];
    assert_eq!(order(&fs, &[]).unwrap(), ["./a", "./c", "./b"]);
    // installsAfter a feature that is absent is no constraint.
    let fs = [feature("./b", &[], &["./zzz"]), feature("./a", &[], &[])];
    assert_eq!(order(&fs, &[]).unwrap(), ["./a", "./b"]);
    // The override moves features forward within what the dependencies allow.
    let fs = [feature("./a", &[], &[]), feature("./b", &[], &[]), feature("./c", &[], &[])];
    assert_eq!(order(&fs, &["./c", "./b"]).unwrap(), ["./c", "./b", "./a"]);
    let fs = [feature("./a", &[], &[]), feature("./b", &["./a"], &[])];
    assert_eq!(order(&fs, &["./b"]).unwrap(), ["./a", "./b"], "a dependency still comes first");
    // Tags do not matter when matching.
    let fs = [feature("ghcr.io/x/b:1", &["ghcr.io/x/a"], &[]), feature("ghcr.io/x/a:2", &[], &[])];
    assert_eq!(order(&fs, &[]).unwrap(), ["ghcr.io/x/a:2", "ghcr.io/x/b:1"]);

    let fs = [feature("./a", &["./b"], &[]), feature("./b", &[], &["./a"])];
    let e = order(&fs, &[]).unwrap_err();
    assert!(e.contains("in a circle") && e.contains("./a") && e.contains("./b"), "{e}");
    let e = order(&fs[..1], &[]).unwrap_err();
    assert!(e.contains("feature `./a` depends on `./b`, which is not among the features"), "{e}");
    let e = order(&fs[..1], &["./nope"]).unwrap_err();
    assert!(e.contains("overrideFeatureInstallOrder names `./nope`"), "{e}");
}

#[test]
fn the_containerfile_installs_in_order_as_root_and_returns_to_the_images_user() {
    let mut a = feature("./a", &[], &[]);
    a.meta.container_env =
        BTreeMap::from([("PATH".into(), "/opt/a/bin:${PATH}".into()), ("Q".into(), "say \"hi\"".into())]);
    let b = feature("./b", &[], &[]);
    let cf = build::containerfile("localhost/base:1", &[&a, &b], Some("vscode")).unwrap();
    assert_eq!(
        cf,
        "FROM localhost/base:1\nUSER root\nCOPY . /tmp/devaipod-features/\n\
         ENV PATH=\"/opt/a/bin:${PATH}\"\nENV Q=\"say \\\"hi\\\"\"\n\
         RUN sh /tmp/devaipod-features/install-feature.sh /tmp/devaipod-features/0\n\
         RUN sh /tmp/devaipod-features/install-feature.sh /tmp/devaipod-features/1\n\
         RUN rm -rf /tmp/devaipod-features\nUSER vscode\n"
    );
    a.meta.container_env = BTreeMap::from([("BAD NAME".into(), "x".into())]);
    assert!(build::containerfile("b", &[&a], None).unwrap_err().contains("`BAD NAME`"));
}

#[test]
fn env_files_carry_the_users_and_options() {
    let users = Users::of(None, Some("dev"), Some("vscode"));
    assert_eq!(users, Users { container_user: "vscode".into(), remote_user: "dev".into() });
    assert_eq!(Users::of(None, None, Some("")), Users { container_user: "root".into(), remote_user: "root".into() });
    let mut f = feature("./a", &[], &[]);
    f.options = BTreeMap::from([("version".into(), "1 $(x)".into())]);
    assert_eq!(build::env_file(&f, &users).unwrap(), "VERSION=1 $(x)\n_CONTAINER_USER=vscode\n_REMOTE_USER=dev\n");
    f.options = BTreeMap::from([("v".into(), "a\nb".into())]);
    assert!(build::env_file(&f, &users).unwrap_err().contains("line break"));
}

#[test]
fn the_derived_tag_changes_with_anything_that_goes_into_the_image() {
    let users = Users::of(None, None, None);
    let a = feature("./a", &[], &[]);
    let t = |base_id: &str, f: &ResolvedFeature| build::derive("i1", "base", base_id, None, &users, &[f]).unwrap().tag;
    let first = t("id1", &a);
    assert!(first.starts_with("localhost/devaipod-features-i1:"), "{first}");
    assert_eq!(first, t("id1", &a), "same inputs, same tag");
    assert_ne!(first, t("id2", &a), "another base image");
    let mut changed = a.clone();
    changed.digest = "sha256:other".into();
    assert_ne!(first, t("id1", &changed), "another feature content");
    let mut opt = a.clone();
    opt.options.insert("v".into(), "2".into());
    assert_ne!(first, t("id1", &opt), "other options");
}

#[test]
fn bearer_challenges_are_read() {
    let p = challenge_params(
        r#"realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull""#,
    );
    assert_eq!(p["realm"], "https://auth.example/token");
    assert_eq!(p["service"], "registry.example");
    assert_eq!(p["scope"], "repository:a/b:pull");
}

#[test]
fn feature_metadata_parses_with_its_lifecycle_and_privileges() {
    let m = FeatureMeta::parse(
        r#"{ // JSONC
        "id": "dind", "version": "1.0.0",
        "options": { "version": { "type": "string", "default": "latest" }, "moby": { "type": "boolean", "default": true } },
        "containerEnv": { "DOCKER_BUILDKIT": 1 },
        "privileged": true, "init": true, "entrypoint": "/usr/local/share/docker-init.sh",
        "mounts": [{ "source": "dind-var-lib-docker-${devcontainerId}", "target": "/var/lib/docker", "type": "volume" }],
        "installsAfter": ["ghcr.io/devcontainers/features/common-utils"],
        "dependsOn": { "./x": {} },
        "postCreateCommand": "echo hi",
    }"#,
        Path::new("/f/devcontainer-feature.json"),
    )
    .unwrap();
    assert_eq!(m.container_env["DOCKER_BUILDKIT"], "1");
    assert_eq!(m.privileged, Some(true));
    assert_eq!(m.options["moby"].default, Some(serde_json::json!(true)));
    assert!(m.post_create_command.is_some());
    let e = FeatureMeta::parse(r#"{"id": "x", "capAdd": "SYS_PTRACE"}"#, Path::new("/f/devcontainer-feature.json"))
        .unwrap_err();
    assert!(e.contains("field `capAdd`"), "{e}");
}
