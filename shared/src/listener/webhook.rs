//! Inbound webhook deliveries: which listener an address names, whether the sender proved it
//! may deliver there, and the event the inbox stores for it.
//!
//! Proof, against the credentials of the listener's `webhook` datasource
//! ([`crate::datasource::webhook`]):
//! - `X-Webhook-Token: <token>` (or `Authorization: Bearer <token>`), compared by SHA-256
//!   digest in constant time; or
//! - `X-Webhook-Signature: sha256=<hex>` with `X-Webhook-Timestamp: <unix seconds>`, the hex
//!   being HMAC-SHA256 keyed with the secret's text over `"<timestamp>.<raw body>"` (the exact
//!   bytes received). A timestamp more than [`MAX_CLOCK_SKEW_SECONDS`] from the server's clock,
//!   either way, is refused, so a captured delivery cannot be replayed later.
//!
//! When a token is presented it alone decides; otherwise the signature does.
//!
//! The stored event: `{method, path, receivedAt, headers, body, bodyEncoding}`. `body` is the
//! parsed JSON when the content type is JSON (`application/json`, `…+json`) and the body is not
//! empty (`bodyEncoding: "json"`); otherwise the text when it is UTF-8 without NUL (`"text"`);
//! otherwise standard base64 of the bytes (`"base64"`). `headers` keeps `content-type`,
//! `user-agent` and `x-*` headers, except those that carry credentials (token, signature, API
//! keys, …): the event is shown to whoever reads the listener.

use super::inbox::{self, Ingested, NewEvent, Source};
use crate::crypto::VaultKey;
use crate::datasource::{secrets, webhook};
use crate::ids::TenantId;
use crate::workflow::storable::contains_nul;
use crate::{Error, Result};
use base64::Engine as _;
use hmac::{KeyInit, Mac};
use serde_json::{Map, Value, json};
use sqlx::{PgExecutor, PgPool};
use subtle::ConstantTimeEq;
use uuid::Uuid;

/// How far a signed delivery's timestamp may be from the server's clock (5 minutes).
pub const MAX_CLOCK_SKEW_SECONDS: i64 = 300;
/// Longest `Idempotency-Key` accepted (the key is the inbox's dedupe key).
pub const MAX_IDEMPOTENCY_KEY_CHARS: usize = 255;
/// The header a token is presented in.
pub const TOKEN_HEADER: &str = "X-Webhook-Token";
/// The header a signature is presented in.
pub const SIGNATURE_HEADER: &str = "X-Webhook-Signature";
/// The header of the signed timestamp.
pub const TIMESTAMP_HEADER: &str = "X-Webhook-Timestamp";

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

/// An active webhook listener and its datasource's stored credentials.
#[derive(Clone, sqlx::FromRow)]
pub struct Endpoint {
    #[sqlx(rename = "listenerID")]
    pub listener_id: Uuid,
    #[sqlx(rename = "tenantID")]
    pub tenant_id: TenantId,
    /// `webhookToken`: the token's digest; `NULL` when none was issued (every token fails).
    #[sqlx(rename = "webhookToken")]
    token_digest: Option<String>,
    /// `webhookSecret`: the sealed secret; `NULL` when none was issued.
    #[sqlx(rename = "webhookSecret")]
    sealed_secret: Option<String>,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("listener_id", &self.listener_id)
            .field("tenant_id", &self.tenant_id)
            .finish_non_exhaustive()
    }
}

const ENDPOINT_SELECT: &str = r#"SELECT l."listenerID", l."tenantID", d."webhookToken", d."webhookSecret"
    FROM "tblListeners" l
    JOIN "tblDatasources" d ON d."datasourceID" = l."datasourceID" AND d."tenantID" = l."tenantID""#;

/// The tenant's active (or `error`) webhook listener at `endpoint_path`. The path is matched
/// as stored, with or without a leading `/`.
pub async fn find_by_path(
    conn: impl PgExecutor<'_>,
    tenant_id: TenantId,
    endpoint_path: &str,
) -> Result<Option<Endpoint>> {
    let path = endpoint_path.trim_start_matches('/');
    if path.is_empty() {
        return Ok(None);
    }
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
        r#"{ENDPOINT_SELECT}
           WHERE l."tenantID" = $1 AND l."endpointPath" IN ($2, '/' || $2)
             AND l."listenerType" = 'webhook' AND l."status" <> 'inactive'
           ORDER BY l."endpointPath" = $2 DESC LIMIT 1"#
    )))
    .bind(tenant_id)
    .bind(path)
    .fetch_optional(conn)
    .await?)
}

/// The active (or `error`) webhook listener with this id, whatever its tenant.
pub async fn find_by_id(conn: impl PgExecutor<'_>, listener_id: Uuid) -> Result<Option<Endpoint>> {
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
        r#"{ENDPOINT_SELECT}
           WHERE l."listenerID" = $1 AND l."listenerType" = 'webhook' AND l."status" <> 'inactive'"#
    )))
    .bind(listener_id)
    .fetch_optional(conn)
    .await?)
}

/// What a sender presented to prove itself.
#[derive(Debug, Clone, Copy)]
pub enum Proof<'a> {
    Token(&'a str),
    Signature {
        signature: &'a str,
        timestamp: &'a str,
    },
    Missing,
}

/// Why a delivery is refused (401). The message never says what the right value would be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused(pub String);

impl Endpoint {
    /// Checks `proof` for a delivery of `body` received at `now` (unix seconds).
    pub fn verify(
        &self,
        vault: Option<&VaultKey>,
        proof: Proof<'_>,
        body: &[u8],
        now: i64,
    ) -> std::result::Result<(), Refused> {
        let invalid = || Refused("the webhook token or signature is not valid".into());
        match proof {
            Proof::Missing => Err(Refused(format!(
                "send {TOKEN_HEADER} (or Authorization: Bearer), or {SIGNATURE_HEADER} with {TIMESTAMP_HEADER}"
            ))),
            Proof::Token(token) => {
                let stored = self.token_digest.as_deref().ok_or_else(invalid)?;
                let presented = webhook::token_digest(token.trim());
                let same: bool = presented.as_bytes().ct_eq(stored.as_bytes()).into();
                same.then_some(()).ok_or_else(invalid)
            }
            Proof::Signature {
                signature,
                timestamp,
            } => {
                let at: i64 = timestamp
                    .trim()
                    .parse()
                    .map_err(|_| Refused(format!("{TIMESTAMP_HEADER} must be unix seconds")))?;
                if now.abs_diff(at) > MAX_CLOCK_SKEW_SECONDS.unsigned_abs() {
                    return Err(Refused(format!(
                        "{TIMESTAMP_HEADER} is more than {MAX_CLOCK_SKEW_SECONDS} s from the server's clock"
                    )));
                }
                let mac = signature
                    .trim()
                    .strip_prefix("sha256=")
                    .and_then(|h| hex::decode(h).ok())
                    .ok_or_else(invalid)?;
                let secret = self.secret(vault).ok_or_else(invalid)?;
                let mut expected = keyed(&secret);
                expected.update(timestamp.trim().as_bytes());
                expected.update(b".");
                expected.update(body);
                expected.verify_slice(&mac).map_err(|_| invalid())
            }
        }
    }

    fn secret(&self, vault: Option<&VaultKey>) -> Option<String> {
        let sealed = self.sealed_secret.as_deref()?;
        match webhook::open_secret(vault?, sealed) {
            Ok(secret) => Some(secret),
            Err(err) => {
                tracing::warn!(listener = %self.listener_id, error = %err, "webhook secret does not open");
                None
            }
        }
    }
}

fn keyed(secret: &str) -> HmacSha256 {
    HmacSha256::new_from_slice(secret.as_bytes()).expect("HMAC takes keys of any length")
}

/// The `X-Webhook-Signature` value for `body` sent at `timestamp`, for senders (and tests).
pub fn sign(secret: &str, timestamp: i64, body: &[u8]) -> String {
    let mut mac = keyed(secret);
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// Why a body cannot be stored (400).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodyError {
    /// A JSON content type with a body that does not parse.
    InvalidJson(String),
    /// JSON with a `\u0000` in a string or key: PostgreSQL cannot store it.
    Nul,
}

/// The body as stored, and its `bodyEncoding` (see the module docs).
pub fn decode_body(
    content_type: Option<&str>,
    bytes: &[u8],
) -> std::result::Result<(Value, &'static str), BodyError> {
    if !bytes.is_empty() && content_type.is_some_and(is_json_type) {
        let value: Value =
            serde_json::from_slice(bytes).map_err(|e| BodyError::InvalidJson(e.to_string()))?;
        if contains_nul(&value) {
            return Err(BodyError::Nul);
        }
        return Ok((value, "json"));
    }
    match std::str::from_utf8(bytes) {
        Ok(text) if !text.contains('\0') => Ok((Value::String(text.to_owned()), "text")),
        _ => Ok((
            Value::String(base64::engine::general_purpose::STANDARD.encode(bytes)),
            "base64",
        )),
    }
}

fn is_json_type(content_type: &str) -> bool {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

/// Whether a request header is kept in the stored event: `content-type`, `user-agent`, and
/// `x-*` headers that carry no credentials.
pub fn keeps_header(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    name == "content-type"
        || name == "user-agent"
        || (name.starts_with("x-") && !secrets::is_credential_name(&name))
}

/// What was received, for [`event`].
#[derive(Debug)]
pub struct Delivery<'a> {
    pub method: &'a str,
    /// The path as addressed: `/webhooks/v1/inbound/{tenantID}/{endpointPath}` or
    /// `/webhooks/v1/inbound/{listenerID}`.
    pub path: &'a str,
    /// Request headers (name, value); only those [`keeps_header`] allows are stored.
    pub headers: Vec<(&'a str, &'a [u8])>,
    pub body: Value,
    pub body_encoding: &'static str,
    pub received_at: chrono::DateTime<chrono::Utc>,
}

/// The raw event stored for a delivery. A header sent more than once keeps its values joined
/// with `, `.
pub fn event(delivery: Delivery<'_>) -> Value {
    let mut headers = Map::new();
    for (name, value) in delivery.headers {
        if !keeps_header(name) {
            continue;
        }
        let value = String::from_utf8_lossy(value).replace('\0', "");
        match headers.get_mut(&name.to_ascii_lowercase()) {
            Some(Value::String(seen)) => {
                seen.push_str(", ");
                seen.push_str(&value);
            }
            _ => {
                headers.insert(name.to_ascii_lowercase(), Value::String(value));
            }
        }
    }
    json!({
        "method": delivery.method,
        "path": delivery.path,
        "receivedAt": delivery.received_at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        "headers": headers,
        "body": delivery.body,
        "bodyEncoding": delivery.body_encoding,
    })
}

/// Checks an `Idempotency-Key` value: 1 to [`MAX_IDEMPOTENCY_KEY_CHARS`] characters.
pub fn idempotency_key(value: &str) -> Result<String> {
    let chars = value.chars().count();
    if chars == 0 || chars > MAX_IDEMPOTENCY_KEY_CHARS {
        return Err(Error::Invalid(format!(
            "Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY_CHARS} characters; it has {chars}"
        )));
    }
    Ok(value.to_owned())
}

/// Commits the event for `endpoint` (one transaction, one insert); answers once committed. A
/// `dedupe_key` seen before stores nothing and answers the first event's id.
pub async fn accept(
    pool: &PgPool,
    endpoint: &Endpoint,
    dedupe_key: Option<String>,
    raw: Value,
) -> Result<Ingested> {
    let mut tx = pool.begin().await?;
    let ingested = inbox::ingest(
        &mut tx,
        endpoint.listener_id,
        endpoint.tenant_id,
        Source::Webhook,
        &[NewEvent { dedupe_key, raw }],
    )
    .await?;
    tx.commit().await?;
    ingested
        .into_iter()
        .next()
        .ok_or_else(|| Error::Invalid("the inbox answered no event".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint(vault: &VaultKey, token: &str, secret: &str) -> Endpoint {
        Endpoint {
            listener_id: Uuid::nil(),
            tenant_id: TenantId(Uuid::nil()),
            token_digest: Some(webhook::token_digest(token)),
            sealed_secret: Some(webhook::seal_secret(vault, secret)),
        }
    }

    #[test]
    fn signature_matches_an_independent_hmac() {
        // printf '1700000000.{"a":1}' | openssl dgst -sha256 -hmac 'shh'
        assert_eq!(
            sign("shh", 1_700_000_000, br#"{"a":1}"#),
            "sha256=be310eac0f84daf469d630347a950258de768b365563ab68f29f2f783473d547"
        );
    }

    #[test]
    fn a_signature_is_accepted_within_five_minutes_and_refused_outside() {
        let vault = VaultKey::generate();
        let ep = endpoint(&vault, "tok", "shh");
        let now = 1_700_000_000;
        let body = b"payload";
        for at in [now, now - 300, now + 300] {
            let signature = sign("shh", at, body);
            let timestamp = at.to_string();
            let proof = Proof::Signature {
                signature: &signature,
                timestamp: &timestamp,
            };
            assert_eq!(ep.verify(Some(&vault), proof, body, now), Ok(()), "{at}");
        }
        for at in [now - 301, now + 301] {
            let signature = sign("shh", at, body);
            let timestamp = at.to_string();
            let proof = Proof::Signature {
                signature: &signature,
                timestamp: &timestamp,
            };
            assert!(ep.verify(Some(&vault), proof, body, now).is_err(), "{at}");
        }
    }

    #[test]
    fn a_wrong_secret_body_or_token_is_refused() {
        let vault = VaultKey::generate();
        let ep = endpoint(&vault, "tok", "shh");
        let now = 1_700_000_000;
        let timestamp = now.to_string();
        let other_secret = sign("other", now, b"x");
        let other_body = sign("shh", now, b"y");
        for signature in [other_secret.as_str(), other_body.as_str(), "sha256=zz", ""] {
            let proof = Proof::Signature {
                signature,
                timestamp: &timestamp,
            };
            assert!(ep.verify(Some(&vault), proof, b"x", now).is_err());
        }
        assert!(
            ep.verify(Some(&vault), Proof::Token("tok"), b"", now)
                .is_ok()
        );
        assert!(
            ep.verify(Some(&vault), Proof::Token("tok2"), b"", now)
                .is_err()
        );
        assert!(ep.verify(Some(&vault), Proof::Missing, b"", now).is_err());
        let signature = sign("shh", now, b"x");
        let proof = Proof::Signature {
            signature: &signature,
            timestamp: &timestamp,
        };
        assert!(
            ep.verify(None, proof, b"x", now).is_err(),
            "no vault, no secret"
        );
    }

    #[test]
    fn bodies_are_json_text_or_base64() {
        let json_type = Some("application/json; charset=utf-8");
        assert_eq!(
            decode_body(json_type, br#"{"a":1}"#),
            Ok((json!({"a": 1}), "json"))
        );
        assert_eq!(
            decode_body(Some("application/cloudevents+json"), b"[1]"),
            Ok((json!([1]), "json"))
        );
        assert!(matches!(
            decode_body(json_type, b"{"),
            Err(BodyError::InvalidJson(_))
        ));
        assert_eq!(
            decode_body(json_type, br#"{"a":"\u0000"}"#),
            Err(BodyError::Nul)
        );
        assert_eq!(decode_body(None, b"a=1"), Ok((json!("a=1"), "text")));
        assert_eq!(decode_body(json_type, b""), Ok((json!(""), "text")));
        assert_eq!(
            decode_body(Some("application/octet-stream"), &[0xff, 0x00]),
            Ok((json!("/wA="), "base64"))
        );
        assert_eq!(decode_body(None, b"a\0b"), Ok((json!("YQBi"), "base64")));
    }

    #[test]
    fn credential_headers_are_not_kept() {
        for kept in [
            "Content-Type",
            "user-agent",
            "x-github-event",
            "X-Request-Id",
            "x-webhook-timestamp",
        ] {
            assert!(keeps_header(kept), "{kept}");
        }
        for dropped in [
            "x-webhook-token",
            "X-Webhook-Signature",
            "authorization",
            "x-api-key",
            "cookie",
            "x-hub-signature-256",
            "accept",
        ] {
            assert!(!keeps_header(dropped), "{dropped}");
        }
    }

    #[test]
    fn idempotency_keys_are_bounded() {
        assert!(idempotency_key("k").is_ok());
        assert!(idempotency_key(&"é".repeat(255)).is_ok());
        assert!(idempotency_key(&"k".repeat(256)).is_err());
        assert!(idempotency_key("").is_err());
    }
}
