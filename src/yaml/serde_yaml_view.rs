//! serde_yaml's values as our reader represents them, for comparing the two:
//! used by the differential tests (tests_serde_yaml.rs) and the fuzz target
//! (fuzz/fuzz_targets/yaml.rs), never by the shipped binary.

use serde_json::{Map, Number, Value};
use serde_yaml::Value as Y;

/// serde_yaml's value as ours represents it: `None` where JSON cannot say
/// it (tags, non-scalar keys, keys that clash once they are strings).
pub fn json_of(v: &Y) -> Option<Value> {
    Some(match v {
        Y::Null => Value::Null,
        Y::Bool(b) => Value::Bool(*b),
        Y::Number(n) => number(n),
        Y::String(s) => Value::String(s.clone()),
        Y::Sequence(items) => Value::Array(items.iter().map(json_of).collect::<Option<_>>()?),
        Y::Mapping(m) => {
            let mut out = Map::new();
            for (k, v) in m {
                let key = match k {
                    Y::String(s) => s.clone(),
                    Y::Number(n) => match number(n) {
                        Value::String(s) => s,
                        other => other.to_string(),
                    },
                    Y::Bool(b) => b.to_string(),
                    Y::Null => "null".into(),
                    _ => return None,
                };
                if out.insert(key, json_of(v)?).is_some() {
                    return None;
                }
            }
            Value::Object(out)
        }
        Y::Tagged(_) => return None,
    })
}

fn number(n: &serde_yaml::Number) -> Value {
    if let Some(u) = n.as_u64() {
        return u.into();
    }
    if let Some(i) = n.as_i64() {
        return i.into();
    }
    let f = n.as_f64().unwrap_or(f64::NAN);
    Number::from_f64(f).map_or_else(|| Value::String(n.to_string()), Value::Number)
}
