//! With `DEVAIPOD_URL` (a daemon elsewhere), the commands that only work with this host's own
//! daemon refuse, saying why and what to do, and start no daemon; `doctor` asks the remote
//! daemon instead of this host's.

mod common;

use common::*;

#[test]
fn local_only_commands_refuse_a_remote_daemon_and_doctor_asks_it() {
    // Nothing listens on port 9 of loopback (discard is not served here).
    let env = TestEnv::new("").with_env("DEVAIPOD_URL", "http://127.0.0.1:9").with_env("DEVAIPOD_TOKEN", "t0ken");
    for (args, hint) in [
        (vec!["restart-daemon"], "podman restart devaipod"),
        (vec!["ssh", "w"], "SSH server"),
        (vec!["ssh-config"], "SSH server"),
        (vec!["forward", "w", "8000"], "this host's podman"),
    ] {
        let err = env.fails(&args);
        assert!(
            err.contains("works with this host's own daemon only") && err.contains("http://127.0.0.1:9"),
            "{args:?}: {err}"
        );
        assert!(err.contains(hint) && err.contains("DEVAIPOD_URL"), "{args:?}: {err}");
    }
    assert!(env.daemon_pid().is_none(), "no local daemon was started");

    let out = env.run(&["doctor"]);
    let report = text(&out.stdout) + &text(&out.stderr);
    assert!(report.contains("127.0.0.1:9"), "doctor reports on the daemon it was pointed at:\n{report}");
    assert!(env.daemon_pid().is_none(), "doctor started no local daemon");
}
