-- The cron role schedules tblCronJobs across any number of replicas: per-job time zone, overlap
-- and missed-run policies, one history row per fire (unique per due time, so a double fire is
-- impossible), history rows that follow their instance to its end, and NOTIFY wake-ups.

-- added: IANA zone the schedule is read in; upstream ran node-cron in server-local time (UTC).
ALTER TABLE "tblCronJobs" ADD COLUMN "timezone" varchar(64) NOT NULL DEFAULT 'UTC';
-- added: what a fire does while the previous run is still RUNNING; `allow` is upstream's behaviour.
ALTER TABLE "tblCronJobs" ADD COLUMN "overlapPolicy" varchar(20) NOT NULL DEFAULT 'allow';
-- added: what happens to due times missed while no scheduler ran.
ALTER TABLE "tblCronJobs" ADD COLUMN "catchupPolicy" varchar(20) NOT NULL DEFAULT 'skip';
-- added: at most this many missed times are fired by `catch_up`.
ALTER TABLE "tblCronJobs" ADD COLUMN "maxCatchupRuns" integer NOT NULL DEFAULT 10;
-- added: the last due time the scheduler handled (fired or skipped).
ALTER TABLE "tblCronJobs" ADD COLUMN "lastScheduledAt" timestamptz(6);
ALTER TABLE "tblCronJobs"
    ADD CONSTRAINT "ck_tblCronJobs_overlapPolicy" CHECK ("overlapPolicy" IN ('allow', 'skip', 'buffer_one')),
    ADD CONSTRAINT "ck_tblCronJobs_catchupPolicy" CHECK ("catchupPolicy" IN ('skip', 'catch_up')),
    ADD CONSTRAINT "ck_tblCronJobs_maxCatchupRuns" CHECK ("maxCatchupRuns" BETWEEN 1 AND 1000);

-- added: the instance a fire started (result keeps upstream's JSON text as well).
ALTER TABLE "tblCronJobHistory" ADD COLUMN "instanceID" uuid;
-- added: start attempts of this fire (retryAttempts).
ALTER TABLE "tblCronJobHistory" ADD COLUMN "attempt" integer NOT NULL DEFAULT 1;
-- added: when a fire that could not start is tried again (status RETRYING).
ALTER TABLE "tblCronJobHistory" ADD COLUMN "retryAt" timestamptz(6);
ALTER TABLE "tblCronJobHistory"
    ADD CONSTRAINT "fkTblCronJobHistoryInstanceID" FOREIGN KEY ("instanceID")
        REFERENCES "tblWorkflowInstances" ("instanceID") ON DELETE SET NULL ON UPDATE NO ACTION,
    -- One fire per due time, whichever replica gets there: the second insert conflicts.
    ADD CONSTRAINT "uq_tblCronJobHistory_cronJobID_scheduledAt" UNIQUE ("cronJobID", "scheduledAt"),
    ADD CONSTRAINT "ck_tblCronJobHistory_status" CHECK ("status" IN
        ('QUEUED', 'RETRYING', 'RUNNING', 'SUCCESS', 'FAILURE', 'TIMEOUT', 'SKIPPED'));
CREATE INDEX "idx_tblCronJobHistory_instanceID" ON "tblCronJobHistory" ("instanceID");
-- The scheduler's open work: runs to time out, buffered fires, retries. Stays small.
CREATE INDEX "idx_tblCronJobHistory_open" ON "tblCronJobHistory" ("cronJobID", "status")
    WHERE "status" IN ('QUEUED', 'RETRYING', 'RUNNING');
CREATE INDEX "idx_tblCronJobHistory_retryAt" ON "tblCronJobHistory" ("retryAt") WHERE "status" = 'RETRYING';

-- A fire's history row follows its instance: RUNNING becomes SUCCESS (COMPLETED) or FAILURE
-- (FAILED, CANCELLED) in the same transaction that ends the instance, so it can never be
-- missed. A job with a buffered fire wakes the schedulers to start it.
CREATE FUNCTION "jetCronInstanceEnded"() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    job uuid;
BEGIN
    UPDATE "tblCronJobHistory" h SET
        "status" = CASE NEW."status" WHEN 'COMPLETED' THEN 'SUCCESS' ELSE 'FAILURE' END,
        "endTime" = clock_timestamp(),
        "durationMs" = LEAST(EXTRACT(EPOCH FROM clock_timestamp() - h."startTime") * 1000, 2147483647)::integer,
        "result" = jsonb_strip_nulls(jsonb_build_object(
            'instanceID', NEW."instanceID",
            'instanceStatus', NEW."status",
            'output', (SELECT l."payload" -> 'output' FROM "tblWorkflowInstanceLogs" l
                       WHERE l."instanceID" = NEW."instanceID" AND l."eventType" = 'NODE_COMPLETED'
                         AND l."payload" ? 'output' ORDER BY l."logID" DESC LIMIT 1),
            'error', (SELECT l."errorMessage" FROM "tblWorkflowInstanceLogs" l
                      WHERE l."instanceID" = NEW."instanceID" AND l."eventType" = 'NODE_FAILED'
                      ORDER BY l."logID" DESC LIMIT 1)))::text,
        "updatedAt" = now()
    WHERE h."instanceID" = NEW."instanceID" AND h."status" = 'RUNNING'
    RETURNING h."cronJobID" INTO job;
    IF job IS NOT NULL AND EXISTS (SELECT 1 FROM "tblCronJobHistory"
                                   WHERE "cronJobID" = job AND "status" = 'QUEUED') THEN
        PERFORM pg_notify('jet_cron', '');
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER "trgTblWorkflowInstancesCronEnded" AFTER UPDATE OF "status" ON "tblWorkflowInstances"
    FOR EACH ROW WHEN (OLD."status" = 'RUNNING' AND NEW."status" <> 'RUNNING')
    EXECUTE FUNCTION "jetCronInstanceEnded"();

-- Wake sleeping schedulers when a job may now be due earlier than they planned: created,
-- deleted, enabled, or its nextRunAt moved earlier. The scheduler only moves nextRunAt later,
-- so its own fires do not wake the fleet. NOTIFY is a hint: schedulers re-query and also
-- wake on a timer.
CREATE FUNCTION "jetNotifyCron"() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('jet_cron', '');
    RETURN NULL;
END $$;

CREATE TRIGGER "trgTblCronJobsNotifyInsertDelete" AFTER INSERT OR DELETE ON "tblCronJobs"
    FOR EACH STATEMENT EXECUTE FUNCTION "jetNotifyCron"();
CREATE TRIGGER "trgTblCronJobsNotifyUpdate" AFTER UPDATE ON "tblCronJobs"
    FOR EACH ROW WHEN (
        (OLD."isDisabled" AND NOT NEW."isDisabled")
        OR (NEW."nextRunAt" IS NOT NULL AND (OLD."nextRunAt" IS NULL OR NEW."nextRunAt" < OLD."nextRunAt")))
    EXECUTE FUNCTION "jetNotifyCron"();

-- The scheduler replicas alive now: one row per process, heartbeated by its loop.
CREATE TABLE "tblCronSchedulers" (
    "workerID"    varchar(255)   NOT NULL,
    "startedAt"   timestamptz(6) NOT NULL DEFAULT now(),
    "heartbeatAt" timestamptz(6) NOT NULL DEFAULT now(),
    CONSTRAINT "pkTblCronSchedulers" PRIMARY KEY ("workerID")
);
