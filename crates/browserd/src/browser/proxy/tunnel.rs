//! One upstream proxy, and the client side of asking it for a tunnel.
//!
//! SOCKS5 is `tokio-socks`'s (RFC 1928 with RFC 1929 username and password; its reads are
//! exact, so none of the tunnel's first bytes is taken). HTTP `CONNECT` is written here: a
//! request of a few lines and a status line to read, on the connection browserd made itself
//! after its egress checks. hyper's client could send it, but hands back an `Upgraded` (a
//! boxed stream) where the egress path keeps a `TcpStream`; a few lines of our own keep the
//! stream's type and its socket options.

use super::address::{Protocol, ServerAddr};
use crate::fault::Failure;
use base64::Engine as _;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long an upstream may take to accept a connection and answer the CONNECT.
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(30);

/// The longest CONNECT answer read (status line and headers).
const MAX_ANSWER: usize = 16 * 1024;

/// One upstream proxy with its credentials.
pub struct Upstream {
    addr: ServerAddr,
    /// Never logged or shown.
    credentials: Option<Credentials>,
    /// What logs call it: `http://user@host:port` (a pool entry: also its name), no password.
    pub label: String,
    /// The operator's (from `--proxy-pool`): may be on this machine, which a client's own
    /// proxy may only be where pages may reach this machine.
    pub operator: bool,
    /// The proxy is asked for host names, which it resolves itself: a client's own proxy,
    /// or a pool entry with `remote_dns = true`. Otherwise (the pool's default) browserd
    /// resolves the name, judges the address and asks for that address, so a proxy on this
    /// machine or its network cannot be steered by a name that resolves differently there.
    pub remote_dns: bool,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.label)
    }
}

/// An upstream's username and password.
struct Credentials {
    username: String,
    password: String,
}

impl Upstream {
    pub(super) fn new(
        server: &str,
        username: Option<&str>,
        password: Option<&str>,
        name: Option<&str>,
    ) -> Result<Self, Failure> {
        let addr = ServerAddr::parse(server)?;
        let credentials = (username.is_some() || password.is_some()).then(|| Credentials {
            username: username.unwrap_or_default().to_owned(),
            password: password.unwrap_or_default().to_owned(),
        });
        // RFC 1929: both, 1 to 255 bytes each (an empty one cannot be sent).
        if let (Protocol::Socks5, Some(c)) = (addr.protocol, &credentials)
            && !((1..=255).contains(&c.username.len()) && (1..=255).contains(&c.password.len()))
        {
            return Err(Failure::client(
                "a SOCKS5 proxy's username and password go together, 1 to 255 bytes each",
            ));
        }
        let user = username.map(|u| format!("{u}@")).unwrap_or_default();
        let url = format!("{}://{user}{addr}", addr.protocol.scheme());
        let label = match name {
            Some(name) => format!("{name} ({url})"),
            None => url,
        };
        Ok(Self {
            addr,
            credentials,
            label,
            operator: name.is_some(),
            remote_dns: name.is_none(),
        })
    }

    /// Where to connect to reach the upstream itself.
    pub fn host(&self) -> &str {
        &self.addr.host
    }

    pub fn port(&self) -> u16 {
        self.addr.port
    }

    /// Asks the upstream, already connected on `stream`, for a tunnel to `host:port`. What
    /// it gives back are bytes of the tunnel that arrived with the proxy's answer (a server
    /// that speaks first): they belong to the page, before anything read from `stream`.
    pub async fn open_tunnel(
        &self,
        stream: &mut TcpStream,
        host: &str,
        port: u16,
    ) -> Result<Vec<u8>, TunnelError> {
        let asked = async {
            match self.addr.protocol {
                Protocol::Http => self.http_connect(stream, host, port).await,
                Protocol::Socks5 => self.socks5_connect(stream, host, port).await.map(|()| {
                    // Its reads are exact: nothing of the tunnel was read.
                    Vec::new()
                }),
            }
        };
        match tokio::time::timeout(UPSTREAM_TIMEOUT, asked).await {
            Ok(asked) => asked,
            Err(_) => Err(TunnelError::Broken(
                "no answer to CONNECT within 30 s".into(),
            )),
        }
    }

    async fn socks5_connect(
        &self,
        stream: &mut TcpStream,
        host: &str,
        port: u16,
    ) -> Result<(), TunnelError> {
        let target = (host, port);
        let connected = match &self.credentials {
            Some(c) => {
                tokio_socks::tcp::Socks5Stream::connect_with_password_and_socket(
                    stream,
                    target,
                    &c.username,
                    &c.password,
                )
                .await
            }
            None => tokio_socks::tcp::Socks5Stream::connect_with_socket(stream, target).await,
        };
        connected
            .map(drop)
            .map_err(|e| socks5_error(e, self.credentials.is_some()))
    }

    async fn http_connect(
        &self,
        stream: &mut TcpStream,
        host: &str,
        port: u16,
    ) -> Result<Vec<u8>, TunnelError> {
        let target = if host.contains(':') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        };
        let mut request = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n");
        if let Some(c) = &self.credentials {
            let pair = format!("{}:{}", c.username, c.password);
            request.push_str("Proxy-Authorization: Basic ");
            request.push_str(&base64::engine::general_purpose::STANDARD.encode(pair));
            request.push_str("\r\n");
        }
        request.push_str("\r\n");
        let exchange = async {
            stream.write_all(request.as_bytes()).await?;
            read_answer(stream).await
        };
        let answer = exchange
            .await
            .map_err(|e| TunnelError::Broken(e.to_string()))?;
        match answer.code {
            200..=299 => Ok(answer.early),
            // 407 is the standard answer; some proxies (tinyproxy) answer 401.
            code @ (401 | 407) => Err(TunnelError::Authentication(format!(
                "{code} {}",
                answer.reason
            ))),
            code => Err(TunnelError::Refused(format!("{code} {}", answer.reason))),
        }
    }
}

/// What a SOCKS5 upstream's refusal means, in the categories the session log uses.
fn socks5_error(e: tokio_socks::Error, with_credentials: bool) -> TunnelError {
    use tokio_socks::Error as E;
    match e {
        E::NoAcceptableAuthMethods => TunnelError::Authentication(
            if with_credentials {
                "the SOCKS5 proxy accepts neither no authentication nor a username and password"
            } else {
                "the SOCKS5 proxy wants credentials (give username and password)"
            }
            .into(),
        ),
        E::PasswordAuthFailure(status) => {
            TunnelError::Authentication(format!("SOCKS5 authentication status {status}"))
        }
        E::AuthorizationRequired => TunnelError::Authentication(
            "the SOCKS5 proxy wants credentials (give username and password)".into(),
        ),
        E::InvalidTargetAddress(why) => TunnelError::Refused(format!("SOCKS5 target: {why}")),
        refusal @ (E::GeneralSocksServerFailure
        | E::ConnectionNotAllowedByRuleset
        | E::NetworkUnreachable
        | E::HostUnreachable
        | E::ConnectionRefused
        | E::TtlExpired
        | E::CommandNotSupported
        | E::AddressTypeNotSupported) => {
            TunnelError::Refused(format!("SOCKS5: {}", refusal.to_string().to_lowercase()))
        }
        // A reply code past RFC 1928's: still the proxy saying no (the next address may do).
        E::UnknownError => TunnelError::Refused("SOCKS5: an unknown reply code".into()),
        other => TunnelError::Broken(format!("SOCKS5: {other}")),
    }
}

/// Why an upstream gave no tunnel. Its `Display` is what the session log says.
#[derive(Debug, thiserror::Error)]
pub enum TunnelError {
    #[error("the proxy is unreachable: {0}")]
    Unreachable(String),
    #[error("the proxy refused the credentials ({0})")]
    Authentication(String),
    #[error("the proxy refused the connection: {0}")]
    Refused(String),
    #[error("the proxy broke off: {0}")]
    Broken(String),
    /// The proxy a client named is at an address the egress policy closes to pages.
    #[error("the proxy's address is closed to pages: {0}")]
    Closed(crate::browser::egress::Refusal),
}

/// A CONNECT answer: its status, and what came after its blank line.
struct Answer {
    code: u16,
    reason: String,
    /// The tunnel's first bytes, if the far side spoke first and they came in the same reads.
    early: Vec<u8>,
}

/// Reads a CONNECT answer's status line and headers, up to the blank line, in reads of
/// whatever has arrived (one or two, for the usual ~100-byte answer); bytes past the blank
/// line are the tunnel's and are handed back.
async fn read_answer(stream: &mut TcpStream) -> std::io::Result<Answer> {
    let mut head = Vec::with_capacity(1024);
    let end = loop {
        let searched_from = head.len().saturating_sub(3);
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::Error::other("the proxy closed the connection"));
        }
        head.extend_from_slice(&chunk[..n]);
        if let Some(end) = end_of_head(&head, searched_from) {
            break end;
        }
        if head.len() > MAX_ANSWER {
            return Err(std::io::Error::other("the proxy's answer is too long"));
        }
    };
    let early = head.split_off(end);
    let text = String::from_utf8_lossy(&head);
    let status_line = text.lines().next().unwrap_or_default();
    let mut parts = status_line.splitn(3, ' ');
    let (version, code, reason) = (parts.next(), parts.next(), parts.next());
    match (version, code.and_then(|c| c.parse::<u16>().ok())) {
        (Some(v), Some(code)) if v.starts_with("HTTP/") => Ok(Answer {
            code,
            reason: reason.unwrap_or_default().trim().to_owned(),
            early,
        }),
        _ => Err(std::io::Error::other(format!(
            "not an HTTP answer: {:?}",
            status_line.chars().take(60).collect::<String>()
        ))),
    }
}

/// Where the head ends: just past its blank line, as a line reader would find it (`\r\n`
/// or a lax proxy's `\n` after the last line's `\n`), looking from `from` on.
fn end_of_head(head: &[u8], from: usize) -> Option<usize> {
    let tail = &head[from..];
    let crlf = memchr::memmem::find(tail, b"\n\r\n").map(|i| i + 3);
    let lf = memchr::memmem::find(tail, b"\n\n").map(|i| i + 2);
    match (crlf, lf) {
        (Some(a), Some(b)) => Some(from + a.min(b)),
        (a, b) => a.or(b).map(|i| from + i),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The bytes of a SOCKS5 CONNECT with username/password, against a scripted upstream
    /// (the real one, microsocks, is in the compat suite): the host name goes unresolved,
    /// and the tunnel's first bytes are left for the tunnel.
    #[tokio::test]
    async fn a_socks5_tunnel_authenticates_and_names_the_host() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let upstream = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut greeting = [0u8; 4];
            s.read_exact(&mut greeting).await.unwrap();
            s.write_all(&[5, 2]).await.unwrap();
            let mut auth = [0u8; 1 + 1 + 3 + 1 + 6];
            s.read_exact(&mut auth).await.unwrap();
            s.write_all(&[1, 0]).await.unwrap();
            let mut request = [0u8; 4 + 1 + 9 + 2];
            s.read_exact(&mut request).await.unwrap();
            // Bound to a domain-name address, then the tunnel's first bytes at once.
            s.write_all(&[5, 0, 0, 3, 2, b'h', b'i', 0, 80, b'o', b'k'])
                .await
                .unwrap();
            (greeting, auth, request)
        });
        let proxy = Upstream::new(
            &format!("socks5://{addr}"),
            Some("bob"),
            Some("secret"),
            None,
        )
        .unwrap();
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let early = proxy
            .open_tunnel(&mut stream, "shop.test", 443)
            .await
            .unwrap();
        assert!(early.is_empty());
        let mut first = [0u8; 2];
        stream.read_exact(&mut first).await.unwrap();
        assert_eq!(&first, b"ok");
        let (greeting, auth, request) = upstream.await.unwrap();
        assert_eq!(greeting, [5, 2, 0, 2]);
        assert_eq!(&auth, b"\x01\x03bob\x06secret");
        assert_eq!(&request, b"\x05\x01\x00\x03\x09shop.test\x01\xbb");
    }

    #[tokio::test]
    async fn a_socks5_refusal_says_why() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 64];
            let _ = s.read(&mut buf).await;
            s.write_all(&[5, 0]).await.unwrap();
            let _ = s.read(&mut buf).await;
            s.write_all(&[5, 5, 0, 1, 0, 0, 0, 0, 0, 0]).await.unwrap();
        });
        let proxy = Upstream::new(&format!("socks5://{addr}"), None, None, None).unwrap();
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let err = proxy
            .open_tunnel(&mut stream, "10.1.2.3", 80)
            .await
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "the proxy refused the connection: SOCKS5: connection refused"
        );
    }

    /// An HTTP CONNECT with basic auth; the answer and the tunnel's first bytes arrive in
    /// one segment, split across reads anywhere: the answer is read whole, the rest is the
    /// tunnel's.
    #[tokio::test]
    async fn an_http_connect_hands_back_the_tunnels_first_bytes() {
        for split in [1, 10, 38, 39, 40, 60] {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let upstream = tokio::spawn(async move {
                let (mut s, _) = listener.accept().await.unwrap();
                let mut asked = Vec::new();
                while !asked.ends_with(b"\r\n\r\n") {
                    let mut byte = [0u8; 1];
                    s.read_exact(&mut byte).await.unwrap();
                    asked.push(byte[0]);
                }
                let answer = b"HTTP/1.1 200 Connection established\r\n\r\n220 smtp.test ready\r\n";
                s.write_all(&answer[..split]).await.unwrap();
                s.flush().await.unwrap();
                tokio::task::yield_now().await;
                s.write_all(&answer[split..]).await.unwrap();
                String::from_utf8(asked).unwrap()
            });
            let proxy =
                Upstream::new(&format!("http://{addr}"), Some("u"), Some("p"), None).unwrap();
            let mut stream = TcpStream::connect(addr).await.unwrap();
            let mut tunnel = proxy
                .open_tunnel(&mut stream, "smtp.test", 25)
                .await
                .unwrap();
            let asked = upstream.await.unwrap();
            assert!(
                asked.starts_with("CONNECT smtp.test:25 HTTP/1.1\r\nHost: smtp.test:25\r\n"),
                "{asked}"
            );
            assert!(
                asked.contains("Proxy-Authorization: Basic dTpw\r\n"),
                "{asked}"
            );
            let mut rest = Vec::new();
            stream.read_to_end(&mut rest).await.unwrap();
            tunnel.extend_from_slice(&rest);
            assert_eq!(tunnel, b"220 smtp.test ready\r\n", "split at {split}");
        }
    }

    #[tokio::test]
    async fn an_http_refusal_and_a_non_answer_say_which() {
        for (answer, says) in [
            (
                &b"HTTP/1.1 407 Proxy Authentication Required\r\n\r\n"[..],
                "refused the credentials (407 Proxy Authentication Required)",
            ),
            (
                b"HTTP/1.0 403 Forbidden\n\n",
                "refused the connection: 403 Forbidden",
            ),
            (b"HTTP/1.0 402 Pay\n\r\n", "refused the connection: 402 Pay"),
            (b"SSH-2.0-OpenSSH\r\n\r\n", "broke off: not an HTTP answer"),
        ] {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            tokio::spawn(async move {
                let (mut s, _) = listener.accept().await.unwrap();
                let mut buf = [0u8; 256];
                let _ = s.read(&mut buf).await;
                s.write_all(answer).await.unwrap();
            });
            let proxy = Upstream::new(&format!("http://{addr}"), None, None, None).unwrap();
            let mut stream = TcpStream::connect(addr).await.unwrap();
            let err = proxy
                .open_tunnel(&mut stream, "p.test", 443)
                .await
                .unwrap_err();
            assert!(err.to_string().contains(says), "{err}");
        }
    }
}
