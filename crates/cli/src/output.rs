//! What the client commands print: readable fields and tables by default,
//! the API's own JSON with `--output json` (for scripts).

use std::fmt;

use clap::ValueEnum;
use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Serialize;
use tenantd_api::Problem;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Fields and tables for people.
    #[default]
    Table,
    /// The API's JSON, as it answered.
    Json,
}

/// The columns a listing shows in a table; `None` shows every field.
pub type Columns = Option<&'static [&'static str]>;

/// `value` as `format` prints it.
pub fn render(value: &impl Serialize, format: Format, columns: Columns) -> String {
    let json = serde_json::to_string(value).unwrap_or_default();
    if format == Format::Json {
        return serde_json::from_str::<serde_json::Value>(&json)
            .and_then(|v| serde_json::to_string_pretty(&v))
            .unwrap_or(json);
    }
    // Read back in the order the API writes fields, which `serde_json::Value`
    // (sorted by name) would lose.
    match serde_json::from_str::<Node>(&json) {
        Ok(Node::Object(object)) => match find(&object, "items") {
            Some(Node::Array(items)) => page(items, find(&object, "next_cursor"), columns),
            _ => fields(&object),
        },
        Ok(Node::Array(items)) => table(&items, columns),
        Ok(other) => cell(&other),
        Err(_) => json,
    }
}

/// A problem as `format` prints it on stderr.
pub fn render_problem(problem: &Problem, format: Format) -> String {
    if format == Format::Json {
        return serde_json::to_string_pretty(problem).unwrap_or_default();
    }
    let mut text = format!(
        "tenantd: {} ({}, HTTP {})",
        problem.title, problem.code, problem.status
    );
    if let Some(detail) = &problem.detail {
        text.push_str(&format!("\n  {detail}"));
    }
    if let Some(id) = &problem.request_id {
        text.push_str(&format!("\n  request id: {id}"));
    }
    text
}

/// A move's `details.progress` as a bar: records copied of the total, and
/// collections; `None` before the copy has begun.
pub fn copy_progress(details: &serde_json::Value) -> Option<String> {
    let progress = details.get("progress")?;
    let count = |name: &str| progress.get(name).and_then(serde_json::Value::as_u64);
    let (records, records_total) = (count("records")?, count("records_total")?);
    let (collections, collections_total) = (count("collections")?, count("collections_total")?);
    const WIDTH: u64 = 30;
    let filled = (records.min(records_total) * WIDTH)
        .checked_div(records_total)
        .unwrap_or(WIDTH);
    let bar: String = (0..WIDTH)
        .map(|i| if i < filled { '#' } else { '-' })
        .collect();
    Some(format!(
        "[{bar}] {records}/{records_total} records, {collections}/{collections_total} collections"
    ))
}

/// A JSON value that keeps its object's fields in their written order.
#[derive(Debug, Clone, PartialEq)]
enum Node {
    Null,
    Bool(bool),
    Number(serde_json::Number),
    String(String),
    Array(Vec<Node>),
    Object(Vec<(String, Node)>),
}

fn find<'a>(object: &'a [(String, Node)], name: &str) -> Option<&'a Node> {
    object.iter().find(|(key, _)| key == name).map(|(_, v)| v)
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(NodeVisitor)
    }
}

struct NodeVisitor;

impl<'de> Visitor<'de> for NodeVisitor {
    type Value = Node;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_unit<E>(self) -> Result<Node, E> {
        Ok(Node::Null)
    }
    fn visit_bool<E>(self, b: bool) -> Result<Node, E> {
        Ok(Node::Bool(b))
    }
    fn visit_i64<E>(self, n: i64) -> Result<Node, E> {
        Ok(Node::Number(n.into()))
    }
    fn visit_u64<E>(self, n: u64) -> Result<Node, E> {
        Ok(Node::Number(n.into()))
    }
    fn visit_f64<E>(self, n: f64) -> Result<Node, E> {
        Ok(serde_json::Number::from_f64(n).map_or(Node::Null, Node::Number))
    }
    fn visit_str<E>(self, s: &str) -> Result<Node, E> {
        Ok(Node::String(s.to_owned()))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Node::Array(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
        let mut fields = Vec::new();
        while let Some(field) = map.next_entry()? {
            fields.push(field);
        }
        Ok(Node::Object(fields))
    }
}

fn page(items: &[Node], next_cursor: Option<&Node>, columns: Columns) -> String {
    let mut text = table(items, columns);
    if let Some(Node::String(cursor)) = next_cursor {
        text.push_str(&format!("\nmore: --cursor {cursor}"));
    }
    text
}

/// An object as `name  value` lines, nested objects under dotted names,
/// and each list of objects as a table after the fields.
fn fields(object: &[(String, Node)]) -> String {
    let mut rows = Vec::new();
    let mut tables = Vec::new();
    flatten(object, "", &mut rows, &mut tables);
    let width = rows.iter().map(|(name, _)| name.chars().count()).max();
    let mut lines: Vec<String> = rows
        .iter()
        .map(|(name, value)| format!("{name:<width$}  {value}", width = width.unwrap_or_default()))
        .collect();
    for (name, items) in tables {
        lines.push(String::new());
        lines.push(format!("{name}:"));
        lines.push(table(items, None));
    }
    lines.join("\n")
}

fn flatten<'a>(
    object: &'a [(String, Node)],
    prefix: &str,
    rows: &mut Vec<(String, String)>,
    tables: &mut Vec<(String, &'a [Node])>,
) {
    for (key, value) in object {
        let name = format!("{prefix}{key}");
        match value {
            Node::Object(inner) if !inner.is_empty() => {
                flatten(inner, &format!("{name}."), rows, tables);
            }
            Node::Array(items)
                if !items.is_empty() && items.iter().all(|i| matches!(i, Node::Object(_))) =>
            {
                tables.push((name, items));
            }
            other => rows.push((name, cell(other))),
        }
    }
}

/// Rows of objects under a header of their fields (or of `columns`).
fn table(items: &[Node], columns: Columns) -> String {
    if items.is_empty() {
        return "(none)".to_owned();
    }
    let names: Vec<String> = match columns {
        Some(columns) => columns.iter().map(|c| (*c).to_owned()).collect(),
        None => {
            let mut names: Vec<String> = Vec::new();
            for item in items {
                if let Node::Object(fields) = item {
                    for (key, _) in fields {
                        if !names.contains(key) {
                            names.push(key.clone());
                        }
                    }
                }
            }
            names
        }
    };
    let rows: Vec<Vec<String>> = items
        .iter()
        .map(|item| {
            names
                .iter()
                .map(|name| match item {
                    Node::Object(fields) => find(fields, name).map_or_else(|| "-".to_owned(), cell),
                    _ => "-".to_owned(),
                })
                .collect()
        })
        .collect();
    let header: Vec<String> = names.iter().map(|n| n.to_uppercase()).collect();
    let widths: Vec<usize> = (0..names.len())
        .map(|i| {
            std::iter::once(&header)
                .chain(&rows)
                .map(|row| row[i].chars().count())
                .max()
                .unwrap_or_default()
        })
        .collect();
    std::iter::once(&header)
        .chain(&rows)
        .map(|row| {
            let padded: Vec<String> = row
                .iter()
                .zip(&widths)
                .map(|(value, width)| format!("{value:<width$}"))
                .collect();
            padded.join("  ").trim_end().to_owned()
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Longest text a table cell shows of a nested value.
const NESTED_CELL_CHARS: usize = 48;

/// One value as a cell: `-` for nothing, fractions to two decimals, times
/// to the second, nested values as short JSON.
fn cell(value: &Node) -> String {
    match value {
        Node::Null => "-".to_owned(),
        Node::Bool(true) => "yes".to_owned(),
        Node::Bool(false) => "no".to_owned(),
        Node::Number(n) if n.is_f64() => n
            .as_f64()
            .map_or_else(|| n.to_string(), |f| format!("{f:.2}")),
        Node::Number(n) => n.to_string(),
        Node::String(s) if s.is_empty() => "-".to_owned(),
        Node::String(s) => to_the_second(s).unwrap_or_else(|| s.clone()),
        Node::Array(items) if items.is_empty() => "-".to_owned(),
        Node::Array(items)
            if items
                .iter()
                .all(|i| !matches!(i, Node::Object(_) | Node::Array(_))) =>
        {
            items.iter().map(cell).collect::<Vec<_>>().join(", ")
        }
        nested => {
            let json = compact(nested);
            if json.chars().count() > NESTED_CELL_CHARS {
                let cut: String = json.chars().take(NESTED_CELL_CHARS - 1).collect();
                format!("{cut}…")
            } else {
                json
            }
        }
    }
}

/// A nested value as one line of JSON, its fields in order.
fn compact(node: &Node) -> String {
    match node {
        Node::Null => "null".to_owned(),
        Node::Bool(b) => b.to_string(),
        Node::Number(n) => n.to_string(),
        Node::String(s) => serde_json::to_string(s).unwrap_or_default(),
        Node::Array(items) => format!(
            "[{}]",
            items.iter().map(compact).collect::<Vec<_>>().join(",")
        ),
        Node::Object(fields) => format!(
            "{{{}}}",
            fields
                .iter()
                .map(|(k, v)| format!(
                    "{}:{}",
                    serde_json::to_string(k).unwrap_or_default(),
                    compact(v)
                ))
                .collect::<Vec<_>>()
                .join(",")
        ),
    }
}

/// An RFC 3339 time with fractional seconds, cut to the second.
fn to_the_second(text: &str) -> Option<String> {
    use time::format_description::well_known::Rfc3339;
    let at = time::OffsetDateTime::parse(text, &Rfc3339).ok()?;
    at.replace_nanosecond(0).ok()?.format(&Rfc3339).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_page_is_a_table_with_its_columns_and_the_next_cursor() {
        let page = json!({
            "items": [
                { "id": "acme", "name": "Acme", "status": "active", "extra": 1 },
                { "id": "globex-corp", "name": "Globex", "status": "suspended", "extra": 2 },
            ],
            "next_cursor": "abc",
        });
        let text = render(&page, Format::Table, Some(&["id", "name", "status"]));
        assert_eq!(
            text,
            "ID           NAME    STATUS\n\
             acme         Acme    active\n\
             globex-corp  Globex  suspended\n\
             more: --cursor abc"
        );
        let last = json!({ "items": [], "next_cursor": null });
        assert_eq!(render(&last, Format::Table, None), "(none)");
    }

    #[test]
    fn an_object_is_fields_with_dotted_names_and_its_lists_as_tables() {
        // Fields in the order the API writes them, as a typed answer has.
        #[derive(Serialize)]
        struct Policy {
            rate: u32,
            burst: Option<u32>,
        }
        #[derive(Serialize)]
        struct Usage {
            tenant: &'static str,
            policy: Policy,
            at: &'static str,
            quotas: serde_json::Value,
            flags: [&'static str; 2],
        }
        let usage = Usage {
            tenant: "acme",
            policy: Policy {
                rate: 10,
                burst: None,
            },
            at: "2026-12-01T14:28:00.123456789Z",
            quotas: json!([{ "burn_per_hour": 0.355_637_513, "metric": "requests", "used": 3 }]),
            flags: ["a", "b"],
        };
        assert_eq!(
            render(&usage, Format::Table, None),
            "tenant        acme\n\
             policy.rate   10\n\
             policy.burst  -\n\
             at            2026-12-01T14:28:00Z\n\
             flags         a, b\n\
             \n\
             quotas:\n\
             BURN_PER_HOUR  METRIC    USED\n\
             0.36           requests  3"
        );
    }

    #[test]
    fn json_is_the_answer_unchanged() {
        let value = json!({ "items": [{ "id": 1.5 }], "next_cursor": null });
        let text = render(&value, Format::Json, Some(&["id"]));
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&text).unwrap(),
            value
        );
    }

    #[test]
    fn a_copy_shows_as_a_bar_of_records() {
        let details = json!({ "progress": {
            "collections": 1, "collections_total": 2, "records": 1000, "records_total": 3000,
        }});
        assert_eq!(
            copy_progress(&details).unwrap(),
            format!(
                "[{}{}] 1000/3000 records, 1/2 collections",
                "#".repeat(10),
                "-".repeat(20)
            )
        );
        assert_eq!(copy_progress(&json!({ "from": {} })), None);
    }

    #[test]
    fn nested_cells_are_cut_short() {
        let long = json!({ "details": "x".repeat(100) });
        let shown = render(
            &json!({ "items": [{ "nested": [long] }] }),
            Format::Table,
            None,
        );
        let shown = shown.lines().nth(1).unwrap();
        assert_eq!(shown.chars().count(), NESTED_CELL_CHARS);
        assert!(shown.ends_with('…'));
    }
}
