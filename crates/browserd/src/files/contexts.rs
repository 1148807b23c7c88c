//! Contexts: browser profiles saved between sessions, encrypted at rest.
//!
//! A saved context is one file, `contexts/<id>.ctx`: a zip of the profile folder (caches
//! left out) plus the browser's cookies as JSON, sealed with AES-256-GCM under the server's
//! context key, with the context id as associated data (a file copied onto another
//! context's name does not open). Cookies are saved through CDP as well as in Chromium's
//! cookie database because Chromium never writes session cookies to disk.
//!
//! Saves and loads of one context are serialised by a per-context lock: a session that
//! starts after another one's save began sees that save. When two sessions share a
//! context, the one that ends last saves last, and its profile replaces the other's whole.

use super::confined;
use crate::fault::Failure;
use crate::store::{BlobLock, BlobStore};
use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use serde_json::Value;
use std::collections::HashMap;
use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use tokio::sync::OwnedMutexGuard;

/// First bytes of a sealed context: format and version.
const MAGIC: &[u8; 8] = b"BDCTX001";
/// AES-GCM's standard nonce size.
pub const NONCE_LEN: usize = 12;
/// What the Browserbase create response calls `cipherAlgorithm`, truthfully for browserd.
pub const CIPHER_ALGORITHM: &str = "AES-256-GCM";

/// Inside the archive: the profile folder's files, and the cookies.
const PROFILE_PREFIX: &str = "profile/";
const COOKIES_ENTRY: &str = "browserd/cookies.json";

/// Profile entries not worth saving: caches Chromium rebuilds, crash and metrics data, and
/// the per-process lock files of the browser that wrote them.
const SKIPPED: &[&str] = &[
    "Cache",
    "Code Cache",
    "GPUCache",
    "DawnCache",
    "DawnGraphiteCache",
    "DawnWebGPUCache",
    "GraphiteDawnCache",
    "GrShaderCache",
    "ShaderCache",
    "component_crx_cache",
    "extensions_crx_cache",
    "Crashpad",
    "Crash Reports",
    "BrowserMetrics",
    "optimization_guide_model_store",
    "segmentation_platform",
    "Safe Browsing",
    "SingletonLock",
    "SingletonSocket",
    "SingletonCookie",
    "DevToolsActivePort",
    "BrowserMetrics-spare.pma",
];

/// Largest unpacked context accepted when restoring (a guard against a zip bomb).
const MAX_UNPACKED: u64 = 4 * 1024 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ContextError {
    #[error("context {id} could not be restored: {reason}; no session was started with part of it")]
    Unreadable { id: String, reason: String },
    #[error("context {id}: {source}")]
    Io { id: String, source: std::io::Error },
}

/// A context as loaded: the profile archive to unpack before launch, and the cookies to
/// set once the browser runs.
#[derive(Debug)]
pub struct ContextSnapshot {
    pub archive: Vec<u8>,
    pub cookies: Vec<Value>,
}

/// A context's lock, held (see [`ContextVault::lock`]).
#[derive(Debug)]
pub struct ContextLock {
    _local: OwnedMutexGuard<()>,
    _cluster: Option<BlobLock>,
}

pub struct ContextVault {
    dir: PathBuf,
    /// Where sealed contexts live when several nodes share the store (their blobs, which
    /// every node reads); `None`: files in `dir`.
    shared: Option<Arc<dyn BlobStore>>,
    cipher: Aes256Gcm,
    /// One lock per context id that was used since start; a std Mutex around the map only.
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl std::fmt::Debug for ContextVault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ContextVault")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

/// The context key: `--context-key` if given, else the data dir's `context.key`, created
/// (mode 0600) on first start.
pub fn load_or_create_key(data_dir: &Path, configured: Option<&str>) -> anyhow::Result<[u8; 32]> {
    use anyhow::Context as _;
    if let Some(hex) = configured {
        return crate::secrets::key_from_hex(hex.trim())
            .context("--context-key must be 64 hex digits (256 bits)");
    }
    let path = data_dir.join("context.key");
    match std::fs::read_to_string(&path) {
        Ok(text) => crate::secrets::key_from_hex(text.trim())
            .with_context(|| format!("{} does not hold 64 hex digits", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            use std::os::unix::fs::OpenOptionsExt as _;
            let key = crate::secrets::random_bytes();
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
                .with_context(|| format!("could not create {}", path.display()))?;
            writeln!(file, "{}", crate::secrets::hex(&key))?;
            file.sync_all()?;
            Ok(key)
        }
        Err(e) => Err(e).with_context(|| format!("could not read {}", path.display())),
    }
}

/// The kind of a sealed context among a shared store's blobs.
const BLOB_KIND: &str = "context";

impl ContextVault {
    pub fn new(dir: PathBuf, key: [u8; 32]) -> std::io::Result<Self> {
        std::fs::create_dir_all(&dir)?;
        Ok(Self {
            dir,
            shared: None,
            cipher: Aes256Gcm::new(&key.into()),
            locks: Mutex::default(),
        })
    }

    /// Seals a small secret (a session's proxy password) with the context key, bound to
    /// `purpose`: the text the store keeps instead of it.
    pub fn seal_secret(&self, purpose: &str, secret: &str) -> String {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode(seal(
            &self.cipher,
            purpose,
            secret.as_bytes(),
        ))
    }

    /// Opens what [`Self::seal_secret`] sealed under the same `purpose`.
    pub fn open_secret(&self, purpose: &str, sealed: &str) -> Result<String, Failure> {
        use base64::Engine as _;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(sealed)
            .map_err(|_| Failure::store("it is not a sealed secret"))?;
        String::from_utf8(unseal(&self.cipher, purpose, &bytes).map_err(Failure::store)?)
            .map_err(|_| Failure::store("it is not text"))
    }

    /// Keeps sealed contexts among the shared store's blobs instead of in files, so that a
    /// session on any node can load what a session on another saved. Sealed here first:
    /// the database never sees a profile in the clear.
    pub fn shared(mut self, blobs: Arc<dyn BlobStore>) -> Self {
        self.shared = Some(blobs);
        self
    }

    /// The sealed bytes of a context, if it was ever saved.
    async fn read_sealed(&self, id: &str) -> std::io::Result<Option<Vec<u8>>> {
        match &self.shared {
            Some(blobs) => blobs
                .get_blob(BLOB_KIND, id)
                .await
                .map_err(std::io::Error::other),
            None => match tokio::fs::read(self.path(id)).await {
                Ok(bytes) => Ok(Some(bytes)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(e),
            },
        }
    }

    fn path(&self, id: &str) -> PathBuf {
        // Ids are uuids made by browserd; checked anyway so a path can never be built
        // from something else.
        debug_assert!(uuid::Uuid::try_parse(id).is_ok());
        self.dir.join(format!("{id}.ctx"))
    }

    /// Waits for and holds the context's lock (for a save, or a delete): this node's, and
    /// with a shared store the cluster's, so a load on another node waits for a save here.
    pub async fn lock(&self, id: &str) -> ContextLock {
        let lock = Arc::clone(self.locks.lock().unwrap().entry(id.to_owned()).or_default());
        let local = lock.lock_owned().await;
        let cluster = match &self.shared {
            Some(blobs) => match blobs.lock_blob(BLOB_KIND, id).await {
                Ok(lock) => Some(lock),
                // The store is unreachable: so is the context itself (its load or save
                // fails on its own); this node's lock still holds.
                Err(e) => {
                    tracing::warn!(context = %id, error = %e, "could not take the context's cluster-wide lock");
                    None
                }
            },
            None => None,
        };
        ContextLock {
            _local: local,
            _cluster: cluster,
        }
    }

    /// Loads a context for a new session: `None` if it was never saved. Fails if the file
    /// does not decrypt or unpack, so no browser starts with part of a profile.
    pub async fn load(&self, id: &str) -> Result<Option<ContextSnapshot>, ContextError> {
        let _guard = self.lock(id).await;
        let sealed = match self.read_sealed(id).await {
            Ok(Some(bytes)) => bytes,
            Ok(None) => return Ok(None),
            Err(source) => {
                return Err(ContextError::Io {
                    id: id.to_owned(),
                    source,
                });
            }
        };
        let cipher = self.cipher.clone();
        let owned_id = id.to_owned();
        tokio::task::spawn_blocking(move || {
            let unreadable = |reason: String| ContextError::Unreadable {
                id: owned_id.clone(),
                reason,
            };
            let archive = unseal(&cipher, &owned_id, &sealed).map_err(unreadable)?;
            let cookies = read_cookies(&archive).map_err(unreadable)?;
            Ok(Some(ContextSnapshot { archive, cookies }))
        })
        .await
        .expect("the context loader does not panic")
    }

    /// Saves a session's profile folder and cookies as the context's new content. The
    /// caller holds the context's lock (`_guard`) from before the session's end was
    /// recorded. `still_exists` is asked last, before the file is put in place: a context
    /// deleted while a session used it stays deleted.
    pub async fn save<F>(
        &self,
        _guard: &ContextLock,
        id: &str,
        root: &Path,
        profile: &Path,
        cookies: Vec<Value>,
        still_exists: F,
    ) -> Result<bool, ContextError>
    where
        F: std::future::Future<Output = bool>,
    {
        let io = |source| ContextError::Io {
            id: id.to_owned(),
            source,
        };
        let cipher = self.cipher.clone();
        let (owned_id, root, profile) = (id.to_owned(), root.to_path_buf(), profile.to_path_buf());
        let sealed = tokio::task::spawn_blocking(move || {
            let archive = archive_profile(&root, &profile, &cookies)?;
            Ok::<_, std::io::Error>(seal(&cipher, &owned_id, &archive))
        })
        .await
        .expect("the context archiver does not panic")
        .map_err(io)?;
        if let Some(blobs) = &self.shared {
            if !still_exists.await {
                return Ok(false);
            }
            blobs
                .put_blob(BLOB_KIND, id, &sealed)
                .await
                .map_err(|e| io(std::io::Error::other(e)))?;
            return Ok(true);
        }
        let tmp = self.dir.join(format!("{id}.ctx.tmp"));
        write_synced(&tmp, &sealed).await.map_err(io)?;
        if !still_exists.await {
            let _ = tokio::fs::remove_file(&tmp).await;
            return Ok(false);
        }
        tokio::fs::rename(&tmp, self.path(id)).await.map_err(io)?;
        Ok(true)
    }

    /// Removes a context's saved profile. The caller holds its lock.
    pub async fn remove(&self, _guard: &ContextLock, id: &str) -> std::io::Result<()> {
        if let Some(blobs) = &self.shared {
            return blobs
                .delete_blob(BLOB_KIND, id)
                .await
                .map(drop)
                .map_err(std::io::Error::other);
        }
        match tokio::fs::remove_file(self.path(id)).await {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }
}

async fn write_synced(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use tokio::io::AsyncWriteExt as _;
    let mut file = tokio::fs::File::create(path).await?;
    file.write_all(bytes).await?;
    file.sync_all().await
}

fn seal(cipher: &Aes256Gcm, id: &str, plaintext: &[u8]) -> Vec<u8> {
    let mut nonce = [0u8; NONCE_LEN];
    getrandom::fill(&mut nonce).expect("the OS random source is available");
    let ciphertext = cipher
        .encrypt(
            Nonce::from_slice(&nonce),
            Payload {
                msg: plaintext,
                aad: id.as_bytes(),
            },
        )
        .expect("AES-GCM encrypts any input under 64 GiB");
    [MAGIC.as_slice(), &nonce, &ciphertext].concat()
}

fn unseal(cipher: &Aes256Gcm, id: &str, sealed: &[u8]) -> Result<Vec<u8>, String> {
    let rest = sealed
        .strip_prefix(MAGIC.as_slice())
        .ok_or("its file is not a browserd context (corrupt or truncated)")?;
    if rest.len() < NONCE_LEN {
        return Err("its file is truncated".into());
    }
    let (nonce, ciphertext) = rest.split_at(NONCE_LEN);
    cipher
        .decrypt(
            Nonce::from_slice(nonce),
            Payload {
                msg: ciphertext,
                aad: id.as_bytes(),
            },
        )
        .map_err(|_| {
            "it does not decrypt with this server's context key (the key changed, or the file is corrupt)".into()
        })
}

/// Zips the profile folder `profile` (below `root`) and the cookies. The browser's uid owns
/// the profile and may have put links, FIFOs or devices in it, or a link in its place:
/// nothing is followed or opened but real folders and regular files ([`confined::Folder`]), so a
/// context holds only what the browser itself wrote, and a save never blocks. A profile
/// larger than a context may hold is an error (its previous content stays).
fn archive_profile(root: &Path, profile: &Path, cookies: &[Value]) -> std::io::Result<Vec<u8>> {
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let options = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated)
        .large_file(true);
    let mut total = 0u64;
    // One folder open at a time, bounded in depth and entries (confined::walk): the
    // browser's uid can nest folders or make millions of empty ones.
    confined::walk(root, profile, |dir, rel, entry| {
        let Some(name) = entry.name.to_str() else {
            return Ok(false);
        };
        if SKIPPED.contains(&name) {
            return Ok(false);
        }
        let Some(rel) = rel.to_str() else {
            return Ok(false);
        };
        match entry.kind {
            rustix::fs::FileType::Directory => return Ok(true),
            rustix::fs::FileType::RegularFile => {
                // A file Chromium removed between listing and reading is simply not saved.
                let Ok(Some(file)) = dir.open_file(name) else {
                    return Ok(false);
                };
                zip.start_file(format!("{PROFILE_PREFIX}{rel}"), options)
                    .map_err(std::io::Error::other)?;
                total += std::io::copy(&mut file.take(MAX_UNPACKED - total + 1), &mut zip)?;
                if total > MAX_UNPACKED {
                    return Err(std::io::Error::other(format!(
                        "the profile holds more than the {} GiB a context may hold",
                        MAX_UNPACKED >> 30
                    )));
                }
            }
            kind => tracing::warn!(
                path = %dir.path().join(name).display(),
                ?kind,
                "not saved into the context: not a regular file or folder"
            ),
        }
        Ok(false)
    })?;
    zip.start_file(COOKIES_ENTRY, options)
        .map_err(std::io::Error::other)?;
    zip.write_all(&serde_json::to_vec(cookies).map_err(std::io::Error::other)?)?;
    Ok(zip.finish().map_err(std::io::Error::other)?.into_inner())
}

fn read_cookies(archive: &[u8]) -> Result<Vec<Value>, String> {
    let mut zip = zip::ZipArchive::new(std::io::Cursor::new(archive))
        .map_err(|e| format!("its profile archive is unreadable: {e}"))?;
    let mut text = String::new();
    match zip.by_name(COOKIES_ENTRY) {
        Ok(mut entry) => {
            entry
                .read_to_string(&mut text)
                .map_err(|e| format!("its cookies are unreadable: {e}"))?;
        }
        Err(e) => return Err(format!("its cookies are missing: {e}")),
    }
    serde_json::from_str(&text).map_err(|e| format!("its cookies are unreadable: {e}"))
}

/// Unpacks a loaded context's profile into an empty profile folder.
pub fn unpack_profile(archive: &[u8], profile: &Path) -> std::io::Result<()> {
    let mut zip =
        zip::ZipArchive::new(std::io::Cursor::new(archive)).map_err(std::io::Error::other)?;
    let mut total = 0u64;
    for i in 0..zip.len() {
        let mut entry = zip.by_index(i).map_err(std::io::Error::other)?;
        let Some(rel) = entry
            .enclosed_name()
            .and_then(|p| p.strip_prefix(PROFILE_PREFIX).ok().map(Path::to_path_buf))
        else {
            continue;
        };
        total += entry.size();
        if total > MAX_UNPACKED {
            return Err(std::io::Error::other(
                "the profile unpacks to more than 4 GiB",
            ));
        }
        let dest = profile.join(rel);
        if let Some(parent) = dest.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let mut out = std::fs::File::create(&dest)?;
        std::io::copy(&mut entry, &mut out)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vault(dir: &Path, key: u8) -> ContextVault {
        ContextVault::new(dir.join("contexts"), [key; 32]).unwrap()
    }

    #[tokio::test]
    async fn a_saved_profile_loads_back_with_its_cookies() {
        let dir = tempfile::tempdir().unwrap();
        let profile = dir.path().join("profile");
        std::fs::create_dir_all(profile.join("Default/Cache")).unwrap();
        std::fs::write(profile.join("Default/Preferences"), b"{}").unwrap();
        std::fs::write(profile.join("Default/Cache/big"), b"cache").unwrap();
        std::fs::write(profile.join("DevToolsActivePort"), b"1").unwrap();
        let id = uuid::Uuid::new_v4().to_string();
        let v = vault(dir.path(), 1);
        let cookies = vec![serde_json::json!({"name": "sid", "value": "1", "session": true})];
        let guard = v.lock(&id).await;
        assert!(
            v.save(&guard, &id, dir.path(), &profile, cookies.clone(), async {
                true
            })
            .await
            .unwrap()
        );
        drop(guard);

        let snapshot = v.load(&id).await.unwrap().unwrap();
        assert_eq!(snapshot.cookies, cookies);
        let restored = dir.path().join("restored");
        unpack_profile(&snapshot.archive, &restored).unwrap();
        assert_eq!(
            std::fs::read(restored.join("Default/Preferences")).unwrap(),
            b"{}"
        );
        assert!(
            !restored.join("Default/Cache").exists(),
            "caches are not saved"
        );
        assert!(!restored.join("DevToolsActivePort").exists());
        // Encrypted at rest: the plaintext is not in the file.
        let raw = std::fs::read(v.path(&id)).unwrap();
        assert!(memchr::memmem::find(&raw, b"Preferences").is_none());
    }

    #[tokio::test]
    async fn a_wrong_key_or_a_damaged_file_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let id = uuid::Uuid::new_v4().to_string();
        let v = vault(dir.path(), 1);
        let guard = v.lock(&id).await;
        v.save(
            &guard,
            &id,
            dir.path(),
            &dir.path().join("none"),
            vec![],
            async { true },
        )
        .await
        .unwrap();
        drop(guard);
        let other = vault(dir.path(), 2);
        let err = other.load(&id).await.unwrap_err().to_string();
        assert!(
            err.contains("does not decrypt with this server's context key"),
            "{err}"
        );

        let path = v.path(&id);
        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        assert!(matches!(
            v.load(&id).await,
            Err(ContextError::Unreadable { .. })
        ));
        std::fs::write(&path, b"junk").unwrap();
        assert!(matches!(
            v.load(&id).await,
            Err(ContextError::Unreadable { .. })
        ));
    }

    #[tokio::test]
    async fn a_file_under_another_contexts_name_does_not_open() {
        let dir = tempfile::tempdir().unwrap();
        let v = vault(dir.path(), 1);
        let (a, b) = (
            uuid::Uuid::new_v4().to_string(),
            uuid::Uuid::new_v4().to_string(),
        );
        let guard = v.lock(&a).await;
        v.save(&guard, &a, dir.path(), dir.path(), vec![], async { true })
            .await
            .unwrap();
        drop(guard);
        std::fs::copy(v.path(&a), v.path(&b)).unwrap();
        assert!(v.load(&b).await.is_err());
    }

    #[tokio::test]
    async fn a_save_for_a_deleted_context_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let v = vault(dir.path(), 1);
        let id = uuid::Uuid::new_v4().to_string();
        let guard = v.lock(&id).await;
        assert!(
            !v.save(&guard, &id, dir.path(), dir.path(), vec![], async { false })
                .await
                .unwrap()
        );
        drop(guard);
        assert!(v.load(&id).await.unwrap().is_none());
    }

    #[test]
    fn the_key_file_is_made_once_and_kept_private() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let first = load_or_create_key(dir.path(), None).unwrap();
        assert_eq!(load_or_create_key(dir.path(), None).unwrap(), first);
        let mode = std::fs::metadata(dir.path().join("context.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let configured = "ab".repeat(32);
        assert_eq!(
            load_or_create_key(dir.path(), Some(&configured)).unwrap(),
            [0xab; 32]
        );
        assert!(load_or_create_key(dir.path(), Some("short")).is_err());
    }
}
