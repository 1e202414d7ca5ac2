//! The tenant context upstreams receive: a compact JWS (RFC 7515) signed
//! with Ed25519 (`alg: EdDSA`, RFC 8037), whose claims say which tenant, key,
//! role and plan made the request, and until when the statement holds.
//! The public keys are published as a JWKS at `/.well-known/jwks.json`.
//!
//! Rotation keeps upstreams verifying throughout: a new key is published
//! `publish_ahead` before it signs (longer than upstreams cache the JWKS),
//! and the key it replaces stays published until every context it signed
//! has expired.

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use axum::http::HeaderValue;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ed25519_dalek::{Signer, SigningKey};
use rand::RngCore;
use serde::Serialize;
use serde_json::{json, Value};
use tenantd_api::SigningKeyView;
use tenantd_core::{KeyId, PlanId, Role, ServiceName, TenantId};
use tenantd_store::signing_keys::StoredSigningKey;
use tenantd_store::AuditAction;
use tenantd_store::{Catalog, NewAuditEntry, StoreError};
use time::OffsetDateTime;

use crate::config::ContextConfig;

/// How far upstream clocks may run behind ours: a replaced key stays
/// published this much longer than the last context it signed is valid.
const CLOCK_SKEW: Duration = Duration::from_secs(60);

/// The claims of one context.
#[derive(Debug, Serialize)]
pub struct ContextClaims<'a> {
    pub iss: &'a str,
    /// The service the context is for: an upstream rejects contexts meant
    /// for another service.
    pub aud: &'a ServiceName,
    pub sub: &'a TenantId,
    pub tenant: &'a TenantId,
    pub key_id: &'a KeyId,
    pub role: Role,
    pub plan: &'a PlanId,
    /// Only in a context signed for one request (`per_request`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<&'a str>,
    pub iat: i64,
    pub exp: i64,
}

/// Whom a context speaks for, and to which service.
#[derive(Debug, Clone, Copy)]
pub struct ContextSubject<'a> {
    pub service: &'a ServiceName,
    pub tenant: &'a TenantId,
    pub key_id: &'a KeyId,
    pub role: Role,
    pub plan: &'a PlanId,
}

/// A context signed for a key and a service, reused until `refresh_at`.
#[derive(Debug)]
struct SignedContext {
    /// The signing key's id: a context is not reused once another key signs.
    kid: String,
    tenant: TenantId,
    role: Role,
    plan: PlanId,
    token: HeaderValue,
    refresh_at: OffsetDateTime,
}

/// Contexts kept for reuse: at most this many (key, service) pairs.
const CONTEXTS_KEPT: usize = 100_000;

struct LiveKey {
    stored: StoredSigningKey,
    signing: SigningKey,
    /// The JWS header, base64url-encoded: the same for everything it signs.
    header: String,
}

impl std::fmt::Debug for LiveKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.stored.fmt(f)
    }
}

/// The published keys, in memory for signing without a database read,
/// and the contexts they signed that are reused.
#[derive(Debug)]
pub struct Keyring {
    keys: ArcSwap<Vec<LiveKey>>,
    config: ContextConfig,
    contexts: quick_cache::sync::Cache<ContextKey, Arc<SignedContext>>,
}

/// What a reused context is kept under: the key it was signed for and the
/// service it is meant for.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ContextKey {
    key_id: KeyId,
    service: ServiceName,
}

/// A `ContextKey` borrowed from the request, so that a lookup copies nothing.
struct ContextKeyRef<'a> {
    key_id: &'a str,
    service: &'a str,
}

// Both forms hash the same two strings, so a borrowed key finds an owned one.
impl std::hash::Hash for ContextKey {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        (self.key_id.as_str(), self.service.as_str()).hash(state);
    }
}

impl std::hash::Hash for ContextKeyRef<'_> {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        (self.key_id, self.service).hash(state);
    }
}

impl quick_cache::Equivalent<ContextKey> for ContextKeyRef<'_> {
    fn equivalent(&self, key: &ContextKey) -> bool {
        self.key_id == key.key_id.as_str() && self.service == key.service.as_str()
    }
}

impl Keyring {
    /// Loads the published keys, creating the first one on a new catalog.
    pub async fn load(
        catalog: &Catalog,
        config: &ContextConfig,
        now: OffsetDateTime,
    ) -> Result<Self, StoreError> {
        let keyring = Self {
            keys: ArcSwap::default(),
            config: config.clone(),
            contexts: quick_cache::sync::Cache::new(CONTEXTS_KEPT),
        };
        keyring.reload(catalog, now).await?;
        if keyring.keys.load().is_empty() {
            let audit = system_audit(AuditAction::SigningKeyCreate, now);
            keyring.add_key(catalog, now, now, audit).await?;
        }
        Ok(keyring)
    }

    /// Reads the published keys again (after a rotation, or as time passes).
    pub async fn reload(&self, catalog: &Catalog, now: OffsetDateTime) -> Result<(), StoreError> {
        let keys = catalog
            .published_signing_keys(now)
            .await?
            .into_iter()
            .map(|stored| LiveKey {
                signing: SigningKey::from_bytes(&stored.seed),
                header: URL_SAFE_NO_PAD
                    .encode(json!({ "alg": "EdDSA", "typ": "JWT", "kid": stored.kid }).to_string()),
                stored,
            })
            .collect();
        self.keys.store(Arc::new(keys));
        Ok(())
    }

    /// Adds a new key that signs from `publish_ahead` on; the keys before
    /// it retire once what they signed until then has expired.
    pub async fn rotate(
        &self,
        catalog: &Catalog,
        now: OffsetDateTime,
        audit: NewAuditEntry,
    ) -> Result<SigningKeyView, StoreError> {
        let signs_from = now + self.config.publish_ahead;
        self.add_key(catalog, now, signs_from, audit).await
    }

    /// Rotates if the newest key is older than `rotate_every`, and forgets
    /// retired keys. Run periodically; returns whether it rotated.
    pub async fn maintain(
        &self,
        catalog: &Catalog,
        now: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        catalog.delete_retired_signing_keys(now).await?;
        self.reload(catalog, now).await?;
        let newest = self.keys.load().iter().map(|k| k.stored.created_at).max();
        let due = newest.is_none_or(|created| now >= created + self.config.rotate_every);
        if due {
            self.rotate(
                catalog,
                now,
                system_audit(AuditAction::SigningKeyRotate, now),
            )
            .await?;
        }
        Ok(due)
    }

    async fn add_key(
        &self,
        catalog: &Catalog,
        now: OffsetDateTime,
        signs_from: OffsetDateTime,
        mut audit: NewAuditEntry,
    ) -> Result<SigningKeyView, StoreError> {
        let mut seed = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut seed);
        let mut kid = [0u8; 8];
        rand::rngs::OsRng.fill_bytes(&mut kid);
        let stored = StoredSigningKey {
            kid: hex::encode(kid),
            seed,
            created_at: now,
            signs_from,
            retires_at: None,
        };
        let retire_others_at = signs_from + self.config.ttl + CLOCK_SKEW;
        audit.target = stored.kid.clone();
        audit.details = json!({
            "signs_from": signs_from.unix_timestamp(),
            "others_retire_at": retire_others_at.unix_timestamp(),
        });
        catalog
            .add_signing_key(&stored, retire_others_at, &audit)
            .await?;
        self.reload(catalog, now).await?;
        Ok(self
            .views(now)
            .into_iter()
            .find(|v| v.kid == stored.kid)
            .unwrap_or_else(|| view(&stored, false)))
    }

    /// The context for a request of `subject`: signed for this request
    /// (with its id) when `per_request` is set; otherwise the one signed
    /// for its key and service, reused until half its `ttl` has passed, its
    /// subject's role or plan changed, or another key signs.
    pub fn context(
        &self,
        subject: &ContextSubject<'_>,
        request_id: &str,
        now: OffsetDateTime,
    ) -> Option<HeaderValue> {
        let keys = self.keys.load();
        let key = current(&keys, now)?;
        if self.config.per_request {
            return sign(key, &self.claims(subject, Some(request_id), now));
        }
        let id = ContextKeyRef {
            key_id: subject.key_id.as_str(),
            service: subject.service.as_str(),
        };
        if let Some(kept) = self.contexts.get(&id) {
            if kept.kid == key.stored.kid
                && now < kept.refresh_at
                && kept.tenant == *subject.tenant
                && kept.role == subject.role
                && kept.plan == *subject.plan
            {
                return Some(kept.token.clone());
            }
        }
        let token = sign(key, &self.claims(subject, None, now))?;
        let refresh_after = self.config.ttl / 2;
        self.contexts.insert(
            ContextKey {
                key_id: subject.key_id.clone(),
                service: subject.service.clone(),
            },
            Arc::new(SignedContext {
                kid: key.stored.kid.clone(),
                tenant: subject.tenant.clone(),
                role: subject.role,
                plan: subject.plan.clone(),
                token: token.clone(),
                refresh_at: now + refresh_after,
            }),
        );
        Some(token)
    }

    fn claims<'a>(
        &'a self,
        subject: &ContextSubject<'a>,
        request_id: Option<&'a str>,
        now: OffsetDateTime,
    ) -> ContextClaims<'a> {
        ContextClaims {
            iss: &self.config.issuer,
            aud: subject.service,
            sub: subject.tenant,
            tenant: subject.tenant,
            key_id: subject.key_id,
            role: subject.role,
            plan: subject.plan,
            request_id,
            iat: now.unix_timestamp(),
            exp: (now + self.config.ttl).unix_timestamp(),
        }
    }

    /// The published public keys, as a JWK set (RFC 7517, OKP keys of RFC 8037).
    pub fn jwks(&self, now: OffsetDateTime) -> Value {
        let keys: Vec<Value> = self
            .keys
            .load()
            .iter()
            .filter(|k| k.stored.retires_at.is_none_or(|r| r > now))
            .map(|k| {
                json!({
                    "kty": "OKP",
                    "crv": "Ed25519",
                    "x": URL_SAFE_NO_PAD.encode(k.signing.verifying_key().as_bytes()),
                    "kid": k.stored.kid,
                    "use": "sig",
                    "alg": "EdDSA",
                })
            })
            .collect();
        json!({ "keys": keys })
    }

    /// The published keys, oldest first, and which one signs now.
    pub fn views(&self, now: OffsetDateTime) -> Vec<SigningKeyView> {
        let keys = self.keys.load();
        let signing = current(&keys, now).map(|k| k.stored.kid.clone());
        keys.iter()
            .map(|k| view(&k.stored, signing.as_deref() == Some(k.stored.kid.as_str())))
            .collect()
    }

    pub fn config(&self) -> &ContextConfig {
        &self.config
    }
}

/// `claims` signed by `key` as a compact JWS.
fn sign(key: &LiveKey, claims: &ContextClaims<'_>) -> Option<HeaderValue> {
    let claims = serde_json::to_vec(claims).ok()?;
    let mut token = String::with_capacity(key.header.len() + claims.len() * 4 / 3 + 100);
    token.push_str(&key.header);
    token.push('.');
    URL_SAFE_NO_PAD.encode_string(claims, &mut token);
    let signature = key.signing.sign(token.as_bytes());
    token.push('.');
    URL_SAFE_NO_PAD.encode_string(signature.to_bytes(), &mut token);
    HeaderValue::try_from(token).ok()
}

fn current(keys: &[LiveKey], now: OffsetDateTime) -> Option<&LiveKey> {
    keys.iter()
        .filter(|k| k.stored.signs_from <= now && k.stored.retires_at.is_none_or(|r| r > now))
        .max_by_key(|k| (k.stored.signs_from, k.stored.created_at))
}

fn view(stored: &StoredSigningKey, signing: bool) -> SigningKeyView {
    SigningKeyView {
        kid: stored.kid.clone(),
        created_at: stored.created_at,
        signs_from: stored.signs_from,
        retires_at: stored.retires_at,
        signing,
    }
}

/// An audit entry for a key change the server makes by itself.
fn system_audit(action: AuditAction, now: OffsetDateTime) -> NewAuditEntry {
    NewAuditEntry {
        tenant: None,
        at: now,
        actor: None,
        action,
        target: String::new(),
        details: Value::Null,
        request_id: None,
        before: None,
        after: None,
    }
}
