//! Cron jobs over HTTP: CRUD, clone, previews, 422 codes for bad schedules, zones and inputs,
//! NUL bytes and huge values refused, permissions (including execute on the workflow) and
//! tenant isolation.

use chrono::{DateTime, Utc};
use jet_tests::TestApp;
use jet_tests::app::Admin;
use jet_tests::flow::Flow;
use serde_json::{Value, json};

fn flow() -> Flow {
    Flow::new()
        .node("start", "start", json!({}))
        .node("end", "end", json!({}))
        .edge("start", "end")
        .options(json!({"inputs": [{"name": "n", "type": "number", "required": true}]}))
}

fn jobs(a: &Admin) -> String {
    format!("/api/v1/tenants/{}/cronjobs", a.tenant_id)
}

fn body(workflow: &str) -> Value {
    json!({"cronJobTitle": "nightly", "cronJobSchedule": "0 12 * * *", "timezone": "Europe/Berlin",
           "workflowID": workflow, "workflowConfig": {"inputValues": {"n": 1}}})
}

/// The next 12:00 in Berlin after now, computed by PostgreSQL's own time-zone rules.
async fn next_berlin_noon(app: &TestApp) -> DateTime<Utc> {
    sqlx::query_scalar(
        r#"SELECT CASE WHEN t > now() THEN t ELSE ((date_trunc('day', now() AT TIME ZONE 'Europe/Berlin')
                      + interval '1 day 12 hours') AT TIME ZONE 'Europe/Berlin') END
           FROM (SELECT (date_trunc('day', now() AT TIME ZONE 'Europe/Berlin') + interval '12 hours')
                        AT TIME ZONE 'Europe/Berlin' AS t) x"#,
    )
    .fetch_one(&app.db.pool)
    .await
    .expect("next noon")
}

fn time(v: &Value) -> DateTime<Utc> {
    v.as_str()
        .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
        .unwrap_or_else(|| panic!("not a time: {v}"))
        .with_timezone(&Utc)
}

#[tokio::test]
async fn crud_clone_and_next_run_in_the_jobs_zone() {
    let app = TestApp::spawn().await;
    let a = app.admin("A").await;
    let wf = app.save(&a, &flow()).await;
    let created = app.post(&jobs(&a), &a.auth, body(&wf)).await;
    assert_eq!(created.status, 201, "{}", created.body);
    let id = created.str("cronJobID");
    assert_eq!(
        time(&created.body["nextRunAt"]),
        next_berlin_noon(&app).await
    );
    assert_eq!(created.body["overlapPolicy"], "allow");
    // `workflowConfig` is the typed `CronWorkflowConfig`: what was sent comes back.
    assert_eq!(
        created.body["workflowConfig"],
        json!({"inputValues": {"n": 1}})
    );
    assert_eq!(created.body["catchupPolicy"], "skip");
    assert_eq!(created.body["timeoutSeconds"], 300);

    let list = app.get(&jobs(&a), &a.auth).await;
    assert_eq!(
        (list.status, list.body["totalCount"].clone()),
        (200, json!(1))
    );
    let got = app.get(&format!("{}/{id}", jobs(&a)), &a.auth).await;
    assert_eq!(got.body["cronJobTitle"], "nightly");

    // Disabling clears the due time; enabling with a new schedule computes it from now.
    let off = app
        .patch(
            &format!("{}/{id}", jobs(&a)),
            &a.auth,
            json!({"isDisabled": true, "cronJobDescription": "paused"}),
        )
        .await;
    assert_eq!(off.status, 200, "{}", off.body);
    assert!(off.body.get("nextRunAt").is_none(), "{}", off.body);
    assert_eq!(off.body["cronJobDescription"], "paused");
    let on = app
        .patch(
            &format!("{}/{id}", jobs(&a)),
            &a.auth,
            json!({"isDisabled": false, "cronJobSchedule": "0 0 29 2 *", "timezone": "UTC"}),
        )
        .await;
    assert_eq!(on.status, 200, "{}", on.body);
    let next = time(&on.body["nextRunAt"]);
    assert_eq!(next.format("%m-%d %H:%M").to_string(), "02-29 00:00");

    let clone = app
        .post(&format!("{}/{id}/clone", jobs(&a)), &a.auth, json!({}))
        .await;
    assert_eq!(clone.status, 201, "{}", clone.body);
    assert_eq!(clone.body["cronJobTitle"], "nightly (copy)");
    assert_eq!(clone.body["isDisabled"], true);
    assert!(clone.body.get("nextRunAt").is_none());

    let run = app
        .post(&format!("{}/{id}/run", jobs(&a)), &a.auth, json!({}))
        .await;
    assert_eq!(run.status, 202, "{}", run.body);
    assert_eq!(
        (run.body["status"].clone(), run.body["triggerType"].clone()),
        (json!("RUNNING"), json!("MANUAL"))
    );
    let history = app
        .get(
            &format!("{}/{id}/history?status=RUNNING", jobs(&a)),
            &a.auth,
        )
        .await;
    assert_eq!(history.body["totalCount"], 1, "{}", history.body);
    assert_eq!(
        history.body["items"][0]["instanceID"],
        run.body["instanceID"]
    );
    let none = app
        .get(
            &format!("{}/{id}/history?status=FAILURE", jobs(&a)),
            &a.auth,
        )
        .await;
    assert_eq!(none.body["totalCount"], 0);

    let deleted = app.delete(&format!("{}/{id}", jobs(&a)), &a.auth).await;
    assert_eq!(deleted.status, 204);
    assert_eq!(
        app.get(&format!("{}/{id}", jobs(&a)), &a.auth).await.status,
        404
    );
    let rows: i64 = sqlx::query_scalar(r#"SELECT count(*) FROM "tblCronJobHistory""#)
        .fetch_one(&app.db.pool)
        .await
        .expect("count");
    assert_eq!(rows, 0, "history goes with its job");
}

#[tokio::test]
async fn bad_schedules_zones_inputs_and_text_are_4xx_with_stable_codes() {
    let app = TestApp::spawn().await;
    let a = app.admin("A").await;
    let wf = app.save(&a, &flow()).await;
    let with = |patch: Value| {
        let mut b = body(&wf);
        for (k, v) in patch.as_object().expect("object") {
            b[k] = v.clone();
        }
        b
    };
    for (patch, status, code) in [
        (
            json!({"cronJobSchedule": "61 * * * *"}),
            422,
            "invalid_schedule",
        ),
        (
            json!({"cronJobSchedule": "* * * * * * *"}),
            422,
            "invalid_schedule",
        ),
        (
            json!({"cronJobSchedule": "0 0 31 4 *"}),
            422,
            "invalid_schedule",
        ),
        (json!({"timezone": "Mars/Olympus"}), 422, "invalid_timezone"),
        (
            json!({"workflowConfig": {"inputValues": {}}}),
            422,
            "invalid_inputs",
        ),
        (
            json!({"workflowConfig": {"inputValues": {"n": "many"}}}),
            422,
            "invalid_inputs",
        ),
        (
            json!({"workflowConfig": {"inputValues": [1]}}),
            422,
            "invalid_inputs",
        ),
        (json!({"cronJobTitle": "a\u{0}b"}), 400, "invalid_character"),
        (
            json!({"workflowConfig": {"inputValues": {"n": 1, "x": "\u{0}"}}}),
            400,
            "invalid_character",
        ),
        (json!({"cronJobTitle": "   "}), 422, "validation_failed"),
        (json!({"cronJobTitle": ""}), 400, "invalid_request"),
        (json!({"workflowConfig": "n=1"}), 400, "invalid_type"),
        (json!({"overlapPolicy": "sometimes"}), 400, "invalid_type"),
        (json!({"catchupPolicy": "all"}), 400, "invalid_type"),
        (
            json!({"workflowID": uuid::Uuid::new_v4()}),
            422,
            "invalid_workflow",
        ),
        (
            json!({"cronJobTitle": "x".repeat(300)}),
            400,
            "invalid_request",
        ),
        (
            json!({"cronJobSchedule": "1,".repeat(200)}),
            400,
            "invalid_request",
        ),
        (json!({"retryAttempts": 1_000_000}), 400, "invalid_request"),
        (json!({"timeoutSeconds": 0}), 400, "invalid_request"),
        (json!({"maxCatchupRuns": 100_000}), 400, "invalid_request"),
    ] {
        let resp = app.post(&jobs(&a), &a.auth, with(patch.clone())).await;
        assert_eq!(
            (resp.status, resp.code()),
            (status, code),
            "{patch}: {}",
            resp.body
        );
    }
    let schedule_error = app
        .post(
            &jobs(&a),
            &a.auth,
            with(json!({"cronJobSchedule": "0 0 32 * *"})),
        )
        .await;
    assert!(
        schedule_error.body["message"]
            .as_str()
            .unwrap_or_default()
            .starts_with("cronJobSchedule")
    );
    let huge = app
        .post(
            &jobs(&a),
            &a.auth,
            with(json!({"cronJobDescription": "x".repeat(70_000)})),
        )
        .await;
    assert_eq!(huge.status, 413);
    let count: i64 = sqlx::query_scalar(r#"SELECT count(*) FROM "tblCronJobs""#)
        .fetch_one(&app.db.pool)
        .await
        .expect("count");
    assert_eq!(count, 0, "nothing invalid was saved");

    // A PATCH is checked the same way, and leaves the job as it was.
    let id = app
        .post(&jobs(&a), &a.auth, body(&wf))
        .await
        .str("cronJobID");
    let bad = app
        .patch(
            &format!("{}/{id}", jobs(&a)),
            &a.auth,
            json!({"timezone": "Nowhere/Land"}),
        )
        .await;
    assert_eq!((bad.status, bad.code()), (422, "invalid_timezone"));
    let got = app.get(&format!("{}/{id}", jobs(&a)), &a.auth).await;
    assert_eq!(got.body["timezone"], "Europe/Berlin");
}

#[tokio::test]
async fn previews_list_fire_times_in_the_zone_and_utc() {
    let app = TestApp::spawn().await;
    let a = app.admin("A").await;
    let resp = app
        .get(
            &format!(
                "{}/preview?schedule=30%202%20*%20*%20*&timezone=America/New_York&count=4",
                jobs(&a)
            ),
            &a.auth,
        )
        .await;
    assert_eq!(resp.status, 200, "{}", resp.body);
    assert_eq!(resp.body["description"], "At 02:30.");
    let times = resp.body["times"].as_array().expect("times");
    assert_eq!(times.len(), 4);
    let mut previous: Option<DateTime<Utc>> = None;
    for t in times {
        let local = t["local"].as_str().expect("local");
        // 02:30 New York time, or 03:00 on the day the clocks skip 02:00-03:00.
        assert!(
            local.contains("T02:30:00-0") || local.contains("T03:00:00-04:00"),
            "{local}"
        );
        let utc = time(&t["utc"]);
        assert_eq!(time(&t["local"]), utc);
        assert!(previous.is_none_or(|p| utc - p >= chrono::Duration::hours(23)));
        previous = Some(utc);
    }
    let bad = app
        .get(
            &format!("{}/preview?schedule=nonsense&count=2", jobs(&a)),
            &a.auth,
        )
        .await;
    assert_eq!((bad.status, bad.code()), (422, "invalid_schedule"));
    let too_many = app
        .get(
            &format!("{}/preview?schedule=*%20*%20*%20*%20*&count=1000", jobs(&a)),
            &a.auth,
        )
        .await;
    assert_eq!(too_many.status, 400);

    let wf = app.save(&a, &flow()).await;
    let id = app
        .post(&jobs(&a), &a.auth, body(&wf))
        .await
        .str("cronJobID");
    let job_preview = app
        .get(&format!("{}/{id}/preview?count=2", jobs(&a)), &a.auth)
        .await;
    assert_eq!(job_preview.status, 200, "{}", job_preview.body);
    assert_eq!(
        time(&job_preview.body["times"][0]["utc"]),
        next_berlin_noon(&app).await
    );
    let status = app
        .get(&format!("{}/status/connections", jobs(&a)), &a.auth)
        .await;
    assert_eq!(status.status, 200, "{}", status.body);
    assert_eq!(status.body["nextJob"]["cronJobID"], json!(id));
    assert_eq!(
        status.body["replicas"],
        json!([]),
        "no scheduler runs in this test"
    );
}

#[tokio::test]
async fn permissions_need_cronjob_grants_and_execute_on_the_workflow() {
    let app = TestApp::spawn().await;
    let a = app.admin("A").await;
    let wf = app.save(&a, &flow()).await;
    let id = app
        .post(&jobs(&a), &a.auth, body(&wf))
        .await
        .str("cronJobID");

    let reader = app
        .role(
            &a,
            "reader",
            &["tenant:cronjob:list", "tenant:cronjob:read"],
        )
        .await;
    let (_, reader) = app.key_with_roles(&a, "reader", &[&reader]).await;
    assert_eq!(app.get(&jobs(&a), &reader).await.status, 200);
    assert_eq!(
        app.get(&format!("{}/{id}/history", jobs(&a)), &reader)
            .await
            .status,
        200
    );
    for resp in [
        app.post(&jobs(&a), &reader, body(&wf)).await,
        app.patch(
            &format!("{}/{id}", jobs(&a)),
            &reader,
            json!({"cronJobTitle": "x"}),
        )
        .await,
        app.delete(&format!("{}/{id}", jobs(&a)), &reader).await,
        app.post(&format!("{}/{id}/run", jobs(&a)), &reader, json!({}))
            .await,
    ] {
        assert_eq!(
            (resp.status, resp.code()),
            (403, "permission_denied"),
            "{}",
            resp.body
        );
    }

    // Creating needs execute on the workflow too; with it, the creator owns the job.
    let creator = app.role(&a, "creator", &["tenant:cronjob:create"]).await;
    let (_, creator) = app.key_with_roles(&a, "creator", &[&creator]).await;
    let denied = app.post(&jobs(&a), &creator, body(&wf)).await;
    assert_eq!((denied.status, denied.code()), (403, "permission_denied"));
    assert!(
        denied.body["message"]
            .as_str()
            .unwrap_or_default()
            .contains("workflow:execute")
    );
    let runner = app
        .role_with_assets(
            &a,
            "runner",
            &["tenant:cronjob:create"],
            &[("workflow", &wf, "execute")],
        )
        .await;
    let (_, runner) = app.key_with_roles(&a, "runner", &[&runner]).await;
    let made = app.post(&jobs(&a), &runner, body(&wf)).await;
    assert_eq!(made.status, 201, "{}", made.body);
    let own = made.str("cronJobID");
    assert_eq!(
        app.get(&format!("{}/{own}", jobs(&a)), &runner)
            .await
            .status,
        200
    );
    assert_eq!(
        app.get(&format!("{}/{id}", jobs(&a)), &runner).await.status,
        403
    );

    // Another tenant's ids are 404, and its workflows cannot be scheduled here.
    let b = app.admin("B").await;
    let wf_b = app.save(&b, &flow()).await;
    for resp in [
        app.get(&format!("{}/{id}", jobs(&b)), &b.auth).await,
        app.patch(
            &format!("{}/{id}", jobs(&b)),
            &b.auth,
            json!({"cronJobTitle": "x"}),
        )
        .await,
        app.delete(&format!("{}/{id}", jobs(&b)), &b.auth).await,
        app.get(&format!("{}/{id}/history", jobs(&b)), &b.auth)
            .await,
        app.post(&format!("{}/{id}/run", jobs(&b)), &b.auth, json!({}))
            .await,
        app.post(&format!("{}/{id}/clone", jobs(&b)), &b.auth, json!({}))
            .await,
        app.get(&jobs(&a), &b.auth).await,
    ] {
        assert_eq!(resp.status, 404, "{}", resp.body);
    }
    let foreign = app.post(&jobs(&a), &a.auth, body(&wf_b)).await;
    assert_eq!((foreign.status, foreign.code()), (422, "invalid_workflow"));
}
