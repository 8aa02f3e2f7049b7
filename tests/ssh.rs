//! The daemon's SSH server, driven by the real OpenSSH client (ssh, sftp, scp) against real
//! podman: exec with exit status, terminals and their size, forwards, file transfer, the
//! agent's confinement over SSH, refusals, audit rows; `ssh-config`, `exec -t`, `attach`.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// A workspace with an SSH key pair allowed in and one that is not.
struct SshWorld {
    env: TestEnv,
    ws: String,
    key: PathBuf,
    stranger: PathBuf,
    port: String,
}

fn keygen(dir: &Path, name: &str) -> PathBuf {
    let key = dir.join(name);
    let out = Command::new("ssh-keygen").args(["-q", "-t", "ed25519", "-N", "", "-C", name, "-f"]).arg(&key).output();
    let out = out.expect("ssh-keygen (Debian: openssh-client; scripts/setup.sh installs it)");
    assert!(out.status.success(), "{}", text(&out.stderr));
    key
}

fn world(tag: &str, files: &[(&str, &str)]) -> Option<SshWorld> {
    if !podman_available() {
        return None;
    }
    let ws = format!("ssh-{tag}-{}", std::process::id() % 100_000);
    let env = TestEnv::new("");
    let keys = env.dir.path().join("keys");
    std::fs::create_dir(&keys).unwrap();
    let key = keygen(&keys, "allowed");
    let stranger = keygen(&keys, "stranger");
    let authorized = keys.join("authorized_keys");
    std::fs::copy(key.with_extension("pub"), &authorized).unwrap();
    let config = format!(
        "[ssh]\nlisten = \"127.0.0.1:0\"\nauthorized-keys = \"{}\"\nidentity-file = \"{}\"\n",
        authorized.display(),
        key.display()
    );
    std::fs::write(&env.config, config).unwrap();
    let repo = fixture_repo(env.dir.path(), "sshrepo", files);
    let up = env.run(&["up", repo.to_str().unwrap(), "--name", &ws]);
    assert!(up.status.success(), "up failed:\n{}", text(&up.stderr));
    let port = std::fs::read_to_string(env.dir.path().join("run/ssh-listen")).unwrap();
    let port = port.trim().rsplit(':').next().unwrap().to_owned();
    Some(SshWorld { env, ws, key, stranger, port })
}

impl SshWorld {
    /// The OpenSSH options of a client that trusts only the daemon's pinned host key.
    fn opts(&self, key: &Path) -> Vec<String> {
        let known = self.env.dir.path().join("data/ssh/known_hosts");
        [
            "-F",
            "/dev/null",
            "-o",
            "BatchMode=yes",
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            &format!("HostKeyAlias=devaipod-{}", self.env.instance),
            "-o",
            &format!("UserKnownHostsFile={}", known.display()),
            "-i",
            key.to_str().unwrap(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    }

    fn ssh_with(&self, key: &Path, user: &str, extra: &[&str], remote: &str) -> Output {
        Command::new("ssh")
            .args(self.opts(key))
            .args(["-p", &self.port])
            .args(extra)
            .arg(format!("{user}@127.0.0.1"))
            .args((!remote.is_empty()).then_some(remote))
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    fn ssh(&self, user: &str, remote: &str) -> Output {
        self.ssh_with(&self.key, user, &[], remote)
    }

    fn agent(&self) -> String {
        format!("{}+agent", self.ws)
    }
}

fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < Duration::from_secs(20), "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn ssh_runs_commands_and_terminals_in_the_workspace_and_refuses_what_it_must() {
    let files = [(
        ".devcontainer/devcontainer.json",
        r#"{ "remoteEnv": { "SSH_IT_PATH": "${containerEnv:PATH}:/extra", "SSH_IT_DIR": "${containerWorkspaceFolder}" } }"#,
    )];
    let Some(w) = world("main", &files) else { return };

    // exec: the workspace folder, remoteEnv, the exit status.
    let out = w.ssh(&w.ws, "echo $PWD; echo $SSH_IT_DIR; echo $SSH_IT_PATH; exit 3");
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines[0], "/workspaces/sshrepo");
    assert_eq!(lines[1], "/workspaces/sshrepo");
    assert!(lines[2].ends_with(":/extra") && lines[2].contains("/usr/bin"), "{stdout}");

    // stdin and stdout stream both ways; stderr stays stderr.
    let mut child = Command::new("ssh")
        .args(w.opts(&w.key))
        .args(["-p", &w.port, &format!("{}@127.0.0.1", w.ws), "wc -c; echo oops >&2"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        let chunk = vec![b'x'; 1 << 20];
        for _ in 0..8 {
            stdin.write_all(&chunk).unwrap();
        }
    }
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).trim(), (8 << 20).to_string());
    assert!(text(&out.stderr).contains("oops"));

    // A terminal: `tty` succeeds, TERM comes from the client.
    let out = w.ssh_with(&w.key, &w.ws, &["-tt", "-o", "SetEnv=TERM=xterm-it"], "tty && echo TERM=$TERM");
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    assert!(stdout.contains("/dev/pts/") && stdout.contains("TERM=xterm"), "{stdout}");
    let out = w.ssh(&w.ws, "tty");
    assert!(!out.status.success(), "no terminal without -t");

    // The terminal follows the client's window (tmux gives ssh a terminal and resizes it).
    let session = format!("devaipod-{}", w.ws);
    let log = w.env.dir.path().join("pty.log");
    let opts: Vec<String> = w.opts(&w.key).iter().map(|o| format!("'{o}'")).collect();
    let inner = format!(
        "ssh -tt {} -p {} {}@127.0.0.1 'stty size; echo resize-me; sleep 3; stty size' > {} 2>&1",
        opts.join(" "),
        w.port,
        w.ws,
        log.display()
    );
    let tmux = |args: &[&str]| Command::new("tmux").args(args).output().expect("tmux (scripts/setup.sh installs it)");
    assert!(tmux(&["new-session", "-d", "-s", &session, "-x", "100", "-y", "30", &inner]).status.success());
    wait_for("the first size", || std::fs::read_to_string(&log).is_ok_and(|l| l.contains("resize-me")));
    tmux(&["resize-window", "-t", &session, "-x", "120", "-y", "40"]);
    wait_for("the second size", || std::fs::read_to_string(&log).is_ok_and(|l| l.lines().count() >= 3));
    let sizes = std::fs::read_to_string(&log).unwrap();
    let _ = tmux(&["kill-session", "-t", &session]);
    let sizes: Vec<&str> = sizes.lines().map(str::trim).collect();
    assert_eq!(sizes[0], "30 100", "{sizes:?}");
    assert_eq!(sizes[2], "40 120", "{sizes:?}");

    // -L forwards to a server started in the workspace container (git daemon).
    let start = w.ssh(
        &w.ws,
        "git daemon --detach --listen=127.0.0.1 --port=9418 --base-path=/workspaces --export-all --reuseaddr",
    );
    assert!(start.status.success(), "{}", text(&start.stderr));
    let local = 20000 + std::process::id() % 20000;
    let mut fwd = Command::new("ssh")
        .args(w.opts(&w.key))
        .args(["-N", "-o", "ExitOnForwardFailure=yes", "-L", &format!("{local}:localhost:9418"), "-p", &w.port])
        .arg(format!("{}@127.0.0.1", w.ws))
        .spawn()
        .unwrap();
    let url = format!("git://127.0.0.1:{local}/sshrepo");
    let mut listed = String::new();
    wait_for("git ls-remote through the forward", || {
        let o = Command::new("git").args(["ls-remote", &url]).output().unwrap();
        listed = text(&o.stdout);
        o.status.success()
    });
    let _ = fwd.kill();
    let _ = fwd.wait();
    assert!(listed.contains("refs/heads/main"), "{listed}");
    // Other hosts through the pod are refused with a reason.
    let out = w.ssh_with(&w.key, &w.ws, &["-W", "10.1.2.3:80"], "");
    assert!(text(&out.stderr).contains("forwards reach the workspace's own ports only"), "{}", text(&out.stderr));

    // sftp puts and gets; scp copies.
    let local_file = w.env.dir.path().join("up.txt");
    std::fs::write(&local_file, "sent over sftp\n").unwrap();
    let back = w.env.dir.path().join("back.txt");
    let batch = w.env.dir.path().join("batch");
    std::fs::write(&batch, format!("put {} up.txt\nget up.txt {}\n", local_file.display(), back.display())).unwrap();
    let out = Command::new("sftp")
        .args(w.opts(&w.key))
        .args(["-P", &w.port, "-b"])
        .arg(&batch)
        .arg(format!("{}@127.0.0.1", w.ws))
        .output()
        .unwrap();
    assert!(out.status.success(), "sftp: {}{}", text(&out.stdout), text(&out.stderr));
    assert_eq!(std::fs::read_to_string(&back).unwrap(), "sent over sftp\n");
    assert_eq!(w.env.ok(&["exec", &w.ws, "--", "cat", "/workspaces/sshrepo/up.txt"]), "sent over sftp\n");
    let out = Command::new("scp")
        .args(w.opts(&w.key))
        .args(["-P", &w.port])
        .arg(format!("{}@127.0.0.1:README.md", w.ws))
        .arg(w.env.dir.path().join("readme.copy"))
        .output()
        .unwrap();
    assert!(out.status.success(), "scp: {}", text(&out.stderr));
    assert_eq!(std::fs::read_to_string(w.env.dir.path().join("readme.copy")).unwrap(), "# sshrepo\n");

    // <ws>+agent: the agent's container with its confinement intact.
    let out = w.ssh(&w.agent(), "grep -E '^(CapEff|NoNewPrivs)' /proc/self/status; id -u; touch /mnt/main-workspace/x");
    let stdout = text(&out.stdout);
    assert!(stdout.lines().any(|l| l.split_whitespace().eq(["CapEff:", "0000000000000400"])), "{stdout}");
    assert!(stdout.lines().any(|l| l.split_whitespace().eq(["NoNewPrivs:", "1"])), "{stdout}");
    assert!(stdout.lines().any(|l| l == "1000"), "{stdout}");
    assert!(text(&out.stderr).contains("Read-only file system"), "{}", text(&out.stderr));
    assert!(!out.status.success());
    let out = w.ssh(&w.agent(), "env");
    assert!(!text(&out.stdout).contains("SSH_IT_PATH"), "remoteEnv is the workspace's, not the agent's");
    let out = w.ssh_with(&w.key, &w.agent(), &["-W", "localhost:4096"], "");
    assert!(text(&out.stderr).contains("takes no connections from outside"), "{}", text(&out.stderr));

    // Refusals: a key not in authorized_keys, a workspace that does not exist.
    let out = w.ssh_with(&w.stranger, &w.ws, &[], "true");
    assert_eq!(out.status.code(), Some(255));
    assert!(text(&out.stderr).contains("Permission denied (publickey)"), "{}", text(&out.stderr));
    let out = w.ssh("nosuch-ws", "true");
    assert_eq!(out.status.code(), Some(255));
    assert!(text(&out.stderr).contains("no workspace named `nosuch-ws`"), "{}", text(&out.stderr));

    // ssh-config's entries work as they are (identity, port, pinned host key).
    let conf = w.env.dir.path().join("ssh_config");
    std::fs::write(&conf, w.env.ok(&["ssh-config"])).unwrap();
    let out = Command::new("ssh")
        .args(["-F", conf.to_str().unwrap(), "-o", "BatchMode=yes", &format!("devaipod-{}", w.ws), "echo via-config"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(text(&out.stdout), "via-config\n", "{}", text(&out.stderr));
    // devaipod ssh does the same with the system's ssh.
    let out = w.env.run(&["ssh", &w.ws, "--", "echo", "via-devaipod-ssh"]);
    assert_eq!(text(&out.stdout), "via-devaipod-ssh\n", "{}", text(&out.stderr));

    // Every session is in the audit log with the key's fingerprint; the stranger's try too.
    let log = w.env.json(&["gator", "log", &w.ws, "--limit", "200"]);
    let rows = log.as_array().unwrap();
    let ssh_rows: Vec<&serde_json::Value> = rows.iter().filter(|r| r["tool"] == "ssh").collect();
    let fp = text(&Command::new("ssh-keygen").arg("-lf").arg(w.key.with_extension("pub")).output().unwrap().stdout);
    let fp = fp.split_whitespace().nth(1).unwrap().to_owned();
    assert!(
        ssh_rows.iter().any(|r| r["target"].as_str().unwrap().contains("exec `echo $PWD")
            && r["reason"].as_str().unwrap().contains(&format!("session of {fp} ended"))
            && r["reason"].as_str().unwrap().contains("exit 3")),
        "{ssh_rows:#?}"
    );
    assert!(ssh_rows.iter().any(|r| r["decision"] == "deny" && r["reason"].as_str().unwrap().contains("is not in")));
    assert!(ssh_rows.iter().any(|r| r["target"].as_str().unwrap().contains("sftp")));

    // A stopped workspace says so, and how to start it.
    w.env.ok(&["stop", &w.ws]);
    let out = w.ssh(&w.ws, "true");
    assert_eq!(out.status.code(), Some(255));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("is not running") && stderr.contains("devaipod start"), "{stderr}");
}

#[test]
fn exec_with_a_terminal_and_attach_run_interactive_shells() {
    let files = [(
        ".devcontainer/devcontainer.json",
        r#"{ "postAttachCommand": "echo attached >> /tmp/attach.log", "forwardPorts": [9418] }"#,
    )];
    let Some(w) = world("tty", &files) else { return };
    // `script` gives devaipod a terminal; the shell reads its commands from it.
    let script = |cmdline: &str, input: &str| {
        let mut c = Command::new("script");
        c.args(["-qefc", cmdline, "/dev/null"]).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
        c.env("DEVAIPOD_INSTANCE", &w.env.instance).env("DEVAIPOD_CONFIG", &w.env.config);
        c.env("DEVAIPOD_DATA_DIR", w.env.dir.path().join("data"));
        c.env("DEVAIPOD_RUNTIME_DIR", w.env.dir.path().join("run"));
        let mut child = c.spawn().unwrap();
        {
            use std::io::Write;
            let mut stdin = child.stdin.take().unwrap();
            stdin.write_all(input.as_bytes()).unwrap();
            // Keep the terminal open until the shell has read its input.
            std::thread::sleep(Duration::from_secs(3));
        }
        child.wait_with_output().unwrap()
    };
    let exe = devaipod_exe();
    let out = script(&format!("{} exec -it {} -- sh", exe.display(), w.ws), "tty; echo in-$((40+2)); exit 7\n");
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(7), "{stdout}{}", text(&out.stderr));
    assert!(stdout.contains("/dev/pts/") && stdout.contains("in-42"), "{stdout}");

    let out = script(&format!("{} attach {}", exe.display(), w.ws), "echo at-$PWD; exit 0\n");
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
    assert!(stdout.contains("at-/workspaces/sshrepo"), "{stdout}");
    assert_eq!(w.env.ok(&["exec", &w.ws, "--", "cat", "/tmp/attach.log"]), "attached\n", "postAttachCommand ran once");
    let _ = &w.stranger;

    // ports lists forwardPorts; forward joins a local port to it through the pod's namespace.
    let ports = w.env.json(&["ports", &w.ws]);
    assert_eq!(ports[0]["container_port"], 9418, "{ports}");
    assert_eq!(ports[0]["host_ip"], "127.0.0.1", "{ports}");
    let start = w.ssh(&w.ws, "git daemon --detach --listen=127.0.0.1 --port=9418 --base-path=/workspaces --export-all");
    assert!(start.status.success(), "{}", text(&start.stderr));
    let local = 20000 + (std::process::id() + 7) % 20000;
    let mut fwd = w.env.cmd(&["forward", &w.ws, &format!("{local}:9418")]).spawn().unwrap();
    let url = format!("git://127.0.0.1:{local}/sshrepo");
    let mut listed = String::new();
    wait_for("git ls-remote through devaipod forward", || {
        let o = Command::new("git").args(["ls-remote", &url]).output().unwrap();
        listed = text(&o.stdout);
        o.status.success()
    });
    let _ = fwd.kill();
    let _ = fwd.wait();
    assert!(listed.contains("refs/heads/main"), "{listed}");
}

#[test]
fn ssh_forwards_ports_on_rootless_podman() {
    if !rootless_here("ssh_forwards_ports_on_rootless_podman") {
        return;
    }
    let Some(w) = world("rl", &[]) else { return };
    let out = w.ssh(&w.ws, "echo $PWD");
    assert_eq!(text(&out.stdout), "/workspaces/sshrepo\n", "{}", text(&out.stderr));
    // The pod's namespace belongs to podman's user namespace: the daemon enters it through
    // nsenter and its own tcp-relay.
    let start = w.ssh(&w.ws, "git daemon --detach --listen=127.0.0.1 --port=9418 --base-path=/workspaces --export-all");
    assert!(start.status.success(), "{}", text(&start.stderr));
    let local = 20000 + (std::process::id() + 13) % 20000;
    let mut fwd = Command::new("ssh")
        .args(w.opts(&w.key))
        .args(["-N", "-o", "ExitOnForwardFailure=yes", "-L", &format!("{local}:localhost:9418"), "-p", &w.port])
        .arg(format!("{}@127.0.0.1", w.ws))
        .spawn()
        .unwrap();
    let url = format!("git://127.0.0.1:{local}/sshrepo");
    let mut listed = String::new();
    wait_for("git ls-remote through a rootless forward", || {
        let o = Command::new("git").args(["ls-remote", &url]).output().unwrap();
        listed = text(&o.stdout);
        o.status.success()
    });
    let _ = fwd.kill();
    let _ = fwd.wait();
    assert!(listed.contains("refs/heads/main"), "{listed}");
    // Nothing listening: the refusal says so.
    let out = w.ssh_with(&w.key, &w.ws, &["-W", "localhost:9"], "");
    assert!(text(&out.stderr).contains("nothing listens on port 9"), "{}", text(&out.stderr));
}
