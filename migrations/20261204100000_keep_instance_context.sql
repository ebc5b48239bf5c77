-- The instance context kept beside the log (issue 13: cost per step must not grow with an
-- instance's history). The context is the shallow merge, in logID order, of the payloads of
-- an instance's INPUT_SET, NODE_COMPLETED and SYSTEM_SET log rows. Folding the whole log on
-- every claim made a step cost O(steps so far); this table keeps the fold's result, one row
-- per top-level key, so a claim reads O(keys) and a step writes only the keys it sets.
--
-- The log stays the source of truth: the table is written only by the trigger below, in the
-- transaction that writes the log row, so no code path can forget it. "logID" is the log row
-- a key's value came from; an upsert only replaces an older one, so the result is the fold's
-- (last logID wins) whatever order concurrent transactions commit in.

CREATE TABLE "tblWorkflowInstanceContext" (
    "instanceID" uuid   NOT NULL,
    "key"        text   NOT NULL,
    "value"      jsonb  NOT NULL,
    "logID"      bigint NOT NULL,
    CONSTRAINT "pkTblWorkflowInstanceContext" PRIMARY KEY ("instanceID", "key"),
    CONSTRAINT "fkTblWorkflowInstanceContextInstanceID" FOREIGN KEY ("instanceID")
        REFERENCES "tblWorkflowInstances" ("instanceID") ON DELETE CASCADE ON UPDATE NO ACTION
) WITH (fillfactor = 80); -- most writes replace a value under the same key: HOT updates

-- Statement-level with a transition table, so a batch settle folds all its rows in one
-- upsert. Within one statement the latest row per (instance, key) wins, as in the fold.
CREATE FUNCTION "jetKeepInstanceContext"() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO "tblWorkflowInstanceContext" ("instanceID", "key", "value", "logID")
    SELECT DISTINCT ON (n."instanceID", kv.key) n."instanceID", kv.key, kv.value, n."logID"
    FROM logged n CROSS JOIN LATERAL jsonb_each(n."payload") kv
    WHERE n."eventType" IN ('INPUT_SET', 'NODE_COMPLETED', 'SYSTEM_SET')
      AND jsonb_typeof(n."payload") = 'object'
    ORDER BY n."instanceID", kv.key, n."logID" DESC
    ON CONFLICT ("instanceID", "key") DO UPDATE
        SET "value" = EXCLUDED."value", "logID" = EXCLUDED."logID"
        WHERE "tblWorkflowInstanceContext"."logID" < EXCLUDED."logID";
    RETURN NULL;
END $$;

CREATE TRIGGER "trgTblWorkflowInstanceLogsKeepContext" AFTER INSERT ON "tblWorkflowInstanceLogs"
    REFERENCING NEW TABLE AS logged FOR EACH STATEMENT EXECUTE FUNCTION "jetKeepInstanceContext"();

-- Instances that ran before this migration: their context folded once from their logs.
INSERT INTO "tblWorkflowInstanceContext" ("instanceID", "key", "value", "logID")
SELECT DISTINCT ON (l."instanceID", kv.key) l."instanceID", kv.key, kv.value, l."logID"
FROM "tblWorkflowInstanceLogs" l CROSS JOIN LATERAL jsonb_each(l."payload") kv
WHERE l."eventType" IN ('INPUT_SET', 'NODE_COMPLETED', 'SYSTEM_SET')
  AND jsonb_typeof(l."payload") = 'object'
ORDER BY l."instanceID", kv.key, l."logID" DESC;

