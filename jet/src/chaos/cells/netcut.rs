//! A network cut between one worker and PostgreSQL, through the harness's TCP proxy: first a
//! stall (connections stay open, nothing moves: queries hang, leases expire and move to the
//! other workers), healed, then a drop (every connection closed, new ones refused), healed.
//! When the stall heals, the cut worker's hung statements arrive late: fencing must refuse
//! what they would settle.

use crate::chaos::Ctx;
use crate::chaos::proxy::Mode;
use std::time::Duration;
use tokio::time::Instant;

pub async fn inject(ctx: &mut Ctx<'_>) -> anyhow::Result<(Instant, String)> {
    let proxy = ctx.proxy.expect("the network-cut cell runs with a proxy");
    let held = ctx.until_holding(0, 5).await.len();
    proxy.set(Mode::Stall);
    tokio::time::sleep(ctx.form.fault + Duration::from_secs(ctx.form.lease_seconds)).await;
    proxy.set(Mode::Pass);
    tokio::time::sleep(ctx.form.warmup).await;
    proxy.set(Mode::Drop);
    tokio::time::sleep(ctx.form.fault).await;
    proxy.set(Mode::Pass);
    Ok((
        Instant::now(),
        format!("stalled with {held} leases, then dropped"),
    ))
}
