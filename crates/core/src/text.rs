//! Human texts of one line (names, reasons): their rules as regular
//! expressions for the OpenAPI document, checked against the parsers.
//!
//! Invariant: a string matches a pattern here (within the documented length)
//! exactly when the server's check accepts it, so clients and fuzzers that
//! generate from the document send only texts the server takes.

/// No control character (Unicode `Cc`, as `char::is_control`): a line may
/// be empty.
pub const LINE_PATTERN: &str = r"^[^\x00-\x1f\x7f-\x9f]*$";

/// A line with at least one character that is neither a control character
/// nor Unicode white space (what `str::trim` removes).
pub const NON_BLANK_LINE_PATTERN: &str = concat!(
    r"^[^\x00-\x1f\x7f-\x9f]*",
    r"[^\x00-\x20\x7f-\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]",
    r"[^\x00-\x1f\x7f-\x9f]*$"
);

/// Longest reason given for a change (plans, policies), in characters.
pub const MAX_REASON_CHARS: usize = 500;

/// Checks a reason: not blank, at most `MAX_REASON_CHARS`, one line.
pub fn check_reason(reason: &str) -> Result<(), String> {
    if reason.trim().is_empty() {
        return Err("reason: say why".into());
    }
    if reason.chars().count() > MAX_REASON_CHARS {
        return Err(format!("reason: at most {MAX_REASON_CHARS} characters"));
    }
    if reason.chars().any(char::is_control) {
        return Err("reason: no control characters (newlines included)".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{KeyId, TenantId, KEY_ID_PATTERN, SLUG_PATTERN};
    use crate::key::check_key_name;
    use crate::record::{
        CollectionName, JobId, RecordId, COLLECTION_NAME_PATTERN, JOB_ID_PATTERN, RECORD_ID_PATTERN,
    };
    use crate::tenant::check_tenant_name;
    use proptest::prelude::*;
    use regex::Regex;

    /// Characters near every boundary the rules draw: ASCII, controls, the
    /// white space `trim` removes, and ordinary letters beyond ASCII.
    fn tricky_string(max_len: usize) -> impl Strategy<Value = String> {
        let chars = prop_oneof![
            proptest::char::range('\u{0}', '\u{7f}'),
            Just('\u{85}'),
            Just('\u{a0}'),
            Just('\u{9f}'),
            Just('\u{2028}'),
            Just('\u{3000}'),
            Just('é'),
            Just('語'),
        ];
        proptest::collection::vec(chars, 0..max_len).prop_map(|v| v.into_iter().collect())
    }

    fn matches(pattern: &str, s: &str) -> bool {
        Regex::new(pattern).expect("pattern compiles").is_match(s)
    }

    fn within(s: &str, min: usize, max: usize) -> bool {
        (min..=max).contains(&s.chars().count())
    }

    proptest! {
        #[test]
        fn tenant_names_match_their_pattern(s in tricky_string(8)) {
            prop_assert_eq!(check_tenant_name(&s).is_ok(), matches(NON_BLANK_LINE_PATTERN, &s));
        }

        #[test]
        fn reasons_match_their_pattern(s in tricky_string(8)) {
            prop_assert_eq!(check_reason(&s).is_ok(), matches(NON_BLANK_LINE_PATTERN, &s));
        }

        #[test]
        fn key_names_match_their_pattern(s in tricky_string(8)) {
            prop_assert_eq!(check_key_name(&s).is_ok(), matches(LINE_PATTERN, &s));
        }

        #[test]
        fn ids_match_their_patterns(s in "[a-z0-9_.A-Z-]{0,40}") {
            prop_assert_eq!(
                TenantId::parse(&s).is_ok(),
                matches(SLUG_PATTERN, &s) && within(&s, 3, 63)
            );
            prop_assert_eq!(
                CollectionName::parse(&s).is_ok(),
                matches(COLLECTION_NAME_PATTERN, &s) && within(&s, 1, 63)
            );
            prop_assert_eq!(
                RecordId::parse(&s).is_ok(),
                matches(RECORD_ID_PATTERN, &s) && within(&s, 1, 128)
            );
        }

        #[test]
        fn field_paths_match_their_pattern(s in "[a-zA-Z0-9_.]{0,20}") {
            prop_assert_eq!(
                crate::filter::FieldPath::parse(&s).is_ok(),
                matches(crate::filter::FIELD_PATH_PATTERN, &s)
            );
        }

        #[test]
        fn hex_ids_match_their_patterns(s in "[0-9a-fA-F-]{14,38}") {
            prop_assert_eq!(KeyId::parse(&s).is_ok(), matches(KEY_ID_PATTERN, &s));
            prop_assert_eq!(
                JobId::parse(&s).is_ok(),
                matches(JOB_ID_PATTERN, &s)
            );
        }
    }
}
