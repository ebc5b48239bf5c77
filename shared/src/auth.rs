//! Who is calling: API keys (`Authorization: api_key <64 hex>`) and user JWTs
//! (`Authorization: Bearer <token>`, subject = `tblUsers.firebaseID`).

use crate::config::JwtConfig;
use crate::crypto::{API_KEY_PREFIX_LEN, RawApiKey};
use crate::ids::{ApiKeyId, TenantId, UserId};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use sqlx::PgPool;

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// A person, through a verified JWT.
    User {
        /// `tblUsers.userID`.
        user_id: UserId,
    },
    /// An API key; it acts in exactly one tenant, through its roles.
    ApiKey {
        /// `tblAPIKeys.apiKeyID`.
        api_key_id: ApiKeyId,
        /// The only tenant the key can reach.
        tenant_id: TenantId,
        /// The user who created the key, if a user did.
        creator_id: Option<UserId>,
    },
}

impl Principal {
    /// The user behind this call, if it is a user.
    pub fn user_id(&self) -> Option<UserId> {
        match self {
            Principal::User { user_id } => Some(*user_id),
            Principal::ApiKey { .. } => None,
        }
    }

    /// The API key behind this call, if it is a key.
    pub fn api_key_id(&self) -> Option<ApiKeyId> {
        match self {
            Principal::ApiKey { api_key_id, .. } => Some(*api_key_id),
            Principal::User { .. } => None,
        }
    }

    /// Who an asset created by this call is attributed to (`creatorID` / `createdByApiKeyID`).
    pub fn creator(&self) -> crate::api_key::Creator {
        crate::api_key::Creator {
            user_id: self.user_id(),
            api_key_id: self.api_key_id(),
        }
    }
}

/// Why a request is not authenticated. Every variant is a 401 with its `code`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No `Authorization` header.
    #[error("missing Authorization header (use `api_key <key>` or `Bearer <token>`)")]
    Missing,
    /// A scheme other than `api_key` or `Bearer`.
    #[error("unsupported Authorization scheme (use `api_key <key>` or `Bearer <token>`)")]
    UnsupportedScheme,
    /// Not 64 hex chars, or no key with that value.
    #[error("invalid API key")]
    InvalidApiKey,
    /// The key exists but is disabled.
    #[error("API key is disabled")]
    ApiKeyDisabled,
    /// Signature, algorithm, issuer or audience check failed.
    #[error("invalid token")]
    InvalidToken,
    /// The token's `exp` has passed.
    #[error("token expired")]
    TokenExpired,
    /// The token's `nbf` is still in the future (beyond the clock-skew leeway).
    #[error("token not yet valid")]
    TokenNotYetValid,
    /// No key is configured for the token's algorithm.
    #[error("user tokens are not accepted: no JWT key is configured")]
    JwtNotConfigured,
    /// The token is valid but no user has its subject as `firebaseID`.
    #[error("unknown user")]
    UnknownUser,
    /// The user exists but is disabled.
    #[error("user is disabled")]
    UserDisabled,
    /// The database could not be asked.
    #[error("authentication backend unavailable")]
    Backend,
}

impl AuthError {
    /// Stable snake_case code for the error body.
    pub fn code(&self) -> &'static str {
        match self {
            AuthError::Missing => "missing_credentials",
            AuthError::UnsupportedScheme => "unsupported_auth_scheme",
            AuthError::InvalidApiKey => "invalid_api_key",
            AuthError::ApiKeyDisabled => "api_key_disabled",
            AuthError::InvalidToken => "invalid_token",
            AuthError::TokenExpired => "token_expired",
            AuthError::TokenNotYetValid => "token_not_yet_valid",
            AuthError::JwtNotConfigured => "jwt_not_configured",
            AuthError::UnknownUser => "unknown_user",
            AuthError::UserDisabled => "user_disabled",
            AuthError::Backend => "auth_unavailable",
        }
    }
}

/// The credential named by an `Authorization` header value.
#[derive(Debug)]
pub enum Credential<'a> {
    /// `api_key <key>`.
    ApiKey(&'a str),
    /// `Bearer <jwt>`.
    Bearer(&'a str),
}

impl<'a> Credential<'a> {
    /// Splits a header value into scheme and credential (scheme case-insensitive).
    pub fn parse(header: &'a str) -> Result<Self, AuthError> {
        let (scheme, rest) = header
            .trim()
            .split_once(' ')
            .ok_or(AuthError::UnsupportedScheme)?;
        let rest = rest.trim();
        if scheme.eq_ignore_ascii_case("api_key") {
            Ok(Credential::ApiKey(rest))
        } else if scheme.eq_ignore_ascii_case("bearer") {
            Ok(Credential::Bearer(rest))
        } else {
            Err(AuthError::UnsupportedScheme)
        }
    }
}

#[derive(serde::Deserialize)]
struct Claims {
    sub: String,
}

/// Verifies user JWTs with the configured keys; built once at startup.
#[derive(Clone)]
pub struct JwtVerifier {
    hs256: Option<(DecodingKey, Validation)>,
    rs256: Option<(DecodingKey, Validation)>,
}

impl JwtVerifier {
    /// Builds decoding keys from the configuration; a malformed PEM is a startup error.
    pub fn new(config: &JwtConfig) -> anyhow::Result<Self> {
        let validation = |alg| {
            let mut v = Validation::new(alg);
            v.set_required_spec_claims(&["exp", "sub"]);
            // A token minted for later (`nbf`) must not work now; jsonwebtoken skips the
            // check unless asked. The default 60 s leeway absorbs clock skew.
            v.validate_nbf = true;
            match &config.issuer {
                Some(iss) => v.set_issuer(&[iss]),
                None => v.iss = None,
            }
            match &config.audience {
                Some(aud) => v.set_audience(&[aud]),
                None => v.validate_aud = false,
            }
            v
        };
        let hs256 = config
            .hs256_secret
            .as_ref()
            .map(|s| {
                DecodingKey::from_secret(s.as_bytes()).map(|k| (k, validation(Algorithm::HS256)))
            })
            .transpose()
            .map_err(|e| anyhow::anyhow!("JET_JWT_HS256_SECRET: {e}"))?;
        let rs256 = match &config.rs256_public_key_pem {
            Some(pem) => Some((
                DecodingKey::from_rsa_pem(pem.as_bytes())
                    .map_err(|e| anyhow::anyhow!("JET_JWT_RS256_PUBLIC_KEY: {e}"))?,
                validation(Algorithm::RS256),
            )),
            None => None,
        };
        Ok(Self { hs256, rs256 })
    }

    /// The token's subject, after signature, algorithm, expiry, issuer and audience checks.
    /// Only algorithms with a configured key are accepted (no algorithm confusion).
    pub fn verify(&self, token: &str) -> Result<String, AuthError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| AuthError::InvalidToken)?;
        let (key, validation) = match header.alg {
            Algorithm::HS256 => self.hs256.as_ref(),
            Algorithm::RS256 => self.rs256.as_ref(),
            _ => return Err(AuthError::InvalidToken),
        }
        .ok_or(if self.hs256.is_none() && self.rs256.is_none() {
            AuthError::JwtNotConfigured
        } else {
            AuthError::InvalidToken
        })?;
        let data =
            jsonwebtoken::decode::<Claims>(token, key, validation).map_err(|e| match e.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => AuthError::TokenExpired,
                jsonwebtoken::errors::ErrorKind::ImmatureSignature => AuthError::TokenNotYetValid,
                _ => AuthError::InvalidToken,
            })?;
        Ok(data.claims.sub)
    }
}

/// Resolves an `Authorization` header value to a principal.
pub async fn authenticate(
    pool: &PgPool,
    jwt: &JwtVerifier,
    header: Option<&str>,
) -> Result<Principal, AuthError> {
    match Credential::parse(header.ok_or(AuthError::Missing)?)? {
        Credential::ApiKey(raw) => authenticate_api_key(pool, raw).await,
        Credential::Bearer(token) => {
            let subject = jwt.verify(token)?;
            authenticate_user(pool, &subject).await
        }
    }
}

#[derive(sqlx::FromRow)]
struct KeyCandidate {
    #[sqlx(rename = "apiKeyID")]
    api_key_id: ApiKeyId,
    #[sqlx(rename = "tenantID")]
    tenant_id: TenantId,
    #[sqlx(rename = "apiKeyHash")]
    api_key_hash: String,
    #[sqlx(rename = "isDisabled")]
    is_disabled: bool,
    #[sqlx(rename = "creatorID")]
    creator_id: Option<UserId>,
}

async fn authenticate_api_key(pool: &PgPool, raw: &str) -> Result<Principal, AuthError> {
    let key = RawApiKey::parse(raw).ok_or(AuthError::InvalidApiKey)?;
    // The prefix narrows the lookup; the hash comparison decides, in constant time.
    let candidates: Vec<KeyCandidate> = sqlx::query_as(
        r#"SELECT "apiKeyID", "tenantID", "apiKeyHash", "isDisabled", "creatorID"
           FROM "tblAPIKeys" WHERE "apiKeyPrefix" = $1"#,
    )
    .bind(&key.prefix()[..API_KEY_PREFIX_LEN])
    .fetch_all(pool)
    .await
    .map_err(|err| {
        tracing::error!(error = %err, "API key lookup failed");
        AuthError::Backend
    })?;
    let found = candidates
        .into_iter()
        .find(|c| key.matches(&c.api_key_hash))
        .ok_or(AuthError::InvalidApiKey)?;
    if found.is_disabled {
        return Err(AuthError::ApiKeyDisabled);
    }
    Ok(Principal::ApiKey {
        api_key_id: found.api_key_id,
        tenant_id: found.tenant_id,
        creator_id: found.creator_id,
    })
}

async fn authenticate_user(pool: &PgPool, firebase_id: &str) -> Result<Principal, AuthError> {
    let row: Option<(UserId, Option<bool>)> =
        sqlx::query_as(r#"SELECT "userID", "isDisabled" FROM "tblUsers" WHERE "firebaseID" = $1"#)
            .bind(firebase_id)
            .fetch_optional(pool)
            .await
            .map_err(|err| {
                tracing::error!(error = %err, "user lookup failed");
                AuthError::Backend
            })?;
    match row {
        None => Err(AuthError::UnknownUser),
        Some((_, Some(true))) => Err(AuthError::UserDisabled),
        Some((user_id, _)) => Ok(Principal::User { user_id }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_schemes_are_recognised_case_insensitively() {
        assert!(matches!(
            Credential::parse("api_key abc"),
            Ok(Credential::ApiKey("abc"))
        ));
        assert!(matches!(
            Credential::parse("Bearer t.o.k"),
            Ok(Credential::Bearer("t.o.k"))
        ));
        assert!(matches!(
            Credential::parse("bearer x"),
            Ok(Credential::Bearer("x"))
        ));
        assert_eq!(
            Credential::parse("Basic dXNlcg==").err(),
            Some(AuthError::UnsupportedScheme)
        );
        assert_eq!(
            Credential::parse("token").err(),
            Some(AuthError::UnsupportedScheme)
        );
    }

    #[test]
    fn tokens_without_a_configured_key_are_refused() {
        let verifier = JwtVerifier::new(&JwtConfig::default()).expect("empty config is valid");
        let token = jsonwebtoken::encode(
            &jsonwebtoken::Header::new(Algorithm::HS256),
            &serde_json::json!({"sub": "u", "exp": 4_000_000_000u64}),
            &jsonwebtoken::EncodingKey::from_secret(b"s").expect("key"),
        )
        .expect("encode");
        assert_eq!(verifier.verify(&token), Err(AuthError::JwtNotConfigured));
    }

    #[test]
    fn hs256_tokens_verify_and_expire() {
        let config = JwtConfig {
            hs256_secret: Some("secret".into()),
            ..Default::default()
        };
        let verifier = JwtVerifier::new(&config).expect("valid");
        let sign = |exp: u64, secret: &[u8]| {
            jsonwebtoken::encode(
                &jsonwebtoken::Header::new(Algorithm::HS256),
                &serde_json::json!({"sub": "firebase-uid", "exp": exp}),
                &jsonwebtoken::EncodingKey::from_secret(secret).expect("key"),
            )
            .expect("encode")
        };
        assert_eq!(
            verifier.verify(&sign(4_000_000_000, b"secret")),
            Ok("firebase-uid".into())
        );
        assert_eq!(
            verifier.verify(&sign(1_000, b"secret")),
            Err(AuthError::TokenExpired)
        );
        assert_eq!(
            verifier.verify(&sign(4_000_000_000, b"other")),
            Err(AuthError::InvalidToken)
        );
        assert_eq!(verifier.verify("not-a-jwt"), Err(AuthError::InvalidToken));
    }

    #[test]
    fn tokens_from_the_future_are_refused_until_their_nbf() {
        let config = JwtConfig {
            hs256_secret: Some("secret".into()),
            ..Default::default()
        };
        let verifier = JwtVerifier::new(&config).expect("valid");
        let now = chrono::Utc::now().timestamp();
        let sign = |nbf: i64| {
            jsonwebtoken::encode(
                &jsonwebtoken::Header::new(Algorithm::HS256),
                &serde_json::json!({"sub": "u", "nbf": nbf, "exp": nbf + 3600}),
                &jsonwebtoken::EncodingKey::from_secret(b"secret").expect("key"),
            )
            .expect("encode")
        };
        assert_eq!(
            verifier.verify(&sign(now + 3600)),
            Err(AuthError::TokenNotYetValid)
        );
        assert_eq!(verifier.verify(&sign(now - 10)), Ok("u".into()));
    }
}
