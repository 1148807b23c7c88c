//! One session's disk allowance (`--session-disk-mib`) over its files: uploads, downloads,
//! CDP log and recording together.
//!
//! Uploads are checked before they are kept (a 413 past it). The CDP log and the recording
//! are written by browserd, which looks at [`DiskQuota::is_reached`] before each line and
//! stops with a last line that says why. Downloads are written by Chromium, which browserd
//! cannot stop mid-file: the session's supervisor measures its folders every
//! [`CHECK_EVERY`], and past the allowance removes the newest downloads until the rest fits
//! (a download still being written then fails in the browser, as a full disk would make it).
//! The session itself keeps running.

use super::confined::{Folder, size_below};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

/// How often a live session's folders are measured.
pub(crate) const CHECK_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

#[derive(Debug)]
pub struct DiskQuota {
    limit: u64,
    /// Set by the supervisor's last measurement; read by the log and recording writers.
    reached: AtomicBool,
}

/// What one measurement found and did.
#[derive(Debug, Default, PartialEq)]
pub struct Measured {
    /// Bytes in the session's folders after any removal.
    pub used: u64,
    /// Downloads removed to get back under the allowance, newest first.
    pub removed: Vec<String>,
}

impl DiskQuota {
    pub fn new(limit: u64) -> Self {
        Self {
            limit,
            reached: AtomicBool::new(false),
        }
    }

    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// Whether the session's files had reached the allowance at the last measurement.
    pub fn is_reached(&self) -> bool {
        self.reached.load(Ordering::Relaxed)
    }

    /// What is left for a new file, given what the session's files use now.
    pub fn room(&self, used: u64) -> u64 {
        self.limit.saturating_sub(used)
    }

    /// Measures `folders` (a session's files, and the downloads folder its browser is
    /// writing into, which may be one of them or apart), all below `root`; past the
    /// allowance, removes the newest files of `downloads` until the rest fits. Nothing is
    /// followed through a link (the browser's uid owns its downloads folder): only regular
    /// files are counted and removed. Blocking: file system walks.
    pub fn enforce(&self, root: &Path, folders: &[PathBuf], downloads: &Path) -> Measured {
        let mut used = used_by(root, folders, downloads);
        let mut removed = Vec::new();
        if used > self.limit
            && let Ok(folder) = Folder::open(root, downloads)
        {
            let mut files: Vec<_> = folder
                .entries()
                .unwrap_or_default()
                .into_iter()
                .filter(|e| e.kind == rustix::fs::FileType::RegularFile)
                .collect();
            files.sort_by_key(|f| std::cmp::Reverse(f.modified));
            for file in files {
                if used <= self.limit {
                    break;
                }
                if folder.remove(&file.name).is_ok() {
                    used = used.saturating_sub(file.len);
                    removed.push(file.name.to_string_lossy().into_owned());
                }
            }
        }
        self.reached.store(used >= self.limit, Ordering::Relaxed);
        Measured { used, removed }
    }
}

/// Bytes in `folders` and in `downloads` (all below `root`), which is counted once if it
/// lies inside one of them. Blocking: file system walks.
pub(crate) fn used_by(root: &Path, folders: &[PathBuf], downloads: &Path) -> u64 {
    let mut used = folders
        .iter()
        .fold(0u64, |sum, f| sum.saturating_add(size_below(root, f)));
    if !folders.iter().any(|f| downloads.starts_with(f)) {
        used = used.saturating_add(size_below(root, downloads));
    }
    used
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(path: &Path, len: usize) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, vec![b'x'; len]).unwrap();
    }

    /// Marks `path` as written `secs_ago` seconds ago (which downloads are newest).
    fn written_ago(path: &Path, secs_ago: u64) {
        let at = std::time::SystemTime::now() - std::time::Duration::from_secs(secs_ago);
        std::fs::File::options()
            .write(true)
            .open(path)
            .unwrap()
            .set_modified(at)
            .unwrap();
    }

    #[test]
    fn past_the_allowance_the_newest_downloads_go_and_the_writers_stop() {
        let dir = tempfile::tempdir().unwrap();
        let session = dir.path().join("session");
        let downloads = dir.path().join("browser/downloads");
        write(&session.join("logs.jsonl"), 300);
        write(&downloads.join("old.bin"), 400);
        written_ago(&downloads.join("old.bin"), 30);
        let quota = DiskQuota::new(1000);
        let m = quota.enforce(dir.path(), std::slice::from_ref(&session), &downloads);
        assert_eq!((m.used, m.removed.len()), (700, 0));
        assert!(!quota.is_reached());
        assert_eq!(quota.room(m.used), 300);

        // Two newer downloads push it to 1500: the newest goes first, then the next.
        write(&downloads.join("mid.bin"), 200);
        written_ago(&downloads.join("mid.bin"), 20);
        write(&downloads.join("new.bin"), 600);
        written_ago(&downloads.join("new.bin"), 10);
        let m = quota.enforce(dir.path(), std::slice::from_ref(&session), &downloads);
        assert_eq!(m.removed, ["new.bin"]);
        assert_eq!(m.used, 900);
        assert!(downloads.join("old.bin").exists() && downloads.join("mid.bin").exists());
        assert!(!quota.is_reached());

        // Exactly at the allowance: no more room, writers stop; nothing else is removed
        // when the log itself filled it.
        write(&session.join("logs.jsonl"), 400);
        let m = quota.enforce(dir.path(), std::slice::from_ref(&session), &downloads);
        assert_eq!((m.used, m.removed.len()), (1000, 0));
        assert!(quota.is_reached());
        assert_eq!(quota.room(m.used), 0);
    }

    #[test]
    fn a_downloads_folder_inside_the_session_folder_is_counted_once() {
        let dir = tempfile::tempdir().unwrap();
        let session = dir.path().to_path_buf();
        write(&session.join("downloads/a"), 100);
        let quota = DiskQuota::new(1000);
        let m = quota.enforce(
            dir.path(),
            std::slice::from_ref(&session),
            &session.join("downloads"),
        );
        assert_eq!(m.used, 100);
    }

    /// A browser's uid may replace its downloads folder with a link: past the allowance,
    /// nothing behind the link is counted or removed.
    #[test]
    fn a_linked_downloads_folder_is_neither_counted_nor_emptied() {
        let dir = tempfile::tempdir().unwrap();
        let canary = tempfile::tempdir().unwrap();
        write(&canary.path().join("host-file"), 5000);
        let session = dir.path().join("session");
        write(&session.join("logs.jsonl"), 2000);
        let browser = dir.path().join("browser");
        std::fs::create_dir_all(&browser).unwrap();
        std::os::unix::fs::symlink(canary.path(), browser.join("downloads")).unwrap();
        let quota = DiskQuota::new(1000);
        let m = quota.enforce(
            dir.path(),
            std::slice::from_ref(&session),
            &browser.join("downloads"),
        );
        assert_eq!((m.used, m.removed.len()), (2000, 0));
        assert!(canary.path().join("host-file").exists());
        // A link to a host file inside a real downloads folder: the same.
        std::fs::remove_file(browser.join("downloads")).unwrap();
        std::fs::create_dir(browser.join("downloads")).unwrap();
        std::os::unix::fs::symlink(canary.path().join("host-file"), browser.join("downloads/x"))
            .unwrap();
        let m = quota.enforce(
            dir.path(),
            std::slice::from_ref(&session),
            &browser.join("downloads"),
        );
        assert_eq!((m.used, m.removed.len()), (2000, 0));
        assert!(canary.path().join("host-file").exists());
    }
}
