//! A worker SIGKILLed five times while it holds leases, restarted each time (the next kill
//! hits the next worker): its leases expire and the other workers run those nodes again.

use crate::chaos::fleet::Signal;
use crate::chaos::{Ctx, WORKERS};
use std::time::Duration;
use tokio::time::Instant;

const KILLS: usize = 5;

pub async fn inject(ctx: &mut Ctx<'_>) -> anyhow::Result<(Instant, String)> {
    let gap = ctx.form.fault / KILLS as u32;
    let mut holding = 0usize;
    for k in 0..KILLS {
        let n = k % WORKERS;
        holding += ctx.until_holding(n, 3).await.len();
        ctx.workers[n].signal(Signal::Kill)?;
        tokio::time::sleep(gap.max(Duration::from_millis(300))).await;
        ctx.workers[n].restart()?;
    }
    Ok((
        Instant::now(),
        format!("{KILLS} kills holding {holding} leases"),
    ))
}
