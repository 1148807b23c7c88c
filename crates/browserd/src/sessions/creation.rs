//! Creating a session: what a create names (its context, extension, CA certificates and
//! navigation policy) resolved against the project's own, and what it asks of this server
//! checked, before [`SessionManager::create`] starts anything. The API's handler reads the
//! request and answers; the rules live here, below HTTP.

use super::{CreateError, CreateRequest, SessionManager};
use crate::browser::Viewport;
use crate::browser::proxy::ProxyEntry;
use crate::model::{BrowserSettings, Project, Session};
use crate::store::Store;
use serde_json::{Map, Value};
use std::sync::Arc;

/// A create as a caller asks for it: every field read and checked on its own (the API's
/// params), nothing yet looked up.
#[derive(Debug, Clone)]
pub struct NewSession {
    pub project: Project,
    pub keep_alive: bool,
    /// `None`: the project's default timeout.
    pub timeout_secs: Option<u64>,
    pub region: String,
    pub user_metadata: Option<Map<String, Value>>,
    pub settings: Option<BrowserSettings>,
    pub viewport: Viewport,
    /// The top-level `extensionId`, or `browserSettings.extensionId`.
    pub extension_id: Option<String>,
    /// Checked, pool members chosen.
    pub proxies: Option<Vec<ProxyEntry>>,
    /// `proxySettings.caCertificates`.
    pub ca_certificate_ids: Vec<String>,
}

/// Why a create was refused for what it asked (the client's side: a 4xx).
#[derive(Debug, thiserror::Error)]
pub enum AskError {
    /// It names a context, extension, certificate or navigation policy that is not its
    /// project's.
    #[error("{0}")]
    NotFound(String),
    /// It asks for what this server cannot do, or more than a session may have.
    #[error("{0}")]
    Refused(String),
}

impl SessionManager {
    /// Resolves and checks `ask` against `resources` (the project's contexts, extensions,
    /// certificates and policies), then creates the session.
    pub async fn create_session(
        self: &Arc<Self>,
        resources: &Store,
        ask: NewSession,
    ) -> Result<Session, CreateError> {
        let project = ask.project.id.clone();
        let mut settings = ask.settings;
        // A navigation policy is copied into the session as it is now: later edits (or its
        // deletion) do not change what a running session may reach.
        if let Some(settings) = settings.as_mut()
            && let Some(id) = settings.risk_policy_id.clone()
        {
            let policy = owned("navigation policy", &id, &project, |id| async move {
                resources
                    .navigation_policies
                    .get_policy(&id.to_string())
                    .await
            })
            .await
            .map_err(|e| match e {
                CreateError::Asked(AskError::NotFound(m)) => {
                    AskError::NotFound(format!("browserSettings.riskPolicyId: {m}")).into()
                }
                e => e,
            })?;
            if !policy.rules.enabled {
                return Err(AskError::Refused(format!(
                    "browserSettings.riskPolicyId: navigation policy {id} is disabled; enable it or name another"
                ))
                .into());
            }
            settings.navigation_policy = Some(policy.rules);
        }
        self.check_capabilities(settings.as_ref(), ask.proxies.is_some())
            .await?;
        // Each must be this project's; resolved now so a wrong id is a 404, not a failed
        // launch.
        if let Some(context) = settings.as_ref().and_then(|s| s.context.as_ref()) {
            owned("context", &context.id, &project, |id| async move {
                resources.contexts.get_context(&id.to_string()).await
            })
            .await?;
        }
        let extension_dir = match &ask.extension_id {
            Some(id) => {
                let extension = owned("extension", id, &project, |id| async move {
                    resources.extensions.get_extension(&id.to_string()).await
                })
                .await?;
                let dir = self.files.local_extension(&extension).await.map_err(|e| {
                    CreateError::Internal(format!("extension {id} could not be unpacked here: {e}"))
                })?;
                Some(dir)
            }
            None => None,
        };
        let mut ca_certificates = Vec::new();
        for id in &ask.ca_certificate_ids {
            let certificate = owned("certificate", id, &project, |id| async move {
                resources
                    .certificates
                    .get_certificate(&id.to_string())
                    .await
            })
            .await?;
            ca_certificates.push(certificate.pem);
        }
        // Each certificate is a sandboxed certutil run at launch: bounded per session.
        let installed: usize = ca_certificates
            .iter()
            .map(|pem| crate::browser::trust::count(pem))
            .sum();
        if installed > crate::browser::trust::MAX_CERTIFICATES_PER_SESSION {
            return Err(AskError::Refused(format!(
                "proxySettings.caCertificates: the files named hold {installed} certificates; a session trusts at most {}",
                crate::browser::trust::MAX_CERTIFICATES_PER_SESSION
            ))
            .into());
        }
        self.create(CreateRequest {
            project: ask.project,
            keep_alive: ask.keep_alive,
            timeout_secs: ask.timeout_secs,
            region: ask.region,
            user_metadata: ask.user_metadata,
            viewport: ask.viewport,
            browser_settings: settings,
            extension_id: ask.extension_id,
            extension_dir,
            proxies: ask.proxies,
            ca_certificates,
        })
        .await
    }

    /// What a session asks that only browsers in browserd's sandbox can do (their pages
    /// leave only through browserd), and ad blocking without lists, are refused rather than
    /// ignored.
    async fn check_capabilities(
        &self,
        settings: Option<&BrowserSettings>,
        proxies: bool,
    ) -> Result<(), CreateError> {
        let block_ads = settings.and_then(|s| s.block_ads).unwrap_or(false);
        for (asked, field) in [
            (
                settings.is_some_and(|s| s.navigation_policy.is_some()),
                "browserSettings.riskPolicyId",
            ),
            (
                settings.is_some_and(|s| s.allowed_domains().is_some()),
                "browserSettings.allowedDomains",
            ),
            (block_ads, "browserSettings.blockAds"),
            (proxies, "proxies"),
        ] {
            if asked && !self.enforces_egress() {
                return Err(AskError::Refused(format!(
                    "{field} needs browsers in browserd's sandbox (their pages leave only through browserd), which this server does not run (--sandbox off, or not root): refused rather than ignored"
                ))
                .into());
            }
        }
        if block_ads {
            match self.ad_hosts().await {
                Ok(Some(_)) => {}
                Ok(None) => {
                    return Err(AskError::Refused(
                        "browserSettings.blockAds: this server has no ad-block lists (its operator can install Debian's webext-ublock-origin-chromium or give --block-ads-lists): refused rather than ignored".into(),
                    )
                    .into());
                }
                Err(e) => {
                    return Err(CreateError::Internal(format!(
                        "browserSettings.blockAds: the ad-block lists could not be read: {e}"
                    )));
                }
            }
        }
        Ok(())
    }
}

/// The record `id` names, if it is `project`'s (see [`crate::store::owned_by`]).
async fn owned<T, Fut>(
    what: &str,
    id: &str,
    project: &str,
    fetch: impl FnOnce(uuid::Uuid) -> Fut,
) -> Result<T, CreateError>
where
    T: crate::model::ProjectOwned,
    Fut: std::future::Future<Output = crate::store::Result<Option<T>>>,
{
    crate::store::owned_by(project, id, fetch)
        .await?
        .ok_or_else(|| AskError::NotFound(format!("{what} {id} not found")).into())
}
