//! The `postgresql` driver: upstream's connection options, a small bounded pool per saved
//! datasource, and queries whose `{{inputs.x}}` templates become bound parameters — values
//! never enter the SQL text.

use super::driver::{Column, Driver, DriverError, Limits, QueryOutput};
use super::network::{CheckError, DenyList};
use super::secrets::SecretAt;
use futures::TryStreamExt;
use futures::future::BoxFuture;
use serde_json::Value;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions, PgSslMode};
use sqlx::{Column as _, Connection, Executor, PgPool, SqlSafeStr, Statement, TypeInfo};
use std::collections::HashMap;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use uuid::Uuid;

/// Where this driver reads credentials: the password (beside the connection details or at
/// the top, both of which it reads) and the whole connection string, which carries it.
pub const SECRETS: &[SecretAt] = &[
    SecretAt::Field(&["connectionString"]),
    SecretAt::Field(&["password"]),
    SecretAt::Field(&["connectionDetails", "password"]),
];

/// Connections one datasource may hold open at once, per process.
const POOL_SIZE: u32 = 5;
/// Datasource pools kept per process; the least recently used is closed beyond this.
const MAX_POOLS: usize = 64;
/// Connecting gives up after this long unless the options say otherwise.
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Pools by datasource, rebuilt when the datasource's options change.
#[derive(Default)]
pub struct PostgresDriver {
    pools: Mutex<HashMap<Uuid, CachedPool>>,
    deny: Arc<DenyList>,
}

struct CachedPool {
    fingerprint: String,
    pool: PgPool,
    last_used: Instant,
}

/// The password a connection string states (in its user info or a `password` parameter).
/// Connecting uses exactly that, or an empty one: sqlx would otherwise fill a missing
/// password from this server's `PGPASSWORD` or `~/.pgpass` and send it to whatever host the
/// tenant named.
fn url_password(url: &str) -> Option<String> {
    let parsed = reqwest::Url::parse(url).ok()?;
    let from_query = parsed
        .query_pairs()
        .find(|(k, _)| k == "password")
        .map(|(_, v)| v.into_owned());
    from_query.or_else(|| parsed.password().map(percent_decode))
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let decoded = (bytes[i] == b'%')
            .then(|| s.get(i + 1..i + 3))
            .flatten()
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match decoded {
            Some(b) => {
                out.push(b);
                i += 3;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// What connecting needs, read from upstream's options shape: `connectionOption`
/// `connectionString` | `connectionDetails` (`host`, `port`, `database`, `user`, `password`,
/// `sslMode`, `additionalOptions.{connectTimeout, applicationName}`).
fn connect_options(options: &Value) -> Result<(PgConnectOptions, Duration), String> {
    let details = options.get("connectionDetails").unwrap_or(options);
    let text = |v: &Value, key: &str| v.get(key).and_then(Value::as_str).map(str::to_owned);
    let by_string = options.get("connectionOption").and_then(Value::as_str)
        == Some("connectionString")
        || (options.get("connectionDetails").is_none() && options.get("host").is_none());
    let mut connect = if by_string {
        let url = text(options, "connectionString")
            .filter(|s| !s.trim().is_empty())
            .ok_or("connectionString is required (or give connectionDetails)")?;
        let parsed = PgConnectOptions::from_str(url.trim())
            .map_err(|e| format!("connectionString is not a PostgreSQL URL: {e}"))?;
        parsed.password(&url_password(url.trim()).unwrap_or_default())
    } else {
        let host = text(details, "host")
            .filter(|h| !h.is_empty())
            .ok_or("connectionDetails.host is required")?;
        let port = match details.get("port") {
            None | Some(Value::Null) => 5432,
            Some(Value::Number(n)) => n
                .as_u64()
                .and_then(|p| u16::try_from(p).ok())
                .ok_or("port must be 1..65535")?,
            Some(Value::String(s)) => s.trim().parse().map_err(|_| "port must be 1..65535")?,
            Some(_) => return Err("port must be a number".into()),
        };
        let mut c = PgConnectOptions::new_without_pgpass()
            .host(&host)
            .port(port);
        if let Some(user) = text(details, "user").or_else(|| text(details, "username")) {
            c = c.username(&user);
        }
        c = c.password(&text(details, "password").unwrap_or_default());
        if let Some(database) = text(details, "database") {
            c = c.database(&database);
        }
        c
    };
    if let Some(mode) = text(details, "sslMode").or_else(|| text(options, "sslMode")) {
        connect = connect.ssl_mode(match mode.as_str() {
            "disable" => PgSslMode::Disable,
            "allow" => PgSslMode::Allow,
            "prefer" => PgSslMode::Prefer,
            "require" => PgSslMode::Require,
            "verify-ca" => PgSslMode::VerifyCa,
            "verify-full" => PgSslMode::VerifyFull,
            other => {
                return Err(format!(
                    "sslMode must be disable, allow, prefer, require, verify-ca or verify-full, not `{other}`"
                ));
            }
        });
    }
    let extra = details.get("additionalOptions");
    connect = connect.application_name(
        &extra
            .and_then(|e| text(e, "applicationName"))
            .unwrap_or_else(|| "jet-fleet".into()),
    );
    let timeout = extra
        .and_then(|e| e.get("connectTimeout"))
        .and_then(Value::as_u64)
        .map(|s| Duration::from_secs(s.clamp(1, 120)))
        .unwrap_or(DEFAULT_CONNECT_TIMEOUT);
    Ok((connect, timeout))
}

/// What the options name as the place to connect: host (or socket), port, database and TLS
/// mode. Stored secrets may only be sent where this is unchanged.
fn target(options: &Value) -> Option<String> {
    let (connect, _) = connect_options(options).ok()?;
    let host = match connect.get_socket() {
        Some(socket) => socket.display().to_string(),
        None => connect.get_host().to_owned(),
    };
    Some(format!(
        "{host}:{}/{}?sslmode={:?}",
        connect.get_port(),
        connect.get_database().unwrap_or_default(),
        connect.get_ssl_mode()
    ))
}

impl PostgresDriver {
    /// A driver that connects only where `deny` allows.
    pub fn new(deny: Arc<DenyList>) -> Self {
        Self {
            pools: Mutex::default(),
            deny,
        }
    }

    /// The connect options, checked against the deny-list and pinned to the address that was
    /// checked: connecting by name again could reach a different address (DNS rebinding).
    /// `verify-full` keeps the name, which its certificate check needs.
    pub async fn checked_options(
        &self,
        options: &Value,
    ) -> Result<(PgConnectOptions, Duration), DriverError> {
        let (connect, timeout) = connect_options(options).map_err(DriverError::Options)?;
        if self.deny.is_empty() {
            return Ok((connect, timeout));
        }
        let host = match connect.get_socket() {
            Some(socket) => socket.display().to_string(),
            None => connect.get_host().to_owned(),
        };
        if host.starts_with('/') {
            self.deny
                .check_name(&host)
                .map_err(|e| DriverError::Denied(e.to_string()))?;
            return Ok((connect, timeout));
        }
        let addrs = self
            .deny
            .check_host(&host, connect.get_port())
            .await
            .map_err(|e| match e {
                CheckError::Denied(d) => DriverError::Denied(d.to_string()),
                CheckError::Unresolved(m) => DriverError::Unreachable(m),
            })?;
        if matches!(connect.get_ssl_mode(), PgSslMode::VerifyFull) {
            return Ok((connect, timeout));
        }
        let pinned = addrs[0].ip().to_string();
        Ok((connect.host(&pinned), timeout))
    }

    /// The datasource's pool, created on first use and replaced when its options change.
    async fn pool(&self, datasource_id: Uuid, options: &Value) -> Result<PgPool, DriverError> {
        let fingerprint = crate::crypto::sha256_hex(options.to_string().as_bytes());
        if let Some(cached) = self
            .pools
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_mut(&datasource_id)
            .filter(|c| c.fingerprint == fingerprint)
        {
            cached.last_used = Instant::now();
            return Ok(cached.pool.clone());
        }
        let (connect, timeout) = self.checked_options(options).await?;
        let mut pools = self.pools.lock().unwrap_or_else(|e| e.into_inner());
        let pool = PgPoolOptions::new()
            .max_connections(POOL_SIZE)
            .min_connections(0)
            .acquire_timeout(timeout)
            .idle_timeout(Duration::from_secs(60))
            .connect_lazy_with(connect);
        if pools.len() >= MAX_POOLS
            && let Some(oldest) = pools
                .iter()
                .min_by_key(|(_, p)| p.last_used)
                .map(|(id, _)| *id)
            && let Some(evicted) = pools.remove(&oldest)
        {
            tokio::spawn(async move { evicted.pool.close().await });
        }
        if let Some(replaced) = pools.insert(
            datasource_id,
            CachedPool {
                fingerprint,
                pool: pool.clone(),
                last_used: Instant::now(),
            },
        ) {
            tokio::spawn(async move { replaced.pool.close().await });
        }
        Ok(pool)
    }

    async fn run(
        &self,
        datasource_id: Option<Uuid>,
        options: &Value,
        bound: &BoundSql,
        limits: Limits,
    ) -> Result<QueryOutput, DriverError> {
        match datasource_id {
            Some(id) => {
                let pool = self.pool(id, options).await?;
                let mut conn = pool.acquire().await.map_err(classify)?;
                run_on(&mut conn, bound, limits).await
            }
            None => {
                let (connect, timeout) = self.checked_options(options).await?;
                let mut conn =
                    tokio::time::timeout(timeout, sqlx::PgConnection::connect_with(&connect))
                        .await
                        .map_err(|_| {
                            DriverError::Unreachable(format!(
                                "connecting took longer than {timeout:?}"
                            ))
                        })?
                        .map_err(classify)?;
                let out = run_on(&mut conn, bound, limits).await;
                let _ = conn.close().await;
                out
            }
        }
    }
}

/// Runs one statement in its own transaction with a server-side statement timeout. Rows come
/// back as JSON objects (`to_json` of each row), capped by rows and bytes; a statement that
/// returns no rows reports how many it affected.
///
/// Parameters travel as text and are cast to the type the server inferred for each one (what
/// node-postgres does with untyped text parameters), so `id = {{inputs.id}}` works with an
/// int column, `at > {{inputs.since}}` with a timestamp, `= ANY({{inputs.ids}})` with an
/// array. They are never part of the SQL text.
async fn run_on(
    conn: &mut sqlx::PgConnection,
    bound: &BoundSql,
    limits: Limits,
) -> Result<QueryOutput, DriverError> {
    let mut tx = conn.begin().await.map_err(classify)?;
    sqlx::query("SELECT set_config('statement_timeout', $1, true)")
        .bind(format!("{}ms", limits.timeout.as_millis()))
        .execute(&mut *tx)
        .await
        .map_err(classify)?;
    let statement = (&mut *tx)
        .prepare(sqlx::AssertSqlSafe(bound.numbered()).into_sql_str())
        .await
        .map_err(classify)?;
    let columns: Vec<Column> = statement
        .columns()
        .iter()
        .map(|c| Column {
            name: c.name().to_owned(),
            type_name: c.type_info().name().to_owned(),
        })
        .collect();
    let oids: Vec<i64> = match statement.parameters() {
        Some(sqlx::Either::Left(types)) => types
            .iter()
            .map(|t| t.oid().map_or(25, |o| i64::from(o.0)))
            .collect(),
        _ => vec![],
    };
    let types: Vec<String> = if oids.is_empty() {
        vec![]
    } else {
        sqlx::query_scalar(
            "SELECT format_type(t::oid, NULL) FROM unnest($1::int8[]) WITH ORDINALITY AS u(t, i) ORDER BY i",
        )
        .bind(&oids)
        .fetch_all(&mut *tx)
        .await
        .map_err(classify)?
    };
    let texts: Vec<Option<String>> = bound
        .params
        .iter()
        .enumerate()
        .map(|(i, value)| param_text(value, types.get(i).map_or("text", String::as_str)))
        .collect();
    let sql = bound.cast(&types);
    if columns.is_empty() {
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql)).persistent(false);
        for text in &texts {
            query = query.bind(text.clone());
        }
        let done = query.execute(&mut *tx).await.map_err(classify)?;
        tx.commit().await.map_err(classify)?;
        return Ok(QueryOutput {
            data: Value::Array(vec![]),
            columns: Some(columns),
            row_count: Some(done.rows_affected()),
            truncated: false,
            status: None,
        });
    }
    // The user's statement runs unchanged inside a CTE (SELECT, VALUES, or DML with RETURNING);
    // one row more than the cap tells whether rows were cut off.
    let wrapped = format!(
        "WITH q AS ({sql}\n) SELECT to_json(q)::text FROM q LIMIT {}",
        limits.max_rows + 1
    );
    let mut rows = Vec::new();
    let mut bytes = 0usize;
    let mut truncated = false;
    {
        let mut query =
            sqlx::query_scalar::<_, String>(sqlx::AssertSqlSafe(wrapped)).persistent(false);
        for text in &texts {
            query = query.bind(text.clone());
        }
        let mut stream = query.fetch(&mut *tx);
        while let Some(text) = stream.try_next().await.map_err(classify)? {
            bytes += text.len();
            if rows.len() == limits.max_rows || bytes > limits.max_bytes {
                truncated = true;
                break;
            }
            rows.push(
                serde_json::from_str(&text)
                    .map_err(|e| DriverError::Failed(format!("row is not JSON: {e}")))?,
            );
        }
    }
    tx.commit().await.map_err(classify)?;
    Ok(QueryOutput {
        row_count: Some(rows.len() as u64),
        data: Value::Array(rows),
        columns: Some(columns),
        truncated,
        status: None,
    })
}

/// The text form of a parameter of type `ty`: strings as they are, numbers and booleans as
/// JSON prints them, arrays as PostgreSQL array literals when the parameter is an array (JSON
/// text otherwise), objects as JSON. Null is SQL NULL.
fn param_text(value: &Value, ty: &str) -> Option<String> {
    match value {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        Value::Array(items) if ty.ends_with("[]") => Some(array_literal(items)),
        other => Some(other.to_string()),
    }
}

/// `{"a","b \"c\"",NULL,{"1","2"}}`: every element quoted and escaped, nested arrays kept.
fn array_literal(items: &[Value]) -> String {
    let elements: Vec<String> = items
        .iter()
        .map(|v| match v {
            Value::Null => "NULL".to_owned(),
            Value::Array(inner) => array_literal(inner),
            Value::String(s) => quote_element(s),
            other => quote_element(&other.to_string()),
        })
        .collect();
    format!("{{{}}}", elements.join(","))
}

fn quote_element(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// Sorts a database error into unreachable (connect, TLS, authentication, unknown database),
/// timed out (statement_timeout) or failed (everything the server said about the query).
fn classify(err: sqlx::Error) -> DriverError {
    match &err {
        sqlx::Error::Database(db) => {
            let code = db.code().map(|c| c.into_owned()).unwrap_or_default();
            let message = db.message().to_owned();
            if code == "57014" {
                DriverError::Timeout
            } else if code.starts_with("28") || code == "3D000" {
                DriverError::Unreachable(message)
            } else {
                DriverError::Failed(format!("{message} (SQLSTATE {code})"))
            }
        }
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::Configuration(_)
        | sqlx::Error::Protocol(_) => DriverError::Unreachable(err.to_string()),
        _ => DriverError::Failed(err.to_string()),
    }
}

/// SQL whose `{{inputs.x}}` templates became numbered parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct BoundSql {
    parts: Vec<Part>,
    /// The values to bind, in parameter order.
    pub params: Vec<Value>,
}

#[derive(Debug, Clone, PartialEq)]
enum Part {
    Text(String),
    /// A 1-based parameter number.
    Param(usize),
}

impl BoundSql {
    /// The SQL with `$n` placeholders, as the server describes it.
    pub fn numbered(&self) -> String {
        self.render(|n| format!("${n}"))
    }

    /// The SQL with each placeholder read as text and cast to its type in `types`.
    fn cast(&self, types: &[String]) -> String {
        self.render(|n| match types.get(n - 1).map(String::as_str) {
            None | Some("text") => format!("${n}::text"),
            Some(ty) => format!("(${n}::text)::{ty}"),
        })
    }

    fn render(&self, placeholder: impl Fn(usize) -> String) -> String {
        self.parts
            .iter()
            .map(|p| match p {
                Part::Text(t) => t.clone(),
                Part::Param(n) => placeholder(*n),
            })
            .collect()
    }
}

/// Turns each `{{inputs.path}}` in `sql` into a parameter holding that input. A template
/// inside a quoted literal or identifier is refused: it would not be a parameter there, so it
/// would silently do nothing (or invite splicing).
pub fn bind_templates(sql: &str, inputs: &Value) -> Result<BoundSql, String> {
    let mut parts = Vec::new();
    let mut text = String::with_capacity(sql.len());
    let mut params = Vec::new();
    let mut quote: Option<char> = None;
    let mut rest = sql.trim().trim_end_matches(';').trim_end();
    while let Some(c) = rest.chars().next() {
        if rest.starts_with("{{") {
            if quote.is_some() {
                return Err("write `{{inputs.x}}` outside quotes: it is bound as a parameter, never pasted into the SQL text".into());
            }
            let end = rest
                .find("}}")
                .ok_or("a `{{` template is not closed with `}}`")?;
            let path = rest[2..end].trim();
            if !path.starts_with("inputs") {
                return Err(format!(
                    "`{{{{{path}}}}}`: query templates read `inputs.<name>`"
                ));
            }
            params.push(
                crate::workflow::template::lookup_in(path, "inputs", inputs)
                    .cloned()
                    .unwrap_or(Value::Null),
            );
            parts.push(Part::Text(std::mem::take(&mut text)));
            parts.push(Part::Param(params.len()));
            rest = &rest[end + 2..];
            continue;
        }
        match (quote, c) {
            (None, '\'' | '"') => quote = Some(c),
            (Some(q), c) if c == q => quote = None,
            _ => {}
        }
        text.push(c);
        rest = &rest[c.len_utf8()..];
    }
    parts.push(Part::Text(text));
    Ok(BoundSql { parts, params })
}

impl Driver for PostgresDriver {
    fn validate_options(&self, options: &Value) -> Result<(), String> {
        connect_options(options).map(|_| ())
    }

    fn target(&self, options: &Value) -> Option<String> {
        target(options)
    }

    fn test<'a>(
        &'a self,
        _datasource_id: Option<Uuid>,
        options: &'a Value,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<(), DriverError>> {
        Box::pin(async move {
            let (connect, connect_timeout) = self.checked_options(options).await?;
            let limit = timeout.min(connect_timeout);
            let attempt = async {
                let mut conn = sqlx::PgConnection::connect_with(&connect)
                    .await
                    .map_err(classify)?;
                sqlx::query("SELECT 1")
                    .execute(&mut conn)
                    .await
                    .map_err(classify)?;
                let _ = conn.close().await;
                Ok(())
            };
            tokio::time::timeout(limit, attempt)
                .await
                .map_err(|_| DriverError::Unreachable(format!("no answer within {limit:?}")))?
        })
    }

    fn execute<'a>(
        &'a self,
        datasource_id: Option<Uuid>,
        options: &'a Value,
        query: &'a Value,
        inputs: &'a Value,
        limits: Limits,
    ) -> BoxFuture<'a, Result<QueryOutput, DriverError>> {
        Box::pin(async move {
            let text = query
                .get("query")
                .and_then(Value::as_str)
                .filter(|q| !q.trim().is_empty())
                .ok_or_else(|| DriverError::Options("dataQueryOptions.query is required".into()))?;
            let bound = bind_templates(text, inputs).map_err(DriverError::Options)?;
            // The server's statement_timeout normally fires first and rolls back cleanly; this
            // bounds connecting and a server that stopped answering.
            tokio::time::timeout(
                limits.timeout + Duration::from_secs(1),
                self.run(datasource_id, options, &bound, limits),
            )
            .await
            .map_err(|_| DriverError::Timeout)?
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn templates_become_parameters_in_order() {
        let bound = bind_templates(
            "SELECT * FROM t WHERE name = {{inputs.name}} AND n > {{ inputs.min }} AND tag = 'x';",
            &json!({"name": "a'; DROP TABLE t; --", "min": 3}),
        )
        .expect("binds");
        assert_eq!(
            bound.numbered(),
            "SELECT * FROM t WHERE name = $1 AND n > $2 AND tag = 'x'"
        );
        assert_eq!(bound.params, [json!("a'; DROP TABLE t; --"), json!(3)]);
        assert_eq!(
            bound.cast(&["text".into(), "integer".into()]),
            "SELECT * FROM t WHERE name = $1::text AND n > ($2::text)::integer AND tag = 'x'"
        );
    }

    #[test]
    fn templates_inside_quotes_or_with_other_roots_are_refused() {
        assert!(bind_templates("SELECT '{{inputs.x}}'", &json!({"x": 1})).is_err());
        assert!(bind_templates("SELECT {{ctx.x}}", &json!({})).is_err());
        assert!(bind_templates("SELECT {{inputs.x", &json!({})).is_err());
        let bound = bind_templates("SELECT {{inputs.missing}}", &json!({})).expect("ok");
        assert_eq!(bound.numbered(), "SELECT $1");
        assert_eq!(bound.params, [Value::Null]);
    }

    #[test]
    fn arrays_become_escaped_array_literals_only_for_array_parameters() {
        let v = json!(["a", "b \"c\"", null, [1, 2]]);
        assert_eq!(
            param_text(&v, "text[]").as_deref(),
            Some(r#"{"a","b \"c\"",NULL,{"1","2"}}"#)
        );
        assert_eq!(param_text(&v, "jsonb"), Some(v.to_string()));
        assert_eq!(param_text(&Value::Null, "integer"), None);
        assert_eq!(param_text(&json!(5), "integer").as_deref(), Some("5"));
    }

    #[test]
    fn the_password_is_only_ever_the_one_the_options_state() {
        let password_of = |options: Value| {
            let (connect, _) = connect_options(&options).expect("valid");
            let debug = format!("{connect:?}");
            debug
                .split("password: ")
                .nth(1)
                .and_then(|rest| rest.split(',').next())
                .unwrap_or_default()
                .to_owned()
        };
        assert_eq!(
            password_of(json!({"connectionString": "postgres://u@h/db"})),
            r#"Some("")"#,
            "never one from the environment or ~/.pgpass"
        );
        assert_eq!(
            password_of(json!({"connectionString": "postgres://u:p%40ss@h/db"})),
            r#"Some("p@ss")"#
        );
        assert_eq!(
            password_of(json!({"connectionDetails": {"host": "h", "user": "u"}})),
            r#"Some("")"#
        );
    }

    #[test]
    fn connection_options_follow_upstream_shapes() {
        assert!(connect_options(&json!({"connectionOption": "connectionString", "connectionString": "postgres://u:p@h:5433/db"})).is_ok());
        assert!(connect_options(&json!({"connectionOption": "connectionDetails", "connectionDetails": {"host": "h", "port": "5432", "database": "d", "user": "u", "password": "p", "sslMode": "prefer"}})).is_ok());
        let err =
            connect_options(&json!({"connectionDetails": {"host": "h", "sslMode": "sometimes"}}))
                .expect_err("bad mode");
        assert!(err.contains("sslMode"), "{err}");
        assert!(
            connect_options(&json!({"connectionDetails": {"port": 1}}))
                .expect_err("no host")
                .contains("host")
        );
        assert!(
            connect_options(&json!({}))
                .expect_err("nothing")
                .contains("connectionString")
        );
    }
}
