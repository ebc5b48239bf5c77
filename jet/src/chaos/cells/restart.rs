//! PostgreSQL restart mid-load: the private cluster is stopped (fast: every connection of the
//! fleet is cut, in-flight transactions roll back), stays down for the fault's length, and
//! starts again on the same port. API and workers must reconnect by themselves.

use crate::chaos::Ctx;
use tokio::time::Instant;

pub async fn inject(ctx: &mut Ctx<'_>) -> anyhow::Result<(Instant, String)> {
    tokio::task::block_in_place(|| ctx.cluster.stop())?;
    tokio::time::sleep(ctx.form.fault).await;
    tokio::task::block_in_place(|| ctx.cluster.start())?;
    Ok((
        Instant::now(),
        format!("down {} s", ctx.form.fault.as_secs()),
    ))
}
