//! How busy PostgreSQL and the workers were during a bench scenario: CPU seconds from `/proc`.
//!
//! PostgreSQL's share is every process of the server the bench talks to: the postmaster's own
//! time, its exited children's time (the kernel adds a reaped child's time to its parent's
//! `cutime`/`cstime`, so backends that came and went are counted) and its live children's time.
//! Only a server on this machine can be measured; elsewhere the figures are absent.

use sqlx::PgPool;
use std::sync::OnceLock;

/// CPU seconds (user + system) of one process, optionally with its reaped children.
fn process_seconds(pid: u32, with_children: bool) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may contain spaces: fields start after the last ')'.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    // After the name: state(0) ppid(1) … utime(11) stime(12) cutime(13) cstime(14).
    let tick = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok());
    let mut ticks = tick(11)? + tick(12)?;
    if with_children {
        ticks += tick(13)? + tick(14)?;
    }
    Some(ticks / clock_ticks_per_second())
}

fn parent_pid(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// `getconf CLK_TCK`, read once (100 on every Linux this runs on, but not promised).
fn clock_ticks_per_second() -> f64 {
    static TICKS: OnceLock<f64> = OnceLock::new();
    *TICKS.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// The PostgreSQL server's process tree, found from one of its backends.
pub(super) struct Postgres {
    postmaster: u32,
}

impl Postgres {
    /// `None` when the server is not a process of this machine that we may read.
    pub(super) async fn find(pool: &PgPool) -> Option<Self> {
        let backend: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
            .fetch_one(pool)
            .await
            .ok()?;
        let postmaster = parent_pid(u32::try_from(backend).ok()?)?;
        process_seconds(postmaster, true)?;
        Some(Self { postmaster })
    }

    /// CPU seconds used by the server so far: the postmaster, its reaped and its live children.
    pub(super) fn seconds(&self) -> f64 {
        let mut total = process_seconds(self.postmaster, true).unwrap_or(0.0);
        if let Ok(dir) = std::fs::read_dir("/proc") {
            for pid in dir
                .flatten()
                .filter_map(|e| e.file_name().to_str()?.parse().ok())
            {
                if parent_pid(pid) == Some(self.postmaster) {
                    total += process_seconds(pid, false).unwrap_or(0.0);
                }
            }
        }
        total
    }
}

/// CPU seconds of the given processes (worker processes, read before they are stopped).
pub(super) fn processes_seconds(pids: impl IntoIterator<Item = u32>) -> f64 {
    pids.into_iter()
        .filter_map(|pid| process_seconds(pid, true))
        .sum()
}

/// A scenario's CPU line: PostgreSQL's and the workers' seconds over the scenario's wall time.
pub(super) fn describe(postgres: Option<f64>, workers: f64, wall: f64) -> String {
    let busy = |s: f64| format!("{s:.1} s ({:.0}% of one core)", 100.0 * s / wall.max(1e-9));
    match postgres {
        Some(pg) => format!("PostgreSQL {}, workers {}", busy(pg), busy(workers)),
        None => format!("PostgreSQL not on this machine, workers {}", busy(workers)),
    }
}
