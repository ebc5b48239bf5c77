//! What a listener's `listenerType` and `listenerConfig` mean, checked when it is saved so a
//! bad config is a 422 naming the field, never a holder that fails at run time.
//!
//! - `postgresql` with `{channels: "a,b"}` (upstream's shape): LISTEN on those channels.
//! - `postgresql` with `{mode: "cdc", tables: ["public.orders"], operations?: [...],
//!   maxRetainedWalMb?, heartbeatSeconds?}`: logical replication (pgoutput).
//! - `webhook`: events arrive over HTTP at `endpointPath`; `listenerConfig` is not used.

use serde_json::Value;
use uuid::Uuid;

/// Longest NOTIFY channel name PostgreSQL accepts (NAMEDATALEN - 1).
const MAX_IDENTIFIER: usize = 63;
/// Channels one NOTIFY listener may LISTEN on.
const MAX_CHANNELS: usize = 64;
/// Tables one CDC listener may capture.
const MAX_TABLES: usize = 256;
/// Retained-WAL limit when the config does not name one.
pub const DEFAULT_MAX_RETAINED_WAL_MB: u64 = 1024;
/// Heartbeat interval on an idle source when the config does not name one.
pub const DEFAULT_HEARTBEAT_SECONDS: u64 = 30;

/// A change operation CDC can capture.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Operation {
    Insert,
    Update,
    Delete,
    Truncate,
}

impl Operation {
    pub const ALL: [Operation; 4] = [Self::Insert, Self::Update, Self::Delete, Self::Truncate];

    /// The name used in configs, events and `CREATE PUBLICATION … WITH (publish = …)`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Insert => "INSERT",
            Self::Update => "UPDATE",
            Self::Delete => "DELETE",
            Self::Truncate => "TRUNCATE",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|op| op.as_str().eq_ignore_ascii_case(s))
    }
}

/// A table named by a CDC config, schema-qualified (`public` when omitted).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TableName {
    pub schema: String,
    pub table: String,
}

impl TableName {
    /// `"schema"."table"`, quoted for SQL text.
    pub fn quoted(&self) -> String {
        format!("{}.{}", quote_ident(&self.schema), quote_ident(&self.table))
    }
}

impl std::fmt::Display for TableName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.schema, self.table)
    }
}

/// A CDC listener's settings.
#[derive(Debug, Clone, PartialEq)]
pub struct CdcConfig {
    pub tables: Vec<TableName>,
    pub operations: Vec<Operation>,
    /// Retained WAL on the source beyond which the listener stops with status `error`.
    pub max_retained_wal_mb: u64,
    /// How often an idle source gets a `pg_logical_emit_message` so its slot keeps advancing.
    pub heartbeat_seconds: u64,
}

/// What a listener is, parsed from its type and config.
#[derive(Debug, Clone, PartialEq)]
pub enum Kind {
    /// LISTEN on these channels of the datasource's database.
    Notify { channels: Vec<String> },
    /// Logical replication from the datasource's database.
    Cdc(CdcConfig),
    /// Inbound HTTP deliveries.
    Webhook,
}

/// Listener types this build runs.
pub const TYPES: [&str; 2] = ["postgresql", "webhook"];

/// A config that cannot run: which field, and why. The API answers 422 with both.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The field, e.g. `listenerConfig.tables[2]`.
    pub field: String,
    pub message: String,
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

impl std::error::Error for ConfigError {}

impl From<ConfigError> for crate::Error {
    fn from(e: ConfigError) -> Self {
        crate::Error::Invalid(e.to_string())
    }
}

fn bad(field: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError {
        field: field.into(),
        message: message.into(),
    }
}

impl Kind {
    /// Parses and checks `listener_type` + `config`.
    pub fn parse(listener_type: &str, config: &Value) -> Result<Kind, ConfigError> {
        let obj = match config {
            Value::Object(o) => o,
            Value::Null => &serde_json::Map::new(),
            _ => return Err(bad("listenerConfig", "must be an object")),
        };
        match listener_type {
            "webhook" => Ok(Kind::Webhook),
            "postgresql" => match obj.get("mode") {
                None | Some(Value::Null) => notify(obj),
                Some(Value::String(m)) if m == "notify" => notify(obj),
                Some(Value::String(m)) if m == "cdc" => cdc(obj).map(Kind::Cdc),
                Some(_) => Err(bad(
                    "listenerConfig.mode",
                    "must be \"notify\" (the default) or \"cdc\"",
                )),
            },
            other => Err(bad(
                "listenerType",
                format!(
                    "unknown listener type {other:?}; this build runs {}",
                    TYPES.join(", ")
                ),
            )),
        }
    }

    /// Whether a worker of the `listeners` role must hold a connection for this listener
    /// (webhooks arrive through the API instead).
    pub fn needs_holder(&self) -> bool {
        !matches!(self, Kind::Webhook)
    }
}

fn notify(obj: &serde_json::Map<String, Value>) -> Result<Kind, ConfigError> {
    let field = "listenerConfig.channels";
    let names: Vec<String> = match obj.get("channels") {
        Some(Value::String(s)) => s.split(',').map(|c| c.trim().to_owned()).collect(),
        Some(Value::Array(items)) => items
            .iter()
            .enumerate()
            .map(|(i, v)| {
                v.as_str()
                    .map(|s| s.trim().to_owned())
                    .ok_or_else(|| bad(format!("{field}[{i}]"), "must be a string"))
            })
            .collect::<Result<_, _>>()?,
        None | Some(Value::Null) => {
            return Err(bad(
                field,
                "is required: the channels to LISTEN on, e.g. \"orders,payments\"",
            ));
        }
        Some(_) => {
            return Err(bad(
                field,
                "must be a comma-separated string or an array of strings",
            ));
        }
    };
    let mut channels = Vec::new();
    for name in names {
        if name.is_empty() {
            return Err(bad(field, "has an empty channel name"));
        }
        if name.len() > MAX_IDENTIFIER || name.contains('\0') {
            return Err(bad(
                field,
                format!(
                    "channel {name:?} is not a valid PostgreSQL identifier (at most {MAX_IDENTIFIER} bytes)"
                ),
            ));
        }
        if !channels.contains(&name) {
            channels.push(name);
        }
    }
    if channels.len() > MAX_CHANNELS {
        return Err(bad(field, format!("at most {MAX_CHANNELS} channels")));
    }
    Ok(Kind::Notify { channels })
}

fn cdc(obj: &serde_json::Map<String, Value>) -> Result<CdcConfig, ConfigError> {
    let items = match obj.get("tables") {
        Some(Value::Array(items)) if !items.is_empty() => items,
        Some(Value::Array(_)) | None | Some(Value::Null) => {
            return Err(bad(
                "listenerConfig.tables",
                "is required: at least one table, e.g. [\"public.orders\"]",
            ));
        }
        Some(_) => {
            return Err(bad(
                "listenerConfig.tables",
                "must be an array of table names",
            ));
        }
    };
    if items.len() > MAX_TABLES {
        return Err(bad(
            "listenerConfig.tables",
            format!("at most {MAX_TABLES} tables"),
        ));
    }
    let mut tables = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let field = format!("listenerConfig.tables[{i}]");
        let name = item
            .as_str()
            .ok_or_else(|| bad(&field, "must be a string"))?;
        let table = table_name(name).map_err(|m| bad(&field, m))?;
        if !tables.contains(&table) {
            tables.push(table);
        }
    }
    let operations = match obj.get("operations") {
        None | Some(Value::Null) => Operation::ALL.to_vec(),
        Some(Value::Array(items)) if !items.is_empty() => {
            let mut ops = Vec::new();
            for (i, item) in items.iter().enumerate() {
                let op = item.as_str().and_then(Operation::parse).ok_or_else(|| {
                    bad(
                        format!("listenerConfig.operations[{i}]"),
                        "must be one of INSERT, UPDATE, DELETE, TRUNCATE",
                    )
                })?;
                if !ops.contains(&op) {
                    ops.push(op);
                }
            }
            ops
        }
        Some(_) => {
            return Err(bad(
                "listenerConfig.operations",
                "must be a non-empty array of INSERT, UPDATE, DELETE, TRUNCATE",
            ));
        }
    };
    let positive = |key: &str, default: u64, max: u64| -> Result<u64, ConfigError> {
        match obj.get(key) {
            None | Some(Value::Null) => Ok(default),
            Some(v) => v.as_u64().filter(|n| (1..=max).contains(n)).ok_or_else(|| {
                bad(
                    format!("listenerConfig.{key}"),
                    format!("must be an integer from 1 to {max}"),
                )
            }),
        }
    };
    Ok(CdcConfig {
        tables,
        operations,
        max_retained_wal_mb: positive("maxRetainedWalMb", DEFAULT_MAX_RETAINED_WAL_MB, 1 << 20)?,
        heartbeat_seconds: positive("heartbeatSeconds", DEFAULT_HEARTBEAT_SECONDS, 3600)?,
    })
}

/// `schema.table` or `table` (schema `public`); each part a plain or `"quoted"` identifier.
fn table_name(name: &str) -> Result<TableName, String> {
    let parts = split_identifiers(name.trim())?;
    let (schema, table) = match parts.as_slice() {
        [table] => ("public".to_owned(), table.clone()),
        [schema, table] => (schema.clone(), table.clone()),
        _ => return Err(format!("{name:?} is not a table name; write schema.table")),
    };
    for part in [&schema, &table] {
        if part.is_empty() || part.len() > MAX_IDENTIFIER || part.contains('\0') {
            return Err(format!("{name:?} is not a valid table name"));
        }
    }
    Ok(TableName { schema, table })
}

/// Splits `a.b` / `"A"."b.c"` into identifiers; unquoted ones fold to lower case, as in SQL.
fn split_identifiers(s: &str) -> Result<Vec<String>, String> {
    let mut parts = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        let mut part = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next() {
                    Some('"') if chars.peek() == Some(&'"') => {
                        chars.next();
                        part.push('"');
                    }
                    Some('"') => break,
                    Some(c) => part.push(c),
                    None => return Err(format!("{s:?} has an unterminated quote")),
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c == '.' {
                    break;
                }
                if !(c.is_ascii_alphanumeric() || c == '_' || c == '$') {
                    return Err(format!("{s:?}: {c:?} is not allowed in an unquoted name"));
                }
                part.push(c.to_ascii_lowercase());
                chars.next();
            }
        }
        parts.push(part);
        match chars.next() {
            None => return Ok(parts),
            Some('.') => continue,
            Some(c) => return Err(format!("{s:?}: unexpected {c:?}")),
        }
    }
}

/// `ident` quoted for SQL text.
pub fn quote_ident(ident: &str) -> String {
    format!("\"{}\"", ident.replace('"', "\"\""))
}

/// The replication slot and publication of a CDC listener, derived from its id so that
/// activate, the holder and delete always agree on them.
pub fn names(listener_id: Uuid) -> (String, String) {
    let id = listener_id.simple().to_string();
    (format!("jet_slot_{id}"), format!("jet_pub_{id}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn notify_channels_are_split_trimmed_and_deduplicated() {
        let kind = Kind::parse("postgresql", &json!({"channels": " a, b ,a"})).expect("accepted");
        assert_eq!(
            kind,
            Kind::Notify {
                channels: vec!["a".into(), "b".into()]
            }
        );
    }

    #[test]
    fn bad_configs_name_the_field() {
        let err = Kind::parse("postgresql", &json!({"channels": "a,,b"})).expect_err("refused");
        assert_eq!(err.field, "listenerConfig.channels");
        let err = Kind::parse("postgresql", &json!({"mode": "cdc", "tables": ["ok", 3]}))
            .expect_err("refused");
        assert_eq!(err.field, "listenerConfig.tables[1]");
        let err = Kind::parse(
            "postgresql",
            &json!({"mode": "cdc", "tables": ["t"], "operations": ["UPSERT"]}),
        )
        .expect_err("refused");
        assert_eq!(err.field, "listenerConfig.operations[0]");
        let err = Kind::parse("kafka", &json!({})).expect_err("refused");
        assert_eq!(err.field, "listenerType");
    }

    #[test]
    fn cdc_table_names_default_to_public_and_keep_quoted_case() {
        let Kind::Cdc(cdc) = Kind::parse(
            "postgresql",
            &json!({"mode": "cdc", "tables": ["Orders", "\"Sales\".\"Big.Table\""], "operations": ["insert"]}),
        )
        .expect("accepted") else {
            panic!("not cdc");
        };
        assert_eq!(cdc.tables[0].to_string(), "public.orders");
        assert_eq!(cdc.tables[1].schema, "Sales");
        assert_eq!(cdc.tables[1].table, "Big.Table");
        assert_eq!(cdc.tables[1].quoted(), "\"Sales\".\"Big.Table\"");
        assert_eq!(cdc.operations, vec![Operation::Insert]);
    }

    #[test]
    fn slot_names_fit_postgres_identifiers() {
        let (slot, publication) = names(Uuid::new_v4());
        assert!(slot.len() <= MAX_IDENTIFIER && publication.len() <= MAX_IDENTIFIER);
    }
}
