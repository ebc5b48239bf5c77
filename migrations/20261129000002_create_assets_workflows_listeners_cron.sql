-- The asset, workflow, listener and cron tables of upstream Jet Admin (reference/jetadmin.md
-- §2.4–2.7) with upstream's names, plus the fixes DESIGN.md asks for: tblWorkflowInstanceLogs
-- gets a bigserial logID and a text nodeID, the idempotency index upstream's engine relied on
-- becomes real, and tblEventDLQ (docs-only upstream) is defined here.

CREATE TABLE "tblAppPages" (
    "appPageID"          uuid           NOT NULL DEFAULT gen_random_uuid(),
    "appPageDescription" varchar,
    "tenantID"           uuid           NOT NULL,
    "createdAt"          timestamptz(6)          DEFAULT now(),
    "updatedAt"          timestamptz(6)          DEFAULT now(),
    "creatorID"          uuid,
    "appPageConfig"      jsonb,
    "appPageTitle"       varchar        NOT NULL,
    "createdByApiKeyID"  uuid,
    "folderID"           uuid,
    CONSTRAINT "pkTblAppPages" PRIMARY KEY ("appPageID"),
    CONSTRAINT "fkTblAppPagesTenantIDTenantID" FOREIGN KEY ("tenantID")
        REFERENCES "tblTenants" ("tenantID") ON DELETE CASCADE ON UPDATE NO ACTION,
    CONSTRAINT "fkTblAppPageCreatorID" FOREIGN KEY ("creatorID")
        REFERENCES "tblUsers" ("userID") ON DELETE NO ACTION ON UPDATE NO ACTION,
    CONSTRAINT "fkTblAppPagesCreatedByApiKeyID" FOREIGN KEY ("createdByApiKeyID")
        REFERENCES "tblAPIKeys" ("apiKeyID") ON DELETE SET NULL ON UPDATE NO ACTION,
    CONSTRAINT "fkTblAppPagesFolderID" FOREIGN KEY ("folderID")
        REFERENCES "tblFolders" ("folderID") ON DELETE SET NULL ON UPDATE NO ACTION
);
CREATE INDEX "idx_tblAppPages_createdByApiKeyID" ON "tblAppPages" ("createdByApiKeyID");
CREATE INDEX "idx_tblAppPages_folderID" ON "tblAppPages" ("folderID");
CREATE INDEX "idx_tblAppPages_tenantID" ON "tblAppPages" ("tenantID");   -- added: FK index
CREATE INDEX "idx_tblAppPages_creatorID" ON "tblAppPages" ("creatorID"); -- added: FK index

CREATE TABLE "tblWidgets" (
    "widgetID"          uuid           NOT NULL DEFAULT gen_random_uuid(),
    "widgetTitle"       varchar        NOT NULL,
    "widgetDescription" varchar,
    "widgetType"        varchar        NOT NULL,
    "widgetConfig"      jsonb          NOT NULL,
    "createdAt"         timestamptz(6)          DEFAULT now(),
    "updatedAt"         timestamptz(6)          DEFAULT now(),
    "tenantID"          uuid           NOT NULL,
    "creatorID"         uuid,
    "refreshInterval"   integer,
    "createdByApiKeyID" uuid,
    "folderID"          uuid,
    CONSTRAINT "pkTblWidgets" PRIMARY KEY ("widgetID"),
    CONSTRAINT "fkTblWidgetsTenantIDTenantID" FOREIGN KEY ("tenantID")
        REFERENCES "tblTenants" ("tenantID") ON DELETE NO ACTION ON UPDATE NO ACTION,
    CONSTRAINT "fkTblWidgetsCreatorID" FOREIGN KEY ("creatorID")
        REFERENCES "tblUsers" ("userID") ON DELETE NO ACTION ON UPDATE NO ACTION,
    CONSTRAINT "fkTblWidgetsCreatedByApiKeyID" FOREIGN KEY ("createdByApiKeyID")
        REFERENCES "tblAPIKeys" ("apiKeyID") ON DELETE SET NULL ON UPDATE NO ACTION,
    CONSTRAINT "fkTblWidgetsFolderID" FOREIGN KEY ("folderID")
        REFERENCES "tblFolders" ("folderID") ON DELETE SET NULL ON UPDATE NO ACTION
);
CREATE INDEX "idx_tblWidgets_createdByApiKeyID" ON "tblWidgets" ("createdByApiKeyID");
CREATE INDEX "idx_tblWidgets_folderID" ON "tblWidgets" ("folderID");
CREATE INDEX "idx_tblWidgets_tenantID" ON "tblWidgets" ("tenantID");   -- added: FK index
CREATE INDEX "idx_tblWidgets_creatorID" ON "tblWidgets" ("creatorID"); -- added: FK index

CREATE TABLE "tblDatasources" (
    "datasourceID"          uuid           NOT NULL DEFAULT gen_random_uuid(),
    "datasourceTitle"       varchar        NOT NULL,
    "datasourceType"        varchar        NOT NULL,
    "createdAt"             timestamptz(6) NOT NULL DEFAULT now(),
    "updatedAt"             timestamptz(6) NOT NULL DEFAULT now(),
    "tenantID"              uuid           NOT NULL,
    "creatorID"             uuid,
    "datasourceOptions"     jsonb          NOT NULL,
    "datasourceTags"        varchar[]      NOT NULL,
    "createdByApiKeyID"     uuid,
    "connectionStatus"      varchar(32)             DEFAULT 'inactive',
    "webhookToken"          varchar(128),
    "webhookSecret"         varchar(255),
    "datasourceDescription" text,
    "folderID"              uuid, -- added (upstream 050c1d67)
    CONSTRAINT "pkTblDatasources" PRIMARY KEY ("datasourceID"),
    CONSTRAINT "uq_tblDatasources_webhookToken" UNIQUE ("webhookToken"),
    CONSTRAINT "fkTblDatasourceTblTenantsTenantID" FOREIGN KEY ("tenantID")
        REFERENCES "tblTenants" ("tenantID") ON DELETE NO ACTION ON UPDATE NO ACTION,
    CONSTRAINT "fkTblDatasourceTblUsersCreatorID" FOREIGN KEY ("creatorID")
        REFERENCES "tblUsers" ("userID") ON DELETE NO ACTION ON UPDATE NO ACTION,
    CONSTRAINT "fkTblDatasourcesCreatedByApiKeyID" FOREIGN KEY ("createdByApiKeyID")
        REFERENCES "tblAPIKeys" ("apiKeyID") ON DELETE SET NULL ON UPDATE NO ACTION,
    CONSTRAINT "fkTblDatasourcesFolderID" FOREIGN KEY ("folderID")
        REFERENCES "tblFolders" ("folderID") ON DELETE SET NULL ON UPDATE NO ACTION
);
CREATE INDEX "idx_tblDatasources_createdByApiKeyID" ON "tblDatasources" ("createdByApiKeyID");
CREATE INDEX "idx_tblDatasources_folderID" ON "tblDatasources" ("folderID");
CREATE INDEX "idx_tblDatasources_tenantID" ON "tblDatasources" ("tenantID");   -- added: FK index
CREATE INDEX "idx_tblDatasources_creatorID" ON "tblDatasources" ("creatorID"); -- added: FK index

CREATE TABLE "tblDataQueries" (
    "dataQueryID"           uuid           NOT NULL DEFAULT gen_random_uuid(),
    "tenantID"              uuid           NOT NULL,
    "createdAt"             timestamptz(6) NOT NULL DEFAULT now(),
    "updatedAt"             timestamptz(6) NOT NULL DEFAULT now(),
    "disabledAt"            timestamptz(6),
    "isDisabled"            boolean                 DEFAULT false,
    "dataQueryTitle"        varchar        NOT NULL DEFAULT 'Untitled',
    "dataQueryDescription"  varchar,
    "dataQueryOptions"      json,
    "runOnLoad"             boolean,
    "dataQueryResultSchema" json,
    "creatorID"             uuid,
    "datasourceID"          uuid,
    "datasourceType"        varchar        NOT NULL DEFAULT 'postgresql',
    "createdByApiKeyID"     uuid,
    "folderID"              uuid,
    CONSTRAINT "pkTblDataQueries" PRIMARY KEY ("dataQueryID"),
    CONSTRAINT "fkTenantIDTenantID" FOREIGN KEY ("tenantID")
        REFERENCES "tblTenants" ("tenantID") ON DELETE NO ACTION ON UPDATE NO ACTION,
    CONSTRAINT "fkTblDataQueriesCreatorID" FOREIGN KEY ("creatorID")
        REFERENCES "tblUsers" ("userID") ON DELETE NO ACTION ON UPDATE NO ACTION,
    CONSTRAINT "fkDatasourceIDDatasourceID" FOREIGN KEY ("datasourceID")
        REFERENCES "tblDatasources" ("datasourceID") ON DELETE CASCADE ON UPDATE NO ACTION,
    CONSTRAINT "fkTblDataQueriesCreatedByApiKeyID" FOREIGN KEY ("createdByApiKeyID")
        REFERENCES "tblAPIKeys" ("apiKeyID") ON DELETE SET NULL ON UPDATE NO ACTION,
    CONSTRAINT "fkTblDataQueriesFolderID" FOREIGN KEY ("folderID")
        REFERENCES "tblFolders" ("folderID") ON DELETE SET NULL ON UPDATE NO ACTION
);
CREATE INDEX "idx_tblDataQueries_createdByApiKeyID" ON "tblDataQueries" ("createdByApiKeyID");
CREATE INDEX "idx_tblDataQueries_folderID" ON "tblDataQueries" ("folderID");
CREATE INDEX "idx_tblDataQueries_tenantID" ON "tblDataQueries" ("tenantID");         -- added: FK index
CREATE INDEX "idx_tblDataQueries_creatorID" ON "tblDataQueries" ("creatorID");       -- added: FK index
CREATE INDEX "idx_tblDataQueries_datasourceID" ON "tblDataQueries" ("datasourceID"); -- added: FK index

CREATE TABLE "tblWorkflows" (
    "workflowID"        uuid           NOT NULL DEFAULT gen_random_uuid(),
    "title"             varchar        NOT NULL,
    "tenantID"          uuid           NOT NULL,
    "creatorID"         uuid,
    "isDisabled"        boolean,
    "disabledAt"        timestamptz(6),
    "createdAt"         timestamptz(6) NOT NULL DEFAULT now(),
    "updatedAt"         timestamptz(6) NOT NULL DEFAULT now(),
    "workflowOptions"   jsonb                   DEFAULT '{}',
    "createdByApiKeyID" uuid,
    "folderID"          uuid,
    CONSTRAINT "pkTblWorkflows" PRIMARY KEY ("workflowID"),
    CONSTRAINT "tblWorkflowsTenantID" FOREIGN KEY ("tenantID")
        REFERENCES "tblTenants" ("tenantID") ON DELETE NO ACTION ON UPDATE NO ACTION,
    CONSTRAINT "tblWorkflowsCreatorID" FOREIGN KEY ("creatorID")
        REFERENCES "tblUsers" ("userID") ON DELETE NO ACTION ON UPDATE NO ACTION,
    CONSTRAINT "fkTblWorkflowsCreatedByApiKeyID" FOREIGN KEY ("createdByApiKeyID")
        REFERENCES "tblAPIKeys" ("apiKeyID") ON DELETE SET NULL ON UPDATE NO ACTION,
    CONSTRAINT "fkTblWorkflowsFolderID" FOREIGN KEY ("folderID")
        REFERENCES "tblFolders" ("folderID") ON DELETE SET NULL ON UPDATE NO ACTION
);
CREATE INDEX "idx_tblWorkflows_createdByApiKeyID" ON "tblWorkflows" ("createdByApiKeyID");
CREATE INDEX "idx_tblWorkflows_folderID" ON "tblWorkflows" ("folderID");
CREATE INDEX "idx_tblWorkflows_tenantID" ON "tblWorkflows" ("tenantID");   -- added: FK index
CREATE INDEX "idx_tblWorkflows_creatorID" ON "tblWorkflows" ("creatorID"); -- added: FK index

CREATE TABLE "tblWorkflowNodes" (
    "nodeID"         uuid           NOT NULL DEFAULT gen_random_uuid(),
    "workflowID"     uuid           NOT NULL,
    "nodeType"       varchar        NOT NULL,
    "timeoutSeconds" integer                 DEFAULT 300,
    "retryLimit"     integer                 DEFAULT 3,
    "createdAt"      timestamptz(6) NOT NULL DEFAULT now(),
    "updatedAt"      timestamptz(6) NOT NULL DEFAULT now(),
    "nodeConfig"     jsonb,
    CONSTRAINT "pkTblWorkflowNodes" PRIMARY KEY ("nodeID"),
    CONSTRAINT "fkTblWorkflowNodesWorkflowID" FOREIGN KEY ("workflowID")
        REFERENCES "tblWorkflows" ("workflowID") ON DELETE CASCADE ON UPDATE NO ACTION
);
CREATE INDEX "idx_tblWorkflowNodes_workflowID" ON "tblWorkflowNodes" ("workflowID");

CREATE TABLE "tblWorkflowEdge" (
    "edgeID"           uuid           NOT NULL DEFAULT gen_random_uuid(),
    "workflowID"       uuid           NOT NULL,
    "upstreamNodeID"   uuid           NOT NULL,
    "downstreamNodeID" uuid           NOT NULL,
    "createdAt"        timestamptz(6) NOT NULL DEFAULT now(),
    "updatedAt"        timestamptz(6) NOT NULL DEFAULT now(),
    "sourceHandle"     varchar,
    "targetHandle"     varchar,
    "edgeType"         varchar,
    "edgeConfig"       jsonb,
    CONSTRAINT "pkTblWorkflowEdge" PRIMARY KEY ("edgeID"),
    CONSTRAINT "fkTblWorkflowEdgeWorkflowID" FOREIGN KEY ("workflowID")
        REFERENCES "tblWorkflows" ("workflowID") ON DELETE CASCADE ON UPDATE NO ACTION,
    CONSTRAINT "tblWorkflowEdge_upstream_fkey" FOREIGN KEY ("upstreamNodeID")
        REFERENCES "tblWorkflowNodes" ("nodeID") ON DELETE CASCADE ON UPDATE NO ACTION,
    CONSTRAINT "tblWorkflowEdge_downstream_fkey" FOREIGN KEY ("downstreamNodeID")
        REFERENCES "tblWorkflowNodes" ("nodeID") ON DELETE CASCADE ON UPDATE NO ACTION
);
CREATE INDEX "idx_tblWorkflowEdge_workflowID" ON "tblWorkflowEdge" ("workflowID");
CREATE INDEX "idx_tblWorkflowEdge_upstreamNodeID" ON "tblWorkflowEdge" ("upstreamNodeID");     -- added: FK index
CREATE INDEX "idx_tblWorkflowEdge_downstreamNodeID" ON "tblWorkflowEdge" ("downstreamNodeID"); -- added: FK index

CREATE TABLE "tblWorkflowInstances" (
    "instanceID"       uuid           NOT NULL DEFAULT gen_random_uuid(),
    "workflowID"       uuid,
    "tenantID"         uuid           NOT NULL,
    "status"           varchar        NOT NULL DEFAULT 'PENDING',
    "version"          integer        NOT NULL DEFAULT 1,
    "startedAt"        timestamptz(6),
    "completedAt"      timestamptz(6),
    "createdAt"        timestamptz(6) NOT NULL DEFAULT now(),
    "updatedAt"        timestamptz(6) NOT NULL DEFAULT now(),
    "isTest"           boolean        NOT NULL DEFAULT false,
    "parentInstanceID" uuid,
    "parentNodeID"     varchar,
    CONSTRAINT "pkTblWorkflowInstances" PRIMARY KEY ("instanceID"),
    CONSTRAINT "fkTblWorkflowInstancesWorkflowID" FOREIGN KEY ("workflowID")
        REFERENCES "tblWorkflows" ("workflowID") ON DELETE NO ACTION ON UPDATE NO ACTION,
    CONSTRAINT "fkTblWorkflowInstancesTenantID" FOREIGN KEY ("tenantID")
        REFERENCES "tblTenants" ("tenantID") ON DELETE NO ACTION ON UPDATE NO ACTION,
    -- added: upstream's status strings as a closed set; a typo must not strand an instance.
    CONSTRAINT "ck_tblWorkflowInstances_status"
        CHECK ("status" IN ('PENDING', 'RUNNING', 'COMPLETED', 'FAILED', 'CANCELLED'))
);
CREATE INDEX "idx_tblWorkflowInstances_workflowID" ON "tblWorkflowInstances" ("workflowID");
CREATE INDEX "idx_tblWorkflowInstances_parentInstanceID" ON "tblWorkflowInstances" ("parentInstanceID");
CREATE INDEX "idx_tblWorkflowInstances_tenantID_status" ON "tblWorkflowInstances" ("tenantID", "status");

CREATE TABLE "tblWorkflowInstanceLogs" (
    "logID"          bigserial      NOT NULL, -- fixed: upstream's uuid cannot order the log
    "instanceID"     uuid           NOT NULL,
    "nodeID"         text,                    -- fixed: test runs carry editor ids, not uuids
    "eventType"      varchar        NOT NULL,
    "nodeStatus"     varchar,
    "outputVariable" varchar,
    "payload"        jsonb          NOT NULL DEFAULT '{}',
    "errorMessage"   varchar,
    "createdAt"      timestamptz(6) NOT NULL DEFAULT now(),
    "nodeAttempt"    integer,
    CONSTRAINT "pkTblWorkflowInstanceLogs" PRIMARY KEY ("logID"),
    CONSTRAINT "fk_tblWorkflowInstanceLogs_instanceID" FOREIGN KEY ("instanceID")
        REFERENCES "tblWorkflowInstances" ("instanceID") ON DELETE CASCADE ON UPDATE NO ACTION
);
CREATE INDEX "idx_tblWorkflowInstanceLogs_instance_seq" ON "tblWorkflowInstanceLogs" ("instanceID", "logID");
CREATE INDEX "idx_tblWorkflowInstanceLogs_barrier" ON "tblWorkflowInstanceLogs" ("instanceID", "eventType", "nodeID");
-- fixed: the index upstream's engine relied on but never created; a duplicate delivery of a
-- node result violates it and becomes a no-op.
CREATE UNIQUE INDEX "uq_tblWorkflowInstanceLogs_idempotency"
    ON "tblWorkflowInstanceLogs" ("instanceID", "nodeID", "eventType", "nodeAttempt")
    WHERE "nodeID" IS NOT NULL;

CREATE TABLE "tblWorkflowDataCollectionRequests" (
    "collectionRequestID" uuid           NOT NULL DEFAULT gen_random_uuid(),
    "instanceID"          uuid           NOT NULL,
    "nodeID"              uuid           NOT NULL,
    "nodeAttempt"         integer,
    "status"              varchar(50)    NOT NULL DEFAULT 'PENDING',
    "collectionType"      varchar(50)    NOT NULL DEFAULT 'form',
    "collectionConfig"    jsonb          NOT NULL DEFAULT '{}',
    "submittedData"       jsonb,
    "expiresAt"           timestamptz(6),
    "createdAt"           timestamptz(6) NOT NULL DEFAULT now(),
    "updatedAt"           timestamptz(6) NOT NULL DEFAULT now(),
    CONSTRAINT "pkTblWorkflowDataCollectionRequests" PRIMARY KEY ("collectionRequestID"),
    CONSTRAINT "fk_tblWorkflowDataCollectionRequests_instanceID" FOREIGN KEY ("instanceID")
        REFERENCES "tblWorkflowInstances" ("instanceID") ON DELETE CASCADE ON UPDATE NO ACTION,
    CONSTRAINT "fk_tblWorkflowDataCollectionRequests_nodeID" FOREIGN KEY ("nodeID")
        REFERENCES "tblWorkflowNodes" ("nodeID") ON DELETE CASCADE ON UPDATE NO ACTION
);
CREATE INDEX "idx_tblWfDataCollection_instance_status" ON "tblWorkflowDataCollectionRequests" ("instanceID", "status");
CREATE INDEX "idx_tblWfDataCollection_status_expiry" ON "tblWorkflowDataCollectionRequests" ("status", "expiresAt");
CREATE INDEX "idx_tblWfDataCollection_nodeID" ON "tblWorkflowDataCollectionRequests" ("nodeID"); -- added: FK index

CREATE TABLE "tblListeners" (
    "listenerID"          uuid           NOT NULL DEFAULT gen_random_uuid(),
    "tenantID"            uuid           NOT NULL,
    "datasourceID"        uuid           NOT NULL,
    "listenerTitle"       varchar(255)   NOT NULL,
    "listenerDescription" text,
    "listenerType"        varchar(50)    NOT NULL,
    "listenerConfig"      jsonb          NOT NULL DEFAULT '{}',
    "status"              varchar(20)    NOT NULL DEFAULT 'inactive',
    "lastError"           text,
    "lastEventAt"         timestamptz(6),
    "eventCount"          bigint         NOT NULL DEFAULT 0,
    "endpointPath"        varchar(255),
    "createdAt"           timestamptz(6) NOT NULL DEFAULT now(),
    "updatedAt"           timestamptz(6) NOT NULL DEFAULT now(),
    "creatorID"           uuid,
    "createdByApiKeyID"   uuid,
    "folderID"            uuid,
    CONSTRAINT "pkTblListeners" PRIMARY KEY ("listenerID"),
    CONSTRAINT "uq_tblListeners_tenantID_endpointPath" UNIQUE ("tenantID", "endpointPath"),
    CONSTRAINT "fkTblListenersTenantID" FOREIGN KEY ("tenantID")
        REFERENCES "tblTenants" ("tenantID") ON DELETE CASCADE ON UPDATE NO ACTION,
    CONSTRAINT "fkTblListenersDatasourceID" FOREIGN KEY ("datasourceID")
        REFERENCES "tblDatasources" ("datasourceID") ON DELETE CASCADE ON UPDATE NO ACTION,
    CONSTRAINT "fkTblListenersCreatorID" FOREIGN KEY ("creatorID")
        REFERENCES "tblUsers" ("userID") ON DELETE NO ACTION ON UPDATE NO ACTION,
    CONSTRAINT "fkTblListenersCreatedByApiKeyID" FOREIGN KEY ("createdByApiKeyID")
        REFERENCES "tblAPIKeys" ("apiKeyID") ON DELETE SET NULL ON UPDATE NO ACTION,
    CONSTRAINT "fkTblListenersFolderID" FOREIGN KEY ("folderID")
        REFERENCES "tblFolders" ("folderID") ON DELETE SET NULL ON UPDATE NO ACTION
);
CREATE INDEX "idx_tblListeners_tenantID" ON "tblListeners" ("tenantID");
CREATE INDEX "idx_tblListeners_datasourceID" ON "tblListeners" ("datasourceID");
CREATE INDEX "idx_tblListeners_status" ON "tblListeners" ("status");
CREATE INDEX "idx_tblListeners_creatorID" ON "tblListeners" ("creatorID");
CREATE INDEX "idx_tblListeners_createdByApiKeyID" ON "tblListeners" ("createdByApiKeyID");
CREATE INDEX "idx_tblListeners_folderID" ON "tblListeners" ("folderID");

CREATE TABLE "tblListenerActions" (
    "actionID"     uuid           NOT NULL DEFAULT gen_random_uuid(),
    "listenerID"   uuid           NOT NULL,
    "actionType"   varchar(30)    NOT NULL,
    "actionConfig" jsonb          NOT NULL DEFAULT '{}',
    "isEnabled"    boolean        NOT NULL DEFAULT true,
    "orderIndex"   integer        NOT NULL DEFAULT 0,
    "createdAt"    timestamptz(6) NOT NULL DEFAULT now(),
    CONSTRAINT "pkTblListenerActions" PRIMARY KEY ("actionID"),
    CONSTRAINT "fkTblListenerActionsListenerID" FOREIGN KEY ("listenerID")
        REFERENCES "tblListeners" ("listenerID") ON DELETE CASCADE ON UPDATE NO ACTION
);
CREATE INDEX "idx_tblListenerActions_listenerID" ON "tblListenerActions" ("listenerID");

CREATE TABLE "tblListenerEvents" (
    "eventID"    uuid           NOT NULL DEFAULT gen_random_uuid(),
    "listenerID" uuid           NOT NULL,
    "tenantID"   uuid           NOT NULL,
    "bufferName" varchar(255)   NOT NULL,
    "eventData"  jsonb          NOT NULL,
    "eventMeta"  jsonb,
    "receivedAt" timestamptz(6) NOT NULL DEFAULT now(),
    "seqNo"      bigserial      NOT NULL,
    CONSTRAINT "pkTblListenerEvents" PRIMARY KEY ("eventID"),
    CONSTRAINT "fkTblListenerEventsListenerID" FOREIGN KEY ("listenerID")
        REFERENCES "tblListeners" ("listenerID") ON DELETE CASCADE ON UPDATE NO ACTION
);
CREATE INDEX "idx_tblListenerEvents_tenantID" ON "tblListenerEvents" ("tenantID");
CREATE INDEX "idx_tblListenerEvents_receivedAt" ON "tblListenerEvents" ("receivedAt");
CREATE INDEX "idx_tblListenerEvents_buffer_seq" ON "tblListenerEvents" ("listenerID", "bufferName", "seqNo" DESC);

CREATE TABLE "tblCronJobs" (
    "cronJobID"          uuid           NOT NULL DEFAULT gen_random_uuid(),
    "cronJobTitle"       varchar        NOT NULL,
    "cronJobDescription" text,
    "cronJobSchedule"    varchar        NOT NULL,
    "isDisabled"         boolean        NOT NULL DEFAULT false,
    "nextRunAt"          timestamptz(6),
    "timeoutSeconds"     integer                 DEFAULT 300,
    "retryAttempts"      integer        NOT NULL DEFAULT 0,
    "retryDelaySeconds"  integer        NOT NULL DEFAULT 60,
    "createdAt"          timestamptz(6) NOT NULL DEFAULT now(),
    "updatedAt"          timestamptz(6) NOT NULL DEFAULT now(),
    "tenantID"           uuid           NOT NULL,
    "workflowID"         uuid,
    "workflowConfig"     jsonb,
    "creatorID"          uuid,
    "createdByApiKeyID"  uuid,
    "folderID"           uuid,
    CONSTRAINT "pkTblCronJobs" PRIMARY KEY ("cronJobID"),
    CONSTRAINT "fkTblCronJobsTenantID" FOREIGN KEY ("tenantID")
        REFERENCES "tblTenants" ("tenantID") ON DELETE NO ACTION ON UPDATE NO ACTION,
    CONSTRAINT "fkTblCronJobsWorkflowID" FOREIGN KEY ("workflowID")
        REFERENCES "tblWorkflows" ("workflowID") ON DELETE NO ACTION ON UPDATE NO ACTION,
    CONSTRAINT "fkTblCronJobsCreatorID" FOREIGN KEY ("creatorID")
        REFERENCES "tblUsers" ("userID") ON DELETE NO ACTION ON UPDATE NO ACTION,
    CONSTRAINT "fkTblCronJobsCreatedByApiKeyID" FOREIGN KEY ("createdByApiKeyID")
        REFERENCES "tblAPIKeys" ("apiKeyID") ON DELETE SET NULL ON UPDATE NO ACTION,
    CONSTRAINT "fkTblCronJobsFolderID" FOREIGN KEY ("folderID")
        REFERENCES "tblFolders" ("folderID") ON DELETE SET NULL ON UPDATE NO ACTION
);
CREATE INDEX "idx_tblCronJobs_tenantID" ON "tblCronJobs" ("tenantID");
CREATE INDEX "idx_tblCronJobs_workflowID" ON "tblCronJobs" ("workflowID");
CREATE INDEX "idx_tblCronJobs_creatorID" ON "tblCronJobs" ("creatorID");
CREATE INDEX "idx_tblCronJobs_createdByApiKeyID" ON "tblCronJobs" ("createdByApiKeyID");
CREATE INDEX "idx_tblCronJobs_folderID" ON "tblCronJobs" ("folderID");
-- added: the cron role claims due rows by nextRunAt.
CREATE INDEX "idx_tblCronJobs_due" ON "tblCronJobs" ("nextRunAt") WHERE NOT "isDisabled";

CREATE TABLE "tblCronJobHistory" (
    "cronJobHistoryID" uuid           NOT NULL DEFAULT gen_random_uuid(),
    "cronJobID"        uuid           NOT NULL,
    "status"           varchar(50)    NOT NULL,
    "scheduledAt"      timestamptz(6),
    "startTime"        timestamptz(6),
    "endTime"          timestamptz(6),
    "durationMs"       integer,
    "result"           text,
    "triggerType"      varchar(50)             DEFAULT 'SCHEDULED',
    "createdAt"        timestamptz(6) NOT NULL DEFAULT now(),
    "updatedAt"        timestamptz(6) NOT NULL DEFAULT now(),
    CONSTRAINT "pkTblCronJobHistory" PRIMARY KEY ("cronJobHistoryID"),
    CONSTRAINT "fkTblCronJobHistoryCronjobID" FOREIGN KEY ("cronJobID")
        REFERENCES "tblCronJobs" ("cronJobID") ON DELETE NO ACTION ON UPDATE NO ACTION
);
CREATE INDEX "idx_tblCronJobHistory_cronJobID_scheduledAt" ON "tblCronJobHistory" ("cronJobID", "scheduledAt" DESC); -- added: FK index + history listing

-- Defined here (upstream has it in docs only): everything that failed for good, kept until an
-- operator replays or discards it. Nothing is ever dropped silently.
CREATE TABLE "tblEventDLQ" (
    "dlqID"       uuid           NOT NULL DEFAULT gen_random_uuid(),
    "tenantID"    uuid,
    "source"      varchar(50)    NOT NULL, -- 'command', 'listener', 'cron', …
    "sourceID"    uuid,                    -- the listener or cron job the event came from
    "payload"     jsonb          NOT NULL,
    "error"       text           NOT NULL,
    "retryCount"  integer        NOT NULL DEFAULT 0,
    "maxRetries"  integer        NOT NULL DEFAULT 5,
    "nextRetryAt" timestamptz(6),
    "status"      varchar(20)    NOT NULL DEFAULT 'PENDING',
    "createdAt"   timestamptz(6) NOT NULL DEFAULT now(),
    "updatedAt"   timestamptz(6) NOT NULL DEFAULT now(),
    "resolvedAt"  timestamptz(6),
    CONSTRAINT "pkTblEventDLQ" PRIMARY KEY ("dlqID"),
    CONSTRAINT "fkTblEventDLQTenantID" FOREIGN KEY ("tenantID")
        REFERENCES "tblTenants" ("tenantID") ON DELETE CASCADE ON UPDATE NO ACTION,
    CONSTRAINT "ck_tblEventDLQ_status"
        CHECK ("status" IN ('PENDING', 'RETRYING', 'PARKED', 'REPLAYED', 'DISCARDED')),
    CONSTRAINT "ck_tblEventDLQ_retryCount" CHECK ("retryCount" >= 0)
);
CREATE INDEX "idx_tblEventDLQ_tenantID_status" ON "tblEventDLQ" ("tenantID", "status");
CREATE INDEX "idx_tblEventDLQ_due" ON "tblEventDLQ" ("nextRetryAt") WHERE "status" IN ('PENDING', 'RETRYING');
