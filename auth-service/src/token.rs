//! Access tokens: HS256 JWTs with `sub` = the user id, `iss` (`JWT_ISSUER`), `aud`
//! (`JWT_AUDIENCE`), `iat` and `exp`.
//!
//! Verification pins the algorithm to HS256: a token whose header says `none`, `HS512`,
//! `RS256` or anything else is rejected before its signature is looked at, so the classic
//! algorithm-confusion attacks do not apply. `exp`, `sub`, `iss` and `aud` are required, the
//! issuer and audience must be this service's (a token minted with a shared key for another
//! service or audience is not accepted here), and expiry is checked without leeway: this
//! service issues and verifies its own tokens on one clock.

use std::{sync::Arc, time::Duration};

use axum::{extract::FromRef, extract::FromRequestParts, http::request::Parts};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation, errors::ErrorKind};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Issues and verifies access tokens; one per process, shared through the app state.
pub struct Tokens {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    ttl: Duration,
    issuer: String,
    audience: String,
}

/// The claims this service puts in a token and requires back.
#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    sub: String,
    iss: String,
    aud: String,
    iat: u64,
    exp: u64,
}

/// A freshly issued token and how long it lives.
pub struct AccessToken {
    pub token: String,
    pub expires_in: Duration,
}

impl std::fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessToken").field("token", &"<redacted>").field("expires_in", &self.expires_in).finish()
    }
}

/// Why a request is not authenticated. Each variant is answered with 401 and a
/// `WWW-Authenticate: Bearer` challenge (RFC 6750).
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// No `Authorization: Bearer …` header.
    #[error("no bearer token")]
    Missing,
    /// The token's lifetime is over.
    #[error("the access token has expired")]
    Expired,
    /// Anything else: bad signature, wrong algorithm, malformed, missing claims.
    #[error("the access token is invalid")]
    Invalid(#[source] Option<jsonwebtoken::errors::Error>),
    /// Signing failed (a bug or a bad key; not the client's fault).
    #[error("the access token could not be signed")]
    Signing(#[source] jsonwebtoken::errors::Error),
}

impl Tokens {
    pub fn new(secret: &SecretString, ttl: Duration, issuer: &str, audience: &str) -> Self {
        let key = secret.expose_secret().as_bytes();
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 0;
        validation.set_required_spec_claims(&["exp", "sub", "iss", "aud"]);
        validation.set_issuer(&[issuer]);
        validation.set_audience(&[audience]);
        Self {
            encoding: EncodingKey::from_secret(key),
            decoding: DecodingKey::from_secret(key),
            validation,
            ttl,
            issuer: issuer.to_owned(),
            audience: audience.to_owned(),
        }
    }

    /// Signs a token for `user`, valid for the configured lifetime.
    pub fn issue(&self, user: Uuid) -> Result<AccessToken, TokenError> {
        let now = jsonwebtoken::get_current_timestamp();
        let claims = Claims {
            sub: user.to_string(),
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
            iat: now,
            exp: now.saturating_add(self.ttl.as_secs()),
        };
        let token = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .map_err(TokenError::Signing)?;
        Ok(AccessToken { token, expires_in: self.ttl })
    }

    /// The user a token was issued to, if the token is genuine and current.
    pub fn verify(&self, token: &str) -> Result<Uuid, TokenError> {
        let data =
            jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation).map_err(|error| {
                match error.kind() {
                    ErrorKind::ExpiredSignature => TokenError::Expired,
                    _ => TokenError::Invalid(Some(error)),
                }
            })?;
        data.claims.sub.parse().map_err(|_| TokenError::Invalid(None))
    }
}

/// The authenticated caller: extracting it requires a valid bearer token.
#[derive(Debug, Clone, Copy)]
pub struct BearerUser(pub Uuid);

impl<S> FromRequestParts<S> for BearerUser
where
    Arc<Tokens>: FromRef<S>,
    S: Send + Sync,
{
    /// Answered as `ApiError::Unauthorized` (401 with a challenge; see `crate::error`).
    type Rejection = TokenError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let header = parts.headers.get(axum::http::header::AUTHORIZATION).and_then(|value| value.to_str().ok());
        let token = header.and_then(bearer_token).ok_or(TokenError::Missing)?;
        let tokens = Arc::<Tokens>::from_ref(state);
        tokens.verify(token).map(BearerUser)
    }
}

/// The token of an `Authorization` value; the scheme is case-insensitive (RFC 9110 §11.1).
fn bearer_token(header: &str) -> Option<&str> {
    let (scheme, token) = header.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens(ttl: u64) -> Tokens {
        Tokens::new(&SecretString::from("k".repeat(32)), Duration::from_secs(ttl), "auth-service", "api")
    }

    #[test]
    fn issued_tokens_verify_to_their_user() {
        let tokens = tokens(60);
        let user = Uuid::new_v4();
        assert_eq!(tokens.verify(&tokens.issue(user).unwrap().token).unwrap(), user);
    }

    #[test]
    fn tokens_of_another_key_are_invalid() {
        let other = Tokens::new(&SecretString::from("o".repeat(32)), Duration::from_secs(60), "auth-service", "api");
        let token = other.issue(Uuid::new_v4()).unwrap().token;
        assert!(matches!(tokens(60).verify(&token), Err(TokenError::Invalid(_))));
    }

    #[test]
    fn tokens_of_another_issuer_or_audience_are_invalid() {
        let key = SecretString::from("k".repeat(32));
        for (issuer, audience) in [("someone-else", "api"), ("auth-service", "admin")] {
            let other = Tokens::new(&key, Duration::from_secs(60), issuer, audience);
            let token = other.issue(Uuid::new_v4()).unwrap().token;
            assert!(matches!(tokens(60).verify(&token), Err(TokenError::Invalid(_))), "{issuer} {audience}");
        }
    }

    #[test]
    fn bearer_scheme_is_case_insensitive() {
        assert_eq!(bearer_token("Bearer abc"), Some("abc"));
        assert_eq!(bearer_token("bearer  abc "), Some("abc"));
        assert_eq!(bearer_token("Basic abc"), None);
        assert_eq!(bearer_token("Bearer"), None);
    }
}
