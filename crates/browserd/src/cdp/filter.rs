//! What browserd checks in a client's CDP command before the browser sees it.
//!
//! Every text frame a client (or an inspector's DevTools) sends is parsed, strictly, and
//! what reaches the browser is browserd's own serialisation of what it parsed, so the
//! browser reads exactly what browserd checked: no escape in a method name, duplicate key,
//! lone surrogate or over-deep nesting can make the two read a command differently. A frame
//! that does not parse strictly is refused with a CDP error, never forwarded as it came.
//!
//! Then, by method (wherever it appears: a flattened session's command, or one wrapped in
//! `Target.sendMessageToTarget`):
//! - `Browser.close` ends the session (the relay answers it);
//! - `Browser/Page.setDownloadBehavior` saves into the session's downloads folder;
//! - `DOM.setFileInputFiles` takes only files uploaded to the session;
//! - `Target.exposeDevToolsProtocol` is refused (it hands CDP to page scripts, past this filter);
//! - `Target.createBrowserContext` with its own proxy is refused (see the match arm).

use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value, json};
use std::path::{Component, Path, PathBuf};

/// How deep `Target.sendMessageToTarget` may nest (Chromium allows any depth; no client
/// needs more than one level).
const MAX_WRAPPING: usize = 3;

/// The folders a session's commands may name.
#[derive(Debug, Clone)]
pub struct Rules {
    /// Where downloads go, whatever a client asks.
    pub downloads: PathBuf,
    /// Uploaded files: the folder the API names (`POST /v1/sessions/{id}/uploads`) and the
    /// same files as the browser sees them (its sandbox shows only its own folder).
    pub uploads: PathBuf,
    pub uploads_in_browser: PathBuf,
}

/// What to do with one client frame.
#[derive(Debug, PartialEq)]
pub enum Verdict {
    /// Send this to the browser.
    Forward(String),
    /// A `Browser.close`: answer the client with this and end the session.
    CloseBrowser(String),
    /// Answer the client with this CDP error; the browser sees nothing.
    Refuse(String),
}

/// Checks one client text frame.
pub fn check(text: &str, rules: &Rules) -> Verdict {
    let mut msg = match parse_strict(text) {
        Ok(Value::Object(msg)) => msg,
        Ok(_) => return refuse(None, None, "a CDP message must be a JSON object"),
        Err(e) => {
            let id = top_level_id(text).map(Value::from);
            return refuse(
                id.as_ref(),
                None,
                &format!("browserd could not parse the message: {e}"),
            );
        }
    };
    match inspect(&mut msg, rules, 0) {
        Ok(Some(Closing)) => {
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
        Ok(None) => Verdict::Forward(Value::Object(msg).to_string()),
        Err(why) => refuse(msg.get("id"), msg.get("sessionId"), &why),
    }
}

/// A `Browser.close` was found.
struct Closing;

/// Applies the rules to one command, in place; recurses into wrapped commands.
fn inspect(
    msg: &mut Map<String, Value>,
    rules: &Rules,
    depth: usize,
) -> Result<Option<Closing>, String> {
    let Some(method) = msg.get("method") else {
        return Ok(None);
    };
    let Some(method) = method.as_str() else {
        return Err("method must be a string".into());
    };
    match method {
        "Browser.close" => Ok(Some(Closing)),
        "Browser.setDownloadBehavior" | "Page.setDownloadBehavior" => {
            redirect_downloads(params(msg)?, &rules.downloads)?;
            Ok(None)
        }
        "DOM.setFileInputFiles" => {
            only_uploads(params(msg)?, rules)?;
            Ok(None)
        }
        "Target.exposeDevToolsProtocol" => {
            Err("Target.exposeDevToolsProtocol is not available through browserd".into())
        }
        // A context's own proxy would leave through the browser's network namespace, where
        // only loopback exists: `direct://` would reach the browser's unfiltered DevTools
        // port, anything else fails. Refused with a reason instead of failing later.
        "Target.createBrowserContext" => {
            let params = params(msg)?;
            if params.contains_key("proxyServer") || params.contains_key("proxyBypassList") {
                return Err("a per-context proxy (proxyServer) is not available through browserd; pages leave through the session's egress".into());
            }
            Ok(None)
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
            let mut inner = match parse_strict(inner) {
                Ok(Value::Object(inner)) => inner,
                Ok(_) => return Err("the wrapped message must be a JSON object".into()),
                Err(e) => return Err(format!("browserd could not parse the wrapped message: {e}")),
            };
            if inspect(&mut inner, rules, depth + 1)?.is_some() {
                return Err(
                    "send Browser.close on the browser's own connection, not to a target".into(),
                );
            }
            params.insert("message".into(), Value::Object(inner).to_string().into());
            Ok(None)
        }
        _ => Ok(None),
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
        let path = Path::new(file.as_str().ok_or("files must be an array of paths")?);
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
        *file = seen.to_str().ok_or("an upload path is not UTF-8")?.into();
    }
    Ok(())
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
pub fn refusal(text: &str, message: &str) -> String {
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

/// Parses JSON as serde_json does (UTF-8, no lone surrogates, at most 128 levels deep), and
/// refuses an object with a key twice, at any depth: two parsers may keep different ones.
pub fn parse_strict(text: &str) -> Result<Value, serde_json::Error> {
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
            downloads: "/data/b/downloads".into(),
            uploads: "/data/session-files/s1/uploads".into(),
            uploads_in_browser: "/data/b/uploads".into(),
        }
    }

    fn forwarded(text: &str) -> Value {
        match check(text, &rules()) {
            Verdict::Forward(out) => serde_json::from_str(&out).unwrap(),
            other => panic!("{text}: {other:?}"),
        }
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
