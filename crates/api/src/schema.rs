//! The OpenAPI schemas of the domain's value types (identifiers, enums, the
//! billing day), which cross the wire as their canonical strings and numbers.
//!
//! `tenantd-core` knows nothing of OpenAPI: each type here is a marker that
//! names its domain type's schema, built from the rule the domain's parser
//! enforces (`IdRule`, the enums' `ALL` and `as_str`), so the document cannot
//! promise a value the server refuses. Wire structs point at them with
//! `#[schema(value_type = schema::TenantId)]`; route parameters with
//! `("tenant" = schema::TenantId, Path)`.

use std::borrow::Cow;

use tenantd_core::ids::IdRule;
use utoipa::openapi::schema::{Schema, Type};
use utoipa::openapi::{ObjectBuilder, RefOr};

/// A string's schema with a pattern and length limits: the shape of every id
/// and text field of the document.
pub fn string_schema(pattern: &str, min: usize, max: usize) -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .pattern(Some(pattern))
        .min_length(Some(min))
        .max_length(Some(max))
}

fn id_schema(rule: IdRule) -> RefOr<Schema> {
    string_schema(rule.pattern, rule.min_chars, rule.max_chars)
        .examples([rule.example])
        .into()
}

fn enum_schema(description: &str, names: impl IntoIterator<Item = &'static str>) -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .description(Some(description))
        .enum_values(Some(names))
        .into()
}

/// Declares a marker whose schema, named as its domain type, is `$schema`.
macro_rules! value_schema {
    ($(#[$doc:meta])* $name:ident => $schema:expr) => {
        $(#[$doc])*
        #[derive(Debug)]
        pub struct $name;

        impl utoipa::PartialSchema for $name {
            fn schema() -> RefOr<Schema> {
                $schema
            }
        }

        impl utoipa::ToSchema for $name {
            fn name() -> Cow<'static, str> {
                Cow::Borrowed(stringify!($name))
            }
        }
    };
}

value_schema!(TenantId => id_schema(tenantd_core::TenantId::RULE));
value_schema!(PlanId => id_schema(tenantd_core::PlanId::RULE));
value_schema!(RegionId => id_schema(tenantd_core::RegionId::RULE));
value_schema!(PoolName => id_schema(tenantd_core::PoolName::RULE));
value_schema!(ServiceName => id_schema(tenantd_core::ServiceName::RULE));
value_schema!(KeyId => id_schema(tenantd_core::KeyId::RULE));
value_schema!(CollectionName => id_schema(tenantd_core::CollectionName::RULE));
value_schema!(RecordId => id_schema(tenantd_core::RecordId::RULE));
value_schema!(JobId => id_schema(tenantd_core::JobId::RULE));
value_schema!(NodeId => id_schema(tenantd_core::NodeId::RULE));

value_schema!(Role => enum_schema(
    "What a key may do. `Operator` belongs to the platform; the other three\nbelong to one tenant, from most to least powerful.",
    tenantd_core::Role::ALL.map(tenantd_core::Role::as_str),
));
value_schema!(KeyState => enum_schema(
    "Whether a key works at a given instant.",
    tenantd_core::KeyState::ALL.map(tenantd_core::KeyState::as_str),
));
value_schema!(Isolation => enum_schema(
    "How a tenant's data is kept apart from other tenants'.",
    tenantd_core::Isolation::ALL.map(tenantd_core::Isolation::as_str),
));
value_schema!(TenantStatus => enum_schema(
    "Where a tenant is in its lifecycle: `active` serves requests; `suspended` keeps its data and refuses its keys; `deleted` is soft-deleted, restorable until purged.",
    tenantd_core::TenantStatus::ALL.map(tenantd_core::TenantStatus::as_str),
));
value_schema!(Metric => enum_schema(
    "What a quota counts.",
    tenantd_core::plan::Metric::ALL.map(tenantd_core::plan::Metric::as_str),
));
value_schema!(Period => enum_schema(
    "The window a counted quota resets over.",
    tenantd_core::plan::Period::ALL.map(tenantd_core::plan::Period::as_str),
));
value_schema!(OpClass => enum_schema(
    "An operation class: the requests that share a width of seats, a deadline and a rate.",
    tenantd_core::plan::OpClass::ALL.map(tenantd_core::plan::OpClass::as_str),
));

value_schema!(BillingDay => ObjectBuilder::new()
    .schema_type(Type::Integer)
    .description(Some(
        "The day of the month (1 to 28) the tenant's monthly quotas reset, at UTC midnight.",
    ))
    .minimum(Some(1))
    .maximum(Some(28))
    .into());

#[cfg(test)]
mod tests {
    use serde::Serialize;
    use utoipa::PartialSchema;

    /// The names a schema lists, as the document shows them.
    fn listed<S: PartialSchema>() -> Vec<String> {
        let json = serde_json::to_value(S::schema()).unwrap();
        serde_json::from_value(json["enum"].clone()).unwrap()
    }

    /// What the domain type writes for each of its values.
    fn written<T: Serialize>(values: impl IntoIterator<Item = T>) -> Vec<String> {
        values
            .into_iter()
            .map(|v| serde_json::from_value(serde_json::to_value(v).unwrap()).unwrap())
            .collect()
    }

    #[test]
    fn each_enum_schema_lists_exactly_what_its_type_writes() {
        use tenantd_core::plan::{Metric, OpClass, Period};
        use tenantd_core::{Isolation, KeyState, Role, TenantStatus};
        assert_eq!(listed::<super::Role>(), written(Role::ALL));
        assert_eq!(listed::<super::KeyState>(), written(KeyState::ALL));
        assert_eq!(listed::<super::Isolation>(), written(Isolation::ALL));
        assert_eq!(listed::<super::TenantStatus>(), written(TenantStatus::ALL));
        assert_eq!(listed::<super::Metric>(), written(Metric::ALL));
        assert_eq!(listed::<super::Period>(), written(Period::ALL));
        assert_eq!(listed::<super::OpClass>(), written(OpClass::ALL));
    }

    #[test]
    fn an_id_schema_carries_its_parsers_rule() {
        let json = serde_json::to_value(super::TenantId::schema()).unwrap();
        let rule = tenantd_core::TenantId::RULE;
        assert_eq!(json["pattern"], rule.pattern);
        assert_eq!(json["minLength"], rule.min_chars);
        assert_eq!(json["maxLength"], rule.max_chars);
        assert!(tenantd_core::TenantId::parse(rule.example).is_ok());
    }
}
