//! API key tokens and their hashing. A token is `tk_<key id>_<secret>`; only
//! an HMAC-SHA256 of the secret, under a server secret, is ever stored, and it
//! is compared in constant time.

use std::fmt;

use hmac::{Mac, SimpleHmac};
use rand::{CryptoRng, RngCore};
use sha2::Sha256;

use crate::ids::KeyId;

const PREFIX: &str = "tk_";
/// 24 random bytes: 192 bits of secret, written as 48 hex characters.
const SECRET_BYTES: usize = 24;

/// The secret half of an API key. Its `Debug` never prints it.
#[derive(Clone, PartialEq, Eq)]
pub struct KeySecret(String);

impl fmt::Debug for KeySecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("KeySecret(<redacted>)")
    }
}

/// A whole API key as a client presents it: id plus secret.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(try_from = "String")]
pub struct ApiKeyToken {
    pub id: KeyId,
    pub secret: KeySecret,
}

/// Why a presented string is not an API key. Kept vague on purpose: the
/// client learns only that the key is malformed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("an API key has the form tk_<16 hex>_<48 hex>")]
pub struct MalformedKey;

impl TryFrom<String> for ApiKeyToken {
    type Error = MalformedKey;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s)
    }
}

impl ApiKeyToken {
    /// Mints a fresh key from a cryptographic RNG (the OS RNG in production).
    pub fn generate(rng: &mut (impl RngCore + CryptoRng)) -> Self {
        let id = KeyId::generate(rng);
        let mut bytes = [0u8; SECRET_BYTES];
        rng.fill_bytes(&mut bytes);
        Self {
            id,
            secret: KeySecret(hex::encode(bytes)),
        }
    }

    pub fn parse(s: &str) -> Result<Self, MalformedKey> {
        let rest = s.strip_prefix(PREFIX).ok_or(MalformedKey)?;
        let (id, secret) = rest.split_once('_').ok_or(MalformedKey)?;
        let id = KeyId::parse(id).map_err(|_| MalformedKey)?;
        let secret_ok = secret.len() == SECRET_BYTES * 2
            && secret
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if !secret_ok {
            return Err(MalformedKey);
        }
        Ok(Self {
            id,
            secret: KeySecret(secret.to_owned()),
        })
    }

    /// The full token text, to be shown once to whoever created the key.
    pub fn expose(&self) -> String {
        format!("{PREFIX}{}_{}", self.id, self.secret.0)
    }
}

/// The server's HMAC key. Generated on first start or given by config.
#[derive(Clone, serde::Deserialize)]
#[serde(try_from = "String")]
pub struct ServerSecret([u8; 32]);

impl fmt::Debug for ServerSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ServerSecret(<redacted>)")
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the server secret must be 64 hexadecimal characters (32 bytes)")]
pub struct MalformedServerSecret;

impl TryFrom<String> for ServerSecret {
    type Error = MalformedServerSecret;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::from_hex(&s)
    }
}

impl ServerSecret {
    pub fn generate(rng: &mut (impl RngCore + CryptoRng)) -> Self {
        let mut bytes = [0u8; 32];
        rng.fill_bytes(&mut bytes);
        Self(bytes)
    }

    pub fn from_hex(s: &str) -> Result<Self, MalformedServerSecret> {
        let bytes = hex::decode(s.trim()).map_err(|_| MalformedServerSecret)?;
        let bytes: [u8; 32] = bytes.try_into().map_err(|_| MalformedServerSecret)?;
        Ok(Self(bytes))
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

/// The stored form of a key's secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretHash(pub [u8; 32]);

/// Hashes and verifies key secrets under the server secret.
#[derive(Debug, Clone)]
pub struct KeyHasher {
    secret: ServerSecret,
}

type HmacSha256 = SimpleHmac<Sha256>;

impl KeyHasher {
    pub fn new(secret: ServerSecret) -> Self {
        Self { secret }
    }

    /// The MAC covers the key id as well as the secret, so a stored hash is
    /// bound to its row: copying one key's hash onto another id does not make
    /// the first key's secret open the second.
    fn mac(&self, id: &KeyId, secret: &KeySecret) -> HmacSha256 {
        let mut mac = <HmacSha256 as Mac>::new_from_slice(&self.secret.0)
            .expect("HMAC accepts keys of any length");
        mac.update(id.as_str().as_bytes());
        mac.update(&[0]);
        mac.update(secret.0.as_bytes());
        mac
    }

    pub fn hash(&self, token: &ApiKeyToken) -> SecretHash {
        SecretHash(
            self.mac(&token.id, &token.secret)
                .finalize()
                .into_bytes()
                .into(),
        )
    }

    /// A name for the secret that reveals nothing of it: the MAC of a fixed
    /// label, in hex. The catalog keeps it, so that a server started with
    /// another secret (a lost or replaced secret file, a node configured
    /// differently) is refused before every key it serves fails to verify.
    pub fn fingerprint(&self) -> String {
        let mut mac = <HmacSha256 as Mac>::new_from_slice(&self.secret.0)
            .expect("HMAC accepts keys of any length");
        mac.update(b"tenantd server secret fingerprint v1");
        hex::encode(&mac.finalize().into_bytes()[..16])
    }

    /// Constant-time comparison of a presented token against the stored hash.
    pub fn verify(&self, token: &ApiKeyToken, stored: &SecretHash) -> bool {
        self.mac(&token.id, &token.secret)
            .verify_slice(&stored.0)
            .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::OsRng;

    fn hasher() -> KeyHasher {
        KeyHasher::new(ServerSecret::generate(&mut OsRng))
    }

    #[test]
    fn a_fingerprint_names_one_secret_and_is_not_it() {
        let secret = ServerSecret::generate(&mut OsRng);
        let hex_secret = secret.to_hex();
        let one = KeyHasher::new(ServerSecret::from_hex(&hex_secret).unwrap()).fingerprint();
        assert_eq!(one, KeyHasher::new(secret).fingerprint(), "the same secret");
        assert_ne!(one, hasher().fingerprint(), "another secret");
        assert_eq!(one.len(), 32);
        assert!(!hex_secret.contains(&one));
    }

    #[test]
    fn generated_tokens_parse_back() {
        let token = ApiKeyToken::generate(&mut OsRng);
        let text = token.expose();
        assert!(text.starts_with("tk_"));
        assert_eq!(text.len(), 3 + 16 + 1 + 48);
        assert_eq!(ApiKeyToken::parse(&text), Ok(token));
    }

    #[test]
    fn malformed_tokens_are_rejected() {
        let good = ApiKeyToken::generate(&mut OsRng).expose();
        let upper = good.to_uppercase();
        let short = &good[..good.len() - 1];
        let long = format!("{good}0");
        let no_prefix = good.trim_start_matches("tk_");
        for bad in [
            "",
            "tk_",
            "tk__",
            upper.as_str(),
            short,
            long.as_str(),
            no_prefix,
        ] {
            assert_eq!(ApiKeyToken::parse(bad), Err(MalformedKey), "{bad}");
        }
    }

    #[test]
    fn stored_hash_never_contains_the_secret() {
        let token = ApiKeyToken::generate(&mut OsRng);
        let stored = hasher().hash(&token);
        let stored_hex = hex::encode(stored.0);
        assert!(!stored_hex.contains(&token.secret.0));
        assert!(!token.secret.0.contains(&stored_hex));
        let secret_bytes = hex::decode(&token.secret.0).unwrap();
        assert!(!stored
            .0
            .windows(8)
            .any(|w| secret_bytes.windows(8).any(|s| s == w)));
    }

    #[test]
    fn verify_accepts_only_the_right_secret_under_the_right_server_secret() {
        let hasher = hasher();
        let token = ApiKeyToken::generate(&mut OsRng);
        let stored = hasher.hash(&token);
        assert!(hasher.verify(&token, &stored));

        let other = ApiKeyToken::generate(&mut OsRng);
        let wrong_secret = ApiKeyToken {
            id: token.id.clone(),
            secret: other.secret.clone(),
        };
        assert!(!hasher.verify(&wrong_secret, &stored));

        let moved = ApiKeyToken {
            id: other.id.clone(),
            secret: token.secret.clone(),
        };
        assert!(
            !hasher.verify(&moved, &stored),
            "hash is bound to its key id"
        );

        assert!(
            !self::hasher().verify(&token, &stored),
            "another server secret"
        );
    }

    #[test]
    fn debug_output_redacts_secrets() {
        let token = ApiKeyToken::generate(&mut OsRng);
        let debug = format!("{token:?}");
        assert!(!debug.contains(&token.secret.0));
        let server = ServerSecret::generate(&mut OsRng);
        assert!(!format!("{server:?}").contains(&server.to_hex()));
    }

    #[test]
    fn server_secret_hex_round_trips_and_rejects_bad_lengths() {
        let secret = ServerSecret::generate(&mut OsRng);
        assert_eq!(
            ServerSecret::from_hex(&secret.to_hex()).unwrap().0,
            secret.0
        );
        assert!(ServerSecret::from_hex("abcd").is_err());
        assert!(ServerSecret::from_hex(&"z".repeat(64)).is_err());
    }
}
