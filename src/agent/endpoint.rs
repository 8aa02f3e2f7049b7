//! Where the daemon reaches an agent's API. An agent container has no network but
//! loopback, so its API is a unix socket served by the relay inside it
//! (`devaipod agent-shim`) in a directory bind-mounted from the host
//! (`<runtime>/agent/<workspace>/api.sock`); an endpoint is written `unix:<host path>`.
//! A plain `http://…` base URL is still accepted (a server on the host, as in tests).
//!
//! The agent can write into that directory, so what is there is the agent's: the daemon
//! never follows a link it finds in place of the socket (a link to podman's API socket
//! would hand the agent's UI the host). [`SocketRef::open`] opens the socket itself with
//! `O_PATH | O_NOFOLLOW`, checks that it is a socket, and connects through
//! `/proc/self/fd/<n>`, which names that very inode: nothing swapped in later is reached.

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

/// The prefix of a unix-socket endpoint.
pub const UNIX: &str = "unix:";
/// The URL base requests over a unix socket are written against (its host is ignored).
pub const UNIX_BASE: &str = "http://agent";

/// A parsed endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint<'a> {
    /// An HTTP base URL, e.g. `http://127.0.0.1:41234`.
    Http(&'a str),
    /// The host path of the agent's API socket.
    Unix(&'a Path),
}

impl<'a> Endpoint<'a> {
    pub fn parse(s: &'a str) -> Self {
        match s.strip_prefix(UNIX) {
            Some(path) => Endpoint::Unix(Path::new(path)),
            None => Endpoint::Http(s.trim_end_matches('/')),
        }
    }
}

/// The endpoint string of the API socket at `path`.
pub fn unix(path: &Path) -> String {
    format!("{UNIX}{}", path.display())
}

/// What joins an endpoint and the project directory its requests are for.
const DIRECTORY: &str = "#directory=";

/// `endpoint` with the project directory the agent is to work in, when that is not the
/// directory the agent was started in (a warm pool member's agent started before its
/// workspace's repository was there).
pub fn in_directory(endpoint: &str, directory: Option<&str>) -> String {
    match directory {
        Some(d) => format!("{endpoint}{DIRECTORY}{}", crate::encode::enc(d)),
        None => endpoint.to_owned(),
    }
}

/// The endpoint and the project directory [`in_directory`] joined (percent-decoded).
pub fn split_directory(s: &str) -> (&str, Option<String>) {
    match s.rsplit_once(DIRECTORY) {
        Some((endpoint, dir)) => (endpoint, Some(crate::encode::dec(dir))),
        None => (s, None),
    }
}

/// A unix socket held open by its inode (never through a link).
#[derive(Debug)]
pub struct SocketRef {
    fd: OwnedFd,
    /// (device, inode): the socket a later open must be to reuse connections made to this one.
    id: (u64, u64),
}

impl SocketRef {
    /// Opens the socket at `path` without following a link in its place. Fails when there
    /// is nothing there, or something other than a socket.
    pub fn open(path: &Path) -> std::io::Result<SocketRef> {
        use rustix::fs::{FileType, Mode, OFlags};
        let fd = rustix::fs::open(path, OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC, Mode::empty())?;
        let st = rustix::fs::fstat(&fd)?;
        if FileType::from_raw_mode(st.st_mode) != FileType::Socket {
            return Err(std::io::Error::other(format!(
                "{} is not a socket (a link or a file the agent put in its place): refused",
                path.display()
            )));
        }
        Ok(SocketRef { fd, id: (st.st_dev, st.st_ino) })
    }

    /// Whether both name the same socket.
    pub fn same(&self, other: &SocketRef) -> bool {
        self.id == other.id
    }

    /// A path that names this socket's inode for as long as `self` lives.
    pub fn path(&self) -> PathBuf {
        PathBuf::from(format!("/proc/self/fd/{}", self.fd.as_raw_fd()))
    }

    pub async fn connect(&self) -> std::io::Result<tokio::net::UnixStream> {
        tokio::net::UnixStream::connect(self.path()).await
    }
}

/// How to reach an endpoint over HTTP: the base to write URLs against, a client that
/// reaches it, and for a socket the socket itself, held open while the route lives.
#[derive(Debug, Clone)]
pub struct Route {
    /// `http://127.0.0.1:4096` or [`UNIX_BASE`].
    pub base: String,
    /// What a `Host` header names.
    pub authority: String,
    pub http: reqwest::Client,
    socket: Option<std::sync::Arc<SocketRef>>,
}

impl Route {
    /// A route to `endpoint` with a client from `builder` (its timeouts and policies).
    pub fn open(endpoint: &str, builder: reqwest::ClientBuilder) -> std::io::Result<Route> {
        let built = |b: reqwest::ClientBuilder| b.build().map_err(std::io::Error::other);
        match Endpoint::parse(endpoint) {
            Endpoint::Http(base) => Ok(Route {
                base: base.to_owned(),
                authority: base.split_once("://").map_or(base, |(_, a)| a).to_owned(),
                http: built(builder)?,
                socket: None,
            }),
            Endpoint::Unix(path) => {
                let socket = std::sync::Arc::new(SocketRef::open(path)?);
                let http = built(builder.unix_socket(socket.path()))?;
                Ok(Route { base: UNIX_BASE.into(), authority: "agent".into(), http, socket: Some(socket) })
            }
        }
    }

    /// The socket of a unix route (`None` for TCP: connect to [`Route::authority`]).
    pub fn socket(&self) -> Option<&SocketRef> {
        self.socket.as_deref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_parse() {
        assert_eq!(Endpoint::parse("unix:/run/a/api.sock"), Endpoint::Unix(Path::new("/run/a/api.sock")));
        assert_eq!(Endpoint::parse("http://127.0.0.1:4/"), Endpoint::Http("http://127.0.0.1:4"));
        assert_eq!(unix(Path::new("/x/api.sock")), "unix:/x/api.sock");
    }

    #[tokio::test]
    async fn a_link_in_place_of_the_socket_is_never_followed() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real.sock");
        let listener = tokio::net::UnixListener::bind(&real).unwrap();
        let s = SocketRef::open(&real).unwrap();
        let (connected, accepted) = tokio::join!(s.connect(), listener.accept());
        assert!(connected.is_ok() && accepted.is_ok(), "the socket itself is reached");

        let link = dir.path().join("api.sock");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let e = SocketRef::open(&link).unwrap_err();
        assert!(e.to_string().contains("not a socket"), "{e}");
        std::fs::write(dir.path().join("file"), "x").unwrap();
        assert!(SocketRef::open(&dir.path().join("file")).is_err());
        assert!(SocketRef::open(&dir.path().join("missing")).is_err());

        // A socket replaced after the open (its server gone) is not reached through the
        // old reference.
        drop(listener);
        std::fs::remove_file(&real).unwrap();
        let _new = tokio::net::UnixListener::bind(&real).unwrap();
        assert!(s.connect().await.is_err(), "the old inode is gone; the new socket is another");
        assert!(!s.same(&SocketRef::open(&real).unwrap()));
    }
}
