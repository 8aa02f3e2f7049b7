use std::path::Path;

use super::*;

fn err(text: &str) -> String {
    parse(text, Path::new("/home/u/.config/devaipod.toml")).unwrap_err().to_string()
}

#[test]
fn empty_file_is_defaults() {
    let c = parse("", Path::new("x.toml")).unwrap();
    assert_eq!(c, Config::default());
    assert_eq!(c.default_image, DEFAULT_IMAGE);
    assert_eq!(c.instance.as_str(), "default");
    assert_eq!(c.orchestration.max_workers, 2);
    assert_eq!(c.ssh.listen, "127.0.0.1:2222");
}

#[test]
fn missing_default_file_is_defaults_but_missing_named_file_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("nope.toml");
    assert_eq!(load(&p, false).unwrap(), Config::default());
    let e = load(&p, true).unwrap_err().to_string();
    assert!(e.starts_with(&format!("cannot read config file {}", p.display())), "{e}");
}

#[test]
fn full_config_parses() {
    let c = parse(
        r#"
default-image = "localhost/mine:1"
instance = "ci-42"
[env]
allowlist = ["TERM", "LANG"]
vars = { EDITOR = "vi" }
[trusted.env]
allowlist = ["GH_TOKEN"]
[trusted.env.vars]
NPM_REGISTRY_TOKEN = "t"
[trusted]
secrets = ["GH_TOKEN=gh_token", "AWS_KEY=aws.key-1"]
[service-gator.gh]
read = true
[service-gator.gh.repos]
"octo/hello" = { read = true, create-draft = true, push-new-branch = true }
"octo/*" = { read = true }
[orchestration]
enabled = true
max-workers = 4
[ssh]
enabled = true
listen = "127.0.0.1:2200"
[network]
egress = "allowlist"
allow-hosts = ["api.example.test"]
"#,
        Path::new("x.toml"),
    )
    .unwrap();
    assert_eq!(c.default_image, "localhost/mine:1");
    assert_eq!(c.instance.as_str(), "ci-42");
    assert_eq!(c.env.allowlist.len(), 2);
    assert_eq!(c.env.vars.values().next().map(String::as_str), Some("vi"));
    assert_eq!(c.trusted.secrets[1].env.as_str(), "AWS_KEY");
    assert_eq!(c.trusted.secrets[1].secret, "aws.key-1");
    assert!(c.service_gator.gh.read);
    let perms: Vec<_> = c.service_gator.gh.repos.iter().collect();
    assert_eq!(perms.len(), 2);
    let hello = perms.iter().find(|(k, _)| k.repo.as_deref() == Some("hello")).unwrap().1;
    assert!(hello.create_draft && hello.push_new_branch && !hello.write);
    assert_eq!(c.orchestration.max_workers, 4);
    assert_eq!(c.network.egress, NetworkEgress::Allowlist);
}

#[test]
fn errors_name_file_line_and_key() {
    let cases: &[(&str, &str)] = &[
        ("default-image = \"x\"\nbogus = 1\n", "/home/u/.config/devaipod.toml:2:1: bogus: unknown field `bogus`"),
        ("[env]\nallowlist = \"TERM\"\n", "/home/u/.config/devaipod.toml:2:13: env.allowlist: invalid type: string"),
        (
            "[trusted]\nsecrets = [\"GH_TOKEN\"]\n",
            ":2:11: trusted.secrets[0]: `GH_TOKEN` must have the form ENV=podman_secret_name",
        ),
        ("[trusted]\nsecrets = [\"1X=s\"]\n", "trusted.secrets[0]: `1X` is not an environment variable name"),
        ("[trusted]\nsecrets = [\"X=bad name\"]\n", "`bad name` is not a podman secret name"),
        ("[orchestration]\nmax-workers = 99\n", ":2:15: orchestration.max-workers: 99 is out of range: use 1 to 8"),
        ("[ssh]\nlisten = \"everywhere\"\n", "ssh.listen: `everywhere` is not an address"),
        (
            "[network]\negress = \"closed\"\n",
            "network.egress: unknown variant `closed`, expected `open` or `allowlist`",
        ),
        (
            "[service-gator.gh.repos]\n\"nope\" = {}\n",
            "2:1: service-gator.gh.repos.nope: `nope` is not `owner/repo` or `owner/*`",
        ),
        (
            "[service-gator.gh.repos]\n\"a/b\" = { merge = true }\n",
            "2:11: service-gator.gh.repos.a/b.merge: unknown field `merge`",
        ),
        ("instance = \"Not_A_Label\"\n", ":1:12: instance: `Not_A_Label` is not a valid instance id"),
        ("[env\n", "/home/u/.config/devaipod.toml:1:5: (syntax):"),
    ];
    for (text, want) in cases {
        let got = err(text);
        assert!(got.contains(want), "config {text:?}\n  got:  {got}\n  want: {want}");
    }
}

#[test]
fn dns_labels_are_rfc_1123() {
    for good in ["a", "a-1", "0abc", &"a".repeat(63)] {
        assert!(is_dns_label(good), "{good}");
    }
    for bad in ["", "-a", "a-", "A", "a_b", "a.b", &"a".repeat(64)] {
        assert!(!is_dns_label(bad), "{bad}");
    }
}
