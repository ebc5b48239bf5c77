//! A frozen worker: SIGSTOP while it holds leases, frozen until every one of them expired and
//! moved on (reclaimed and settled by the others), then SIGCONT. What it had in flight wakes
//! up with stale leases: fencing must keep it from writing anything (the ledger counts an
//! effect written after its node was settled as duplicated).

use crate::chaos::Ctx;
use crate::chaos::fleet::Signal;
use std::time::Duration;
use tokio::time::Instant;

pub async fn inject(ctx: &mut Ctx<'_>) -> anyhow::Result<(Instant, String)> {
    let frozen = 0;
    let held = ctx.until_holding(frozen, 5).await;
    ctx.workers[frozen].signal(Signal::Stop)?;
    let stopped = Instant::now();
    let lease = Duration::from_secs(ctx.form.lease_seconds);
    // Frozen at least past the lease plus the fault; then until the others moved its leases
    // on. A lease whose row the frozen worker keeps locked (frozen inside a settle) cannot
    // move on before it wakes, so the wait is bounded by three more leases.
    tokio::time::sleep(lease + ctx.form.fault).await;
    let deadline = Instant::now() + 3 * lease;
    let mut still: i64;
    loop {
        still = sqlx::query_scalar(
            r#"SELECT count(*) FROM "tblNodeExecutions" WHERE "executionID" = ANY($1) AND "leaseOwner" LIKE $2"#,
        )
        .bind(&held)
        .bind(format!("chaos-{frozen}-%"))
        .fetch_one(&ctx.site.pool)
        .await?;
        if still == 0 || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let frozen_for = stopped.elapsed();
    ctx.workers[frozen].signal(Signal::Cont)?;
    Ok((
        Instant::now(),
        format!(
            "frozen {:.1} s holding {} leases ({still} not moved on)",
            frozen_for.as_secs_f64(),
            held.len()
        ),
    ))
}
