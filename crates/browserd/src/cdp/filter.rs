//! What browserd checks in a client's CDP command before the browser sees it.
//!
//! Every text frame a client (or an inspector's DevTools) sends is scanned, strictly, without
//! building it: no duplicate key at any depth, no lone surrogate, at most 128 levels, one
//! JSON object, the method read with its escapes decoded (as the browser reads it). A frame
//! that does not scan strictly is refused with a CDP error, never forwarded. A command whose
//! method no rule below is about goes to the browser **as the client sent it**, byte for
//! byte: numbers, key order and spacing untouched, and no tree of a 100 MiB frame built on a
//! runtime worker. A command a rule is about is parsed and, when a rule changes it, what
//! reaches the browser is browserd's own serialisation of what it checked.
//!
//! Then, by method (wherever it appears: a flattened session's command, or one wrapped in
//! `Target.sendMessageToTarget`):
//! - `Browser.close` ends the session (the relay answers it);
//! - `Browser/Page.setDownloadBehavior` saves into the session's downloads folder;
//! - `DOM.setFileInputFiles` takes only files uploaded to the session;
//! - `Target.exposeDevToolsProtocol` is refused (it hands CDP to page scripts, past this filter);
//! - `Extensions.loadUnpacked` is refused (extensions come through the API, with a record);
//! - `Target.createBrowserContext` with its own proxy is refused (see the match arm).

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value, json};
use std::borrow::Cow;
use std::collections::HashSet;
use std::path::{Component, Path, PathBuf};

/// How deep `Target.sendMessageToTarget` may nest (Chromium allows any depth; no client
/// needs more than one level).
const MAX_WRAPPING: usize = 3;

/// The methods a rule below is about; every other command is forwarded as it came.
const RULED: [&str; 9] = [
    "Browser.close",
    "Target.createTarget",
    "Extensions.loadUnpacked",
    "Browser.setDownloadBehavior",
    "Page.setDownloadBehavior",
    "DOM.setFileInputFiles",
    "Target.exposeDevToolsProtocol",
    "Target.createBrowserContext",
    "Target.sendMessageToTarget",
];

/// Tabs (page targets) one session may have open at once, by default.
pub(crate) const MAX_PAGES: usize = 100;

/// The folders a session's commands may name, and what its browser holds.
#[derive(Debug, Clone)]
pub struct Rules {
    /// Page targets open now (kept by `inspect::targets`): `Target.createTarget` is
    /// refused at `max_pages`.
    pub open_pages: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    pub max_pages: usize,
    /// Where downloads go, whatever a client asks.
    pub downloads: PathBuf,
    /// Uploaded files: the folder the API names (`POST /v1/sessions/{id}/uploads`) and the
    /// same files as the browser sees them (its sandbox shows only its own folder).
    pub uploads: PathBuf,
    pub uploads_in_browser: PathBuf,
}

/// What to do with one client frame.
#[derive(Debug, PartialEq)]
pub(crate) enum Verdict {
    /// Send the frame to the browser as the client sent it.
    AsSent,
    /// Send this to the browser instead (a rule rewrote the command).
    Forward(String),
    /// A `Browser.close`: answer the client with this and end the session.
    CloseBrowser(String),
    /// Answer the client with this CDP error; the browser sees nothing.
    Refuse(String),
}

/// Checks one client text frame.
pub(crate) fn check(text: &str, rules: &Rules) -> Verdict {
    match check_at(text, rules, 0) {
        Ok(Outcome::AsSent) => Verdict::AsSent,
        Ok(Outcome::Rewritten(msg)) => Verdict::Forward(Value::Object(msg).to_string()),
        Ok(Outcome::Closing(msg)) => {
            let mut reply = Map::new();
            if let Some(id) = msg.get("id") {
                reply.insert("id".into(), id.clone());
            }
            reply.insert("result".into(), json!({}));
            if let Some(session) = msg.get("sessionId") {
                reply.insert("sessionId".into(), session.clone());
            }
            Verdict::CloseBrowser(Value::Object(reply).to_string())
        }
        Err(Refused { id, session, why }) => refuse(id.as_ref(), session.as_ref(), &why),
    }
}

/// What the rules made of one command.
enum Outcome {
    /// Nothing to change: the command goes as it came.
    AsSent,
    /// Changed: the command as the rules left it.
    Rewritten(Map<String, Value>),
    /// A `Browser.close` (the command, for its id and session).
    Closing(Map<String, Value>),
}

/// A refusal, with what the error reply needs to reach the caller.
struct Refused {
    id: Option<Value>,
    session: Option<Value>,
    why: String,
}

impl Refused {
    fn anonymous(why: String) -> Self {
        Self {
            id: None,
            session: None,
            why,
        }
    }
}

/// Checks one command, `depth` levels inside `Target.sendMessageToTarget`.
fn check_at(text: &str, rules: &Rules, depth: usize) -> Result<Outcome, Refused> {
    let method = match scan_strict(text) {
        Ok(Some(method)) => method,
        Ok(None) => {
            return Err(Refused::anonymous(
                "a CDP message must be a JSON object".into(),
            ));
        }
        Err(e) => {
            return Err(Refused {
                id: top_level_id(text).map(Value::from),
                session: None,
                why: format!("browserd could not parse the message: {e}"),
            });
        }
    };
    match method {
        Method::Absent => return Ok(Outcome::AsSent),
        Method::Named(name) if !RULED.contains(&name.as_ref()) => return Ok(Outcome::AsSent),
        // A ruled method, or one that is not a string (refused below, with the caller's id).
        _ => {}
    }
    let mut msg = match parse_strict(text) {
        Ok(Value::Object(msg)) => msg,
        // The scan above accepted it: the same parser, the same verdict.
        _ => {
            return Err(Refused::anonymous(
                "browserd could not parse the message".into(),
            ));
        }
    };
    match inspect(&mut msg, rules, depth) {
        Ok(Effect::None) => Ok(Outcome::AsSent),
        Ok(Effect::Changed) => Ok(Outcome::Rewritten(msg)),
        Ok(Effect::Closing) => Ok(Outcome::Closing(msg)),
        Err(why) => Err(Refused {
            id: msg.get("id").cloned(),
            session: msg.get("sessionId").cloned(),
            why,
        }),
    }
}

/// What a rule did to a command.
enum Effect {
    None,
    Changed,
    /// A `Browser.close` was found.
    Closing,
}

/// Applies the rules to one command, in place; recurses into wrapped commands.
fn inspect(msg: &mut Map<String, Value>, rules: &Rules, depth: usize) -> Result<Effect, String> {
    let Some(method) = msg.get("method") else {
        return Ok(Effect::None);
    };
    let Some(method) = method.as_str() else {
        return Err("method must be a string".into());
    };
    match method {
        "Browser.close" => Ok(Effect::Closing),
        "Browser.setDownloadBehavior" | "Page.setDownloadBehavior" => {
            redirect_downloads(params(msg)?, &rules.downloads)?;
            Ok(Effect::Changed)
        }
        "DOM.setFileInputFiles" => {
            only_uploads(params(msg)?, rules)?;
            Ok(Effect::Changed)
        }
        "Target.exposeDevToolsProtocol" => {
            Err("Target.exposeDevToolsProtocol is not available through browserd".into())
        }
        // It installs whatever folder the browser can read (its downloads among them) as an
        // extension, with no API record: extensions come through POST /v1/extensions.
        "Extensions.loadUnpacked" => Err(
            "Extensions.loadUnpacked is not available through browserd: upload the extension (POST /v1/extensions) and name it in the create's extensionId".into(),
        ),
        "Target.createTarget" => {
            let open = rules.open_pages.load(std::sync::atomic::Ordering::Relaxed);
            if open >= rules.max_pages {
                return Err(format!(
                    "this session has {open} tabs open, the most it may (--max-tabs-per-session {}): close one first",
                    rules.max_pages
                ));
            }
            Ok(Effect::None)
        }
        // A context's own proxy would leave through the browser's network namespace, where
        // only loopback exists: `direct://` would reach the browser's unfiltered DevTools
        // port, anything else fails. Refused with a reason instead of failing later.
        "Target.createBrowserContext" => {
            let params = params(msg)?;
            if params.contains_key("proxyServer") || params.contains_key("proxyBypassList") {
                return Err("a per-context proxy (proxyServer) is not available through browserd; pages leave through the session's egress".into());
            }
            Ok(Effect::None)
        }
        "Target.sendMessageToTarget" => {
            if depth >= MAX_WRAPPING {
                return Err("Target.sendMessageToTarget nested too deep".into());
            }
            let params = params(msg)?;
            let inner = params
                .get("message")
                .and_then(Value::as_str)
                .ok_or("Target.sendMessageToTarget needs a message string")?;
            match check_at(inner, rules, depth + 1) {
                Ok(Outcome::AsSent) => Ok(Effect::None),
                Ok(Outcome::Rewritten(inner)) => {
                    params.insert("message".into(), Value::Object(inner).to_string().into());
                    Ok(Effect::Changed)
                }
                Ok(Outcome::Closing(_)) => Err(
                    "send Browser.close on the browser's own connection, not to a target".into(),
                ),
                Err(refused) => Err(format!("the wrapped message: {}", refused.why)),
            }
        }
        _ => Ok(Effect::None),
    }
}

fn params(msg: &mut Map<String, Value>) -> Result<&mut Map<String, Value>, String> {
    msg.entry("params")
        .or_insert_with(|| json!({}))
        .as_object_mut()
        .ok_or_else(|| "params must be an object".into())
}

/// Points a download request at the session's folder: a client's folder is on the client's
/// machine (Playwright sends its temp dir), and the session's downloads are fetched through
/// `GET /v1/sessions/{id}/downloads`. `allowAndName` (Playwright's choice) becomes `allow`,
/// so files keep their names instead of GUIDs. `deny` and `default` pass as they are.
fn redirect_downloads(params: &mut Map<String, Value>, dir: &Path) -> Result<(), String> {
    match params.get("behavior").and_then(Value::as_str) {
        Some("deny") | Some("default") => {
            params.remove("downloadPath");
        }
        Some("allow") | Some("allowAndName") => {
            params.insert("behavior".into(), "allow".into());
            let dir = dir.to_str().ok_or("the downloads folder is not UTF-8")?;
            params.insert("downloadPath".into(), dir.into());
        }
        _ => return Err("behavior must be one of deny, allow, allowAndName, default".into()),
    }
    Ok(())
}

/// Lets `DOM.setFileInputFiles` name only files uploaded to the session, rewritten to where
/// the browser sees them.
fn only_uploads(params: &mut Map<String, Value>, rules: &Rules) -> Result<(), String> {
    let files = params
        .get_mut("files")
        .and_then(Value::as_array_mut)
        .ok_or("files must be an array of paths")?;
    for file in files {
        let path = file.as_str().ok_or("files must be an array of paths")?;
        *file = upload_in_browser(path, rules)?.into();
    }
    Ok(())
}

/// Where the browser sees `path`, a file uploaded to the session (as the upload API named
/// it, or as the browser sees it); anything else is refused. The rule of file inputs, for
/// CDP and WebDriver alike.
pub(crate) fn upload_in_browser(path: &str, rules: &Rules) -> Result<String, String> {
    let path = Path::new(path);
    if path
        .components()
        .any(|c| matches!(c, Component::ParentDir | Component::CurDir))
    {
        return Err(format!("{} is not a plain path", path.display()));
    }
    let name = path
        .strip_prefix(&rules.uploads)
        .or_else(|_| path.strip_prefix(&rules.uploads_in_browser))
        .map_err(|_| {
            format!(
                "{} is not a file uploaded to this session: upload it with POST /v1/sessions/{{id}}/uploads and pass the path that returns",
                path.display()
            )
        })?;
    let seen = rules.uploads_in_browser.join(name);
    Ok(seen
        .to_str()
        .ok_or("an upload path is not UTF-8")?
        .to_owned())
}

/// The `id` of a message that does not parse strictly, found by a scan of its top level, so
/// the client's pending call gets its error instead of waiting forever.
fn top_level_id(text: &str) -> Option<u64> {
    let bytes = text.as_bytes();
    let (mut depth, mut i) = (0usize, 0usize);
    while i < bytes.len() {
        match bytes[i] {
            b'{' | b'[' => depth += 1,
            b'}' | b']' => depth = depth.saturating_sub(1),
            b'"' => {
                let start = i + 1;
                i += 1;
                while i < bytes.len() && bytes[i] != b'"' {
                    i += if bytes[i] == b'\\' { 2 } else { 1 };
                }
                if depth == 1 && text.get(start..i) == Some("id") {
                    let rest = text
                        .get(i + 1..)?
                        .trim_start()
                        .strip_prefix(':')?
                        .trim_start();
                    let digits =
                        rest.len() - rest.trim_start_matches(|c: char| c.is_ascii_digit()).len();
                    return rest[..digits].parse().ok();
                }
            }
            _ => {}
        }
        i += 1;
    }
    None
}

/// A CDP error answering `text` (a command that parsed) with `message`.
pub(crate) fn refusal(text: &str, message: &str) -> String {
    let msg = parse_strict(text).unwrap_or_default();
    error_reply(msg.get("id"), msg.get("sessionId"), message)
}

fn refuse(id: Option<&Value>, session: Option<&Value>, message: &str) -> Verdict {
    Verdict::Refuse(error_reply(id, session, message))
}

fn error_reply(id: Option<&Value>, session: Option<&Value>, message: &str) -> String {
    let mut reply = Map::new();
    // Chromium answers a message it cannot read with id 0; so does browserd.
    reply.insert(
        "id".into(),
        id.filter(|v| v.is_u64() || v.is_i64())
            .cloned()
            .unwrap_or(json!(0)),
    );
    reply.insert(
        "error".into(),
        json!({ "code": -32600, "message": message }),
    );
    if let Some(session) = session.filter(|s| s.is_string()) {
        reply.insert("sessionId".into(), session.clone());
    }
    Value::Object(reply).to_string()
}

/// A command's top-level `method`, as the browser will read it.
enum Method<'a> {
    Absent,
    Named(Cow<'a, str>),
    NotAString,
}

/// Scans `text` as [`parse_strict`] parses it (same grammar, same refusals: duplicate keys
/// at any depth, lone surrogates, more than 128 levels, anything after the value) without
/// building it: only each object's keys are held while it is scanned, and strings without
/// escapes are borrowed. `Ok(None)`: valid, but not an object.
fn scan_strict(text: &str) -> Result<Option<Method<'_>>, serde_json::Error> {
    let mut de = serde_json::Deserializer::from_str(text);
    let top = (&mut de).deserialize_any(TopLevel)?;
    de.end()?;
    Ok(top)
}

/// The top level of a frame: an object whose `method` is read, or anything else.
struct TopLevel;

impl<'de> Visitor<'de> for TopLevel {
    type Value = Option<Method<'de>>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut keys = HashSet::new();
        let mut method = Method::Absent;
        while let Some(Key(key)) = map.next_key()? {
            if key == "method" {
                method = map.next_value_seed(MethodSeed)?;
            } else {
                map.next_value::<Scanned>()?;
            }
            if keys.contains(&key) {
                return Err(de::Error::custom(format!("the key {key:?} appears twice")));
            }
            keys.insert(key);
        }
        Ok(Some(method))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        ScanVisitor.visit_seq(seq).map(|()| None)
    }
    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
        ScanVisitor.visit_f64(v).map(|()| None)
    }
    fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
}

/// An object key, borrowed from the frame unless it has escapes.
struct Key<'de>(Cow<'de, str>);

impl<'de> serde::Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_str(CowStr).map(Key)
    }
}

struct CowStr;

impl<'de> Visitor<'de> for CowStr {
    type Value = Cow<'de, str>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a string")
    }
    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Cow::Borrowed(v))
    }
    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v))
    }
}

/// Reads a `method` value: its name, or that it is not a string (scanned all the same).
struct MethodSeed;

impl<'de> DeserializeSeed<'de> for MethodSeed {
    type Value = Method<'de>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(MethodVisitor)
    }
}

struct MethodVisitor;

impl<'de> Visitor<'de> for MethodVisitor {
    type Value = Method<'de>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Method::Named(Cow::Borrowed(v)))
    }
    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Method::Named(Cow::Owned(v.to_owned())))
    }
    fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
        Ok(Method::Named(Cow::Owned(v)))
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        ScanVisitor.visit_map(map).map(|()| Method::NotAString)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        ScanVisitor.visit_seq(seq).map(|()| Method::NotAString)
    }
    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(Method::NotAString)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
        Ok(Method::NotAString)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
        Ok(Method::NotAString)
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
        ScanVisitor.visit_f64(v).map(|()| Method::NotAString)
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(Method::NotAString)
    }
}

/// Any value, scanned and dropped.
struct Scanned;

impl<'de> serde::Deserialize<'de> for Scanned {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ScanVisitor).map(|()| Scanned)
    }
}

struct ScanVisitor;

impl<'de> Visitor<'de> for ScanVisitor {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<(), E> {
        // As `parse_strict`: a number no f64 holds is refused, not forwarded.
        match v.is_finite() {
            true => Ok(()),
            false => Err(E::custom("a number out of range")),
        }
    }
    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element::<Scanned>()?.is_some() {}
        Ok(())
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut keys = HashSet::new();
        while let Some(Key(key)) = map.next_key()? {
            map.next_value::<Scanned>()?;
            if keys.contains(&key) {
                return Err(de::Error::custom(format!("the key {key:?} appears twice")));
            }
            keys.insert(key);
        }
        Ok(())
    }
}

/// Parses JSON as serde_json does (UTF-8, no lone surrogates, at most 128 levels deep), and
/// refuses an object with a key twice, at any depth: two parsers may keep different ones.
pub(crate) fn parse_strict(text: &str) -> Result<Value, serde_json::Error> {
    let mut de = serde_json::Deserializer::from_str(text);
    let value = <StrictValue as serde::Deserialize>::deserialize(&mut de)?.0;
    de.end()?;
    Ok(value)
}

struct StrictValue(Value);

impl<'de> serde::Deserialize<'de> for StrictValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(StrictVisitor).map(StrictValue)
    }
}

struct StrictVisitor;

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        serde_json::Number::from_f64(v)
            .map(Value::Number)
            .ok_or_else(|| E::custom("a number out of range"))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(StrictValue(v)) = seq.next_element()? {
            items.push(v);
        }
        Ok(Value::Array(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            let StrictValue(v) = map.next_value()?;
            if out.insert(key.clone(), v).is_some() {
                return Err(de::Error::custom(format!("the key {key:?} appears twice")));
            }
        }
        Ok(Value::Object(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules() -> Rules {
        Rules {
            open_pages: Default::default(),
            max_pages: MAX_PAGES,
            downloads: "/data/b/downloads".into(),
            uploads: "/data/session-files/s1/uploads".into(),
            uploads_in_browser: "/data/b/uploads".into(),
        }
    }

    fn forwarded(text: &str) -> Value {
        match check(text, &rules()) {
            Verdict::AsSent => serde_json::from_str(text).unwrap(),
            Verdict::Forward(out) => serde_json::from_str(&out).unwrap(),
            other => panic!("{text}: {other:?}"),
        }
    }

    #[test]
    fn new_tabs_are_refused_at_the_bound() {
        let create =
            r#"{"id":4,"method":"Target.createTarget","params":{"url":"about:blank","n":1.10}}"#;
        let full = rules();
        assert_eq!(
            check(create, &full),
            Verdict::AsSent,
            "room: forwarded as sent"
        );
        full.open_pages
            .store(MAX_PAGES, std::sync::atomic::Ordering::Relaxed);
        let Verdict::Refuse(reply) = check(create, &full) else {
            panic!("not refused at the bound")
        };
        assert!(reply.contains("100 tabs open"), "{reply}");
        assert!(reply.contains("\"id\":4"), "{reply}");
    }

    #[test]
    fn commands_no_rule_is_about_go_byte_for_byte() {
        // Numbers a lossy parser changes, odd spacing and key order, escapes, big integers.
        for text in [
            r#"{"id":1,"method":"Runtime.callFunctionOn","params":{"functionDeclaration":"(a,b,c)=>[a,b,c]","arguments":[{"value":1.0000000000000002},{"value":5e-324},{"value":1.7976931348623157e308}]}}"#,
            "{ \"params\" : {\"expression\":\"1.10\",\"n\":-0.0, \"big\":123456789012345678901234567890}, \"method\":\"Runtime.evaluate\" ,\"id\":2 }",
            r#"{"id":3,"method":"Runtime.evaluate","params":{"expression":"'\u00e9\n'"}}"#,
            r#"{"id":4,"sessionId":"S","method":"Page.navigate","params":{"url":"https://example.com/?a=1.50"}}"#,
            r#"{"id":5}"#,
            r#"{"id":6,"method":"Target.createBrowserContext","params":{"disposeOnDetach":true}}"#,
            r#"{"id":7,"method":"Target.sendMessageToTarget","params":{"sessionId":"T","message":"{\"id\":1,\"method\":\"Runtime.evaluate\",\"params\":{\"expression\":\"1.0000000000000002\"}}"}}"#,
        ] {
            assert_eq!(check(text, &rules()), Verdict::AsSent, "{text}");
        }
        // Still refused as before: a duplicate key deep inside, a lone surrogate, a number
        // no f64 holds, trailing bytes.
        for text in [
            r#"{"id":1,"method":"Runtime.callFunctionOn","params":{"arguments":[{"value":{"a":1,"a":2}}]}}"#,
            r#"{"id":1,"method":"Runtime.evaluate","params":{"expression":"\udc00"}}"#,
            r#"{"id":1,"method":"Runtime.evaluate","params":{"n":1e400}}"#,
            r#"{"id":1,"method":"Runtime.evaluate"}x"#,
            r#"{"id":1,"method":"Target.sendMessageToTarget","params":{"message":"{\"id\":1,\"method\":\"A\",\"method\":\"B\"}"}}"#,
        ] {
            assert_eq!(refused(text)["id"], 1, "{text}");
        }
    }

    #[test]
    fn a_rewrite_keeps_the_numbers_it_does_not_touch() {
        let text = r#"{"id":1,"method":"Browser.setDownloadBehavior","params":{"behavior":"allow","downloadPath":"/x","n":1.0000000000000002,"m":5e-324}}"#;
        let Verdict::Forward(out) = check(text, &rules()) else {
            panic!("not rewritten")
        };
        assert!(out.contains("1.0000000000000002"), "{out}");
        assert!(out.contains("5e-324"), "{out}");
    }

    fn refused(text: &str) -> Value {
        match check(text, &rules()) {
            Verdict::Refuse(out) => serde_json::from_str(&out).unwrap(),
            other => panic!("{text}: {other:?}"),
        }
    }

    #[test]
    fn download_requests_are_pointed_at_the_session_folder_however_they_are_spelled() {
        for text in [
            r#"{"id":3,"method":"Browser.setDownloadBehavior","params":{"behavior":"allowAndName","browserContextId":"C1","downloadPath":"/tmp/x","eventsEnabled":true}}"#,
            r#"{"id":3,"method":"Browser.set\u0044ownloadBehavior","params":{"behavior":"allow","downloadPath":"/etc"}}"#,
            r#"{"id":3,"method":"\u0042rowser.setDownloadBehavior","params":{"behavior":"allow","downloadPath":"/etc"}}"#,
            r#"{"id":3,"sessionId":"S","method":"Page.setDownloadBehavior","params":{"behavior":"allow","downloadPath":"/etc"}}"#,
        ] {
            let out = forwarded(text);
            assert_eq!(out["params"]["downloadPath"], "/data/b/downloads", "{text}");
            assert_eq!(out["params"]["behavior"], "allow");
            assert_eq!(out["id"], 3);
        }
        let deny = forwarded(
            r#"{"id":6,"method":"Browser.setDownloadBehavior","params":{"behavior":"deny","downloadPath":"/etc"}}"#,
        );
        assert_eq!(deny["params"].get("downloadPath"), None);
        refused(
            r#"{"id":6,"method":"Browser.setDownloadBehavior","params":{"behavior":"sideways"}}"#,
        );
        // A method name that merely mentions it passes untouched.
        let other = forwarded(
            r#"{"id":7,"method":"Runtime.evaluate","params":{"expression":"'setDownloadBehavior'"}}"#,
        );
        assert_eq!(other["params"]["expression"], "'setDownloadBehavior'");
    }

    #[test]
    fn what_another_parser_might_read_differently_is_refused() {
        // Two methods: serde keeps the last, another parser the first.
        let dup = refused(
            r#"{"id":9,"method":"Runtime.evaluate","method":"Browser.setDownloadBehavior","params":{"behavior":"allow","downloadPath":"/"}}"#,
        );
        assert_eq!(dup["error"]["code"], -32600);
        refused(r#"{"id":9,"method":"Page.navigate","params":{"url":"x","url":"y"}}"#);
        // A lone surrogate, deep nesting, trailing garbage, not an object, not JSON.
        refused(r#"{"id":9,"method":"Runtime.evaluate","params":{"expression":"\ud800"}}"#);
        let deep = format!(
            r#"{{"id":9,"method":"Browser.setDownloadBehavior","params":{{"behavior":"allow","downloadPath":"/","x":{}{}}}}}"#,
            "[".repeat(200),
            "]".repeat(200)
        );
        refused(&deep);
        refused(r#"{"id":9,"method":"Browser.close"} {"id":10}"#);
        refused("[1,2]");
        refused("Browser.close");
        refused(r#"{"id":9,"method":5}"#);
        // The caller learns which call failed whenever the id can be found.
        assert_eq!(refused(r#"{"id":9,"method":"A","method":"B"}"#)["id"], 9);
        assert_eq!(
            refused(r#"{"params":{"id":1,"x":"\ud800"},"id":12}"#)["id"],
            12
        );
        assert_eq!(
            refused(r#"{"params":{"x":"\"id\": 3"},"method":"\udc00"}"#)["id"],
            0
        );
    }

    #[test]
    fn browser_close_is_caught_on_any_session() {
        for (text, session) in [
            (r#"{"id":7,"method":"Browser.close"}"#, None),
            (
                r#"{"id":7,"method":"Browser.\u0063lose","params":{}}"#,
                None,
            ),
            (
                r#"{"id":7,"method":"Browser.close","sessionId":"AB"}"#,
                Some("AB"),
            ),
        ] {
            let Verdict::CloseBrowser(reply) = check(text, &rules()) else {
                panic!("{text} not caught");
            };
            let reply: Value = serde_json::from_str(&reply).unwrap();
            assert_eq!(reply["id"], 7);
            assert_eq!(reply.get("sessionId").and_then(Value::as_str), session);
        }
        forwarded(r#"{"id":1,"method":"Browser.closeX"}"#);
    }

    #[test]
    fn wrapped_commands_pass_the_same_rules() {
        let inner = r#"{"id":1,"method":"Browser.set\u0044ownloadBehavior","params":{"behavior":"allow","downloadPath":"/root"}}"#;
        let text = json!({"id": 2, "method": "Target.sendMessageToTarget", "params": {"sessionId": "T", "message": inner}}).to_string();
        let out = forwarded(&text);
        let inner: Value =
            serde_json::from_str(out["params"]["message"].as_str().unwrap()).unwrap();
        assert_eq!(inner["params"]["downloadPath"], "/data/b/downloads");

        let close = json!({"id": 2, "method": "Target.sendMessageToTarget", "params": {"message": r#"{"id":1,"method":"Browser.close"}"#}}).to_string();
        refused(&close);
        let bad = json!({"id": 2, "method": "Target.sendMessageToTarget", "params": {"message": r#"{"id":1,"method":"A","method":"B"}"#}}).to_string();
        refused(&bad);
        // Wrapped in a wrapped message: checked as well, to a limit.
        let twice =
            json!({"id": 3, "method": "Target.sendMessageToTarget", "params": {"message": close}})
                .to_string();
        refused(&twice);
    }

    #[test]
    fn contexts_cannot_choose_their_own_proxy() {
        forwarded(
            r#"{"id":1,"method":"Target.createBrowserContext","params":{"disposeOnDetach":true}}"#,
        );
        forwarded(r#"{"id":1,"method":"Target.createBrowserContext"}"#);
        for params in [
            r#"{"proxyServer":"direct://"}"#,
            r#"{"proxyBypassList":"*"}"#,
        ] {
            let text =
                format!(r#"{{"id":1,"method":"Target.createBrowserContext","params":{params}}}"#);
            let reply = refused(&text);
            assert!(
                reply["error"]["message"]
                    .as_str()
                    .unwrap()
                    .contains("proxyServer"),
                "{reply}"
            );
        }
    }

    #[test]
    fn file_inputs_take_only_the_sessions_uploads() {
        let out = forwarded(
            r#"{"id":1,"method":"DOM.setFileInputFiles","params":{"files":["/data/session-files/s1/uploads/a.txt","/data/b/uploads/b.txt"],"backendNodeId":4}}"#,
        );
        assert_eq!(
            out["params"]["files"],
            json!(["/data/b/uploads/a.txt", "/data/b/uploads/b.txt"])
        );
        for path in [
            "/etc/passwd",
            "/data/session-files/s2/uploads/a.txt",
            "/data/b/uploads/../profile/Cookies",
            "/data/b/uploadsX/a",
        ] {
            let text =
                json!({"id": 1, "method": "DOM.setFileInputFiles", "params": {"files": [path]}})
                    .to_string();
            let err = refused(&text);
            assert!(
                err["error"]["message"].as_str().unwrap().contains("not"),
                "{path}"
            );
        }
        refused(r#"{"id":1,"method":"Target.exposeDevToolsProtocol","params":{"targetId":"T"}}"#);
        let load = refused(
            r#"{"id":1,"method":"Extensions.load\u0055npacked","params":{"path":"/data/b/downloads/x"}}"#,
        );
        assert!(
            load["error"]["message"]
                .as_str()
                .unwrap()
                .contains("POST /v1/extensions")
        );
    }

    proptest::proptest! {
        #[test]
        fn the_filter_never_panics(text in ".{0,300}") {
            let _ = check(&text, &rules());
        }

        #[test]
        fn a_browser_close_is_found_whatever_else_the_command_carries(
            id in 0u64..1_000_000_000,
            extra in "[a-zA-Z0-9 ]{0,40}",
        ) {
            let text = json!({"params": {"note": extra}, "method": "Browser.close", "id": id}).to_string();
            proptest::prop_assert!(matches!(check(&text, &rules()), Verdict::CloseBrowser(_)));
        }
    }
}
