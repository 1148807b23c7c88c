//! Browser extensions: an uploaded zip is checked and unpacked once, at upload, into
//! `extensions/<id>/`; sessions load that folder with `--load-extension`.

use std::io::{Read as _, Write as _};
use std::path::Path;

/// Browserbase's documented limit for an extension zip.
pub(crate) const MAX_EXTENSION_BYTES: u64 = 100 * 1024 * 1024;

/// Largest manifest.json read (real ones are a few KiB).
const MAX_MANIFEST: u64 = 1024 * 1024;

/// Largest total size an extension may unpack to (a guard against a zip bomb).
const MAX_UNPACKED: u64 = 512 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ExtensionError {
    #[error("the file is not a zip archive ({0}); upload the extension as a .zip")]
    NotZip(String),
    #[error(
        "the zip has no manifest.json at its root; zip the extension's folder contents, not the folder"
    )]
    NoManifest,
    #[error("manifest.json is not valid JSON: {0}")]
    BadManifest(String),
    #[error("the zip holds an unsafe path ({0:?}); paths must stay inside the extension")]
    UnsafePath(String),
    #[error("the extension unpacks to more than {} MiB", MAX_UNPACKED / (1024 * 1024))]
    TooLarge,
    #[error("the zip entry {0:?} is damaged or does not match its header ({1})")]
    Damaged(String, String),
    #[error("could not unpack the extension: {0}")]
    Io(#[from] std::io::Error),
}

/// Checks `zip_file` is an extension (a zip with a JSON `manifest.json` at its root) and
/// unpacks it into `dest`, which must not exist. Blocking; nothing is left in `dest` on error.
pub(crate) fn unpack(zip_file: &Path, dest: &Path) -> Result<(), ExtensionError> {
    let result = unpack_inner(zip_file, dest);
    if result.is_err() {
        let _ = std::fs::remove_dir_all(dest);
    }
    result
}

fn unpack_inner(zip_file: &Path, dest: &Path) -> Result<(), ExtensionError> {
    let file = std::fs::File::open(zip_file)?;
    let mut zip = zip::ZipArchive::new(file).map_err(|e| ExtensionError::NotZip(e.to_string()))?;
    {
        let manifest = zip
            .by_name("manifest.json")
            .map_err(|_| ExtensionError::NoManifest)?;
        // Sizes are checked before any byte is read: the header's, then (a header may lie)
        // what the bounded read gets.
        if manifest.size() > MAX_MANIFEST {
            return Err(ExtensionError::BadManifest(format!(
                "manifest.json is larger than {MAX_MANIFEST} bytes"
            )));
        }
        let mut text = Vec::new();
        std::io::Read::read_to_end(&mut manifest.take(MAX_MANIFEST + 1), &mut text)?;
        if text.len() as u64 > MAX_MANIFEST {
            return Err(ExtensionError::BadManifest(format!(
                "manifest.json is larger than {MAX_MANIFEST} bytes"
            )));
        }
        // Chromium accepts a UTF-8 byte order mark; so does this check.
        let text = text.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(&text);
        match serde_json::from_slice::<serde_json::Value>(text) {
            Ok(serde_json::Value::Object(_)) => {}
            Ok(_) => return Err(ExtensionError::BadManifest("not an object".into())),
            Err(e) => return Err(ExtensionError::BadManifest(e.to_string())),
        }
    }
    std::fs::create_dir_all(dest)?;
    readable_by_browsers(dest, 0o755)?;
    let mut total = 0u64;
    for i in 0..zip.len() {
        let mut entry = zip
            .by_index(i)
            .map_err(|e| ExtensionError::NotZip(e.to_string()))?;
        let rel = entry
            .enclosed_name()
            .ok_or_else(|| ExtensionError::UnsafePath(entry_name(&entry)))?;
        let out_path = dest.join(rel);
        if entry.is_dir() {
            std::fs::create_dir_all(&out_path)?;
            readable_by_browsers(&out_path, 0o755)?;
            continue;
        }
        if entry.is_symlink() {
            return Err(ExtensionError::UnsafePath(entry_name(&entry)));
        }
        total += entry.size();
        if total > MAX_UNPACKED {
            return Err(ExtensionError::TooLarge);
        }
        if let Some(parent) = out_path.parent() {
            std::fs::create_dir_all(parent)?;
            readable_by_browsers(parent, 0o755)?;
        }
        let mut out = std::fs::File::create(&out_path)?;
        readable_by_browsers(&out_path, 0o644)?;
        // `take` bounds what a lying size header could make us write. A read that fails
        // (a checksum or size that does not match the data) is the zip's fault, and says
        // which entry; a write that fails is ours.
        let name = entry_name(&entry);
        let mut data = (&mut entry).take(MAX_UNPACKED + 1);
        let mut buf = vec![0u8; 64 * 1024];
        let mut copied = 0u64;
        loop {
            let n = data
                .read(&mut buf)
                .map_err(|e| ExtensionError::Damaged(name.clone(), e.to_string()))?;
            if n == 0 {
                break;
            }
            out.write_all(&buf[..n])?;
            copied += n as u64;
        }
        if copied > MAX_UNPACKED {
            return Err(ExtensionError::TooLarge);
        }
    }
    Ok(())
}

/// Opens an unpacked extension to the sandboxed browsers that load it (each its own uid,
/// seeing it read-only): browserd's files are otherwise 0600. The data dir (0700) still
/// keeps it from everyone else.
fn readable_by_browsers(path: &Path, mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
}

/// An entry's name as stored, for messages.
fn entry_name<R: std::io::Read>(entry: &zip::read::ZipFile<'_, R>) -> String {
    entry
        .name()
        .map(|n| n.into_owned())
        .unwrap_or_else(|e| format!("<unreadable name: {e}>"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn zip_of(entries: &[(&str, &[u8])]) -> tempfile::NamedTempFile {
        let file = tempfile::NamedTempFile::new().unwrap();
        let mut zip = zip::ZipWriter::new(file.reopen().unwrap());
        for (name, data) in entries {
            zip.start_file(*name, zip::write::SimpleFileOptions::default())
                .unwrap();
            zip.write_all(data).unwrap();
        }
        zip.finish().unwrap();
        file
    }

    #[test]
    fn a_zip_whose_data_does_not_match_its_header_is_damaged_and_named() {
        let file = tempfile::NamedTempFile::new().unwrap();
        let mut zip = zip::ZipWriter::new(file.reopen().unwrap());
        let stored = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Stored);
        zip.start_file("manifest.json", stored).unwrap();
        zip.write_all(br#"{"manifest_version": 3, "name": "x", "version": "1"}"#)
            .unwrap();
        zip.start_file("content.js", stored).unwrap();
        zip.write_all(b"console.log('the original bytes');")
            .unwrap();
        zip.finish().unwrap();
        // Change the stored data after the fact: its CRC no longer matches.
        let mut bytes = std::fs::read(file.path()).unwrap();
        let at = memchr::memmem::find(&bytes, b"original").unwrap();
        bytes[at] = b'O';
        std::fs::write(file.path(), &bytes).unwrap();
        let dest = tempfile::tempdir().unwrap().path().join("x");
        let err = unpack(file.path(), &dest).unwrap_err();
        assert!(
            matches!(err, ExtensionError::Damaged(ref name, _) if name == "content.js"),
            "{err}"
        );
        assert!(!dest.exists(), "nothing is left");
    }

    #[test]
    fn an_extension_zip_unpacks_with_its_manifest_at_the_root() {
        let zip = zip_of(&[("manifest.json", b"{\"name\":\"x\"}"), ("js/a.js", b"1")]);
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("ext");
        unpack(zip.path(), &dest).unwrap();
        assert!(dest.join("manifest.json").is_file());
        assert_eq!(std::fs::read(dest.join("js/a.js")).unwrap(), b"1");
    }

    #[test]
    fn anything_else_is_refused_with_a_reason() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("ext");
        let not_zip = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(not_zip.path(), b"hello").unwrap();
        assert!(matches!(
            unpack(not_zip.path(), &dest),
            Err(ExtensionError::NotZip(_))
        ));

        let nested = zip_of(&[("folder/manifest.json", b"{}")]);
        assert!(matches!(
            unpack(nested.path(), &dest),
            Err(ExtensionError::NoManifest)
        ));

        // A manifest that is huge (it would be read whole) is refused by its size.
        let spaces = vec![b' '; 3 * 1024 * 1024];
        let huge = zip_of(&[("manifest.json", &spaces)]);
        assert!(
            matches!(unpack(huge.path(), &dir.path().join("huge")), Err(ExtensionError::BadManifest(m)) if m.contains("larger"))
        );
        let bad = zip_of(&[("manifest.json", b"{nope")]);
        assert!(matches!(
            unpack(bad.path(), &dest),
            Err(ExtensionError::BadManifest(_))
        ));

        let escape = zip_of(&[("manifest.json", b"{}"), ("../evil.js", b"x")]);
        assert!(matches!(
            unpack(escape.path(), &dest),
            Err(ExtensionError::UnsafePath(_))
        ));
        assert!(!dest.exists(), "nothing is left behind on error");
        assert!(!dir.path().join("evil.js").exists());
    }
}
