//! Reading request fields with errors that name the field and the rule.

use super::error::ApiError;
use crate::browser::Viewport;
use crate::browser::proxy::{self, ProxyEntry, ProxyPool};
use crate::model::{BrowserSettings, MAX_TIMEOUT_SECS};
use serde_json::{Map, Value};

/// Typed access to a JSON object's optional fields.
pub(super) struct Fields<'a>(pub &'a Map<String, Value>);

impl<'a> Fields<'a> {
    /// A present, non-null field.
    fn get(&self, name: &str) -> Option<&'a Value> {
        self.0.get(name).filter(|v| !v.is_null())
    }

    pub(super) fn has(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    pub(super) fn bool(&self, name: &str) -> Result<Option<bool>, ApiError> {
        self.get(name)
            .map(|v| v.as_bool().ok_or_else(|| type_error(name, "a boolean")))
            .transpose()
    }

    pub(super) fn str(&self, name: &str) -> Result<Option<&'a str>, ApiError> {
        self.get(name)
            .map(|v| v.as_str().ok_or_else(|| type_error(name, "a string")))
            .transpose()
    }

    pub(super) fn object(&self, name: &str) -> Result<Option<&'a Map<String, Value>>, ApiError> {
        self.get(name)
            .map(|v| v.as_object().ok_or_else(|| type_error(name, "an object")))
            .transpose()
    }

    pub(super) fn integer(&self, name: &str) -> Result<Option<i64>, ApiError> {
        self.get(name)
            .map(|v| {
                v.as_i64()
                    .or_else(|| {
                        v.as_f64()
                            .filter(|f| f.fract() == 0.0 && f.abs() < 1e15)
                            .map(|f| f as i64)
                    })
                    .ok_or_else(|| type_error(name, "an integer"))
            })
            .transpose()
    }

    /// The raw value, for fields stored as given.
    pub(super) fn value(&self, name: &str) -> Option<&'a Value> {
        self.get(name)
    }
}

fn type_error(name: &str, what: &str) -> ApiError {
    ApiError::BadRequest(format!("{name} must be {what}"))
}

/// Checks a session timeout in seconds: `min..=21600`.
pub(super) fn check_timeout(name: &str, secs: i64, min: u64) -> Result<u64, ApiError> {
    if secs < min as i64 {
        return Err(ApiError::BadRequest(format!("{name} must be >= {min}")));
    }
    if secs > MAX_TIMEOUT_SECS as i64 {
        return Err(ApiError::BadRequest(format!(
            "{name} must be <= {MAX_TIMEOUT_SECS}"
        )));
    }
    Ok(secs as u64)
}

pub(super) const REGIONS: [&str; 4] = ["us-west-2", "us-east-1", "eu-central-1", "ap-southeast-1"];

/// `userMetadata` must serialise to fewer than 512 characters.
pub(super) const MAX_USER_METADATA_CHARS: usize = 512;

/// The `browserSettings` fields of the Browserbase contract (current and older SDKs).
/// Unknown fields are dropped, not refused.
const BROWSER_SETTINGS_FIELDS: &[&str] = &[
    "context",
    "extensionId",
    "viewport",
    "blockAds",
    "solveCaptchas",
    "captchaImageSelector",
    "captchaInputSelector",
    "recordSession",
    "logSession",
    "advancedStealth",
    "verified",
    "os",
    "ignoreCertificateErrors",
    "allowedDomains",
    "fingerprint",
    "riskPolicyId",
];

/// Largest viewport side accepted, in pixels.
const MAX_VIEWPORT_SIDE: i64 = 7680;

/// The checked `browserSettings`: the typed settings everything below the API takes, and
/// what the API tells the client about them.
#[derive(Debug)]
pub(super) struct CheckedSettings {
    pub settings: BrowserSettings,
    /// The viewport to start with (the default's side where one is left out).
    pub viewport: Viewport,
    /// Settings the client turned on that browserd accepts without effect (stealth and
    /// captcha solving): named in the create's answer and the server log.
    pub ignored: Vec<&'static str>,
    /// Fields browserd does not know (dropped): named in a response header and the log.
    pub unknown: Vec<String>,
}

/// `browserSettings` accepted without effect when turned on: they change how the browser
/// looks to sites, not what it can reach.
const WITHOUT_EFFECT: &[&str] = &[
    "solveCaptchas",
    "captchaImageSelector",
    "captchaInputSelector",
    "advancedStealth",
    "verified",
    "os",
    "fingerprint",
];

/// A field turned on: `true`, a non-empty string, list or object.
pub(super) fn turned_on(v: &Value) -> bool {
    match v {
        Value::Bool(b) => *b,
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
        _ => false,
    }
}

/// `proxySettings.caCertificates`: certificate ids (`/v1/certificates`), each once.
pub(super) fn ca_certificate_ids(fields: &Fields<'_>) -> Result<Vec<String>, ApiError> {
    let Some(settings) = fields.object("proxySettings")? else {
        return Ok(Vec::new());
    };
    let list = match settings.get("caCertificates") {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(list)) => list,
        Some(_) => {
            return Err(ApiError::BadRequest(
                "proxySettings.caCertificates must be a list of certificate ids".into(),
            ));
        }
    };
    if list.len() > MAX_CA_CERTIFICATES {
        return Err(ApiError::BadRequest(format!(
            "proxySettings.caCertificates: at most {MAX_CA_CERTIFICATES} certificates"
        )));
    }
    let mut ids: Vec<String> = Vec::with_capacity(list.len());
    for id in list {
        let id = id.as_str().ok_or_else(|| {
            ApiError::BadRequest(
                "proxySettings.caCertificates must hold certificate ids (strings)".into(),
            )
        })?;
        if !ids.iter().any(|known| known == id) {
            ids.push(id.to_owned());
        }
    }
    Ok(ids)
}

/// The most certificates one create may name.
const MAX_CA_CERTIFICATES: usize = 20;

/// Reads `proxies` (pool members chosen from `pool`).
pub(super) fn traffic_fields(
    fields: &Fields<'_>,
    pool: &ProxyPool,
) -> Result<Option<Vec<ProxyEntry>>, ApiError> {
    let proxies = match fields.value("proxies") {
        Some(value) => proxy::parse_request(value).map_err(ApiError::from)?,
        None => None,
    };
    let proxies = proxies
        .map(|mut entries| {
            proxy::choose_from_pool(&mut entries, pool)
                .map(|()| entries)
                .map_err(|e| ApiError::BadRequest(format!("proxies: {e}")))
        })
        .transpose()?;
    Ok(proxies)
}

/// Checks a create's `browserSettings` field by field (errors name the field and the rule),
/// then reads them once into [`BrowserSettings`].
pub(super) fn browser_settings(raw: &Map<String, Value>) -> Result<CheckedSettings, ApiError> {
    let unknown = raw
        .keys()
        .filter(|k| !BROWSER_SETTINGS_FIELDS.contains(&k.as_str()))
        .map(|k| format!("browserSettings.{}", shortened(k)))
        .collect();
    let stored: Map<String, Value> = raw
        .iter()
        .filter(|(k, _)| BROWSER_SETTINGS_FIELDS.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let fields = Fields(&stored);
    let mut viewport = Viewport::default();
    if let Some(vp) = fields
        .object("viewport")
        .map_err(prefix("browserSettings."))?
    {
        let vp = Fields(vp);
        for (name, side) in [
            ("width", &mut viewport.width),
            ("height", &mut viewport.height),
        ] {
            if let Some(v) = vp
                .integer(name)
                .map_err(prefix("browserSettings.viewport."))?
            {
                if !(1..=MAX_VIEWPORT_SIDE).contains(&v) {
                    return Err(ApiError::BadRequest(format!(
                        "browserSettings.viewport.{name} must be between 1 and {MAX_VIEWPORT_SIDE}"
                    )));
                }
                *side = v as u32;
            }
        }
    }
    for name in [
        "blockAds",
        "solveCaptchas",
        "recordSession",
        "logSession",
        "advancedStealth",
        "verified",
        "ignoreCertificateErrors",
    ] {
        fields.bool(name).map_err(prefix("browserSettings."))?;
    }
    if let Some(domains) = fields.value("allowedDomains") {
        let list = domains.as_array().ok_or_else(|| {
            ApiError::BadRequest("browserSettings.allowedDomains must be a list of domains".into())
        })?;
        if !list.iter().all(Value::is_string) {
            return Err(ApiError::BadRequest(
                "browserSettings.allowedDomains must be a list of domains".into(),
            ));
        }
        crate::browser::egress::AllowedHosts::parse(list.iter().filter_map(Value::as_str))
            .map_err(|e| ApiError::BadRequest(format!("browserSettings.allowedDomains: {e}")))?;
    }
    let ignored: Vec<&'static str> = WITHOUT_EFFECT
        .iter()
        .copied()
        .filter(|name| fields.value(name).is_some_and(turned_on))
        .collect();
    if let Some(ctx) = fields
        .object("context")
        .map_err(prefix("browserSettings."))?
    {
        let ctx = Fields(ctx);
        if ctx
            .str("id")
            .map_err(prefix("browserSettings.context."))?
            .is_none()
        {
            return Err(ApiError::BadRequest(
                "browserSettings.context.id is required".into(),
            ));
        }
        ctx.bool("persist")
            .map_err(prefix("browserSettings.context."))?;
    }
    fields
        .str("extensionId")
        .map_err(prefix("browserSettings."))?;
    fields
        .str("riskPolicyId")
        .map_err(prefix("browserSettings."))?;
    // Checked above, so this reads; should a check and a type disagree, the path says where.
    let settings = serde_path_to_error::deserialize(Value::Object(stored)).map_err(|e| {
        ApiError::BadRequest(format!("browserSettings.{}: {}", e.path(), e.inner()))
    })?;
    Ok(CheckedSettings {
        settings,
        viewport,
        ignored,
        unknown,
    })
}

/// The create body's top-level fields browserd reads (`projectId` is checked by the caller).
const CREATE_FIELDS: &[&str] = &[
    "projectId",
    "keepAlive",
    "timeout",
    "api_timeout",
    "userMetadata",
    "region",
    "browserSettings",
    "extensionId",
    "proxies",
    "proxySettings",
];

/// A create body's fields browserd does not know (dropped), with `browserSettings`' own.
pub(super) fn unknown_create_fields(
    body: &Map<String, Value>,
    settings: Option<&CheckedSettings>,
) -> Vec<String> {
    body.keys()
        .filter(|k| !CREATE_FIELDS.contains(&k.as_str()))
        .map(|k| shortened(k))
        .chain(settings.into_iter().flat_map(|s| s.unknown.iter().cloned()))
        .take(MAX_UNKNOWN_NAMED)
        .collect()
}

/// Unknown fields named at most (in the header and the log): the first few name the problem.
const MAX_UNKNOWN_NAMED: usize = 20;

/// A client's field name as browserd repeats it: at most 64 characters.
fn shortened(name: &str) -> String {
    match name.char_indices().nth(64) {
        Some((cut, _)) => format!("{}…", &name[..cut]),
        None => name.to_owned(),
    }
}

/// Puts a path before the field name of a [`ApiError::BadRequest`].
fn prefix(path: &'static str) -> impl Fn(ApiError) -> ApiError {
    move |e| match e {
        ApiError::BadRequest(m) => ApiError::BadRequest(format!("{path}{m}")),
        other => other,
    }
}

/// A `q` filter on `GET /v1/sessions`: `user_metadata['a']['b']:'value'`, string equality.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct MetadataQuery {
    pub path: Vec<String>,
    pub value: String,
}

impl MetadataQuery {
    pub(super) fn parse(q: &str) -> Result<Self, ApiError> {
        let bad = || {
            ApiError::BadRequest(format!(
                "q must look like user_metadata['key']['nested']:'value' (got {q:?})"
            ))
        };
        let mut rest = q.trim().strip_prefix("user_metadata").ok_or_else(bad)?;
        let mut path = Vec::new();
        while let Some(after) = rest.strip_prefix('[') {
            let (key, after) = quoted(after).ok_or_else(bad)?;
            rest = after.strip_prefix(']').ok_or_else(bad)?;
            path.push(key);
        }
        let rest = rest.trim_start().strip_prefix(':').ok_or_else(bad)?.trim();
        let (value, tail) = quoted(rest).ok_or_else(bad)?;
        if path.is_empty() || !tail.trim().is_empty() {
            return Err(bad());
        }
        Ok(Self { path, value })
    }

    pub(super) fn matches(&self, metadata: Option<&Map<String, Value>>) -> bool {
        let Some((last, parents)) = self.path.split_last() else {
            return false;
        };
        let mut node = metadata;
        for key in parents {
            node = node.and_then(|m| m.get(key)).and_then(Value::as_object);
        }
        node.and_then(|m| m.get(last)).and_then(Value::as_str) == Some(self.value.as_str())
    }
}

/// A string in single or double quotes at the start of `s`; returns it and what follows.
fn quoted(s: &str) -> Option<(String, &str)> {
    let quote = s.chars().next().filter(|c| *c == '\'' || *c == '"')?;
    let body = &s[1..];
    let end = body.find(quote)?;
    Some((body[..end].to_owned(), &body[end + 1..]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn metadata_queries_parse_and_match_nested_strings() {
        let q = MetadataQuery::parse("user_metadata['order']['id']:'42'").unwrap();
        assert_eq!(q.path, ["order", "id"]);
        assert_eq!(q.value, "42");
        let m = json!({"order": {"id": "42"}, "x": "y"});
        assert!(q.matches(m.as_object()));
        assert!(!q.matches(json!({"order": {"id": 42}}).as_object()));
        assert!(!q.matches(json!({"order": "42"}).as_object()));
        assert!(!q.matches(None));
        let top = MetadataQuery::parse(r#"user_metadata["env"]:"prod""#).unwrap();
        assert!(top.matches(json!({"env": "prod"}).as_object()));
        for bad in [
            "",
            "env:'prod'",
            "user_metadata:'x'",
            "user_metadata['a']",
            "user_metadata['a']:'b' junk",
            "user_metadata['a:'b'",
        ] {
            assert!(MetadataQuery::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn timeouts_are_checked_against_both_bounds() {
        assert_eq!(check_timeout("timeout", 60, 60).unwrap(), 60);
        assert_eq!(check_timeout("timeout", 21600, 60).unwrap(), 21600);
        assert_eq!(
            check_timeout("timeout", 59, 60).unwrap_err().to_string(),
            "timeout must be >= 60"
        );
        assert_eq!(
            check_timeout("timeout", 21601, 60).unwrap_err().to_string(),
            "timeout must be <= 21600"
        );
        assert_eq!(check_timeout("timeout", 1, 1).unwrap(), 1);
    }

    #[test]
    fn browser_settings_keep_known_fields_and_check_the_viewport() {
        let raw =
            json!({"viewport": {"width": 800, "height": 600}, "blockAds": false, "madeUp": 1});
        let s = browser_settings(raw.as_object().unwrap()).unwrap();
        assert_eq!(
            s.viewport,
            Viewport {
                width: 800,
                height: 600
            }
        );
        assert_eq!(s.settings.block_ads, Some(false));
        assert_eq!(s.unknown, ["browserSettings.madeUp"]);
        let kept = serde_json::to_value(&s.settings).unwrap();
        assert_eq!(
            kept,
            json!({"viewport": {"width": 800, "height": 600}, "blockAds": false})
        );
        let err =
            browser_settings(json!({"viewport": {"width": 0}}).as_object().unwrap()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "browserSettings.viewport.width must be between 1 and 7680"
        );
        let err = browser_settings(json!({"blockAds": "yes"}).as_object().unwrap()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "browserSettings.blockAds must be a boolean"
        );
    }

    proptest::proptest! {
        #[test]
        fn any_query_string_parses_or_is_refused_without_panicking(q in ".{0,200}") {
            let _ = MetadataQuery::parse(&q);
        }

        #[test]
        fn generated_queries_round_trip(
            path in proptest::collection::vec("[a-zA-Z0-9_ -]{1,12}", 1..4),
            value in "[a-zA-Z0-9_ .:-]{0,20}",
        ) {
            let q = format!(
                "user_metadata{}:'{value}'",
                path.iter().map(|k| format!("['{k}']")).collect::<String>()
            );
            let parsed = MetadataQuery::parse(&q).unwrap();
            proptest::prop_assert_eq!(&parsed.path, &path);
            proptest::prop_assert_eq!(&parsed.value, &value);
            // And it matches exactly the metadata that has that value at that path.
            let mut meta = serde_json::Value::String(value.clone());
            for key in path.iter().rev() {
                meta = json!({ key.clone(): meta });
            }
            proptest::prop_assert!(parsed.matches(meta.as_object()));
        }
    }
}
