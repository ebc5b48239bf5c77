//! The schema matches upstream Jet Admin (reference/jetadmin.md §2) and keeps our invariants:
//! every foreign key column is indexed and every constraint is named explicitly.

use jet_tests::TestDb;
use std::collections::BTreeMap;

const TS: &str = "timestamp(6) with time zone";

/// Upstream's tables and columns with their types, transcribed from the reference schema.
/// `vc` is varchar without length, `ts` timestamptz(6).
const EXPECTED: &str = "
tblTenants: tenantID uuid, creatorID uuid, isDisabled boolean, createdAt ts, updatedAt ts, disabledAt ts, disableReason vc, tenantLogoURL vc, tenantTitle vc, createdByApiKeyID uuid
tblUsers: userID uuid, firebaseID character varying(128), phoneNumber vc, firstName vc, lastName vc, address1 vc, address2 vc, email vc, isDisabled boolean, createdAt ts, updatedAt ts, disabledAt ts, disableReason vc, lastSeen ts
tblUsersTenantsRelationship: tenantID uuid, userID uuid, createdAt ts, updatedAt ts, role vc
tblUserTenantConfigMap: userID uuid, tenantID uuid, config jsonb
tblRoles: roleID uuid, roleTitle vc, roleDescription vc, tenantID uuid
tblPermissions: permissionID uuid, permissionTitle vc, permissionDescription vc
tblRolePermissionMappings: roleID uuid, permissionID uuid
tblUserTenantRoleMappings: userID uuid, tenantID uuid, roleID uuid
tblAPIKeys: apiKeyID uuid, tenantID uuid, apiKeyHash vc, apiKeyTitle vc, createdAt ts, isDisabled boolean, creatorID uuid, createdByApiKeyID uuid, apiKeyPrefix character varying(8)
tblAPIKeyRoleMappings: apiKeyID uuid, roleID uuid
tblAuditLogs: auditLogID uuid, userID uuid, tenantID uuid, type vc, subType vc, success boolean, createdAt ts, metadata jsonb, error jsonb, apiKeyID uuid
tblAppPages: appPageID uuid, appPageDescription vc, tenantID uuid, createdAt ts, updatedAt ts, creatorID uuid, appPageConfig jsonb, appPageTitle vc, createdByApiKeyID uuid, folderID uuid
tblWidgets: widgetID uuid, widgetTitle vc, widgetDescription vc, widgetType vc, widgetConfig jsonb, createdAt ts, updatedAt ts, tenantID uuid, creatorID uuid, refreshInterval integer, createdByApiKeyID uuid, folderID uuid
tblDatasources: datasourceID uuid, datasourceTitle vc, datasourceType vc, createdAt ts, updatedAt ts, tenantID uuid, creatorID uuid, datasourceOptions jsonb, datasourceTags character varying[], createdByApiKeyID uuid, connectionStatus character varying(32), webhookToken character varying(128), webhookSecret character varying(255), datasourceDescription text
tblDataQueries: dataQueryID uuid, tenantID uuid, createdAt ts, updatedAt ts, disabledAt ts, isDisabled boolean, dataQueryTitle vc, dataQueryDescription vc, dataQueryOptions json, runOnLoad boolean, dataQueryResultSchema json, creatorID uuid, datasourceID uuid, datasourceType vc, createdByApiKeyID uuid, folderID uuid
tblWorkflows: workflowID uuid, title vc, tenantID uuid, creatorID uuid, isDisabled boolean, disabledAt ts, createdAt ts, updatedAt ts, workflowOptions jsonb, createdByApiKeyID uuid, folderID uuid
tblWorkflowNodes: nodeID uuid, workflowID uuid, nodeType vc, timeoutSeconds integer, retryLimit integer, createdAt ts, updatedAt ts, nodeConfig jsonb
tblWorkflowEdge: edgeID uuid, workflowID uuid, upstreamNodeID uuid, downstreamNodeID uuid, createdAt ts, updatedAt ts, sourceHandle vc, targetHandle vc, edgeType vc, edgeConfig jsonb
tblWorkflowInstances: instanceID uuid, workflowID uuid, tenantID uuid, status vc, version integer, startedAt ts, completedAt ts, createdAt ts, updatedAt ts, isTest boolean, parentInstanceID uuid, parentNodeID vc
tblWorkflowInstanceLogs: logID bigint, instanceID uuid, nodeID text, eventType vc, nodeStatus vc, outputVariable vc, payload jsonb, errorMessage vc, createdAt ts, nodeAttempt integer
tblWorkflowDataCollectionRequests: collectionRequestID uuid, instanceID uuid, nodeID uuid, nodeAttempt integer, status character varying(50), collectionType character varying(50), collectionConfig jsonb, submittedData jsonb, expiresAt ts, createdAt ts, updatedAt ts
tblListeners: listenerID uuid, tenantID uuid, datasourceID uuid, listenerTitle character varying(255), listenerDescription text, listenerType character varying(50), listenerConfig jsonb, status character varying(20), lastError text, lastEventAt ts, eventCount bigint, endpointPath character varying(255), createdAt ts, updatedAt ts, creatorID uuid, createdByApiKeyID uuid, folderID uuid
tblListenerActions: actionID uuid, listenerID uuid, actionType character varying(30), actionConfig jsonb, isEnabled boolean, orderIndex integer, createdAt ts
tblListenerEvents: eventID uuid, listenerID uuid, tenantID uuid, bufferName character varying(255), eventData jsonb, eventMeta jsonb, receivedAt ts, seqNo bigint
tblEventDLQ: dlqID uuid, tenantID uuid, source character varying(50), sourceID uuid, payload jsonb, error text, retryCount integer, maxRetries integer, nextRetryAt ts, status character varying(20), createdAt ts, updatedAt ts, resolvedAt ts
tblCronJobs: cronJobID uuid, cronJobTitle vc, cronJobDescription text, cronJobSchedule vc, isDisabled boolean, nextRunAt ts, timeoutSeconds integer, retryAttempts integer, retryDelaySeconds integer, createdAt ts, updatedAt ts, tenantID uuid, workflowID uuid, workflowConfig jsonb, creatorID uuid, createdByApiKeyID uuid, folderID uuid
tblCronJobHistory: cronJobHistoryID uuid, cronJobID uuid, status character varying(50), scheduledAt ts, startTime ts, endTime ts, durationMs integer, result text, triggerType character varying(50), createdAt ts, updatedAt ts
";

fn expected() -> BTreeMap<String, Vec<(String, String)>> {
    EXPECTED
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let (table, cols) = line.split_once(':').expect("table: columns");
            let cols = cols
                .split(',')
                .map(|c| {
                    let (name, ty) = c.trim().split_once(' ').expect("column type");
                    let ty = match ty {
                        "vc" => "character varying",
                        "ts" => TS,
                        other => other,
                    };
                    (name.to_owned(), ty.to_owned())
                })
                .collect();
            (table.trim().to_owned(), cols)
        })
        .collect()
}

#[tokio::test]
async fn every_upstream_table_and_column_exists_with_its_type() {
    let db = TestDb::new().await;
    let rows: Vec<(String, String, String)> = sqlx::query_as(
        "SELECT c.relname::text, a.attname::text, format_type(a.atttypid, a.atttypmod)
         FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
         JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname = 'public' AND c.relkind = 'r' AND a.attnum > 0 AND NOT a.attisdropped",
    )
    .fetch_all(&db.pool)
    .await
    .expect("catalog query");
    let actual: BTreeMap<(String, String), String> =
        rows.into_iter().map(|(t, c, ty)| ((t, c), ty)).collect();
    let mut problems = Vec::new();
    for (table, columns) in expected() {
        for (column, ty) in columns {
            match actual.get(&(table.clone(), column.clone())) {
                None => problems.push(format!("missing {table}.{column}")),
                Some(found) if *found != ty => {
                    problems.push(format!("{table}.{column}: {found}, expected {ty}"))
                }
                Some(_) => {}
            }
        }
    }
    assert!(
        problems.is_empty(),
        "schema differs from upstream:\n{}",
        problems.join("\n")
    );
}

#[tokio::test]
async fn every_foreign_key_is_covered_by_an_index() {
    let db = TestDb::new().await;
    // A foreign key is covered when some index's leading columns are exactly its columns.
    let uncovered: Vec<(String, String)> = sqlx::query_as(
        "SELECT c.conrelid::regclass::text, c.conname::text FROM pg_constraint c
         JOIN pg_namespace n ON n.oid = c.connamespace
         WHERE c.contype = 'f' AND n.nspname = 'public'
           AND NOT EXISTS (
             SELECT 1 FROM pg_index i
             WHERE i.indrelid = c.conrelid
               AND (i.indkey::int2[])[0:cardinality(c.conkey) - 1] @> c.conkey
               AND (i.indkey::int2[])[0:cardinality(c.conkey) - 1] <@ c.conkey)",
    )
    .fetch_all(&db.pool)
    .await
    .expect("catalog query");
    assert!(
        uncovered.is_empty(),
        "foreign keys without an index: {uncovered:?}"
    );
}

#[tokio::test]
async fn every_constraint_has_an_explicit_name() {
    let db = TestDb::new().await;
    // The names PostgreSQL would generate: <table>_pkey, <table>_<columns>_fkey|key|check.
    let generated: Vec<(String, String)> = sqlx::query_as(
        r"SELECT cl.relname::text, c.conname::text FROM pg_constraint c
          JOIN pg_class cl ON cl.oid = c.conrelid
          JOIN pg_namespace n ON n.oid = c.connamespace
          WHERE n.nspname = 'public' AND cl.relname <> '_sqlx_migrations'
            AND c.conname IN (
              cl.relname || '_pkey',
              cl.relname || '_check',
              cl.relname || '_' || (SELECT string_agg(a.attname, '_' ORDER BY k.ord)
                                    FROM unnest(c.conkey) WITH ORDINALITY AS k(attnum, ord)
                                    JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.attnum)
                || CASE c.contype WHEN 'f' THEN '_fkey' WHEN 'u' THEN '_key' WHEN 'c' THEN '_check' ELSE '_pkey' END)",
    )
    .fetch_all(&db.pool)
    .await
    .expect("catalog query");
    assert!(
        generated.is_empty(),
        "constraints with generated names: {generated:?}"
    );
}

#[tokio::test]
async fn upstream_constraint_names_are_kept() {
    let db = TestDb::new().await;
    for (table, name) in [
        ("tblTenants", "fktblTenantstblUsersCreatorID"),
        (
            "tblUsersTenantsRelationship",
            "pktblUsersTenantsRelationship",
        ),
        ("tblUserTenantRoleMappings", "fkUserTenantRoleUserTenant"),
        ("tblRoles", "fktblRolesTenantIDTblTenantsTenantID"),
        ("tblWorkflowEdge", "tblWorkflowEdge_upstream_fkey"),
        (
            "tblWorkflowInstanceLogs",
            "fk_tblWorkflowInstanceLogs_instanceID",
        ),
        ("tblListeners", "uq_tblListeners_tenantID_endpointPath"),
        ("tblCronJobHistory", "fkTblCronJobHistoryCronjobID"),
    ] {
        let found: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM pg_constraint WHERE conrelid = format('%I', $1::text)::regclass AND conname = $2)",
        )
        .bind(table)
        .bind(name)
        .fetch_one(&db.pool)
        .await
        .expect("catalog query");
        assert!(found, "{table} lacks constraint {name}");
    }
}

#[tokio::test]
async fn instance_log_idempotency_index_rejects_a_duplicate_result() {
    let db = TestDb::new().await;
    // A bare RUNNING instance row, written without the engine, to exercise the index.
    db.allow_stuck_instances();
    let tenant: uuid::Uuid = sqlx::query_scalar(
        r#"INSERT INTO "tblTenants" ("tenantTitle") VALUES ('t') RETURNING "tenantID""#,
    )
    .fetch_one(&db.pool)
    .await
    .expect("tenant");
    let instance: uuid::Uuid = sqlx::query_scalar(
        r#"INSERT INTO "tblWorkflowInstances" ("tenantID", "status") VALUES ($1, 'RUNNING') RETURNING "instanceID""#,
    )
    .bind(tenant)
    .fetch_one(&db.pool)
    .await
    .expect("instance");
    let insert = r#"INSERT INTO "tblWorkflowInstanceLogs" ("instanceID", "nodeID", "eventType", "nodeAttempt")
                    VALUES ($1, $2, 'NODE_COMPLETED', 1)"#;
    sqlx::query(insert)
        .bind(instance)
        .bind("node-a")
        .execute(&db.pool)
        .await
        .expect("first result");
    let second = sqlx::query(insert)
        .bind(instance)
        .bind("node-a")
        .execute(&db.pool)
        .await;
    let err = second.expect_err("the duplicate must be refused");
    let constraint = err
        .as_database_error()
        .and_then(|e| e.constraint())
        .map(str::to_owned);
    assert_eq!(
        constraint.as_deref(),
        Some("uq_tblWorkflowInstanceLogs_idempotency")
    );
    // Input rows carry no nodeID and are not constrained.
    let input = r#"INSERT INTO "tblWorkflowInstanceLogs" ("instanceID", "eventType") VALUES ($1, 'INPUT_SET')"#;
    sqlx::query(input)
        .bind(instance)
        .execute(&db.pool)
        .await
        .expect("input 1");
    sqlx::query(input)
        .bind(instance)
        .execute(&db.pool)
        .await
        .expect("input 2");
    let ids: Vec<i64> =
        sqlx::query_scalar(r#"SELECT "logID" FROM "tblWorkflowInstanceLogs" ORDER BY "logID""#)
            .fetch_all(&db.pool)
            .await
            .expect("log ids");
    assert!(
        ids.windows(2).all(|w| w[0] < w[1]),
        "logID orders the log: {ids:?}"
    );
}

#[tokio::test]
async fn the_permission_catalogue_and_global_admin_role_are_seeded() {
    let db = TestDb::new().await;
    let titles: Vec<String> =
        sqlx::query_scalar(r#"SELECT "permissionTitle" FROM "tblPermissions""#)
            .fetch_all(&db.pool)
            .await
            .expect("permissions");
    for expected in [
        "tenant:read",
        "tenant:update",
        "tenant:delete",
        "tenant:workflow:execute",
        "tenant:dataquery:test",
        "tenant:apikey:create",
        "tenant:permissions:list",
        "tenant:widgetlibrary:install",
        "tenant:listener:export",
    ] {
        assert!(
            titles.iter().any(|t| t == expected),
            "missing permission {expected}"
        );
    }
    let unmapped: i64 = sqlx::query_scalar(
        r#"SELECT count(*) FROM "tblPermissions" p WHERE NOT EXISTS (
             SELECT 1 FROM "tblRolePermissionMappings" m
             WHERE m."permissionID" = p."permissionID" AND m."roleID" = $1)"#,
    )
    .bind(jet_shared::bootstrap::GLOBAL_ADMIN_ROLE)
    .fetch_one(&db.pool)
    .await
    .expect("mapping count");
    assert_eq!(unmapped, 0, "the global ADMIN role holds every permission");
}

#[tokio::test]
async fn apalis_queue_schema_is_installed_by_migrate() {
    let db = TestDb::new().await;
    let jobs: Option<String> = sqlx::query_scalar("SELECT to_regclass('apalis.jobs')::text")
        .fetch_one(&db.pool)
        .await
        .expect("regclass");
    assert_eq!(jobs.as_deref(), Some("apalis.jobs"));
    let pending = jet_shared::db::pending_migrations(&db.pool)
        .await
        .expect("pending");
    assert!(
        pending.is_empty(),
        "template is fully migrated: {pending:?}"
    );
}
