//! Session logs: the CDP commands clients send and the browser's replies, paired up and
//! written as Browserbase `SessionLog` entries, one JSON object per line, to the session's
//! `logs.jsonl`.
//!
//! The relay's only work is an O(1) hand-off of each command and each reply (a refcounted
//! clone of the frame, `try_send` on a bounded channel; events are not logged and never
//! handed over). Parsing and writing happen on the logger's own task, in batches at most
//! every [`DRAIN_EVERY`], so entries reach the file up to that much later. If the logger falls
//! behind, frames are dropped from the log rather than slowing the relay; the log says how
//! many (a `browserd.framesDropped` entry), and commands whose replies may have been dropped
//! stop waiting for them after [`PENDING_FOR`].

use crate::files::quota::DiskQuota;
use serde_json::{Map, Value, json};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::io::AsyncWriteExt as _;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Utf8Bytes;

/// Entries kept per session; after this many the log ends with a `browserd.logLimitReached`
/// entry. The first ones are kept: they show how the session was set up.
pub(crate) const MAX_ENTRIES: usize = 10_000;
/// Largest `rawBody` kept per request or response, in bytes.
pub(crate) const MAX_RAW_BODY: usize = 4 * 1024;
/// Messages larger than this are not parsed into `params` / `result` (their `rawBody` is
/// still kept, cut to [`MAX_RAW_BODY`]).
const MAX_PARSED: usize = 64 * 1024;
/// Frames waiting for the logger; beyond this the relay drops them from the log. Room for
/// [`DRAIN_EVERY`] of 40,000 frames a second.
const QUEUE: usize = 4096;
/// How long the logger rests after writing what it found. While it rests it is not waiting
/// on the channel, so a relay's hand-off wakes nobody: woken per frame, the logger (and the
/// file write it made each time) cost every round trip a thread hop on a busy machine.
const DRAIN_EVERY: std::time::Duration = std::time::Duration::from_millis(100);
/// Commands waiting for their reply, per session; beyond this new ones are not logged.
const MAX_PENDING: usize = 10_000;
/// After frames were dropped, commands waiting longer than this for a reply are given up
/// (their reply was most likely among the dropped), in ms.
const PENDING_FOR: i64 = 60_000;

/// One frame handed from a relay to the logger.
#[derive(Debug)]
enum Traffic {
    Command {
        client: u64,
        /// The frame, or for a large one only its head ([`kept_for_log`]).
        text: Utf8Bytes,
        at: i64,
    },
    Reply {
        client: u64,
        text: Utf8Bytes,
        at: i64,
    },
    /// browserd's own entry (`browserd.*`), e.g. a connection its egress refused.
    Note {
        method: &'static str,
        params: Value,
        at: i64,
    },
}

/// A relay's handle on its session's logger. Cheap to clone; the logger ends once every
/// clone is dropped.
#[derive(Debug, Clone)]
pub struct LogTap {
    tx: mpsc::Sender<Traffic>,
    /// Frames the relay could not hand over (the queue was full). An atomic add on the
    /// rare drop: nothing on the common path.
    dropped: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

fn now_ms() -> i64 {
    (crate::model::now().unix_timestamp_nanos() / 1_000_000) as i64
}

impl LogTap {
    /// A client's command, as it goes to the browser.
    pub fn command(&self, client: u64, text: &Utf8Bytes) {
        self.hand_over(Traffic::Command {
            client,
            text: kept_for_log(text),
            at: now_ms(),
        });
    }

    /// An entry of browserd's own in the session's log.
    pub fn note(&self, method: &'static str, params: Value) {
        self.hand_over(Traffic::Note {
            method,
            params,
            at: now_ms(),
        });
    }

    fn hand_over(&self, traffic: Traffic) {
        if let Err(mpsc::error::TrySendError::Full(_)) = self.tx.try_send(traffic) {
            self.dropped
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// A browser message going to a client; only replies (`{"id":…`) are logged, and the
    /// check is a prefix comparison, so events cost nothing here.
    pub fn reply(&self, client: u64, text: &Utf8Bytes) {
        if text.as_bytes().starts_with(b"{\"id\":") {
            self.hand_over(Traffic::Reply {
                client,
                text: kept_for_log(text),
                at: now_ms(),
            });
        }
    }
}

impl crate::cdp::relay::FrameLog for LogTap {
    fn command(&self, client: u64, text: &Utf8Bytes) {
        LogTap::command(self, client, text);
    }

    fn reply(&self, client: u64, text: &Utf8Bytes) {
        LogTap::reply(self, client, text);
    }
}

/// Starts a session's logger, appending to `path` (a restarted browserd continues the
/// file). Returns the tap relays use.
/// Logging stops once the session's files reach `quota`.
pub(crate) fn start(path: PathBuf, quota: Arc<DiskQuota>) -> LogTap {
    let (tx, rx) = mpsc::channel(QUEUE);
    let dropped = std::sync::Arc::default();
    // Lives until the last tap is dropped (the session ended and its relays finished).
    tokio::spawn(run(
        LogWriter::new(path, quota),
        rx,
        std::sync::Arc::clone(&dropped),
    ));
    LogTap { tx, dropped }
}

struct Pending {
    method: String,
    session_id: Option<String>,
    params: Value,
    raw: String,
    at: i64,
}

async fn run(
    mut writer: LogWriter,
    mut rx: mpsc::Receiver<Traffic>,
    dropped: std::sync::Arc<std::sync::atomic::AtomicU64>,
) {
    let mut pending: HashMap<(u64, u64), Pending> = HashMap::new();
    let mut pages = PageIds::default();
    while let Some(first) = rx.recv().await {
        let lost = dropped.swap(0, std::sync::atomic::Ordering::Relaxed);
        if lost > 0 {
            writer.write(frames_dropped(lost)).await;
            let now = now_ms();
            pending.retain(|_, command| now - command.at < PENDING_FOR);
        }
        let mut next = Some(first);
        // Everything queued now is written before one flush.
        while let Some(traffic) = next {
            match traffic {
                Traffic::Command { client, text, at } => {
                    if pending.len() < MAX_PENDING
                        && let Some((id, command)) = parse_command(&text, at)
                    {
                        pending.insert((client, id), command);
                    }
                }
                Traffic::Note { method, params, at } => {
                    let mut entry = Map::new();
                    entry.insert("method".into(), method.into());
                    entry.insert("pageId".into(), 0.into());
                    entry.insert("sessionId".into(), "".into());
                    entry.insert("timestamp".into(), at.into());
                    entry.insert("request".into(), json!({ "params": params, "rawBody": "" }));
                    writer.write(entry).await;
                }
                Traffic::Reply { client, text, at } => {
                    if let Some(id) = reply_id(&text)
                        && let Some(command) = pending.remove(&(client, id))
                    {
                        let entry = entry(&command, &text, at, &mut pages);
                        writer.write(entry).await;
                    }
                }
            }
            next = rx.try_recv().ok();
        }
        writer.flush().await;
        tokio::time::sleep(DRAIN_EVERY).await;
    }
    let lost = dropped.swap(0, std::sync::atomic::Ordering::Relaxed);
    if lost > 0 {
        writer.write(frames_dropped(lost)).await;
    }
    writer.flush().await;
}

/// The entry that says the relay dropped `count` frames from the log (the logger was behind).
fn frames_dropped(count: u64) -> Map<String, Value> {
    let mut entry = Map::new();
    entry.insert("method".into(), "browserd.framesDropped".into());
    entry.insert("pageId".into(), 0.into());
    entry.insert("sessionId".into(), "".into());
    entry.insert("timestamp".into(), now_ms().into());
    entry.insert(
        "request".into(),
        json!({ "params": { "dropped": count }, "rawBody": "" }),
    );
    entry
}

/// What the log keeps of a frame while it waits in the queue: the frame itself (a
/// refcounted clone) when small; of a large one only its head, copied, so that the log
/// never holds a large message's buffer after the relay has given its memory back
/// (`cdp::budget`). The log keeps no more of it anyway ([`MAX_RAW_BODY`]).
fn kept_for_log(text: &Utf8Bytes) -> Utf8Bytes {
    if text.len() <= MAX_PARSED {
        return text.clone();
    }
    Utf8Bytes::from(cut(text))
}

/// The id, method and CDP session of a command of which only the head is kept: read from
/// the keys as clients write them (`"id":7,"method":"…"`); a `sessionId` after the params
/// (Playwright puts it last) is not there to read.
fn command_head(text: &str) -> Option<(u64, String, Option<String>)> {
    let string_after = |key: &str| {
        let rest = &text[text.find(key)? + key.len()..];
        let rest = rest
            .trim_start()
            .strip_prefix(':')?
            .trim_start()
            .strip_prefix('"')?;
        Some(rest[..rest.find('"')?].to_owned())
    };
    let id = {
        let rest = &text[text.find("\"id\"")? + 4..];
        let rest = rest.trim_start().strip_prefix(':')?.trim_start();
        let end = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        rest[..end].parse().ok()?
    };
    Some((
        id,
        string_after("\"method\"")?,
        string_after("\"sessionId\""),
    ))
}

fn parse_command(text: &str, at: i64) -> Option<(u64, Pending)> {
    /// A command with its params (small messages) or without them: serde skips a large
    /// message's params without building them. Either way the text is parsed once.
    #[derive(serde::Deserialize)]
    struct Command<P> {
        id: u64,
        method: String,
        #[serde(rename = "sessionId")]
        session_id: Option<String>,
        params: Option<P>,
    }
    let (id, method, session_id, params) = match serde_json::from_str::<Command<Value>>(text) {
        Ok(c) => (c.id, c.method, c.session_id, c.params),
        // The head of a large command (the relay forwards only well-formed JSON).
        Err(_) => {
            let (id, method, session_id) = command_head(text)?;
            (id, method, session_id, None)
        }
    };
    Some((
        id,
        Pending {
            method,
            session_id,
            params: params.unwrap_or_else(|| json!({})),
            raw: cut(text),
            at,
        },
    ))
}

/// The id of a reply, read from its head without parsing the rest.
fn reply_id(text: &str) -> Option<u64> {
    let digits = text.strip_prefix("{\"id\":")?;
    let end = digits
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(digits.len());
    digits[..end].parse().ok()
}

fn cut(text: &str) -> String {
    let mut end = text.len().min(MAX_RAW_BODY);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}

/// Browserbase's `pageId` is an integer: each CDP session (one attachment to a page) gets
/// the next number; browser-level traffic is page 0.
#[derive(Default)]
struct PageIds(HashMap<String, u64>);

impl PageIds {
    fn of(&mut self, session: Option<&str>) -> u64 {
        let Some(session) = session else { return 0 };
        let next = self.0.len() as u64 + 1;
        *self.0.entry(session.to_owned()).or_insert(next)
    }
}

fn entry(command: &Pending, reply: &str, at: i64, pages: &mut PageIds) -> Map<String, Value> {
    let result = if reply.len() <= MAX_PARSED {
        serde_json::from_str::<Value>(reply)
            .ok()
            .and_then(|mut v| v.get_mut("result").map(Value::take))
            .unwrap_or_else(|| json!({}))
    } else {
        json!({})
    };
    let mut entry = Map::new();
    entry.insert("method".into(), command.method.clone().into());
    entry.insert(
        "pageId".into(),
        pages.of(command.session_id.as_deref()).into(),
    );
    entry.insert(
        "sessionId".into(),
        command.session_id.clone().unwrap_or_default().into(),
    );
    entry.insert("timestamp".into(), command.at.into());
    for key in ["frameId", "loaderId"] {
        if let Some(v) = result.get(key).filter(|v| v.is_string()) {
            entry.insert(key.into(), v.clone());
        }
    }
    entry.insert(
        "request".into(),
        json!({ "params": command.params, "rawBody": command.raw, "timestamp": command.at }),
    );
    entry.insert(
        "response".into(),
        json!({ "result": result, "rawBody": cut(reply), "timestamp": at }),
    );
    entry
}

/// Appends entries to the log file, numbering them (`eventId`) and stopping at
/// [`MAX_ENTRIES`]. Opened on the first entry, so a session that logs nothing has no file
/// (and its logger touches no disk).
struct LogWriter {
    path: PathBuf,
    file: Option<tokio::io::BufWriter<tokio::fs::File>>,
    written: usize,
    full: bool,
    quota: Arc<DiskQuota>,
}

impl LogWriter {
    fn new(path: PathBuf, quota: Arc<DiskQuota>) -> Self {
        Self {
            path,
            file: None,
            written: 0,
            full: false,
            quota,
        }
    }

    /// Opens the file for appending; a restarted browserd continues the count of the file
    /// it appends to.
    async fn open(&mut self) {
        self.written = match tokio::fs::read(&self.path).await {
            Ok(bytes) => bytes.iter().filter(|b| **b == b'\n').count(),
            Err(_) => 0,
        };
        self.full = self.written > MAX_ENTRIES;
        self.file = open_append(&self.path).await;
        if self.file.is_none() {
            self.full = true;
        }
    }

    async fn write(&mut self, mut entry: Map<String, Value>) {
        if self.file.is_none() && !self.full {
            self.open().await;
        }
        if self.full {
            return;
        }
        // The log's last entry says why it stops: its entry limit, or the session's disk
        // allowance (--session-disk-mib).
        let last = if self.written == MAX_ENTRIES {
            Some(("browserd.logLimitReached", json!({ "limit": MAX_ENTRIES })))
        } else if self.quota.is_reached() {
            Some((
                "browserd.diskQuotaReached",
                json!({ "limitBytes": self.quota.limit() }),
            ))
        } else {
            None
        };
        if let Some((method, params)) = last {
            self.full = true;
            entry = Map::new();
            entry.insert("method".into(), method.into());
            entry.insert("pageId".into(), 0.into());
            entry.insert("sessionId".into(), "".into());
            entry.insert("timestamp".into(), now_ms().into());
            entry.insert("request".into(), json!({ "params": params, "rawBody": "" }));
        }
        entry.insert("eventId".into(), self.written.to_string().into());
        let mut line = Value::Object(entry).to_string();
        line.push('\n');
        if let Some(file) = &mut self.file
            && let Err(e) = file.write_all(line.as_bytes()).await
        {
            tracing::warn!(path = %self.path.display(), error = %e, "could not write the session log");
            self.file = None;
            self.full = true;
            return;
        }
        self.written += 1;
    }

    async fn flush(&mut self) {
        if let Some(file) = &mut self.file {
            let _ = file.flush().await;
        }
    }
}

async fn open_append(path: &std::path::Path) -> Option<tokio::io::BufWriter<tokio::fs::File>> {
    if let Some(parent) = path.parent() {
        let _ = tokio::fs::create_dir_all(parent).await;
    }
    match tokio::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .await
    {
        Ok(file) => Some(tokio::io::BufWriter::new(file)),
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "could not open the session log");
            None
        }
    }
}

/// Reads a session's log, oldest first (the API streams it: [`super::jsonl_as_array`]).
#[cfg(test)]
pub(crate) async fn read(path: &std::path::Path) -> std::io::Result<Vec<Value>> {
    super::read_jsonl(path).await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tap whose logger is not running yet: [`logged`] runs it to the end.
    fn tap(queue: usize) -> (LogTap, mpsc::Receiver<Traffic>) {
        let (tx, rx) = mpsc::channel(queue);
        (
            LogTap {
                tx,
                dropped: Default::default(),
            },
            rx,
        )
    }

    /// Runs the logger over what `tap` handed over, until the tap is gone; the entries.
    async fn logged(
        tap: LogTap,
        rx: mpsc::Receiver<Traffic>,
        path: &std::path::Path,
    ) -> Vec<Value> {
        logged_within(tap, rx, path, Arc::new(DiskQuota::new(u64::MAX))).await
    }

    async fn logged_within(
        tap: LogTap,
        rx: mpsc::Receiver<Traffic>,
        path: &std::path::Path,
        quota: Arc<DiskQuota>,
    ) -> Vec<Value> {
        let dropped = std::sync::Arc::clone(&tap.dropped);
        drop(tap);
        run(LogWriter::new(path.to_owned(), quota), rx, dropped).await;
        read(path).await.unwrap()
    }

    #[tokio::test]
    async fn the_log_stops_with_a_last_entry_once_the_session_disk_allowance_is_reached() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("logs.jsonl");
        // The session's folder already holds its allowance (an upload, say).
        std::fs::write(dir.path().join("upload"), [0u8; 100]).unwrap();
        let quota = Arc::new(DiskQuota::new(100));
        quota.enforce(
            dir.path(),
            &[dir.path().to_owned()],
            &dir.path().join("downloads"),
        );
        assert!(quota.is_reached());
        let (tap, rx) = tap(QUEUE);
        let cmd = |t: &str| Utf8Bytes::from(t.to_owned());
        for id in 1..4 {
            tap.command(
                1,
                &cmd(&format!(r#"{{"id":{id},"method":"Browser.getVersion"}}"#)),
            );
            tap.reply(1, &cmd(&format!(r#"{{"id":{id},"result":{{}}}}"#)));
        }
        let entries = logged_within(tap, rx, &path, quota).await;
        assert_eq!(entries.len(), 1, "{entries:?}");
        assert_eq!(entries[0]["method"], "browserd.diskQuotaReached");
        assert_eq!(entries[0]["request"]["params"]["limitBytes"], 100);
    }

    #[tokio::test]
    async fn commands_and_replies_become_session_log_entries() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s/logs.jsonl");
        let (tap, rx) = tap(QUEUE);
        let cmd = |t: &str| Utf8Bytes::from(t.to_owned());
        tap.command(1, &cmd(r#"{"id":1,"method":"Browser.getVersion"}"#));
        tap.command(
            1,
            &cmd(r#"{"id":2,"method":"Page.navigate","params":{"url":"http://x/"},"sessionId":"S1"}"#),
        );
        // Another client's id 1 is another command.
        tap.command(2, &cmd(r#"{"id":1,"method":"Target.getTargets"}"#));
        tap.reply(1, &cmd(r#"{"method":"Page.loadEventFired","params":{}}"#));
        tap.reply(
            1,
            &cmd(r#"{"id":2,"result":{"frameId":"F","loaderId":"L"},"sessionId":"S1"}"#),
        );
        tap.reply(1, &cmd(r#"{"id":1,"result":{"product":"Chrome"}}"#));
        tap.reply(2, &cmd(r#"{"id":1,"result":{"targetInfos":[]}}"#));

        let entries = logged(tap, rx, &path).await;
        assert_eq!(entries.len(), 3, "{entries:?}");
        assert_eq!(entries[0]["method"], "Page.navigate");
        assert_eq!(entries[0]["pageId"], 1);
        assert_eq!(entries[0]["sessionId"], "S1");
        assert_eq!(entries[0]["frameId"], "F");
        assert_eq!(entries[0]["request"]["params"]["url"], "http://x/");
        assert_eq!(entries[0]["response"]["result"]["loaderId"], "L");
        assert_eq!(entries[1]["method"], "Browser.getVersion");
        assert_eq!(entries[1]["pageId"], 0);
        assert_eq!(entries[1]["response"]["result"]["product"], "Chrome");
        assert_eq!(entries[2]["method"], "Target.getTargets");
        assert_eq!(entries[1]["eventId"], "1");
        assert!(entries[0]["timestamp"].as_i64().unwrap() > 1_700_000_000_000);
    }

    #[tokio::test]
    async fn frames_the_logger_could_not_take_are_counted_in_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("logs.jsonl");
        // Room for two frames: the logger is not reading, so the rest are dropped.
        let (tap, rx) = tap(2);
        let cmd = |t: &str| Utf8Bytes::from(t.to_owned());
        tap.command(1, &cmd(r#"{"id":1,"method":"Browser.getVersion"}"#));
        tap.reply(1, &cmd(r#"{"id":1,"result":{}}"#));
        for id in 2..7 {
            tap.command(
                1,
                &cmd(&format!(r#"{{"id":{id},"method":"Runtime.evaluate"}}"#)),
            );
        }
        let entries = logged(tap, rx, &path).await;
        let methods: Vec<&str> = entries
            .iter()
            .map(|e| e["method"].as_str().unwrap())
            .collect();
        assert_eq!(methods, ["browserd.framesDropped", "Browser.getVersion"]);
        assert_eq!(entries[0]["request"]["params"]["dropped"], 5);
    }

    #[test]
    fn the_log_keeps_only_the_head_of_a_large_command() {
        let big = format!(
            r#"{{"id":41,"method":"Runtime.evaluate","params":{{"expression":"'{}'"}},"sessionId":"S"}}"#,
            "x".repeat(2 * MAX_PARSED)
        );
        let kept = kept_for_log(&Utf8Bytes::from(big.clone()));
        assert_eq!(
            kept.len(),
            MAX_RAW_BODY,
            "a copy of the head, not the frame"
        );
        let (id, pending) = parse_command(&kept, 7).expect("read from the head");
        assert_eq!((id, pending.method.as_str()), (41, "Runtime.evaluate"));
        assert_eq!(
            pending.session_id, None,
            "after the params: not in the head"
        );
        let small = Utf8Bytes::from(r#"{"id":1,"method":"Page.enable"}"#);
        assert_eq!(kept_for_log(&small), small);
    }

    #[test]
    fn reply_ids_are_read_from_the_head() {
        assert_eq!(reply_id(r#"{"id":42,"result":{}}"#), Some(42));
        assert_eq!(reply_id(r#"{"method":"X","params":{"id":3}}"#), None);
        assert_eq!(reply_id(r#"{"id":"#), None);
    }
}
