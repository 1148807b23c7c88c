//! The operator's upstream proxies (`--proxy-pool FILE`) and the choice among them.

use super::request::{Geolocation, ProxyEntry};
use super::tunnel::Upstream;
use crate::fault::{Failure, Side};
use serde::Deserialize;
use std::sync::Arc;

/// The operator's upstream proxies (`--proxy-pool FILE`), for `proxies: true` and
/// `type: "browserbase"`.
#[derive(Debug, Default)]
pub struct ProxyPool(Vec<PoolMember>);

#[derive(Debug)]
pub(super) struct PoolMember {
    name: String,
    country: Option<String>,
    state: Option<String>,
    city: Option<String>,
    pub(super) upstream: Arc<Upstream>,
}

/// The pool file's shape: `[[proxy]]` tables.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PoolFile {
    #[serde(default)]
    proxy: Vec<PoolFileEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PoolFileEntry {
    name: Option<String>,
    server: String,
    username: Option<String>,
    password: Option<String>,
    country: Option<String>,
    state: Option<String>,
    city: Option<String>,
    /// Ask this proxy for host names (it resolves them) instead of the addresses browserd
    /// resolved and judged: for a proxy that is neither on this machine nor in a network
    /// pages must not reach (docs/security.md).
    #[serde(default)]
    remote_dns: bool,
}

impl ProxyPool {
    /// Reads a pool file; errors name the entry at fault.
    pub fn load(path: &std::path::Path) -> Result<Self, Failure> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Failure::operator(format!("could not read {}: {e}", path.display())))?;
        Self::parse(&text).map_err(|e| e.within(format!("{}: ", path.display())))
    }

    /// Reads a pool file's text; its errors are the operator's.
    pub fn parse(text: &str) -> Result<Self, Failure> {
        let file: PoolFile = toml::from_str(text).map_err(|e| Failure::operator(e.to_string()))?;
        let mut members: Vec<PoolMember> = Vec::new();
        for (i, entry) in file.proxy.into_iter().enumerate() {
            let name = entry.name.unwrap_or_else(|| format!("proxy{}", i + 1));
            if members.iter().any(|m| m.name == name) {
                return Err(Failure::operator(format!("two proxies are named {name:?}")));
            }
            let mut upstream = Upstream::new(
                &entry.server,
                entry.username.as_deref(),
                entry.password.as_deref(),
                Some(&name),
            )
            .map_err(|e| e.on(Side::Operator).within(format!("proxy {name:?}: ")))?;
            upstream.remote_dns = entry.remote_dns;
            members.push(PoolMember {
                name,
                country: entry.country,
                state: entry.state,
                city: entry.city,
                upstream: Arc::new(upstream),
            });
        }
        Ok(Self(members))
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub(super) fn named(&self, name: &str) -> Option<&PoolMember> {
        self.0.iter().find(|m| m.name == name)
    }

    /// Picks, at random, a member that serves `geolocation` (any, without one): its name.
    pub fn choose(&self, geolocation: Option<&Geolocation>) -> Result<String, Failure> {
        if self.0.is_empty() {
            return Err(Failure::client(
                "this server has no proxy pool (its operator can give one with --proxy-pool); use proxies of type \"external\" with your own proxy",
            ));
        }
        let same = |want: &Option<String>, have: &Option<String>| match (want, have) {
            (None, _) => true,
            (Some(w), Some(h)) => squash(w) == squash(h),
            (Some(_), None) => false,
        };
        let matching: Vec<&PoolMember> = self
            .0
            .iter()
            .filter(|m| {
                geolocation.is_none_or(|g| {
                    same(&Some(g.country.clone()), &m.country)
                        && same(&g.state, &m.state)
                        && same(&g.city, &m.city)
                })
            })
            .collect();
        if matching.is_empty() {
            let geo = geolocation.expect("every member serves a request without a geolocation");
            let place = [
                Some(&geo.city),
                Some(&geo.state),
                Some(&Some(geo.country.clone())),
            ]
            .into_iter()
            .flatten()
            .flatten()
            .cloned()
            .collect::<Vec<_>>()
            .join(", ");
            return Err(Failure::client(format!(
                "no proxy in this server's pool serves {place}; leave geolocation out, or ask its operator"
            )));
        }
        let mut random = [0u8; 8];
        getrandom::fill(&mut random).expect("the OS random source is available");
        let pick = u64::from_le_bytes(random) as usize % matching.len();
        Ok(matching[pick].name.clone())
    }
}

/// Places compared without case, spaces, dashes or underscores ("New York" = "newyork").
fn squash(s: &str) -> String {
    s.chars()
        .filter(|c| !matches!(c, ' ' | '-' | '_'))
        .flat_map(char::to_lowercase)
        .collect()
}

/// Chooses the pool member of each pool entry; the error says why none serves it.
pub(crate) fn choose_from_pool(
    entries: &mut [ProxyEntry],
    pool: &ProxyPool,
) -> Result<(), Failure> {
    for entry in entries {
        if let ProxyEntry::Browserbase {
            geolocation,
            chosen,
            ..
        } = entry
        {
            *chosen = Some(pool.choose(geolocation.as_ref())?);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pool_serves_geolocations_and_says_when_it_cannot() {
        let pool = ProxyPool::parse(
            r#"
            [[proxy]]
            name = "us-ny"
            server = "http://127.0.0.1:3001"
            username = "u"
            password = "p"
            country = "US"
            state = "NY"
            city = "New York"
            [[proxy]]
            name = "de"
            server = "127.0.0.1:3002"
            country = "de"
            "#,
        )
        .unwrap();
        let geo = |c: &str, s: Option<&str>, city: Option<&str>| Geolocation {
            country: c.into(),
            state: s.map(Into::into),
            city: city.map(Into::into),
        };
        assert_eq!(
            pool.choose(Some(&geo("US", Some("ny"), Some("new_york"))))
                .unwrap(),
            "us-ny"
        );
        assert_eq!(pool.choose(Some(&geo("DE", None, None))).unwrap(), "de");
        let err = pool
            .choose(Some(&geo("DE", None, Some("Berlin"))))
            .unwrap_err();
        assert!(
            err.message()
                .contains("no proxy in this server's pool serves Berlin, DE"),
            "{err}"
        );
        assert!(pool.choose(None).is_ok());
        let none = ProxyPool::default().choose(None).unwrap_err();
        assert!(none.message().contains("--proxy-pool"), "{none}");
        assert!(
            ProxyPool::parse(
                "[[proxy]]\nserver = \"a:1\"\n[[proxy]]\nname = \"proxy1\"\nserver = \"b:2\""
            )
            .is_err()
        );
        assert!(ProxyPool::parse("[[proxy]]\nserver = \"a:1\"\npasword = \"typo\"").is_err());
    }
}
