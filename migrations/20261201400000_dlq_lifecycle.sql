-- The event DLQ as a product (issue 10): every row keeps its attempt history, PENDING rows are
-- retried automatically with exponential backoff and jitter until "maxRetries", then PARKED for
-- an operator to replay or discard. Parked commands now carry their tenant.
--
-- Statuses: PENDING (waits for "nextRetryAt"), RETRYING (a re-run is in flight: a command was
-- pushed again and apalis has not answered yet), PARKED (retries ran out), REPLAYED (a re-run
-- succeeded), DISCARDED (an operator gave it up; kept with who and when).

ALTER TABLE "tblEventDLQ"
    -- One entry per try: {"at", "error", "by", ...}; "by" names who or what ran it.
    ADD COLUMN "attempts"        jsonb          NOT NULL DEFAULT '[]'
        CONSTRAINT "ck_tblEventDLQ_attempts" CHECK (jsonb_typeof("attempts") = 'array'),
    -- The payload as it first arrived, kept when a replay runs an edited payload.
    ADD COLUMN "originalPayload" jsonb,
    -- Who discarded the row ("user:<id>" or "apikey:<id>") and when.
    ADD COLUMN "discardedBy"     varchar(80),
    ADD COLUMN "discardedAt"     timestamptz(6),
    -- When a re-run last succeeded.
    ADD COLUMN "replayedAt"      timestamptz(6),
    -- The apalis job a command re-run pushed; its outcome (Done, or parked again) finds the row by it.
    ADD COLUMN "replayJobID"     text,
    ADD CONSTRAINT "ck_tblEventDLQ_maxRetries" CHECK ("maxRetries" >= 0);

-- Automatic retries claim PENDING rows whose time has come (RETRYING rows wait for apalis).
DROP INDEX "idx_tblEventDLQ_due";
CREATE INDEX "idx_tblEventDLQ_due" ON "tblEventDLQ" ("nextRetryAt") WHERE "status" = 'PENDING';
CREATE UNIQUE INDEX "uq_tblEventDLQ_replayJobID" ON "tblEventDLQ" ("replayJobID") WHERE "replayJobID" IS NOT NULL;
CREATE INDEX "idx_tblEventDLQ_tenantID_createdAt" ON "tblEventDLQ" ("tenantID", "createdAt");

-- The time of the next automatic retry after `retries` retries: 30 s doubling per retry, at
-- most an hour, with ±25 % jitter so rows that failed together do not retry together.
CREATE FUNCTION "jetDlqNextRetryAt"(retries integer) RETURNS timestamptz LANGUAGE sql VOLATILE AS $$
    SELECT clock_timestamp()
         + make_interval(secs => LEAST(3600, 30 * power(2, LEAST(GREATEST(retries, 0), 20)))
                                 * (0.75 + random() * 0.5))
$$;

-- Every row starts its history with the failure that produced it.
CREATE FUNCTION "jetDlqFirstAttempt"() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW."attempts" = '[]'::jsonb THEN
        NEW."attempts" := jsonb_build_array(jsonb_build_object(
            'at', now(), 'error', NEW."error", 'by', NEW."source", 'retryCount', NEW."retryCount"));
    END IF;
    RETURN NEW;
END $$;

CREATE TRIGGER "trgEventDLQFirstAttempt" BEFORE INSERT ON "tblEventDLQ"
    FOR EACH ROW EXECUTE FUNCTION "jetDlqFirstAttempt"();

-- The tenant of a command: the instance it names, or the instance of the human step it names.
CREATE FUNCTION "jetCommandTenant"(body jsonb) RETURNS uuid LANGUAGE sql STABLE AS $$
    SELECT COALESCE(
        (SELECT i."tenantID" FROM "tblWorkflowInstances" i
          WHERE body ->> 'instanceID' ~* '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$'
            AND i."instanceID" = (body ->> 'instanceID')::uuid),
        (SELECT i."tenantID" FROM "tblWorkflowDataCollectionRequests" r
           JOIN "tblWorkflowInstances" i ON i."instanceID" = r."instanceID"
          WHERE body ->> 'collectionRequestID' ~* '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$'
            AND r."collectionRequestID" = (body ->> 'collectionRequestID')::uuid))
$$;

-- A failed command lands PENDING with its tenant and the instance as sourceID, for 3 automatic
-- retries. A command that was itself a DLQ re-run goes back to its row instead: one more
-- attempt in the history, backoff, or PARKED once "retryCount" reaches "maxRetries".
CREATE OR REPLACE FUNCTION "jetParkFailedCommand"() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    body jsonb;
    message text := COALESCE(NEW.last_result ->> 'Err', NEW.last_result::text, 'failed without a result');
    tenant uuid;
    source_id uuid;
BEGIN
    UPDATE "tblEventDLQ" SET
        "attempts" = "attempts" || jsonb_build_array(jsonb_build_object(
            'at', now(), 'error', message, 'by', 'command', 'jobID', NEW.id, 'outcome', 'failed')),
        "error" = message,
        "retryCount" = "retryCount" + 1,
        "status" = CASE WHEN "retryCount" + 1 >= "maxRetries" THEN 'PARKED' ELSE 'PENDING' END,
        "nextRetryAt" = CASE WHEN "retryCount" + 1 >= "maxRetries" THEN NULL
                             ELSE "jetDlqNextRetryAt"("retryCount" + 1) END,
        "replayJobID" = NULL,
        "updatedAt" = now()
    WHERE "replayJobID" = NEW.id AND "status" = 'RETRYING';
    IF FOUND THEN
        RETURN NEW;
    END IF;
    BEGIN
        body := convert_from(NEW.job, 'UTF8')::jsonb;
    EXCEPTION WHEN others THEN
        -- Undecodable bytes are kept too, as hex, so the operator can see what arrived.
        body := jsonb_build_object('raw', encode(NEW.job, 'hex'));
    END;
    IF jsonb_typeof(body) = 'object' THEN
        tenant := "jetCommandTenant"(body);
        IF body ->> 'instanceID' ~* '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$' THEN
            source_id := (body ->> 'instanceID')::uuid;
        ELSIF body ->> 'collectionRequestID' ~* '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$' THEN
            source_id := (body ->> 'collectionRequestID')::uuid;
        END IF;
    END IF;
    INSERT INTO "tblEventDLQ" ("tenantID", "source", "sourceID", "payload", "error", "retryCount",
                               "maxRetries", "nextRetryAt", "status", "attempts")
    VALUES (
        tenant,
        'command',
        source_id,
        jsonb_build_object('queue', NEW.job_type, 'jobID', NEW.id, 'maxAttempts', NEW.max_attempts, 'command', body),
        message,
        0,
        3,
        "jetDlqNextRetryAt"(0),
        'PENDING',
        jsonb_build_array(jsonb_build_object('at', now(), 'error', message, 'by', 'apalis',
                                             'jobID', NEW.id, 'apalisAttempts', NEW.attempts))
    );
    RETURN NEW;
END $$;

-- A command re-run that apalis finished: its row is REPLAYED.
CREATE FUNCTION "jetDlqCommandReplayed"() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE "tblEventDLQ" SET
        "attempts" = "attempts" || jsonb_build_array(jsonb_build_object(
            'at', now(), 'by', 'command', 'jobID', NEW.id, 'outcome', 'succeeded')),
        "status" = 'REPLAYED', "replayedAt" = now(), "resolvedAt" = now(), "nextRetryAt" = NULL,
        "replayJobID" = NULL, "updatedAt" = now()
    WHERE "replayJobID" = NEW.id AND "status" = 'RETRYING';
    RETURN NEW;
END $$;

CREATE TRIGGER "trgApalisJobsDlqCommandReplayed" AFTER UPDATE OF status ON apalis.jobs
    FOR EACH ROW
    WHEN (NEW.job_type = 'jet-commands' AND OLD.status IS DISTINCT FROM NEW.status AND NEW.status = 'Done')
    EXECUTE FUNCTION "jetDlqCommandReplayed"();

-- Operators' view: the DLQ per tenant, source and status (tenantID NULL: commands whose tenant
-- could not be known, visible only here and in the table).
CREATE SCHEMA IF NOT EXISTS jet_ops;

CREATE VIEW jet_ops.dlq_summary AS
SELECT "tenantID"                                              AS tenant_id,
       "source"                                                AS source,
       "status"                                                AS status,
       count(*)                                                AS rows,
       min("createdAt") FILTER (WHERE "status" = 'PARKED')     AS oldest_parked_at,
       min("nextRetryAt") FILTER (WHERE "status" = 'PENDING')  AS next_retry_at
FROM "tblEventDLQ"
GROUP BY "tenantID", "source", "status";

INSERT INTO "tblPermissions" ("permissionTitle", "permissionDescription") VALUES
    ('tenant:dlq:list', 'list dlq'),
    ('tenant:dlq:read', 'read dlq'),
    ('tenant:dlq:replay', 'replay dlq'),
    ('tenant:dlq:discard', 'discard dlq')
ON CONFLICT ("permissionTitle") DO NOTHING;

INSERT INTO "tblRolePermissionMappings" ("roleID", "permissionID")
SELECT '00000000-0000-4000-8000-000000000001', "permissionID" FROM "tblPermissions"
WHERE "permissionTitle" IN ('tenant:dlq:list', 'tenant:dlq:read', 'tenant:dlq:replay', 'tenant:dlq:discard')
ON CONFLICT DO NOTHING;
