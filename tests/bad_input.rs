//! Each bad input gives its own clear error and leaves nothing behind.

mod common;

use common::*;

#[test]
fn bad_sources_say_what_is_wrong() {
    let env = TestEnv::new("");
    let e = env.fails(&["up", "not/here/either", "--dry-run"]);
    assert!(
        e.contains(&format!("{}/not/here/either does not exist", std::env::current_dir().unwrap().display())),
        "relative paths are made absolute: {e}"
    );
    let e = env.fails(&["up", "/definitely/not/here"]);
    assert!(e.contains("/definitely/not/here does not exist: give the path of a git repository or a git URL"), "{e}");

    let plain = env.dir.path().join("plain");
    std::fs::create_dir(&plain).unwrap();
    let e = env.fails(&["up", plain.to_str().unwrap(), "--dry-run"]);
    assert!(e.contains("is not a git repository: run `git init`"), "{e}");

    let e = env.fails(&["up", "file:///definitely/not/a/repo.git", "--dry-run"]);
    assert!(e.contains("cannot clone file:///definitely/not/a/repo.git:"), "{e}");

    let e = env.fails(&["up", env.dir.path().to_str().unwrap(), "--name", "Bad_Name", "--dry-run"]);
    assert!(e.contains("`Bad_Name` is not a valid workspace name"), "{e}");
}

#[test]
fn malformed_devcontainer_json_names_file_and_line() {
    let env = TestEnv::new("");
    let repo = fixture_repo(
        env.dir.path(),
        "broken",
        &[(
            ".devcontainer/devcontainer.json",
            "{\n  \"image\": \"x\",\n  \"mounts\": [\n    \"type=bind,target=/x\"\n  ]\n}\n",
        )],
    );
    let e = env.fails(&["up", repo.to_str().unwrap(), "--dry-run"]);
    assert!(
        e.contains(".devcontainer/devcontainer.json:4: field `mounts[0]`: bind mount to `/x` has no source"),
        "{e}"
    );

    let repo = fixture_repo(
        env.dir.path(),
        "syntax",
        &[(".devcontainer.json", "{\n  \"image\": \"x\"\n  \"runArgs\": [,]\n}\n")],
    );
    let e = env.fails(&["up", repo.to_str().unwrap(), "--dry-run"]);
    assert!(e.contains(".devcontainer.json:3:"), "{e}");

    // Compose: a missing file is named; a refused key names the file, its line and the key.
    let repo = fixture_repo(
        env.dir.path(),
        "compose",
        &[(".devcontainer.json", r#"{"dockerComposeFile": "c.yml", "service": "a"}"#)],
    );
    let e = env.fails(&["up", repo.to_str().unwrap(), "--dry-run"]);
    assert!(e.contains("cannot read ") && e.contains("/compose/c.yml: No such file or directory"), "{e}");
    let repo = fixture_repo(
        env.dir.path(),
        "compose-host",
        &[
            (".devcontainer.json", r#"{"dockerComposeFile": "c.yml", "service": "a"}"#),
            ("c.yml", "services:\n  a:\n    image: localhost/devaipod-base:latest\n    network_mode: host\n"),
        ],
    );
    let e = env.fails(&["up", repo.to_str().unwrap(), "--dry-run"]);
    assert!(e.contains("/compose-host/c.yml:4: `services.a.network_mode`: `host` would put the service"), "{e}");
    let repo = fixture_repo(
        env.dir.path(),
        "compose-service",
        &[
            (".devcontainer.json", "{\n  \"dockerComposeFile\": \"c.yml\",\n  \"service\": \"web\"\n}\n"),
            ("c.yml", "services:\n  a:\n    image: x\n"),
        ],
    );
    let e = env.fails(&["up", repo.to_str().unwrap(), "--dry-run"]);
    assert!(
        e.contains(".devcontainer.json:3: field `service`: `web` is not a service of the compose project (it has: a)"),
        "{e}"
    );
}

#[test]
fn bad_config_names_file_line_and_key() {
    let env = TestEnv::new("[env]\nallowlist = [\"OK\"]\nbogus = true\n");
    let e = env.fails(&["list"]);
    assert!(e.contains(&format!("{}:3:1: env.bogus: unknown field `bogus`", env.config.display())), "{e}");
    let e = TestEnv::new("").with_env("DEVAIPOD_CONFIG", "/no/such/devaipod.toml").fails(&["list"]);
    assert!(e.contains("cannot read config file /no/such/devaipod.toml"), "{e}");
}

#[test]
fn podman_not_running_says_how_to_start_it() {
    let env = TestEnv::new("").with_env("CONTAINER_HOST", "unix:///tmp/devaipod-no-such.sock");
    let repo = fixture_repo(env.dir.path(), "r", &[]);
    for args in [vec!["up", repo.to_str().unwrap()], vec!["list"]] {
        let e = env.fails(&args);
        assert!(e.contains("cannot reach podman at /tmp/devaipod-no-such.sock"), "{e}");
        // The hint fits where the socket came from (here CONTAINER_HOST).
        assert!(
            e.contains("CONTAINER_HOST points at unix:///tmp/devaipod-no-such.sock: start podman's API service there"),
            "{e}"
        );
    }
}

#[test]
fn engine_side_errors_and_failed_up_leave_nothing_behind() {
    if !podman_available() {
        return;
    }
    let env = TestEnv::new("");
    let repo = fixture_repo(env.dir.path(), "r", &[]);
    let path = repo.to_str().unwrap();

    let e = env.fails(&["up", path, "--image", "localhost/devaipod-no-such-image:none"]);
    assert!(
        e.contains("image localhost/devaipod-no-such-image:none does not exist locally and could not be pulled"),
        "{e}"
    );
    assert_eq!(env.leftovers(), Vec::<String>::new());

    let e = TestEnv::new("[trusted]\nsecrets = [\"TOKEN=devaipod-no-such-secret\"]\n").fails(&["up", path]);
    assert!(
        e.contains("podman secret `devaipod-no-such-secret` (for TOKEN in [trusted] secrets) does not exist"),
        "{e}"
    );

    // A lifecycle command that fails after the pod exists: everything is removed again.
    let failing = fixture_repo(
        env.dir.path(),
        "failing",
        &[(".devcontainer.json", r#"{"postCreateCommand": "echo about to fail; exit 3"}"#)],
    );
    let out = env.run(&["up", failing.to_str().unwrap(), "--name", "failing"]);
    let e = text(&out.stderr);
    assert!(!out.status.success());
    assert!(e.contains("about to fail"), "the command's output is shown:\n{e}");
    assert!(e.contains("postCreateCommand failed (exit code 3): /bin/sh -c echo about to fail; exit 3"), "{e}");
    assert!(e.contains("removing what it created"), "{e}");
    assert_eq!(env.leftovers(), Vec::<String>::new());

    // A name that is taken.
    env.ok(&["up", path, "--name", "taken"]);
    let e = env.fails(&["up", path, "--name", "taken"]);
    assert!(e.contains("workspace `taken` already exists (pod devaipod-taken)"), "{e}");
    // Without --name a free name is chosen.
    let second = env.ok(&["--json", "up", path]);
    let second: serde_json::Value = serde_json::from_str(&second).unwrap();
    assert_eq!(second["workspace"]["name"], "r");
    let third: serde_json::Value = serde_json::from_str(&env.ok(&["--json", "up", path])).unwrap();
    assert_eq!(third["workspace"]["name"], "r-2");

    for args in [
        &["status", "nope"][..],
        &["exec", "nope", "--", "true"],
        &["delete", "nope"],
        &["stop", "nope"],
        &["logs", "nope"],
    ] {
        let e = env.fails(args);
        assert!(e.contains("no workspace named `nope` (see `devaipod list`)"), "{args:?}: {e}");
    }
}

#[test]
fn delete_touches_only_its_own_workspace_and_instance() {
    if !podman_available() {
        return;
    }
    let a = TestEnv::new("");
    let b = TestEnv::new("");
    let repo = fixture_repo(a.dir.path(), "iso", &[]);
    let path = repo.to_str().unwrap();
    a.ok(&["up", path, "--name", "iso-a1"]);
    a.ok(&["up", path, "--name", "iso-a2"]);
    b.ok(&["up", path, "--name", "iso-b1"]);

    // Another instance cannot see, let alone delete, a's workspaces.
    let e = b.fails(&["delete", "iso-a1"]);
    assert!(e.contains("no workspace named `iso-a1`"), "{e}");
    let names = |env: &TestEnv| -> Vec<String> {
        env.json(&["list"]).as_array().unwrap().iter().map(|w| w["name"].as_str().unwrap().to_owned()).collect()
    };
    assert_eq!(names(&a), ["iso-a1", "iso-a2"]);
    assert_eq!(names(&b), ["iso-b1"]);

    a.ok(&["delete", "iso-a1"]);
    assert_eq!(names(&a), ["iso-a2"]);
    assert_eq!(b.json(&["status", "iso-b1"])["agent"], "running");
    let a_left = a.leftovers();
    assert!(a_left.iter().all(|o| !o.contains("iso-a1")), "{a_left:?}");
    assert!(a_left.iter().any(|o| o == "volume devaipod-iso-a2-workspace"), "{a_left:?}");
    assert_eq!(a.ok(&["exec", "iso-a2", "--", "cat", "README.md"]), "# iso\n");

    a.ok(&["delete", "iso-a2", "--keep-volumes"]);
    assert!(a.leftovers().iter().all(|o| o.starts_with("volume devaipod-iso-a2-")), "{:?}", a.leftovers());
    b.ok(&["delete", "iso-b1"]);
    assert_eq!(b.leftovers(), Vec::<String>::new());
}
