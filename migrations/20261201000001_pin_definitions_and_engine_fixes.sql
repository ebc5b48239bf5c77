-- A run executes the definition it started with (DESIGN; issue 14.3). Every save of a workflow
-- stores an immutable snapshot of its graph and options; an instance pins the version it
-- started on, and the engine reads only that snapshot. Saving never touches running state.
CREATE TABLE "tblWorkflowVersions" (
    "workflowID"      uuid           NOT NULL,
    "version"         integer        NOT NULL,
    -- The editor's shape, as saved: [{id, type, data, position}] and [{source, target, sourceHandle, targetHandle}].
    "nodes"           jsonb          NOT NULL,
    "edges"           jsonb          NOT NULL,
    "workflowOptions" jsonb          NOT NULL DEFAULT '{}',
    -- The start node, so creating an instance needs no scan of the graph.
    "startNodeID"     text,
    "createdAt"       timestamptz(6) NOT NULL DEFAULT now(),
    CONSTRAINT "pkTblWorkflowVersions" PRIMARY KEY ("workflowID", "version"),
    CONSTRAINT "fkTblWorkflowVersionsWorkflowID" FOREIGN KEY ("workflowID")
        REFERENCES "tblWorkflows" ("workflowID") ON DELETE CASCADE ON UPDATE NO ACTION
);

-- added: the version new instances start on.
ALTER TABLE "tblWorkflows" ADD COLUMN "currentVersion" integer NOT NULL DEFAULT 0;
-- added: the version an instance runs (NULL for test runs, which carry their graph).
ALTER TABLE "tblWorkflowInstances" ADD COLUMN "workflowVersion" integer;

-- Snapshots of what is saved today, as the engine read it: layout keys are not configuration.
INSERT INTO "tblWorkflowVersions" ("workflowID", "version", "nodes", "edges", "workflowOptions", "startNodeID")
SELECT w."workflowID", 1,
       COALESCE((SELECT jsonb_agg(jsonb_build_object(
                   'id', n."nodeID"::text, 'type', n."nodeType",
                   'data', COALESCE(n."nodeConfig", '{}') - 'position' - 'width' - 'height' - 'measured')
                   ORDER BY n."createdAt", n."nodeID")
                 FROM "tblWorkflowNodes" n WHERE n."workflowID" = w."workflowID"), '[]'),
       COALESCE((SELECT jsonb_agg(jsonb_build_object(
                   'source', e."upstreamNodeID"::text, 'target', e."downstreamNodeID"::text,
                   'sourceHandle', e."sourceHandle", 'targetHandle', e."targetHandle")
                   ORDER BY e."createdAt", e."edgeID")
                 FROM "tblWorkflowEdge" e WHERE e."workflowID" = w."workflowID"), '[]'),
       COALESCE(w."workflowOptions", '{}'),
       (SELECT n."nodeID"::text FROM "tblWorkflowNodes" n
        WHERE n."workflowID" = w."workflowID" AND n."nodeType" = 'start' LIMIT 1)
FROM "tblWorkflows" w;
UPDATE "tblWorkflows" SET "currentVersion" = 1;
UPDATE "tblWorkflowInstances" SET "workflowVersion" = 1 WHERE "workflowID" IS NOT NULL;

-- A human request belongs to its instance's pinned definition, not to the editable node rows:
-- replacing a graph deleted (by cascade) the requests of runs waiting at them.
ALTER TABLE "tblWorkflowDataCollectionRequests" DROP CONSTRAINT "fk_tblWorkflowDataCollectionRequests_nodeID";
DROP INDEX "idx_tblWfDataCollection_nodeID";

-- An answered or expired request counts as pending work until its resume has moved the run
-- (issue 14.6): otherwise another branch settling in between completes the run without it.
ALTER TABLE "tblWorkflowDataCollectionRequests" ADD COLUMN "resumedAt" timestamptz(6);
UPDATE "tblWorkflowDataCollectionRequests" SET "resumedAt" = "updatedAt" WHERE "status" <> 'PENDING';

-- A parked subWorkflow wait whose child instance is deleted (with its workflow, or a test
-- run) is made due now, so the parent's node runs, finds no child, and fails with a reason
-- instead of waiting forever (issue 14.5).
CREATE FUNCTION "jetWakeOrphanedParents"() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE "tblNodeExecutions" e SET "availableAt" = now()
    FROM gone WHERE e."childInstanceID" = gone."instanceID" AND e."leaseOwner" IS NULL;
    IF FOUND THEN
        PERFORM pg_notify('jet_node_executions', '');
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER "trgTblWorkflowInstancesWakeParents" AFTER DELETE ON "tblWorkflowInstances"
    REFERENCING OLD TABLE AS gone FOR EACH STATEMENT EXECUTE FUNCTION "jetWakeOrphanedParents"();

-- Every failed try of a node is in its run's log (issue 14.15): NODE_RETRY rows, one per failed
-- try of the same dispatch, so they are left out of the one-result-per-dispatch index.
DROP INDEX "uq_tblWorkflowInstanceLogs_idempotency";
CREATE UNIQUE INDEX "uq_tblWorkflowInstanceLogs_idempotency"
    ON "tblWorkflowInstanceLogs" ("instanceID", "nodeID", "eventType", "nodeAttempt")
    WHERE "nodeID" IS NOT NULL AND "eventType" <> 'NODE_RETRY';
