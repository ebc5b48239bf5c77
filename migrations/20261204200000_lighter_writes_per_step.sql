-- Fewer index entries written per node execution (issue 13; `jet bench --wal-detail` showed
-- index inserts were 40% of the WAL of a step).
--
-- The log's (instanceID, eventType, nodeID) index served barrier reads that the idempotency
-- index (instanceID, nodeID, eventType, nodeAttempt) and (instanceID, logID) serve as well;
-- every log row paid for it.
DROP INDEX "idx_tblWorkflowInstanceLogs_barrier";

-- Only sub-workflow runs have a parent: the others need no entry in this index.
DROP INDEX "idx_tblWorkflowInstances_parentInstanceID";
CREATE INDEX "idx_tblWorkflowInstances_parentInstanceID" ON "tblWorkflowInstances" ("parentInstanceID")
    WHERE "parentInstanceID" IS NOT NULL;

-- Every settle bumps its instance's version: room on the page keeps those updates HOT (no
-- new index entries). Pages written from now on keep the room.
ALTER TABLE "tblWorkflowInstances" SET (fillfactor = 70);
