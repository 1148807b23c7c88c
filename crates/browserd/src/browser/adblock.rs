//! `browserSettings.blockAds`: ad and tracker hosts refused at the browser's egress.
//!
//! The hosts come from EasyList and EasyPrivacy as Debian ships them with uBlock Origin
//! (`webext-ublock-origin-chromium`): maintained lists, updated with the package. uBlock
//! itself cannot be loaded: it is a Manifest V2 extension, which Chromium no longer runs.
//! So browserd applies the lists' whole-host rules (`||host^`, about 84,000 of them, and their
//! `@@||host^` exceptions) where it already sees every connection a page makes: a listed host
//! and its subdomains are refused before any byte leaves. Rules for paths, rules with options
//! (`$third-party`, `$domain=`…) and cosmetic filters are not applied.

use crate::fault::Failure;
use std::collections::HashSet;
use std::path::{Path, PathBuf};

/// The lists Debian's uBlock Origin package brings.
pub(crate) const DEBIAN_LISTS: [&str; 2] = [
    "/usr/share/chromium/extensions/ublock-origin/assets/thirdparties/easylist/easylist.txt",
    "/usr/share/chromium/extensions/ublock-origin/assets/thirdparties/easylist/easyprivacy.txt",
];

/// Hosts whose connections `blockAds` refuses.
#[derive(Debug, Default)]
pub struct AdHosts {
    blocked: HashSet<String>,
    excepted: HashSet<String>,
    /// The files they came from, for messages.
    pub sources: Vec<PathBuf>,
}

impl AdHosts {
    /// Reads filter lists; `Ok(None)` if none of them exists (the package is not installed).
    pub fn load(paths: &[PathBuf]) -> Result<Option<Self>, Failure> {
        let mut hosts = Self::default();
        for path in paths {
            match std::fs::read_to_string(path) {
                Ok(text) => {
                    hosts.add_list(&text);
                    hosts.sources.push(path.clone());
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(Failure::operator(format!(
                        "could not read {}: {e}",
                        path.display()
                    )));
                }
            }
        }
        Ok((!hosts.sources.is_empty()).then_some(hosts))
    }

    /// Takes a list's whole-host rules and their exceptions; every other line is skipped.
    pub fn add_list(&mut self, text: &str) {
        for line in text.lines() {
            let (set, rule) = match line.strip_prefix("@@") {
                Some(rule) => (&mut self.excepted, rule),
                None => (&mut self.blocked, line),
            };
            if let Some(host) = rule.strip_prefix("||").and_then(|r| r.strip_suffix('^'))
                && !host.is_empty()
                && host
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
            {
                set.insert(host.to_ascii_lowercase());
            }
        }
    }

    pub fn len(&self) -> usize {
        self.blocked.len()
    }

    pub fn is_empty(&self) -> bool {
        self.blocked.is_empty()
    }

    /// Whether a connection to `host` is refused: it or a parent domain is listed, and
    /// neither it nor a parent domain is excepted.
    pub fn blocks(&self, host: &str) -> bool {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        let suffixes = || {
            std::iter::once(host.as_str()).chain(
                host.match_indices('.')
                    .map(|(i, _)| &host[i + 1..])
                    .filter(|s| !s.is_empty()),
            )
        };
        suffixes().any(|s| self.blocked.contains(s))
            && !suffixes().any(|s| self.excepted.contains(s))
    }
}

/// The default lists, as paths.
pub(crate) fn debian_lists() -> Vec<PathBuf> {
    DEBIAN_LISTS
        .iter()
        .map(|p| Path::new(p).to_path_buf())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_host_rules_block_the_host_and_its_subdomains_unless_excepted() {
        let mut hosts = AdHosts::default();
        hosts.add_list(
            "! comment\n||ads.example^\n||tracker.test^\n@@||ok.tracker.test^\n\
             ||paths.example/banner/\n||opts.example^$third-party\n##.ad-banner\n||^\n",
        );
        assert_eq!(hosts.len(), 2);
        for yes in [
            "ads.example",
            "x.ADS.example.",
            "a.b.tracker.test",
            "tracker.test",
        ] {
            assert!(hosts.blocks(yes), "{yes}");
        }
        for no in [
            "example",
            "notads.example",
            "ok.tracker.test",
            "deep.ok.tracker.test",
            "paths.example",
            "opts.example",
            "ads.example.org",
        ] {
            assert!(!hosts.blocks(no), "{no}");
        }
    }
}
