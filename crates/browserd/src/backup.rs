//! `browserd backup FILE` and `browserd restore FILE`: a data dir's lasting state in one zip,
//! taken while the server runs.
//!
//! What goes in: the database as one consistent snapshot (SQLite's `VACUUM INTO`, which
//! reads a single transaction's view while the server goes on writing), the context key
//! (without it no saved context opens), saved contexts and unpacked extensions. What does
//! not: session files (downloads, logs, recordings: they expire with their sessions) and
//! running browsers. A context saved while the backup runs may be the older or the newer
//! profile; both open.
//!
//! With a shared PostgreSQL database (`--database`), everything but session files is in the
//! database: back it up with `pg_dump` instead.

use anyhow::{Context as _, bail};
use std::io::Write as _;
use std::path::{Path, PathBuf};

/// Written first in every backup; `restore` refuses a zip without it.
const MANIFEST: &str = "browserd-backup.json";
const DATABASE: &str = "browserd.db";
const CONTEXT_KEY: &str = "context.key";
/// Folders of the data dir copied whole.
const FOLDERS: [&str; 2] = ["contexts", "extensions"];

/// What a backup or restore copied.
#[derive(Debug, Default)]
pub(crate) struct Copied {
    pub files: usize,
    pub bytes: u64,
}

/// Writes a backup of `data_dir` to `dest` (replaced only once the new one is complete).
pub(crate) async fn backup(data_dir: &Path, dest: &Path) -> anyhow::Result<Copied> {
    let db = data_dir.join(DATABASE);
    if !db.exists() {
        bail!(
            "no browserd database in {} (pass the server's --data-dir)",
            data_dir.display()
        );
    }
    let partial = with_suffix(dest, ".partial");
    let snapshot = with_suffix(dest, ".db-snapshot");
    let _ = std::fs::remove_file(&snapshot);
    crate::store::snapshot_sqlite(&db, &snapshot)
        .await
        .context("could not take a snapshot of the database")?;
    let data_dir = data_dir.to_owned();
    let (partial_path, snapshot_path) = (partial.clone(), snapshot.clone());
    let written =
        tokio::task::spawn_blocking(move || write_zip(&data_dir, &snapshot_path, &partial_path))
            .await?;
    let _ = std::fs::remove_file(&snapshot);
    let copied = match written {
        Ok(copied) => copied,
        Err(e) => {
            let _ = std::fs::remove_file(&partial);
            return Err(e);
        }
    };
    std::fs::rename(&partial, dest)
        .with_context(|| format!("could not move the backup to {}", dest.display()))?;
    Ok(copied)
}

fn write_zip(data_dir: &Path, snapshot: &Path, dest: &Path) -> anyhow::Result<Copied> {
    use std::os::unix::fs::OpenOptionsExt as _;
    // It holds the context key: readable by its owner only, whatever the umask.
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(dest)
        .with_context(|| format!("could not create {}", dest.display()))?;
    let mut zip = zip::ZipWriter::new(std::io::BufWriter::new(file));
    let options = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated)
        .unix_permissions(0o600)
        .large_file(true);
    let mut copied = Copied::default();
    let manifest = serde_json::json!({
        "browserdVersion": env!("CARGO_PKG_VERSION"),
        "createdAt": crate::model::fmt_time(crate::model::now()),
        "from": data_dir.display().to_string(),
    });
    zip.start_file(MANIFEST, options)?;
    zip.write_all(serde_json::to_string_pretty(&manifest)?.as_bytes())?;
    let mut add = |zip: &mut zip::ZipWriter<_>, name: &str, path: &Path| -> anyhow::Result<()> {
        zip.start_file(name, options)?;
        let mut from =
            std::fs::File::open(path).with_context(|| format!("reading {}", path.display()))?;
        copied.bytes += std::io::copy(&mut from, zip)?;
        copied.files += 1;
        Ok(())
    };
    add(&mut zip, DATABASE, snapshot)?;
    let key = data_dir.join(CONTEXT_KEY);
    if key.exists() {
        add(&mut zip, CONTEXT_KEY, &key)?;
    }
    for folder in FOLDERS {
        for (name, path) in files_under(data_dir, &data_dir.join(folder))? {
            add(&mut zip, &name, &path)?;
        }
    }
    zip.finish()?.into_inner()?.sync_all()?;
    Ok(copied)
}

/// Every regular file under `dir`, named by its path relative to `root` (symbolic links
/// are not followed: browserd writes none).
fn files_under(root: &Path, dir: &Path) -> anyhow::Result<Vec<(String, PathBuf)>> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(found);
    };
    for entry in entries {
        let entry = entry?;
        let kind = entry.file_type()?;
        let path = entry.path();
        if kind.is_dir() {
            found.extend(files_under(root, &path)?);
        } else if kind.is_file() {
            let name = path
                .strip_prefix(root)
                .expect("walked from root")
                .to_str()
                .with_context(|| format!("{} is not UTF-8", path.display()))?
                .to_owned();
            found.push((name, path));
        }
    }
    Ok(found)
}

/// Unpacks a backup into `data_dir`, which must not hold a database yet.
pub(crate) fn restore(file: &Path, data_dir: &Path) -> anyhow::Result<Copied> {
    if data_dir.join(DATABASE).exists() {
        bail!(
            "{} already holds a browserd database: restore into an empty --data-dir (and point the server at it), or move the old one away first",
            data_dir.display()
        );
    }
    let zip =
        std::fs::File::open(file).with_context(|| format!("could not open {}", file.display()))?;
    let mut zip = zip::ZipArchive::new(std::io::BufReader::new(zip))
        .with_context(|| format!("{} is not a browserd backup (not a zip)", file.display()))?;
    if zip.by_name(MANIFEST).is_err() || zip.by_name(DATABASE).is_err() {
        bail!(
            "{} is not a browserd backup (no {MANIFEST} or {DATABASE} in it)",
            file.display()
        );
    }
    std::fs::create_dir_all(data_dir)?;
    let mut copied = Copied::default();
    for i in 0..zip.len() {
        let mut entry = zip.by_index(i)?;
        // Only the names a backup writes, each inside the data dir.
        let Some(name) = entry.enclosed_name() else {
            bail!("{:?} names a path outside the data dir", entry.name_raw());
        };
        let top = name.components().next().map(|c| c.as_os_str().to_owned());
        let known = top.as_ref().and_then(|t| t.to_str()).is_some_and(|t| {
            t == DATABASE || t == CONTEXT_KEY || t == MANIFEST || FOLDERS.contains(&t)
        });
        if !known || entry.is_dir() || name == Path::new(MANIFEST) {
            continue;
        }
        let dest = data_dir.join(&name);
        if let Some(parent) = dest.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let mut out = std::fs::File::create(&dest)
            .with_context(|| format!("could not create {}", dest.display()))?;
        copied.bytes += std::io::copy(&mut entry, &mut out)?;
        out.sync_all()?;
        copied.files += 1;
    }
    Ok(copied)
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}
