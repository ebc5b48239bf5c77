//! The checked-in spec is the service's spec, and it describes every operation fully.

use jet_tests::TestApp;
use serde_json::Value;

fn checked_in() -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../openapi/openapi.json");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn the_checked_in_spec_matches_the_code() {
    assert!(
        checked_in() == jet_api::spec_json(),
        "openapi/openapi.json drifted from the code: run `cargo run -p jet -- openapi --write` and commit it"
    );
}

#[test]
fn every_operation_is_fully_described() {
    let spec: Value = serde_json::from_str(&jet_api::spec_json()).expect("valid JSON");
    let mut ids = std::collections::HashSet::new();
    let mut count = 0;
    for (path, ops) in spec["paths"].as_object().expect("paths") {
        for (method, op) in ops.as_object().expect("operations") {
            let name = format!("{} {path}", method.to_uppercase());
            let id = op["operationId"]
                .as_str()
                .unwrap_or_else(|| panic!("{name}: no operationId"));
            assert!(
                ids.insert(id.to_owned()),
                "{name}: duplicate operationId {id}"
            );
            assert!(
                op["summary"].as_str().is_some_and(|s| !s.is_empty()),
                "{name}: no summary"
            );
            let responses = op["responses"].as_object().expect("responses");
            assert!(
                responses.keys().any(|k| k.starts_with('2')),
                "{name}: no success response"
            );
            if path.starts_with("/api/") {
                for status in ["400", "401", "403", "404", "422", "500"] {
                    let error = &responses[status]["content"]["application/json"]["schema"]["$ref"];
                    assert_eq!(
                        error, "#/components/schemas/ErrorBody",
                        "{name}: {status} is not an ErrorBody"
                    );
                }
                assert!(op["security"].is_array(), "{name}: no security requirement");
            }
            // Actions named by their path (clone, cancel, a cron job's run-now, a listener's
            // activate and deactivate, a credential rotation) take no body; every other write does.
            let bodiless_action = path.ends_with("/clone")
                || path.ends_with("/cancel")
                || path.ends_with("/activate")
                || path.ends_with("/deactivate")
                || path.ends_with("/cronjobs/{cronJobID}/run")
                || path.ends_with("/webhook-credentials/rotate");
            if ["post", "put", "patch"].contains(&method.as_str()) && !bodiless_action {
                assert!(
                    op["requestBody"]["content"].is_object(),
                    "{name}: no request body schema"
                );
            }
            count += 1;
        }
    }
    assert!(count >= 28, "only {count} operations");
    let scheme = &spec["components"]["securitySchemes"]["JetAuth"];
    assert_eq!(scheme["type"], "apiKey");
    assert_eq!(scheme["name"], "Authorization");
}

#[tokio::test]
async fn the_service_serves_its_spec_and_docs() {
    let app = TestApp::spawn().await;
    let served = app
        .client
        .get(format!("{}/openapi.json", app.base))
        .send()
        .await
        .expect("spec");
    assert_eq!(served.status(), 200);
    let served: Value = served.json().await.expect("json");
    let expected: Value = serde_json::from_str(&jet_api::spec_json()).expect("json");
    assert_eq!(served, expected);
    let docs = app
        .client
        .get(format!("{}/docs", app.base))
        .send()
        .await
        .expect("docs");
    assert_eq!(docs.status(), 200);
    let html = docs.text().await.expect("html");
    assert!(html.contains("swagger-ui"), "docs page is the Swagger UI");
}

/// Generators choke on a `charset` parameter and type `type: array` event streams as JSON:
/// every JSON media type is plain, and each SSE operation gives the schema of one event.
#[test]
fn media_types_are_plain_and_event_streams_describe_one_event() {
    let text = jet_api::spec_json();
    assert!(!text.contains("charset"), "a media type carries a charset");
    let spec: Value = serde_json::from_str(&text).expect("valid JSON");
    let mut streams = Vec::new();
    for ops in spec["paths"].as_object().expect("paths").values() {
        for op in ops.as_object().expect("operations").values() {
            let content = &op["responses"]["200"]["content"];
            if let Some(stream) = content.get("text/event-stream") {
                assert!(content.get("application/json").is_none());
                let payload = stream["schema"]["$ref"].as_str().expect("a payload $ref");
                let name = payload.trim_start_matches("#/components/schemas/");
                assert!(
                    spec["components"]["schemas"][name].is_object(),
                    "{name} is declared"
                );
                streams.push(op["operationId"].as_str().unwrap_or_default().to_owned());
            }
        }
    }
    streams.sort();
    assert_eq!(
        streams,
        ["streamAppPage", "streamInstanceEvents", "tailListener"]
    );
}

/// `null` is accepted exactly where the spec says `nullable`, and those places say what it
/// means; fields of our own shapes are typed, and status and type fields are enums.
#[test]
fn nullable_fields_are_declared_and_documented() {
    let spec: Value = serde_json::from_str(&jet_api::spec_json()).expect("valid JSON");
    let schemas = &spec["components"]["schemas"];
    for (schema, field) in [
        ("UpdateTenant", "tenantLogoURL"),
        ("UpdateTenant", "disableReason"),
        ("UpdateRole", "roleDescription"),
        ("UpdateCronJob", "cronJobDescription"),
        ("UpdateCronJob", "timeoutSeconds"),
        ("UpdateCronJob", "workflowConfig"),
    ] {
        let property = &schemas[schema]["properties"][field];
        assert_eq!(property["nullable"], true, "{schema}.{field}");
        assert!(
            property["description"]
                .as_str()
                .is_some_and(|d| d.contains("`null`")),
            "{schema}.{field} says what null means"
        );
    }
    assert!(schemas["UpdateTenant"]["properties"]["tenantTitle"]["nullable"].is_null());
}

/// A property's schema with `$ref`s and poem's `allOf: [{$ref}, {description}]` wrapper
/// followed to the schema that says its type.
fn resolve<'a>(spec: &'a Value, property: &'a Value) -> &'a Value {
    let mut schema = property;
    for _ in 0..8 {
        if let Some(name) = schema["$ref"].as_str() {
            let name = name.trim_start_matches("#/components/schemas/");
            schema = &spec["components"]["schemas"][name];
        } else if let Some(target) = schema["allOf"]
            .as_array()
            .and_then(|parts| parts.iter().find(|p| p.get("$ref").is_some()))
        {
            schema = target;
        } else {
            break;
        }
    }
    schema
}

/// Status- and type-like fields whose values are not a closed set this build owns.
const FREE_TEXT: &[&str] = &[
    // Upstream's free text about a datasource's last connection test.
    "DatasourceOut.connectionStatus",
    // Checked against the permission catalogue, which is data.
    "AssetPermissionIn.resourceType",
    // The operation id and `METHOD path` of the audited request.
    "AuditLogOut.type",
    "AuditLogOut.subType",
    // A result column's Postgres type name.
    "ColumnOut.type",
    // The frontend's widget kinds (`chart`, `table`, …), stored as sent.
    "CreateWidget.widgetType",
    "SaveWidget.widgetType",
    "WidgetOut.widgetType",
    // The engine's log vocabulary, which grows with the engine.
    "LogOut.eventType",
    "LogOut.nodeStatus",
];

/// Every status and type field lists its values, so that generated clients get enums (the
/// fuzz run checks the server's answers against them, and the body check refuses others).
/// The table is what the spec carried when these were a post-processing table: each field
/// keeps exactly its values, now from a Rust enum.
#[test]
fn status_and_type_fields_are_enums() {
    let spec: Value = serde_json::from_str(&jet_api::spec_json()).expect("valid JSON");
    let mut missing = Vec::new();
    for (name, schema) in spec["components"]["schemas"].as_object().expect("schemas") {
        for (field, property) in schema["properties"].as_object().into_iter().flatten() {
            let typed = field == "status"
                || field == "role"
                || field == "type"
                || field.ends_with("Type")
                || field.ends_with("Status")
                || field.ends_with("Policy");
            let resolved = resolve(&spec, property);
            if typed
                && !FREE_TEXT.contains(&format!("{name}.{field}").as_str())
                && resolved["type"] == "string"
                && resolved["enum"].as_array().is_none_or(|v| v.is_empty())
            {
                missing.push(format!("{name}.{field}"));
            }
        }
    }
    assert_eq!(missing, Vec::<String>::new(), "without an enum");

    let instance = ["PENDING", "RUNNING", "COMPLETED", "FAILED", "CANCELLED"];
    let dlq = ["PENDING", "RETRYING", "PARKED", "REPLAYED", "DISCARDED"];
    let listener_types = ["postgresql", "webhook"];
    let action_types = [
        "transform",
        "trigger_workflow",
        "trigger_query",
        "save_to_buffer",
        "push_to_app_page",
    ];
    let overlap = ["allow", "skip", "buffer_one"];
    let catchup = ["skip", "catch_up"];
    let membership = ["ADMIN", "MEMBER"];
    let datasource_types = ["postgresql", "restapi", "webhook"];
    let fires = [
        "QUEUED", "RETRYING", "RUNNING", "SUCCESS", "FAILURE", "TIMEOUT", "SKIPPED",
    ];
    let table: &[(&str, &str, &[&str])] = &[
        ("InstanceOut", "status", &instance),
        ("InstanceDetail", "status", &instance),
        ("InstanceEvent", "status", &instance),
        ("ExplainOut", "status", &instance),
        ("ExplainWaitingForChild", "childStatus", &instance),
        (
            "ExplainWaitingForHuman",
            "requestType",
            &["form", "approval"],
        ),
        (
            "ExplainResumeQueued",
            "requestStatus",
            &["COMPLETED", "EXPIRED"],
        ),
        ("DlqOut", "status", &dlq),
        ("ReplayOut", "status", &dlq),
        ("DlqFilters", "status", &dlq),
        ("BulkRunOut", "action", &["replay", "discard"]),
        ("BulkRunOut", "status", &["running", "done"]),
        ("ListenerOut", "listenerType", &listener_types),
        ("ListenerOut", "status", &["inactive", "active", "error"]),
        ("SaveListener", "listenerType", &listener_types),
        ("ConnectionOut", "listenerType", &listener_types),
        ("ConnectionOut", "status", &["active", "error"]),
        ("ActionOut", "actionType", &action_types),
        ("SaveAction", "actionType", &action_types),
        ("CronJobOut", "overlapPolicy", &overlap),
        ("CronJobOut", "catchupPolicy", &catchup),
        ("CreateCronJob", "overlapPolicy", &overlap),
        ("CreateCronJob", "catchupPolicy", &catchup),
        ("UpdateCronJob", "overlapPolicy", &overlap),
        ("UpdateCronJob", "catchupPolicy", &catchup),
        ("HistoryOut", "status", &fires),
        (
            "HistoryOut",
            "triggerType",
            &["SCHEDULED", "MANUAL", "CATCHUP"],
        ),
        (
            "RequestOut",
            "status",
            &["PENDING", "COMPLETED", "EXPIRED", "CANCELLED"],
        ),
        ("RequestOut", "collectionType", &["form", "approval"]),
        ("MemberOut", "role", &membership),
        ("AddMember", "role", &membership),
        ("TenantOut", "role", &membership),
        ("TenantDetail", "role", &membership),
        ("Me", "authType", &["USER", "API_KEY"]),
        ("Readiness", "status", &["ready", "not_ready"]),
        ("Health", "status", &["ok"]),
        ("DatasourceOut", "datasourceType", &datasource_types),
        ("CreateDatasource", "datasourceType", &datasource_types),
        ("TestDatasource", "datasourceType", &datasource_types),
        ("DataQueryOut", "datasourceType", &datasource_types),
        (
            "DlqOut",
            "source",
            &["command", "listener", "cdc", "cron", "webhook"],
        ),
    ];
    let schemas = &spec["components"]["schemas"];
    for (schema, field, values) in table {
        let property = &schemas[schema]["properties"][field];
        assert!(property.is_object(), "{schema}.{field} is in the spec");
        assert_eq!(
            resolve(&spec, property)["enum"],
            serde_json::json!(values),
            "{schema}.{field}"
        );
    }
    let node_types = &resolve(&spec, &schemas["WorkflowNode"]["properties"]["type"])["enum"];
    assert_eq!(
        node_types.as_array().map(Vec::len),
        Some(13),
        "{node_types}"
    );
    let email = &schemas["AddMember"]["properties"]["email"];
    assert_eq!(email["format"], "email");
}

/// Fields whose shape the server defines are typed objects, not free-form values.
#[test]
fn our_own_shapes_are_typed() {
    let spec: Value = serde_json::from_str(&jet_api::spec_json()).expect("valid JSON");
    let schemas = &spec["components"]["schemas"];
    for (schema, field, typed) in [
        ("DlqOut", "attempts", "DlqAttempt"),
        ("ReplayOut", "attempt", "DlqAttempt"),
        ("ReplayOut", "plan", "ReplayPlan"),
        ("BulkRunOut", "filters", "DlqFilters"),
        ("CronJobOut", "workflowConfig", "CronWorkflowConfig"),
        ("CreateCronJob", "workflowConfig", "CronWorkflowConfig"),
        ("UpdateCronJob", "workflowConfig", "CronWorkflowConfig"),
        ("TenantDetail", "counts", "TenantCountsOut"),
    ] {
        let mut property = schemas[schema]["properties"][field].clone();
        if property["type"] == "array" {
            property = property["items"].clone();
        }
        let named = property["$ref"]
            .as_str()
            .or_else(|| property["allOf"][0]["$ref"].as_str())
            .unwrap_or_else(|| panic!("{schema}.{field} is free-form: {property}"));
        assert_eq!(
            named,
            format!("#/components/schemas/{typed}"),
            "{schema}.{field}"
        );
        let target = &schemas[typed];
        assert!(
            target["properties"].is_object() || target["oneOf"].is_array(),
            "{typed} has a shape: {target}"
        );
    }
}

/// The dry run of a listener answers a typed report, not a free-form value.
#[test]
fn the_listener_dry_run_answers_a_typed_report() {
    let spec: Value = serde_json::from_str(&jet_api::spec_json()).expect("valid JSON");
    let op = &spec["paths"]["/api/v1/tenants/{tenantID}/listeners/{listenerID}/test"]["post"];
    assert_eq!(
        op["responses"]["200"]["content"]["application/json"]["schema"]["$ref"],
        "#/components/schemas/DryRunReport"
    );
    let step = &spec["components"]["schemas"]["DryRunStep"]["properties"];
    assert_eq!(step["status"]["$ref"], "#/components/schemas/DryRunStatus");
    assert_eq!(
        step["effect"]["allOf"][0]["$ref"],
        "#/components/schemas/DryRunEffect"
    );
}

/// Every title a client sends has `minLength: 1`: an empty one is refused by the schema (the
/// same 400 everywhere), not by some handlers.
#[test]
fn titles_have_a_min_length() {
    let spec: Value = serde_json::from_str(&jet_api::spec_json()).expect("valid JSON");
    let mut unbounded = Vec::new();
    let mut checked = 0;
    for (path, ops) in spec["paths"].as_object().expect("paths") {
        for (method, op) in ops.as_object().expect("operations") {
            let Some(body) = op["requestBody"]["content"]["application/json"]["schema"]
                .as_object()
                .map(|s| resolve(&spec, &Value::Object(s.clone())).clone())
            else {
                continue;
            };
            for (field, property) in body["properties"].as_object().into_iter().flatten() {
                if field == "title" || field.ends_with("Title") {
                    checked += 1;
                    if property["minLength"].as_u64() != Some(1) {
                        unbounded.push(format!("{method} {path}: {field}"));
                    }
                }
            }
        }
    }
    assert_eq!(
        unbounded,
        Vec::<String>::new(),
        "titles without minLength 1"
    );
    assert!(checked >= 20, "only {checked} titles found");
}
