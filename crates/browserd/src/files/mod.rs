//! What browserd keeps on disk besides its database, all under the data dir:
//!
//! - `session-files/<session id>/`: `uploads/` (files a client uploaded for the session's
//!   browser), `downloads/` (files its pages downloaded), `logs.jsonl` (its CDP log) and
//!   `recording.jsonl` (its rrweb recording). They outlive the session until the retention
//!   sweep removes them.
//! - `contexts/<context id>.ctx`: saved browser profiles, encrypted ([`contexts`]).
//! - `extensions/<extension id>/`: unpacked browser extensions ([`extensions`]).
//!
//! Every name that comes from a client goes through [`sanitize_file_name`], so nothing can
//! be written outside its folder.

pub(crate) mod confined;
pub mod contexts;
pub(crate) mod extensions;
pub(crate) mod quota;

use crate::model::Extension;
use crate::store::{BlobStore, SessionStore};
use contexts::ContextVault;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use uuid::Uuid;

/// The data dir's file areas.
#[derive(Debug)]
pub struct FileStore {
    /// The data dir: below it, nothing is opened through a link ([`confined`]).
    root: PathBuf,
    session_files: PathBuf,
    extensions: PathBuf,
    /// Scratch space for uploads in flight; on the same filesystem so finished files are
    /// renamed into place, never copied.
    tmp: PathBuf,
    vault: ContextVault,
    /// How long a session's files outlive it.
    retention: Duration,
    /// Bytes one session's files may use (`--session-disk-mib`).
    session_disk_limit: u64,
    /// A store shared with other nodes, where extensions are kept for all of them.
    shared: Option<Arc<dyn BlobStore>>,
    /// Held while an upload puts an extension's content folder in place (or finds it) and
    /// records its row, and while the sweep judges a folder unused: a folder is never
    /// removed between an upload finding it and its row naming it.
    extension_folders: tokio::sync::Mutex<()>,
}

/// How long an extension's content folder is kept after the last row naming it went (a
/// client that deletes and uploads the same extension for each session, as Stagehand 4
/// does, finds it unpacked, and its warm browser keeps it).
pub const UNUSED_EXTENSION_GRACE: Duration = Duration::from_secs(3600);

/// The kind of an extension's zip among a shared store's blobs.
const EXTENSION_BLOB: &str = "extension";

impl FileStore {
    /// Creates the folders under `data_dir` as needed.
    pub fn open(
        data_dir: &Path,
        vault: ContextVault,
        retention: Duration,
        shared: Option<Arc<dyn BlobStore>>,
    ) -> std::io::Result<Self> {
        let this = Self {
            root: data_dir.to_path_buf(),
            shared,
            session_files: data_dir.join("session-files"),
            extensions: data_dir.join("extensions"),
            tmp: data_dir.join("tmp"),
            vault,
            retention,
            session_disk_limit: u64::MAX,
            extension_folders: Default::default(),
        };
        for dir in [&this.session_files, &this.extensions, &this.tmp] {
            std::fs::create_dir_all(dir)?;
        }
        // Whatever is in tmp/ belonged to requests of a previous run.
        for entry in std::fs::read_dir(&this.tmp)?.flatten() {
            let _ = remove_path(&entry.path());
        }
        Ok(this)
    }

    /// MiB free for browserd on the filesystem holding the data dir (what an unprivileged
    /// writer may still use); `None` if it cannot be read.
    pub fn free_disk_mib(&self) -> Option<u64> {
        let stat = rustix::fs::statvfs(&self.session_files).ok()?;
        Some(stat.f_bavail.saturating_mul(stat.f_frsize) / (1024 * 1024))
    }

    /// Sets the bytes one session's files may use ([`quota`]).
    pub fn with_session_disk_limit(mut self, bytes: u64) -> Self {
        self.session_disk_limit = bytes;
        self
    }

    /// A new session's allowance ([`quota::DiskQuota`]).
    pub fn session_quota(&self) -> quota::DiskQuota {
        quota::DiskQuota::new(self.session_disk_limit)
    }

    /// The data dir, below which every folder is opened without following links.
    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn vault(&self) -> &ContextVault {
        &self.vault
    }

    pub fn retention(&self) -> Duration {
        self.retention
    }

    /// Everything a session leaves on disk.
    pub fn session_dir(&self, id: Uuid) -> PathBuf {
        self.session_files.join(id.to_string())
    }

    /// Where a session's downloads are kept once its browser has stopped.
    pub fn downloads_dir(&self, id: Uuid) -> PathBuf {
        self.session_dir(id).join("downloads")
    }

    /// The session's CDP log, one `SessionLog` entry per line.
    pub fn logs_path(&self, id: Uuid) -> PathBuf {
        self.session_dir(id).join("logs.jsonl")
    }

    /// The session's rrweb recording, one event per line.
    pub fn recording_path(&self, id: Uuid) -> PathBuf {
        self.session_dir(id).join("recording.jsonl")
    }

    /// Where uploads for a session's browser go.
    pub fn uploads_dir(&self, id: Uuid) -> PathBuf {
        self.session_dir(id).join("uploads")
    }

    /// Where an extension's unpacked files are: its content's folder, shared by every
    /// identical upload (a row from before content folders: its own).
    pub fn extension_dir(&self, extension: &Extension) -> PathBuf {
        self.extensions.join(extension.files_key())
    }

    /// Takes an uploaded extension's zip: checks it, and unpacks it into its content's
    /// folder unless an identical upload already did; keeps it in the shared store (a
    /// cluster's) for the other nodes. Returns the content (the zip's SHA-256, hex) with
    /// the lock the row must be recorded under.
    pub async fn store_extension(
        &self,
        zip: &Path,
    ) -> Result<(String, tokio::sync::MutexGuard<'_, ()>), extensions::ExtensionError> {
        let hashed = zip.to_path_buf();
        let content = tokio::task::spawn_blocking(move || sha256_of(&hashed))
            .await
            .map_err(std::io::Error::other)??;
        let dir = self.extensions.join(&content);
        // Unpacked (and checked) outside the lock, beside its place: one tenant's large
        // upload holds nobody else's. Unpacked again even when the folder exists, since
        // the sweep may take that folder before the lock is ours.
        let staging = self.tmp_path();
        let (from, to) = (zip.to_path_buf(), staging.clone());
        tokio::task::spawn_blocking(move || extensions::unpack(&from, &to))
            .await
            .map_err(std::io::Error::other)??;
        if let Some(blobs) = &self.shared {
            let bytes = tokio::fs::read(zip).await?;
            blobs
                .put_blob(EXTENSION_BLOB, &content, &bytes)
                .await
                .map_err(std::io::Error::other)?;
        }
        let held = self.extension_folders.lock().await;
        if tokio::fs::try_exists(&dir).await? {
            let _ = tokio::fs::remove_dir_all(&staging).await;
            // Seen again: its grace starts over (see [`UNUSED_EXTENSION_GRACE`]).
            let touched = dir.clone();
            let _ = tokio::task::spawn_blocking(move || {
                std::fs::File::open(&touched)?.set_modified(std::time::SystemTime::now())
            })
            .await;
        } else if let Err(e) = tokio::fs::rename(&staging, &dir).await {
            // A folder under its content's name is always whole: renamed in, never filled.
            let _ = tokio::fs::remove_dir_all(&staging).await;
            return Err(e.into());
        }
        Ok((content, held))
    }

    /// An extension's unpacked folder on this node, unpacked from the shared store first if
    /// it was uploaded through another node.
    pub async fn local_extension(&self, extension: &Extension) -> std::io::Result<PathBuf> {
        let dir = self.extension_dir(extension);
        let Some(blobs) = &self.shared else {
            return Ok(dir);
        };
        if tokio::fs::try_exists(&dir).await? {
            return Ok(dir);
        }
        let key = extension.files_key();
        let Some(zip) = blobs
            .get_blob(EXTENSION_BLOB, key)
            .await
            .map_err(std::io::Error::other)?
        else {
            return Ok(dir);
        };
        // A shared store is another system: what it gives back must be what was put.
        if let Some(content) = &extension.content
            && sha256_hex(&zip) != *content
        {
            return Err(std::io::Error::other(format!(
                "the shared store's copy of extension {} does not match its content hash",
                extension.id
            )));
        }
        let tmp = self.tmp_path();
        tokio::fs::write(&tmp, &zip).await?;
        // Unpacked beside its place and renamed in: two creates at once both succeed.
        let staging = self.tmp_path();
        let (from, to) = (tmp.clone(), staging.clone());
        let unpacked = tokio::task::spawn_blocking(move || extensions::unpack(&from, &to)).await;
        let _ = tokio::fs::remove_file(&tmp).await;
        match unpacked {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(std::io::Error::other(e.to_string())),
            Err(e) => return Err(std::io::Error::other(e)),
        }
        if tokio::fs::rename(&staging, &dir).await.is_err() {
            let _ = tokio::fs::remove_dir_all(&staging).await;
        }
        Ok(dir)
    }

    /// Forgets a deleted extension's files: a row from before content folders has its own,
    /// removed now with its shared zip; a content folder stays for the sweep
    /// ([`Self::sweep_extensions`]), which removes it once no project's row names it.
    pub async fn remove_extension(&self, extension: &Extension) -> std::io::Result<()> {
        if extension.content.is_some() {
            return Ok(());
        }
        if let Some(blobs) = &self.shared {
            blobs
                .delete_blob(EXTENSION_BLOB, &extension.id)
                .await
                .map_err(std::io::Error::other)?;
        }
        match tokio::fs::remove_dir_all(self.extension_dir(extension)).await {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// Removes the content folders that no project's extension names, that no live session
    /// or warm browser here holds (`held`), and that nobody uploaded again for
    /// [`UNUSED_EXTENSION_GRACE`]. Returns how many went. A shared store's zips of them are
    /// kept: another node may be uploading the same bytes right now, and nothing here can
    /// tell (a few hundred KiB each).
    pub async fn sweep_extensions(
        &self,
        store: &dyn crate::store::ExtensionStore,
        held: impl Fn(&Path) -> bool,
    ) -> usize {
        let Ok(entries) = std::fs::read_dir(&self.extensions) else {
            return 0;
        };
        let mut removed = 0;
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let dir = entry.path();
            let is_content = name.len() == 64 && name.bytes().all(|b| b.is_ascii_hexdigit());
            let quiet = entry
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age >= UNUSED_EXTENSION_GRACE);
            if !is_content || !quiet || held(&dir) {
                continue;
            }
            let _held = self.extension_folders.lock().await;
            match store.extension_content_in_use(&name).await {
                Ok(false) => {}
                Ok(true) => continue,
                Err(e) => {
                    tracing::warn!(error = %e, "could not tell whether an extension is in use");
                    return removed;
                }
            }
            if tokio::fs::remove_dir_all(&dir).await.is_ok() {
                removed += 1;
            }
        }
        removed
    }

    /// A fresh path in the scratch folder.
    pub fn tmp_path(&self) -> PathBuf {
        self.tmp.join(Uuid::new_v4().to_string())
    }

    /// A zip of the finished downloads in `dir` (empty while there are none). Files still
    /// being written (`.crdownload`) are left out, and so is anything that is not a regular
    /// file: `dir` may be a live browser's folder, which its uid can fill with links.
    ///
    /// Written to a scratch file, not memory (a session keeps up to `--session-disk-mib` of
    /// downloads), which is unlinked at once: the returned file, at its start, is all that
    /// is left of it.
    pub fn zip_downloads(&self, dir: &Path) -> std::io::Result<std::fs::File> {
        let scratch = self.tmp_path();
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&scratch)?;
        let _ = std::fs::remove_file(&scratch);
        let mut zip = zip::ZipWriter::new(file);
        let options = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated)
            .large_file(true);
        let folder = match confined::Folder::open(&self.root, dir) {
            Ok(folder) => Some(folder),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
                tracing::warn!(error = %e, "a session's downloads folder was replaced; nothing served from it");
                None
            }
            Err(e) => return Err(e),
        };
        if let Some(folder) = folder {
            let mut names: Vec<String> = folder
                .entries()?
                .into_iter()
                .filter(|e| e.kind == rustix::fs::FileType::RegularFile)
                .filter_map(|e| e.name.into_string().ok())
                .filter(|name| is_finished_download(name))
                .collect();
            names.sort();
            // At most the session's disk allowance is read: a live browser can put a sparse
            // file of any apparent size there, or keep one growing.
            let mut left = self.session_disk_limit;
            for name in names {
                // Gone or swapped for something else since it was listed: left out.
                let Ok(Some(file)) = folder.open_file(&name) else {
                    continue;
                };
                let len = file.metadata().map_or(u64::MAX, |m| m.len());
                if len > left {
                    // The quota sweep removes it within a second; the zip leaves it out.
                    tracing::warn!(file = %name, "a download past the session's disk allowance is left out of the zip");
                    continue;
                }
                zip.start_file(name, options)
                    .map_err(std::io::Error::other)?;
                // At most what the listing said: a file still growing is cut there.
                left -= std::io::copy(&mut std::io::Read::take(file, len), &mut zip)?;
            }
        }
        let mut out = zip.finish().map_err(std::io::Error::other)?;
        out.flush()?;
        std::io::Seek::rewind(&mut out)?;
        Ok(out)
    }

    /// Moves the files of a stopped browser's downloads folder (`from`, in its own folder)
    /// into `dest` (same filesystem: renames). A name already in `dest` (a browser adopted
    /// after a restart adds to it) is replaced. Only regular files move: links, FIFOs and
    /// devices its uid may have left stay behind and go with its folder.
    pub fn keep_downloads(&self, from: &Path, dest: &Path) {
        let source = match confined::Folder::open(&self.root, from) {
            Ok(source) => source,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
            Err(e) => {
                tracing::warn!(error = %e, "could not keep a session's downloads");
                return;
            }
        };
        let files: Vec<_> = match source.entries() {
            Ok(entries) => entries
                .into_iter()
                .filter(|e| e.kind == rustix::fs::FileType::RegularFile)
                .collect(),
            Err(e) => {
                tracing::warn!(error = %e, "could not list a session's downloads");
                return;
            }
        };
        // Most sessions download nothing: no folder for them.
        if files.is_empty() {
            return;
        }
        let target =
            std::fs::create_dir_all(dest).and_then(|()| confined::Folder::open(&self.root, dest));
        let target = match target {
            Ok(target) => target,
            Err(e) => {
                tracing::warn!(dir = %dest.display(), error = %e, "could not keep a session's downloads");
                return;
            }
        };
        for entry in files {
            if let Err(e) = source.move_file(&entry.name, &target) {
                tracing::warn!(file = ?entry.name, error = %e, "could not keep a download");
            }
        }
    }

    /// Removes the files of sessions that ended more than the retention period ago, and of
    /// sessions the database does not know. Returns how many sessions' files were removed.
    pub async fn sweep(&self, store: &dyn SessionStore) -> usize {
        let retention = self.retention;
        let Ok(mut entries) = tokio::fs::read_dir(&self.session_files).await else {
            return 0;
        };
        let cutoff = crate::model::now() - retention;
        let mut removed = 0;
        while let Ok(Some(entry)) = entries.next_entry().await {
            let path = entry.path();
            let id = entry
                .file_name()
                .to_str()
                .and_then(|n| Uuid::try_parse(n).ok());
            // A folder changed after the cutoff belongs to a session live after it: no need
            // to ask the store (which, with 100,000 kept sessions, is most folders).
            let changed = entry.metadata().await.and_then(|m| m.modified()).ok();
            if id.is_some() && changed.is_some_and(|at| time::OffsetDateTime::from(at) > cutoff) {
                continue;
            }
            let expired = match id {
                None => true,
                Some(id) => match store.get_session(id).await {
                    Ok(Some(s)) => s.ended_at.is_some_and(|end| end <= cutoff),
                    Ok(None) => true,
                    Err(e) => {
                        tracing::warn!(error = %e, "file sweep could not read a session");
                        false
                    }
                },
            };
            if expired {
                let _ = tokio::task::spawn_blocking(move || remove_path(&path)).await;
                removed += 1;
            }
        }
        removed
    }
}

/// Chromium writes a download as `<name>.crdownload` or a hidden temporary file
/// (`.org.chromium.Chromium.*`, `.com.google.Chrome.*`) and renames it when done.
fn is_finished_download(name: &str) -> bool {
    !name.ends_with(".crdownload")
        && !name.starts_with(".org.chromium.Chromium.")
        && !name.starts_with(".com.google.Chrome.")
}

fn remove_path(path: &Path) -> std::io::Result<()> {
    if path.is_dir() {
        std::fs::remove_dir_all(path)
    } else {
        std::fs::remove_file(path)
    }
}

/// Longest file name kept (bytes); most filesystems allow 255.
const MAX_FILE_NAME: usize = 200;

/// A client-given file name made safe to create inside a folder: only its last path
/// component, without control characters, never `.`/`..`/empty. `None` if nothing usable
/// is left.
pub fn sanitize_file_name(raw: &str) -> Option<String> {
    let last = raw.rsplit(['/', '\\']).next().unwrap_or_default();
    let mut name: String = last.chars().filter(|c| !c.is_control()).collect();
    name = name.trim().to_owned();
    if name.is_empty() || name.chars().all(|c| c == '.') {
        return None;
    }
    if name.len() > MAX_FILE_NAME {
        let mut end = MAX_FILE_NAME;
        while !name.is_char_boundary(end) {
            end -= 1;
        }
        name.truncate(end);
    }
    Some(name)
}

/// The SHA-256 of a file, hex.
fn sha256_of(path: &Path) -> std::io::Result<String> {
    use sha2::Digest as _;
    let mut hasher = sha2::Sha256::new();
    std::io::copy(&mut std::fs::File::open(path)?, &mut hasher)?;
    Ok(hex(&hasher.finalize()))
}

/// The SHA-256 of `bytes`, hex.
fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    hex(&sha2::Sha256::digest(bytes))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_cannot_leave_their_folder() {
        assert_eq!(
            sanitize_file_name("report.pdf").as_deref(),
            Some("report.pdf")
        );
        assert_eq!(
            sanitize_file_name("../../etc/passwd").as_deref(),
            Some("passwd")
        );
        assert_eq!(
            sanitize_file_name("C:\\Users\\x\\a.txt").as_deref(),
            Some("a.txt")
        );
        assert_eq!(sanitize_file_name("a\u{0}b\nc").as_deref(), Some("abc"));
        for bad in ["", ".", "..", "dir/", "/", " ", "...", "a/.."] {
            assert_eq!(sanitize_file_name(bad), None, "{bad:?}");
        }
        assert!(sanitize_file_name(&"é".repeat(300)).unwrap().len() <= MAX_FILE_NAME);
    }

    proptest::proptest! {
        #[test]
        fn a_sanitized_name_is_one_plain_component(raw in ".{0,300}") {
            if let Some(name) = sanitize_file_name(&raw) {
                let path = Path::new(&name);
                let mut parts = path.components();
                let only = parts.next();
                proptest::prop_assert!(parts.next().is_none());
                proptest::prop_assert!(matches!(only, Some(std::path::Component::Normal(_))));
            }
        }
    }

    #[test]
    fn downloads_zip_lists_finished_files_only() {
        let dir = tempfile::tempdir().unwrap();
        let vault = ContextVault::new(dir.path().join("contexts"), [7; 32]).unwrap();
        let files = FileStore::open(dir.path(), vault, Duration::from_secs(60), None).unwrap();
        let id = Uuid::new_v4();
        let empty = files.zip_downloads(&files.downloads_dir(id)).unwrap();
        assert_eq!(zip::ZipArchive::new(empty).unwrap().len(), 0);

        std::fs::create_dir_all(files.downloads_dir(id)).unwrap();
        std::fs::write(files.downloads_dir(id).join("a.txt"), b"hello").unwrap();
        std::fs::write(files.downloads_dir(id).join("b.bin.crdownload"), b"half").unwrap();
        std::fs::write(
            files.downloads_dir(id).join(".org.chromium.Chromium.x1"),
            b"",
        )
        .unwrap();
        let bytes = files.zip_downloads(&files.downloads_dir(id)).unwrap();
        let mut zip = zip::ZipArchive::new(bytes).unwrap();
        assert_eq!(zip.len(), 1);
        let mut text = String::new();
        std::io::Read::read_to_string(&mut zip.by_name("a.txt").unwrap(), &mut text).unwrap();
        assert_eq!(text, "hello");

        // What a browser's uid may put there instead: a link to a file, or the whole folder
        // a link to the data dir. Neither is followed.
        let secret = dir.path().join("context.key");
        std::fs::write(&secret, b"the key").unwrap();
        std::os::unix::fs::symlink(&secret, files.downloads_dir(id).join("key.txt")).unwrap();
        let names = |file: std::fs::File| -> Vec<String> {
            let mut zip = zip::ZipArchive::new(file).unwrap();
            (0..zip.len())
                .map(|i| zip.by_index(i).unwrap().name().unwrap().into_owned())
                .collect()
        };
        assert_eq!(
            names(files.zip_downloads(&files.downloads_dir(id)).unwrap()),
            ["a.txt"]
        );
        // Past the session's disk allowance (the quota sweep's job to remove): left out.
        let small = FileStore::open(
            dir.path(),
            ContextVault::new(dir.path().join("contexts"), [7; 32]).unwrap(),
            Duration::from_secs(60),
            None,
        )
        .unwrap()
        .with_session_disk_limit(6);
        std::fs::write(files.downloads_dir(id).join("b.txt"), b"12345").unwrap();
        assert_eq!(
            names(small.zip_downloads(&files.downloads_dir(id)).unwrap()),
            ["a.txt"],
            "a.txt (5 bytes) fits in 6, b.txt does not after it"
        );
        std::fs::remove_file(files.downloads_dir(id).join("b.txt")).unwrap();
        let other = Uuid::new_v4();
        std::fs::create_dir_all(files.session_dir(other)).unwrap();
        std::os::unix::fs::symlink(dir.path(), files.downloads_dir(other)).unwrap();
        assert!(names(files.zip_downloads(&files.downloads_dir(other)).unwrap()).is_empty());
    }
}
