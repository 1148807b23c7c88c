//! The records browserd keeps, and their Browserbase-shaped JSON.
//!
//! Field names and types follow the Browserbase SDKs' `Session` and `Project` types
//! (see shared/reference/browserbase-api.md §4); every field the SDKs mark required is always sent.

use serde::Serialize;
use serde_json::{Map, Value};
use time::OffsetDateTime;
use uuid::Uuid;

/// Longest session the Browserbase contract allows: 6 hours.
pub const MAX_TIMEOUT_SECS: u64 = 21_600;

/// Where a session is in its life. `PENDING` while its browser starts, `RUNNING` once a
/// client can connect, then exactly one of the three end states.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum SessionStatus {
    Pending,
    Running,
    Completed,
    TimedOut,
    Error,
}

impl SessionStatus {
    pub const ALL: [SessionStatus; 5] = [
        Self::Pending,
        Self::Running,
        Self::Completed,
        Self::TimedOut,
        Self::Error,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "PENDING",
            Self::Running => "RUNNING",
            Self::Completed => "COMPLETED",
            Self::TimedOut => "TIMED_OUT",
            Self::Error => "ERROR",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|v| v.as_str() == s)
    }

    /// Whether this status means the session has ended for good.
    pub fn is_ended(self) -> bool {
        matches!(self, Self::Completed | Self::TimedOut | Self::Error)
    }
}

/// How a session ended: its final status (one of the three end states) and a reason a
/// user can act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ending {
    pub status: SessionStatus,
    pub reason: String,
}

impl Ending {
    pub fn error(reason: impl Into<String>) -> Self {
        Self {
            status: SessionStatus::Error,
            reason: reason.into(),
        }
    }
}

/// Why a session's clients are closed. Set once per session on this server: when the
/// session has ended, or when this browserd stops and leaves it running for the next one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Farewell {
    Ended(Ending),
    /// browserd is stopping; the session and its browser go on (keepAlive across a restart).
    Detached {
        reason: String,
    },
}

impl Farewell {
    pub fn reason(&self) -> &str {
        match self {
            Self::Ended(ending) => &ending.reason,
            Self::Detached { reason } => reason,
        }
    }
}

/// One session as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct Session {
    pub id: Uuid,
    pub project_id: String,
    pub status: SessionStatus,
    pub keep_alive: bool,
    pub timeout_secs: u64,
    pub region: String,
    pub user_metadata: Option<Map<String, Value>>,
    /// `browserSettings` as the API checked them (unknown fields dropped).
    pub browser_settings: Option<BrowserSettings>,
    pub extension_id: Option<String>,
    pub proxies: Option<Value>,
    /// Bytes through upstream proxies so far (`proxyBytes`).
    pub proxy_bytes: u64,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
    pub started_at: OffsetDateTime,
    pub expires_at: OffsetDateTime,
    pub ended_at: Option<OffsetDateTime>,
    /// Why the session ended, in words a user can act on (not part of the Browserbase shape).
    pub end_reason: Option<String>,
    /// Where its browser runs, once it runs (not part of the Browserbase shape).
    pub browser: Option<BrowserRecord>,
    /// The node that runs it (`--node-name`); `None` for rows of a browserd older than
    /// node names, which only the single node of their data dir can own.
    pub node: Option<String>,
}

/// A session's `browserSettings`, checked once by the API and kept in the store as JSON
/// with the API's names. Every field is optional, as in a create; the defaults are where
/// they are used (`logSession` and `recordSession` on, the rest off).
#[derive(Debug, Clone, Default, PartialEq, Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BrowserSettings {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<ContextSetting>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extension_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub viewport: Option<ViewportSetting>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub block_ads: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub record_session: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_session: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ignore_certificate_errors: Option<bool>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "domains_as_stored"
    )]
    pub allowed_domains: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub risk_policy_id: Option<String>,
    /// `riskPolicyId`'s rules as they were at create (browserd's copy, not a client field):
    /// later edits do not change what a running session may reach.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub navigation_policy: Option<PolicyRules>,
    /// Accepted and kept, without effect (stealth and captcha solving; the API names them
    /// in its answer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub solve_captchas: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub advanced_stealth: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verified: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub captcha_image_selector: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub captcha_input_selector: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub os: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<Value>,
}

impl BrowserSettings {
    /// The domains a `allowedDomains` restricts the session to; `None`: unrestricted (left
    /// out or empty).
    pub fn allowed_domains(&self) -> Option<&[String]> {
        self.allowed_domains.as_deref().filter(|d| !d.is_empty())
    }
}

/// `browserSettings.context`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct ContextSetting {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub persist: Option<bool>,
}

/// `browserSettings.viewport`: either side may be left out (the default's is used).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct ViewportSetting {
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "whole_number"
    )]
    pub width: Option<u32>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "whole_number"
    )]
    pub height: Option<u32>,
}

/// `allowedDomains` as rows hold it. browserd releases before the API checked it stored what
/// the client sent; the supervisor of that time read a value that was not a list as no
/// restriction, and a list's entries that were not strings as absent: so here.
fn domains_as_stored<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<Vec<String>>, D::Error> {
    let value: Option<Value> = serde::Deserialize::deserialize(d)?;
    Ok(match value {
        Some(Value::Array(list)) => Some(
            list.into_iter()
                .filter_map(|v| match v {
                    Value::String(s) => Some(s),
                    _ => None,
                })
                .collect(),
        ),
        _ => None,
    })
}

/// A pixel count as JSON clients write it: `1280` or `1280.0` (rows kept before the
/// settings were typed hold what the client sent).
fn whole_number<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    let number: Option<f64> = serde::Deserialize::deserialize(d)?;
    number
        .map(|n| {
            (n.fract() == 0.0 && (0.0..=f64::from(u32::MAX)).contains(&n))
                .then_some(n as u32)
                .ok_or_else(|| {
                    serde::de::Error::custom(format!("{n} is not a whole number of pixels"))
                })
        })
        .transpose()
}

/// Records that belong to one project.
pub trait ProjectOwned {
    fn project_id(&self) -> &str;
}

impl ProjectOwned for Session {
    fn project_id(&self) -> &str {
        &self.project_id
    }
}

impl ProjectOwned for NavigationPolicy {
    fn project_id(&self) -> &str {
        &self.project_id
    }
}

impl ProjectOwned for Context {
    fn project_id(&self) -> &str {
        &self.project_id
    }
}

impl ProjectOwned for Certificate {
    fn project_id(&self) -> &str {
        &self.project_id
    }
}

impl ProjectOwned for Extension {
    fn project_id(&self) -> &str {
        &self.project_id
    }
}

/// Enough about a running browser to find it again after a browserd restart, and to be
/// sure it is the same process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrowserRecord {
    pub pid: u32,
    /// The process's start time in clock ticks since boot (`/proc/<pid>/stat`, field 22).
    pub start_ticks: u64,
    pub dir: std::path::PathBuf,
    pub cdp_url: String,
}

/// A project: owner of sessions and API keys.
#[derive(Debug, Clone, PartialEq)]
pub struct Project {
    pub id: String,
    pub name: String,
    pub owner_id: String,
    pub default_timeout_secs: u64,
    pub concurrency: u32,
    /// Sessions it may create per minute; 0: no limit.
    pub creations_per_minute: u32,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
}

/// The Browserbase `Session` JSON object.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionJson<'a> {
    pub id: Uuid,
    pub created_at: String,
    pub updated_at: String,
    pub project_id: &'a str,
    pub started_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<String>,
    pub expires_at: String,
    pub status: SessionStatus,
    pub proxy_bytes: u64,
    pub keep_alive: bool,
    pub region: &'a str,
    /// Seconds; not in the SDK types, harmless to them, useful to people reading raw JSON.
    pub timeout: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub context_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_metadata: Option<&'a Map<String, Value>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub end_reason: Option<&'a str>,
}

impl Session {
    pub fn to_json(&self) -> SessionJson<'_> {
        SessionJson {
            id: self.id,
            created_at: fmt_time(self.created_at),
            updated_at: fmt_time(self.updated_at),
            project_id: &self.project_id,
            started_at: fmt_time(self.started_at),
            ended_at: self.ended_at.map(fmt_time),
            expires_at: fmt_time(self.expires_at),
            status: self.status,
            proxy_bytes: self.proxy_bytes,
            keep_alive: self.keep_alive,
            region: &self.region,
            timeout: self.timeout_secs,
            context_id: self.context().map(|c| c.id),
            user_metadata: self.user_metadata.as_ref(),
            end_reason: self.end_reason.as_deref(),
        }
    }

    /// The context the session was started with (`browserSettings.context`), if any.
    pub fn context(&self) -> Option<ContextUse<'_>> {
        let ctx = self.browser_settings.as_ref()?.context.as_ref()?;
        Some(ContextUse {
            id: &ctx.id,
            persist: ctx.persist.unwrap_or(false),
        })
    }

    /// Browser minutes this session is billed for: its running time rounded up to whole
    /// minutes, at least one (as Browserbase counts them).
    pub fn browser_minutes(&self, now: OffsetDateTime) -> u64 {
        if self.status == SessionStatus::Pending {
            return 0;
        }
        let end = self.ended_at.unwrap_or(now);
        let secs = (end - self.started_at).whole_seconds().max(0) as u64;
        secs.div_ceil(60).max(1)
    }
}

/// A session's use of a context: which one, and whether its profile is saved back at the end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ContextUse<'a> {
    pub id: &'a str,
    pub persist: bool,
}

/// A saved browser profile's record; the profile itself is a file (kept by the `files` module).
#[derive(Debug, Clone, PartialEq)]
pub struct Context {
    pub id: String,
    pub project_id: String,
    pub name: Option<String>,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
}

/// The Browserbase `Context` JSON object (`GET /v1/contexts/{id}`).
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ContextJson<'a> {
    pub id: &'a str,
    pub created_at: String,
    pub updated_at: String,
    pub project_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<&'a str>,
}

impl Context {
    pub fn to_json(&self) -> ContextJson<'_> {
        ContextJson {
            id: &self.id,
            created_at: fmt_time(self.created_at),
            updated_at: fmt_time(self.updated_at),
            project_id: &self.project_id,
            name: self.name.as_deref(),
        }
    }
}

/// An uploaded browser extension's record; its unpacked files live in the data dir.
#[derive(Debug, Clone, PartialEq)]
pub struct Extension {
    pub id: String,
    pub project_id: String,
    pub file_name: String,
    /// The SHA-256 of its zip (hex): identical uploads share one unpacked folder, which warm
    /// browsers can hold (`None`: a row from before, with a folder of its own).
    pub content: Option<String>,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
}

/// The Browserbase `Extension` JSON object.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ExtensionJson<'a> {
    pub id: &'a str,
    pub created_at: String,
    pub updated_at: String,
    pub file_name: &'a str,
    pub project_id: &'a str,
}

impl Extension {
    /// The name its unpacked folder and shared zip are kept under: its content (shared by
    /// identical uploads), or its id for a row from before content folders.
    pub fn files_key(&self) -> &str {
        self.content.as_deref().unwrap_or(&self.id)
    }

    pub fn to_json(&self) -> ExtensionJson<'_> {
        ExtensionJson {
            id: &self.id,
            created_at: fmt_time(self.created_at),
            updated_at: fmt_time(self.updated_at),
            file_name: &self.file_name,
            project_id: &self.project_id,
        }
    }
}

/// A CA certificate a project's sessions may trust (`proxySettings.caCertificates`).
#[derive(Debug, Clone, PartialEq)]
pub struct Certificate {
    pub id: String,
    pub project_id: String,
    /// One or more `CERTIFICATE` blocks; never shown by the API.
    pub pem: String,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
}

/// The Browserbase `Certificate` JSON object.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CertificateJson<'a> {
    pub id: &'a str,
    pub created_at: String,
    pub updated_at: String,
    pub project_id: &'a str,
}

impl Certificate {
    pub fn to_json(&self) -> CertificateJson<'_> {
        CertificateJson {
            id: &self.id,
            created_at: fmt_time(self.created_at),
            updated_at: fmt_time(self.updated_at),
            project_id: &self.project_id,
        }
    }
}

/// A navigation policy (Node SDK 2.24): a project's named rules on where its sessions'
/// pages may go, named by `browserSettings.riskPolicyId`.
#[derive(Debug, Clone, PartialEq)]
pub struct NavigationPolicy {
    pub id: String,
    pub project_id: String,
    pub name: String,
    pub rules: PolicyRules,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
}

/// Allow or block.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Decision {
    Allow,
    Block,
}

/// One domain's decision, before anything else (the domain and its subdomains).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct DomainOverride {
    pub domain: String,
    pub decision: Decision,
}

/// What a navigation policy decides: stored as JSON, copied into each session naming it.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicyRules {
    pub description: String,
    pub enabled: bool,
    pub default_decision: Decision,
    pub unknown_domain_behavior: Decision,
    pub allowed_categories: Vec<String>,
    pub blocked_categories: Vec<String>,
    pub domain_overrides: Vec<DomainOverride>,
}

impl PolicyRules {
    /// The decision on `host`: the most specific domain override that covers it (the
    /// domain itself or a parent, case aside), else the default. Categories have no feed
    /// here, so policies with category rules are refused before they are stored.
    pub fn decide(&self, host: &str) -> Decision {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        let host = host.trim_matches(['[', ']']);
        // An address is matched as an address, in its one canonical spelling (an
        // IPv4-mapped IPv6 address is its IPv4 address), never as a name's suffix.
        let address = host
            .parse::<std::net::IpAddr>()
            .ok()
            .map(|ip| ip.to_canonical().to_string());
        self.domain_overrides
            .iter()
            .filter(|o| {
                let d = o.domain.as_str();
                match &address {
                    Some(ip) => ip == d,
                    None => {
                        host == d
                            || (d.parse::<std::net::IpAddr>().is_err()
                                && host.len() > d.len()
                                && host.ends_with(d)
                                && host.as_bytes()[host.len() - d.len() - 1] == b'.')
                    }
                }
            })
            .max_by_key(|o| o.domain.len())
            .map_or(self.default_decision, |o| o.decision)
    }

    /// An override's domain as [`Self::decide`] compares it: lower case, no trailing dot,
    /// an address in its canonical spelling without brackets.
    pub fn normalise_domain(domain: &str) -> String {
        let d = domain.trim().trim_end_matches('.').to_ascii_lowercase();
        let bare = d.trim_matches(['[', ']']);
        match bare.parse::<std::net::IpAddr>() {
            Ok(ip) => ip.to_canonical().to_string(),
            Err(_) => d,
        }
    }
}

impl NavigationPolicy {
    pub fn to_json(&self) -> serde_json::Value {
        let mut json = serde_json::to_value(&self.rules).unwrap_or_default();
        json["id"] = self.id.clone().into();
        json["name"] = self.name.clone().into();
        json["projectId"] = self.project_id.clone().into();
        json["createdAt"] = fmt_time(self.created_at).into();
        json["updatedAt"] = fmt_time(self.updated_at).into();
        json
    }
}

/// The Browserbase `Project` JSON object.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ProjectJson<'a> {
    pub id: &'a str,
    pub name: &'a str,
    pub owner_id: &'a str,
    pub created_at: String,
    pub updated_at: String,
    pub default_timeout: u64,
    pub concurrency: u32,
    /// browserd's extension: sessions per minute, 0 for no limit.
    pub creation_rate: u32,
}

impl Project {
    pub fn to_json(&self) -> ProjectJson<'_> {
        ProjectJson {
            id: &self.id,
            name: &self.name,
            owner_id: &self.owner_id,
            created_at: fmt_time(self.created_at),
            updated_at: fmt_time(self.updated_at),
            default_timeout: self.default_timeout_secs,
            concurrency: self.concurrency,
            creation_rate: self.creations_per_minute,
        }
    }
}

const TIME_FORMAT: &[time::format_description::BorrowedFormatItem<'static>] = time::macros::format_description!(
    "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
);

/// Formats a UTC instant as RFC 3339 with milliseconds, e.g. `2026-11-27T09:54:12.345Z`.
/// The fixed width makes stored timestamps sort as text.
pub fn fmt_time(t: OffsetDateTime) -> String {
    t.to_offset(time::UtcOffset::UTC)
        .format(TIME_FORMAT)
        .expect("a UTC date always formats")
}

/// Parses what [`fmt_time`] wrote (any RFC 3339 string is accepted).
pub fn parse_time(s: &str) -> Result<OffsetDateTime, time::error::Parse> {
    OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
}

/// Now, truncated to milliseconds so that what is stored equals what is held in memory.
pub fn now() -> OffsetDateTime {
    let t = OffsetDateTime::now_utc();
    t.replace_nanosecond(t.millisecond() as u32 * 1_000_000)
        .expect("milliseconds are a valid nanosecond value")
}

/// One browserd process registered in the store: where other nodes reach it, and its lease.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Node {
    pub name: String,
    /// The address other nodes forward requests and websockets to (`--node-url`).
    pub url: String,
    /// The base of `connectUrl`s that point straight at it (`--public-url`), if set.
    pub public_url: Option<String>,
    /// Raised by every registration and by the sweeper that declares it lost: a heartbeat
    /// carrying an older epoch finds that the node was given up for dead.
    pub epoch: i64,
    pub state: NodeState,
    #[serde(with = "time::serde::rfc3339")]
    pub started_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub heartbeat_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub lease_expires_at: OffsetDateTime,
    pub live_sessions: u32,
    pub max_sessions: u32,
    /// Draining, by its last heartbeat: it takes no new sessions.
    pub draining: bool,
}

impl Node {
    /// Whether it can take another session, by its last heartbeat.
    pub fn has_room(&self) -> bool {
        self.state == NodeState::Live && !self.draining && self.live_sessions < self.max_sessions
    }

    /// Its state as `nodes list` and the dashboard show it: a live node that drains is
    /// "draining".
    pub fn shown_state(&self) -> &'static str {
        if self.state == NodeState::Live && self.draining {
            "draining"
        } else {
            self.state.as_str()
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeState {
    /// Heartbeating (or not yet found silent).
    Live,
    /// Its lease ran out; its sessions were ended as ERROR.
    Lost,
    /// Shut down on purpose; keepAlive sessions it left wait for its return.
    Left,
}

impl NodeState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Live => "live",
            Self::Lost => "lost",
            Self::Left => "left",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [Self::Live, Self::Lost, Self::Left]
            .into_iter()
            .find(|n| n.as_str() == s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Rows of releases that stored `allowedDomains` unchecked still read, as the
    /// supervisor of that time read them; the settings that were always checked keep their
    /// shape.
    #[test]
    fn older_rows_browser_settings_read() {
        let read = |json: &str| serde_json::from_str::<BrowserSettings>(json).unwrap();
        assert_eq!(
            read(r#"{"allowedDomains": "example.com"}"#).allowed_domains,
            None
        );
        assert_eq!(read(r#"{"allowedDomains": true}"#).allowed_domains(), None);
        assert_eq!(
            read(r#"{"allowedDomains": ["a.test", 1, null]}"#).allowed_domains(),
            Some(&["a.test".to_owned()][..])
        );
        let kept = read(
            r#"{"context": {"id": "c1", "persist": true}, "viewport": {"width": 1280.0},
                "blockAds": false, "navigationPolicy": null, "os": "mac"}"#,
        );
        assert_eq!(kept.context.as_ref().map(|c| c.id.as_str()), Some("c1"));
        assert_eq!(kept.viewport.and_then(|v| v.width), Some(1280));
        assert_eq!(kept.os, Some(Value::from("mac")));
    }

    #[test]
    fn times_round_trip_and_sort_as_text() {
        let a = now();
        let b = a + time::Duration::milliseconds(1);
        assert_eq!(parse_time(&fmt_time(a)).unwrap(), a);
        assert!(fmt_time(a) < fmt_time(b));
        assert!(fmt_time(a).ends_with('Z'));
    }

    #[test]
    fn browser_minutes_round_up_with_a_one_minute_floor() {
        let start = now();
        let mut s = Session {
            id: Uuid::nil(),
            project_id: "p".into(),
            status: SessionStatus::Completed,
            keep_alive: false,
            timeout_secs: 60,
            region: "us-west-2".into(),
            user_metadata: None,
            browser_settings: None,
            extension_id: None,
            proxies: None,
            proxy_bytes: 0,
            created_at: start,
            updated_at: start,
            started_at: start,
            expires_at: start,
            ended_at: Some(start + time::Duration::seconds(5)),
            end_reason: None,
            browser: None,
            node: None,
        };
        assert_eq!(s.browser_minutes(start), 1);
        s.ended_at = Some(start + time::Duration::seconds(61));
        assert_eq!(s.browser_minutes(start), 2);
        s.status = SessionStatus::Pending;
        assert_eq!(s.browser_minutes(start), 0);
    }

    #[test]
    fn status_names_match_the_sdk_enum() {
        for s in SessionStatus::ALL {
            assert_eq!(SessionStatus::parse(s.as_str()), Some(s));
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
        }
        assert_eq!(SessionStatus::parse("REQUEST_RELEASE"), None);
    }
}

#[cfg(test)]
mod policy_tests {
    use super::*;

    fn rules(default_decision: Decision, overrides: &[(&str, Decision)]) -> PolicyRules {
        PolicyRules {
            description: String::new(),
            enabled: true,
            default_decision,
            unknown_domain_behavior: Decision::Block,
            allowed_categories: Vec::new(),
            blocked_categories: Vec::new(),
            domain_overrides: overrides
                .iter()
                .map(|(d, decision)| DomainOverride {
                    domain: (*d).into(),
                    decision: *decision,
                })
                .collect(),
        }
    }

    #[test]
    fn the_most_specific_override_decides_then_the_default() {
        use Decision::*;
        let p = rules(
            Block,
            &[
                ("example.com", Allow),
                ("ads.example.com", Block),
                ("10.0.0.1", Allow),
            ],
        );
        for (host, want) in [
            ("example.com", Allow),
            ("EXAMPLE.com.", Allow),
            ("www.example.com", Allow),
            ("ads.example.com", Block),
            ("x.ads.example.com", Block),
            ("notexample.com", Block),
            ("example.com.evil.net", Block),
            ("10.0.0.1", Allow),
            ("10.0.0.10", Block),
            ("other.org", Block),
        ] {
            assert_eq!(p.decide(host), want, "{host}");
        }
        // Addresses in any spelling; never a suffix of a name.
        let ips = rules(
            Allow,
            &[
                (&PolicyRules::normalise_domain("1.2.3.4"), Block),
                (&PolicyRules::normalise_domain("[2001:DB8:0::1]"), Block),
                ("0.1", Block),
            ],
        );
        for host in [
            "1.2.3.4",
            "::ffff:1.2.3.4",
            "[::ffff:1.2.3.4]",
            "2001:db8::1",
            "[2001:db8:0:0::1]",
        ] {
            assert_eq!(ips.decide(host), Block, "{host}");
        }
        assert_eq!(
            ips.decide("10.0.0.1"),
            Allow,
            "0.1 is no suffix of an address"
        );
        let open = rules(Allow, &[("blocked.test", Block)]);
        assert_eq!(open.decide("blocked.test"), Block);
        assert_eq!(open.decide("sub.blocked.test"), Block);
        assert_eq!(open.decide("fine.test"), Allow);
    }
}
