//! Who may call the API: bearer tokens, each with scopes, compared in constant time.
//!
//! With no token configured the API is open, which the daemon allows only on a loopback
//! address; once any token is configured every route but the health checks needs one.

use std::marker::PhantomData;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, header};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::Api;
use super::error::ApiError;

/// The shortest secret a token may have: shorter ones are guessable.
pub const MIN_TOKEN_CHARS: usize = 16;

/// What a token allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// Read events, follow the live feed, list subscriptions, parked events and plugins.
    Read,
    /// Append events.
    Append,
    /// Everything: also reset subscriptions, replay and skip parked events.
    Admin,
}

impl Scope {
    fn name(self) -> &'static str {
        match self {
            Self::Read => "read",
            Self::Append => "append",
            Self::Admin => "admin",
        }
    }
}

/// One configured token: its name (for logs and errors), the digest of its secret, its
/// scopes. The secret itself is not kept.
#[derive(Clone)]
struct Token {
    name: String,
    digest: [u8; 32],
    scopes: Vec<Scope>,
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Token")
            .field("name", &self.name)
            .field("scopes", &self.scopes)
            .finish_non_exhaustive()
    }
}

/// The configured tokens.
#[derive(Debug, Clone, Default)]
pub struct Tokens(Vec<Token>);

impl Tokens {
    /// Adds the token `name`; refuses a secret too short to be safe, or no scope.
    pub fn add(&mut self, name: &str, secret: &str, scopes: &[Scope]) -> Result<(), String> {
        if secret.chars().count() < MIN_TOKEN_CHARS {
            return Err(format!(
                "the secret must be at least {MIN_TOKEN_CHARS} characters"
            ));
        }
        if scopes.is_empty() {
            return Err("give it at least one scope (read, append, admin)".to_owned());
        }
        self.0.push(Token {
            name: name.to_owned(),
            digest: Sha256::digest(secret.as_bytes()).into(),
            scopes: scopes.to_vec(),
        });
        Ok(())
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether the request's bearer token grants `needed`. Every configured token is
    /// compared, each in constant time, so the time taken says nothing about the secrets.
    fn authorize(&self, headers: &HeaderMap, needed: Scope) -> Result<(), ApiError> {
        if self.0.is_empty() {
            return Ok(());
        }
        let presented = headers
            .get(header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.strip_prefix("Bearer "))
            .ok_or_else(|| {
                ApiError::unauthorized(
                    "this route needs a token: send `Authorization: Bearer <token>`",
                )
            })?;
        let digest: [u8; 32] = Sha256::digest(presented.trim().as_bytes()).into();
        let mut found: Option<&Token> = None;
        for token in &self.0 {
            if bool::from(token.digest.ct_eq(&digest)) {
                found = Some(token);
            }
        }
        let token = found.ok_or_else(|| ApiError::unauthorized("unknown token"))?;
        if token
            .scopes
            .iter()
            .any(|scope| *scope == needed || *scope == Scope::Admin)
        {
            Ok(())
        } else {
            Err(ApiError::forbidden(format!(
                "token `{}` lacks the `{}` scope this route needs",
                token.name,
                needed.name()
            )))
        }
    }
}

/// A scope, as a type a handler names to require it.
pub trait Needs: Send + Sync {
    const SCOPE: Scope;
}

pub struct ReadScope;
pub struct AppendScope;
pub struct AdminScope;

impl Needs for ReadScope {
    const SCOPE: Scope = Scope::Read;
}
impl Needs for AppendScope {
    const SCOPE: Scope = Scope::Append;
}
impl Needs for AdminScope {
    const SCOPE: Scope = Scope::Admin;
}

/// Proof that the request's token grants `S`: taking it as a handler's first argument
/// checks the token before anything else of the request (its body) is read.
pub struct Granted<S>(PhantomData<S>);

impl<S: Needs> FromRequestParts<Api> for Granted<S> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, api: &Api) -> Result<Self, Self::Rejection> {
        api.tokens.authorize(&parts.headers, S::SCOPE)?;
        Ok(Self(PhantomData))
    }
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn bearer(token: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_str(&format!("Bearer {token}")).unwrap(),
        );
        headers
    }

    #[test]
    fn scopes_are_checked_and_admin_grants_everything() {
        let mut tokens = Tokens::default();
        tokens
            .add("reader", "r-0123456789abcdef", &[Scope::Read])
            .unwrap();
        tokens
            .add("ops", "a-0123456789abcdef", &[Scope::Admin])
            .unwrap();
        assert!(
            tokens
                .authorize(&bearer("r-0123456789abcdef"), Scope::Read)
                .is_ok()
        );
        let refused = tokens
            .authorize(&bearer("r-0123456789abcdef"), Scope::Append)
            .unwrap_err();
        assert_eq!(refused.status.as_u16(), 403);
        assert!(refused.message.contains("`append`"), "{}", refused.message);
        for scope in [Scope::Read, Scope::Append, Scope::Admin] {
            assert!(
                tokens
                    .authorize(&bearer("a-0123456789abcdef"), scope)
                    .is_ok()
            );
        }
        let unknown = tokens.authorize(&bearer("nope-0123456789abc"), Scope::Read);
        assert_eq!(unknown.unwrap_err().status.as_u16(), 401);
        let missing = tokens.authorize(&HeaderMap::new(), Scope::Read);
        assert_eq!(missing.unwrap_err().status.as_u16(), 401);
    }

    #[test]
    fn short_secrets_and_scopeless_tokens_are_refused() {
        let mut tokens = Tokens::default();
        assert!(tokens.add("t", "short", &[Scope::Read]).is_err());
        assert!(tokens.add("t", "long-enough-secret-1", &[]).is_err());
        assert!(tokens.is_empty());
        assert!(tokens.authorize(&HeaderMap::new(), Scope::Admin).is_ok());
    }
}
