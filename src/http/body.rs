//! The admin JSON body: content-type check (415), size limit (413 from the layer),
//! malformed JSON (400), and field-by-field reading that names the field on every error
//! and refuses unknown fields.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::header;
use serde_json::{Map, Value};

use crate::error::AppError;
use crate::model::settings;

/// A JSON object body.
#[derive(Debug)]
pub struct JsonBody(pub Map<String, Value>);

impl<S: Send + Sync> FromRequest<S> for JsonBody {
    type Rejection = AppError;

    async fn from_request(req: Request, state: &S) -> Result<Self, AppError> {
        let is_json = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .map(|v| v.trim().to_ascii_lowercase())
            .is_some_and(|v| {
                v == "application/json" || (v.starts_with("application/") && v.ends_with("+json"))
            });
        if !is_json {
            return Err(AppError::UnsupportedMediaType);
        }
        let bytes = Bytes::from_request(req, state).await.map_err(|e| {
            if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                AppError::PayloadTooLarge(super::ADMIN_BODY_LIMIT)
            } else {
                AppError::MalformedJson(e.body_text())
            }
        })?;
        let value: Value =
            serde_json::from_slice(&bytes).map_err(|e| AppError::MalformedJson(e.to_string()))?;
        match value {
            Value::Object(m) => Ok(JsonBody(m)),
            _ => Err(AppError::MalformedJson(
                "the body must be a JSON object".into(),
            )),
        }
    }
}

/// A field in a partial update: absent (leave as is), null (reset to default) or a value.
#[derive(Debug, Clone, PartialEq)]
pub enum Patch<T> {
    /// Not in the body.
    Absent,
    /// `null`: reset to the default.
    Null,
    /// A new value.
    Set(T),
}

impl<T> Patch<T> {
    /// True unless absent.
    pub fn named(&self) -> bool {
        !matches!(self, Patch::Absent)
    }
}

/// Reads fields out of an object one by one; whatever is left at `finish` is unknown.
#[derive(Debug)]
pub struct Fields {
    map: Map<String, Value>,
    prefix: String,
}

impl Fields {
    /// Wraps `map`; error fields are reported as `prefix` + key.
    pub fn new(map: Map<String, Value>, prefix: impl Into<String>) -> Self {
        Fields {
            map,
            prefix: prefix.into(),
        }
    }

    /// The full name of `key` for error reports.
    pub fn path(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    /// Removes and returns a raw value.
    pub fn take(&mut self, key: &str) -> Patch<Value> {
        match self.map.remove(key) {
            None => Patch::Absent,
            Some(Value::Null) => Patch::Null,
            Some(v) => Patch::Set(v),
        }
    }

    /// A one-line string (no control characters).
    pub fn string(&mut self, key: &str) -> Result<Patch<String>, AppError> {
        Ok(match self.take(key) {
            Patch::Set(Value::String(s)) => {
                settings::check_text(&s).map_err(|m| AppError::invalid(self.path(key), m))?;
                Patch::Set(s)
            }
            Patch::Set(_) => return Err(AppError::invalid(self.path(key), "must be a string")),
            Patch::Null => Patch::Null,
            Patch::Absent => Patch::Absent,
        })
    }

    /// A credential: a one-line string that must not be empty (`null` still resets).
    pub fn secret(&mut self, key: &str) -> Result<Patch<String>, AppError> {
        let p = self.string(key)?;
        if matches!(&p, Patch::Set(s) if s.is_empty()) {
            return Err(AppError::invalid(self.path(key), "must not be empty"));
        }
        Ok(p)
    }

    /// An integer in `lo..=hi`.
    pub fn int(&mut self, key: &str, lo: i64, hi: i64) -> Result<Patch<i64>, AppError> {
        Ok(match self.take(key) {
            Patch::Set(v) => match v.as_i64() {
                Some(n) if (lo..=hi).contains(&n) => Patch::Set(n),
                _ => {
                    return Err(AppError::invalid(
                        self.path(key),
                        format!("must be an integer from {lo} to {hi}"),
                    ));
                }
            },
            Patch::Null => Patch::Null,
            Patch::Absent => Patch::Absent,
        })
    }

    /// A boolean.
    pub fn boolean(&mut self, key: &str) -> Result<Patch<bool>, AppError> {
        Ok(match self.take(key) {
            Patch::Set(Value::Bool(b)) => Patch::Set(b),
            Patch::Set(_) => {
                return Err(AppError::invalid(self.path(key), "must be true or false"));
            }
            Patch::Null => Patch::Null,
            Patch::Absent => Patch::Absent,
        })
    }

    /// A setting value: validated by `settings::check_value` (integers accepted for
    /// integer settings).
    pub fn setting(&mut self, key: &str) -> Result<Patch<String>, AppError> {
        let v = match self.take(key) {
            Patch::Set(Value::String(s)) => s,
            Patch::Set(Value::Number(n)) if n.is_i64() => n.to_string(),
            Patch::Set(_) => return Err(AppError::invalid(self.path(key), "must be a string")),
            Patch::Null => return Ok(Patch::Null),
            Patch::Absent => return Ok(Patch::Absent),
        };
        if matches!(settings::kind_of(key), Some(settings::Kind::Int(..)))
            && v.parse::<i64>().is_err()
        {
            return Err(AppError::invalid(self.path(key), "must be an integer"));
        }
        settings::check_value(key, &v).map_err(|m| AppError::invalid(self.path(key), m))?;
        Ok(Patch::Set(v))
    }

    /// A read-only echo field: allowed only when equal to `expected` (lets a client PUT
    /// back what it got).
    pub fn echo(&mut self, key: &str, expected: &str) -> Result<(), AppError> {
        match self.take(key) {
            Patch::Absent => Ok(()),
            Patch::Set(Value::String(s)) if s == expected => Ok(()),
            _ => Err(AppError::invalid(
                self.path(key),
                format!("is read-only here and must be {expected:?} if given"),
            )),
        }
    }

    /// Fails on the first field nobody read.
    pub fn finish(self) -> Result<(), AppError> {
        match self.map.keys().next() {
            Some(k) => Err(AppError::invalid(self.path(k), "unknown field")),
            None => Ok(()),
        }
    }
}

/// Applies a JSON merge patch (RFC 7386) of string values onto `target`: `null` removes a
/// key; `check` validates each key/value and names the field on failure.
pub fn merge_patch(
    target: &mut std::collections::BTreeMap<String, String>,
    field: &str,
    patch: Patch<Value>,
    check: &dyn Fn(&str, &str) -> Result<(), String>,
) -> Result<bool, AppError> {
    match patch {
        Patch::Absent => Ok(false),
        Patch::Null => {
            target.clear();
            Ok(true)
        }
        Patch::Set(Value::Object(m)) => {
            for (k, v) in m {
                let path = format!("{field}.{k}");
                match v {
                    Value::Null => {
                        target.remove(&k);
                    }
                    Value::String(s) => {
                        check(&k, &s).map_err(|msg| AppError::invalid(path, msg))?;
                        target.insert(k, s);
                    }
                    Value::Number(n) if n.is_i64() || n.is_u64() => {
                        let s = n.to_string();
                        check(&k, &s).map_err(|msg| AppError::invalid(path, msg))?;
                        target.insert(k, s);
                    }
                    _ => return Err(AppError::invalid(path, "must be a string or null")),
                }
            }
            Ok(true)
        }
        Patch::Set(_) => Err(AppError::invalid(
            field,
            "must be an object of key → string value",
        )),
    }
}
