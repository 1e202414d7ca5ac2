//! A filter's pieces as SQL text, for both engines. Values are never
//! written here: they are bound. A field path is identifiers joined by dots
//! (`FieldPath::parse`), so its JSON path literal needs no escaping.

use tenantd_core::filter::{CmpOp, FieldPath};

/// The JSON path of a field, `$.a.b`: SQLite's form, and PostgreSQL's
/// `jsonb_path` form.
pub(super) fn json_path(path: &FieldPath) -> String {
    format!("$.{}", path.segments().join("."))
}

/// The SQL comparison operator.
pub(super) fn operator(op: CmpOp) -> &'static str {
    match op {
        CmpOp::Eq => "=",
        CmpOp::Ne => "<>",
        CmpOp::Lt => "<",
        CmpOp::Le => "<=",
        CmpOp::Gt => ">",
        CmpOp::Ge => ">=",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_paths_are_the_field_path_after_the_root() {
        let path = FieldPath::parse("customer.address.city").unwrap();
        assert_eq!(json_path(&path), "$.customer.address.city");
    }
}
