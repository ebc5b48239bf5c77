//! The cells of the suite, one module each: what the fault is and how the fleet is tuned for it.

mod netcut;
mod pool;
mod restart;
mod sigkill;
mod sigstop;
mod terminate;

use super::Ctx;
use tokio::time::Instant;

/// One fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cell {
    /// The private cluster stopped and started again mid-load.
    Restart,
    /// `pg_terminate_backend` on every backend of the fleet, a few times.
    Terminate,
    /// Idle-in-transaction sessions holding locks on running instances, small pools.
    PoolExhaustion,
    /// A worker SIGKILLed five times, restarted each time.
    SigKill,
    /// A worker frozen (SIGSTOP) past its leases, then woken.
    SigStop,
    /// A TCP proxy between a worker and PostgreSQL stalls, then drops, its connections.
    NetworkCut,
}

/// Fleet settings a cell needs.
#[derive(Debug, Clone, Copy)]
pub struct Tuning {
    pub worker_pool: u32,
    pub api_pool: u32,
    /// Workers (the first n) that reach PostgreSQL through the proxy.
    pub proxied_workers: usize,
}

impl Cell {
    /// Every cell, in the order the suite runs them.
    pub const ALL: [Cell; 6] = [
        Cell::Restart,
        Cell::Terminate,
        Cell::PoolExhaustion,
        Cell::SigKill,
        Cell::SigStop,
        Cell::NetworkCut,
    ];

    /// The cell's name in the table and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Cell::Restart => "postgres-restart",
            Cell::Terminate => "terminate-backends",
            Cell::PoolExhaustion => "pool-exhaustion",
            Cell::SigKill => "worker-sigkill",
            Cell::SigStop => "worker-sigstop",
            Cell::NetworkCut => "network-cut",
        }
    }

    /// The cell called `name`.
    pub fn named(name: &str) -> Option<Cell> {
        Cell::ALL.into_iter().find(|c| c.name() == name)
    }

    pub fn tuning(self) -> Tuning {
        let normal = Tuning {
            worker_pool: 10,
            api_pool: 10,
            proxied_workers: 0,
        };
        match self {
            Cell::PoolExhaustion => Tuning {
                worker_pool: 4,
                api_pool: 3,
                ..normal
            },
            Cell::NetworkCut => Tuning {
                proxied_workers: 1,
                ..normal
            },
            _ => normal,
        }
    }

    /// Injects the fault and heals it; when it healed, and what it did.
    pub async fn inject(self, ctx: &mut Ctx<'_>) -> anyhow::Result<(Instant, String)> {
        match self {
            Cell::Restart => restart::inject(ctx).await,
            Cell::Terminate => terminate::inject(ctx).await,
            Cell::PoolExhaustion => pool::inject(ctx).await,
            Cell::SigKill => sigkill::inject(ctx).await,
            Cell::SigStop => sigstop::inject(ctx).await,
            Cell::NetworkCut => netcut::inject(ctx).await,
        }
    }
}
