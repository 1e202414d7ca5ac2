//! People who sign in (to the console, issue 19): the email they sign in
//! with, the password they type, its argon2id hash, and how often a sign-in
//! may be tried. Keys remain how programs call the API.
//!
//! Invariant: a sign-in costs the same whether or not its account exists
//! (`PasswordHash::verify_nobody` does a real verification against a fixed
//! hash), and it is throttled by the name typed, not by an account found, so
//! neither the answer nor its timing says whether an email has an account.

use std::time::Duration;

use argon2::password_hash::{PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use rand::{CryptoRng, RngCore};

use crate::gcra::{decide, Decision, Limit};

/// An email address as a sign-in name: trimmed and lower-cased, one `@`
/// between a local part (1 to 64 characters) and a domain with a dot inside
/// (1 to 189), 254 characters at most, no white space or control
/// characters. It says nothing of whether mail reaches it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Email(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EmailError {
    #[error("an email address has at most 254 characters")]
    TooLong,
    #[error("an email address has no spaces or control characters")]
    BadCharacter,
    #[error("an email address is a name, an @ and a domain such as example.com")]
    Shape,
}

impl Email {
    pub fn parse(text: &str) -> Result<Self, EmailError> {
        let text = text.trim().to_lowercase();
        if text.chars().count() > 254 {
            return Err(EmailError::TooLong);
        }
        if text.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(EmailError::BadCharacter);
        }
        let Some((local, domain)) = text.split_once('@') else {
            return Err(EmailError::Shape);
        };
        let domain_ok = domain.len() <= 189
            && !domain.contains('@')
            && domain.split('.').count() >= 2
            && domain.split('.').all(|label| !label.is_empty());
        if local.is_empty() || local.chars().count() > 64 || !domain_ok {
            return Err(EmailError::Shape);
        }
        Ok(Self(text))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for Email {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A password as typed: 12 to 256 characters. NIST SP 800-63B asks for at
/// least 8 and for long passphrases to be accepted; 12 is OWASP's advice
/// for passwords without a second factor. The upper bound keeps what is
/// hashed small. Shown nowhere: `Debug` prints a placeholder.
#[derive(Clone, PartialEq, Eq)]
pub struct Password(String);

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PasswordError {
    #[error("a password has at least 12 characters")]
    TooShort,
    #[error("a password has at most 256 characters")]
    TooLong,
}

impl Password {
    pub const MIN_CHARS: usize = 12;
    pub const MAX_CHARS: usize = 256;

    pub fn parse(text: &str) -> Result<Self, PasswordError> {
        match text.chars().count() {
            n if n < Self::MIN_CHARS => Err(PasswordError::TooShort),
            n if n > Self::MAX_CHARS => Err(PasswordError::TooLong),
            _ => Ok(Self(text.to_owned())),
        }
    }

    fn bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Password(…)")
    }
}

/// A password's argon2id hash in PHC string form
/// (`$argon2id$v=19$m=19456,t=2,p=1$salt$hash`), as stored. Made with
/// OWASP's parameters for argon2id (19 MiB of memory, 2 passes, 1 lane);
/// a hash made with others still verifies, and says it wants remaking.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PasswordHash(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not an argon2id hash in PHC form: {0}")]
pub struct PasswordHashError(String);

/// OWASP's minimum for argon2id: m = 19 MiB, t = 2, p = 1.
const MEMORY_KIB: u32 = 19 * 1024;
const PASSES: u32 = 2;
const LANES: u32 = 1;

fn argon2id() -> Argon2<'static> {
    let params =
        Params::new(MEMORY_KIB, PASSES, LANES, None).expect("OWASP's parameters are valid");
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

impl PasswordHash {
    /// Hashes `password` with a fresh 16-byte salt from `rng`.
    pub fn new(password: &Password, rng: &mut (impl RngCore + CryptoRng)) -> Self {
        let mut salt = [0u8; 16];
        rng.fill_bytes(&mut salt);
        let salt = SaltString::encode_b64(&salt).expect("16 bytes make a valid salt");
        let hash = argon2id()
            .hash_password(password.bytes(), &salt)
            .expect("hashing a bounded password with valid parameters cannot fail");
        Self(hash.to_string())
    }

    /// A stored hash, checked to be argon2id in PHC form.
    pub fn parse(phc: &str) -> Result<Self, PasswordHashError> {
        let parsed = argon2::password_hash::PasswordHash::new(phc)
            .map_err(|e| PasswordHashError(e.to_string()))?;
        if parsed.algorithm != Algorithm::Argon2id.ident() {
            return Err(PasswordHashError(format!("algorithm {}", parsed.algorithm)));
        }
        Ok(Self(phc.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether `password` is the one hashed (in constant time, with the
    /// parameters the hash names).
    pub fn verify(&self, password: &Password) -> bool {
        let Ok(parsed) = argon2::password_hash::PasswordHash::new(&self.0) else {
            return false;
        };
        argon2id()
            .verify_password(password.bytes(), &parsed)
            .is_ok()
    }

    /// Verifies `password` against a fixed hash of no password (its 32
    /// bytes were drawn at random, so no password is known to match), with
    /// today's parameters: a sign-in for an unknown account costs what a
    /// wrong password costs.
    pub fn verify_nobody(password: &Password) -> bool {
        const NOBODY: &str = "$argon2id$v=19$m=19456,t=2,p=1$bm9ib2R5LXNhbHQtMTY$\
                              NBAHEnWeWK4UNyPS1okldd0l6O6eAoBoTv7Tc7hBtbM";
        let parsed =
            argon2::password_hash::PasswordHash::new(NOBODY).expect("the fixed hash is valid PHC");
        argon2id()
            .verify_password(password.bytes(), &parsed)
            .is_ok()
    }

    /// Whether the hash was made with other parameters than today's, so
    /// that the next successful sign-in should store a new one.
    pub fn needs_rehash(&self) -> bool {
        let Ok(parsed) = argon2::password_hash::PasswordHash::new(&self.0) else {
            return true;
        };
        let Ok(params) = Params::try_from(&parsed) else {
            return true;
        };
        (params.m_cost(), params.t_cost(), params.p_cost()) != (MEMORY_KIB, PASSES, LANES)
    }
}

/// How often sign-ins may fail: per account (the email typed, whether or
/// not it has an account) and per client address, each a GCRA limit. Only
/// failures are charged; a sign-in is refused, without checking its
/// password, while either limit is spent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SignInThrottle {
    per_account: Limit,
    per_address: Limit,
}

/// The throttle's state for one sign-in: the stored TATs (microseconds) of
/// its account and its address, `None` when either has no failures kept.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Failures {
    pub account: Option<u64>,
    pub address: Option<u64>,
}

/// Whether a sign-in may be tried now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    /// Try it; if the password is wrong, store `if_failed`.
    Open { if_failed: Failures },
    /// Refuse it (429) without checking the password.
    Closed { retry_after: Duration },
}

impl SignInThrottle {
    pub fn new(per_account: Limit, per_address: Limit) -> Self {
        Self {
            per_account,
            per_address,
        }
    }

    /// Five failures at once for an account, then one a minute; twenty at
    /// once from an address, then one every six seconds.
    pub fn standard() -> Self {
        let limit = |per_minute, burst| {
            Limit::new(per_minute, Duration::from_secs(60), burst).expect("a valid limit")
        };
        Self::new(limit(1, 5), limit(10, 20))
    }

    /// Decides a sign-in at `now` (microseconds) given its `failures`.
    pub fn gate(&self, failures: &Failures, now: u64) -> Gate {
        let account = decide(&self.per_account, failures.account, now, 1);
        let address = decide(&self.per_address, failures.address, now, 1);
        match (account, address) {
            (Decision::Allowed { tat: account, .. }, Decision::Allowed { tat: address, .. }) => {
                Gate::Open {
                    if_failed: Failures {
                        account: Some(account),
                        address: Some(address),
                    },
                }
            }
            (account, address) => {
                let wait = |d: Decision| match d {
                    Decision::Denied { retry_after, .. } => retry_after,
                    Decision::Allowed { .. } => Duration::ZERO,
                };
                Gate::Closed {
                    retry_after: wait(account).max(wait(address)),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_are_trimmed_lower_cased_and_shaped_like_addresses() {
        assert_eq!(
            Email::parse("  Ada@Example.COM ").unwrap().as_str(),
            "ada@example.com"
        );
        assert_eq!(
            Email::parse("ada.lovelace+console@mail.example.org")
                .unwrap()
                .as_str(),
            "ada.lovelace+console@mail.example.org"
        );
        for bad in [
            "",
            "ada",
            "@example.com",
            "ada@",
            "ada@example",
            "ada@@example.com",
        ] {
            assert_eq!(Email::parse(bad), Err(EmailError::Shape), "{bad:?}");
        }
        for bad in ["a da@example.com", "ada@exa\u{0}mple.com"] {
            assert_eq!(Email::parse(bad), Err(EmailError::BadCharacter), "{bad:?}");
        }
        assert_eq!(
            Email::parse(&format!("{}@example.com", "a".repeat(65))),
            Err(EmailError::Shape)
        );
        assert_eq!(
            Email::parse(&format!("ada@{}.com", "d".repeat(250))),
            Err(EmailError::TooLong)
        );
        assert_eq!(Email::parse("ada@.example.com"), Err(EmailError::Shape));
    }

    #[test]
    fn passwords_have_12_to_256_characters_and_never_show() {
        assert_eq!(Password::parse("short pass"), Err(PasswordError::TooShort));
        // Characters, not bytes: twelve two-byte letters make a password.
        assert!(Password::parse(&"é".repeat(12)).is_ok());
        assert!(Password::parse(&"x".repeat(256)).is_ok());
        assert_eq!(
            Password::parse(&"x".repeat(257)),
            Err(PasswordError::TooLong)
        );
        let password = Password::parse("correct horse battery").unwrap();
        assert_eq!(format!("{password:?}"), "Password(…)");
    }

    #[test]
    fn a_hash_verifies_its_password_only_and_carries_owasps_parameters() {
        let mut rng = rand::rngs::OsRng;
        let password = Password::parse("correct horse battery").unwrap();
        let hash = PasswordHash::new(&password, &mut rng);
        assert!(
            hash.as_str().starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
            "{hash:?}"
        );
        assert!(hash.verify(&password));
        assert!(!hash.verify(&Password::parse("correct horse battery!").unwrap()));
        assert!(!hash.needs_rehash());
        // A fresh salt each time: the same password hashes differently.
        assert_ne!(PasswordHash::new(&password, &mut rng), hash);
        // What is stored reads back, and only argon2id is taken.
        assert_eq!(PasswordHash::parse(hash.as_str()).unwrap(), hash);
        let argon2i = hash.as_str().replacen("argon2id", "argon2i", 1);
        assert!(PasswordHash::parse(&argon2i).is_err());
        assert!(PasswordHash::parse("plain text").is_err());
    }

    #[test]
    fn a_hash_made_with_weaker_parameters_verifies_and_asks_to_be_remade() {
        let password = Password::parse("correct horse battery").unwrap();
        let weak = Argon2::new(
            Algorithm::Argon2id,
            Version::V0x13,
            Params::new(8 * 1024, 1, 1, None).unwrap(),
        );
        let salt = SaltString::encode_b64(b"sixteen byte slt").unwrap();
        let phc = weak
            .hash_password(password.bytes(), &salt)
            .unwrap()
            .to_string();
        let hash = PasswordHash::parse(&phc).unwrap();
        assert!(hash.verify(&password));
        assert!(hash.needs_rehash());
    }

    #[test]
    fn nobody_has_the_fixed_hash_and_checking_it_is_a_real_verification() {
        for typed in ["correct horse battery", "nobody-salt-16", "            "] {
            assert!(!PasswordHash::verify_nobody(
                &Password::parse(typed).unwrap()
            ));
        }
        // The fixed hash has today's parameters, so it costs what a real one costs.
        assert!(!PasswordHash::parse("$argon2id$v=19$m=19456,t=2,p=1$bm9ib2R5LXNhbHQtMTY$NBAHEnWeWK4UNyPS1okldd0l6O6eAoBoTv7Tc7hBtbM").unwrap().needs_rehash());
    }

    const SECOND: u64 = 1_000_000;

    /// Fails sign-ins at `now` until the gate closes; how many it let try.
    fn fail_until_closed(throttle: &SignInThrottle, failures: &mut Failures, now: u64) -> u32 {
        let mut tried = 0;
        while let Gate::Open { if_failed } = throttle.gate(failures, now) {
            *failures = if_failed;
            tried += 1;
        }
        tried
    }

    #[test]
    fn an_account_may_fail_five_times_then_once_a_minute() {
        let throttle = SignInThrottle::standard();
        let mut failures = Failures::default();
        let t0 = 1_000 * SECOND;
        assert_eq!(fail_until_closed(&throttle, &mut failures, t0), 5);
        assert_eq!(
            throttle.gate(&failures, t0),
            Gate::Closed {
                retry_after: Duration::from_secs(60)
            }
        );
        // Half a minute on, still closed, and says how long is left.
        assert_eq!(
            throttle.gate(&failures, t0 + 30 * SECOND),
            Gate::Closed {
                retry_after: Duration::from_secs(30)
            }
        );
        // A minute on, one more try.
        assert_eq!(
            fail_until_closed(&throttle, &mut failures, t0 + 60 * SECOND),
            1
        );
        // Left alone for five minutes, the account has its five tries again.
        assert_eq!(
            fail_until_closed(&throttle, &mut failures, t0 + 360 * SECOND),
            5
        );
    }

    #[test]
    fn an_address_trying_many_accounts_is_held_after_twenty_failures() {
        let throttle = SignInThrottle::standard();
        let now = 1_000 * SECOND;
        let mut address = None;
        let mut tried = 0;
        // Each account fresh, so only the address's limit can close the gate.
        while let Gate::Open { if_failed } = throttle.gate(
            &Failures {
                account: None,
                address,
            },
            now,
        ) {
            address = if_failed.address;
            tried += 1;
        }
        assert_eq!(tried, 20);
        let closed = throttle.gate(
            &Failures {
                account: None,
                address,
            },
            now,
        );
        assert_eq!(
            closed,
            Gate::Closed {
                retry_after: Duration::from_secs(6)
            }
        );
    }

    #[test]
    fn the_longer_wait_of_the_two_limits_is_the_one_told() {
        let throttle = SignInThrottle::standard();
        let now = 1_000 * SECOND;
        let mut failures = Failures::default();
        fail_until_closed(&throttle, &mut failures, now);
        // The account waits a minute; the address, fresh, not at all.
        let fresh_address = Failures {
            address: None,
            ..failures
        };
        assert_eq!(
            throttle.gate(&fresh_address, now),
            Gate::Closed {
                retry_after: Duration::from_secs(60)
            }
        );
    }
}
