-- Graceful drain (issue 12): a worker stopping on SIGTERM hands back the node executions it
-- cannot finish. Such a claim is neither a failed try ("retryCount") nor a claim that ended
-- without a result (what JET_NODE_MAX_CLAIMS bounds), so it is counted on its own: a node
-- released by several rolling restarts in a row does not fail as if its workers had crashed.
ALTER TABLE "tblNodeExecutions" ADD COLUMN "releaseCount" integer NOT NULL DEFAULT 0;
