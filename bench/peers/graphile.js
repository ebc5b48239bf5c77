// graphile-worker on the server `jet bench` uses, measured the way `jet bench` measures itself:
// a backlog of no-op jobs enqueued first, then drained (library defaults, and upstream
// perfTest's batching preset in one process); jobs added one per call by 8 concurrent callers;
// enqueue → job start latency at idle and back-to-back; WAL bytes and commits per job.
// Run by `jet bench --peers`; alone: NODE_PATH=<node_modules> node graphile.js postgres://…/db
// Prints one line per figure: RESULT <tab> metric <tab> value <tab> note.
"use strict";
const { Pool } = require("pg");
const gw = require("graphile-worker");

const DB = process.argv[2];
const N = parseInt(process.env.PB_N || "20000", 10);
const BATCH = 1000;
const CALLERS = 8;
const CONCURRENCY = 10;
const LAT_SAMPLES = 30;

const now = () => Number(process.hrtime.bigint()) / 1e6; // ms, monotonic
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor((xs.length - 1) / 2)];
const result = (metric, value, note) => console.log(`RESULT\t${metric}\t${value}\t${note}`);
const logger = new gw.Logger(() => (level, message) => {
  if (level === "error" || level === "warning") console.error(`[graphile-worker ${level}] ${message}`);
});

// pg_stat_database is flushed by backends at most once a second: pause before reading.
async function counters(pool) {
  await sleep(1500);
  const { rows } = await pool.query(
    "select pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::float8 wal, xact_commit::float8 commits from pg_stat_database where datname = current_database()",
  );
  return rows[0];
}

async function drain(pool, name, preset, concurrency) {
  const { rows } = await pool.query("select count(*)::int c from graphile_worker._private_jobs");
  const target = rows[0].c;
  let done = 0;
  let finish;
  const finished = new Promise((r) => (finish = r));
  const before = await counters(pool);
  const runner = await gw.run({
    connectionString: DB,
    concurrency,
    noHandleSignals: true,
    logger,
    preset,
    taskList: { noop: async () => void (++done === target && finish()) },
  });
  const t0 = now();
  await finished;
  const ms = now() - t0;
  await runner.stop();
  const after = await counters(pool);
  result(`${name}_jobs_per_s`, ((target * 1000) / ms).toFixed(0), `${target} jobs`);
  result(`${name}_wal_per_job`, ((after.wal - before.wal) / target).toFixed(0), "cluster WAL during the drain");
  result(`${name}_commits_per_job`, ((after.commits - before.commits) / target).toFixed(2), "");
}

async function enqueueBatched(utils) {
  for (let i = 0; i < N; i += BATCH) {
    const specs = [];
    for (let j = i; j < Math.min(N, i + BATCH); j++) specs.push({ identifier: "noop", payload: { i: j } });
    await utils.addJobs(specs);
  }
}

async function main() {
  await gw.runMigrations({ connectionString: DB, logger });
  const pool = new Pool({ connectionString: DB, max: 12 });
  pool.on("error", (e) => console.error("[pg pool error]", e.message));
  const utils = await gw.makeWorkerUtils({ pgPool: pool, logger });
  await pool.query("delete from graphile_worker._private_jobs");

  await enqueueBatched(utils);
  await drain(pool, "defaults", undefined, CONCURRENCY);

  // One job per call and transaction from 8 concurrent callers: the peer of `POST …/execute`.
  let next = 0;
  const t0 = now();
  await Promise.all(
    Array.from({ length: CALLERS }, async () => {
      while (next++ < N) await utils.addJob("noop", {});
    }),
  );
  result("add_job_8_callers_per_s", ((N * 1000) / (now() - t0)).toFixed(0), `${N} jobs`);

  // upstream perfTest's tuning (perfTest/graphile.config.js), in one process.
  const batching = {
    worker: {
      concurrentJobs: 24,
      maxPoolSize: 25,
      localQueue: { size: 500, refetchDelay: { durationMs: 10 } },
      completeJobBatchDelay: 0,
      failJobBatchDelay: 0,
    },
  };
  await drain(pool, "batching", batching, 24);

  // enqueue → job start, one at a time, the worker waiting on LISTEN/NOTIFY.
  let started = () => {};
  const runner = await gw.run({
    connectionString: DB,
    concurrency: 1,
    noHandleSignals: true,
    logger,
    taskList: { lat: async () => started(now()) },
  });
  await sleep(500);
  const measure = async (samples, gapMs) => {
    const lat = [];
    for (let i = 0; i < samples + 3; i++) {
      const got = new Promise((r) => (started = r));
      if (gapMs > 0) await sleep(gapMs);
      const t = now();
      await utils.addJob("lat", {});
      lat.push((await got) - t);
    }
    return median(lat.slice(3)); // the first three warm up
  };
  result("latency_idle_p50_ms", (await measure(LAT_SAMPLES, 300)).toFixed(1), "300 ms between jobs");
  result("latency_b2b_p50_ms", (await measure(200, 0)).toFixed(1), "back-to-back");
  await runner.stop();
  await utils.release();
  await pool.end();
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
