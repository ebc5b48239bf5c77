//! Credentials of `webhook` datasources: a token a sender presents and a secret it signs
//! deliveries with (see [`crate::listener::webhook`]). A webhook datasource has no driver: it
//! runs no queries and no connection tests, it only receives events.
//!
//! Storage: the token only as its SHA-256 hex digest in `webhookToken` (UNIQUE, so a digest
//! names at most one datasource); the secret sealed with the vault key, the envelope's JSON
//! text in `webhookSecret` (it fits the column's 255 characters, see the tests). Both are shown
//! once, in the response that issued them, and masked afterwards.

use crate::crypto::{EnvelopeError, VaultKey, sha256_hex};
use crate::ids::TenantId;
use crate::{Error, Result};
use serde_json::Value;
use sqlx::PgConnection;
use uuid::Uuid;

/// The `datasourceType` of webhook datasources.
pub const TYPE: &str = "webhook";

/// Token and secret as issued: 32 random bytes each, as 64 lowercase hex characters. Shown
/// to the caller once; only their digest and envelope are stored.
#[derive(Clone)]
pub struct Credentials {
    pub token: String,
    pub secret: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Credentials(<redacted>)")
    }
}

impl Credentials {
    /// Draws a new token and secret from the operating system's CSPRNG.
    pub fn generate() -> Self {
        let draw = || {
            let mut bytes = [0u8; 32];
            getrandom::fill(&mut bytes).expect("the OS random source is available");
            hex::encode(bytes)
        };
        Self {
            token: draw(),
            secret: draw(),
        }
    }
}

/// What `webhookToken` holds for `token`: its lowercase hex SHA-256.
pub fn token_digest(token: &str) -> String {
    sha256_hex(token.as_bytes())
}

/// What `webhookSecret` holds for `secret`: the vault envelope as compact JSON text.
pub fn seal_secret(vault: &VaultKey, secret: &str) -> String {
    vault.seal(&Value::String(secret.to_owned())).to_string()
}

/// The secret in a `webhookSecret` value written by [`seal_secret`].
pub fn open_secret(vault: &VaultKey, stored: &str) -> std::result::Result<String, EnvelopeError> {
    let envelope: Value =
        serde_json::from_str(stored).map_err(|_| EnvelopeError::Malformed("webhookSecret"))?;
    match vault.open(&envelope)? {
        Value::String(secret) => Ok(secret),
        _ => Err(EnvelopeError::Malformed("webhookSecret")),
    }
}

/// Issues fresh credentials for a webhook datasource of the tenant, replacing any it had: the
/// old token and secret stop working when the caller's transaction commits. `NotFound` for
/// another tenant's datasource; `Invalid` for one of another type.
pub async fn issue(
    conn: &mut PgConnection,
    vault: &VaultKey,
    tenant_id: TenantId,
    datasource_id: Uuid,
) -> Result<Credentials> {
    let issued = Credentials::generate();
    let updated: Option<Uuid> = sqlx::query_scalar(
        r#"UPDATE "tblDatasources" SET "webhookToken" = $4, "webhookSecret" = $5, "updatedAt" = now()
           WHERE "tenantID" = $1 AND "datasourceID" = $2 AND "datasourceType" = $3
           RETURNING "datasourceID""#,
    )
    .bind(tenant_id)
    .bind(datasource_id)
    .bind(TYPE)
    .bind(token_digest(&issued.token))
    .bind(seal_secret(vault, &issued.secret))
    .fetch_optional(&mut *conn)
    .await?;
    if updated.is_some() {
        return Ok(issued);
    }
    let other: Option<String> = sqlx::query_scalar(
        r#"SELECT "datasourceType" FROM "tblDatasources" WHERE "tenantID" = $1 AND "datasourceID" = $2"#,
    )
    .bind(tenant_id)
    .bind(datasource_id)
    .fetch_optional(&mut *conn)
    .await?;
    match other {
        None => Err(Error::NotFound("datasource")),
        Some(kind) => Err(Error::Invalid(format!(
            "datasource {datasource_id} is a `{kind}` datasource; only `{TYPE}` datasources have webhook credentials"
        ))),
    }
}

/// Checks the options of a webhook datasource: an object (`{}` is enough); nothing in it is
/// read, so nothing in it is secret by this type.
pub fn validate_options(options: &Value) -> std::result::Result<(), String> {
    if options.is_object() {
        Ok(())
    } else {
        Err("must be an object (`{}` for a webhook datasource)".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `tblDatasources.webhookSecret` is varchar(255).
    const COLUMN_WIDTH: usize = 255;

    #[test]
    fn a_sealed_secret_fits_the_column_and_opens() {
        let vault = VaultKey::generate();
        for _ in 0..32 {
            let issued = Credentials::generate();
            let stored = seal_secret(&vault, &issued.secret);
            assert!(stored.len() <= COLUMN_WIDTH, "{} chars", stored.len());
            assert!(!stored.contains(&issued.secret));
            assert_eq!(open_secret(&vault, &stored).as_deref(), Ok(&*issued.secret));
        }
    }

    #[test]
    fn a_secret_sealed_under_another_key_does_not_open() {
        let stored = seal_secret(&VaultKey::generate(), "s");
        assert_eq!(
            open_secret(&VaultKey::generate(), &stored),
            Err(EnvelopeError::Tampered)
        );
        assert!(open_secret(&VaultKey::generate(), "not json").is_err());
    }

    #[test]
    fn credentials_are_64_hex_digested_to_64_hex_and_never_debug_printed() {
        let issued = Credentials::generate();
        assert_eq!(issued.token.len(), 64);
        assert_ne!(issued.token, issued.secret);
        assert!(issued.token.bytes().all(|b| b.is_ascii_hexdigit()));
        let digest = token_digest(&issued.token);
        assert_eq!(digest.len(), 64);
        assert_ne!(digest, issued.token);
        let shown = format!("{issued:?}");
        assert!(!shown.contains(&issued.token) && !shown.contains(&issued.secret));
    }
}
