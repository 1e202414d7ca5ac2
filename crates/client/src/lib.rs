//! Rust SDK for tenantd's HTTP API.
//!
//! ```no_run
//! # async fn demo() -> Result<(), tenantd_client::Error> {
//! use tenantd_client::{Client, KeysOf};
//! use tenantd_client::api::{CreateKey, CreateTenant};
//! use tenantd_client::core::{Role, TenantId};
//!
//! let operator = Client::new("http://127.0.0.1:8080", "tk_…")?;
//! let acme = TenantId::parse("acme").expect("a valid slug");
//! operator
//!     .create_tenant(&CreateTenant::new(acme.clone(), "Acme"))
//!     .await?;
//! let admin = operator
//!     .create_key(KeysOf::Tenant(&acme), &CreateKey { role: Role::Admin, name: "admin".into(), expires_at: None })
//!     .await?;
//! let me = operator.with_key(&admin.token).me().await?;
//! assert_eq!(me.tenant.map(|t| t.id), Some(acme));
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]

use reqwest::{Method, RequestBuilder, Response, StatusCode};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;
use tenantd_api::{
    AddOnPage, AddOnView, AuditPage, AuditVerification, BatchRequest, BatchResponse, ClusterView,
    Collection, CollectionPage, CreateAddOn, CreateCollection, CreateKey, CreateTenant, CreatedKey,
    DecidePolicy, Health, JobPage, JobView, KeyPage, KeyView, Me, MoveTenant, PlanPage, PlanView,
    PolicyVersionPage, PolicyVersionView, PolicyView, Problem, ProposePolicy, QuotaEventPage,
    Readiness, RecordPage, RecordView, RotateKey, RotatedKey, SigningKeyView, TenantPage,
    UpdateTenant, UsageHistory, UsageView, WritePlan,
};
use tenantd_core::{
    CollectionName, JobId, KeyId, PlanId, RecordId, ServiceName, Tenant, TenantId, TenantStatus,
};

pub use tenantd_api as api;
pub use tenantd_core as core;

/// What a call can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The server answered with a problem document.
    #[error("{} {}: {}", .0.status, .0.code, .0.detail.as_deref().unwrap_or(&.0.title))]
    Api(Box<Problem>),
    /// The server answered with an error that is not a problem document
    /// (for example a proxy in between).
    #[error("unexpected {status} response: {body}")]
    Unexpected { status: StatusCode, body: String },
    /// The request could not be sent or the response not read or decoded.
    #[error(transparent)]
    Http(#[from] reqwest::Error),
}

impl Error {
    /// The stable error code, when the server sent one.
    pub fn code(&self) -> Option<&str> {
        match self {
            Error::Api(problem) => Some(&problem.code),
            _ => None,
        }
    }
}

/// Whose keys or audit trail a call concerns.
#[derive(Debug, Clone, Copy)]
pub enum KeysOf<'a> {
    Platform,
    Tenant(&'a TenantId),
}

impl KeysOf<'_> {
    fn base(&self) -> String {
        match self {
            KeysOf::Platform => "/v1/platform".to_owned(),
            KeysOf::Tenant(id) => format!("/v1/tenants/{id}"),
        }
    }
}

/// A page request: the cursor from the previous page and a page size.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PageRequest {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
}

/// A record list request.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RecordQuery {
    /// A filter expression, e.g. `status = "paid" and total >= 100`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub filter: Option<String>,
    /// An indexed field, or `-field` for descending.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sort: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
}

#[derive(Debug, Serialize)]
struct JobQuery<'a> {
    #[serde(flatten)]
    page: &'a PageRequest,
    #[serde(skip_serializing_if = "Option::is_none")]
    tenant: Option<&'a TenantId>,
    #[serde(skip_serializing_if = "Option::is_none")]
    state: Option<&'a str>,
}

#[derive(Debug, Serialize)]
struct TenantQuery<'a> {
    #[serde(flatten)]
    page: &'a PageRequest,
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<TenantStatus>,
}

/// A client bound to one server and, optionally, one API key.
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    key: Option<String>,
}

impl Client {
    /// A client for the server at `base_url` (e.g. `http://127.0.0.1:8080`)
    /// presenting `key` on every call.
    pub fn new(base_url: &str, key: &str) -> Result<Self, Error> {
        Ok(Self {
            http: reqwest::Client::builder().build()?,
            base: base_url.trim_end_matches('/').to_owned(),
            key: Some(key.to_owned()),
        })
    }

    /// A client that presents no key, for the public routes.
    pub fn anonymous(base_url: &str) -> Result<Self, Error> {
        Ok(Self {
            key: None,
            ..Self::new(base_url, "")?
        })
    }

    /// The same server and connection pool, with another key.
    pub fn with_key(&self, key: &str) -> Self {
        Self {
            key: Some(key.to_owned()),
            ..self.clone()
        }
    }

    fn request(&self, method: Method, path: &str) -> RequestBuilder {
        let builder = self.http.request(method, format!("{}{path}", self.base));
        match &self.key {
            Some(key) => builder.bearer_auth(key),
            None => builder,
        }
    }

    async fn check(response: Response) -> Result<Response, Error> {
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let body = response.text().await?;
        match serde_json::from_str::<Problem>(&body) {
            Ok(problem) => Err(Error::Api(Box::new(problem))),
            Err(_) => Err(Error::Unexpected { status, body }),
        }
    }

    async fn send<T: DeserializeOwned>(builder: RequestBuilder) -> Result<T, Error> {
        Ok(Self::check(builder.send().await?).await?.json().await?)
    }

    pub async fn health(&self) -> Result<Health, Error> {
        Self::send(self.request(Method::GET, "/healthz")).await
    }

    /// Readiness and each dependency's state. A node that is not ready
    /// answers 503 with the same body, so both come back here.
    pub async fn ready(&self) -> Result<Readiness, Error> {
        let response = self.request(Method::GET, "/readyz").send().await?;
        Ok(response.json().await?)
    }

    /// Who the key belongs to.
    pub async fn me(&self) -> Result<Me, Error> {
        Self::send(self.request(Method::GET, "/v1/me")).await
    }

    /// The nodes serving the catalog and who holds each lease (operators).
    pub async fn cluster(&self) -> Result<ClusterView, Error> {
        Self::send(self.request(Method::GET, "/v1/cluster")).await
    }

    pub async fn create_tenant(&self, tenant: &CreateTenant) -> Result<Tenant, Error> {
        Self::send(self.request(Method::POST, "/v1/tenants").json(tenant)).await
    }

    pub async fn tenant(&self, id: &TenantId) -> Result<Tenant, Error> {
        Self::send(self.request(Method::GET, &format!("/v1/tenants/{id}"))).await
    }

    pub async fn list_tenants(
        &self,
        page: &PageRequest,
        status: Option<TenantStatus>,
    ) -> Result<TenantPage, Error> {
        let query = TenantQuery { page, status };
        Self::send(self.request(Method::GET, "/v1/tenants").query(&query)).await
    }

    pub async fn update_tenant(
        &self,
        id: &TenantId,
        update: &UpdateTenant,
    ) -> Result<Tenant, Error> {
        Self::send(
            self.request(Method::PATCH, &format!("/v1/tenants/{id}"))
                .json(update),
        )
        .await
    }

    pub async fn suspend_tenant(&self, id: &TenantId) -> Result<Tenant, Error> {
        Self::send(self.request(Method::POST, &format!("/v1/tenants/{id}/suspend"))).await
    }

    pub async fn resume_tenant(&self, id: &TenantId) -> Result<Tenant, Error> {
        Self::send(self.request(Method::POST, &format!("/v1/tenants/{id}/resume"))).await
    }

    /// Soft-deletes a tenant; it can be restored until it is purged.
    pub async fn delete_tenant(&self, id: &TenantId) -> Result<Tenant, Error> {
        Self::send(self.request(Method::DELETE, &format!("/v1/tenants/{id}"))).await
    }

    pub async fn restore_tenant(&self, id: &TenantId) -> Result<Tenant, Error> {
        Self::send(self.request(Method::POST, &format!("/v1/tenants/{id}/restore"))).await
    }

    /// Purges a soft-deleted tenant now.
    pub async fn purge_tenant(&self, id: &TenantId) -> Result<(), Error> {
        Self::check(
            self.request(Method::POST, &format!("/v1/tenants/{id}/purge"))
                .send()
                .await?,
        )
        .await?;
        Ok(())
    }

    /// Creates a key. The token in the answer is shown only this once.
    pub async fn create_key(
        &self,
        owner: KeysOf<'_>,
        key: &CreateKey,
    ) -> Result<CreatedKey, Error> {
        Self::send(
            self.request(Method::POST, &format!("{}/keys", owner.base()))
                .json(key),
        )
        .await
    }

    pub async fn list_keys(&self, owner: KeysOf<'_>, page: &PageRequest) -> Result<KeyPage, Error> {
        Self::send(
            self.request(Method::GET, &format!("{}/keys", owner.base()))
                .query(page),
        )
        .await
    }

    pub async fn key(&self, owner: KeysOf<'_>, id: &KeyId) -> Result<KeyView, Error> {
        Self::send(self.request(Method::GET, &format!("{}/keys/{id}", owner.base()))).await
    }

    pub async fn rotate_key(
        &self,
        owner: KeysOf<'_>,
        id: &KeyId,
        rotate: &RotateKey,
    ) -> Result<RotatedKey, Error> {
        let path = format!("{}/keys/{id}/rotate", owner.base());
        Self::send(self.request(Method::POST, &path).json(rotate)).await
    }

    pub async fn revoke_key(&self, owner: KeysOf<'_>, id: &KeyId) -> Result<KeyView, Error> {
        Self::send(self.request(Method::POST, &format!("{}/keys/{id}/revoke", owner.base()))).await
    }

    pub async fn audit(&self, owner: KeysOf<'_>, page: &PageRequest) -> Result<AuditPage, Error> {
        Self::send(
            self.request(Method::GET, &format!("{}/audit", owner.base()))
                .query(page),
        )
        .await
    }

    /// A tenant's policy in effect.
    pub async fn policy(&self, tenant: &TenantId) -> Result<PolicyView, Error> {
        Self::send(self.request(Method::GET, &format!("/v1/tenants/{tenant}/policy"))).await
    }

    /// A tenant's policy versions, newest first.
    pub async fn policy_versions(
        &self,
        tenant: &TenantId,
        page: &PageRequest,
    ) -> Result<PolicyVersionPage, Error> {
        Self::send(
            self.request(
                Method::GET,
                &format!("/v1/tenants/{tenant}/policy/versions"),
            )
            .query(page),
        )
        .await
    }

    /// The proposals waiting for an operator, across every tenant, oldest
    /// first (operators).
    pub async fn waiting_proposals(&self, page: &PageRequest) -> Result<PolicyVersionPage, Error> {
        Self::send(self.request(Method::GET, "/v1/proposals").query(page)).await
    }

    /// New overrides for a tenant: applied at once, or proposed.
    pub async fn propose_policy(
        &self,
        tenant: &TenantId,
        proposal: &ProposePolicy,
    ) -> Result<PolicyVersionView, Error> {
        Self::send(
            self.request(
                Method::POST,
                &format!("/v1/tenants/{tenant}/policy/versions"),
            )
            .json(proposal),
        )
        .await
    }

    /// Acts on a policy version: `approve`, `reject`, `withdraw` or `revert`.
    pub async fn act_on_policy(
        &self,
        tenant: &TenantId,
        version: i64,
        action: PolicyAction,
        reason: &str,
    ) -> Result<PolicyVersionView, Error> {
        let path = format!(
            "/v1/tenants/{tenant}/policy/versions/{version}/{}",
            action.as_str()
        );
        Self::send(self.request(Method::POST, &path).json(&DecidePolicy {
            reason: reason.to_owned(),
        }))
        .await
    }

    /// Creates a plan (operators).
    pub async fn create_plan(&self, plan: &WritePlan) -> Result<PlanView, Error> {
        Self::send(self.request(Method::POST, "/v1/plans").json(plan)).await
    }

    /// Writes a plan's next version (operators).
    pub async fn update_plan(&self, id: &PlanId, plan: &WritePlan) -> Result<PlanView, Error> {
        Self::send(
            self.request(Method::PUT, &format!("/v1/plans/{id}"))
                .json(plan),
        )
        .await
    }

    /// Plans at their latest versions (operators).
    pub async fn plans(&self, page: &PageRequest) -> Result<PlanPage, Error> {
        Self::send(self.request(Method::GET, "/v1/plans").query(page)).await
    }

    /// A plan's versions, newest first (operators).
    pub async fn plan_versions(
        &self,
        plan: &PlanId,
        page: &PageRequest,
    ) -> Result<PlanPage, Error> {
        Self::send(
            self.request(Method::GET, &format!("/v1/plans/{plan}/versions"))
                .query(page),
        )
        .await
    }

    /// Verifies an audit chain: the platform's (all entries) or a tenant's.
    pub async fn verify_audit(&self, owner: KeysOf<'_>) -> Result<AuditVerification, Error> {
        Self::send(self.request(Method::GET, &format!("{}/audit/verify", owner.base()))).await
    }

    pub async fn create_collection(
        &self,
        collection: &CreateCollection,
    ) -> Result<Collection, Error> {
        Self::send(
            self.request(Method::POST, "/v1/collections")
                .json(collection),
        )
        .await
    }

    pub async fn collections(&self, page: &PageRequest) -> Result<CollectionPage, Error> {
        Self::send(self.request(Method::GET, "/v1/collections").query(page)).await
    }

    pub async fn collection(&self, name: &CollectionName) -> Result<Collection, Error> {
        Self::send(self.request(Method::GET, &format!("/v1/collections/{name}"))).await
    }

    /// Deletes a collection with all its records.
    pub async fn delete_collection(&self, name: &CollectionName) -> Result<(), Error> {
        let path = format!("/v1/collections/{name}");
        Self::check(self.request(Method::DELETE, &path).send().await?).await?;
        Ok(())
    }

    /// Creates a record with a server-assigned id.
    pub async fn create_record(
        &self,
        collection: &CollectionName,
        data: &Value,
    ) -> Result<RecordView, Error> {
        let path = format!("/v1/collections/{collection}/records");
        Self::send(self.request(Method::POST, &path).json(data)).await
    }

    pub async fn list_records(
        &self,
        collection: &CollectionName,
        query: &RecordQuery,
    ) -> Result<RecordPage, Error> {
        let path = format!("/v1/collections/{collection}/records");
        Self::send(self.request(Method::GET, &path).query(query)).await
    }

    pub async fn record(
        &self,
        collection: &CollectionName,
        id: &RecordId,
    ) -> Result<RecordView, Error> {
        Self::send(self.request(
            Method::GET,
            &format!("/v1/collections/{collection}/records/{id}"),
        ))
        .await
    }

    /// Creates or replaces a record; with `if_match`, only at that version.
    pub async fn put_record(
        &self,
        collection: &CollectionName,
        id: &RecordId,
        data: &Value,
        if_match: Option<i64>,
    ) -> Result<RecordView, Error> {
        let path = format!("/v1/collections/{collection}/records/{id}");
        Self::send(if_match_header(self.request(Method::PUT, &path), if_match).json(data)).await
    }

    /// Applies an RFC 7386 merge patch; with `if_match`, only at that version.
    pub async fn patch_record(
        &self,
        collection: &CollectionName,
        id: &RecordId,
        patch: &Value,
        if_match: Option<i64>,
    ) -> Result<RecordView, Error> {
        let path = format!("/v1/collections/{collection}/records/{id}");
        let request = if_match_header(self.request(Method::PATCH, &path), if_match)
            .header(
                reqwest::header::CONTENT_TYPE,
                "application/merge-patch+json",
            )
            .body(patch.to_string());
        Self::send(request).await
    }

    pub async fn delete_record(
        &self,
        collection: &CollectionName,
        id: &RecordId,
        if_match: Option<i64>,
    ) -> Result<(), Error> {
        let path = format!("/v1/collections/{collection}/records/{id}");
        Self::check(
            if_match_header(self.request(Method::DELETE, &path), if_match)
                .send()
                .await?,
        )
        .await?;
        Ok(())
    }

    /// Applies up to 1000 writes, all or none.
    pub async fn batch(
        &self,
        collection: &CollectionName,
        batch: &BatchRequest,
    ) -> Result<BatchResponse, Error> {
        let path = format!("/v1/collections/{collection}/batch");
        Self::send(self.request(Method::POST, &path).json(batch)).await
    }

    /// Starts moving a tenant's data; poll the returned job with `job`.
    pub async fn move_tenant(&self, id: &TenantId, to: &MoveTenant) -> Result<JobView, Error> {
        Self::send(
            self.request(Method::POST, &format!("/v1/tenants/{id}/move"))
                .json(to),
        )
        .await
    }

    /// Jobs, newest first: every tenant's or `tenant`'s, in any state or
    /// `state` (`running`, `succeeded`, `failed`).
    pub async fn jobs(
        &self,
        page: &PageRequest,
        tenant: Option<&TenantId>,
        state: Option<&str>,
    ) -> Result<JobPage, Error> {
        let query = JobQuery {
            page,
            tenant,
            state,
        };
        Self::send(self.request(Method::GET, "/v1/jobs").query(&query)).await
    }

    pub async fn job(&self, id: &JobId) -> Result<JobView, Error> {
        Self::send(self.request(Method::GET, &format!("/v1/jobs/{}", id.as_str()))).await
    }

    /// A tenant's usage against its quotas, now.
    pub async fn usage(&self, tenant: &TenantId) -> Result<UsageView, Error> {
        Self::send(self.request(Method::GET, &format!("/v1/tenants/{tenant}/usage"))).await
    }

    /// A tenant's metered usage per hour over the last `hours` (1 to 744;
    /// the server's 72 when `None`).
    pub async fn usage_history(
        &self,
        tenant: &TenantId,
        hours: Option<u32>,
    ) -> Result<UsageHistory, Error> {
        let request = self.request(Method::GET, &format!("/v1/tenants/{tenant}/usage/history"));
        let request = match hours {
            Some(hours) => request.query(&[("hours", hours)]),
            None => request,
        };
        Self::send(request).await
    }

    /// A tenant's quota events, newest first.
    pub async fn quota_events(
        &self,
        tenant: &TenantId,
        page: &PageRequest,
    ) -> Result<QuotaEventPage, Error> {
        Self::send(
            self.request(Method::GET, &format!("/v1/tenants/{tenant}/usage/events"))
                .query(page),
        )
        .await
    }

    /// Grants a tenant a temporary raise of one quota (operators).
    pub async fn create_add_on(
        &self,
        tenant: &TenantId,
        add_on: &CreateAddOn,
    ) -> Result<AddOnView, Error> {
        Self::send(
            self.request(Method::POST, &format!("/v1/tenants/{tenant}/addons"))
                .json(add_on),
        )
        .await
    }

    /// A tenant's add-ons that have not expired, oldest first.
    pub async fn add_ons(&self, tenant: &TenantId, page: &PageRequest) -> Result<AddOnPage, Error> {
        Self::send(
            self.request(Method::GET, &format!("/v1/tenants/{tenant}/addons"))
                .query(page),
        )
        .await
    }

    /// A request to a service behind the gateway (`path` after the service's
    /// name, starting with `/`), with this client's key; add a body and send it.
    /// The answer is the upstream's, or a problem from the gateway.
    pub fn proxy(&self, method: Method, service: &ServiceName, path: &str) -> RequestBuilder {
        self.request(method, &format!("/v1/proxy/{service}{path}"))
    }

    /// The public keys upstreams verify the tenant context with (a JWK set).
    pub async fn jwks(&self) -> Result<Value, Error> {
        Self::send(self.request(Method::GET, "/.well-known/jwks.json")).await
    }

    /// The gateway's signing keys, oldest first (operators).
    pub async fn signing_keys(&self) -> Result<Vec<SigningKeyView>, Error> {
        Self::send(self.request(Method::GET, "/v1/platform/signing-keys")).await
    }

    /// Adds a signing key that signs after `publish_ahead` (operators).
    pub async fn rotate_signing_key(&self) -> Result<SigningKeyView, Error> {
        Self::send(self.request(Method::POST, "/v1/platform/signing-keys/rotate")).await
    }
}

/// What can be done to a policy version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicyAction {
    Approve,
    Reject,
    Withdraw,
    Revert,
}

impl PolicyAction {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Approve => "approve",
            Self::Reject => "reject",
            Self::Withdraw => "withdraw",
            Self::Revert => "revert",
        }
    }
}

fn if_match_header(builder: RequestBuilder, version: Option<i64>) -> RequestBuilder {
    match version {
        Some(v) => builder.header(reqwest::header::IF_MATCH, format!("\"{v}\"")),
        None => builder,
    }
}
