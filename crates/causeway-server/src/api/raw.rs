//! A request value's exact JSON text, read from the request bytes.
//!
//! Handlers validate a body by parsing it into a `serde_json::Value`, which keeps a
//! number only as an `f64` or an integer (`1e2` would come back as `100.0`). The
//! contract hands a number back with exactly the text it was sent with, so when a
//! value is a number its text is read again here, from the bytes, and stored as is
//! ([`Value::number`]). String values (the bulk of the traffic, up to 1 MiB) never
//! come through here: they are not scanned twice.
//!
//! Duplicate fields resolve as in `serde_json::Map`: the last one counts.

use crate::causal::Value;
use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde_json::value::RawValue;
use std::fmt;

/// Reads the raw text of the field `.0` of a JSON object (the last one of that
/// name); `None` when the object has no such field.
struct FieldOf(&'static str);

impl<'de> DeserializeSeed<'de> for FieldOf {
    type Value = Option<&'de RawValue>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for FieldOf {
    type Value = Option<&'de RawValue>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut found = None;
        while let Some(name) = map.next_key::<String>()? {
            if name == self.0 {
                found = Some(map.next_value::<&'de RawValue>()?);
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(found)
    }
}

/// The raw text of the field `name` of the JSON object `body`.
fn field<'a>(body: &'a [u8], name: &'static str) -> Option<&'a RawValue> {
    let mut de = serde_json::Deserializer::from_slice(body);
    let raw = FieldOf(name).deserialize(&mut de).ok()?;
    de.end().ok()?;
    raw
}

/// The number in the `value` field of a JSON object body, exactly as it came; `None`
/// when that field is not a JSON number.
pub fn value_number(body: &[u8]) -> Option<Value> {
    Value::number(field(body, "value")?.get())
}

/// The ops of a batch body (`{"ops": [...]}`), each op's raw JSON text; `None` when
/// `ops` is missing or not a list.
pub fn batch_ops(body: &[u8]) -> Option<Vec<&RawValue>> {
    serde_json::from_str(field(body, "ops")?.get()).ok()
}

/// The number in one batch op's `value` field (see [`batch_ops`]), exactly as it came.
pub fn op_number(op: &RawValue) -> Option<Value> {
    value_number(op.get().as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn num(text: &str) -> Option<Value> {
        Some(Value::Num(text.into()))
    }

    #[test]
    fn a_value_number_is_read_with_its_exact_text() {
        for n in [
            "1e2",
            "1E+2",
            "10.50",
            "-0",
            "123456789012345678901234567890",
            "0.1e-7",
        ] {
            let body = format!(r#"{{"causal-context": {{"deps": {{}}}}, "value" :  {n} }}"#);
            assert_eq!(value_number(body.as_bytes()), num(n), "{body}");
        }
    }

    #[test]
    fn only_numbers_are_read() {
        for body in [
            r#"{"value": "1e2"}"#,
            r#"{"value": true}"#,
            r#"{"value": [1]}"#,
            r#"{"value": {"value": 1}}"#,
            r#"{"value": null}"#,
            r#"{"other": 1}"#,
            r#"[1]"#,
            r#"{"value": 01}"#,
            "",
        ] {
            assert_eq!(value_number(body.as_bytes()), None, "{body}");
        }
    }

    #[test]
    fn the_last_of_duplicate_fields_counts_as_in_serde_json() {
        let body = br#"{"value": "x", "value": 1e2}"#;
        assert_eq!(value_number(body), num("1e2"));
        let parsed: serde_json::Value = serde_json::from_slice(body).unwrap();
        assert!(parsed["value"].is_number());
        assert_eq!(value_number(br#"{"value": 1e2, "value": "x"}"#), None);
        assert_eq!(value_number(br#"{"v\u0061lue": 1e2}"#), num("1e2"));
    }

    #[test]
    fn batch_op_numbers_are_read_with_their_exact_text() {
        let body = br#"{"ops": [{"op": "get", "key": "a"}, 5, {"op": "put", "key": "b", "value": 2.50E-3}], "causal-context": {}}"#;
        let ops = batch_ops(body).unwrap();
        assert_eq!(ops.len(), 3);
        assert_eq!(op_number(ops[0]), None);
        assert_eq!(op_number(ops[1]), None);
        assert_eq!(op_number(ops[2]), num("2.50E-3"));
        assert!(batch_ops(br#"{"ops": 1}"#).is_none());
        assert!(batch_ops(br#"{"causal-context": {}}"#).is_none());
    }
}
