-- jet_ops: what an operator asks the database, as views (README "Inspecting it in SQL").
-- Each reads only indexed or small tables, or PostgreSQL's own statistics, so polling them
-- (jet status, a dashboard, an autoscaler) stays cheap.

CREATE SCHEMA IF NOT EXISTS jet_ops;

-- Work waiting per queue and tenant. `nodes` is the node-execution queue; `listener_events`
-- the listener inbox (a claimed event's lease is its "availableAt"). Ready rows are runnable
-- now, delayed ones later (retry backoff, timers, parked sub-workflow waits), leased ones are
-- held by a live lease, expired ones by a lease whose holder stopped renewing it.
CREATE VIEW jet_ops.queue_depth AS
SELECT 'nodes'::text                                                                     AS queue,
       "tenantID"                                                                        AS tenant_id,
       count(*) FILTER (WHERE "leaseOwner" IS NULL AND "availableAt" <= now())           AS ready,
       count(*) FILTER (WHERE "leaseOwner" IS NULL AND "availableAt" > now())            AS delayed,
       count(*) FILTER (WHERE "leaseOwner" IS NOT NULL AND "leaseExpiresAt" >= now())    AS leased,
       count(*) FILTER (WHERE "leaseOwner" IS NOT NULL AND "leaseExpiresAt" < now())     AS expired_leases,
       now() - min("availableAt") FILTER (WHERE "leaseOwner" IS NULL AND "availableAt" <= now())
                                                                                         AS oldest_ready_age
FROM "tblNodeExecutions"
GROUP BY "tenantID"
UNION ALL
SELECT 'listener_events',
       "tenantID",
       count(*) FILTER (WHERE "attempts" = 0 AND "availableAt" <= now()),
       0,
       count(*) FILTER (WHERE "attempts" > 0 AND "availableAt" > now()),
       count(*) FILTER (WHERE "attempts" > 0 AND "availableAt" <= now()),
       now() - min("receivedAt") FILTER (WHERE "availableAt" <= now())
FROM "tblListenerInbox"
WHERE "status" = 'pending'
GROUP BY "tenantID";

-- Commands in the apalis queues by state: how many, the oldest due time, how long it waits.
CREATE VIEW jet_ops.commands AS
SELECT job_type                          AS queue,
       status,
       count(*)                          AS jobs,
       min(run_at)                       AS oldest_run_at,
       now() - min(run_at)               AS oldest_age,
       max(attempts)                     AS max_attempts_used
FROM apalis.jobs
GROUP BY job_type, status;

-- Worker processes from the registry: alive or dead (no heartbeat for 15 s), and what each
-- holds: node leases, listeners, whether it is a live cron scheduler.
CREATE VIEW jet_ops.workers AS
SELECT w."workerID"                                                        AS worker_id,
       w."host"                                                            AS host,
       w."pid"                                                             AS pid,
       w."roles"                                                           AS roles,
       w."version"                                                         AS version,
       w."startedAt"                                                       AS started_at,
       w."heartbeatAt"                                                     AS heartbeat_at,
       (w."stoppedAt" IS NULL AND w."heartbeatAt" > now() - interval '15 seconds') AS alive,
       w."stoppedAt"                                                       AS stopped_at,
       (SELECT count(*) FROM "tblNodeExecutions" e
         WHERE e."leaseOwner" LIKE w."workerID" || '-nodes-%')               AS node_leases,
       (SELECT count(*) FROM "tblListenerHolds" h WHERE h."workerID" = w."workerID") AS listeners_held,
       EXISTS (SELECT 1 FROM "tblCronSchedulers" s
                WHERE s."workerID" = w."workerID" AND s."heartbeatAt" > now() - interval '30 seconds')
                                                                           AS cron_scheduler
FROM "tblWorkers" w;

-- Instances RUNNING with nothing runnable and nothing waiting: no node execution (ready,
-- delayed, leased or parked on a child) and no human request open or answered-but-unresumed.
-- The engine never leaves one behind; this view must always be empty.
CREATE VIEW jet_ops.stuck_instances AS
SELECT i."instanceID" AS instance_id,
       i."tenantID"   AS tenant_id,
       i."workflowID" AS workflow_id,
       i."updatedAt"  AS updated_at,
       now() - i."updatedAt" AS idle_for
FROM "tblWorkflowInstances" i
WHERE i."status" = 'RUNNING'
  AND NOT EXISTS (SELECT 1 FROM "tblNodeExecutions" e WHERE e."instanceID" = i."instanceID")
  AND NOT EXISTS (SELECT 1 FROM "tblWorkflowDataCollectionRequests" r
                  WHERE r."instanceID" = i."instanceID"
                    AND (r."status" = 'PENDING' OR (r."status" <> 'CANCELLED' AND r."resumedAt" IS NULL)));

-- Cron: each enabled job's next due time and how late it is, and the fire lag of its recent
-- scheduled fires (due time → fired) over the last hour.
CREATE VIEW jet_ops.cron AS
SELECT j."cronJobID"                                                    AS cron_job_id,
       j."tenantID"                                                     AS tenant_id,
       j."cronJobTitle"                                                 AS title,
       j."isDisabled"                                                   AS is_disabled,
       j."nextRunAt"                                                    AS next_run_at,
       GREATEST(now() - j."nextRunAt", interval '0')                    AS overdue,
       j."lastScheduledAt"                                              AS last_scheduled_at,
       lag.fires                                                        AS fires_last_hour,
       lag.p50                                                          AS lag_p50,
       lag.p99                                                          AS lag_p99
FROM "tblCronJobs" j
LEFT JOIN LATERAL (
    SELECT count(*) AS fires,
           percentile_cont(0.5) WITHIN GROUP (ORDER BY h."startTime" - h."scheduledAt")  AS p50,
           percentile_cont(0.99) WITHIN GROUP (ORDER BY h."startTime" - h."scheduledAt") AS p99
    FROM "tblCronJobHistory" h
    WHERE h."cronJobID" = j."cronJobID" AND h."triggerType" = 'SCHEDULED'
      AND h."status" <> 'SKIPPED' AND h."scheduledAt" > now() - interval '1 hour') lag ON true;

-- Listeners that are on: who holds each, whether its source is connected, events waiting for
-- the pipeline, and for CDC the checkpoint, lag and retained WAL the holder last sampled.
CREATE VIEW jet_ops.listeners AS
SELECT l."listenerID"         AS listener_id,
       l."tenantID"           AS tenant_id,
       l."listenerTitle"      AS title,
       l."listenerType"       AS listener_type,
       l."listenerConfig" ->> 'mode' AS mode,
       l."status"             AS status,
       l."lastError"          AS last_error,
       l."lastEventAt"        AS last_event_at,
       l."eventCount"         AS event_count,
       h."workerID"           AS held_by,
       h."heldSince"          AS held_since,
       h."connectedAt"        AS connected_at,
       h."expiresAt"          AS lease_expires_at,
       c."lsn"::text          AS checkpoint_lsn,
       h."lagBytes"           AS lag_bytes,
       h."retainedWalBytes"   AS retained_wal_bytes,
       (SELECT count(*) FROM "tblListenerInbox" i
         WHERE i."listenerID" = l."listenerID" AND i."status" = 'pending') AS pending_events
FROM "tblListeners" l
LEFT JOIN "tblListenerHolds" h ON h."listenerID" = l."listenerID"
LEFT JOIN "tblListenerCheckpoints" c ON c."listenerID" = l."listenerID"
WHERE l."status" <> 'inactive';

-- The hot tables' health: live and dead tuples, when autovacuum last ran. A dead-tuple count
-- that only grows points at something holding back the xmin horizon (next view).
CREATE VIEW jet_ops.table_health AS
SELECT s.schemaname || '.' || s.relname AS table_name,
       s.n_live_tup                     AS live_tuples,
       s.n_dead_tup                     AS dead_tuples,
       s.last_autovacuum                AS last_autovacuum,
       s.last_autoanalyze               AS last_autoanalyze,
       s.autovacuum_count               AS autovacuum_count
FROM pg_stat_user_tables s
WHERE (s.schemaname = 'public' AND s.relname IN ('tblNodeExecutions', 'tblWorkflowInstances',
        'tblWorkflowInstanceLogs', 'tblListenerInbox', 'tblListenerActionRuns', 'tblEventDLQ',
        'tblCronJobHistory', 'tblCronJobs', 'tblListenerHolds'))
   OR (s.schemaname = 'apalis' AND s.relname = 'jobs');

-- What holds back the xmin horizon (VACUUM cannot remove rows newer than it): the oldest open
-- transactions and the replication slots, oldest first.
CREATE VIEW jet_ops.xmin_horizon AS
SELECT 'transaction'::text             AS holder,
       a.pid::text                     AS name,
       a.datname::text                 AS database,
       age(a.backend_xmin)             AS xmin_age,
       now() - a.xact_start            AS open_for,
       a.state                         AS state,
       left(a.query, 200)              AS detail
FROM pg_stat_activity a
WHERE a.backend_xmin IS NOT NULL
UNION ALL
SELECT 'replication_slot',
       r.slot_name::text,
       r.database::text,
       GREATEST(age(r.xmin), age(r.catalog_xmin)),
       NULL,
       CASE WHEN r.active THEN 'active' ELSE 'inactive' END,
       pg_size_pretty(pg_current_wal_lsn() - r.restart_lsn) || ' of WAL retained'
FROM pg_replication_slots r
WHERE r.xmin IS NOT NULL OR r.catalog_xmin IS NOT NULL;
