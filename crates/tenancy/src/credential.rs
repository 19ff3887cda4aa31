//! Tenant credentials: what a server keeps of a tenant's password, and secret comparison.
//!
//! A [`Credential`] is a random 16-byte salt and the SHA-256 of salt and password. The password
//! itself is never kept: not in memory, not on disk (persistence stores [`Credential::encode`]),
//! not on the migration wire (the source ships the encoded credential, so the target checks the
//! same password without ever seeing it).
//!
//! Why SHA-256 and not a slow password hash (argon2, PBKDF2): every connection of a tenant
//! authenticates, often many per second (pools, short-lived clients), so a check must cost
//! microseconds, not the tens of milliseconds a slow hash is tuned to; Redis's ACLs store
//! SHA-256 for the same reason. Online guessing is bounded by the failed-AUTH rate limit
//! instead; the salt makes a stolen credential useless against other servers or tenants
//! with the same password. docs/security.md has the measured cost.

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Format tag of [`Credential::encode`]; a future scheme gets another tag.
const SCHEME: &str = "sha256";
const SALT_LEN: usize = 16;
const HASH_LEN: usize = 32;

/// A salted hash of a tenant's password. Opaque: persistence stores its [`encode`] form and a
/// migration ships it; nothing can get the password back out of it.
///
/// [`encode`]: Credential::encode
#[derive(Clone, PartialEq, Eq)]
pub struct Credential {
    salt: [u8; SALT_LEN],
    hash: [u8; HASH_LEN],
}

/// A credential string that is not one [`Credential::encode`] produced.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid credential: expected sha256:<32 hex digits>:<64 hex digits>")]
pub struct InvalidCredential;

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Not even the hash: logs and panics must not carry material for offline guessing.
        f.write_str("Credential(<redacted>)")
    }
}

impl Credential {
    /// Hashes a password with a fresh random salt.
    pub fn from_password(password: &[u8]) -> Credential {
        let salt: [u8; SALT_LEN] = rand::random();
        Credential {
            salt,
            hash: salted_hash(&salt, password),
        }
    }

    /// Checks a password, in time independent of where it differs.
    pub fn verify(&self, password: &[u8]) -> bool {
        let candidate = salted_hash(&self.salt, password);
        bool::from(candidate.ct_eq(&self.hash))
    }

    /// The storable, shippable form: `sha256:<salt hex>:<hash hex>`.
    pub fn encode(&self) -> String {
        format!("{SCHEME}:{}:{}", hex(&self.salt), hex(&self.hash))
    }

    /// Parses what [`Credential::encode`] produced.
    pub fn decode(s: &str) -> Result<Credential, InvalidCredential> {
        let mut parts = s.split(':');
        let (Some(SCHEME), Some(salt), Some(hash), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(InvalidCredential);
        };
        Ok(Credential {
            salt: unhex(salt).ok_or(InvalidCredential)?,
            hash: unhex(hash).ok_or(InvalidCredential)?,
        })
    }
}

fn salted_hash(salt: &[u8], password: &[u8]) -> [u8; HASH_LEN] {
    let mut h = Sha256::new();
    h.update(salt);
    h.update(password);
    h.finalize().into()
}

/// Compares two secrets (tokens, the administrator password) in time that depends on neither
/// their content nor their lengths: both are hashed first, so only equal-length digests meet.
pub fn secrets_equal(a: &[u8], b: &[u8]) -> bool {
    let (da, db) = (Sha256::digest(a), Sha256::digest(b));
    bool::from(da.as_slice().ct_eq(db.as_slice()))
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 15)]));
    }
    s
}

fn unhex<const N: usize>(s: &str) -> Option<[u8; N]> {
    let s = s.as_bytes();
    if s.len() != 2 * N {
        return None;
    }
    let digit = |c: u8| char::from(c).to_digit(16).map(|d| d as u8);
    let mut out = [0u8; N];
    for (i, pair) in s.chunks_exact(2).enumerate() {
        out[i] = digit(pair[0])? << 4 | digit(pair[1])?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verifies_only_the_password() {
        let c = Credential::from_password(b"s3cret");
        assert!(c.verify(b"s3cret"));
        for wrong in [&b""[..], b"s3cre", b"s3cret ", b"S3cret", b"s3cret\0"] {
            assert!(!c.verify(wrong), "{wrong:?}");
        }
    }

    #[test]
    fn salts_differ_so_equal_passwords_give_different_credentials() {
        let a = Credential::from_password(b"pw");
        let b = Credential::from_password(b"pw");
        assert_ne!(a.encode(), b.encode());
        assert!(a.verify(b"pw") && b.verify(b"pw"));
    }

    #[test]
    fn encode_round_trips_and_hides_the_password() {
        let c = Credential::from_password(b"hunter2");
        let text = c.encode();
        assert!(!text.contains("hunter2"));
        assert!(text.starts_with("sha256:"));
        let back = Credential::decode(&text).unwrap();
        assert_eq!(back, c);
        assert!(back.verify(b"hunter2"));
        assert_eq!(format!("{c:?}"), "Credential(<redacted>)");
    }

    #[test]
    fn decode_refuses_anything_else() {
        let good = Credential::from_password(b"x").encode();
        let cases = [
            String::new(),
            "hunter2".into(),
            good.replace("sha256", "md5"),
            format!("{good}:"),
            good[..good.len() - 1].to_string(),
            good.replace(':', ""),
            format!("{}g", &good[..good.len() - 1]),
        ];
        for bad in cases {
            assert_eq!(Credential::decode(&bad), Err(InvalidCredential), "{bad}");
        }
    }

    #[test]
    fn secrets_compare_by_content() {
        assert!(secrets_equal(b"token", b"token"));
        assert!(!secrets_equal(b"token", b"tokeN"));
        assert!(!secrets_equal(b"token", b"token2"));
        assert!(secrets_equal(b"", b""));
    }

    proptest::proptest! {
        #[test]
        fn decode_never_panics(s in ".{0,120}") {
            let _ = Credential::decode(&s);
        }

        #[test]
        fn any_password_round_trips(pw in proptest::collection::vec(proptest::num::u8::ANY, 0..64)) {
            let c = Credential::decode(&Credential::from_password(&pw).encode()).unwrap();
            proptest::prop_assert!(c.verify(&pw));
        }
    }
}
