//! `jet`: the composition root. `jet dev` runs everything on an embedded database; the other
//! subcommands are operator helpers.

mod commands;
use jet::pg;

use anyhow::Result;

const USAGE: &str = "\
usage: jet <command> [options]

commands:
  dev                          API + every worker role in one process. Without DATABASE_URL it
                               runs a private PostgreSQL cluster under ./.jet/ and bootstraps a
                               demo tenant and admin API key on first run.
  migrate                      apply pending migrations to DATABASE_URL
  bootstrap [--tenant TITLE] [--admin-email EMAIL --admin-firebase-id SUBJECT]
                               create a tenant and an admin API key (printed once)
  openapi [--write | --check]  print the OpenAPI spec, write it to openapi/openapi.json, or
                               fail when the checked-in file differs
  status [--json] [--watch [SECONDS]]
                               workers, queues, commands, DLQ, cron, listeners, stuck instances
                               and the xmin horizon of DATABASE_URL, from the jet_ops views
  explain <instanceID> [--json]
                               why a run is not running: for each unfinished node, the one
                               reason (queued, delayed, leased, retry backoff, waiting for a
                               human, a child or join inputs, no `nodes` worker)
  test [ARGS…]                 prepare PostgreSQL and run every test (`cargo test --workspace ARGS…`)
  bench [--scale N] [--peers] [--only a,b,c,d,latency,e,f] [--wal-detail]
                               engine throughput, latency, a long loop and the HTTP execute rate
                               with 1 and 2 jet-worker processes; --peers also runs the pinned
                               graphile-worker on the same server and prints the ratios; --only
                               runs the named scenarios; --wal-detail prints each drain's WAL
                               by record type (pg_walinspect) (release build;
                               JET_BENCH_DATABASE_URL, default the local server)
  bench listeners [--seconds S]
                               CDC commit → workflow instance latency (idle, under load) and
                               capture throughput on a private wal_level=logical cluster
  chaos [--short] [--cell NAME]…
                               faults under load on a private cluster with real processes
                               (PostgreSQL restart, terminated backends, pool exhaustion,
                               SIGKILL, SIGSTOP, network cut); prints the ledger table
  bench cron [--jobs N] [--seconds S]
                               cron fire lag p50/p99 with 1 and 3 schedulers, N per-second jobs
";

#[tokio::main]
async fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((command, rest)) = args.split_first() else {
        eprint!("{USAGE}");
        std::process::exit(2);
    };
    match command.as_str() {
        "dev" => commands::dev::run(rest).await,
        "migrate" => commands::migrate::run().await,
        "bootstrap" => commands::bootstrap::run(rest).await,
        "openapi" => commands::openapi::run(rest),
        "test" => commands::test::run(rest).await,
        "bench" => commands::bench::run(rest).await,
        "chaos" => commands::chaos::run(rest).await,
        "status" => commands::status::run(rest).await,
        "explain" => commands::explain::run(rest).await,
        "-h" | "--help" | "help" => {
            print!("{USAGE}");
            Ok(())
        }
        other => {
            eprint!("unknown command `{other}`\n\n{USAGE}");
            std::process::exit(2);
        }
    }
}
