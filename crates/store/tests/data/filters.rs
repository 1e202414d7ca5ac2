//! The filter compiler against a reference evaluator: for random records and
//! random filters, the store returns exactly the records the documented
//! semantics select.

use std::cmp::Ordering;

use proptest::prelude::*;
use serde_json::{json, Value};
use tenantd_core::filter::{CmpOp, FieldPath, Filter, Literal};
use tenantd_store::data::{BatchOp, ListQuery};

use crate::{coll, fixture, rid, scope, MODELS, NOW};

const PATHS: [&str; 3] = ["a", "b", "c.d"];

fn lookup<'v>(body: &'v Value, path: &FieldPath) -> Option<&'v Value> {
    path.segments().iter().try_fold(body, |v, key| v.get(key))
}

fn compare(op: CmpOp, ordering: Ordering) -> bool {
    match op {
        CmpOp::Eq => ordering == Ordering::Equal,
        CmpOp::Ne => ordering != Ordering::Equal,
        CmpOp::Lt => ordering == Ordering::Less,
        CmpOp::Le => ordering != Ordering::Greater,
        CmpOp::Gt => ordering == Ordering::Greater,
        CmpOp::Ge => ordering != Ordering::Less,
    }
}

/// The documented semantics: typed comparisons, `!=` as the negation of `=`,
/// and `= null` matching a missing field or JSON null.
fn matches(filter: &Filter, body: &Value) -> bool {
    match filter {
        Filter::And(terms) => terms.iter().all(|t| matches(t, body)),
        Filter::Or(terms) => terms.iter().any(|t| matches(t, body)),
        Filter::In(path, values) => values
            .iter()
            .any(|v| matches(&Filter::Cmp(path.clone(), CmpOp::Eq, v.clone()), body)),
        Filter::Cmp(path, CmpOp::Ne, literal) => {
            !matches(&Filter::Cmp(path.clone(), CmpOp::Eq, literal.clone()), body)
        }
        Filter::Cmp(path, op, literal) => {
            let value = lookup(body, path);
            match (literal, value) {
                (Literal::Null, v) => v.is_none_or(Value::is_null),
                (Literal::Bool(b), Some(Value::Bool(v))) => b == v,
                (Literal::Number(n), Some(Value::Number(v))) => v
                    .as_f64()
                    .and_then(|v| v.partial_cmp(n))
                    .is_some_and(|o| compare(*op, o)),
                (Literal::String(s), Some(Value::String(v))) => compare(*op, v.as_str().cmp(s)),
                _ => false,
            }
        }
    }
}

fn value() -> impl Strategy<Value = Option<Value>> {
    prop_oneof![
        Just(None),
        Just(Some(Value::Null)),
        any::<bool>().prop_map(|b| Some(json!(b))),
        (-3i64..4).prop_map(|n| Some(json!(n))),
        (-3i64..4).prop_map(|n| Some(json!(n as f64 + 0.5))),
        prop::sample::select(vec!["", "a", "b", "ab", "B"]).prop_map(|s| Some(json!(s))),
    ]
}

fn body() -> impl Strategy<Value = Value> {
    (value(), value(), value()).prop_map(|(a, b, d)| {
        let mut body = serde_json::Map::new();
        if let Some(a) = a {
            body.insert("a".into(), a);
        }
        if let Some(b) = b {
            body.insert("b".into(), b);
        }
        if let Some(d) = d {
            body.insert("c".into(), json!({ "d": d }));
        }
        Value::Object(body)
    })
}

fn literal() -> impl Strategy<Value = Literal> {
    prop_oneof![
        Just(Literal::Null),
        any::<bool>().prop_map(Literal::Bool),
        (-3i64..4).prop_map(|n| Literal::Number(n as f64)),
        (-3i64..4).prop_map(|n| Literal::Number(n as f64 + 0.5)),
        prop::sample::select(vec!["", "a", "b", "ab", "B"]).prop_map(|s| Literal::String(s.into())),
    ]
}

fn comparison() -> impl Strategy<Value = Filter> {
    let ops = prop::sample::select(vec![
        CmpOp::Eq,
        CmpOp::Ne,
        CmpOp::Lt,
        CmpOp::Le,
        CmpOp::Gt,
        CmpOp::Ge,
    ]);
    (prop::sample::select(PATHS.to_vec()), ops, literal()).prop_map(|(path, op, literal)| {
        // The parser allows only = and != with null, true and false.
        let op = match literal {
            Literal::Null | Literal::Bool(_) if !matches!(op, CmpOp::Eq | CmpOp::Ne) => CmpOp::Eq,
            _ => op,
        };
        Filter::Cmp(FieldPath::parse(path).unwrap(), op, literal)
    })
}

fn filter() -> impl Strategy<Value = Filter> {
    let leaf = prop_oneof![
        comparison(),
        (
            prop::sample::select(PATHS.to_vec()),
            prop::collection::vec(literal(), 1..4)
        )
            .prop_map(|(path, values)| Filter::In(FieldPath::parse(path).unwrap(), values)),
    ];
    leaf.prop_recursive(3, 12, 3, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 2..4).prop_map(Filter::And),
            prop::collection::vec(inner, 2..4).prop_map(Filter::Or),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn the_store_selects_what_the_semantics_say(
        bodies in prop::collection::vec(body(), 1..25),
        filters in prop::collection::vec(filter(), 1..6),
    ) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async move {
            let f = fixture().await;
            // One model per engine: the others run the same statements.
            for model in [MODELS[0], MODELS[2]] {
            let s = scope("acme", model);
            let items = coll("items");
            let collection = f.store.create_collection(&s, &items, &[], NOW).await.unwrap();
            let ops = bodies
                .iter()
                .enumerate()
                .map(|(i, body)| BatchOp::Create { id: rid(&format!("r{i:02}")), body: body.clone() })
                .collect();
            f.store.write(&s, &items, ops, NOW).await.unwrap();
            for filter in &filters {
                let query = ListQuery { filter: Some(filter.clone()), limit: 100, ..Default::default() };
                let got: Vec<String> = f
                    .store
                    .list(&s, &collection, &query)
                    .await
                    .unwrap()
                    .into_iter()
                    .map(|r| r.record.id.to_string())
                    .collect();
                let expected: Vec<String> = bodies
                    .iter()
                    .enumerate()
                    .filter(|(_, body)| matches(filter, body))
                    .map(|(i, _)| format!("r{i:02}"))
                    .collect();
                assert_eq!(got, expected, "{model:?}: filter {filter:?} over {bodies:?}");
            }
            }
        });
    }
}
