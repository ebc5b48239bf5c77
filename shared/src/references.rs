//! The assets an app page or widget configuration points at: upstream checks the caller may
//! execute every data query, workflow, widget and listener a saved configuration names.

use crate::rbac::{Grants, Permission, permissions};
use crate::{Error, Result};
use serde_json::Value;
use sqlx::PgConnection;
use std::collections::BTreeSet;
use uuid::Uuid;

/// The kinds of asset a configuration can reference.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    DataQuery,
    Workflow,
    Widget,
    Listener,
}

impl Kind {
    /// The kind a configuration key names (`dataQueryID`, `workflowIDs`, …).
    fn of_key(key: &str) -> Option<Self> {
        match key.trim_end_matches('s') {
            "dataQueryID" => Some(Kind::DataQuery),
            "workflowID" => Some(Kind::Workflow),
            "widgetID" => Some(Kind::Widget),
            "listenerID" => Some(Kind::Listener),
            _ => None,
        }
    }

    fn permission(self) -> Permission {
        match self {
            Kind::DataQuery => permissions::DATAQUERY_EXECUTE,
            Kind::Workflow => permissions::WORKFLOW_EXECUTE,
            Kind::Widget => permissions::WIDGET_EXECUTE,
            Kind::Listener => permissions::LISTENER_EXECUTE,
        }
    }

    fn table(self) -> (&'static str, &'static str) {
        match self {
            Kind::DataQuery => ("tblDataQueries", "dataQueryID"),
            Kind::Workflow => ("tblWorkflows", "workflowID"),
            Kind::Widget => ("tblWidgets", "widgetID"),
            Kind::Listener => ("tblListeners", "listenerID"),
        }
    }

    fn noun(self) -> &'static str {
        match self {
            Kind::DataQuery => "data query",
            Kind::Workflow => "workflow",
            Kind::Widget => "widget",
            Kind::Listener => "listener",
        }
    }
}

/// Every `(kind, id)` named anywhere in `config` by a key such as `dataQueryID` or
/// `workflowIDs` (a string or an array of strings).
pub fn collect(config: &Value) -> BTreeSet<(Kind, Uuid)> {
    let mut found = BTreeSet::new();
    walk(config, &mut found);
    found
}

fn walk(value: &Value, found: &mut BTreeSet<(Kind, Uuid)>) {
    match value {
        Value::Object(map) => {
            for (key, v) in map {
                if let Some(kind) = Kind::of_key(key) {
                    let ids: Vec<&Value> = match v {
                        Value::Array(items) => items.iter().collect(),
                        other => vec![other],
                    };
                    for id in ids.into_iter().filter_map(Value::as_str) {
                        if let Ok(id) = Uuid::parse_str(id) {
                            found.insert((kind, id));
                        }
                    }
                }
                walk(v, found);
            }
        }
        Value::Array(items) => items.iter().for_each(|v| walk(v, found)),
        _ => {}
    }
}

/// Each referenced asset must exist in the tenant (`Invalid` names it) and the caller must
/// hold its execute permission (`Forbidden`).
pub async fn check(conn: &mut PgConnection, grants: &Grants, config: &Value) -> Result<()> {
    for (kind, id) in collect(config) {
        require(conn, grants, kind, id).await?;
    }
    Ok(())
}

/// One referenced asset: in the caller's tenant (`Invalid` names it) and executable by the
/// caller (`Forbidden`).
pub async fn require(conn: &mut PgConnection, grants: &Grants, kind: Kind, id: Uuid) -> Result<()> {
    let (table, key) = kind.table();
    let exists: bool = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        r#"SELECT EXISTS (SELECT 1 FROM "{table}" WHERE "{key}" = $1 AND "tenantID" = $2)"#
    )))
    .bind(id)
    .bind(grants.tenant_id)
    .fetch_one(&mut *conn)
    .await?;
    if !exists {
        return Err(Error::Invalid(format!(
            "the {} {id} it references is not in this tenant",
            kind.noun()
        )));
    }
    grants.require(kind.permission(), Some(id))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn references_are_found_at_any_depth_in_singular_or_plural_keys() {
        let (q, w, wd) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        let config = json!({
            "layout": [{"widgetID": wd.to_string(), "props": {"dataQueryID": q.to_string()}}],
            "actions": {"onClick": {"workflowIDs": [w.to_string(), "not-a-uuid"]}},
            "title": "dataQueryID"
        });
        let found = collect(&config);
        assert_eq!(
            found,
            BTreeSet::from([
                (Kind::DataQuery, q),
                (Kind::Workflow, w),
                (Kind::Widget, wd)
            ])
        );
    }
}
