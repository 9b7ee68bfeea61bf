//! What nodes answer: the raw [`Response`] (status and JSON object, kept whole so
//! it can be printed or compared) and the typed outcomes the [`Client`](crate::Client)
//! methods decode from it.

use serde::Deserialize;
use serde_json::{Map, Value};

use crate::error::Error;

/// A node's answer to one request.
#[derive(Debug, Clone, PartialEq)]
pub struct Response {
    /// The address the request was sent to (not necessarily the node that served
    /// it: see [`Response::address`]).
    pub node: String,
    /// HTTP status code.
    pub status: u16,
    /// The JSON object the node returned, `causal-context` included.
    pub body: Map<String, Value>,
    /// The exact JSON text of `value` when it is a number, as the node sent it
    /// (`1e2`, `10.50`, `-0`). `body["value"]` holds the same number parsed by
    /// `serde_json`, which has lost that text (`1e2` prints as `100.0`).
    pub value_number: Option<String>,
}

impl Response {
    /// `address` of the response: the node that served a proxied request.
    pub fn address(&self) -> Option<&str> {
        self.str_field("address")
    }

    /// The `message` field, e.g. `"Retrieved successfully"`.
    pub fn message(&self) -> Option<&str> {
        self.str_field("message")
    }

    /// The `error` field of a failed request, e.g. `"Key does not exist"`.
    pub fn error(&self) -> Option<&str> {
        self.str_field("error")
    }

    /// The `causal-context` object, if the response carried one.
    pub fn causal_context(&self) -> Option<&Value> {
        self.body.get("causal-context").filter(|v| v.is_object())
    }

    /// The whole body as a JSON value (a number `value` as `serde_json` reads it; see
    /// [`Response::to_json_text`]).
    pub fn to_json(&self) -> Value {
        Value::Object(self.body.clone())
    }

    /// The whole body as JSON text, a number `value` written exactly as the node
    /// sent it.
    pub fn to_json_text(&self) -> String {
        struct Body<'a>(&'a Response);
        impl serde::Serialize for Body<'_> {
            fn serialize<S: serde::Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
                use serde::ser::SerializeMap;
                let number = self.0.value_number.as_deref().and_then(|text| {
                    serde_json::value::RawValue::from_string(text.to_owned()).ok()
                });
                let mut map = ser.serialize_map(Some(self.0.body.len()))?;
                for (name, value) in &self.0.body {
                    match (&number, value) {
                        (Some(raw), Value::Number(_)) if name == "value" => {
                            map.serialize_entry(name, raw)?
                        }
                        _ => map.serialize_entry(name, value)?,
                    }
                }
                map.end()
            }
        }
        serde_json::to_string(&Body(self)).expect("JSON values always serialise")
    }

    fn str_field(&self, name: &str) -> Option<&str> {
        self.body.get(name).and_then(Value::as_str)
    }

    /// Decodes the body into `T`, naming the node if it does not fit.
    pub(crate) fn decode<T: for<'de> Deserialize<'de>>(&self) -> Result<T, Error> {
        T::deserialize(&Value::Object(self.body.clone())).map_err(|e| Error::Decode {
            node: self.node.clone(),
            reason: e.to_string(),
        })
    }
}

/// Result of a successful PUT of a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PutOutcome {
    /// `true` when the key existed before (200), `false` when it was created (201).
    pub replaced: bool,
    /// The node that served the write, when the request was proxied.
    pub address: Option<String>,
}

/// Result of a watch (`GET /kv-store/keys/<key>?wait=`).
#[derive(Debug, Clone, PartialEq)]
pub struct Watched {
    /// The key's value, `None` when it does not exist (never written, or deleted).
    pub value: Option<Value>,
    /// `true` when the answer holds a write or delete the session had not seen;
    /// `false` when the wait ran out first.
    pub changed: bool,
    /// The node that served the watch, when the request was proxied.
    pub address: Option<String>,
}

impl TryFrom<&Response> for Watched {
    type Error = Error;

    fn try_from(response: &Response) -> Result<Watched, Error> {
        let changed = response
            .body
            .get("changed")
            .and_then(Value::as_bool)
            .ok_or_else(|| Error::Decode {
                node: response.node.clone(),
                reason: "a watch answer without \"changed\"".into(),
            })?;
        Ok(Watched {
            value: response.body.get("value").cloned(),
            changed,
            address: response.address().map(str::to_owned),
        })
    }
}

/// One op's result in a batch: the single-key answer's fields.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct BatchResult {
    /// The op's key.
    pub key: String,
    /// The status the op alone would have had (200, 201, 404, 400, 503).
    pub status: u16,
    /// The single-key answer's message.
    pub message: String,
    /// The value read (a get that found the key).
    #[serde(default)]
    pub value: Option<Value>,
    /// Why the op failed, if it did.
    #[serde(default)]
    pub error: Option<String>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct BatchBody {
    pub results: Vec<BatchResult>,
}

/// One page of a listing.
#[derive(Debug, Clone, PartialEq)]
pub struct Page {
    /// The keys, in byte order, each with its value when values were asked for.
    pub items: Vec<(String, Option<Value>)>,
    /// Where the next page starts (`start_after`), `None` at the end.
    pub next: Option<String>,
}

impl TryFrom<&Response> for Page {
    type Error = Error;

    fn try_from(response: &Response) -> Result<Page, Error> {
        let bad = |reason: &str| Error::Decode {
            node: response.node.clone(),
            reason: reason.to_owned(),
        };
        let items = if let Some(keys) = response.body.get("keys").and_then(Value::as_array) {
            keys.iter()
                .map(|k| {
                    Ok((
                        k.as_str()
                            .ok_or_else(|| bad("a key is not a string"))?
                            .to_owned(),
                        None,
                    ))
                })
                .collect::<Result<Vec<_>, Error>>()?
        } else if let Some(items) = response.body.get("items").and_then(Value::as_array) {
            items
                .iter()
                .map(|i| {
                    let key = i
                        .get("key")
                        .and_then(Value::as_str)
                        .ok_or_else(|| bad("an item has no key"))?;
                    Ok((key.to_owned(), i.get("value").cloned()))
                })
                .collect::<Result<Vec<_>, Error>>()?
        } else {
            return Err(bad("a listing without keys or items"));
        };
        let next = match response.body.get("next") {
            Some(Value::String(s)) => Some(s.clone()),
            _ => None,
        };
        Ok(Page { items, next })
    }
}

/// Result of `GET /kv-store/key-count`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct KeyCount {
    /// Keys stored in the shard of the node that answered.
    #[serde(rename = "key-count")]
    pub key_count: u64,
    /// That shard's id.
    #[serde(rename = "shard-id")]
    pub shard_id: String,
}

/// One shard: its id, how many keys it holds, its replicas in view order.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ShardInfo {
    /// Shard id (`"1"`, `"2"`, ...).
    #[serde(rename = "shard-id")]
    pub id: String,
    /// Keys stored in the shard.
    #[serde(rename = "key-count")]
    pub key_count: u64,
    /// `ip:port` of every replica of the shard.
    pub replicas: Vec<String>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct ShardList {
    pub shards: Vec<String>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct ViewChangeBody {
    pub shards: Vec<ShardInfo>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct GetBody {
    pub value: Value,
}

#[derive(Debug, Deserialize)]
pub(crate) struct PutBody {
    pub replaced: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn response(body: Value) -> Response {
        Response {
            node: "n:1".into(),
            status: 200,
            body: body.as_object().unwrap().clone(),
            value_number: None,
        }
    }

    #[test]
    fn shard_info_decodes_api_field_names() {
        let r = response(json!({
            "message": "Shard information retrieved successfully",
            "shard-id": "2", "key-count": 4, "replicas": ["a:1", "b:2"],
            "causal-context": {}
        }));
        let info: ShardInfo = r.decode().unwrap();
        assert_eq!(
            info,
            ShardInfo {
                id: "2".into(),
                key_count: 4,
                replicas: vec!["a:1".into(), "b:2".into()]
            }
        );
    }

    #[test]
    fn decode_failure_names_the_node() {
        let r = response(json!({"shards": "not a list"}));
        let err = r.decode::<ShardList>().unwrap_err();
        assert!(
            matches!(err, Error::Decode { ref node, .. } if node == "n:1"),
            "{err:?}"
        );
    }

    #[test]
    fn causal_context_must_be_an_object() {
        assert_eq!(
            response(json!({"causal-context": null})).causal_context(),
            None
        );
        assert_eq!(
            response(json!({"causal-context": {"a": 1}})).causal_context(),
            Some(&json!({"a": 1}))
        );
    }
}
