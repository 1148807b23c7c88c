//! API keys and per-session signing keys.
//!
//! API keys are 256-bit random strings; only their SHA-256 is stored. A plain hash (rather
//! than a slow password hash) is enough because the keys are random, not chosen by people.
//!
//! A session's signing key is `HMAC-SHA256(server secret, session id)`. browserd can
//! therefore give the same `connectUrl` back on every `GET /v1/sessions/{id}` without
//! storing the key, and check a presented key in constant time.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use uuid::Uuid;

/// 32 bytes from the operating system's random source.
pub fn random_bytes() -> [u8; 32] {
    let mut buf = [0u8; 32];
    getrandom::fill(&mut buf).expect("the OS random source is available");
    buf
}

/// A fresh API key, e.g. `bd_3q2...`. The prefix makes a leaked key recognisable.
pub fn new_api_key() -> String {
    format!("bd_{}", URL_SAFE_NO_PAD.encode(random_bytes()))
}

/// The stored form of an API key: lowercase hex SHA-256.
pub fn hash_api_key(key: &str) -> String {
    hex(&Sha256::digest(key.as_bytes()))
}

/// Lowercase hex.
/// A value that tells whether two nodes hold the same context key without revealing it.
pub fn key_check(key: &[u8; 32]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(b"browserd context key check v1");
    hex(&mac.finalize().into_bytes())
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A 256-bit key from 64 hex digits.
pub fn key_from_hex(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, chunk) in s.as_bytes().chunks(2).enumerate() {
        let pair = std::str::from_utf8(chunk).ok()?;
        out[i] = u8::from_str_radix(pair, 16).ok()?;
    }
    Some(out)
}

/// The server-wide secret from which signing keys are derived.
#[derive(Clone)]
pub struct SigningSecret([u8; 32]);

impl std::fmt::Debug for SigningSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SigningSecret(<redacted>)")
    }
}

impl SigningSecret {
    pub fn generate() -> Self {
        Self(random_bytes())
    }

    pub fn to_hex(&self) -> String {
        hex(&self.0)
    }

    pub fn from_hex(s: &str) -> Option<Self> {
        key_from_hex(s).map(Self)
    }

    fn mac(&self, session: Uuid) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC takes any key length");
        mac.update(b"browserd session signing key v1:");
        mac.update(session.as_bytes());
        mac
    }

    /// The signing key of one session (URL-safe, 43 characters).
    pub fn signing_key(&self, session: Uuid) -> String {
        URL_SAFE_NO_PAD.encode(self.mac(session).finalize().into_bytes())
    }

    /// Whether `presented` is the signing key of `session`; constant-time.
    pub fn verify(&self, session: Uuid, presented: &str) -> bool {
        let Ok(tag) = URL_SAFE_NO_PAD.decode(presented) else {
            return false;
        };
        self.mac(session).verify_slice(&tag).is_ok()
    }
}

/// One forward: the node that sends and the node that receives.
#[derive(Debug, Clone, Copy)]
pub struct Hop<'a> {
    pub from: &'a str,
    pub to: &'a str,
}

/// How long a forwarded request's credential is taken (either node's clock may be off by
/// some seconds; a copy replayed later than this is refused).
pub const CLUSTER_CREDENTIAL_WINDOW_SECS: i64 = 60;

impl SigningSecret {
    fn cluster_mac(&self, hop: Hop<'_>, at: i64, method: &str, path: &str) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC takes any key length");
        mac.update(b"browserd cluster forward v2:");
        for part in [
            hop.from.as_bytes(),
            hop.to.as_bytes(),
            at.to_string().as_bytes(),
            method.as_bytes(),
            path.as_bytes(),
        ] {
            mac.update(&(part.len() as u64).to_be_bytes());
            mac.update(part);
        }
        mac
    }

    /// The credential a node sends with a request it forwards (`x-browserd-cluster-auth`):
    /// `<unix seconds>.<MAC of the sending and receiving nodes, the time, the method and the
    /// path>`, keyed by the secret every node of the cluster shares (in the database). Only
    /// nodes make it; a copy is good for that one receiver, for a minute.
    pub fn cluster_credential(&self, hop: Hop<'_>, at: i64, method: &str, path: &str) -> String {
        let tag = self
            .cluster_mac(hop, at, method, path)
            .finalize()
            .into_bytes();
        format!("{at}.{}", URL_SAFE_NO_PAD.encode(tag))
    }

    /// Whether `presented` is a credential [`Self::cluster_credential`] made for this
    /// request, within [`CLUSTER_CREDENTIAL_WINDOW_SECS`] of `now`; constant-time.
    pub fn verify_cluster_credential(
        &self,
        presented: &str,
        hop: Hop<'_>,
        now: i64,
        method: &str,
        path: &str,
    ) -> bool {
        let Some((at, tag)) = presented.split_once('.') else {
            return false;
        };
        let (Ok(at), Ok(tag)) = (at.parse::<i64>(), URL_SAFE_NO_PAD.decode(tag)) else {
            return false;
        };
        (now - at).abs() <= CLUSTER_CREDENTIAL_WINDOW_SECS
            && self
                .cluster_mac(hop, at, method, path)
                .verify_slice(&tag)
                .is_ok()
    }
}

/// A signing key names its session: `<session id>.<mac>`, so the connect handler can find
/// the session without a lookup table.
pub fn session_token(secret: &SigningSecret, session: Uuid) -> String {
    format!("{}.{}", session.simple(), secret.signing_key(session))
}

/// Splits and checks a token made by [`session_token`]. `None` for anything malformed or forged.
pub fn verify_session_token(secret: &SigningSecret, token: &str) -> Option<Uuid> {
    let (id, mac) = token.split_once('.')?;
    let id = Uuid::try_parse(id).ok()?;
    secret.verify(id, mac).then_some(id)
}

/// What an inspector URL grants: one session, until an instant, one kind of access.
/// Carried in the URL path, so it works in another site's iframe without the API key, and
/// stops at `expires_at` or the session's end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InspectGrant {
    pub session: Uuid,
    /// Unix seconds.
    pub expires_at: i64,
    pub access: Access,
}

/// The kinds of inspector link. A live-view link (made to be embedded in other sites) never
/// opens DevTools: that takes a link of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Access {
    /// The live view, watch only: mouse, keyboard and text input are refused.
    Watch,
    /// The live view with input.
    Interact,
    /// Chrome DevTools and the debug websockets (CDP, through the relay's filter).
    DevTools,
}

impl Access {
    fn letter(self) -> char {
        match self {
            Access::Watch => 'r',
            Access::Interact => 'w',
            Access::DevTools => 'd',
        }
    }

    fn from_letter(letter: &str) -> Option<Self> {
        match letter {
            "r" => Some(Access::Watch),
            "w" => Some(Access::Interact),
            "d" => Some(Access::DevTools),
            _ => None,
        }
    }

    /// Whether this link is the live view's (watching or with input).
    pub fn is_live_view(self) -> bool {
        matches!(self, Access::Watch | Access::Interact)
    }
}

impl SigningSecret {
    fn grant_mac(&self, session: Uuid, expires_at: i64, mode: char) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC takes any key length");
        // A different prefix from the signing key's: one never verifies as the other.
        mac.update(b"browserd inspect grant v1:");
        mac.update(session.as_bytes());
        mac.update(&expires_at.to_be_bytes());
        mac.update(&[mode as u8]);
        mac
    }

    /// `<session>.<expiry>.<r|w|d>.<mac>`: URL-safe, no `/`.
    pub fn sign_grant(&self, grant: &InspectGrant) -> String {
        let mode = grant.access.letter();
        let mac = self.grant_mac(grant.session, grant.expires_at, mode);
        format!(
            "{}.{}.{mode}.{}",
            grant.session.simple(),
            grant.expires_at,
            URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
        )
    }

    /// The grant a token carries if browserd signed it (expiry not checked here).
    pub fn verify_grant(&self, token: &str) -> Option<InspectGrant> {
        let mut parts = token.split('.');
        let (session, expires_at, mode, tag) =
            (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() {
            return None;
        }
        let session = Uuid::try_parse(session).ok()?;
        let expires_at: i64 = expires_at.parse().ok()?;
        let access = Access::from_letter(mode)?;
        let tag = URL_SAFE_NO_PAD.decode(tag).ok()?;
        self.grant_mac(session, expires_at, access.letter())
            .verify_slice(&tag)
            .ok()?;
        Some(InspectGrant {
            session,
            expires_at,
            access,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inspect_grants_verify_only_as_signed() {
        let secret = SigningSecret::generate();
        let grant = InspectGrant {
            session: Uuid::new_v4(),
            expires_at: 1_900_000_000,
            access: Access::Watch,
        };
        let token = secret.sign_grant(&grant);
        assert!(!token.contains('/'));
        assert_eq!(secret.verify_grant(&token), Some(grant));
        assert_eq!(SigningSecret::generate().verify_grant(&token), None);
        // Flipping the mode or the expiry breaks the MAC: a live-view link does not become a
        // DevTools link.
        assert_eq!(secret.verify_grant(&token.replacen(".r.", ".w.", 1)), None);
        assert_eq!(secret.verify_grant(&token.replacen(".r.", ".d.", 1)), None);
        let live = secret.sign_grant(&InspectGrant {
            access: Access::Interact,
            ..grant
        });
        assert_eq!(secret.verify_grant(&live.replacen(".w.", ".d.", 1)), None);
        assert_eq!(
            secret.verify_grant(&token.replacen("1900000000", "1900000001", 1)),
            None
        );
        // A session's signing key is not a grant, and a grant is not a signing key.
        let signing = session_token(&secret, grant.session);
        assert_eq!(secret.verify_grant(&signing), None);
        assert_eq!(verify_session_token(&secret, &token), None);
    }

    #[test]
    fn api_keys_are_random_and_hash_stably() {
        let a = new_api_key();
        let b = new_api_key();
        assert_ne!(a, b);
        assert!(a.starts_with("bd_") && a.len() > 40);
        assert_eq!(hash_api_key(&a), hash_api_key(&a));
        assert_ne!(hash_api_key(&a), hash_api_key(&b));
        assert_eq!(hash_api_key(&a).len(), 64);
    }

    #[test]
    fn tokens_verify_only_for_their_session_and_secret() {
        let secret = SigningSecret::generate();
        let other = SigningSecret::generate();
        let id = Uuid::new_v4();
        let token = session_token(&secret, id);
        assert_eq!(verify_session_token(&secret, &token), Some(id));
        assert_eq!(verify_session_token(&other, &token), None);
        let forged = format!("{}.{}", Uuid::new_v4().simple(), secret.signing_key(id));
        assert_eq!(verify_session_token(&secret, &forged), None);
        for garbage in ["", ".", "abc", "x.y", &format!("{}.", id.simple())] {
            assert_eq!(verify_session_token(&secret, garbage), None, "{garbage:?}");
        }
    }

    #[test]
    fn secret_hex_round_trips() {
        let s = SigningSecret::generate();
        let back = SigningSecret::from_hex(&s.to_hex()).unwrap();
        assert_eq!(back.signing_key(Uuid::nil()), s.signing_key(Uuid::nil()));
        assert!(SigningSecret::from_hex("zz").is_none());
        assert!(format!("{s:?}").contains("redacted"));
    }

    proptest::proptest! {
        #[test]
        fn no_string_but_the_real_token_verifies(garbage in ".{0,120}") {
            let secret = SigningSecret::generate();
            proptest::prop_assert_eq!(verify_session_token(&secret, &garbage), None);
        }
    }

    #[test]
    fn a_cluster_credential_holds_for_its_hop_request_and_minute_only() {
        let secret = SigningSecret::generate();
        let now = 1_800_000_000;
        let hop = |from, to| Hop { from, to };
        let ab = hop("node-a", "node-b");
        let c = secret.cluster_credential(ab, now, "POST", "/v1/sessions/x");
        assert!(secret.verify_cluster_credential(&c, ab, now + 30, "POST", "/v1/sessions/x"));
        for (h, at, method, path) in [
            (hop("node-c", "node-b"), now, "POST", "/v1/sessions/x"),
            (hop("node-a", "node-c"), now, "POST", "/v1/sessions/x"),
            (ab, now + 61, "POST", "/v1/sessions/x"),
            (ab, now - 61, "POST", "/v1/sessions/x"),
            (ab, now, "GET", "/v1/sessions/x"),
            (ab, now, "POST", "/v1/sessions/y"),
        ] {
            assert!(
                !secret.verify_cluster_credential(&c, h, at, method, path),
                "{h:?} {at} {method} {path}"
            );
        }
        let other = SigningSecret::generate();
        assert!(!other.verify_cluster_credential(&c, ab, now, "POST", "/v1/sessions/x"));
        for forged in ["", "x", "1800000000.", "1800000000.AAAA", "abc.def"] {
            assert!(!secret.verify_cluster_credential(forged, ab, now, "POST", "/v1/sessions/x"));
        }
        // Parts are length-prefixed: moving a byte from one part to the next changes the MAC.
        let c2 = secret.cluster_credential(hop("node-a", "node-b/"), now, "POST", "v1");
        assert!(!secret.verify_cluster_credential(&c2, ab, now, "POST", "/v1"));
    }
}
