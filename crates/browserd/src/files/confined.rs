//! Working as root in folders a browser can write, without following its links.
//!
//! A sandboxed browser's uid owns its folder (`sessions/<browser>/`: `profile/`,
//! `downloads/`, `uploads/`, `chromium.log`), so whatever runs as that uid (any Chromium
//! browser-process exploit) can put a symbolic link, a FIFO or a device node where browserd
//! expects a folder or a file. browserd runs as root: a path it resolves there could lead
//! anywhere on the host (the data dir's `context.key` and database among them), and a FIFO it
//! opens would block it forever. So every file operation below the data dir goes through a
//! [`Folder`]: a directory opened component by component from a root browserd trusts, each
//! with `O_NOFOLLOW | O_DIRECTORY`, then entries opened or changed relative to that handle
//! (`openat`, `renameat`, `unlinkat`, `linkat`, `fchownat` without following), files opened
//! `O_NONBLOCK` and kept only when `fstat` says they are regular files. Links, FIFOs, sockets
//! and devices are skipped, with a log line, never opened.
//!
//! rustix's `*at` calls rather than `cap-std`: the handful of calls needed here, on a crate
//! already in the tree, and each call visible at the place that makes it.

use rustix::fs::{AtFlags, FileType, Mode, OFlags};
use std::ffi::OsString;
use std::fs::File;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt as _;
use std::path::{Component, Path, PathBuf};

/// A directory opened without following any link below a trusted root.
#[derive(Debug)]
pub(crate) struct Folder {
    fd: OwnedFd,
    /// Where it was, for log lines.
    path: PathBuf,
}

/// One entry of a [`Folder`], as `fstatat` without following saw it.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    pub name: OsString,
    pub kind: FileType,
    pub len: u64,
    /// Last modification, seconds and nanoseconds since the epoch.
    pub modified: (i64, u32),
}

const DIR_FLAGS: OFlags = OFlags::RDONLY
    .union(OFlags::DIRECTORY)
    .union(OFlags::NOFOLLOW)
    .union(OFlags::CLOEXEC);

impl Folder {
    /// Opens `path`, which must lie below `root`. `root` itself is opened as given (the
    /// operator's data dir may sit behind a link of the operator's making); every component
    /// below it must be a real directory, never a link.
    pub(crate) fn open(root: &Path, path: &Path) -> std::io::Result<Self> {
        let rel = path.strip_prefix(root).map_err(|_| {
            std::io::Error::other(format!(
                "{} is not below {}",
                path.display(),
                root.display()
            ))
        })?;
        let mut fd: OwnedFd =
            rustix::fs::open(root, DIR_FLAGS.difference(OFlags::NOFOLLOW), Mode::empty())?;
        for component in rel.components() {
            match component {
                Component::Normal(name) => {
                    fd = rustix::fs::openat(&fd, name, DIR_FLAGS, Mode::empty())
                        .map_err(|e| not_a_folder(e, path))?;
                }
                Component::CurDir => {}
                _ => {
                    return Err(std::io::Error::other(format!(
                        "{} is not a plain path below {}",
                        path.display(),
                        root.display()
                    )));
                }
            }
        }
        Ok(Self {
            fd,
            path: path.to_owned(),
        })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// The sub-folder `name`, without following a link.
    pub(crate) fn sub(&self, name: impl AsRef<std::ffi::OsStr>) -> std::io::Result<Self> {
        let name = name.as_ref();
        let path = self.path.join(name);
        let fd = rustix::fs::openat(&self.fd, name, DIR_FLAGS, Mode::empty())
            .map_err(|e| not_a_folder(e, &path))?;
        Ok(Self { fd, path })
    }

    /// The sub-folder `name`, made (mode 0755, then owned by `owner` if given) if it is not
    /// there. Anything else in its place (a link, a file, a FIFO) is removed first: the
    /// folder is browserd's to make, and only the entry is removed, never what a link points
    /// at.
    pub(crate) fn sub_made(&self, name: &str, owner: Option<(u32, u32)>) -> std::io::Result<Self> {
        match rustix::fs::statat(&self.fd, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::Directory => {}
            Ok(st) => {
                tracing::warn!(
                    path = %self.path.join(name).display(),
                    kind = ?FileType::from_raw_mode(st.st_mode),
                    "a folder browserd makes was something else; replaced"
                );
                rustix::fs::unlinkat(&self.fd, name, AtFlags::empty())?;
                make_dir(&self.fd, name)?;
            }
            Err(rustix::io::Errno::NOENT) => make_dir(&self.fd, name)?,
            Err(e) => return Err(e.into()),
        }
        let sub = self.sub(name)?;
        if let Some((uid, gid)) = owner {
            rustix::fs::fchown(
                &sub.fd,
                Some(rustix::fs::Uid::from_raw(uid)),
                Some(rustix::fs::Gid::from_raw(gid)),
            )?;
        }
        Ok(sub)
    }

    /// Every entry but `.` and `..`, as it is (links not followed).
    pub(crate) fn entries(&self) -> std::io::Result<Vec<Entry>> {
        let mut out = Vec::new();
        for entry in rustix::fs::Dir::read_from(&self.fd)? {
            let entry = entry?;
            let name = entry.file_name().to_bytes();
            if name == b"." || name == b".." {
                continue;
            }
            let name = OsString::from(std::ffi::OsStr::from_bytes(name));
            // Gone since it was listed (Chromium renames as it goes): skipped.
            let Ok(st) = rustix::fs::statat(&self.fd, name.as_os_str(), AtFlags::SYMLINK_NOFOLLOW)
            else {
                continue;
            };
            out.push(Entry {
                name,
                kind: FileType::from_raw_mode(st.st_mode),
                len: st.st_size.max(0) as u64,
                modified: (st.st_mtime, st.st_mtime_nsec as u32),
            });
        }
        Ok(out)
    }

    /// Opens the regular file `name` for reading; `Ok(None)` (and a log line) for anything
    /// else in its place: a link, a FIFO (opened non-blocking, so never waited on), a socket
    /// or a device.
    pub(crate) fn open_file(
        &self,
        name: impl AsRef<std::ffi::OsStr>,
    ) -> std::io::Result<Option<File>> {
        let name = name.as_ref();
        let flags =
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC | OFlags::NOCTTY;
        let fd = match rustix::fs::openat(&self.fd, name, flags, Mode::empty()) {
            Ok(fd) => fd,
            Err(rustix::io::Errno::LOOP) => {
                self.skipped(name, FileType::Symlink);
                return Ok(None);
            }
            Err(e) => return Err(e.into()),
        };
        let kind = FileType::from_raw_mode(rustix::fs::fstat(&fd)?.st_mode);
        if kind != FileType::RegularFile {
            self.skipped(name, kind);
            return Ok(None);
        }
        // Back to blocking reads (a regular file never blocks anyway).
        rustix::fs::fcntl_setfl(&fd, OFlags::empty())?;
        Ok(Some(File::from(fd)))
    }

    /// Moves the regular file `name` into `dest` under the same name (a rename: same
    /// filesystem). Anything else is left where it is: `Ok(false)`.
    pub(crate) fn move_file(&self, name: &std::ffi::OsStr, dest: &Folder) -> std::io::Result<bool> {
        let st = rustix::fs::statat(&self.fd, name, AtFlags::SYMLINK_NOFOLLOW)?;
        let kind = FileType::from_raw_mode(st.st_mode);
        if kind != FileType::RegularFile {
            self.skipped(name, kind);
            return Ok(false);
        }
        // Should the entry be swapped for a link between the check and the rename, the link
        // itself moves (renames never follow), and every reader of `dest` skips links.
        rustix::fs::renameat(&self.fd, name, &dest.fd, name)?;
        Ok(true)
    }

    /// Removes the entry `name` (a file or a link, never what a link points at).
    pub(crate) fn remove(&self, name: impl AsRef<std::ffi::OsStr>) -> std::io::Result<()> {
        match rustix::fs::unlinkat(&self.fd, name.as_ref(), AtFlags::empty()) {
            Err(rustix::io::Errno::NOENT) => Ok(()),
            other => other.map_err(Into::into),
        }
    }

    /// Puts a hard link to `file` (a path browserd trusts) here as `name`, owned by `owner`.
    pub(crate) fn link_in(
        &self,
        file: &Path,
        name: &str,
        owner: (u32, u32),
    ) -> std::io::Result<()> {
        rustix::fs::linkat(rustix::fs::CWD, file, &self.fd, name, AtFlags::empty())?;
        rustix::fs::chownat(
            &self.fd,
            name,
            Some(rustix::fs::Uid::from_raw(owner.0)),
            Some(rustix::fs::Gid::from_raw(owner.1)),
            AtFlags::SYMLINK_NOFOLLOW,
        )?;
        Ok(())
    }

    /// The owner of this folder itself.
    pub(crate) fn owner(&self) -> std::io::Result<(u32, u32)> {
        let st = rustix::fs::fstat(&self.fd)?;
        Ok((st.st_uid, st.st_gid))
    }

    fn skipped(&self, name: &std::ffi::OsStr, kind: FileType) {
        tracing::warn!(
            path = %self.path.join(name).display(),
            ?kind,
            "skipped: not a regular file (a session's browser may have put it there)"
        );
    }
}

impl AsFd for Folder {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

fn make_dir(dir: &OwnedFd, name: &str) -> std::io::Result<()> {
    match rustix::fs::mkdirat(dir, name, Mode::from_raw_mode(0o755)) {
        Ok(()) | Err(rustix::io::Errno::EXIST) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// A link (or anything else) where a folder should be says so.
fn not_a_folder(e: rustix::io::Errno, path: &Path) -> std::io::Error {
    match e {
        rustix::io::Errno::LOOP | rustix::io::Errno::NOTDIR => std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!(
                "{} is not a folder (a link or a file in its place): not followed",
                path.display()
            ),
        ),
        e => e.into(),
    }
}

/// How deep a walk of a browser's folder goes, and how many entries it looks at: the
/// browser's uid can nest folders thousands deep or make millions of empty ones.
pub(crate) const MAX_WALK_DEPTH: usize = 64;
pub(crate) const MAX_WALK_ENTRIES: usize = 200_000;

/// What [`walk`] found too much of.
#[derive(Debug, thiserror::Error)]
#[error(
    "{0} holds more than a walk looks at ({MAX_WALK_ENTRIES} entries, {MAX_WALK_DEPTH} levels)"
)]
pub(crate) struct TooMuch(pub PathBuf);

/// Visits every entry below the folder `path` (below `root`), depth first, without
/// following links: `visit(folder, relative path of the entry, entry)`, which says whether
/// to go into a folder (`Ok(false)`: skip it). One folder is open
/// at a time (the walk keeps paths, not handles, so a folder with a million sub-folders
/// costs no descriptors), at most [`MAX_WALK_DEPTH`] deep and [`MAX_WALK_ENTRIES`] entries
/// (past either: `Err`). A folder that cannot be opened (gone, or swapped for a link) is
/// skipped; `path` itself missing is an empty walk.
pub(crate) fn walk(
    root: &Path,
    path: &Path,
    mut visit: impl FnMut(&Folder, &Path, &Entry) -> std::io::Result<bool>,
) -> std::io::Result<()> {
    let mut seen = 0usize;
    let mut pending = vec![PathBuf::new()];
    while let Some(rel) = pending.pop() {
        let folder = match Folder::open(root, &path.join(&rel)) {
            Ok(folder) => folder,
            Err(e) if rel.as_os_str().is_empty() && e.kind() != std::io::ErrorKind::NotFound => {
                return Err(e);
            }
            Err(_) => continue,
        };
        for entry in folder.entries()? {
            seen += 1;
            let inner = rel.join(&entry.name);
            if seen > MAX_WALK_ENTRIES || inner.components().count() > MAX_WALK_DEPTH {
                return Err(std::io::Error::other(TooMuch(path.to_owned())));
            }
            if visit(&folder, &inner, &entry)? && entry.kind == FileType::Directory {
                pending.push(inner);
            }
        }
    }
    Ok(())
}

/// Bytes in the regular files below the folder `path` (below `root`), links not followed,
/// special files not counted; 0 if it cannot be read. A folder past what a walk looks at
/// counts as full (`u64::MAX`): the quota then removes downloads and stops the writers.
pub(crate) fn size_below(root: &Path, path: &Path) -> u64 {
    let mut total = 0u64;
    let walked = walk(root, path, |_, _, entry| {
        if entry.kind == FileType::RegularFile {
            total = total.saturating_add(entry.len);
        }
        Ok(true)
    });
    match walked {
        Ok(()) => total,
        Err(e) if e.get_ref().is_some_and(|inner| inner.is::<TooMuch>()) => u64::MAX,
        Err(_) => total,
    }
}

/// Creates the file `name` in the folder `dir` (a browser's own folder, whose own path the
/// browser cannot replace), for browserd to write: whatever the browser put there under
/// that name (a link to a host file) is removed, never followed, and the file is made new
/// (`O_EXCL | O_NOFOLLOW`), mode 0600.
pub(crate) fn create_new(dir: &Path, name: &str) -> std::io::Result<File> {
    let folder = rustix::fs::open(dir, DIR_FLAGS, Mode::empty())?;
    match rustix::fs::unlinkat(&folder, name, AtFlags::empty()) {
        Ok(()) | Err(rustix::io::Errno::NOENT) => {}
        Err(e) => return Err(e.into()),
    }
    let flags = OFlags::WRONLY
        | OFlags::CREATE
        | OFlags::EXCL
        | OFlags::NOFOLLOW
        | OFlags::CLOEXEC
        | OFlags::NOCTTY;
    let fd = rustix::fs::openat(&folder, name, flags, Mode::from_raw_mode(0o600))?;
    Ok(File::from(fd))
}

/// The last `max` bytes of the file at `path` (lossy UTF-8), opened as [`Folder::open_file`]
/// opens files: the last component not followed, nothing but a regular file read, never
/// blocking on a FIFO. Only the last component is guarded: for files directly in a
/// browser's own folder (its log), whose own path the browser cannot replace. Blocking.
pub(crate) fn read_tail(path: &Path, max: u64) -> std::io::Result<String> {
    use std::io::{Read as _, Seek as _};
    let flags =
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC | OFlags::NOCTTY;
    let fd = rustix::fs::open(path, flags, Mode::empty())?;
    let st = rustix::fs::fstat(&fd)?;
    if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("{} is not a regular file: not read", path.display()),
        ));
    }
    let mut file = File::from(fd);
    let len = st.st_size.max(0) as u64;
    file.seek(std::io::SeekFrom::Start(len.saturating_sub(max)))?;
    let mut bytes = Vec::new();
    file.take(max).read_to_end(&mut bytes)?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read as _;

    /// A root with a "browser" folder in it, and a canary outside both.
    fn world() -> (tempfile::TempDir, PathBuf, tempfile::TempDir) {
        let root = tempfile::tempdir().unwrap();
        let browser = root.path().join("sessions").join("b1");
        std::fs::create_dir_all(browser.join("downloads")).unwrap();
        let canary = tempfile::tempdir().unwrap();
        std::fs::write(canary.path().join("secret.txt"), "canary").unwrap();
        (root, browser, canary)
    }

    #[test]
    fn links_in_place_of_folders_are_not_followed() {
        let (root, browser, canary) = world();
        std::os::unix::fs::symlink(canary.path(), browser.join("profile")).unwrap();
        let err = Folder::open(root.path(), &browser.join("profile")).unwrap_err();
        assert!(err.to_string().contains("not a folder"), "{err}");
        // A link higher up is refused too.
        std::fs::rename(&browser, root.path().join("elsewhere")).unwrap();
        std::os::unix::fs::symlink(root.path().join("elsewhere"), &browser).unwrap();
        assert!(Folder::open(root.path(), &browser.join("downloads")).is_err());
        // Outside the root, or with `..`: refused.
        assert!(Folder::open(root.path(), canary.path()).is_err());
        assert!(Folder::open(root.path(), &root.path().join("sessions/../sessions")).is_err());
    }

    #[test]
    fn links_fifos_and_devices_are_skipped_and_never_block() {
        let (root, browser, canary) = world();
        let downloads = browser.join("downloads");
        std::fs::write(downloads.join("real.txt"), "mine").unwrap();
        std::os::unix::fs::symlink(canary.path().join("secret.txt"), downloads.join("link.txt"))
            .unwrap();
        rustix::fs::mknodat(
            rustix::fs::CWD,
            downloads.join("fifo"),
            FileType::Fifo,
            Mode::from_raw_mode(0o666),
            0,
        )
        .unwrap();
        let folder = Folder::open(root.path(), &downloads).unwrap();
        let mut text = String::new();
        folder
            .open_file("real.txt")
            .unwrap()
            .unwrap()
            .read_to_string(&mut text)
            .unwrap();
        assert_eq!(text, "mine");
        assert!(folder.open_file("link.txt").unwrap().is_none());
        assert!(
            folder.open_file("fifo").unwrap().is_none(),
            "and did not block"
        );
        let kinds: Vec<_> = folder
            .entries()
            .unwrap()
            .into_iter()
            .map(|e| e.kind)
            .collect();
        assert!(kinds.contains(&FileType::Symlink) && kinds.contains(&FileType::Fifo));
        assert_eq!(
            size_below(root.path(), &downloads),
            4,
            "only the regular file counts"
        );
        assert_eq!(read_tail(&downloads.join("real.txt"), 2).unwrap(), "ne");
        assert!(read_tail(&downloads.join("link.txt"), 100).is_err());
        assert!(
            read_tail(&downloads.join("fifo"), 100).is_err(),
            "and did not block"
        );
    }

    #[test]
    fn walks_are_bounded_in_depth_and_entries_and_hold_one_folder_open() {
        let (root, browser, _canary) = world();
        let downloads = browser.join("downloads");
        let mut deep = downloads.clone();
        for _ in 0..(MAX_WALK_DEPTH + 5) {
            deep.push("d");
        }
        std::fs::create_dir_all(&deep).unwrap();
        std::fs::write(deep.join("f"), "x").unwrap();
        assert_eq!(
            size_below(root.path(), &downloads),
            u64::MAX,
            "too deep: counted as full"
        );
        std::fs::remove_dir_all(downloads.join("d")).unwrap();
        // Non-UTF-8 folder names are walked too.
        let odd = downloads.join(std::ffi::OsStr::from_bytes(b"\xff\xfe"));
        std::fs::create_dir(&odd).unwrap();
        std::fs::write(odd.join("f"), "12345").unwrap();
        assert_eq!(size_below(root.path(), &downloads), 5);
        let mut names = Vec::new();
        walk(root.path(), &downloads, |_, rel, _| {
            names.push(rel.to_owned());
            Ok(true)
        })
        .unwrap();
        assert_eq!(names.len(), 2, "{names:?}");
    }

    #[test]
    fn a_new_file_replaces_a_link_and_never_writes_through_it() {
        let (_root, browser, canary) = world();
        std::os::unix::fs::symlink(canary.path().join("secret.txt"), browser.join("err")).unwrap();
        let mut file = create_new(&browser, "err").unwrap();
        std::io::Write::write_all(&mut file, b"mine").unwrap();
        assert_eq!(
            std::fs::read_to_string(canary.path().join("secret.txt")).unwrap(),
            "canary"
        );
        assert_eq!(read_tail(&browser.join("err"), 100).unwrap(), "mine");
    }

    #[test]
    fn moves_take_regular_files_only_and_made_folders_replace_links() {
        let (root, browser, canary) = world();
        let downloads = Folder::open(root.path(), &browser.join("downloads")).unwrap();
        std::fs::write(browser.join("downloads/a.txt"), "a").unwrap();
        std::os::unix::fs::symlink(
            canary.path().join("secret.txt"),
            browser.join("downloads/b.txt"),
        )
        .unwrap();
        let keep = root.path().join("kept");
        std::fs::create_dir(&keep).unwrap();
        let dest = Folder::open(root.path(), &keep).unwrap();
        assert!(downloads.move_file("a.txt".as_ref(), &dest).unwrap());
        assert!(!downloads.move_file("b.txt".as_ref(), &dest).unwrap());
        assert!(keep.join("a.txt").is_file() && !keep.join("b.txt").exists());
        assert_eq!(
            std::fs::read_to_string(canary.path().join("secret.txt")).unwrap(),
            "canary"
        );

        // uploads/ as a link to the canary: replaced by a real folder, the canary untouched.
        std::os::unix::fs::symlink(canary.path(), browser.join("uploads")).unwrap();
        let top = Folder::open(root.path(), &browser).unwrap();
        let uploads = top.sub_made("uploads", None).unwrap();
        let file = root.path().join("upload.txt");
        std::fs::write(&file, "tenant").unwrap();
        uploads.remove("secret.txt").unwrap();
        uploads.link_in(&file, "secret.txt", (0, 0)).unwrap();
        assert_eq!(
            std::fs::read_to_string(canary.path().join("secret.txt")).unwrap(),
            "canary"
        );
        assert!(
            std::fs::symlink_metadata(browser.join("uploads"))
                .unwrap()
                .is_dir()
        );
    }
}
