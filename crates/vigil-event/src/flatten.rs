//! Every scalar `(path, value)` of an event: what the store indexes and queries match.

use serde_json::{Map, Value};

/// One scalar JSON value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Scalar<'a> {
    Null,
    Bool(bool),
    Number(f64),
    String(&'a str),
}

/// Calls `f(path, scalar)` for every scalar leaf of `obj`, depth first, keys in the map's order.
/// Paths join keys with `.` (`actor.id`, `details.items.sku`); array elements share their
/// array's path (`tags: ["a","b"]` gives `tags`="a" and `tags`="b"); empty objects and arrays
/// give nothing. The path buffer is reused: no allocation per leaf.
pub fn flatten<'a>(obj: &'a Map<String, Value>, mut f: impl FnMut(&str, Scalar<'a>)) {
    let mut path = String::with_capacity(64);
    walk_object(obj, &mut path, &mut f);
}

fn walk_object<'a, F: FnMut(&str, Scalar<'a>)>(
    obj: &'a Map<String, Value>,
    path: &mut String,
    f: &mut F,
) {
    for (key, value) in obj {
        let len = path.len();
        if len > 0 {
            path.push('.');
        }
        path.push_str(key);
        walk_value(value, path, f);
        path.truncate(len);
    }
}

fn walk_value<'a, F: FnMut(&str, Scalar<'a>)>(value: &'a Value, path: &mut String, f: &mut F) {
    match value {
        Value::Null => f(path, Scalar::Null),
        Value::Bool(b) => f(path, Scalar::Bool(*b)),
        Value::Number(n) => {
            if let Some(x) = n.as_f64() {
                f(path, Scalar::Number(x));
            }
        }
        Value::String(s) => f(path, Scalar::String(s)),
        Value::Array(items) => {
            for item in items {
                walk_value(item, path, f);
            }
        }
        Value::Object(obj) => walk_object(obj, path, f),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn collect(v: &Value) -> Vec<(String, String)> {
        let mut out = Vec::new();
        flatten(v.as_object().unwrap(), |path, scalar| {
            let value = match scalar {
                Scalar::Null => "null".to_owned(),
                Scalar::Bool(b) => b.to_string(),
                Scalar::Number(x) => x.to_string(),
                Scalar::String(s) => format!("{s:?}"),
            };
            out.push((path.to_owned(), value));
        });
        out
    }

    #[test]
    fn paths_join_keys_and_arrays_share_their_path() {
        let v = json!({
            "actor": {"id": "u-7", "ip": null},
            "details": {"items": [{"sku": "a", "qty": 2}, {"sku": "b"}], "ok": true},
            "tags": ["x", ["y"]],
            "empty": {}, "none": [],
            "type": "t"
        });
        let got = collect(&v);
        let want: Vec<(String, String)> = [
            ("actor.id", "\"u-7\""),
            ("actor.ip", "null"),
            ("details.items.qty", "2"),
            ("details.items.sku", "\"a\""),
            ("details.items.sku", "\"b\""),
            ("details.ok", "true"),
            ("tags", "\"x\""),
            ("tags", "\"y\""),
            ("type", "\"t\""),
        ]
        .iter()
        .map(|(p, v)| ((*p).to_owned(), (*v).to_owned()))
        .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn numbers_are_f64() {
        let v = json!({"a": 3, "b": -1.5, "c": 18446744073709551615u64});
        let mut nums = Vec::new();
        flatten(v.as_object().unwrap(), |_, s| {
            if let Scalar::Number(x) = s {
                nums.push(x);
            }
        });
        assert_eq!(nums, vec![3.0, -1.5, 18_446_744_073_709_551_615.0]);
    }
}
