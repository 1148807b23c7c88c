//! What a session's browser trusts beyond the system's roots: the CA certificates its
//! create named in `proxySettings.caCertificates` (for a proxy that inspects TLS, or a
//! private CA).
//!
//! Chromium on Linux reads certificates added by the user from the NSS database in
//! `$HOME/.pki/nssdb`; a browser's `$HOME` is its own folder, so each session trusts only
//! its own. The database is written with NSS's own `certutil` (Debian's `libnss3-tools`):
//! its format is NSS's to define, and no Rust crate writes it.

use base64::Engine as _;
use std::path::{Path, PathBuf};

/// The largest certificate file taken (a bundle of a few dozen certificates).
pub const MAX_CERTIFICATE_BYTES: u64 = 256 * 1024;

const BEGIN: &str = "-----BEGIN CERTIFICATE-----";
const END: &str = "-----END CERTIFICATE-----";

/// An uploaded certificate file, checked and rewritten as PEM `CERTIFICATE` blocks: PEM
/// (one or more blocks) or a single DER certificate. Keys are refused, never stored.
pub fn normalize(bytes: &[u8]) -> Result<String, String> {
    let ders = match std::str::from_utf8(bytes) {
        Ok(text) if text.contains("PRIVATE KEY-----") => {
            return Err(
                "the file holds a private key: upload only the CA's certificate (its public part)"
                    .into(),
            );
        }
        Ok(text) if text.contains(BEGIN) => pem_blocks(text)?,
        _ if bytes.first() == Some(&0x30) => vec![bytes.to_vec()],
        _ => return Err("the file is not a PEM or DER X.509 certificate".into()),
    };
    let mut pem = String::new();
    for der in ders {
        // An X.509 certificate is a DER SEQUENCE of exactly its length whose first element,
        // the signed part, is a SEQUENCE too; certutil reads the rest at launch.
        if der.len() < 64 || !x509_shape(&der) {
            return Err("a CERTIFICATE block does not hold a DER X.509 certificate".into());
        }
        let body = base64::engine::general_purpose::STANDARD.encode(&der);
        pem.push_str(BEGIN);
        pem.push('\n');
        for line in body.as_bytes().chunks(64) {
            pem.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
            pem.push('\n');
        }
        pem.push_str(END);
        pem.push('\n');
    }
    Ok(pem)
}

/// Whether `der` is one DER SEQUENCE, exactly as long as its length says, that starts with
/// another SEQUENCE: an X.509 certificate's outline (truncated or padded files fail here,
/// not at a session's launch). Written here: a full X.509 parser would be a dependency for
/// two length checks.
fn x509_shape(der: &[u8]) -> bool {
    /// A DER element's tag, header length and content length at the start of `bytes`.
    fn element(bytes: &[u8]) -> Option<(u8, usize, usize)> {
        let (&tag, rest) = bytes.split_first()?;
        let (&first, rest) = rest.split_first()?;
        if first < 0x80 {
            return Some((tag, 2, usize::from(first)));
        }
        let count = usize::from(first & 0x7f);
        if count == 0 || count > 4 || rest.len() < count {
            return None;
        }
        let len = rest[..count]
            .iter()
            .fold(0usize, |len, &b| (len << 8) | usize::from(b));
        Some((tag, 2 + count, len))
    }
    let Some((0x30, header, len)) = element(der) else {
        return false;
    };
    header.checked_add(len) == Some(der.len())
        && matches!(element(&der[header..]), Some((0x30, inner_header, inner_len)) if inner_header + inner_len <= len)
}

/// The DER contents of every `CERTIFICATE` block of a PEM text.
fn pem_blocks(text: &str) -> Result<Vec<Vec<u8>>, String> {
    let mut ders = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find(BEGIN) {
        let after = &rest[start + BEGIN.len()..];
        let end = after
            .find(END)
            .ok_or("a CERTIFICATE block has no END line")?;
        let body: String = after[..end]
            .chars()
            .filter(|c| !c.is_ascii_whitespace())
            .collect();
        let der = base64::engine::general_purpose::STANDARD
            .decode(body)
            .map_err(|e| format!("a CERTIFICATE block is not base64: {e}"))?;
        ders.push(der);
        rest = &after[end + END.len()..];
    }
    Ok(ders)
}

/// One PEM text per certificate (certutil imports the first certificate of a file only).
fn split(pem: &str) -> Vec<String> {
    pem.split_inclusive(&format!("{END}\n"))
        .filter(|block| block.contains(BEGIN))
        .map(str::to_owned)
        .collect()
}

/// Why a browser's trust store could not be written.
#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    #[error(
        "proxySettings.caCertificates needs NSS's certutil on the server (apt-get install libnss3-tools)"
    )]
    NoCertutil,
    #[error("certutil failed: {0}")]
    Certutil(String),
    #[error("could not write the certificate database: {0}")]
    Io(#[from] std::io::Error),
}

/// Where certutil runs for a sandboxed browser: its uid, and what turns certutil's path into
/// the command that runs it in the browser's sandbox as that uid.
pub type Jail<'a> = (u32, &'a dyn Fn(&Path) -> std::process::Command);

/// Writes `home/.pki/nssdb` trusting each certificate (PEM texts) as a CA for TLS servers.
/// Blocking: certutil runs once per certificate (a few ms each).
///
/// certutil parses the client's certificates, so for a sandboxed browser it runs where the
/// browser will: `jail` is the browser's uid and what turns certutil's path into the command
/// that runs it in the browser's sandbox as that uid (who then owns the database). `None`
/// runs it as browserd's user.
pub fn write_nss_db(
    home: &Path,
    certificates: &[String],
    jail: Option<Jail<'_>>,
) -> Result<(), TrustError> {
    let certutil = super::sandbox::find_program("certutil").ok_or(TrustError::NoCertutil)?;
    let pki = home.join(".pki");
    let db: PathBuf = pki.join("nssdb");
    std::fs::create_dir_all(&db)?;
    if let Some((uid, _)) = jail {
        for dir in [&pki, &db] {
            std::os::unix::fs::lchown(dir, Some(uid), Some(uid))?;
        }
    }
    let db_arg = format!("sql:{}", db.display());
    // Each certificate goes in on certutil's standard input: no file of it for the jailed
    // uid to be given.
    let run = |args: &[&std::ffi::OsStr], input: &[u8]| -> Result<(), TrustError> {
        use std::io::Write as _;
        let mut command = match jail {
            Some((_, jailed)) => jailed(&certutil),
            None => std::process::Command::new(&certutil),
        };
        let mut child = command
            .args(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()?;
        let mut stdin = child.stdin.take().expect("stdin is piped");
        // A certificate is a few KiB: well within the pipe's buffer, so no deadlock.
        let written = stdin.write_all(input);
        drop(stdin);
        let out = child.wait_with_output()?;
        if out.status.success() {
            written?;
            Ok(())
        } else {
            Err(TrustError::Certutil(
                String::from_utf8_lossy(&out.stderr).trim().to_owned(),
            ))
        }
    };
    run(
        &[
            "-N".as_ref(),
            "-d".as_ref(),
            db_arg.as_ref(),
            "--empty-password".as_ref(),
        ],
        b"",
    )?;
    let each = certificates.iter().flat_map(|pem| split(pem));
    for (n, pem) in each.enumerate() {
        let nickname = format!("browserd-ca-{n}");
        run(
            &[
                "-A".as_ref(),
                "-d".as_ref(),
                db_arg.as_ref(),
                "-n".as_ref(),
                nickname.as_ref(),
                // Trusted to issue TLS server certificates; nothing else.
                "-t".as_ref(),
                "C,,".as_ref(),
                // PEM, read from standard input.
                "-a".as_ref(),
            ],
            pem.as_bytes(),
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A certificate's outline (what the format checks look at): a SEQUENCE of 256 bytes
    /// holding a SEQUENCE of 200.
    fn der() -> Vec<u8> {
        let mut der = vec![0x30, 0x82, 0x01, 0x00, 0x30, 0x81, 200];
        der.extend(std::iter::repeat_n(7u8, 256 - 3));
        der
    }

    #[test]
    fn pem_and_der_become_the_same_pem_blocks() {
        let b64 = base64::engine::general_purpose::STANDARD.encode(der());
        let pem = format!(
            "junk before\n{BEGIN}\n{}\n{}\n{END}\ntrailing\n",
            &b64[..40],
            &b64[40..]
        );
        let from_pem = normalize(pem.as_bytes()).unwrap();
        assert_eq!(from_pem, normalize(&der()).unwrap());
        assert!(from_pem.starts_with(BEGIN) && from_pem.ends_with(&format!("{END}\n")));
        let bundle = format!("{from_pem}{from_pem}");
        assert_eq!(split(&normalize(bundle.as_bytes()).unwrap()).len(), 2);
    }

    #[test]
    fn keys_and_other_files_are_refused() {
        let key = "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n";
        assert!(
            normalize(key.as_bytes())
                .unwrap_err()
                .contains("private key")
        );
        assert!(
            normalize(b"hello")
                .unwrap_err()
                .contains("not a PEM or DER")
        );
        let bad = format!("{BEGIN}\n!!!\n{END}\n");
        assert!(
            normalize(bad.as_bytes())
                .unwrap_err()
                .contains("not base64")
        );
        let open = format!("{BEGIN}\nAAAA\n");
        assert!(normalize(open.as_bytes()).unwrap_err().contains("no END"));
        let short = format!("{BEGIN}\nMAA=\n{END}\n");
        assert!(
            normalize(short.as_bytes())
                .unwrap_err()
                .contains("DER X.509")
        );
        let mut padded = der();
        padded.push(0);
        assert!(normalize(&padded).unwrap_err().contains("DER X.509"));
        let truncated = &der()[..200];
        assert!(normalize(truncated).unwrap_err().contains("DER X.509"));
        let mut not_inner_sequence = der();
        not_inner_sequence[4] = 0x02;
        assert!(
            normalize(&not_inner_sequence)
                .unwrap_err()
                .contains("DER X.509")
        );
    }
}
