//! A create's `proxies` as the API takes them (and the store keeps them), checked once.

use super::address::ServerAddr;
use super::tunnel::Upstream;
use crate::fault::Failure;
use serde::{Deserialize, Serialize};

/// One entry of a create's `proxies`, as the API takes it and the store keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum ProxyEntry {
    /// The client's own proxy.
    #[serde(rename_all = "camelCase")]
    External {
        server: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        username: Option<String>,
        /// In the store: sealed with the context key (see [`super::sealed`]).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        password: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        domain_pattern: Option<String>,
    },
    /// Browserbase's own pool; here, the operator's `--proxy-pool`.
    #[serde(rename_all = "camelCase")]
    Browserbase {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        geolocation: Option<Geolocation>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        domain_pattern: Option<String>,
        /// The pool entry chosen at create (kept, so an adopted session uses the same one).
        #[serde(
            default,
            rename = "browserdPoolEntry",
            skip_serializing_if = "Option::is_none"
        )]
        chosen: Option<String>,
    },
    /// Matching hosts go direct.
    #[serde(rename_all = "camelCase")]
    None {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        domain_pattern: Option<String>,
    },
}

impl ProxyEntry {
    pub(super) fn domain_pattern(&self) -> Option<&str> {
        match self {
            ProxyEntry::External { domain_pattern, .. }
            | ProxyEntry::Browserbase { domain_pattern, .. }
            | ProxyEntry::None { domain_pattern } => domain_pattern.as_deref(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Geolocation {
    pub country: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub city: Option<String>,
}

/// Reads a create's `proxies` (`true`, or a list of entries); `Ok(None)`: no proxies (left
/// out, `false` or an empty list). Errors say what is wrong, for a 400.
pub(crate) fn parse_request(value: &serde_json::Value) -> Result<Option<Vec<ProxyEntry>>, Failure> {
    let entries = match value {
        serde_json::Value::Bool(false) | serde_json::Value::Null => return Ok(None),
        serde_json::Value::Bool(true) => vec![ProxyEntry::Browserbase {
            geolocation: None,
            domain_pattern: None,
            chosen: None,
        }],
        serde_json::Value::Array(list) => list
            .iter()
            .enumerate()
            .map(|(i, v)| {
                serde_json::from_value::<ProxyEntry>(v.clone())
                    .map_err(|e| Failure::client(format!("proxies[{i}]: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?,
        _ => {
            return Err(Failure::client(
                "proxies must be true or a list of proxy configurations",
            ));
        }
    };
    if entries.is_empty() {
        return Ok(None);
    }
    for (i, entry) in entries.iter().enumerate() {
        if let Some(pattern) = entry.domain_pattern() {
            compile_pattern(pattern)
                .map_err(|e| e.within(format!("proxies[{i}].domainPattern: ")))?;
        }
        match entry {
            ProxyEntry::External {
                server,
                username,
                password,
                ..
            } => {
                ServerAddr::parse(server)
                    .map_err(|e| e.within(format!("proxies[{i}].server: ")))?;
                // The whole upstream as a session would make it (credentials' limits too).
                Upstream::new(server, username.as_deref(), password.as_deref(), None)
                    .map_err(|e| e.within(format!("proxies[{i}]: ")))?;
            }
            ProxyEntry::Browserbase {
                geolocation: Some(geo),
                ..
            } if geo.country.len() != 2
                || !geo.country.chars().all(|c| c.is_ascii_alphabetic()) =>
            {
                return Err(Failure::client(format!(
                    "proxies[{i}].geolocation.country must be a two-letter ISO 3166 code (got {:?})",
                    geo.country
                )));
            }
            _ => {}
        }
    }
    Ok(Some(entries))
}

/// A domainPattern: a regular expression that must match the whole host name.
pub(super) fn compile_pattern(pattern: &str) -> Result<regex_lite::Regex, Failure> {
    regex_lite::RegexBuilder::new(&format!("^(?:{pattern})$"))
        .case_insensitive(true)
        .size_limit(1 << 20)
        .build()
        .map_err(|e| Failure::client(format!("not a regular expression: {e}")))
}
