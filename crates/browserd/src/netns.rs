//! The network namespaces of sandboxed browsers, and browserd's only way into them.
//!
//! A sandboxed Chromium runs in a network namespace of its own (see `browser::sandbox`): its
//! DevTools port listens on that namespace's loopback, which no page of another session, no
//! other browser and no local user can reach. browserd gets in by creating a socket inside
//! the namespace (`setns` on a short-lived thread of its own) and using it from its runtime:
//! a socket stays in the namespace it was made in, wherever it is used from. So there is
//! no bridge process and no extra hop on the relay's path.
//!
//! Each sandboxed browser's DevTools port is unique among live browsers (it is derived from
//! its unique uid), so a browser's CDP url `ws://127.0.0.1:PORT/...` names its namespace:
//! [`Dialer::connect`] looks the port up in its server's table.

use std::collections::HashMap;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::{Arc, Mutex};

/// How browserd reaches browsers' DevTools: one per launcher (so per server), passed to
/// whoever dials a browser. A sandboxed server's dialer knows which namespace each live
/// browser's DevTools port is in, and refuses a port it does not know instead of dialling
/// the host's loopback, where some other process may listen; an unsandboxed server's
/// dials the host's loopback. Cheap to clone: clones share one table.
#[derive(Clone, Debug)]
pub struct Dialer {
    /// DevTools port -> the namespace of the browser listening on it; `None`: browsers are
    /// not sandboxed. A std mutex: held for a map lookup or insert only, never across an
    /// await.
    namespaces: Option<Arc<Mutex<Namespaces>>>,
}

/// DevTools port -> the namespace of the browser listening on it.
type Namespaces = HashMap<u16, Arc<OwnedFd>>;

impl Dialer {
    /// For browsers in sandboxes of their own.
    pub fn sandboxed() -> Self {
        Self {
            namespaces: Some(Arc::default()),
        }
    }

    /// For browsers that run in the host's namespace (`--sandbox off`, tests' fakes).
    pub fn host() -> Self {
        Self { namespaces: None }
    }

    /// Registers `ns` as the namespace of the browser whose DevTools listen on `port`.
    pub fn register(&self, port: u16, ns: Arc<OwnedFd>) {
        if let Some(table) = &self.namespaces {
            table.lock().unwrap().insert(port, ns);
        }
    }

    /// Forgets the namespace behind `port` (its browser has stopped).
    pub fn unregister(&self, port: u16) {
        if let Some(table) = &self.namespaces {
            table.lock().unwrap().remove(&port);
        }
    }

    /// The namespace of the sandboxed browser whose DevTools listen at `authority`
    /// (`127.0.0.1:PORT`); `None` for an unsandboxed browser.
    pub fn namespace_of(&self, authority: &str) -> Option<Arc<OwnedFd>> {
        let addr: std::net::SocketAddr = authority.parse().ok()?;
        self.namespaces
            .as_ref()?
            .lock()
            .unwrap()
            .get(&addr.port())
            .cloned()
    }

    /// Opens a TCP connection to a browser's DevTools server, `authority` being the
    /// `127.0.0.1:PORT` of its CDP url: inside the browser's namespace when it is
    /// sandboxed, on the host's loopback otherwise.
    pub async fn connect(&self, authority: &str) -> std::io::Result<tokio::net::TcpStream> {
        let addr: std::net::SocketAddr = authority
            .parse()
            .map_err(|_| std::io::Error::other(format!("not a DevTools address: {authority}")))?;
        match &self.namespaces {
            None => tokio::net::TcpStream::connect(addr).await,
            Some(table) => {
                let ns = table.lock().unwrap().get(&addr.port()).cloned();
                match ns {
                    Some(ns) => connect_in(ns, addr).await,
                    None => Err(std::io::Error::new(
                        std::io::ErrorKind::NotFound,
                        format!("no running browser listens on {authority}"),
                    )),
                }
            }
        }
    }
}

/// Opens a TCP connection to `addr` inside the namespace `ns` (another service of a
/// browser's sandbox, such as its chromedriver).
pub async fn connect_in(
    ns: Arc<OwnedFd>,
    addr: std::net::SocketAddr,
) -> std::io::Result<tokio::net::TcpStream> {
    let stream = inside(ns, move || {
        let stream = std::net::TcpStream::connect(addr)?;
        stream.set_nonblocking(true)?;
        Ok(stream)
    })
    .await?;
    tokio::net::TcpStream::from_std(stream)
}

/// Binds a listener on `addr` inside `ns`.
pub async fn listen(
    ns: Arc<OwnedFd>,
    addr: std::net::SocketAddr,
) -> std::io::Result<tokio::net::TcpListener> {
    let listener = inside(ns, move || {
        let socket = socket2::Socket::new(
            socket2::Domain::for_address(addr),
            socket2::Type::STREAM,
            None,
        )?;
        // A previous browserd's listener on this port may have left connections in
        // TIME_WAIT (a browser taken over after a restart).
        socket.set_reuse_address(true)?;
        socket.bind(&addr.into())?;
        socket.listen(128)?;
        socket.set_nonblocking(true)?;
        Ok(std::net::TcpListener::from(socket))
    })
    .await?;
    tokio::net::TcpListener::from_std(listener)
}

/// Runs `make` on a new thread that has entered `ns`. A new thread each time, which ends
/// with the call: no thread of browserd's runtime ever leaves the host's namespace.
async fn inside<T: Send + 'static>(
    ns: Arc<OwnedFd>,
    make: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> std::io::Result<T> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("browserd-netns".into())
        .spawn(move || {
            let result = rustix::thread::move_into_link_name_space(
                ns.as_fd(),
                Some(rustix::thread::LinkNameSpaceType::Network),
            )
            .map_err(std::io::Error::from)
            .and_then(|()| make());
            let _ = tx.send(result);
        })?;
    rx.await
        .map_err(|_| std::io::Error::other("the namespace thread died"))?
}

/// The network namespace of the sandbox whose outer `bwrap` process is `pid`: that of its
/// child, the sandbox's init (bwrap itself stays in the host's namespace).
pub fn of_sandbox(pid: u32) -> std::io::Result<OwnedFd> {
    let child = first_child(pid).ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::NotFound,
            "the sandbox has no process yet",
        )
    })?;
    let ns = std::fs::File::open(format!("/proc/{child}/ns/net"))?;
    let own = std::fs::metadata("/proc/self/ns/net")?;
    let theirs = ns.metadata()?;
    use std::os::unix::fs::MetadataExt as _;
    if own.ino() == theirs.ino() {
        // The child has not unshared its namespace yet.
        return Err(std::io::Error::new(
            std::io::ErrorKind::WouldBlock,
            "the sandbox has no namespace yet",
        ));
    }
    Ok(ns.into())
}

/// A child of `pid`: from `/proc/PID/task/PID/children` where the kernel offers it, else by
/// a scan of `/proc` for a process whose parent is `pid`.
/// The first process in the sandbox whose outer bwrap is `pid` (inside its namespaces).
pub fn sandbox_process(pid: u32) -> Option<u32> {
    first_child(pid)
}

fn first_child(pid: u32) -> Option<u32> {
    if let Ok(children) = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")) {
        return children.split_whitespace().next()?.parse().ok();
    }
    std::fs::read_dir("/proc")
        .ok()?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .find(|candidate| {
            std::fs::read_to_string(format!("/proc/{candidate}/stat"))
                .ok()
                .and_then(|stat| {
                    let (_, rest) = stat.rsplit_once(')')?;
                    rest.split_whitespace().nth(1)?.parse::<u32>().ok()
                })
                == Some(pid)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two servers in one process (two dialers) do not share their browsers: a port one
    /// registered is unknown to the other, which refuses it rather than dial the host.
    #[tokio::test]
    async fn each_dialer_reaches_only_the_browsers_registered_with_it() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let authority = addr.to_string();
        let (a, b) = (Dialer::sandboxed(), Dialer::sandboxed());
        // This process's own namespace stands in for a browser's (entering it again needs
        // root, as browserd's sandbox does).
        let own: OwnedFd = std::fs::File::open("/proc/self/ns/net").unwrap().into();
        a.register(addr.port(), Arc::new(own));
        if rustix::process::geteuid().is_root() {
            assert!(a.connect(&authority).await.is_ok());
        }
        assert!(a.namespace_of(&authority).is_some());
        let refused = b.connect(&authority).await.unwrap_err();
        assert_eq!(refused.kind(), std::io::ErrorKind::NotFound, "{refused}");
        assert!(b.namespace_of(&authority).is_none());
        a.unregister(addr.port());
        let gone = a.connect(&authority).await.unwrap_err();
        assert_eq!(gone.kind(), std::io::ErrorKind::NotFound, "{gone}");
        // An unsandboxed server's dialer reaches the host's loopback.
        assert!(Dialer::host().connect(&authority).await.is_ok());
    }
}
