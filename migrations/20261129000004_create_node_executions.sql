-- The node-execution queue (DESIGN "The two queues", 2): one row per dispatched node
-- execution, claimed with FOR UPDATE SKIP LOCKED. A claim stamps a lease (owner, expiry) and
-- bumps claimCount, the fencing token: a settle or retry only counts if owner and claimCount
-- still match. Rows leave the table when settled, so it stays small and hot.

CREATE TABLE "tblNodeExecutions" (
    "executionID"    bigserial      NOT NULL,
    "instanceID"     uuid           NOT NULL,
    "tenantID"       uuid           NOT NULL,
    "nodeID"         text           NOT NULL,
    -- The dispatch number of this node in its instance; keys the log's idempotency index.
    "nodeAttempt"    integer        NOT NULL,
    -- Failed tries of this dispatch so far (retries with backoff).
    "retryCount"     integer        NOT NULL DEFAULT 0,
    "availableAt"    timestamptz(6) NOT NULL DEFAULT now(),
    "leaseOwner"     text,
    "leaseExpiresAt" timestamptz(6),
    "claimCount"     integer        NOT NULL DEFAULT 0,
    "lastError"      text,
    "createdAt"      timestamptz(6) NOT NULL DEFAULT now(),
    CONSTRAINT "pkTblNodeExecutions" PRIMARY KEY ("executionID"),
    CONSTRAINT "uq_tblNodeExecutions_dispatch" UNIQUE ("instanceID", "nodeID", "nodeAttempt"),
    CONSTRAINT "fkTblNodeExecutionsInstanceID" FOREIGN KEY ("instanceID")
        REFERENCES "tblWorkflowInstances" ("instanceID") ON DELETE CASCADE ON UPDATE NO ACTION,
    CONSTRAINT "ck_tblNodeExecutions_lease" CHECK (("leaseOwner" IS NULL) = ("leaseExpiresAt" IS NULL))
) WITH (fillfactor = 70); -- HOT updates for claim/heartbeat churn

-- Ready rows per tenant in due order: what a fair claim scans.
CREATE INDEX "idx_tblNodeExecutions_ready" ON "tblNodeExecutions" ("tenantID", "availableAt") WHERE "leaseOwner" IS NULL;
-- Held leases by expiry: what the reaper scans.
CREATE INDEX "idx_tblNodeExecutions_leased" ON "tblNodeExecutions" ("leaseExpiresAt") WHERE "leaseOwner" IS NOT NULL;

-- Wake sleeping node workers when work becomes ready now. NOTIFY is only a hint: workers
-- always re-query, and poll as a fallback. Statement-level, so a batch insert notifies once.
CREATE FUNCTION "jetNotifyNodeExecutions"() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('jet_node_executions', '');
    RETURN NULL;
END $$;

CREATE TRIGGER "trgTblNodeExecutionsNotify" AFTER INSERT ON "tblNodeExecutions"
    FOR EACH STATEMENT EXECUTE FUNCTION "jetNotifyNodeExecutions"();
