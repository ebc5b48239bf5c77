-- Listeners (issue 8): events from outside start work. A listener is held by exactly one worker
-- of the `listeners` role at a time (a lease in "tblListenerHolds"); every event it receives is
-- committed to "tblListenerInbox" before it is acknowledged (webhook 202, slot advance); the
-- pipeline claims inbox rows with SKIP LOCKED and runs the listener's actions, recording each
-- action that succeeded in "tblListenerActionRuns" so a re-run never repeats it. CDC listeners
-- keep their commit-LSN checkpoint in "tblListenerCheckpoints", written in the same transaction
-- as the events it produced.

-- added: upstream's status strings as a closed set.
ALTER TABLE "tblListeners"
    ADD CONSTRAINT "ck_tblListeners_status" CHECK ("status" IN ('inactive', 'active', 'error'));

-- A worker process of the fleet: it registers at start, heartbeats, and marks itself stopped on a
-- clean exit. A row whose heartbeat is older than a few intervals is a dead worker. Listener
-- holders read it to spread listeners; the ops views (issue 11) read it too.
CREATE TABLE "tblWorkers" (
    "workerID"    varchar(120)   NOT NULL,
    "host"        varchar(255)   NOT NULL,
    "pid"         integer        NOT NULL,
    "roles"       text[]         NOT NULL,
    "version"     varchar(40)    NOT NULL,
    "startedAt"   timestamptz(6) NOT NULL DEFAULT now(),
    "heartbeatAt" timestamptz(6) NOT NULL DEFAULT now(),
    "stoppedAt"   timestamptz(6),
    CONSTRAINT "pkTblWorkers" PRIMARY KEY ("workerID")
);
CREATE INDEX "idx_tblWorkers_heartbeatAt" ON "tblWorkers" ("heartbeatAt");

-- Who holds an active NOTIFY or CDC listener: one row per held listener, renewed by its holder.
-- A row past "expiresAt" may be taken over by any listener worker (failover after kill -9).
CREATE TABLE "tblListenerHolds" (
    "listenerID"       uuid           NOT NULL,
    "workerID"         varchar(120)   NOT NULL,
    "heldSince"        timestamptz(6) NOT NULL DEFAULT now(),
    "expiresAt"        timestamptz(6) NOT NULL,
    -- when the source connection last came up (NULL while connecting)
    "connectedAt"      timestamptz(6),
    -- CDC: bytes of WAL the slot retains on the source, and how far the checkpoint trails the
    -- source's current WAL position, sampled by the holder
    "retainedWalBytes" bigint,
    "lagBytes"         bigint,
    "sampledAt"        timestamptz(6),
    CONSTRAINT "pkTblListenerHolds" PRIMARY KEY ("listenerID"),
    CONSTRAINT "fkTblListenerHoldsListenerID" FOREIGN KEY ("listenerID")
        REFERENCES "tblListeners" ("listenerID") ON DELETE CASCADE ON UPDATE NO ACTION
);
CREATE INDEX "idx_tblListenerHolds_workerID" ON "tblListenerHolds" ("workerID");

-- A CDC listener's replication state. "lsn" is the commit end LSN of the last source transaction
-- whose events are committed in "tblListenerInbox"; anything at or below it is skipped on restart.
CREATE TABLE "tblListenerCheckpoints" (
    "listenerID"      uuid           NOT NULL,
    "slotName"        varchar(63)    NOT NULL,
    "publicationName" varchar(63)    NOT NULL,
    "lsn"             pg_lsn         NOT NULL DEFAULT '0/0',
    "updatedAt"       timestamptz(6) NOT NULL DEFAULT now(),
    CONSTRAINT "pkTblListenerCheckpoints" PRIMARY KEY ("listenerID"),
    CONSTRAINT "fkTblListenerCheckpointsListenerID" FOREIGN KEY ("listenerID")
        REFERENCES "tblListeners" ("listenerID") ON DELETE CASCADE ON UPDATE NO ACTION
);

-- Every received event, durable before it is acknowledged, until the pipeline has run it.
-- "dedupeKey" makes a redelivery a no-op: a webhook's Idempotency-Key, a CDC change's
-- "<commit end lsn>/<index>". Pending rows are claimed by moving "availableAt" forward (a lease);
-- a row claimed too often without finishing is parked in the DLQ as a poison event.
CREATE TABLE "tblListenerInbox" (
    "eventID"     uuid           NOT NULL DEFAULT gen_random_uuid(),
    "listenerID"  uuid           NOT NULL,
    "tenantID"    uuid           NOT NULL,
    "source"      varchar(20)    NOT NULL,
    "dedupeKey"   text,
    "rawEvent"    jsonb          NOT NULL,
    "receivedAt"  timestamptz(6) NOT NULL DEFAULT clock_timestamp(),
    "status"      varchar(20)    NOT NULL DEFAULT 'pending',
    "attempts"    integer        NOT NULL DEFAULT 0,
    "availableAt" timestamptz(6) NOT NULL DEFAULT now(),
    "processedAt" timestamptz(6),
    -- what the pipeline did: the transformed event and each action's outcome
    "result"      jsonb,
    CONSTRAINT "pkTblListenerInbox" PRIMARY KEY ("eventID"),
    CONSTRAINT "uq_tblListenerInbox_listenerID_dedupeKey" UNIQUE ("listenerID", "dedupeKey"),
    CONSTRAINT "fkTblListenerInboxListenerID" FOREIGN KEY ("listenerID")
        REFERENCES "tblListeners" ("listenerID") ON DELETE CASCADE ON UPDATE NO ACTION,
    CONSTRAINT "ck_tblListenerInbox_source" CHECK ("source" IN ('notify', 'cdc', 'webhook')),
    CONSTRAINT "ck_tblListenerInbox_status"
        CHECK ("status" IN ('pending', 'done', 'filtered', 'aborted'))
);
CREATE INDEX "idx_tblListenerInbox_pending" ON "tblListenerInbox" ("availableAt") WHERE "status" = 'pending';
CREATE INDEX "idx_tblListenerInbox_processedAt" ON "tblListenerInbox" ("processedAt") WHERE "status" <> 'pending';
CREATE INDEX "idx_tblListenerInbox_tenantID" ON "tblListenerInbox" ("tenantID");

-- An action that succeeded for an event: the idempotency key per event and action. A crashed
-- pipeline run or a DLQ replay skips what is recorded here.
CREATE TABLE "tblListenerActionRuns" (
    "eventID"   uuid           NOT NULL,
    "actionID"  uuid           NOT NULL,
    "result"    jsonb,
    "createdAt" timestamptz(6) NOT NULL DEFAULT now(),
    CONSTRAINT "pkTblListenerActionRuns" PRIMARY KEY ("eventID", "actionID")
);
CREATE INDEX "idx_tblListenerActionRuns_createdAt" ON "tblListenerActionRuns" ("createdAt");

-- added: where an instance came from when something other than a caller started it
-- ('listener' with the listener's id); NULL for API, sub-workflow and test runs.
ALTER TABLE "tblWorkflowInstances"
    ADD COLUMN "originType" varchar(20),
    ADD COLUMN "originID"   uuid;

-- Wake the pipeline when events arrive (a hint: the pipeline also polls).
CREATE FUNCTION "jetNotifyListenerInbox"() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('jet_listener_inbox', '');
    RETURN NULL;
END $$;
CREATE TRIGGER "trgTblListenerInboxNotify" AFTER INSERT ON "tblListenerInbox"
    FOR EACH STATEMENT EXECUTE FUNCTION "jetNotifyListenerInbox"();

-- Wake the holders when a listener or its actions change, so create, update, activate,
-- deactivate and delete take effect without a restart.
CREATE FUNCTION "jetNotifyListeners"() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('jet_listeners', '');
    RETURN NULL;
END $$;
CREATE TRIGGER "trgTblListenersNotify" AFTER INSERT OR UPDATE OF "listenerConfig", "status", "datasourceID", "listenerType", "updatedAt" OR DELETE
    ON "tblListeners" FOR EACH STATEMENT EXECUTE FUNCTION "jetNotifyListeners"();

-- A failed listener action is parked once per event and action: a pipeline re-run that fails
-- the same way finds the row instead of adding a second one (the row's retries record it).
CREATE UNIQUE INDEX "uq_tblEventDLQ_listener_event_action" ON "tblEventDLQ"
    (("payload" ->> 'eventID'), COALESCE("payload" ->> 'actionID', ''))
    WHERE "source" = 'listener';
