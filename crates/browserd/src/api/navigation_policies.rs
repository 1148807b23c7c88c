//! `/v1/navigation-policies` (Node SDK 2.24): a project's named rules on where its
//! sessions' pages may go, named by a create's `browserSettings.riskPolicyId`.
//!
//! Domain overrides and the default decision are enforced; category rules need a feed that
//! classifies every domain, which browserd does not have, so a policy with any is refused
//! (400) rather than stored and not kept. A session keeps the policy as it was when the
//! session was created; later edits apply to new sessions.

use super::error::ApiError;
use super::params::Fields;
use super::{AppState, Auth, JsonObject};
use crate::model::{Decision, DomainOverride, NavigationPolicy, PolicyRules};
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::Value;

/// Browserbase's category names (the SDK's enum).
const CATEGORIES: &[&str] = &[
    "adult",
    "ai-tools",
    "alcohol-tobacco",
    "business",
    "child-abuse",
    "communication",
    "dating",
    "drugs",
    "education",
    "entertainment",
    "finance",
    "gambling",
    "games",
    "government-military",
    "hacking",
    "hate",
    "health",
    "illegal-activity",
    "infrastructure",
    "kids",
    "lifestyle",
    "malware",
    "newly-registered",
    "news",
    "parked-inactive",
    "phishing-scams",
    "piracy",
    "proxy-anonymizer",
    "search-portal",
    "self-harm",
    "shopping",
    "social-media",
    "society-culture",
    "sports",
    "technology",
    "terrorism-extremism",
    "travel",
    "url-shortener",
    "violence",
    "weapons",
];

/// Most policies one project keeps, and most overrides one policy holds: each session
/// copies its policy, and each connection is checked against its overrides.
const MAX_POLICIES_PER_PROJECT: usize = 100;
const MAX_OVERRIDES: usize = 1000;
const MAX_NAME_CHARS: usize = 200;
const MAX_DESCRIPTION_CHARS: usize = 2000;

/// The fields a create or update may give.
const FIELDS: &[&str] = &[
    "name",
    "description",
    "enabled",
    "defaultDecision",
    "unknownDomainBehavior",
    "allowedCategories",
    "blockedCategories",
    "domainOverrides",
];

/// `POST /v1/navigation-policies`. Omitted fields: enabled, block by default, block unknown.
pub(super) async fn create(
    State(state): State<AppState>,
    auth: Auth,
    JsonObject(body): JsonObject,
) -> Result<Response, ApiError> {
    let fields = Fields(&body);
    let name =
        checked_name(&fields)?.ok_or_else(|| ApiError::BadRequest("name is required".into()))?;
    let defaults = PolicyRules {
        description: String::new(),
        enabled: true,
        default_decision: Decision::Block,
        unknown_domain_behavior: Decision::Block,
        allowed_categories: Vec::new(),
        blocked_categories: Vec::new(),
        domain_overrides: Vec::new(),
    };
    let rules = apply(&fields, defaults)?;
    let kept = state
        .store
        .navigation_policies
        .list_policies(&auth.0.id)
        .await?
        .len();
    if kept >= MAX_POLICIES_PER_PROJECT {
        return Err(ApiError::BadRequest(format!(
            "this project keeps {kept} navigation policies, the most it may: delete one first"
        )));
    }
    let now = crate::model::now();
    let policy = NavigationPolicy {
        id: uuid::Uuid::new_v4().to_string(),
        project_id: auth.0.id.clone(),
        name,
        rules,
        created_at: now,
        updated_at: now,
    };
    state
        .store
        .navigation_policies
        .insert_policy(&policy)
        .await?;
    Ok(Json(policy.to_json()).into_response())
}

/// `GET /v1/navigation-policies`: the project's, by name, as `{data: [...]}`.
pub(super) async fn list(State(state): State<AppState>, auth: Auth) -> Result<Response, ApiError> {
    let policies = state
        .store
        .navigation_policies
        .list_policies(&auth.0.id)
        .await?;
    let data: Vec<Value> = policies.iter().map(NavigationPolicy::to_json).collect();
    Ok(Json(serde_json::json!({ "data": data })).into_response())
}

/// A policy of the caller's project; another project's is "not found".
pub(super) async fn owned_policy(
    state: &AppState,
    auth: &Auth,
    id: &str,
) -> Result<NavigationPolicy, ApiError> {
    super::owned(auth, "navigation policy", id, |uuid| async move {
        state
            .store
            .navigation_policies
            .get_policy(&uuid.to_string())
            .await
    })
    .await
}

/// `GET /v1/navigation-policies/{id}`.
pub(super) async fn retrieve(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let policy = owned_policy(&state, &auth, &id).await?;
    Ok(Json(policy.to_json()).into_response())
}

/// `PATCH /v1/navigation-policies/{id}`: the fields given replace the stored ones.
pub(super) async fn update(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
    JsonObject(body): JsonObject,
) -> Result<Response, ApiError> {
    let mut policy = owned_policy(&state, &auth, &id).await?;
    let fields = Fields(&body);
    if let Some(name) = checked_name(&fields)? {
        policy.name = name;
    }
    policy.rules = apply(&fields, policy.rules)?;
    policy.updated_at = crate::model::now();
    if !state
        .store
        .navigation_policies
        .update_policy(&policy)
        .await?
    {
        return Err(ApiError::NotFound(format!(
            "navigation policy {id} not found"
        )));
    }
    Ok(Json(policy.to_json()).into_response())
}

/// `DELETE /v1/navigation-policies/{id}`: running sessions keep their copy.
pub(super) async fn delete(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let policy = owned_policy(&state, &auth, &id).await?;
    state
        .store
        .navigation_policies
        .delete_policy(&policy.id)
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

fn checked_name(fields: &Fields<'_>) -> Result<Option<String>, ApiError> {
    match fields.str("name")? {
        None => Ok(None),
        Some(name) => {
            let name = name.trim();
            if name.is_empty() || name.chars().count() > MAX_NAME_CHARS || name.contains('\0') {
                return Err(ApiError::BadRequest(format!(
                    "name must be 1 to {MAX_NAME_CHARS} characters"
                )));
            }
            Ok(Some(name.to_owned()))
        }
    }
}

/// `rules` with the fields given in a create or update, each checked.
fn apply(fields: &Fields<'_>, mut rules: PolicyRules) -> Result<PolicyRules, ApiError> {
    if let Some(unknown) = fields
        .0
        .keys()
        .find(|k| !FIELDS.contains(&k.as_str()) && *k != "projectId")
    {
        return Err(ApiError::BadRequest(format!(
            "{unknown} is not a navigation policy field (fields: {})",
            FIELDS.join(", ")
        )));
    }
    if let Some(description) = fields.str("description")? {
        if description.chars().count() > MAX_DESCRIPTION_CHARS || description.contains('\0') {
            return Err(ApiError::BadRequest(format!(
                "description must be at most {MAX_DESCRIPTION_CHARS} characters"
            )));
        }
        rules.description = description.to_owned();
    }
    if let Some(enabled) = fields.bool("enabled")? {
        rules.enabled = enabled;
    }
    if let Some(d) = decision(fields, "defaultDecision")? {
        rules.default_decision = d;
    }
    if let Some(d) = decision(fields, "unknownDomainBehavior")? {
        rules.unknown_domain_behavior = d;
    }
    for (name, list) in [
        ("allowedCategories", &mut rules.allowed_categories),
        ("blockedCategories", &mut rules.blocked_categories),
    ] {
        let Some(value) = fields.value(name) else {
            continue;
        };
        let given = value
            .as_array()
            .ok_or_else(|| ApiError::BadRequest(format!("{name} must be a list of categories")))?;
        for c in given {
            let c = c.as_str().unwrap_or_default();
            if !CATEGORIES.contains(&c) {
                return Err(ApiError::BadRequest(format!(
                    "{name}: {c:?} is not a category (categories: {})",
                    CATEGORIES.join(", ")
                )));
            }
        }
        if !given.is_empty() {
            return Err(ApiError::BadRequest(format!(
                "{name}: category rules need a feed that classifies every domain, which this browserd does not have; it refuses them rather than store a rule it cannot keep (use domainOverrides and defaultDecision)"
            )));
        }
        list.clear();
    }
    if let Some(value) = fields.value("domainOverrides") {
        let given = value.as_array().ok_or_else(|| {
            ApiError::BadRequest("domainOverrides must be a list of {domain, decision}".into())
        })?;
        if given.len() > MAX_OVERRIDES {
            return Err(ApiError::BadRequest(format!(
                "domainOverrides holds {} entries; a policy holds at most {MAX_OVERRIDES}",
                given.len()
            )));
        }
        let mut overrides = Vec::with_capacity(given.len());
        for (i, entry) in given.iter().enumerate() {
            let entry = entry.as_object().ok_or_else(|| {
                ApiError::BadRequest(format!("domainOverrides[{i}] must be {{domain, decision}}"))
            })?;
            let entry = Fields(entry);
            let domain = entry
                .str("domain")
                .map_err(|_| {
                    ApiError::BadRequest(format!("domainOverrides[{i}].domain must be a string"))
                })?
                .ok_or_else(|| {
                    ApiError::BadRequest(format!("domainOverrides[{i}].domain is required"))
                })?;
            crate::browser::egress::AllowedHosts::parse([domain])
                .map_err(|e| ApiError::BadRequest(format!("domainOverrides[{i}].domain: {e}")))?;
            let decision = decision(&entry, "decision")
                .map_err(|_| {
                    ApiError::BadRequest(format!(
                        "domainOverrides[{i}].decision must be allow or block"
                    ))
                })?
                .ok_or_else(|| {
                    ApiError::BadRequest(format!("domainOverrides[{i}].decision is required"))
                })?;
            overrides.push(DomainOverride {
                domain: PolicyRules::normalise_domain(domain),
                decision,
            });
        }
        rules.domain_overrides = overrides;
    }
    Ok(rules)
}

fn decision(fields: &Fields<'_>, name: &str) -> Result<Option<Decision>, ApiError> {
    match fields.str(name)? {
        None => Ok(None),
        Some("allow") => Ok(Some(Decision::Allow)),
        Some("block") => Ok(Some(Decision::Block)),
        Some(other) => Err(ApiError::BadRequest(format!(
            "{name} must be allow or block (got {other:?})"
        ))),
    }
}
