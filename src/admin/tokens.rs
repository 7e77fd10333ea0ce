//! Domain-scoped admin tokens: creating (the secret is returned once and only its SHA-256
//! is stored), listing and revoking, shared by the HTTP routes (`http::tokens`) and the
//! `autoprov token …` subcommands (`cli::tokens`), which work on a stopped server's data
//! folder.
//!
//! Scope: `None` is the server-wide admin token (manages every token); `Some(d)` is a
//! domain token, which sees and manages only tokens of `d`. Another domain's token, or
//! creating one for another domain, answers exactly like something that does not exist
//! (404), so a domain token learns nothing about other domains.

use std::time::SystemTime;

use serde_json::{Value, json};

use super::AdminError;
use crate::auth;
use crate::model::Token;
use crate::store::{Change, Store, StoreError};

/// Every token secret starts with this, so a leaked one is recognisable (secret scanners,
/// logs) as an autoprov domain token.
pub const SECRET_PREFIX: &str = "apt_";

/// Token ids start with this (ids are public: listed, and used in `DELETE /tokens/{id}`).
pub const ID_PREFIX: &str = "tok_";

/// The public view of a token: never the secret, never the hash.
pub fn token_json(t: &Token) -> Value {
    json!({ "id": t.id, "domain": t.domain, "created": t.created })
}

/// Creates a token for `domain` and commits it (the caller flushes). Returns the record
/// and the secret, which exists nowhere else afterwards.
///
/// Errors: `domain` not a valid name → 400 naming `domain`, no such domain → 409; a domain
/// token asking for another domain → 404 (whether that domain exists or not).
pub fn create(
    store: &Store,
    scope: Option<&str>,
    domain: &str,
) -> Result<(Token, String), AdminError> {
    crate::model::rules::check_name(domain, crate::model::rules::DOMAIN_MAX)
        .map_err(|m| AdminError::invalid("domain", m))?;
    if scope.is_some_and(|s| s != domain) {
        return Err(AdminError::NotFound(format!("no domain {domain}")));
    }
    let _w = store.writer();
    if store.domain(domain)?.is_none() {
        return Err(AdminError::conflict(
            "domain",
            format!("unknown domain {domain:?}; create it with PUT /api/v1/domains/{domain}"),
        ));
    }
    let existing = store.tokens()?;
    let id = loop {
        let id = format!("{ID_PREFIX}{}", auth::random_secret(12));
        if !existing.iter().any(|(_, t)| t.id == id) {
            break id;
        }
    };
    // 43 characters of a 57-letter alphabet: about 250 bits.
    let secret = format!("{SECRET_PREFIX}{}", auth::random_secret(43));
    let hash = auth::hash(&secret);
    let token = Token {
        id,
        domain: domain.to_string(),
        created: humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
    };
    store.commit(&Change {
        tokens: vec![(hash, Some(token.clone()))],
        ..Default::default()
    })?;
    Ok((token, secret))
}

/// The tokens `scope` may see, oldest first.
pub fn list(store: &Store, scope: Option<&str>) -> Result<Vec<Token>, AdminError> {
    let mut list: Vec<Token> = store
        .tokens()?
        .into_iter()
        .map(|(_, t)| t)
        .filter(|t| scope.is_none_or(|d| t.domain == d))
        .collect();
    list.sort_by(|a, b| a.created.cmp(&b.created).then_with(|| a.id.cmp(&b.id)));
    Ok(list)
}

/// Revokes token `id` (the caller flushes). Unknown, or another domain's under a domain
/// token → 404.
pub fn revoke(store: &Store, scope: Option<&str>, id: &str) -> Result<Token, AdminError> {
    let _w = store.writer();
    let found = store
        .tokens()?
        .into_iter()
        .find(|(_, t)| t.id == id && scope.is_none_or(|d| t.domain == d));
    let Some((hash, token)) = found else {
        return Err(AdminError::NotFound(format!("no token {id}")));
    };
    store.commit(&Change {
        tokens: vec![(hash, None)],
        ..Default::default()
    })?;
    Ok(token)
}

/// Hashes of every token of `domain` (revoked together with the domain).
pub fn of_domain(store: &Store, domain: &str) -> Result<Vec<[u8; 32]>, StoreError> {
    Ok(store
        .tokens()?
        .into_iter()
        .filter(|(_, t)| t.domain == domain)
        .map(|(h, _)| h)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Domain;

    fn store_with(domains: &[&str]) -> Store {
        let s = Store::temporary().unwrap();
        s.commit(&Change {
            domains: domains
                .iter()
                .map(|d| {
                    (
                        d.to_string(),
                        Some(Domain {
                            name: d.to_string(),
                            ..Default::default()
                        }),
                    )
                })
                .collect(),
            ..Default::default()
        })
        .unwrap();
        s
    }

    #[test]
    fn only_the_hash_is_stored_and_scope_hides_other_domains() {
        let s = store_with(&["a.example", "b.example"]);
        let (ta, secret) = create(&s, None, "a.example").unwrap();
        assert!(secret.starts_with(SECRET_PREFIX) && ta.id.starts_with(ID_PREFIX));
        assert_eq!(s.token(&auth::hash(&secret)).unwrap(), Some(ta.clone()));
        assert!(!s.dump().unwrap().to_string().contains(&secret));
        let (tb, _) = create(&s, Some("b.example"), "b.example").unwrap();
        // Another domain, existing or not, is a 404 for a domain token.
        for d in ["a.example", "nowhere.example"] {
            assert!(matches!(
                create(&s, Some("b.example"), d),
                Err(AdminError::NotFound(_))
            ));
        }
        assert!(matches!(
            create(&s, None, "nowhere.example"),
            Err(AdminError::Conflict { field, .. }) if field == "domain"
        ));
        assert_eq!(list(&s, Some("b.example")).unwrap(), vec![tb.clone()]);
        assert_eq!(list(&s, None).unwrap().len(), 2);
        assert!(matches!(
            revoke(&s, Some("b.example"), &ta.id),
            Err(AdminError::NotFound(_))
        ));
        revoke(&s, Some("a.example"), &ta.id).unwrap();
        assert_eq!(s.token(&auth::hash(&secret)).unwrap(), None);
        assert_eq!(of_domain(&s, "b.example").unwrap().len(), 1);
    }
}
