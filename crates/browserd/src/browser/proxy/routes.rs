//! Which way each of a session's connections goes, by its `domainPattern`s.

use super::pool::ProxyPool;
use super::request::{ProxyEntry, compile_pattern};
use super::tunnel::Upstream;
use crate::fault::Failure;
use std::sync::Arc;

/// Where one connection goes.
#[derive(Debug, Clone)]
pub enum Via {
    Direct,
    Upstream(Arc<Upstream>),
}

#[derive(Debug)]
struct Route {
    pattern: Option<regex_lite::Regex>,
    via: Via,
}

/// A session's proxies, in order. The rule (also in the README): the first entry whose
/// `domainPattern` matches the whole host name wins; a host that matches none goes through
/// the last entry without a pattern, or direct if every entry has one. No routes: direct.
#[derive(Debug, Default)]
pub struct ProxyRoutes(Vec<Route>);

impl ProxyRoutes {
    /// The routes for stored entries (passwords already opened), with pool entries looked up
    /// by the name chosen at create.
    pub fn resolve(entries: &[ProxyEntry], pool: &ProxyPool) -> Result<Self, Failure> {
        let mut routes = Vec::with_capacity(entries.len());
        for entry in entries {
            let pattern = entry.domain_pattern().map(compile_pattern).transpose()?;
            let via = match entry {
                ProxyEntry::None { .. } => Via::Direct,
                ProxyEntry::External {
                    server,
                    username,
                    password,
                    ..
                } => Via::Upstream(Arc::new(Upstream::new(
                    server,
                    username.as_deref(),
                    password.as_deref(),
                    None,
                )?)),
                ProxyEntry::Browserbase { chosen, .. } => {
                    let name = chosen.as_deref().ok_or_else(|| {
                        Failure::internal("a pool proxy was never chosen for this session")
                    })?;
                    let member = pool.named(name).ok_or_else(|| {
                        Failure::operator(format!(
                            "the proxy pool no longer has {name:?}, the entry this session uses"
                        ))
                    })?;
                    Via::Upstream(Arc::clone(&member.upstream))
                }
            };
            routes.push(Route { pattern, via });
        }
        Ok(Self(routes))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Where a connection to `host` goes.
    pub fn route(&self, host: &str) -> Via {
        let host = host.trim_end_matches('.').trim_matches(['[', ']']);
        if let Some(hit) = self
            .0
            .iter()
            .find(|r| r.pattern.as_ref().is_some_and(|p| p.is_match(host)))
        {
            return hit.via.clone();
        }
        self.0
            .iter()
            .rev()
            .find(|r| r.pattern.is_none())
            .map_or(Via::Direct, |r| r.via.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::browser::proxy::parse_request;
    use serde_json::json;

    fn routes(value: serde_json::Value, pool: &ProxyPool) -> ProxyRoutes {
        let mut entries = parse_request(&value).unwrap().unwrap();
        for e in &mut entries {
            if let ProxyEntry::Browserbase {
                chosen,
                geolocation,
                ..
            } = e
            {
                *chosen = Some(pool.choose(geolocation.as_ref()).unwrap());
            }
        }
        ProxyRoutes::resolve(&entries, pool).unwrap()
    }

    fn label(via: Via) -> String {
        match via {
            Via::Direct => "direct".into(),
            Via::Upstream(u) => u.label.clone(),
        }
    }

    #[test]
    fn the_first_matching_pattern_wins_then_the_last_entry_without_one_then_direct() {
        let pool = ProxyPool::default();
        let r = routes(
            json!([
                {"type": "external", "server": "http://a.test:1", "domainPattern": ".*\\.shop\\.test"},
                {"type": "none", "domainPattern": "direct\\.test|.*\\.direct\\.test"},
                {"type": "external", "server": "b.test:2", "username": "u", "password": "secret"},
                {"type": "external", "server": "c.test:3"},
                {"type": "external", "server": "d.test:4", "domainPattern": ".*"},
            ]),
            &pool,
        );
        assert_eq!(label(r.route("www.shop.test")), "http://a.test:1");
        assert_eq!(label(r.route("WWW.Shop.Test.")), "http://a.test:1");
        // Whole host names only: the pattern does not match inside a longer name.
        assert_eq!(label(r.route("www.shop.test.evil.net")), "http://d.test:4");
        assert_eq!(label(r.route("direct.test")), "direct");
        assert_eq!(label(r.route("a.direct.test")), "direct");
        let only_fallbacks = routes(
            json!([
                {"type": "external", "server": "b.test:2", "username": "u", "password": "secret"},
                {"type": "external", "server": "c.test:3"},
            ]),
            &pool,
        );
        assert_eq!(label(only_fallbacks.route("any.test")), "http://c.test:3");
        let only_patterns = routes(
            json!([{"type": "external", "server": "a.test:1", "domainPattern": "x\\.test"}]),
            &pool,
        );
        assert_eq!(label(only_patterns.route("y.test")), "direct");
        // A label never carries the password.
        let with_user = routes(
            json!([{"type": "external", "server": "b.test:2", "username": "u", "password": "secret"}]),
            &pool,
        );
        let shown = label(with_user.route("x"));
        assert_eq!(shown, "http://u@b.test:2");
        assert!(!format!("{with_user:?}").contains("secret"));
    }

    #[test]
    fn bad_entries_are_named() {
        for (value, says) in [
            (json!("yes"), "proxies must be true or a list"),
            (json!([{"type": "socks"}]), "proxies[0]: unknown variant"),
            (
                json!([{"type": "external"}]),
                "proxies[0]: missing field `server`",
            ),
            (
                json!([{"type": "none"}, {"type": "external", "server": "https://p.test:1"}]),
                "proxies[1].server: https:// upstream",
            ),
            (
                json!([{"type": "external", "server": "http://u:p@p.test:1"}]),
                "credentials go in username",
            ),
            (
                json!([{"type": "external", "server": "p.test:99999"}]),
                "no valid port",
            ),
            (
                json!([{"type": "external", "server": "socks4://p.test:1"}]),
                "socks4:// upstream proxies are not supported",
            ),
            (
                json!([{"type": "external", "server": "socks5://p.test", "username": "u", "password": "x".repeat(256)}]),
                "proxies[0]: a SOCKS5 proxy's username and password go together, 1 to 255 bytes each",
            ),
            (
                json!([{"type": "external", "server": "socks5://p.test", "username": "only-me"}]),
                "proxies[0]: a SOCKS5 proxy's username and password go together",
            ),
            (
                json!([{"type": "none", "domainPattern": "("}]),
                "proxies[0].domainPattern: not a regular expression",
            ),
            (
                json!([{"type": "browserbase", "geolocation": {"country": "Germany"}}]),
                "two-letter",
            ),
        ] {
            let err = parse_request(&value).unwrap_err();
            assert!(err.message().contains(says), "{value}: {err}");
        }
        assert_eq!(parse_request(&json!(false)).unwrap(), None);
        assert_eq!(parse_request(&json!([])).unwrap(), None);
        let upstream =
            Upstream::new("socks5h://p.test:9", Some("u"), Some("secret"), None).unwrap();
        assert_eq!(upstream.label, "socks5://u@p.test:9");
    }
}
