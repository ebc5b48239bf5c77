-- Bulk DLQ actions run in the background: the request answers at once with a run whose
-- progress can be read; the maintenance role works through the matching rows in order
-- ("createdAt", "dlqID") after the run's cursor, at most "perSecond" a second, one replica at a
-- time per run (a short lock, taken with SKIP LOCKED).
CREATE TABLE "tblDlqBulkRuns" (
    "runID"           uuid           NOT NULL DEFAULT gen_random_uuid(),
    "tenantID"        uuid           NOT NULL,
    "action"          varchar(20)    NOT NULL,
    -- the filters as the request gave them: {source, status, sourceID, error, from, to}
    "filters"         jsonb          NOT NULL DEFAULT '{}',
    "perSecond"       integer,
    "status"          varchar(20)    NOT NULL DEFAULT 'running',
    -- PENDING and PARKED rows matching when the run started
    "matched"         bigint         NOT NULL,
    "processed"       bigint         NOT NULL DEFAULT 0,
    "succeeded"       bigint         NOT NULL DEFAULT 0,
    "failed"          bigint         NOT NULL DEFAULT 0,
    -- the last row acted on: the run goes on after it
    "cursorCreatedAt" timestamptz(6),
    "cursorDlqID"     uuid,
    "lockedUntil"     timestamptz(6),
    "createdBy"       varchar(80)    NOT NULL,
    "createdAt"       timestamptz(6) NOT NULL DEFAULT now(),
    "updatedAt"       timestamptz(6) NOT NULL DEFAULT now(),
    "finishedAt"      timestamptz(6),
    CONSTRAINT "pkTblDlqBulkRuns" PRIMARY KEY ("runID"),
    CONSTRAINT "fkTblDlqBulkRunsTenantID" FOREIGN KEY ("tenantID")
        REFERENCES "tblTenants" ("tenantID") ON DELETE CASCADE ON UPDATE NO ACTION,
    CONSTRAINT "ck_tblDlqBulkRuns_action" CHECK ("action" IN ('replay', 'discard')),
    CONSTRAINT "ck_tblDlqBulkRuns_status" CHECK ("status" IN ('running', 'done')),
    CONSTRAINT "ck_tblDlqBulkRuns_perSecond" CHECK ("perSecond" IS NULL OR "perSecond" BETWEEN 1 AND 50)
);
CREATE INDEX "idx_tblDlqBulkRuns_running" ON "tblDlqBulkRuns" ("createdAt") WHERE "status" = 'running';
CREATE INDEX "idx_tblDlqBulkRuns_tenantID" ON "tblDlqBulkRuns" ("tenantID", "createdAt");
-- the runs work through the matching rows in this order
CREATE INDEX "idx_tblEventDLQ_tenantID_order" ON "tblEventDLQ" ("tenantID", "createdAt", "dlqID");
