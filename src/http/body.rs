//! The admin JSON body: content-type check (415), size limit (413 from the layer),
//! malformed JSON (400), keys given twice (400 naming them), and field-by-field reading
//! that names the field on every error and refuses unknown fields. Also the admin `Path`
//! and `Query` extractors, whose rejections get the JSON error shape naming the parameter.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::header;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::error::AppError;
use crate::model::json;
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
            .is_some_and(is_json_type);
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
        match parse_strict(&bytes)? {
            Value::Object(m) => Ok(JsonBody(m)),
            _ => Err(AppError::MalformedJson(
                "the body must be a JSON object".into(),
            )),
        }
    }
}

/// `application/json` or `application/*+json`, in UTF-8: a `charset` parameter other than
/// UTF-8 is refused rather than read as UTF-8.
pub(crate) fn is_json_type(v: &str) -> bool {
    let mut parts = v.split(';');
    let essence = parts.next().unwrap_or("").trim().to_ascii_lowercase();
    let json = essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"));
    json && parts.all(|p| match p.split_once('=') {
        Some((k, v)) if k.trim().eq_ignore_ascii_case("charset") => {
            let v = v.trim().trim_matches('"');
            v.eq_ignore_ascii_case("utf-8") || v.eq_ignore_ascii_case("utf8")
        }
        _ => true,
    })
}

/// Parses a JSON document strictly ([`crate::model::json::parse_strict`]): a key given twice
/// is a 400 naming the key's path, anything else that is not JSON a malformed-JSON 400.
pub(crate) fn parse_strict(bytes: &[u8]) -> Result<Value, AppError> {
    json::parse_strict(bytes).map_err(|e| match e {
        json::StrictError::Duplicate(field) => AppError::invalid(field, "is given more than once"),
        json::StrictError::Malformed(m) => AppError::MalformedJson(m),
    })
}

/// `axum::extract::Path` for the admin API: a parameter that is not UTF-8 once
/// percent-decoded is a 400 naming it, in the JSON error shape.
#[derive(Debug)]
pub struct Path<T>(pub T);

impl<T, S> FromRequestParts<S> for Path<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Response> {
        use axum::extract::path::ErrorKind;
        use axum::extract::rejection::PathRejection;
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(v)) => Ok(Path(v)),
            Err(PathRejection::FailedToDeserializePathParams(e))
                if e.status().is_client_error() =>
            {
                let err = match e.kind() {
                    ErrorKind::InvalidUtf8InPathParam { key } => {
                        AppError::invalid(key.as_str(), "must be UTF-8 once percent-decoded")
                    }
                    ErrorKind::ParseErrorAtKey { key, .. }
                    | ErrorKind::DeserializeError { key, .. } => {
                        AppError::invalid(key.as_str(), e.body_text())
                    }
                    _ => AppError::invalid("path", e.body_text()),
                };
                Err(err.into_response())
            }
            // Route/extractor mismatches are server bugs: axum's own 500.
            Err(e) => Err(e.into_response()),
        }
    }
}

/// `axum::extract::Query` for the admin API: a query string that does not deserialize
/// (a parameter given twice, a number that is not one) is a 400 naming `query`.
#[derive(Debug)]
pub struct Query<T>(pub T);

impl<T, S> FromRequestParts<S> for Query<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, AppError> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(v)) => Ok(Query(v)),
            Err(e) => Err(AppError::invalid("query", e.body_text())),
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
        // shift_remove keeps the body order, so `finish` names unknown fields in that order.
        match self.map.shift_remove(key) {
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
            Patch::Set(v) => match json_int(&v) {
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

    /// A setting value: validated by `settings::check_value`. A JSON integer is accepted
    /// for an integer setting only (as the API document says); every other setting is a
    /// string.
    pub fn setting(&mut self, key: &str) -> Result<Patch<String>, AppError> {
        let int = matches!(settings::kind_of(key), Some(settings::Kind::Int(..)));
        let v = match self.take(key) {
            Patch::Set(Value::String(s)) => s,
            Patch::Set(v) => match json_int(&v).filter(|_| int) {
                Some(n) => n.to_string(),
                None => {
                    let want = if int {
                        "must be an integer"
                    } else {
                        "must be a string"
                    };
                    return Err(AppError::invalid(self.path(key), want));
                }
            },
            Patch::Null => return Ok(Patch::Null),
            Patch::Absent => return Ok(Patch::Absent),
        };
        if int && v.parse::<i64>().is_err() {
            return Err(AppError::invalid(self.path(key), "must be an integer"));
        }
        settings::check_value(key, &v).map_err(|m| AppError::invalid(self.path(key), m))?;
        Ok(Patch::Set(v))
    }

    /// A read-only echo field: allowed only when equal to `expected` (lets a client PUT
    /// back what it got); another value conflicts with the record the path names (409).
    pub fn echo(&mut self, key: &str, expected: &str) -> Result<(), AppError> {
        match self.take(key) {
            Patch::Absent => Ok(()),
            Patch::Set(Value::String(s)) if s == expected => Ok(()),
            Patch::Set(Value::String(_)) => Err(AppError::conflict(
                self.path(key),
                format!("is read-only here and must be {expected:?} if given"),
            )),
            _ => Err(AppError::invalid(
                self.path(key),
                format!("must be the string {expected:?} if given (read-only)"),
            )),
        }
    }

    /// Fails on the fields nobody read: the first is the error's field, the message names
    /// the others.
    pub fn finish(self) -> Result<(), AppError> {
        let mut unknown = self.map.keys();
        let Some(first) = unknown.next() else {
            return Ok(());
        };
        let others: Vec<String> = unknown.map(|k| self.path(k)).collect();
        let message = if others.is_empty() {
            "unknown field".to_string()
        } else {
            format!("unknown field; also unknown: {}", others.join(", "))
        };
        Err(AppError::invalid(self.path(first), message))
    }
}

/// Checks one key of a merge patch with its new value (`None`: the key is removed).
pub type KeyCheck = dyn Fn(&str, Option<&str>) -> Result<(), String>;

/// Applies a JSON merge patch (RFC 7386) of string values onto `target`: `null` removes a
/// key; `check` validates each key with its new value (`None`: a removal, whose key must
/// still be one that could be set) and names the field on failure.
pub fn merge_patch(
    target: &mut std::collections::BTreeMap<String, String>,
    field: &str,
    patch: Patch<Value>,
    check: &KeyCheck,
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
                let text = match v {
                    Value::Null => {
                        check(&k, None).map_err(|msg| AppError::invalid(path, msg))?;
                        target.remove(&k);
                        continue;
                    }
                    Value::String(s) => s,
                    Value::Number(n) if n.is_u64() => n.to_string(),
                    v => match json_int(&v) {
                        Some(n) => n.to_string(),
                        None => {
                            return Err(AppError::invalid(
                                path,
                                "must be a string, an integer or null",
                            ));
                        }
                    },
                };
                check(&k, Some(&text)).map_err(|msg| AppError::invalid(path, msg))?;
                target.insert(k, text);
            }
            Ok(true)
        }
        Patch::Set(_) => Err(AppError::invalid(
            field,
            "must be an object of key → string value",
        )),
    }
}

/// A JSON integer as JSON Schema counts them: a number with no fractional part, so `335.0`
/// is the integer 335 (the API document's `integer` type allows it) and `1.5` is none.
pub fn json_int(v: &Value) -> Option<i64> {
    if let Some(n) = v.as_i64() {
        return Some(n);
    }
    let f = v.as_f64()?;
    // Within i64's range, exactly: 2^63 itself is out.
    (f.fract() == 0.0 && (-9_223_372_036_854_775_808.0..9_223_372_036_854_775_808.0).contains(&f))
        .then_some(f as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_as_json_schema_counts_them() {
        use serde_json::json;
        for (v, want) in [
            (json!(2), Some(2)),
            (json!(2.0), Some(2)),
            (json!(-0.0), Some(0)),
            (json!(-7.0), Some(-7)),
            (json!(i64::MAX), Some(i64::MAX)),
            (json!(1.5), None),
            (json!(9.3e18), None),
            (json!(-9.3e18), None),
            (json!(u64::MAX), None),
            (json!("2"), None),
            (json!(null), None),
        ] {
            assert_eq!(json_int(&v), want, "{v}");
        }
    }

    fn dup_field(body: &str) -> Option<String> {
        match parse_strict(body.as_bytes()) {
            Err(AppError::Invalid { field, .. }) => Some(field),
            _ => None,
        }
    }

    #[test]
    fn keys_given_twice_are_named() {
        assert_eq!(dup_field(r#"{"a":1,"a":2}"#).as_deref(), Some("a"));
        assert_eq!(
            dup_field(r#"{"m":[{"x":1},{"p":1,"p":1}]}"#).as_deref(),
            Some("m[1].p")
        );
        assert_eq!(
            dup_field(r#"{"o":{"k":{"a":1,"a":1}}}"#).as_deref(),
            Some("o.k.a")
        );
        let v = parse_strict(br#"{"a":[1,-2,3.5,"s",true,null],"b":{"a":1}}"#).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"a":[1,-2,3.5,"s",true,null],"b":{"a":1}})
        );
    }

    #[test]
    fn malformed_and_deep_documents_are_malformed_json() {
        for bad in [
            &b"{"[..],
            b"{} {}",
            b"",
            b"{\"a\":\"\xff\"}",
            b"{\"a\":1e400}",
        ] {
            assert!(
                matches!(parse_strict(bad), Err(AppError::MalformedJson(_))),
                "{bad:?}"
            );
        }
        let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
        assert!(matches!(
            parse_strict(deep.as_bytes()),
            Err(AppError::MalformedJson(_))
        ));
    }

    #[test]
    fn every_unknown_field_is_named() {
        let Value::Object(m) = serde_json::json!({"port": 1, "zz": 1, "aa": 2}) else {
            unreachable!()
        };
        let mut f = Fields::new(m, "members[0].");
        assert!(matches!(f.int("port", 1, 9), Ok(Patch::Set(1))));
        match f.finish() {
            Err(AppError::Invalid { field, message }) => {
                assert_eq!(field, "members[0].zz");
                assert_eq!(message, "unknown field; also unknown: members[0].aa");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn json_content_types() {
        for ok in [
            "application/json",
            "Application/JSON",
            "application/json; charset=utf-8",
            "application/json;charset=\"UTF-8\"",
            "application/merge-patch+json",
        ] {
            assert!(is_json_type(ok), "{ok}");
        }
        for bad in [
            "text/plain",
            "application/jsonx",
            "application/json; charset=utf-16",
            "application/json; charset=latin1",
            "",
        ] {
            assert!(!is_json_type(bad), "{bad}");
        }
    }
}
