use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::*;

const REPO: &str = "/src/proj";

fn files(list: &[(&str, &str)]) -> Vec<(PathBuf, String)> {
    list.iter().map(|(p, t)| (PathBuf::from(format!("{REPO}/.devcontainer/{p}")), t.to_string())).collect()
}

fn parse(list: &[(&str, &str)]) -> Result<Project, ComposeError> {
    let env = BTreeMap::from([("USER".to_owned(), "alice".to_owned()), ("PGPORT".to_owned(), "5433".to_owned())]);
    parse_files(&files(list), &env, Path::new(REPO))
}

fn err(list: &[(&str, &str)]) -> String {
    parse(list).unwrap_err().to_string()
}

/// The shape of the devcontainers templates (app + database, the app on the database's
/// network), with an extension field merged in.
const NODE_MONGO: &str = r#"
version: '3.8'
x-env: &env
  NODE_ENV: development
services:
  app:
    build:
      context: .
      dockerfile: Dockerfile
      args:
        VARIANT: 18
    volumes:
      - ../..:/workspaces:cached
    command: sleep infinity
    network_mode: service:db
    environment:
      <<: *env
      DB_USER: ${USER}
      DB_PORT: ${PGPORT:-5432}
      DB_NAME: ${DB_NAME:-app}
  db:
    image: mongo:latest
    restart: unless-stopped
    volumes:
      - mongodb-data:/data/db
    healthcheck:
      test: ["CMD", "mongosh", "--eval", "db.adminCommand('ping')"]
      interval: 5s
      retries: 10
volumes:
  mongodb-data:
"#;

#[test]
fn a_template_project_reads_into_typed_services() {
    let p = parse(&[("docker-compose.yml", NODE_MONGO)]).unwrap();
    let app = &p.services["app"];
    let build = app.build.as_ref().unwrap();
    assert_eq!(build.context, Path::new("/src/proj/.devcontainer"));
    assert_eq!(build.dockerfile, Path::new("/src/proj/.devcontainer/Dockerfile"));
    assert_eq!(build.args["VARIANT"], "18");
    assert_eq!(app.command, Some(vec!["sleep".to_owned(), "infinity".to_owned()]));
    // `../..` holds the repository: it appears at /workspaces/proj.
    assert_eq!(app.volumes, [ServiceVolume::Repository { target: "/workspaces/proj".into() }]);
    let env: BTreeMap<_, _> = app.env_entries.iter().cloned().collect();
    assert_eq!(env["NODE_ENV"], Some("development".into()));
    assert_eq!(env["DB_USER"], Some("alice".into()));
    assert_eq!(env["DB_PORT"], Some("5433".into()));
    assert_eq!(env["DB_NAME"], Some("app".into()));
    let db = &p.services["db"];
    assert_eq!(db.image.as_deref(), Some("mongo:latest"));
    assert_eq!(
        db.volumes,
        [ServiceVolume::Named { name: "mongodb-data".into(), target: "/data/db".into(), readonly: false }]
    );
    let h = db.healthcheck.as_ref().unwrap();
    assert_eq!(h.argv, ["mongosh", "--eval", "db.adminCommand('ping')"]);
    assert_eq!((h.interval_ms, h.retries, h.timeout_ms), (5000, 10, 30_000));
    assert!(p.volumes.contains_key("mongodb-data"));
    // `restart` is named in a warning with its file and line.
    assert!(
        p.warnings.iter().any(|w| w.contains("docker-compose.yml:23: `services.db.restart` is ignored")),
        "{:?}",
        p.warnings
    );
}

#[test]
fn a_bind_outside_the_repository_names_file_line_and_key() {
    let e = err(&[("c.yml", "services:\n  app:\n    image: x\n    volumes:\n      - ../../other:/w\n")]);
    assert_eq!(
        e,
        "/src/proj/.devcontainer/c.yml:5: `services.app.volumes[0]`: `/src/other` is outside the repository (/src/proj): devaipod mounts only the repository's files into a pod"
    );
    let e = err(&[(
        "c.yml",
        "services:\n  app:\n    image: x\n    volumes:\n      - /var/run/docker.sock:/var/run/docker.sock\n",
    )]);
    assert!(e.contains("c.yml:5: `services.app.volumes[0]`: `/var/run/docker.sock` is outside the repository"), "{e}");
    let e = err(&[("c.yml", "services:\n  app:\n    image: x\n    volumes:\n      - ~/.ssh:/root/.ssh:ro\n")]);
    assert!(e.contains("c.yml:5: `services.app.volumes[0]`: `~/.ssh` is in your home directory"), "{e}");
}

#[test]
fn several_files_merge_in_order() {
    let base = "services:\n  app:\n    image: base:1\n    environment:\n      A: '1'\n      B: '1'\n    ports: ['3000']\n    volumes:\n      - data:/data\n  db:\n    image: db:1\nvolumes:\n  data: {}\n";
    let over = "services:\n  app:\n    environment:\n      - B=2\n    ports: ['4000']\n    volumes:\n      - other:/data\n    cap_add: [SYS_PTRACE]\n  cache:\n    image: cache:1\nvolumes:\n  other:\n";
    let p = parse(&[("base.yml", base), ("over.yml", over)]).unwrap();
    let app = &p.services["app"];
    assert_eq!(app.image.as_deref(), Some("base:1"));
    let env: BTreeMap<_, _> = app.env_entries.iter().cloned().collect();
    assert_eq!((env["A"].as_deref(), env["B"].as_deref()), (Some("1"), Some("2")));
    assert_eq!(app.ports.iter().map(|p| p.container).collect::<Vec<_>>(), [3000, 4000]);
    assert_eq!(app.volumes, [ServiceVolume::Named { name: "other".into(), target: "/data".into(), readonly: false }]);
    assert_eq!(app.cap_add, ["SYS_PTRACE"]);
    assert_eq!(p.services.keys().collect::<Vec<_>>(), ["app", "cache", "db"]);
    assert_eq!(p.files.len(), 2);
}

#[test]
fn refusals_name_file_line_and_key() {
    let cases: &[(&str, &str)] = &[
        (
            "services:\n  app:\n    image: x\n    network_mode: host\n",
            "c.yml:4: `services.app.network_mode`: `host` would put the service on the host's network",
        ),
        (
            "services:\n  app:\n    extends:\n      file: base.yml\n      service: x\n",
            "c.yml:3: `services.app.extends`: is not supported",
        ),
        ("services:\n  app:\n    image: x\n    pid: host\n", "c.yml:4: `services.app.pid`: would share a namespace"),
        ("services:\n  app:\n    image: x\n    volumes_from: [db]\n", "c.yml:4: `services.app.volumes_from`"),
        ("services:\n  app:\n    image: x\nsecrets:\n  s:\n    file: ./s\n", "c.yml:4: `secrets`: is not supported"),
        ("include:\n  - other.yml\nservices: {}\n", "c.yml:1: `include`: is not supported"),
        ("services:\n  app:\n    restart: always\n", "c.yml:2: `services.app`: a service needs `image` or `build`"),
        (
            "services:\n  app:\n    image: x\n    privileged: 'yes'\n",
            "c.yml:4: `services.app.privileged`: expected true or false",
        ),
        (
            "services:\n  app:\n    image: x\n    volumes:\n      - data:/d\n",
            "c.yml:2: `services.app.volumes`: volume `data` is not declared under the top-level `volumes`",
        ),
        (
            "services:\n  app:\n    image: ${TAG:?set TAG in .env}\n",
            "c.yml:3: `services.app.image`: variable TAG is required: set TAG in .env",
        ),
        (
            "services:\n  app:\n    image: x\n    ports: ['5432/sctp', 'x:y']\n",
            "c.yml:4: `services.app.ports[1]`: `x:y` is not a port",
        ),
        (
            "services:\n  app:\n    image: x\n    healthcheck:\n      test: [CMD]\n",
            "c.yml:5: `services.app.healthcheck.test`: expected [\"CMD\", …]",
        ),
        (
            "services:\n  app:\n    image: x\n    healthcheck:\n      interval: soon\n      test: true\n",
            "c.yml:5: `services.app.healthcheck.interval`: `soon` is not a duration",
        ),
        (
            "services:\n  app:\n    build:\n      context: https://github.com/a/b.git\n",
            "c.yml:4: `services.app.build`: `https://github.com/a/b.git` is not a folder",
        ),
        ("services:\n  app: [x]\n", "c.yml:2: `services.app`: expected a mapping, found a list"),
        ("services:\n  app:\n    image: x\n    image: y\n", "c.yml:4: key `image` appears twice"),
        ("services:\n  app:\n    image: [x\n", "c.yml:"),
        ("", "c.yml:1: the file is empty"),
    ];
    for (text, want) in cases {
        let e = err(&[("c.yml", text)]);
        assert!(e.starts_with("/src/proj/.devcontainer/") && e.contains(want), "{text:?}:\n  got  {e}\n  want {want}");
    }
}

#[test]
fn ignored_keys_are_warnings_that_name_the_key() {
    let text = "services:\n  app:\n    image: x\n    container_name: mine\n    networks: [front]\n    frobnicate: 1\n    x-mine: 2\n    expose: ['80']\nnetworks:\n  front: {}\n";
    let p = parse(&[("c.yml", text)]).unwrap();
    let w = p.warnings.join("\n");
    assert!(w.contains("c.yml:4: `services.app.container_name` is ignored: devaipod names the containers"), "{w}");
    assert!(w.contains("c.yml:5: `services.app.networks` is ignored: the pod is the project's one network"), "{w}");
    assert!(w.contains("c.yml:6: `services.app.frobnicate` is ignored: devaipod does not know this key"), "{w}");
    assert!(w.contains("c.yml:9: `networks` is ignored"), "{w}");
    assert!(!w.contains("x-mine") && !w.contains("expose"), "{w}");
}

#[test]
fn the_forms_people_write_are_read() {
    let text = r#"
services:
  app:
    image: x
    entrypoint: ["/docker-entrypoint.sh"]
    command: npm run dev -- --host 0.0.0.0
    environment:
      - FROM_HOST
      - EMPTY=
      - USER
    extra_hosts:
      - "api.local:10.0.0.5"
    ports:
      - 8080
      - "127.0.0.1:9000:9000"
      - target: 9229
      - "6000-6002"
    depends_on:
      db:
        condition: service_healthy
      migrate:
        condition: service_completed_successfully
      optional:
        condition: service_started
        required: false
    volumes:
      - type: bind
        source: ../src
        target: /app/src
        read_only: true
      - /var/cache/app
      - type: tmpfs
        target: /tmp/x
    tmpfs: /run/app
    labels:
      tier: web
    healthcheck:
      test: curl -f http://localhost:8080 || exit 1
      start_period: 1m30s
"#;
    let p = parse(&[("c.yml", text)]).unwrap();
    let app = &p.services["app"];
    assert_eq!(app.entrypoint, Some(vec!["/docker-entrypoint.sh".to_owned()]));
    assert_eq!(app.command.as_ref().unwrap(), &["npm", "run", "dev", "--", "--host", "0.0.0.0"]);
    assert_eq!(
        app.env_entries,
        [("FROM_HOST".to_owned(), None), ("EMPTY".to_owned(), Some(String::new())), ("USER".to_owned(), None)]
    );
    assert_eq!(app.extra_hosts, ["api.local:10.0.0.5"]);
    assert_eq!(app.ports.iter().map(|p| p.container).collect::<Vec<_>>(), [8080, 9000, 9229, 6000, 6001, 6002]);
    assert!(
        p.warnings
            .iter()
            .any(|w| w.contains("c.yml:15: `services.app.ports[1]`: published on 127.0.0.1 at a free port"))
    );
    assert_eq!(app.depends_on["db"].condition, Condition::ServiceHealthy);
    assert_eq!(app.depends_on["migrate"].condition, Condition::ServiceCompletedSuccessfully);
    assert!(!app.depends_on["optional"].required);
    assert_eq!(
        app.volumes,
        [
            ServiceVolume::Bind { source: "/src/proj/src".into(), target: "/app/src".into(), readonly: true },
            ServiceVolume::Anonymous { target: "/var/cache/app".into() },
            ServiceVolume::Tmpfs { target: "/tmp/x".into() },
        ]
    );
    assert_eq!(app.tmpfs, ["/run/app"]);
    assert_eq!(app.labels["tier"], "web");
    let h = app.healthcheck.as_ref().unwrap();
    assert_eq!(h.argv, ["/bin/sh", "-c", "curl -f http://localhost:8080 || exit 1"]);
    assert_eq!(h.start_period_ms, 90_000);
}

#[test]
fn start_order_follows_depends_on_and_run_services() {
    let text = "services:\n  app:\n    image: x\n    depends_on: [api]\n  api:\n    image: x\n    depends_on:\n      db:\n        condition: service_healthy\n  db:\n    image: x\n  docs:\n    image: x\n  debug:\n    image: x\n    profiles: [debug]\n";
    let p = parse(&[("c.yml", text)]).unwrap();
    assert_eq!(start_order(&p, "app", None).unwrap(), ["db", "docs", "api", "app"]);
    // runServices limits what runs; the service and its dependencies always run.
    assert_eq!(start_order(&p, "app", Some(&[])).unwrap(), ["db", "api", "app"]);
    assert_eq!(start_order(&p, "app", Some(&["debug".to_owned()])).unwrap(), ["db", "debug", "api", "app"]);
    let e = start_order(&p, "nope", None).unwrap_err().to_string();
    assert_eq!(e, "`nope` is not a service of the compose project (it has: api, app, db, debug, docs)");
    let e = start_order(&p, "app", Some(&["web".to_owned()])).unwrap_err().to_string();
    assert!(e.starts_with("`web` is not a service"), "{e}");

    let circle = "services:\n  a:\n    image: x\n    depends_on: [b]\n  b:\n    image: x\n    depends_on: [a]\n";
    let p = parse(&[("c.yml", circle)]).unwrap();
    let e = start_order(&p, "a", None).unwrap_err().to_string();
    assert!(e.ends_with("c.yml:4: `services.a.depends_on`: the services a, b depend on each other in a circle"), "{e}");
    let missing = "services:\n  a:\n    image: x\n    depends_on:\n      - ghost\n";
    let p = parse(&[("c.yml", missing)]).unwrap();
    let e = start_order(&p, "a", None).unwrap_err().to_string();
    assert!(
        e.ends_with("c.yml:5: `services.a.depends_on`: `ghost` is not a service of the project (it has: a)"),
        "{e}"
    );
}

#[test]
fn load_reads_dotenv_and_env_files() {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path();
    let dc = repo.join(".devcontainer");
    std::fs::create_dir_all(&dc).unwrap();
    std::fs::write(dc.join(".env"), "TAG=15\nFROM_DOTENV=dot\nSHADOWED=dotenv\n").unwrap();
    std::fs::write(dc.join("db.env"), "POSTGRES_USER=app\nPOSTGRES_DB=dev\n").unwrap();
    std::fs::write(
        dc.join("docker-compose.yml"),
        "services:\n  db:\n    image: postgres:${TAG}\n    env_file: [db.env, {path: missing.env, required: false}]\n    environment:\n      POSTGRES_DB: test\n      SHADOWED: ${SHADOWED}\n      PASSTHROUGH:\n      UNSET_ON_HOST:\n",
    )
    .unwrap();
    let env = BTreeMap::from([("SHADOWED".to_owned(), "host".to_owned()), ("PASSTHROUGH".to_owned(), "p".to_owned())]);
    let cx = LoadContext { env: &env, repo };
    let p = load(&[dc.join("docker-compose.yml")], &cx).unwrap();
    let db = &p.services["db"];
    assert_eq!(db.image.as_deref(), Some("postgres:15"));
    let want: BTreeMap<String, String> =
        [("POSTGRES_USER", "app"), ("POSTGRES_DB", "test"), ("SHADOWED", "host"), ("PASSTHROUGH", "p")]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
    assert_eq!(db.environment, want);

    std::fs::write(dc.join("docker-compose.yml"), "services:\n  db:\n    image: x\n    env_file: gone.env\n").unwrap();
    let e = load(&[dc.join("docker-compose.yml")], &cx).unwrap_err().to_string();
    assert!(e.contains("docker-compose.yml:4: `services.db.env_file`: cannot read"), "{e}");
    let e = load(&[dc.join("nope.yml")], &cx).unwrap_err().to_string();
    assert!(e.starts_with(&format!("cannot read {}", dc.join("nope.yml").display())), "{e}");
}
