//! Signing user tokens the way an identity provider would.

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;

/// The HS256 secret the test service trusts.
pub const HS256_SECRET: &str = "test-hs256-secret-for-jet-fleet";

/// The RS256 public key the test service trusts.
pub const RS256_PUBLIC_PEM: &str = include_str!("../fixtures/jwt_rs256_public.pem");
const RS256_PRIVATE_PEM: &str = include_str!("../fixtures/jwt_rs256_private.pem");

fn exp_in(seconds: i64) -> i64 {
    chrono::Utc::now().timestamp() + seconds
}

/// An HS256 token for `subject`, valid for an hour.
pub fn hs256(subject: &str) -> String {
    hs256_with(subject, exp_in(3600), HS256_SECRET)
}

/// An HS256 token with a chosen expiry and secret.
pub fn hs256_with(subject: &str, exp: i64, secret: &str) -> String {
    let key = EncodingKey::from_secret(secret.as_bytes()).expect("HMAC key");
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &json!({"sub": subject, "exp": exp}),
        &key,
    )
    .expect("sign")
}

/// An RS256 token for `subject`, valid for an hour.
pub fn rs256(subject: &str) -> String {
    let key = EncodingKey::from_rsa_pem(RS256_PRIVATE_PEM.as_bytes()).expect("RSA key");
    jsonwebtoken::encode(
        &Header::new(Algorithm::RS256),
        &json!({"sub": subject, "exp": exp_in(3600)}),
        &key,
    )
    .expect("sign")
}

/// An HS256 token that is not valid before `nbf` (seconds since the epoch), for an hour after.
pub fn hs256_not_before(subject: &str, nbf: i64) -> String {
    let key = EncodingKey::from_secret(HS256_SECRET.as_bytes()).expect("HMAC key");
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &json!({"sub": subject, "nbf": nbf, "exp": nbf + 3600}),
        &key,
    )
    .expect("sign")
}

/// An expired HS256 token (well past the default leeway).
pub fn expired(subject: &str) -> String {
    hs256_with(subject, exp_in(-3600), HS256_SECRET)
}
