//! A session's proxies in the store: passwords sealed with the context key, so the store
//! never holds them in the clear.

use super::pool::ProxyPool;
use super::request::ProxyEntry;
use super::routes::ProxyRoutes;
use crate::fault::Failure;

/// The purpose under which a session's proxy passwords are sealed with the context key.
fn seal_purpose(session: uuid::Uuid) -> String {
    format!("proxy-password:{session}")
}

/// A create's entries as the store keeps them: passwords sealed with the context key (the
/// store never holds them in the clear). The stored form is internal: the API never shows a
/// session's `proxies`.
pub(crate) fn for_store(
    mut entries: Vec<ProxyEntry>,
    session: uuid::Uuid,
    vault: &crate::files::contexts::ContextVault,
) -> serde_json::Value {
    for entry in &mut entries {
        if let ProxyEntry::External {
            password: Some(password),
            ..
        } = entry
        {
            *password = vault.seal_secret(&seal_purpose(session), password);
        }
    }
    serde_json::to_value(entries).expect("proxy entries serialise")
}

/// The routes of a stored session's `proxies`.
pub(crate) fn from_store(
    stored: &serde_json::Value,
    session: uuid::Uuid,
    pool: &ProxyPool,
    vault: &crate::files::contexts::ContextVault,
) -> Result<ProxyRoutes, Failure> {
    // Rows written before browserd took proxies hold `false` (anything else was refused).
    if !stored.is_array() {
        return Ok(ProxyRoutes::default());
    }
    let mut entries: Vec<ProxyEntry> = serde_json::from_value(stored.clone())
        .map_err(|e| Failure::store(format!("the session's stored proxies are unreadable: {e}")))?;
    for entry in &mut entries {
        if let ProxyEntry::External {
            password: Some(password),
            ..
        } = entry
        {
            *password = vault
                .open_secret(&seal_purpose(session), password)
                .map_err(|e| e.within("a proxy password could not be opened: "))?;
        }
    }
    ProxyRoutes::resolve(&entries, pool)
}
