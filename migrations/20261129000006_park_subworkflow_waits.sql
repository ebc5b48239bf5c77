-- A subWorkflow node waits for its child instance without holding a lease: its execution row
-- is parked (no owner, "availableAt" at the node's timeout or 'infinity') and remembers the
-- child. When the child ends, the same transaction makes the parked row due now, so the
-- parent's node runs again and collects the child's result.
ALTER TABLE "tblNodeExecutions" ADD COLUMN "childInstanceID" uuid;

-- added: the child's end finds the parked row waiting for it.
CREATE INDEX "idx_tblNodeExecutions_childInstanceID" ON "tblNodeExecutions" ("childInstanceID")
    WHERE "childInstanceID" IS NOT NULL;
