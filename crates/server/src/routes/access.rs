//! Access in the types: each handler's first argument is the extractor of
//! the access it demands (`Public`, `AnyKey`, `Operator`, `OperatorOn`,
//! `Member<Role>`, `DataMember<Role>`, `Proxied`), and the route table reads
//! each route's `Access` from it. A handler cannot ask for a scope its route
//! does not grant: the two are one declaration.
//!
//! `request_path` enforces the `Access` before the handler runs and hands
//! on the proofs (`Principal`, `TenantScope`, `DataScope`); the extractors
//! take them from the request.

use std::marker::PhantomData;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use tenantd_core::{DataScope, ErrorCode, OperatorScope, Principal, Role, TenantScope};

use super::Access;
use crate::problem::ApiError;

/// An extractor that names the access its handler demands.
pub trait Grant {
    const ACCESS: Access;
}

/// The access of a handler whose extractors are `T` (axum's tuple: a marker,
/// then the arguments in order): its first argument's.
pub trait Guarded<T> {
    const ACCESS: Access;
}

macro_rules! guarded {
    ($($rest:ident),*) => {
        impl<F, M, A: Grant, $($rest,)*> Guarded<(M, A, $($rest,)*)> for F {
            const ACCESS: Access = A::ACCESS;
        }
    };
}

guarded!();
guarded!(T2);
guarded!(T2, T3);
guarded!(T2, T3, T4);
guarded!(T2, T3, T4, T5);
guarded!(T2, T3, T4, T5, T6);
guarded!(T2, T3, T4, T5, T6, T7);

/// A tenant role a route demands at least.
pub trait TenantRole: Send + Sync {
    const ROLE: Role;
}

/// Tenant admins (and operators, on tenant routes).
pub struct Admin;
/// Developers and above: writes of data.
pub struct Developer;
/// Every member of the tenant.
pub struct Reader;

impl TenantRole for Admin {
    const ROLE: Role = Role::Admin;
}
impl TenantRole for Developer {
    const ROLE: Role = Role::Developer;
}
impl TenantRole for Reader {
    const ROLE: Role = Role::Reader;
}

/// Anyone, without a key.
pub struct Public;
/// Any valid key.
pub struct AnyKey(pub Principal);
/// An operator key, and the platform scope it holds.
pub struct Operator(pub Principal, pub OperatorScope);
/// An operator key, on the tenant the path names.
pub struct OperatorOn(pub Principal, pub TenantScope);
/// A key of the tenant the path names with at least role `R`, or an operator.
pub struct Member<R: TenantRole>(pub Principal, pub TenantScope, pub PhantomData<R>);
/// A key of a tenant, with at least role `R`, on its own data.
pub struct DataMember<R: TenantRole>(pub Principal, pub DataScope, pub PhantomData<R>);
/// A request for a service behind the gateway: the gateway takes what
/// authorization found (the service, the principal) from the request.
pub struct Proxied;

impl Grant for Public {
    const ACCESS: Access = Access::Public;
}
impl Grant for AnyKey {
    const ACCESS: Access = Access::AnyKey;
}
impl Grant for Operator {
    const ACCESS: Access = Access::Operator;
}
impl Grant for OperatorOn {
    const ACCESS: Access = Access::OperatorOn;
}
impl<R: TenantRole> Grant for Member<R> {
    const ACCESS: Access = Access::Tenant(R::ROLE);
}
impl<R: TenantRole> Grant for DataMember<R> {
    const ACCESS: Access = Access::Data(R::ROLE);
}
impl Grant for Proxied {
    const ACCESS: Access = Access::Proxy;
}

/// The proof `request_path` handed on. Missing only if a route were built
/// around `request_path`, which the table does not allow: a server error.
fn proof<T: Clone + Send + Sync + 'static>(parts: &mut Parts) -> Result<T, ApiError> {
    parts.extensions.remove::<T>().ok_or_else(|| {
        tracing::error!(
            proof = std::any::type_name::<T>(),
            "a handler found no proof of its access"
        );
        ApiError::new(ErrorCode::Internal)
    })
}

impl<S: Send + Sync> FromRequestParts<S> for Public {
    type Rejection = ApiError;
    async fn from_request_parts(_: &mut Parts, _: &S) -> Result<Self, ApiError> {
        Ok(Self)
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Proxied {
    type Rejection = ApiError;
    async fn from_request_parts(_: &mut Parts, _: &S) -> Result<Self, ApiError> {
        Ok(Self)
    }
}

impl<S: Send + Sync> FromRequestParts<S> for AnyKey {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        Ok(Self(proof(parts)?))
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Operator {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let principal: Principal = proof(parts)?;
        let scope = principal.operator_scope().ok_or_else(|| {
            tracing::error!("an operator route's principal is not an operator");
            ApiError::new(ErrorCode::Internal)
        })?;
        Ok(Self(principal, scope))
    }
}

impl<S: Send + Sync> FromRequestParts<S> for OperatorOn {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        Ok(Self(proof(parts)?, proof(parts)?))
    }
}

impl<S: Send + Sync, R: TenantRole> FromRequestParts<S> for Member<R> {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        Ok(Self(proof(parts)?, proof(parts)?, PhantomData))
    }
}

impl<S: Send + Sync, R: TenantRole> FromRequestParts<S> for DataMember<R> {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        Ok(Self(proof(parts)?, proof(parts)?, PhantomData))
    }
}
