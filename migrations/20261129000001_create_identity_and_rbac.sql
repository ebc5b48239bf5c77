-- Identity, tenancy and RBAC tables of upstream Jet Admin (reference/jetadmin.md §2.1–2.3),
-- with upstream's exact table, column and constraint names so the database stays compatible.
-- Every constraint is named explicitly and every foreign-key column is indexed (checked by
-- tests/tests/schema.rs); indexes that upstream lacks are marked "added:".

CREATE EXTENSION IF NOT EXISTS pgcrypto;

CREATE TABLE "tblUsers" (
    "userID"        uuid           NOT NULL DEFAULT gen_random_uuid(),
    "firebaseID"    varchar(128)   NOT NULL,
    "phoneNumber"   varchar,
    "firstName"     varchar,
    "lastName"      varchar,
    "address1"      varchar,
    "address2"      varchar,
    "email"         varchar        NOT NULL,
    "isDisabled"    boolean                 DEFAULT false,
    "createdAt"     timestamptz(6)          DEFAULT now(),
    "updatedAt"     timestamptz(6)          DEFAULT now(),
    "disabledAt"    timestamptz(6),
    "disableReason" varchar,
    "lastSeen"      timestamptz(6),
    CONSTRAINT "pkTblUsers" PRIMARY KEY ("userID")
);
-- added: JWT subjects resolve to users by firebaseID on every request; a subject must name
-- exactly one user, so it is unique (upstream relied on Firebase for that).
CREATE UNIQUE INDEX "uq_tblUsers_firebaseID" ON "tblUsers" ("firebaseID");
-- added: adding a member by email looks the user up case-insensitively.
CREATE INDEX "idx_tblUsers_email" ON "tblUsers" (lower("email"));

CREATE TABLE "tblTenants" (
    "tenantID"          uuid           NOT NULL DEFAULT gen_random_uuid(),
    "creatorID"         uuid,
    "isDisabled"        boolean                 DEFAULT false,
    "createdAt"         timestamptz(6) NOT NULL DEFAULT now(),
    "updatedAt"         timestamptz(6)          DEFAULT now(),
    "disabledAt"        timestamptz(6),
    "disableReason"     varchar,
    "tenantLogoURL"     varchar,
    "tenantTitle"       varchar        NOT NULL,
    "createdByApiKeyID" uuid,
    CONSTRAINT "pkTblTenants" PRIMARY KEY ("tenantID"),
    CONSTRAINT "fktblTenantstblUsersCreatorID" FOREIGN KEY ("creatorID")
        REFERENCES "tblUsers" ("userID") ON DELETE SET NULL ON UPDATE NO ACTION
);
CREATE INDEX "idx_tblTenants_createdByApiKeyID" ON "tblTenants" ("createdByApiKeyID");
CREATE INDEX "idx_tblTenants_creatorID" ON "tblTenants" ("creatorID"); -- added: FK index

CREATE TABLE "tblUsersTenantsRelationship" (
    "tenantID"  uuid           NOT NULL,
    "userID"    uuid           NOT NULL,
    "createdAt" timestamptz(6) NOT NULL DEFAULT now(),
    "updatedAt" timestamptz(6) NOT NULL DEFAULT now(),
    "role"      varchar        NOT NULL DEFAULT 'MEMBER',
    -- Upstream also declares UNIQUE "uniquetblUsersTenantsRelationship" on the same columns;
    -- PostgreSQL folds a unique constraint identical to the primary key into it, so the
    -- primary key is the one that names duplicate memberships.
    CONSTRAINT "pktblUsersTenantsRelationship" PRIMARY KEY ("tenantID", "userID"),
    CONSTRAINT "fkTenantIDTenantID" FOREIGN KEY ("tenantID")
        REFERENCES "tblTenants" ("tenantID") ON DELETE NO ACTION ON UPDATE NO ACTION,
    CONSTRAINT "fkUserIDUserID" FOREIGN KEY ("userID")
        REFERENCES "tblUsers" ("userID") ON DELETE NO ACTION ON UPDATE NO ACTION,
    -- added: membership role strings are a closed set (upstream constants.ROLES.PRIMARY).
    CONSTRAINT "ck_tblUsersTenantsRelationship_role" CHECK ("role" IN ('ADMIN', 'MEMBER'))
);
CREATE INDEX "idx_tblUsersTenantsRelationship_userID" ON "tblUsersTenantsRelationship" ("userID"); -- added: FK index

CREATE TABLE "tblUserTenantConfigMap" (
    "userID"   uuid  NOT NULL,
    "tenantID" uuid  NOT NULL,
    "config"   jsonb,
    CONSTRAINT "pkTblUserTenantConfigMap" PRIMARY KEY ("userID", "tenantID"),
    CONSTRAINT "fkUserIDUserID" FOREIGN KEY ("userID")
        REFERENCES "tblUsers" ("userID") ON DELETE NO ACTION ON UPDATE NO ACTION,
    CONSTRAINT "fkTenantIDTenantID" FOREIGN KEY ("tenantID")
        REFERENCES "tblTenants" ("tenantID") ON DELETE NO ACTION ON UPDATE NO ACTION
);
CREATE INDEX "idx_tblUserTenantConfigMap_tenantID" ON "tblUserTenantConfigMap" ("tenantID"); -- added: FK index

CREATE TABLE "tblRoles" (
    "roleID"          uuid    NOT NULL DEFAULT gen_random_uuid(),
    "roleTitle"       varchar NOT NULL,
    "roleDescription" varchar,
    "tenantID"        uuid,
    CONSTRAINT "pkTblRoles" PRIMARY KEY ("roleID"),
    CONSTRAINT "fktblRolesTenantIDTblTenantsTenantID" FOREIGN KEY ("tenantID")
        REFERENCES "tblTenants" ("tenantID") ON DELETE NO ACTION ON UPDATE NO ACTION
);
CREATE INDEX "idx_tblRoles_tenantID" ON "tblRoles" ("tenantID"); -- added: FK index

CREATE TABLE "tblPermissions" (
    "permissionID"          uuid    NOT NULL DEFAULT gen_random_uuid(),
    "permissionTitle"       varchar NOT NULL,
    "permissionDescription" varchar,
    CONSTRAINT "pkTblPermissions" PRIMARY KEY ("permissionID")
);
-- added: the catalogue is looked up by title, and an asset permission created on the fly must
-- not be duplicated by two concurrent role saves.
CREATE UNIQUE INDEX "uq_tblPermissions_permissionTitle" ON "tblPermissions" ("permissionTitle");

CREATE TABLE "tblRolePermissionMappings" (
    "roleID"       uuid NOT NULL,
    "permissionID" uuid NOT NULL,
    CONSTRAINT "pkTblRolePermissionMappings" PRIMARY KEY ("roleID", "permissionID"),
    CONSTRAINT "fktblRolePermissionMappingsRole" FOREIGN KEY ("roleID")
        REFERENCES "tblRoles" ("roleID") ON DELETE NO ACTION ON UPDATE NO ACTION,
    CONSTRAINT "fktblRolePermissionMappingsPermission" FOREIGN KEY ("permissionID")
        REFERENCES "tblPermissions" ("permissionID") ON DELETE NO ACTION ON UPDATE NO ACTION
);
CREATE INDEX "idx_tblRolePermissionMappings_permissionID" ON "tblRolePermissionMappings" ("permissionID"); -- added: FK index

CREATE TABLE "tblUserTenantRoleMappings" (
    "userID"   uuid NOT NULL,
    "tenantID" uuid NOT NULL,
    "roleID"   uuid NOT NULL,
    CONSTRAINT "pkTblUserTenantRoleMappings" PRIMARY KEY ("userID", "tenantID", "roleID"),
    CONSTRAINT "fkUserTenantRoleRole" FOREIGN KEY ("roleID")
        REFERENCES "tblRoles" ("roleID") ON DELETE NO ACTION ON UPDATE NO ACTION,
    CONSTRAINT "fkUserTenantRoleUserTenant" FOREIGN KEY ("tenantID", "userID")
        REFERENCES "tblUsersTenantsRelationship" ("tenantID", "userID") ON DELETE CASCADE ON UPDATE NO ACTION
);
CREATE INDEX "idx_tblUserTenantRoleMappings_roleID" ON "tblUserTenantRoleMappings" ("roleID"); -- added: FK index
CREATE INDEX "idx_tblUserTenantRoleMappings_tenantID_userID" ON "tblUserTenantRoleMappings" ("tenantID", "userID"); -- added: FK index

CREATE TABLE "tblAPIKeys" (
    "apiKeyID"          uuid           NOT NULL DEFAULT gen_random_uuid(),
    "tenantID"          uuid           NOT NULL,
    "apiKeyHash"        varchar        NOT NULL,
    "apiKeyTitle"       varchar        NOT NULL,
    "createdAt"         timestamptz(6) NOT NULL DEFAULT now(),
    "isDisabled"        boolean        NOT NULL,
    "creatorID"         uuid,
    "createdByApiKeyID" uuid,
    "apiKeyPrefix"      varchar(8),
    CONSTRAINT "pkTblAPIKeys" PRIMARY KEY ("apiKeyID"),
    CONSTRAINT "fkTblAPIKeysTenantID" FOREIGN KEY ("tenantID")
        REFERENCES "tblTenants" ("tenantID") ON DELETE NO ACTION ON UPDATE NO ACTION,
    CONSTRAINT "fkTblAPIKeysCreatorID" FOREIGN KEY ("creatorID")
        REFERENCES "tblUsers" ("userID") ON DELETE SET NULL ON UPDATE NO ACTION,
    CONSTRAINT "fkTblAPIKeysCreatedByApiKeyID" FOREIGN KEY ("createdByApiKeyID")
        REFERENCES "tblAPIKeys" ("apiKeyID") ON DELETE SET NULL ON UPDATE NO ACTION
);
CREATE INDEX "idx_tblAPIKeys_createdByApiKeyID" ON "tblAPIKeys" ("createdByApiKeyID");
CREATE INDEX "idx_tblAPIKeys_apiKeyPrefix" ON "tblAPIKeys" ("apiKeyPrefix");
CREATE INDEX "idx_tblAPIKeys_tenantID" ON "tblAPIKeys" ("tenantID");   -- added: FK index
CREATE INDEX "idx_tblAPIKeys_creatorID" ON "tblAPIKeys" ("creatorID"); -- added: FK index

ALTER TABLE "tblTenants" ADD CONSTRAINT "fkTblTenantsCreatedByApiKeyID" FOREIGN KEY ("createdByApiKeyID")
    REFERENCES "tblAPIKeys" ("apiKeyID") ON DELETE SET NULL ON UPDATE NO ACTION;

CREATE TABLE "tblAPIKeyRoleMappings" (
    "apiKeyID" uuid NOT NULL,
    "roleID"   uuid NOT NULL,
    CONSTRAINT "pkTblAPIKeyRoleMappings" PRIMARY KEY ("apiKeyID", "roleID"),
    CONSTRAINT "fkTblAPIKeyRoleMappingsApiKeyID" FOREIGN KEY ("apiKeyID")
        REFERENCES "tblAPIKeys" ("apiKeyID") ON DELETE CASCADE ON UPDATE NO ACTION,
    CONSTRAINT "fkTblAPIKeyRoleMappingsRoleID" FOREIGN KEY ("roleID")
        REFERENCES "tblRoles" ("roleID") ON DELETE NO ACTION ON UPDATE NO ACTION
);
CREATE INDEX "idx_tblAPIKeyRoleMappings_roleID" ON "tblAPIKeyRoleMappings" ("roleID"); -- added: FK index

CREATE TABLE "tblAuditLogs" (
    "auditLogID" uuid           NOT NULL DEFAULT gen_random_uuid(),
    "userID"     uuid,
    "tenantID"   uuid,
    "type"       varchar        NOT NULL,
    "subType"    varchar,
    "success"    boolean        NOT NULL,
    "createdAt"  timestamptz(6) NOT NULL DEFAULT now(),
    "metadata"   jsonb,
    "error"      jsonb,
    "apiKeyID"   uuid,
    CONSTRAINT "pkTblAuditLogs" PRIMARY KEY ("auditLogID"),
    CONSTRAINT "fkTblAuditLogsUserID" FOREIGN KEY ("userID")
        REFERENCES "tblUsers" ("userID") ON DELETE SET NULL ON UPDATE NO ACTION,
    CONSTRAINT "fkTblAuditLogsApiKeyID" FOREIGN KEY ("apiKeyID")
        REFERENCES "tblAPIKeys" ("apiKeyID") ON DELETE SET NULL ON UPDATE NO ACTION
);
CREATE INDEX "idx_tblAuditLogs_userID" ON "tblAuditLogs" ("userID");
CREATE INDEX "idx_tblAuditLogs_apiKeyID" ON "tblAuditLogs" ("apiKeyID");
-- added: the audit listing is per tenant, newest first.
CREATE INDEX "idx_tblAuditLogs_tenantID_createdAt" ON "tblAuditLogs" ("tenantID", "createdAt" DESC);

-- added (upstream 050c1d67): folders, so every asset's folderID is a real foreign key.
CREATE TABLE "tblFolders" (
    "folderID"       uuid           NOT NULL DEFAULT gen_random_uuid(),
    "folderTitle"    varchar(255)   NOT NULL,
    "tenantID"       uuid           NOT NULL,
    "entityType"     varchar(50)    NOT NULL,
    "parentFolderID" uuid,
    "createdAt"      timestamptz(6) NOT NULL DEFAULT now(),
    "updatedAt"      timestamptz(6) NOT NULL DEFAULT now(),
    "creatorID"      uuid,
    CONSTRAINT "pkTblFolders" PRIMARY KEY ("folderID"),
    CONSTRAINT "fkTblFoldersTenantID" FOREIGN KEY ("tenantID")
        REFERENCES "tblTenants" ("tenantID") ON DELETE CASCADE ON UPDATE NO ACTION,
    CONSTRAINT "fkTblFoldersParentFolderID" FOREIGN KEY ("parentFolderID")
        REFERENCES "tblFolders" ("folderID") ON DELETE CASCADE ON UPDATE NO ACTION,
    CONSTRAINT "fkTblFoldersCreatorID" FOREIGN KEY ("creatorID")
        REFERENCES "tblUsers" ("userID") ON DELETE SET NULL ON UPDATE NO ACTION
);
CREATE INDEX "idx_tblFolders_tenantID_entityType" ON "tblFolders" ("tenantID", "entityType");
CREATE INDEX "idx_tblFolders_parentFolderID" ON "tblFolders" ("parentFolderID");
CREATE INDEX "idx_tblFolders_creatorID" ON "tblFolders" ("creatorID"); -- added: FK index
