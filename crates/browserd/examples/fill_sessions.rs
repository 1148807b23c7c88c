//! For the benchmark (bench/run.mjs, "a month of sessions"): adds ended sessions to a
//! browserd data dir's store, or deletes them all the way the retention sweep does, and
//! prints what it did and how long it took as one JSON line.
//!
//!     fill_sessions <data dir> add <count> [first]  # ended sessions of the default project,
//!                                                   # userMetadata {"run": "r<first + i>"}
//!     fill_sessions <data dir> bill            # add ended sessions to the usage totals,
//!                                              # as the server's sweep does every 10 minutes
//!     fill_sessions <data dir> purge           # every ended session, in sweep batches
//!
//! A server may be running on the data dir meanwhile (SQLite in WAL mode lets both write).

use browserd::model::{Session, SessionStatus, now};
use browserd::store::{ProjectLimits, SETTING_DEFAULT_PROJECT};
use std::time::Instant;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [dir, what, rest @ ..] = args.as_slice() else {
        anyhow::bail!("usage: fill_sessions <data dir> add <count> [first] | bill | purge");
    };
    let store = browserd::store::open(&std::path::Path::new(dir).join("browserd.db")).await?;
    let started = Instant::now();
    match (what.as_str(), rest) {
        ("add", [count, first @ ..]) if first.len() <= 1 => {
            let count: u64 = count.parse()?;
            let first_run: u64 = first.first().map_or(Ok(0), |f| f.parse())?;
            let project = store
                .settings
                .get_setting(SETTING_DEFAULT_PROJECT)
                .await?
                .ok_or_else(|| anyhow::anyhow!("no default project: run browserd serve once"))?;
            let limits = ProjectLimits {
                concurrency: u32::MAX,
                per_minute: 0,
            };
            let statuses = [
                SessionStatus::Completed,
                SessionStatus::TimedOut,
                SessionStatus::Error,
            ];
            let first = now() - time::Duration::days(29);
            let step = time::Duration::days(28) / count.max(1) as f64;
            for i in 0..count {
                let created = first + step * i as f64;
                let ended = created + time::Duration::seconds(30 + (i % 3600) as i64);
                let session = Session {
                    id: uuid::Uuid::new_v4(),
                    project_id: project.clone(),
                    status: statuses[(i % 3) as usize],
                    keep_alive: i % 2 == 0,
                    timeout_secs: 3600,
                    region: "us-west-2".into(),
                    user_metadata: serde_json::json!({"run": format!("r{}", first_run + i)})
                        .as_object()
                        .cloned(),
                    browser_settings: None,
                    extension_id: None,
                    proxies: None,
                    proxy_bytes: 0,
                    created_at: created,
                    updated_at: ended,
                    started_at: created,
                    expires_at: created + time::Duration::hours(1),
                    ended_at: Some(ended),
                    end_reason: Some("filled by the benchmark".into()),
                    browser: None,
                    node: None,
                };
                if let Err(refused) = store.sessions.insert_session(&session, limits).await? {
                    anyhow::bail!("refused: {refused:?}");
                }
            }
            println!(
                "{}",
                serde_json::json!({"added": count, "seconds": started.elapsed().as_secs_f64()})
            );
        }
        ("bill", []) => {
            let mut billed = 0;
            loop {
                let n = store.sessions.bill_ended(1000).await?;
                billed += n;
                if n < 1000 {
                    break;
                }
            }
            println!(
                "{}",
                serde_json::json!({"billed": billed, "seconds": started.elapsed().as_secs_f64()})
            );
        }
        ("purge", []) => {
            let mut purged = 0;
            loop {
                let n = store
                    .sessions
                    .purge_ended(now() + time::Duration::days(1), 1000)
                    .await?;
                purged += n;
                if n < 1000 {
                    break;
                }
            }
            println!(
                "{}",
                serde_json::json!({"purged": purged, "seconds": started.elapsed().as_secs_f64()})
            );
        }
        _ => anyhow::bail!("usage: fill_sessions <data dir> add <count> [first] | bill | purge"),
    }
    store.close().await;
    Ok(())
}
