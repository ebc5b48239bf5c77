//! The node-execution queue under stress conditions: duplicate delivery, two settlers racing
//! for the instance CAS, expired leases, tenant fairness, and a delay that outlives a worker.

use jet_shared::workflow::queue;
use jet_shared::workflow::settle::{self, NodeResult, Settled};
use jet_shared::workflow::{definition, instance, nodes};
use jet_tests::TestApp;
use jet_tests::flow::{Flow, completed};
use serde_json::json;
use std::time::Duration;
use uuid::Uuid;

const LEASE: Duration = Duration::from_secs(30);

/// Saves `flow` and creates an instance (its start node dispatched), without any worker.
async fn started(app: &TestApp, flow: &Flow) -> (jet_tests::app::Admin, Uuid, Uuid) {
    started_with(app, flow, &json!({})).await
}

/// [`started`] with these inputs.
async fn started_with(
    app: &TestApp,
    flow: &Flow,
    inputs: &serde_json::Value,
) -> (jet_tests::app::Admin, Uuid, Uuid) {
    let a = app.admin("A").await;
    let workflow: Uuid = app.save(&a, flow).await.parse().expect("uuid");
    let mut tx = app.db.pool.begin().await.expect("tx");
    let instance = instance::create(&mut tx, a.tenant_id, workflow, inputs)
        .await
        .expect("create");
    assert!(
        !instance::start(&mut tx, instance).await.expect("start"),
        "created instances are dispatched already; a legacy start command is a no-op"
    );
    tx.commit().await.expect("commit");
    (a, workflow, instance)
}

async fn run_claimed(app: &TestApp, workflow: Uuid, c: &queue::Claimed, owner: &str) -> Settled {
    let mut conn = app.db.pool.acquire().await.expect("conn");
    let graph = definition::load_graph(&mut conn, workflow)
        .await
        .expect("graph");
    let node = &graph.nodes[&c.node_id];
    let ctx = instance::load_context(&app.db.pool, c.instance_id)
        .await
        .expect("ctx");
    let outcome = nodes::run(
        node.node_type,
        &node.id,
        &node.config,
        &ctx,
        Duration::from_secs(5),
    )
    .expect("node runs");
    settle::settle(
        &app.db.pool,
        c,
        owner,
        &graph,
        &NodeResult::Completed(outcome),
    )
    .await
    .expect("settle")
}

/// start → fanout → (left, right) → join → end.
fn fan_in() -> Flow {
    Flow::new()
        .node("start", "start", json!({}))
        .node(
            "fan",
            "fanout",
            json!({"branches": [{"id": "l"}, {"id": "r"}]}),
        )
        .node("left", "delay", json!({"delayMs": 0}))
        .node("right", "delay", json!({"delayMs": 0}))
        .node("join", "join", json!({}))
        .node("end", "end", json!({}))
        .edge("start", "fan")
        .edge_on("fan", "l", "left")
        .edge_on("fan", "r", "right")
        .edge("left", "join")
        .edge("right", "join")
        .edge("join", "end")
}

/// Settles start and fanout, leaving left and right ready together.
async fn run_to_the_fanout(app: &TestApp, workflow: Uuid) {
    for _ in 0..2 {
        let c = queue::claim(&app.db.pool, "w", LEASE, 10)
            .await
            .expect("claim");
        assert_eq!(
            run_claimed(app, workflow, &c[0], "w").await,
            Settled::Advanced
        );
    }
}

fn simple() -> Flow {
    Flow::new()
        .node("start", "start", json!({}))
        .node("end", "end", json!({}))
        .edge("start", "end")
}

#[tokio::test]
async fn a_duplicate_delivery_is_a_no_op() {
    let app = TestApp::spawn().await;
    let flow = simple();
    let (_, workflow, instance_id) = started(&app, &flow).await;
    let claimed = queue::claim(&app.db.pool, "w1", LEASE, 10)
        .await
        .expect("claim");
    assert_eq!(claimed.len(), 1);
    let first = claimed[0].clone();
    assert_eq!(
        run_claimed(&app, workflow, &first, "w1").await,
        Settled::Advanced
    );
    // The same dispatch delivered again (as after a lost acknowledgement).
    sqlx::query(
        r#"INSERT INTO "tblNodeExecutions" ("instanceID", "tenantID", "nodeID", "nodeAttempt") VALUES ($1, $2, $3, $4)"#,
    )
    .bind(first.instance_id)
    .bind(first.tenant_id)
    .bind(&first.node_id)
    .bind(first.node_attempt + 100)
    .execute(&app.db.pool)
    .await
    .expect("redeliver");
    sqlx::query(r#"UPDATE "tblNodeExecutions" SET "nodeAttempt" = $1 WHERE "nodeID" = $2"#)
        .bind(first.node_attempt)
        .bind(&first.node_id)
        .execute(&app.db.pool)
        .await
        .expect("same attempt");
    let again = queue::claim(&app.db.pool, "w2", LEASE, 10)
        .await
        .expect("claim");
    let dup = again
        .iter()
        .find(|c| c.node_id == first.node_id)
        .expect("redelivered row")
        .clone();
    let logs_before = instance::logs(&app.db.pool, instance_id, 0)
        .await
        .expect("logs")
        .len();
    assert_eq!(
        run_claimed(&app, workflow, &dup, "w2").await,
        Settled::Duplicate
    );
    let logs_after = instance::logs(&app.db.pool, instance_id, 0)
        .await
        .expect("logs")
        .len();
    assert_eq!(logs_before, logs_after, "no new log rows, no new dispatch");
}

#[tokio::test]
async fn a_settle_that_loses_the_cas_retries_and_lands_once() {
    let app = TestApp::spawn().await;
    let flow = fan_in();
    let (_, workflow, instance_id) = started(&app, &flow).await;
    run_to_the_fanout(&app, workflow).await;
    let both = queue::claim(&app.db.pool, "w", LEASE, 10)
        .await
        .expect("claim");
    assert_eq!(both.len(), 2, "left and right are ready together");
    let version = |pool: sqlx::PgPool| async move {
        sqlx::query_scalar::<_, i32>(
            r#"SELECT "version" FROM "tblWorkflowInstances" WHERE "instanceID" = $1"#,
        )
        .bind(instance_id)
        .fetch_one(&pool)
        .await
        .expect("version")
    };
    let v0 = version(app.db.pool.clone()).await;
    // A concurrent writer holds the instance row and moves its version while `left` settles.
    let mut rival = app.db.pool.begin().await.expect("tx");
    sqlx::query(
        r#"UPDATE "tblWorkflowInstances" SET "version" = "version" + 1 WHERE "instanceID" = $1"#,
    )
    .bind(instance_id)
    .execute(&mut *rival)
    .await
    .expect("rival bump");
    let settling = {
        let (pool, c) = (app.db.pool.clone(), both[0].clone());
        let app_pool = pool.clone();
        tokio::spawn(async move {
            let mut conn = app_pool.acquire().await.expect("conn");
            let graph = definition::load_graph(&mut conn, workflow)
                .await
                .expect("graph");
            let node = graph.nodes[&c.node_id].clone();
            let ctx = instance::load_context(&pool, c.instance_id)
                .await
                .expect("ctx");
            let outcome = nodes::run(
                node.node_type,
                &node.id,
                &node.config,
                &ctx,
                Duration::from_secs(5),
            )
            .expect("runs");
            settle::settle(&pool, &c, "w", &graph, &NodeResult::Completed(outcome))
                .await
                .expect("settle")
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !settling.is_finished(),
        "the settle waits on the rival's row lock"
    );
    rival.commit().await.expect("rival commits");
    assert_eq!(settling.await.expect("task"), Settled::Advanced);
    assert_eq!(
        run_claimed(&app, workflow, &both[1], "w").await,
        Settled::Advanced
    );
    assert_eq!(
        version(app.db.pool.clone()).await,
        v0 + 3,
        "rival + two settles"
    );
    let detail_logs = instance::logs(&app.db.pool, instance_id, 0)
        .await
        .expect("logs");
    let joins = detail_logs
        .iter()
        .filter(|l| {
            l.event_type == "NODE_DISPATCHED"
                && l.node_id.as_deref() == Some(flow.id("join").as_str())
        })
        .count();
    assert_eq!(joins, 1, "the join is dispatched exactly once");
    for side in ["left", "right"] {
        let n = detail_logs
            .iter()
            .filter(|l| {
                l.event_type == "NODE_COMPLETED"
                    && l.node_id.as_deref() == Some(flow.id(side).as_str())
            })
            .count();
        assert_eq!(n, 1, "{side} completed once");
    }
}

#[tokio::test]
async fn an_expired_lease_is_reaped_and_the_dead_holder_is_fenced_out() {
    let app = TestApp::spawn().await;
    let (_, workflow, _) = started(&app, &simple()).await;
    let dead = queue::claim(&app.db.pool, "dead", Duration::from_millis(200), 10)
        .await
        .expect("claim");
    assert_eq!(dead.len(), 1);
    assert!(
        queue::claim(&app.db.pool, "alive", LEASE, 10)
            .await
            .expect("claim")
            .is_empty(),
        "leased rows are not claimable"
    );
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(queue::reap_expired(&app.db.pool).await.expect("reap"), 1);
    let alive = queue::claim(&app.db.pool, "alive", LEASE, 10)
        .await
        .expect("claim");
    assert_eq!(alive.len(), 1);
    assert_eq!(alive[0].claim_count, dead[0].claim_count + 1);
    assert!(
        !queue::heartbeat(&app.db.pool, &dead[0], "dead", LEASE)
            .await
            .expect("heartbeat"),
        "the dead holder lost its lease"
    );
    assert_eq!(
        run_claimed(&app, workflow, &dead[0], "dead").await,
        Settled::LostLease
    );
    assert_eq!(
        run_claimed(&app, workflow, &alive[0], "alive").await,
        Settled::Advanced
    );
}

/// A holder frozen inside its settle transaction keeps its execution row locked; the reaper
/// skips that row instead of waiting on it (waiting stalled every claim loop of the fleet).
#[tokio::test]
async fn the_reaper_skips_a_row_a_frozen_holder_keeps_locked() {
    let app = TestApp::spawn().await;
    let (a, workflow, _) = started(&app, &simple()).await;
    let mut tx = app.db.pool.begin().await.expect("tx");
    instance::create(&mut tx, a.tenant_id, workflow, &json!({}))
        .await
        .expect("a second run");
    tx.commit().await.expect("commit");
    let frozen = queue::claim(&app.db.pool, "frozen", Duration::from_millis(100), 10)
        .await
        .expect("claim");
    assert_eq!(frozen.len(), 2);
    let mut settling = app.db.pool.begin().await.expect("tx");
    sqlx::query(r#"DELETE FROM "tblNodeExecutions" WHERE "executionID" = $1"#)
        .bind(frozen[0].execution_id)
        .execute(&mut *settling)
        .await
        .expect("the frozen holder's fenced delete");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let reaped = tokio::time::timeout(Duration::from_secs(5), queue::reap_expired(&app.db.pool))
        .await
        .expect("the reaper does not wait for the frozen holder")
        .expect("reap");
    assert_eq!(reaped, 1, "only the unlocked expired lease is reaped");
    settling.rollback().await.expect("rollback");
    assert_eq!(
        queue::reap_expired(&app.db.pool).await.expect("reap"),
        1,
        "the skipped row is reaped once its holder's transaction ends"
    );
}

#[tokio::test]
async fn one_tenants_flood_does_not_starve_another_tenant() {
    let app = TestApp::spawn().await;
    let flood = app.admin("flood").await;
    let single = app.admin("single").await;
    let instance_of = |tenant: jet_shared::ids::TenantId| {
        let pool = app.db.pool.clone();
        async move {
            sqlx::query_scalar::<_, Uuid>(
                r#"INSERT INTO "tblWorkflowInstances" ("tenantID", "status") VALUES ($1, 'RUNNING') RETURNING "instanceID""#,
            )
            .bind(tenant)
            .fetch_one(&pool)
            .await
            .expect("instance")
        }
    };
    let busy = instance_of(flood.tenant_id).await;
    let quiet = instance_of(single.tenant_id).await;
    sqlx::query(
        r#"INSERT INTO "tblNodeExecutions" ("instanceID", "tenantID", "nodeID", "nodeAttempt", "availableAt")
           SELECT $1, $2, 'n' || g, 1, now() - interval '1 hour' + g * interval '1 second' FROM generate_series(1, 200) g"#,
    )
    .bind(busy)
    .bind(flood.tenant_id)
    .execute(&app.db.pool)
    .await
    .expect("flood");
    sqlx::query(r#"INSERT INTO "tblNodeExecutions" ("instanceID", "tenantID", "nodeID", "nodeAttempt") VALUES ($1, $2, 'only', 1)"#)
        .bind(quiet)
        .bind(single.tenant_id)
        .execute(&app.db.pool)
        .await
        .expect("single");
    let claimed = queue::claim(&app.db.pool, "w", LEASE, 4)
        .await
        .expect("claim");
    assert_eq!(claimed.len(), 4);
    assert!(
        claimed.iter().any(|c| c.instance_id == quiet),
        "the single tenant got a turn in the first batch"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delay_survives_a_worker_restart() {
    let app = TestApp::spawn().await;
    let a = app.admin("A").await;
    let flow = Flow::new()
        .node("start", "start", json!({}))
        .node("wait", "delay", json!({"delaySeconds": 2}))
        .node("end", "end", end_output())
        .edge("start", "wait")
        .edge("wait", "end");
    let workflow = app.save(&a, &flow).await;
    let first = app.start_workers("first");
    let instance = app.execute(&a, &workflow, json!({})).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let available_in = loop {
        let row: Option<f64> = sqlx::query_scalar(
            r#"SELECT extract(epoch FROM "availableAt" - now())::float8 FROM "tblNodeExecutions" WHERE "nodeID" = $1"#,
        )
        .bind(flow.id("end"))
        .fetch_optional(&app.db.pool)
        .await
        .expect("row");
        if let Some(secs) = row {
            break secs;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the delayed node was never queued"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(
        available_in > 0.5,
        "the successor waits in the table, not in memory ({available_in}s)"
    );
    first.stop().await;
    let _second = app.start_workers("second");
    let done = app.finished(&a, &instance, 15).await;
    assert_eq!(done["status"], "COMPLETED", "{done}");
    assert_eq!(completed(&flow, &done), ["start", "wait", "end"]);
    let by: Option<String> =
        sqlx::query_scalar(r#"SELECT "leaseOwner" FROM "tblNodeExecutions" LIMIT 1"#)
            .fetch_optional(&app.db.pool)
            .await
            .expect("query");
    assert!(by.is_none(), "nothing left in the queue");
}

fn end_output() -> serde_json::Value {
    json!({"outputParameters": [{"name": "done", "sourceVariable": "yes"}]})
}

#[tokio::test]
async fn a_batch_settle_retries_only_the_result_that_lost_the_cas() {
    let app = TestApp::spawn().await;
    let flow = fan_in();
    let (_, workflow, instance_id) = started(&app, &flow).await;
    run_to_the_fanout(&app, workflow).await;
    let both = queue::claim(&app.db.pool, "w", LEASE, 10)
        .await
        .expect("claim");
    assert_eq!(both.len(), 2);
    let mut conn = app.db.pool.acquire().await.expect("conn");
    let graph = std::sync::Arc::new(
        definition::load_graph(&mut conn, workflow)
            .await
            .expect("graph"),
    );
    drop(conn);
    let ctx = instance::load_context(&app.db.pool, instance_id)
        .await
        .expect("ctx");
    let pending: Vec<settle::Pending> = both
        .iter()
        .map(|c| {
            let node = &graph.nodes[&c.node_id];
            let outcome = nodes::run(
                node.node_type,
                &node.id,
                &node.config,
                &ctx,
                Duration::from_secs(5),
            )
            .expect("runs");
            settle::Pending {
                claimed: c.clone(),
                graph: graph.clone(),
                result: NodeResult::Completed(outcome),
            }
        })
        .collect();
    let v0: i32 = sqlx::query_scalar(
        r#"SELECT "version" FROM "tblWorkflowInstances" WHERE "instanceID" = $1"#,
    )
    .bind(instance_id)
    .fetch_one(&app.db.pool)
    .await
    .expect("version");
    let mut rival = app.db.pool.begin().await.expect("tx");
    sqlx::query(
        r#"UPDATE "tblWorkflowInstances" SET "version" = "version" + 1 WHERE "instanceID" = $1"#,
    )
    .bind(instance_id)
    .execute(&mut *rival)
    .await
    .expect("rival bump");
    let pool = app.db.pool.clone();
    // The rival holds the instance: the batch does not wait for it, it hands the results
    // back to try again, as the worker does until the lock is gone.
    let batch = tokio::spawn(async move {
        let (mut results, mut pending, mut busy_rounds) = (Vec::new(), pending, 0);
        while !pending.is_empty() {
            let round = settle::settle_batch(&pool, "w", pending).await;
            results.extend(round.outcomes);
            busy_rounds += usize::from(!round.busy.is_empty());
            pending = round.busy;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        (results, busy_rounds)
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    rival.commit().await.expect("rival commits");
    let (results, busy_rounds) = batch.await.expect("task");
    assert!(
        busy_rounds >= 1,
        "the locked instance was handed back, not waited for"
    );
    assert_eq!(results.len(), 2);
    assert!(
        results
            .iter()
            .all(|(_, r)| matches!(r, Ok(Settled::Advanced))),
        "{:?}",
        results
            .iter()
            .map(|(id, r)| (id, r.as_ref().ok()))
            .collect::<Vec<_>>()
    );
    let v1: i32 = sqlx::query_scalar(
        r#"SELECT "version" FROM "tblWorkflowInstances" WHERE "instanceID" = $1"#,
    )
    .bind(instance_id)
    .fetch_one(&app.db.pool)
    .await
    .expect("version");
    assert_eq!(v1, v0 + 3, "the rival's bump and one per settled result");
    let logs = instance::logs(&app.db.pool, instance_id, 0)
        .await
        .expect("logs");
    let join_dispatches = logs
        .iter()
        .filter(|l| {
            l.event_type == "NODE_DISPATCHED"
                && l.node_id.as_deref() == Some(flow.id("join").as_str())
        })
        .count();
    assert_eq!(join_dispatches, 1);
}

/// A claim returns each instance's view once, with its kept context, however many of its
/// executions the batch holds.
#[tokio::test]
async fn a_claim_returns_the_context_of_each_instance_it_holds() {
    let app = TestApp::spawn().await;
    let flow = fan_in();
    let (_, workflow, instance_id) = started_with(&app, &flow, &json!({"who": "claim"})).await;
    run_to_the_fanout(&app, workflow).await;

    let batch = queue::claim_batch(&app.db.pool, "w", LEASE, 10)
        .await
        .expect("claim both branches");
    assert_eq!(batch.claimed.len(), 2, "left and right");
    assert_eq!(batch.views.len(), 1, "one view for their one instance");
    let view = &batch.views[&instance_id];
    assert_eq!(view.status, "RUNNING");
    assert_eq!(view.context["input"], json!({"who": "claim"}));
    assert_eq!(
        view.context,
        instance::load_context(&app.db.pool, instance_id)
            .await
            .expect("context"),
        "the claim's context is the kept one"
    );
    let fan_id = flow.id("fan");
    assert!(
        view.context.get(format!("__node_{fan_id}")).is_some(),
        "the fanout's result is in the context: {}",
        view.context
    );
    // Leave nothing stuck: the branches go back to the queue.
    for c in &batch.claimed {
        assert!(
            queue::release(&app.db.pool, c, "w", None)
                .await
                .expect("release")
        );
    }
}
