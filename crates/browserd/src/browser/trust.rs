//! What a session's browser trusts beyond the system's roots: the CA certificates its
//! create named in `proxySettings.caCertificates` (for a proxy that inspects TLS, or a
//! private CA).
//!
//! Chromium on Linux reads certificates added by the user from the NSS database in
//! `$HOME/.pki/nssdb`; a browser's `$HOME` is its own folder, so each session trusts only
//! its own. The database is written with NSS's own `certutil` (Debian's `libnss3-tools`):
//! its format is NSS's to define, and no Rust crate writes it.

use crate::fault::Failure;
use base64::Engine as _;
use std::path::{Path, PathBuf};

/// The largest certificate file taken (a bundle of a few dozen certificates).
pub(crate) const MAX_CERTIFICATE_BYTES: u64 = 256 * 1024;

const BEGIN: &str = "-----BEGIN CERTIFICATE-----";
const END: &str = "-----END CERTIFICATE-----";

/// Certificates one uploaded file may hold: each costs a certutil run at every launch that
/// names it.
pub(crate) const MAX_CERTIFICATES_PER_FILE: usize = 10;

/// Certificates one session may trust, all its files together (a certutil run each).
pub(crate) const MAX_CERTIFICATES_PER_SESSION: usize = 20;

/// Certificate files one project may keep.
pub(crate) const MAX_CERTIFICATE_FILES_PER_PROJECT: usize = 100;

/// How many certificates a stored PEM text holds.
pub(crate) fn count(pem: &str) -> usize {
    split(pem).len()
}

/// What an upload's answer says of each certificate (never its key material).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Described {
    pub subject: String,
    /// Its `notAfter`, seconds since the epoch.
    pub expires_at: i64,
}

/// An uploaded certificate file, checked and rewritten as PEM `CERTIFICATE` blocks: PEM
/// (one or more blocks) or a single DER certificate, each a CA certificate (basicConstraints
/// CA, or a self-signed certificate without extensions, as old roots are) that has not
/// expired, with nothing after its DER. Keys, public keys and requests are refused, never
/// stored; the error says which.
pub(crate) fn normalize(bytes: &[u8], now: i64) -> Result<(String, Vec<Described>), Failure> {
    read_certificates(bytes, now).map_err(Failure::client)
}

/// [`normalize`]'s reading, its messages for the client who uploaded the file.
fn read_certificates(bytes: &[u8], now: i64) -> Result<(String, Vec<Described>), String> {
    let ders = match std::str::from_utf8(bytes) {
        Ok(text) if text.contains("PRIVATE KEY-----") => {
            return Err(
                "the file holds a private key: upload only the CA's certificate (its public part)"
                    .into(),
            );
        }
        Ok(text) if text.contains(BEGIN) => pem_blocks(text)?,
        Ok(text) if text.contains("-----BEGIN PUBLIC KEY-----") => {
            return Err(
                "the file holds a public key, not a certificate: upload the CA's certificate"
                    .into(),
            );
        }
        Ok(text) if text.contains("CERTIFICATE REQUEST-----") => {
            return Err("the file holds a certificate request (CSR), not a certificate: upload the CA's certificate".into());
        }
        _ if bytes.first() == Some(&0x30) => vec![bytes.to_vec()],
        _ => return Err("the file is not a PEM or DER X.509 certificate".into()),
    };
    if ders.len() > MAX_CERTIFICATES_PER_FILE {
        return Err(format!(
            "the file holds {} certificates; a file may hold at most {MAX_CERTIFICATES_PER_FILE} (upload the CAs your sessions need)",
            ders.len()
        ));
    }
    let mut pem = String::new();
    let mut described = Vec::new();
    for (i, der) in ders.iter().enumerate() {
        let which = if ders.len() > 1 {
            format!("certificate {} of the file", i + 1)
        } else {
            "the certificate".to_owned()
        };
        described.push(check_ca(der, now).map_err(|why| format!("{which}: {why}"))?);
        let body = base64::engine::general_purpose::STANDARD.encode(der);
        pem.push_str(BEGIN);
        pem.push('\n');
        for line in body.as_bytes().chunks(64) {
            pem.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
            pem.push('\n');
        }
        pem.push_str(END);
        pem.push('\n');
    }
    Ok((pem, described))
}

/// How far ahead of this machine's clock a certificate's start may be.
const CLOCK_SKEW_SECS: i64 = 300;

/// Checks one DER certificate as a CA a browser can trust now.
fn check_ca(der: &[u8], now: i64) -> Result<Described, String> {
    let (rest, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| format!("not a DER X.509 certificate ({e})"))?;
    if !rest.is_empty() {
        return Err(format!(
            "{} bytes follow the certificate's DER: not one certificate",
            rest.len()
        ));
    }
    let subject = cert.subject().to_string();
    let validity = cert.validity();
    let (not_before, not_after) = (
        validity.not_before.timestamp(),
        validity.not_after.timestamp(),
    );
    let day = |t: i64| {
        time::OffsetDateTime::from_unix_timestamp(t)
            .map(|d| d.date().to_string())
            .unwrap_or_else(|_| t.to_string())
    };
    if not_after < now {
        return Err(format!("{subject:?} expired on {}", day(not_after)));
    }
    // A few minutes of clock skew: a CA made just now on a machine whose clock runs ahead.
    if not_before > now + CLOCK_SKEW_SECS {
        return Err(format!(
            "{subject:?} is not valid before {}",
            day(not_before)
        ));
    }
    let ca = match cert.basic_constraints() {
        Ok(Some(constraints)) => constraints.value.ca,
        Ok(None) => cert.subject() == cert.issuer() && cert.extensions().is_empty(),
        Err(e) => return Err(format!("its basicConstraints do not parse ({e})")),
    };
    if !ca {
        return Err(format!(
            "{subject:?} is not a CA certificate (a server's or client's own certificate): upload the CA that signed it"
        ));
    }
    Ok(Described {
        subject,
        expires_at: not_after,
    })
}

/// What [`normalize`] said of each certificate of a stored PEM text.
pub(crate) fn describe(pem: &str) -> Vec<Described> {
    pem_blocks(pem)
        .unwrap_or_default()
        .iter()
        .filter_map(|der| {
            let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
            Some(Described {
                subject: cert.subject().to_string(),
                expires_at: cert.validity().not_after.timestamp(),
            })
        })
        .collect()
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
pub(crate) type Jail<'a> = (u32, &'a dyn Fn(&Path) -> std::process::Command);

/// Writes `home/.pki/nssdb` trusting each certificate (PEM texts) as a CA for TLS servers.
/// Blocking: certutil runs once per certificate (a few ms each).
///
/// certutil parses the client's certificates, so for a sandboxed browser it runs where the
/// browser will: `jail` is the browser's uid and what turns certutil's path into the command
/// that runs it in the browser's sandbox as that uid (who then owns the database). `None`
/// runs it as browserd's user.
pub(crate) fn write_nss_db(
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

    /// The fixtures (tests/fixtures/certs, made with OpenSSL; see its README).
    fn fixture(name: &str) -> Vec<u8> {
        std::fs::read(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/fixtures/certs")
                .join(name),
        )
        .unwrap()
    }

    /// 2027-01-01, after the fixtures were made.
    const NOW: i64 = 1_798_761_600;

    #[test]
    fn pem_and_der_become_the_same_pem_blocks() {
        let pem = String::from_utf8(fixture("ca.pem")).unwrap();
        let wrapped = format!("junk before\n{pem}trailing\n");
        let (from_pem, said) = normalize(wrapped.as_bytes(), NOW).unwrap();
        assert_eq!(from_pem, normalize(&fixture("ca.der"), NOW).unwrap().0);
        assert!(from_pem.starts_with(BEGIN) && from_pem.ends_with(&format!("{END}\n")));
        assert_eq!(said.len(), 1);
        assert_eq!(said[0].subject, "CN=browserd fixture CA");
        assert!(said[0].expires_at > 4_900_000_000, "valid until 2126");
        assert_eq!(describe(&from_pem), said);
        let bundle = format!("{from_pem}{from_pem}");
        assert_eq!(
            split(&normalize(bundle.as_bytes(), NOW).unwrap().0).len(),
            2
        );
    }

    #[test]
    fn what_is_not_a_ca_certificate_valid_now_is_refused_with_why() {
        let refused = |bytes: &[u8]| normalize(bytes, NOW).unwrap_err();
        for (file, says) in [
            ("leaf.pem", "is not a CA certificate"),
            ("expired.pem", "expired on 2020-01-02"),
            ("request.pem", "certificate request (CSR)"),
            ("public-key.pem", "public key"),
        ] {
            let why = refused(&fixture(file));
            assert!(why.message().contains(says), "{file}: {why}");
        }
        // Not yet valid: the CA, a century ago.
        assert!(
            normalize(&fixture("ca.pem"), 0)
                .unwrap_err()
                .message()
                .contains("not valid before")
        );
        let key = "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n";
        assert!(refused(key.as_bytes()).message().contains("private key"));
        assert!(refused(b"hello").message().contains("not a PEM or DER"));
        let bad = format!("{BEGIN}\n!!!\n{END}\n");
        assert!(refused(bad.as_bytes()).message().contains("not base64"));
        let open = format!("{BEGIN}\nAAAA\n");
        assert!(refused(open.as_bytes()).message().contains("no END"));
        let short = format!("{BEGIN}\nMAA=\n{END}\n");
        assert!(refused(short.as_bytes()).message().contains("DER X.509"));
        // Trailing garbage after the DER, and a truncated DER.
        let mut padded = fixture("ca.der");
        padded.extend_from_slice(b"\0\0\0");
        assert!(
            refused(&padded).message().contains("3 bytes follow"),
            "{}",
            refused(&padded)
        );
        let der = fixture("ca.der");
        assert!(
            refused(&der[..der.len() - 10])
                .message()
                .contains("DER X.509")
        );
        // The second of a bundle names itself.
        let mixed = [fixture("ca.pem"), fixture("leaf.pem")].concat();
        assert!(
            refused(&mixed)
                .message()
                .contains("certificate 2 of the file")
        );
        // At most ten a file.
        let many = fixture("ca.pem").repeat(MAX_CERTIFICATES_PER_FILE + 1);
        assert!(refused(&many).message().contains("at most 10"));
    }
}
