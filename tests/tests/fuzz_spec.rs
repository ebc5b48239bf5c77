//! Schemathesis, run from the checked-in spec against the real service, finds no server error
//! and no response that breaks its documented schema.
//!
//! The tenant is seeded with real resources and every `{id}` path parameter is pinned to one of
//! them, so the generated requests reach the handlers' real logic instead of stopping at 404.
//! The caller is a user who is ADMIN of the seeded tenant: tenant-wide operations
//! (`updateTenant`, `deleteTenant`) aim at a second tenant of theirs, so disabling or deleting
//! it does not turn every later request into a 403.

use jet_tests::app::{Admin, bearer};
use jet_tests::flow::Flow;
use jet_tests::{TestApp, jwt};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// Pinned so that the run means the same thing on every machine.
const SCHEMATHESIS: &str = "schemathesis==4.32.5";

/// Test cases per operation and phase: enough to try every field's edge cases, bounded so the
/// whole run stays well under five minutes on two cores.
const MAX_EXAMPLES: &str = "20";

/// Streams that stay open for as long as the client listens: a fuzzer request would only time
/// out. (`streamInstanceEvents` is fuzzed: the seeded run has ended, so its stream closes.)
const ENDLESS_STREAMS: [&str; 2] = ["streamAppPage", "tailListener"];

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A virtualenv under target/ with schemathesis, created once and reused.
fn venv() -> PathBuf {
    let venv = workspace().join("target/fuzz-venv");
    let marker = venv.join(format!("installed-{SCHEMATHESIS}"));
    if !marker.exists() {
        run(Command::new("python3").args(["-m", "venv"]).arg(&venv));
        run(Command::new(venv.join("bin/pip")).args(["install", "--quiet", SCHEMATHESIS]));
        std::fs::write(&marker, b"").expect("marker");
    }
    venv
}

async fn created(app: &TestApp, auth: &str, path: String, body: Value, id: &str) -> String {
    let resp = app.post(&path, auth, body.clone()).await;
    assert_eq!(resp.status, 201, "seed {path} {body}: {}", resp.body);
    resp.str(id)
}

/// Real resources of every kind with an `{id}` operation; returns the path parameters.
async fn seed(app: &TestApp, a: &Admin, user_auth: &str) -> Vec<(&'static str, String)> {
    let t = format!("/api/v1/tenants/{}", a.tenant_id);
    let second_tenant = created(
        app,
        user_auth,
        "/api/v1/tenants".into(),
        json!({"tenantTitle": "fuzzed tenant"}),
        "tenantID",
    )
    .await;
    let member = app.user("fb-fuzz-member", "member@example.com").await;
    app.member(a.tenant_id, member, "MEMBER").await;
    let role = app.role(a, "fuzzed role", &["tenant:role:list"]).await;
    let (api_key, _) = app.key_with_roles(a, "fuzzed key", &[&role]).await;
    let flow = Flow::new()
        .node("start", "start", json!({}))
        .node("end", "end", json!({}))
        .edge("start", "end");
    let workflow = app.save(a, &flow).await;
    let instance = app.execute(a, &workflow, json!({"x": 1})).await;
    let detail = app.finished(a, &instance, 30).await;
    assert_eq!(detail["status"], "COMPLETED", "{detail}");
    let datasource = created(
        app,
        &a.auth,
        format!("{t}/datasources"),
        json!({"datasourceTitle": "hooks", "datasourceType": "webhook", "datasourceOptions": {}}),
        "datasourceID",
    )
    .await;
    let listener = created(
        app,
        &a.auth,
        format!("{t}/listeners"),
        json!({"datasourceID": datasource, "listenerTitle": "hook", "listenerType": "webhook",
               "endpointPath": "fuzzed"}),
        "listenerID",
    )
    .await;
    let action = created(
        app,
        &a.auth,
        format!("{t}/listeners/{listener}/actions"),
        json!({"actionType": "save_to_buffer", "actionConfig": {"bufferName": "fuzzed"}}),
        "actionID",
    )
    .await;
    let page = created(
        app,
        &a.auth,
        format!("{t}/app-pages"),
        json!({"appPageTitle": "page", "appPageConfig": {}}),
        "appPageID",
    )
    .await;
    let widget = created(
        app,
        &a.auth,
        format!("{t}/widgets"),
        json!({"widgetTitle": "w", "widgetType": "text", "widgetConfig": {}}),
        "widgetID",
    )
    .await;
    let cron = created(
        app,
        &a.auth,
        format!("{t}/cronjobs"),
        json!({"cronJobTitle": "c", "cronJobSchedule": "0 0 1 1 *", "workflowID": workflow}),
        "cronJobID",
    )
    .await;
    vec![
        ("tenantID", a.tenant_id.to_string()),
        ("secondTenantID", second_tenant),
        ("tenantUserID", member.to_string()),
        ("roleID", role),
        ("apiKeyID", api_key),
        ("workflowID", workflow),
        ("instanceID", instance),
        ("datasourceID", datasource),
        ("listenerID", listener),
        ("actionID", action),
        ("appPageID", page),
        ("widgetID", widget),
        ("cronJobID", cron),
    ]
}

/// The schemathesis configuration: every seeded id pinned, tenant-wide operations on the
/// second tenant.
fn config(ids: &[(&str, String)]) -> String {
    let value = |name: &str| {
        ids.iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| panic!("no seeded {name}"))
    };
    let mut toml = String::from("[parameters]\n");
    for (name, id) in ids.iter().filter(|(n, _)| *n != "secondTenantID") {
        toml.push_str(&format!("\"path.{name}\" = \"{id}\"\n"));
    }
    for operation in ["updateTenant", "deleteTenant"] {
        toml.push_str(&format!(
            "\n[[operations]]\ninclude-operation-id = \"{operation}\"\nparameters = {{ \"path.tenantID\" = \"{}\" }}\n",
            value("secondTenantID")
        ));
    }
    toml
}

#[tokio::test]
#[allow(clippy::disallowed_methods)] // the fuzzer's PATH
async fn schemathesis_finds_no_server_error_and_no_schema_mismatch() {
    let venv = venv();
    let app = TestApp::with_workers().await;
    let a = app.admin("Fuzzed").await;
    let user = app.user("fb-fuzz", "fuzz@example.com").await;
    app.member(a.tenant_id, user, "ADMIN").await;
    let user_auth = bearer(&jwt::hs256("fb-fuzz"));
    let ids = seed(&app, &a, &user_auth).await;

    let dir = std::env::temp_dir().join(format!("jet-fuzz-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).expect("fuzz dir");
    std::fs::write(dir.join("schemathesis.toml"), config(&ids)).expect("config");
    let mut cmd = tokio::process::Command::new(venv.join("bin/schemathesis"));
    cmd.current_dir(&dir)
        .arg("run")
        .arg(workspace().join("openapi/openapi.json"))
        .args(["--url", &app.base])
        .args(["--checks", "not_a_server_error,response_schema_conformance"])
        .args(["--phases", "examples,coverage,fuzzing"])
        .args(["--max-examples", MAX_EXAMPLES, "--seed", "20261203"])
        .args(["--generation-database", "none"])
        .args(["--request-timeout", "20", "--workers", "2"])
        .args(["--header", &format!("Authorization: {user_auth}")])
        .args(["--no-color", "--warnings", "off"])
        .args(["--report", "har", "--report-har-path"])
        .arg(dir.join("run.har"));
    for operation in ENDLESS_STREAMS {
        cmd.args(["--exclude-operation-id", operation]);
    }
    let started = Instant::now();
    let out = tokio::time::timeout(Duration::from_secs(420), cmd.output())
        .await
        .expect("schemathesis finishes within seven minutes")
        .expect("schemathesis runs");
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("schemathesis took {:?}\n{report}", started.elapsed());
    assert!(
        out.status.success(),
        "schemathesis found failures:\n{report}"
    );
    // A run whose requests all stopped at 401 or 404 would pass too: every seeded resource
    // must have been reached by at least one successful request.
    let har: Value = serde_json::from_slice(&std::fs::read(dir.join("run.har")).expect("HAR"))
        .expect("HAR is JSON");
    let entries = har["log"]["entries"].as_array().expect("HAR entries");
    let succeeded: Vec<&str> = entries
        .iter()
        .filter(|e| {
            e["response"]["status"]
                .as_u64()
                .is_some_and(|s| (200..300).contains(&s))
        })
        .filter_map(|e| e["request"]["url"].as_str())
        .collect();
    for (name, id) in &ids {
        assert!(
            succeeded.iter().any(|url| url.contains(id.as_str())),
            "no request on the seeded {name} {id} succeeded: the fuzzer never reached its logic"
        );
    }
    eprintln!("{} requests, {} succeeded", entries.len(), succeeded.len());
    let _ = std::fs::remove_dir_all(&dir);
}
