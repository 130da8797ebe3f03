//! Proptest strategies shared by the unit tests.

use proptest::prelude::*;
use serde_json::{Map, Number, Value};

/// Numbers of every shape JSON carries: small and huge integers, fractions, exponents, `-0`.
pub(crate) fn arb_number() -> impl Strategy<Value = Number> {
    prop_oneof![
        any::<i64>().prop_map(Number::from),
        any::<u64>().prop_map(Number::from),
        (-1000i64..1000).prop_map(Number::from),
        any::<f64>().prop_filter_map("finite", Number::from_f64),
        (-1e6f64..1e6).prop_filter_map("finite", Number::from_f64),
        prop::sample::select(vec![
            0.0,
            -0.0,
            1e21,
            1e-7,
            1e-6,
            123e-20,
            9_007_199_254_740_993.0,
            5e-324,
            f64::MAX
        ])
        .prop_filter_map("finite", Number::from_f64),
        prop::sample::select(vec![(1u64 << 53) - 1, 1 << 53, (1 << 53) + 1, u64::MAX])
            .prop_map(Number::from),
        prop::sample::select(vec![-(1i64 << 53), -(1 << 53) - 1, i64::MIN]).prop_map(Number::from),
    ]
}

/// Strings with control characters, quotes, backslashes, non-ASCII and supplementary chars.
pub(crate) fn arb_string() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z0-9 ]{0,8}",
        any::<String>(),
        "[\u{0}-\u{1f}\"\\\\/\u{7f}\u{80}\u{2028}\u{e000}\u{ffff}\u{10000}\u{1f600}a]{0,6}",
    ]
}

/// Object keys, including ones that sort right around `seq` and ones whose UTF-16 order
/// differs from their UTF-8 order.
pub(crate) fn arb_key() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z_]{0,6}",
        "s[a-z]{0,3}",
        prop::sample::select(vec!["se", "seq", "seq0", "sep", "ser", "sf", "r", "t", ""])
            .prop_map(str::to_owned),
        "[\u{e000}\u{ffff}\u{10000}\u{1f600}\u{7f}\u{80}a]{1,3}",
        any::<String>(),
    ]
}

/// Any JSON value, a few levels deep.
pub(crate) fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        arb_number().prop_map(Value::Number),
        arb_string().prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            arb_object(inner).prop_map(Value::Object),
        ]
    })
}

/// An object whose members are drawn from `values`.
pub(crate) fn arb_object(
    values: impl Strategy<Value = Value>,
) -> impl Strategy<Value = Map<String, Value>> {
    prop::collection::btree_map(arb_key(), values, 0..6).prop_map(|m| m.into_iter().collect())
}
