//! An upstream's address as clients and the pool file write it.

use crate::fault::Failure;

/// How browserd asks an upstream for a tunnel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Protocol {
    /// HTTP `CONNECT`, with basic auth.
    Http,
    /// SOCKS5 `CONNECT` by host name (so the upstream resolves it, as `socks5h` means),
    /// with username/password auth (RFC 1929).
    Socks5,
}

impl Protocol {
    pub(super) fn scheme(self) -> &'static str {
        match self {
            Protocol::Http => "http",
            Protocol::Socks5 => "socks5",
        }
    }
}

/// An upstream's address, from `http://host:port`, `socks5://host:port` (or `socks5h`,
/// `socks`), or `host:port` (HTTP); the port defaults to 80 for HTTP, 1080 for SOCKS5.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct ServerAddr {
    pub(super) protocol: Protocol,
    pub(super) host: String,
    pub(super) port: u16,
}

impl ServerAddr {
    pub(super) fn parse(server: &str) -> Result<Self, Failure> {
        let (protocol, rest) = match server.split_once("://") {
            Some((scheme, rest)) => match scheme.to_ascii_lowercase().as_str() {
                "http" => (Protocol::Http, rest),
                "socks5" | "socks5h" | "socks" => (Protocol::Socks5, rest),
                _ => {
                    return Err(Failure::client(format!(
                        "{scheme}:// upstream proxies are not supported; give an HTTP proxy that takes CONNECT (http://host:port) or a SOCKS5 proxy (socks5://host:port)"
                    )));
                }
            },
            None => (Protocol::Http, server),
        };
        let default_port = match protocol {
            Protocol::Http => 80,
            Protocol::Socks5 => 1080,
        };
        let rest = rest.trim_end_matches('/');
        if rest.contains(['/', '@', '?', '#', ' ']) || rest.is_empty() {
            return Err(Failure::client(format!(
                "{server:?} is not host:port (credentials go in username and password)"
            )));
        }
        let (host, port) = match rest.rsplit_once(':') {
            Some((host, port)) if !host.ends_with(':') && !port.contains(']') => (
                host,
                port.parse::<u16>()
                    .ok()
                    .filter(|p| *p != 0)
                    .ok_or_else(|| Failure::client(format!("{server:?} has no valid port")))?,
            ),
            _ => (rest, default_port),
        };
        let host = host.trim_matches(['[', ']']);
        if host.is_empty() {
            return Err(Failure::client(format!("{server:?} names no host")));
        }
        Ok(Self {
            protocol,
            host: host.to_owned(),
            port,
        })
    }
}

impl std::fmt::Display for ServerAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_take_a_scheme_brackets_and_default_ports() {
        assert_eq!(
            ServerAddr::parse("[::1]:8080").unwrap(),
            ServerAddr {
                protocol: Protocol::Http,
                host: "::1".into(),
                port: 8080
            }
        );
        assert_eq!(ServerAddr::parse("http://p.test").unwrap().port, 80);
        for server in ["socks5://p.test", "SOCKS5H://p.test", "socks://p.test"] {
            let addr = ServerAddr::parse(server).unwrap();
            assert_eq!(
                (addr.protocol, addr.port),
                (Protocol::Socks5, 1080),
                "{server}"
            );
        }
    }
}
