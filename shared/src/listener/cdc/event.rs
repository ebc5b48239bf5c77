//! Turns pgoutput messages into whole source transactions and each captured change into the
//! event the inbox stores:
//! `{op, schema, table, new, old, lsn, xid, commitTime}`.
//!
//! - `lsn` is the transaction's commit end LSN (what the checkpoint compares), `xid` its id.
//! - Values are typed from the column's type OID: int2/int4/int8/oid → number, float4/float8 →
//!   number (`NaN`/`Infinity` stay strings), bool → bool, json/jsonb → JSON, NULL → null, and
//!   everything else (numeric, so no precision is lost; text, uuid, timestamps, arrays, …) →
//!   the string PostgreSQL prints.
//! - `old` is present when the replica identity gives it: the key columns on UPDATE of a key
//!   and on DELETE (default identity), the whole row with `REPLICA IDENTITY FULL`.
//! - A TOASTed value that an UPDATE did not change is not sent by the server: its column is left
//!   out of `new` and named in `unchangedToast` (present only when non-empty).
//! - TRUNCATE gives one event per captured table with `new` and `old` null.
//!
//! A change that cannot be stored (its event is larger than the inbox takes, or it cannot be
//! decoded) becomes a DLQ payload instead: the same envelope with `new`/`old` as far as they
//! decode, each value over 1 KiB replaced by `{"omittedBytes": n}`, plus `dedupeKey` and
//! `listenerID`.

use super::pgoutput::{Cell, Lsn, Message, OldKind, ParseError, Relation};
use crate::listener::config::{CdcConfig, Operation};
use chrono::{DateTime, Utc};
use serde_json::{Map, Value, json};
use std::collections::HashMap;

/// One committed source transaction, with its changes in order.
#[derive(Debug, Clone)]
pub struct Transaction {
    pub xid: u32,
    pub end_lsn: Lsn,
    /// Microseconds since 2000-01-01 UTC.
    pub commit_time: i64,
    pub changes: Vec<Change>,
}

/// A row change as the server sent it, before filtering and typing.
#[derive(Debug, Clone)]
pub enum Change {
    Message(Message),
    /// A change message the parser refused; it becomes a DLQ row, the stream goes on.
    Malformed(ParseError),
}

/// Groups messages into whole transactions (`Begin` … `Commit`), remembering relations as they
/// come. Messages after the last `Commit` are an unfinished transaction and are dropped: the
/// next fetch returns it whole.
pub fn transactions(
    messages: impl IntoIterator<Item = Result<Message, ParseError>>,
    relations: &mut HashMap<u32, Relation>,
) -> Result<Vec<Transaction>, ParseError> {
    let mut done = Vec::new();
    let mut open: Option<Transaction> = None;
    for msg in messages {
        match msg {
            Ok(Message::Begin {
                xid, commit_time, ..
            }) => {
                open = Some(Transaction {
                    xid,
                    end_lsn: Lsn(0),
                    commit_time,
                    changes: Vec::new(),
                });
            }
            Ok(Message::Commit { end_lsn, .. }) => {
                let mut tx = open
                    .take()
                    .ok_or_else(|| ParseError("Commit without Begin".into()))?;
                tx.end_lsn = end_lsn;
                done.push(tx);
            }
            Ok(Message::Relation(rel)) => {
                relations.insert(rel.id, rel);
            }
            Ok(Message::Other(_)) => {}
            Ok(change) => open
                .as_mut()
                .ok_or_else(|| ParseError("a change outside a transaction".into()))?
                .changes
                .push(Change::Message(change)),
            Err(e) => match open.as_mut() {
                Some(tx) => tx.changes.push(Change::Malformed(e)),
                None => return Err(e),
            },
        }
    }
    Ok(done)
}

/// A change that became an event, or could not.
#[derive(Debug)]
pub enum Outcome {
    Event(Value),
    /// Could not be decoded: what is known of it, and why.
    Poison {
        payload: Value,
        error: String,
    },
}

/// The events of one transaction that `config` captures, in order.
pub fn events(
    tx: &Transaction,
    relations: &HashMap<u32, Relation>,
    config: &CdcConfig,
) -> Vec<Outcome> {
    let mut out = Vec::new();
    for change in &tx.changes {
        let msg = match change {
            Change::Message(msg) => msg,
            Change::Malformed(e) => {
                out.push(Outcome::Poison {
                    payload: envelope(tx, None, None),
                    error: e.to_string(),
                });
                continue;
            }
        };
        let (op, rel_ids): (Operation, Vec<u32>) = match msg {
            Message::Insert { relation, .. } => (Operation::Insert, vec![*relation]),
            Message::Update { relation, .. } => (Operation::Update, vec![*relation]),
            Message::Delete { relation, .. } => (Operation::Delete, vec![*relation]),
            Message::Truncate { relations } => (Operation::Truncate, relations.clone()),
            _ => continue,
        };
        if !config.operations.contains(&op) {
            continue;
        }
        for rel_id in rel_ids {
            let Some(rel) = relations.get(&rel_id) else {
                out.push(Outcome::Poison {
                    payload: envelope(tx, Some(op), None),
                    error: format!("no Relation message was sent for relation {rel_id}"),
                });
                continue;
            };
            if !captures(config, rel) {
                continue;
            }
            out.push(typed(tx, op, rel, msg));
        }
    }
    out
}

fn captures(config: &CdcConfig, rel: &Relation) -> bool {
    config
        .tables
        .iter()
        .any(|t| t.schema == rel.schema && t.table == rel.table)
}

/// `{op, schema, table, lsn, xid, commitTime}`: what every event and DLQ payload carries.
fn envelope(tx: &Transaction, op: Option<Operation>, rel: Option<&Relation>) -> Value {
    json!({
        "op": op.map(Operation::as_str),
        "schema": rel.map(|r| r.schema.as_str()),
        "table": rel.map(|r| r.table.as_str()),
        "lsn": tx.end_lsn.to_string(),
        "xid": tx.xid,
        "commitTime": commit_time(tx.commit_time),
    })
}

fn typed(tx: &Transaction, op: Operation, rel: &Relation, msg: &Message) -> Outcome {
    let mut event = envelope(tx, Some(op), Some(rel));
    let (new, old) = match msg {
        Message::Insert { new, .. } => (Some(new), None),
        Message::Update { new, old, .. } => (Some(new), old.as_ref()),
        Message::Delete { old, .. } => (None, Some(old)),
        _ => (None, None),
    };
    let mut unchanged = Vec::new();
    let new_row = match new {
        Some(cells) => match row(rel, cells, false, &mut unchanged) {
            Ok(v) => v,
            Err(e) => return poison(event, e),
        },
        None => Value::Null,
    };
    let old_row = match old {
        Some((kind, cells)) => match row(rel, cells, *kind == OldKind::Key, &mut Vec::new()) {
            Ok(v) => v,
            Err(e) => return poison(event, e),
        },
        None => Value::Null,
    };
    event["new"] = new_row;
    event["old"] = old_row;
    if !unchanged.is_empty() {
        event["unchangedToast"] = json!(unchanged);
    }
    if let Err(e) = crate::listener::inbox::check(&event) {
        return poison(event, e.to_string());
    }
    Outcome::Event(event)
}

/// Values larger than this are left out of a DLQ payload.
const MAX_PARKED_VALUE_BYTES: usize = 1024;

/// What is known of an event that cannot be stored: its envelope and rows, each value larger
/// than [`MAX_PARKED_VALUE_BYTES`] replaced by `{"omittedBytes": n}`.
fn poison(mut event: Value, error: String) -> Outcome {
    for side in ["new", "old"] {
        if let Some(Value::Object(row)) = event.get_mut(side) {
            for value in row.values_mut() {
                let size = value.to_string().len();
                if size > MAX_PARKED_VALUE_BYTES {
                    *value = json!({ "omittedBytes": size });
                }
            }
        }
    }
    Outcome::Poison {
        payload: event,
        error,
    }
}

/// A tuple as a JSON object; `key_only` keeps just the replica identity's columns.
fn row(
    rel: &Relation,
    cells: &[Cell],
    key_only: bool,
    unchanged: &mut Vec<String>,
) -> Result<Value, String> {
    if cells.len() != rel.columns.len() {
        return Err(format!(
            "a tuple of {} columns for {}.{}, whose Relation has {}",
            cells.len(),
            rel.schema,
            rel.table,
            rel.columns.len()
        ));
    }
    let mut obj = Map::new();
    for (column, cell) in rel.columns.iter().zip(cells) {
        if key_only && !column.is_key {
            continue;
        }
        let value = match cell {
            Cell::Null => Value::Null,
            Cell::UnchangedToast => {
                unchanged.push(column.name.clone());
                continue;
            }
            Cell::Text(text) => value(column.type_oid, text),
        };
        obj.insert(column.name.clone(), value);
    }
    Ok(Value::Object(obj))
}

/// Type OIDs from `pg_type.dat`; stable across PostgreSQL versions.
mod oid {
    pub const BOOL: u32 = 16;
    pub const INT8: u32 = 20;
    pub const INT2: u32 = 21;
    pub const INT4: u32 = 23;
    pub const OID: u32 = 26;
    pub const JSON: u32 = 114;
    pub const FLOAT4: u32 = 700;
    pub const FLOAT8: u32 = 701;
    pub const JSONB: u32 = 3802;
}

/// One value from PostgreSQL's text output, typed by its column's type.
pub fn value(type_oid: u32, text: &str) -> Value {
    let parsed = match type_oid {
        oid::BOOL => match text {
            "t" => Some(Value::Bool(true)),
            "f" => Some(Value::Bool(false)),
            _ => None,
        },
        oid::INT2 | oid::INT4 | oid::INT8 => text.parse::<i64>().ok().map(Value::from),
        oid::OID => text.parse::<u64>().ok().map(Value::from),
        oid::FLOAT4 | oid::FLOAT8 => text
            .parse::<f64>()
            .ok()
            .and_then(serde_json::Number::from_f64)
            .map(Value::Number),
        oid::JSON | oid::JSONB => serde_json::from_str(text).ok(),
        _ => None,
    };
    parsed.unwrap_or_else(|| Value::String(text.to_owned()))
}

/// pgoutput's timestamps count microseconds from 2000-01-01 UTC.
fn commit_time(micros: i64) -> Option<String> {
    const PG_EPOCH_UNIX_SECONDS: i64 = 946_684_800;
    let unix_micros = micros.checked_add(PG_EPOCH_UNIX_SECONDS * 1_000_000)?;
    DateTime::<Utc>::from_timestamp_micros(unix_micros)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true))
}

#[cfg(test)]
mod tests {
    use super::super::pgoutput::Column;
    use super::*;
    use crate::listener::config::TableName;

    fn config(ops: &[Operation]) -> CdcConfig {
        CdcConfig {
            tables: vec![TableName {
                schema: "public".into(),
                table: "orders".into(),
            }],
            operations: ops.to_vec(),
            max_retained_wal_mb: 1024,
            heartbeat_seconds: 30,
        }
    }

    fn relation(id: u32, table: &str) -> Relation {
        let col = |name: &str, type_oid, is_key| Column {
            is_key,
            name: name.into(),
            type_oid,
        };
        Relation {
            id,
            schema: "public".into(),
            table: table.into(),
            columns: vec![
                col("id", oid::INT4, true),
                col("paid", oid::BOOL, false),
                col("doc", oid::JSONB, false),
                col("amount", 1700, false),
                col("note", 25, false),
            ],
        }
    }

    fn text(s: &str) -> Cell {
        Cell::Text(s.into())
    }

    fn stream(changes: Vec<Message>) -> Vec<Result<Message, ParseError>> {
        let mut all = vec![
            Ok(Message::Relation(relation(1, "orders"))),
            Ok(Message::Relation(relation(2, "other"))),
            Ok(Message::Begin {
                final_lsn: Lsn(0x90),
                commit_time: 0,
                xid: 5,
            }),
        ];
        all.extend(changes.into_iter().map(Ok));
        all.push(Ok(Message::Commit {
            commit_lsn: Lsn(0x90),
            end_lsn: Lsn(0xA0),
            commit_time: 0,
        }));
        all
    }

    fn row_cells() -> Vec<Cell> {
        vec![
            text("7"),
            text("t"),
            text(r#"{"a": [1, 2]}"#),
            text("12.50"),
            Cell::Null,
        ]
    }

    #[test]
    fn values_are_typed_by_column_type() {
        assert_eq!(
            value(oid::INT8, "9007199254740993"),
            json!(9007199254740993_i64)
        );
        assert_eq!(value(oid::FLOAT8, "1.5"), json!(1.5));
        assert_eq!(value(oid::FLOAT8, "NaN"), json!("NaN"));
        assert_eq!(value(oid::BOOL, "f"), json!(false));
        assert_eq!(
            value(oid::JSON, "[1, {\"b\": null}]"),
            json!([1, {"b": null}])
        );
        assert_eq!(
            value(1700, "3.14159265358979323846"),
            json!("3.14159265358979323846")
        );
        assert_eq!(
            value(2950, "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"),
            json!("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11")
        );
    }

    #[test]
    fn insert_becomes_a_typed_event_and_other_tables_are_left_out() {
        let mut relations = HashMap::new();
        let txs = transactions(
            stream(vec![
                Message::Insert {
                    relation: 1,
                    new: row_cells(),
                },
                Message::Insert {
                    relation: 2,
                    new: row_cells(),
                },
            ]),
            &mut relations,
        )
        .expect("valid");
        assert_eq!(txs.len(), 1);
        assert_eq!(txs[0].end_lsn, Lsn(0xA0));
        let out = events(&txs[0], &relations, &config(&Operation::ALL));
        assert_eq!(out.len(), 1);
        let Outcome::Event(e) = &out[0] else {
            panic!("poison: {out:?}");
        };
        assert_eq!(e["op"], "INSERT");
        assert_eq!(e["table"], "orders");
        assert_eq!(e["lsn"], "0/A0");
        assert_eq!(e["xid"], 5);
        assert_eq!(e["commitTime"], "2000-01-01T00:00:00.000000Z");
        assert_eq!(
            e["new"],
            json!({"id": 7, "paid": true, "doc": {"a": [1, 2]}, "amount": "12.50", "note": null})
        );
        assert_eq!(e["old"], Value::Null);
    }

    #[test]
    fn key_old_tuple_keeps_key_columns_and_unchanged_toast_is_named() {
        let mut relations = HashMap::new();
        let mut new = row_cells();
        new[4] = Cell::UnchangedToast;
        let txs = transactions(
            stream(vec![Message::Update {
                relation: 1,
                old: Some((
                    OldKind::Key,
                    vec![text("6"), Cell::Null, Cell::Null, Cell::Null, Cell::Null],
                )),
                new,
            }]),
            &mut relations,
        )
        .expect("valid");
        let out = events(&txs[0], &relations, &config(&Operation::ALL));
        let Outcome::Event(e) = &out[0] else {
            panic!("poison");
        };
        assert_eq!(e["old"], json!({"id": 6}));
        assert!(e["new"].get("note").is_none());
        assert_eq!(e["unchangedToast"], json!(["note"]));
    }

    #[test]
    fn operations_filter_and_truncate_events() {
        let mut relations = HashMap::new();
        let txs = transactions(
            stream(vec![
                Message::Delete {
                    relation: 1,
                    old: (
                        OldKind::Key,
                        vec![text("7"), Cell::Null, Cell::Null, Cell::Null, Cell::Null],
                    ),
                },
                Message::Truncate {
                    relations: vec![1, 2],
                },
            ]),
            &mut relations,
        )
        .expect("valid");
        let only_truncate = events(&txs[0], &relations, &config(&[Operation::Truncate]));
        assert_eq!(only_truncate.len(), 1);
        let Outcome::Event(e) = &only_truncate[0] else {
            panic!("poison");
        };
        assert_eq!(
            (e["op"].as_str(), e["new"].is_null()),
            (Some("TRUNCATE"), true)
        );
        assert_eq!(
            events(&txs[0], &relations, &config(&[Operation::Insert])).len(),
            0
        );
    }

    #[test]
    fn undecodable_changes_are_poison_not_errors() {
        let mut relations = HashMap::new();
        let mut msgs = stream(vec![Message::Insert {
            relation: 99,
            new: vec![],
        }]);
        msgs.insert(3, Err(ParseError("cut short".into())));
        let txs = transactions(msgs, &mut relations).expect("valid");
        let out = events(&txs[0], &relations, &config(&Operation::ALL));
        assert_eq!(out.len(), 2);
        assert!(out.iter().all(|o| matches!(o, Outcome::Poison { .. })));

        let big = "x".repeat(crate::listener::inbox::MAX_EVENT_BYTES + 1);
        let mut cells = row_cells();
        cells[4] = Cell::Text(big);
        let txs = transactions(
            stream(vec![Message::Insert {
                relation: 1,
                new: cells,
            }]),
            &mut relations,
        )
        .expect("valid");
        let out = events(&txs[0], &relations, &config(&Operation::ALL));
        let Outcome::Poison { payload, error } = &out[0] else {
            panic!("stored a too-large event");
        };
        assert!(error.contains("bytes of JSON"), "{error}");
        assert_eq!(payload["new"]["id"], 7);
        assert_eq!(payload["new"]["paid"], true);
        assert_eq!(
            payload["new"]["note"]["omittedBytes"],
            crate::listener::inbox::MAX_EVENT_BYTES + 3
        );
        assert_eq!(payload["table"], "orders");
    }

    #[test]
    fn an_unfinished_transaction_waits_for_the_next_fetch() {
        let mut relations = HashMap::new();
        let mut msgs = stream(vec![]);
        msgs.push(Ok(Message::Begin {
            final_lsn: Lsn(0xB0),
            commit_time: 0,
            xid: 6,
        }));
        let txs = transactions(msgs, &mut relations).expect("valid");
        assert_eq!(txs.len(), 1);
        assert_eq!(txs[0].xid, 5);
    }
}
