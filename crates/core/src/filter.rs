//! The record filter language: a small, safe expression over JSON fields.
//!
//! ```text
//! status = "paid" and (total >= 100 or customer.vip = true) and region in ("eu", "us")
//! ```
//!
//! Fields are dotted paths of identifiers; values are JSON literals (strings,
//! numbers, `true`, `false`, `null`); operators are `=`, `!=`, `<`, `<=`, `>`,
//! `>=` and `in`; `and` binds tighter than `or`; parentheses group. The parser
//! produces an AST that storage engines compile to parameterized SQL: no part
//! of a filter is ever pasted into a query.

use std::fmt;

/// Longest filter accepted, in bytes.
pub const MAX_FILTER_LEN: usize = 4096;
/// Deepest nesting of parentheses accepted.
pub const MAX_FILTER_DEPTH: usize = 16;
/// Most values in one `in (…)` list.
pub const MAX_IN_VALUES: usize = 100;
/// Most segments in one field path.
pub const MAX_PATH_SEGMENTS: usize = 8;

/// The rule of `FieldPath::parse` as a regular expression, for the OpenAPI
/// document: 1 to `MAX_PATH_SEGMENTS` identifiers of up to 64 characters.
pub const FIELD_PATH_PATTERN: &str =
    r"^[A-Za-z_][A-Za-z0-9_]{0,63}(\.[A-Za-z_][A-Za-z0-9_]{0,63}){0,7}$";

/// A field path such as `customer.address.city`. Each segment is an
/// identifier (`[A-Za-z_][A-Za-z0-9_]*`), so a path is safe to embed in a
/// JSON path string.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FieldPath(Vec<String>);

impl FieldPath {
    pub fn parse(s: &str) -> Result<Self, String> {
        let segments: Vec<String> = s.split('.').map(str::to_owned).collect();
        if segments.len() > MAX_PATH_SEGMENTS {
            return Err(format!(
                "a field path has at most {MAX_PATH_SEGMENTS} segments"
            ));
        }
        for segment in &segments {
            let mut bytes = segment.bytes();
            let first_ok = bytes
                .next()
                .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_');
            if !first_ok
                || !bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
                || segment.len() > 64
            {
                return Err(format!(
                    "{s:?} is not a field path (identifiers joined by dots)"
                ));
            }
        }
        Ok(Self(segments))
    }

    pub fn segments(&self) -> &[String] {
        &self.0
    }
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.join("."))
    }
}

/// A literal in a filter.
#[derive(Debug, Clone, PartialEq)]
pub enum Literal {
    Null,
    Bool(bool),
    Number(f64),
    String(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmpOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Filter {
    Cmp(FieldPath, CmpOp, Literal),
    In(FieldPath, Vec<Literal>),
    And(Vec<Filter>),
    Or(Vec<Filter>),
}

/// A syntax error and the byte offset where it was found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("filter error at position {position}: {message}")]
pub struct FilterError {
    pub position: usize,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Ident(String),
    Str(String),
    Num(f64),
    Op(CmpOp),
    LParen,
    RParen,
    Comma,
}

fn error(position: usize, message: impl Into<String>) -> FilterError {
    FilterError {
        position,
        message: message.into(),
    }
}

fn tokenize(input: &str) -> Result<Vec<(usize, Token)>, FilterError> {
    let bytes = input.as_bytes();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        let start = i;
        match b {
            b' ' | b'\t' | b'\n' | b'\r' => {
                i += 1;
                continue;
            }
            b'(' | b')' | b',' | b'=' => {
                let token = match b {
                    b'(' => Token::LParen,
                    b')' => Token::RParen,
                    b',' => Token::Comma,
                    _ => Token::Op(CmpOp::Eq),
                };
                tokens.push((start, token));
                i += 1;
            }
            b'!' | b'<' | b'>' => {
                let two = bytes.get(i + 1) == Some(&b'=');
                let op = match (b, two) {
                    (b'!', true) => CmpOp::Ne,
                    (b'<', true) => CmpOp::Le,
                    (b'>', true) => CmpOp::Ge,
                    (b'<', false) => CmpOp::Lt,
                    (b'>', false) => CmpOp::Gt,
                    _ => return Err(error(start, "expected `!=`")),
                };
                tokens.push((start, Token::Op(op)));
                i += if two { 2 } else { 1 };
            }
            b'"' => {
                // A JSON string literal, escapes included.
                i += 1;
                let mut escaped = false;
                while i < bytes.len() && (escaped || bytes[i] != b'"') {
                    escaped = !escaped && bytes[i] == b'\\';
                    i += 1;
                }
                if i >= bytes.len() {
                    return Err(error(start, "unterminated string"));
                }
                i += 1;
                let text: String = serde_json::from_str(&input[start..i])
                    .map_err(|e| error(start, format!("invalid string: {e}")))?;
                tokens.push((start, Token::Str(text)));
            }
            b'-' | b'0'..=b'9' => {
                i += 1;
                while i < bytes.len()
                    && matches!(bytes[i], b'0'..=b'9' | b'.' | b'e' | b'E' | b'+' | b'-')
                {
                    i += 1;
                }
                let n: f64 = input[start..i]
                    .parse()
                    .ok()
                    .filter(|n: &f64| n.is_finite())
                    .ok_or_else(|| error(start, "invalid number"))?;
                tokens.push((start, Token::Num(n)));
            }
            b if b.is_ascii_alphabetic() || b == b'_' => {
                while i < bytes.len()
                    && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_' || bytes[i] == b'.')
                {
                    i += 1;
                }
                tokens.push((start, Token::Ident(input[start..i].to_owned())));
            }
            _ => {
                let c = input[start..].chars().next().unwrap_or('?');
                return Err(error(start, format!("unexpected character {c:?}")));
            }
        }
    }
    Ok(tokens)
}

struct Parser {
    tokens: Vec<(usize, Token)>,
    next: usize,
    end: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.next).map(|(_, t)| t)
    }

    fn position(&self) -> usize {
        self.tokens.get(self.next).map_or(self.end, |(p, _)| *p)
    }

    fn bump(&mut self) -> Option<Token> {
        let token = self.tokens.get(self.next).map(|(_, t)| t.clone());
        self.next += 1;
        token
    }

    fn keyword(&self, word: &str) -> bool {
        matches!(self.peek(), Some(Token::Ident(w)) if w.eq_ignore_ascii_case(word))
    }

    fn or(&mut self, depth: usize) -> Result<Filter, FilterError> {
        let mut terms = vec![self.and(depth)?];
        while self.keyword("or") {
            self.bump();
            terms.push(self.and(depth)?);
        }
        Ok(if terms.len() == 1 {
            terms.remove(0)
        } else {
            Filter::Or(terms)
        })
    }

    fn and(&mut self, depth: usize) -> Result<Filter, FilterError> {
        let mut terms = vec![self.primary(depth)?];
        while self.keyword("and") {
            self.bump();
            terms.push(self.primary(depth)?);
        }
        Ok(if terms.len() == 1 {
            terms.remove(0)
        } else {
            Filter::And(terms)
        })
    }

    fn primary(&mut self, depth: usize) -> Result<Filter, FilterError> {
        let at = self.position();
        match self.bump() {
            Some(Token::LParen) => {
                if depth >= MAX_FILTER_DEPTH {
                    return Err(error(
                        at,
                        format!("parentheses nest deeper than {MAX_FILTER_DEPTH}"),
                    ));
                }
                let inner = self.or(depth + 1)?;
                let close = self.position();
                match self.bump() {
                    Some(Token::RParen) => Ok(inner),
                    _ => Err(error(close, "expected `)`")),
                }
            }
            Some(Token::Ident(name)) => {
                let field = FieldPath::parse(&name).map_err(|m| error(at, m))?;
                let op_at = self.position();
                if self.keyword("in") {
                    self.bump();
                    return self.in_list(field);
                }
                match self.bump() {
                    Some(Token::Op(op)) => {
                        let value = self.literal()?;
                        let unordered = matches!(value, Literal::Null | Literal::Bool(_));
                        if unordered && !matches!(op, CmpOp::Eq | CmpOp::Ne) {
                            return Err(error(
                                op_at,
                                "null, true and false compare only with = and !=",
                            ));
                        }
                        Ok(Filter::Cmp(field, op, value))
                    }
                    _ => Err(error(
                        op_at,
                        "expected an operator (=, !=, <, <=, >, >=, in)",
                    )),
                }
            }
            _ => Err(error(at, "expected a field name or `(`")),
        }
    }

    fn in_list(&mut self, field: FieldPath) -> Result<Filter, FilterError> {
        let at = self.position();
        if self.bump() != Some(Token::LParen) {
            return Err(error(at, "expected `(` after in"));
        }
        let mut values = vec![self.literal()?];
        loop {
            let at = self.position();
            match self.bump() {
                Some(Token::Comma) => values.push(self.literal()?),
                Some(Token::RParen) => break,
                _ => return Err(error(at, "expected `,` or `)`")),
            }
            if values.len() > MAX_IN_VALUES {
                return Err(error(
                    at,
                    format!("an in list has at most {MAX_IN_VALUES} values"),
                ));
            }
        }
        Ok(Filter::In(field, values))
    }

    fn literal(&mut self) -> Result<Literal, FilterError> {
        let at = self.position();
        match self.bump() {
            Some(Token::Str(s)) => Ok(Literal::String(s)),
            Some(Token::Num(n)) => Ok(Literal::Number(n)),
            Some(Token::Ident(w)) if w == "true" => Ok(Literal::Bool(true)),
            Some(Token::Ident(w)) if w == "false" => Ok(Literal::Bool(false)),
            Some(Token::Ident(w)) if w == "null" => Ok(Literal::Null),
            _ => Err(error(
                at,
                "expected a value (string, number, true, false or null)",
            )),
        }
    }
}

impl Filter {
    pub fn parse(input: &str) -> Result<Self, FilterError> {
        if input.len() > MAX_FILTER_LEN {
            return Err(error(
                MAX_FILTER_LEN,
                format!("a filter is at most {MAX_FILTER_LEN} bytes"),
            ));
        }
        let mut parser = Parser {
            tokens: tokenize(input)?,
            next: 0,
            end: input.len(),
        };
        let filter = parser.or(0)?;
        if parser.next < parser.tokens.len() {
            return Err(error(
                parser.position(),
                "expected `and`, `or` or the end of the filter",
            ));
        }
        Ok(filter)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn path(s: &str) -> FieldPath {
        FieldPath::parse(s).unwrap()
    }

    #[test]
    fn parses_comparisons_lists_and_precedence() {
        let f = Filter::parse(r#"status = "paid" and (total >= 100 or customer.vip = true) and region in ("eu", "us")"#)
            .unwrap();
        assert_eq!(
            f,
            Filter::And(vec![
                Filter::Cmp(path("status"), CmpOp::Eq, Literal::String("paid".into())),
                Filter::Or(vec![
                    Filter::Cmp(path("total"), CmpOp::Ge, Literal::Number(100.0)),
                    Filter::Cmp(path("customer.vip"), CmpOp::Eq, Literal::Bool(true)),
                ]),
                Filter::In(
                    path("region"),
                    vec![Literal::String("eu".into()), Literal::String("us".into())]
                ),
            ])
        );
        let f = Filter::parse("a = 1 or b = 2 and c = 3").unwrap();
        assert_eq!(
            f,
            Filter::Or(vec![
                Filter::Cmp(path("a"), CmpOp::Eq, Literal::Number(1.0)),
                Filter::And(vec![
                    Filter::Cmp(path("b"), CmpOp::Eq, Literal::Number(2.0)),
                    Filter::Cmp(path("c"), CmpOp::Eq, Literal::Number(3.0)),
                ]),
            ]),
            "and binds tighter than or"
        );
    }

    #[test]
    fn strings_use_json_escapes() {
        let f = Filter::parse(r#"name = "a \"quoted\" \u00e9""#).unwrap();
        assert_eq!(
            f,
            Filter::Cmp(
                path("name"),
                CmpOp::Eq,
                Literal::String("a \"quoted\" é".into())
            )
        );
    }

    #[test]
    fn errors_point_at_the_position() {
        let cases = [
            ("status =", 8, "expected a value"),
            ("status == 1", 8, "expected a value"),
            ("(a = 1", 6, "expected `)`"),
            ("a = 1 b = 2", 6, "expected `and`"),
            ("a ~ 1", 2, "unexpected character"),
            ("a = \"open", 4, "unterminated"),
            ("a < null", 2, "compare only with"),
            ("a >= true", 2, "compare only with"),
            ("a in 1", 5, "expected `(`"),
            ("1 = a", 0, "expected a field"),
            ("a..b = 1", 0, "not a field path"),
        ];
        for (input, position, message) in cases {
            let err = Filter::parse(input).unwrap_err();
            assert_eq!(err.position, position, "{input}: {err}");
            assert!(err.message.contains(message), "{input}: {err}");
        }
    }

    #[test]
    fn limits_are_enforced() {
        let deep = format!(
            "{}a = 1{}",
            "(".repeat(MAX_FILTER_DEPTH + 1),
            ")".repeat(MAX_FILTER_DEPTH + 1)
        );
        assert!(Filter::parse(&deep).unwrap_err().message.contains("deeper"));
        let ok = format!(
            "{}a = 1{}",
            "(".repeat(MAX_FILTER_DEPTH),
            ")".repeat(MAX_FILTER_DEPTH)
        );
        assert!(Filter::parse(&ok).is_ok());
        let many = format!("a in ({})", vec!["1"; MAX_IN_VALUES + 1].join(","));
        assert!(Filter::parse(&many).is_err());
        assert!(Filter::parse(&"a = 1 and ".repeat(500)).is_err());
        assert!(FieldPath::parse(&["a"; MAX_PATH_SEGMENTS + 1].join(".")).is_err());
    }

    #[test]
    fn field_paths_are_identifiers_only() {
        assert_eq!(
            path("customer.address.city").segments(),
            ["customer", "address", "city"]
        );
        for bad in ["", "a.", ".a", "a-b", "a b", "1a", "a.$", "a'b"] {
            assert!(FieldPath::parse(bad).is_err(), "{bad}");
        }
    }

    proptest! {
        #[test]
        fn arbitrary_input_never_panics(input in "\\PC{0,200}") {
            let _ = Filter::parse(&input);
        }
    }
}
