//! The audit trail (`tblAuditLogs`): one row per mutating request, secrets redacted.

use crate::Result;
use crate::ids::{ApiKeyId, TenantId, UserId};
use crate::page::{Page, PageRequest};
use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::PgPool;

/// Longest string kept in audit metadata; longer values are cut (upstream: 2000 chars).
pub const MAX_STRING_CHARS: usize = 2000;
/// What a redacted value is replaced with (upstream's marker).
pub const FILTERED: &str = "[FILTERED]";

/// One audit row to write.
#[derive(Debug, Clone)]
pub struct AuditEntry {
    pub user_id: Option<UserId>,
    pub api_key_id: Option<ApiKeyId>,
    pub tenant_id: Option<TenantId>,
    /// The operation, e.g. `createRole`.
    pub kind: String,
    /// `METHOD /path` of the request.
    pub sub_type: Option<String>,
    pub success: bool,
    /// The redacted request body and the response status.
    pub metadata: Value,
    /// The error body when the request failed.
    pub error: Option<Value>,
}

/// A stored audit row.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct AuditLog {
    #[sqlx(rename = "auditLogID")]
    pub audit_log_id: uuid::Uuid,
    #[sqlx(rename = "userID")]
    pub user_id: Option<UserId>,
    #[sqlx(rename = "apiKeyID")]
    pub api_key_id: Option<ApiKeyId>,
    #[sqlx(rename = "tenantID")]
    pub tenant_id: Option<TenantId>,
    #[sqlx(rename = "type")]
    pub kind: String,
    #[sqlx(rename = "subType")]
    pub sub_type: Option<String>,
    pub success: bool,
    #[sqlx(rename = "createdAt")]
    pub created_at: DateTime<Utc>,
    pub metadata: Option<Value>,
    pub error: Option<Value>,
}

/// Writes one row.
pub async fn insert(pool: &PgPool, entry: &AuditEntry) -> Result<()> {
    sqlx::query(
        // The request may have deleted its own key or user (deleting a tenant deletes its
        // keys); the foreign keys then take NULL and `metadata.actor` keeps the ids.
        r#"INSERT INTO "tblAuditLogs" ("userID", "apiKeyID", "tenantID", "type", "subType", "success", "metadata", "error")
           VALUES ((SELECT "userID" FROM "tblUsers" WHERE "userID" = $1),
                   (SELECT "apiKeyID" FROM "tblAPIKeys" WHERE "apiKeyID" = $2),
                   $3, $4, $5, $6, $7, $8)"#,
    )
    .bind(entry.user_id)
    .bind(entry.api_key_id)
    .bind(entry.tenant_id)
    .bind(&entry.kind)
    .bind(&entry.sub_type)
    .bind(entry.success)
    .bind(&entry.metadata)
    .bind(&entry.error)
    .execute(pool)
    .await?;
    Ok(())
}

/// A tenant's audit rows, newest first.
pub async fn list(pool: &PgPool, tenant_id: TenantId, page: PageRequest) -> Result<Page<AuditLog>> {
    let total: i64 =
        sqlx::query_scalar(r#"SELECT count(*) FROM "tblAuditLogs" WHERE "tenantID" = $1"#)
            .bind(tenant_id)
            .fetch_one(pool)
            .await?;
    let items = sqlx::query_as(
        r#"SELECT "auditLogID", "userID", "apiKeyID", "tenantID", "type", "subType", "success",
                  "createdAt", "metadata", "error"
           FROM "tblAuditLogs" WHERE "tenantID" = $1
           ORDER BY "createdAt" DESC, "auditLogID" LIMIT $2 OFFSET $3"#,
    )
    .bind(tenant_id)
    .bind(page.limit())
    .bind(page.offset())
    .fetch_all(pool)
    .await?;
    Ok(Page {
        items,
        total_count: total,
        request: page,
    })
}

/// Deletes rows older than `days` days, at most `batch` per call so a large backlog never
/// holds long locks; returns how many went.
pub async fn prune_older_than(pool: &PgPool, days: u32, batch: i64) -> Result<u64> {
    let deleted = sqlx::query(
        r#"DELETE FROM "tblAuditLogs" WHERE "auditLogID" IN (
             SELECT "auditLogID" FROM "tblAuditLogs"
             WHERE "createdAt" < now() - make_interval(days => $1) LIMIT $2)"#,
    )
    .bind(i32::try_from(days).unwrap_or(i32::MAX))
    .bind(batch)
    .execute(pool)
    .await?;
    Ok(deleted.rows_affected())
}

/// Replaces secrets with `[FILTERED]` and cuts long strings, recursively. What counts as
/// secret is the datasource masking rule: in `datasourceOptions`, every secret a driver reads
/// (`datasource::secrets::hide`); everywhere, secret-looking keys (`dbPassword`,
/// `clientSecret`, `accessToken`, `apiKey`, `connectionString`, the value of an
/// `Authorization` header pair), while `apiKeyTitle` stays readable.
pub fn redact(value: &Value) -> Value {
    use crate::datasource::secrets;
    match value {
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(key, v)| {
                    if secrets::is_secret_field(map, key) {
                        (key.clone(), Value::String(FILTERED.into()))
                    } else if key == "datasourceOptions" {
                        let kind = map.get("datasourceType").and_then(Value::as_str);
                        (key.clone(), redact(&secrets::hide(v, kind, FILTERED)))
                    } else {
                        (key.clone(), redact(v))
                    }
                })
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(redact).collect()),
        Value::String(s) if s.chars().count() > MAX_STRING_CHARS => {
            Value::String(s.chars().take(MAX_STRING_CHARS).collect())
        }
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn secret_keys_are_filtered_at_any_depth() {
        let input = json!({
            "apiKeyTitle": "ci",
            "password": "hunter2",
            "nested": {"clientSecret": "x", "items": [{"accessToken": "t", "keep": 1}]}
        });
        let out = redact(&input);
        assert_eq!(out["apiKeyTitle"], "ci");
        assert_eq!(out["password"], FILTERED);
        assert_eq!(out["nested"]["clientSecret"], FILTERED);
        assert_eq!(out["nested"]["items"][0]["accessToken"], FILTERED);
        let options = redact(
            &json!({"connectionString": "postgres://u:pw@h/db", "headers": [{"key": "Authorization", "value": "Bearer t"}, {"key": "Accept", "value": "json"}]}),
        );
        assert_eq!(options["connectionString"], FILTERED);
        assert_eq!(options["headers"][0]["value"], FILTERED);
        assert_eq!(options["headers"][1]["value"], "json");
        assert_eq!(out["nested"]["items"][0]["keep"], 1);
    }

    #[test]
    fn datasource_options_lose_every_secret_a_driver_reads() {
        let body = json!({"datasourceOptions": {
            "baseUrl": "http://h/?k=q1", "headers": {"X-API-Key": "h1"},
            "auth": {"type": "apiKey", "headerName": "X-Key", "value": "v1"}}});
        let out = redact(&body).to_string();
        for secret in ["q1", "h1", "v1"] {
            assert!(!out.contains(secret), "{secret} in {out}");
        }
        assert!(out.contains("X-Key"), "{out}");
    }

    #[test]
    fn long_strings_are_cut() {
        let out = redact(&json!({"note": "x".repeat(MAX_STRING_CHARS + 10)}));
        assert_eq!(out["note"].as_str().map(str::len), Some(MAX_STRING_CHARS));
    }
}
