//! Users (`tblUsers`) and tenant membership (`tblUsersTenantsRelationship`,
//! `tblUserTenantRoleMappings`).
//!
//! Users are identities of the external identity provider: the JWT subject is their
//! `firebaseID`. Adding a member links an existing user (by `firebaseID`, else by email) or
//! creates the user row when the identity provider's subject is given.

use crate::ids::{RoleId, TenantId, UserId};
use crate::page::{Page, PageRequest};
use crate::{Error, Result};
use chrono::{DateTime, Utc};
use sqlx::{AssertSqlSafe, PgConnection, PgExecutor, PgPool};

/// A row of `tblUsers` (the fields clients see).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct User {
    #[sqlx(rename = "userID")]
    pub user_id: UserId,
    #[sqlx(rename = "firebaseID")]
    pub firebase_id: String,
    pub email: String,
    #[sqlx(rename = "firstName")]
    pub first_name: Option<String>,
    #[sqlx(rename = "lastName")]
    pub last_name: Option<String>,
    #[sqlx(rename = "phoneNumber")]
    pub phone_number: Option<String>,
    #[sqlx(rename = "isDisabled")]
    pub is_disabled: Option<bool>,
    #[sqlx(rename = "createdAt")]
    pub created_at: Option<DateTime<Utc>>,
}

/// A user's membership in one tenant.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Member {
    #[sqlx(flatten)]
    pub user: User,
    /// `ADMIN` or `MEMBER`.
    pub role: String,
    #[sqlx(rename = "joinedAt")]
    pub joined_at: DateTime<Utc>,
    #[sqlx(rename = "roleIDs")]
    pub role_ids: Vec<RoleId>,
}

/// Membership role strings (upstream `constants.ROLES.PRIMARY`).
pub const MEMBERSHIP_ROLES: [&str; 2] = ["ADMIN", "MEMBER"];

/// Who to add to a tenant.
#[derive(Debug, Clone)]
pub struct NewMember {
    pub email: String,
    pub firebase_id: Option<String>,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub role: String,
    pub role_ids: Vec<RoleId>,
}

const USER_COLUMNS: &str = r#"u."userID", u."firebaseID", u."email", u."firstName", u."lastName",
    u."phoneNumber", u."isDisabled", u."createdAt""#;

fn member_select() -> String {
    format!(
        r#"SELECT {USER_COLUMNS}, m."role", m."createdAt" AS "joinedAt",
             COALESCE((SELECT array_agg(r."roleID" ORDER BY r."roleID") FROM "tblUserTenantRoleMappings" r
                       WHERE r."tenantID" = m."tenantID" AND r."userID" = m."userID"), '{{}}') AS "roleIDs"
           FROM "tblUsersTenantsRelationship" m JOIN "tblUsers" u ON u."userID" = m."userID""#
    )
}

/// A user by id.
pub async fn get(pool: &PgPool, user_id: UserId) -> Result<User> {
    sqlx::query_as(AssertSqlSafe(format!(
        r#"SELECT {USER_COLUMNS} FROM "tblUsers" u WHERE u."userID" = $1"#
    )))
    .bind(user_id)
    .fetch_optional(pool)
    .await?
    .ok_or(Error::NotFound("user"))
}

/// Creates a user row (used by `jet bootstrap` and when adding an unknown member).
pub async fn insert(
    conn: &mut PgConnection,
    firebase_id: &str,
    email: &str,
    first_name: Option<&str>,
    last_name: Option<&str>,
) -> Result<User> {
    Ok(sqlx::query_as(AssertSqlSafe(format!(
        r#"INSERT INTO "tblUsers" AS u ("firebaseID", "email", "firstName", "lastName")
           VALUES ($1, $2, $3, $4) RETURNING {USER_COLUMNS}"#
    )))
    .bind(firebase_id)
    .bind(email)
    .bind(first_name)
    .bind(last_name)
    .fetch_one(conn)
    .await?)
}

/// The tenant's members, oldest membership first.
pub async fn list_members(
    pool: &PgPool,
    tenant_id: TenantId,
    page: PageRequest,
) -> Result<Page<Member>> {
    let total: i64 = sqlx::query_scalar(
        r#"SELECT count(*) FROM "tblUsersTenantsRelationship" WHERE "tenantID" = $1"#,
    )
    .bind(tenant_id)
    .fetch_one(pool)
    .await?;
    let items = sqlx::query_as(AssertSqlSafe(format!(
        r#"{} WHERE m."tenantID" = $1 ORDER BY m."createdAt", u."userID" LIMIT $2 OFFSET $3"#,
        member_select()
    )))
    .bind(tenant_id)
    .bind(page.limit())
    .bind(page.offset())
    .fetch_all(pool)
    .await?;
    Ok(Page {
        items,
        total_count: total,
        request: page,
    })
}

/// One member; `NotFound` when the user is not in this tenant.
pub async fn get_member(
    conn: impl sqlx::PgExecutor<'_>,
    tenant_id: TenantId,
    user_id: UserId,
) -> Result<Member> {
    sqlx::query_as(AssertSqlSafe(format!(
        r#"{} WHERE m."tenantID" = $1 AND m."userID" = $2"#,
        member_select()
    )))
    .bind(tenant_id)
    .bind(user_id)
    .fetch_optional(conn)
    .await?
    .ok_or(Error::NotFound("member"))
}

/// Adds a member: links the user found by `firebaseID` or email, or creates it.
/// `Conflict` when the user is already a member.
pub async fn add_member(
    conn: &mut PgConnection,
    tenant_id: TenantId,
    new: &NewMember,
) -> Result<Member> {
    let existing: Option<UserId> = sqlx::query_scalar(
        r#"SELECT "userID" FROM "tblUsers"
           WHERE ($1::varchar IS NOT NULL AND "firebaseID" = $1)
              OR ($1::varchar IS NULL AND lower("email") = lower($2))
           ORDER BY "createdAt" LIMIT 1"#,
    )
    .bind(new.firebase_id.as_deref())
    .bind(&new.email)
    .fetch_optional(&mut *conn)
    .await?;
    let user_id = match (existing, new.firebase_id.as_deref()) {
        (Some(id), _) => id,
        (None, Some(firebase_id)) => {
            insert(
                conn,
                firebase_id,
                &new.email,
                new.first_name.as_deref(),
                new.last_name.as_deref(),
            )
            .await?
            .user_id
        }
        (None, None) => {
            return Err(Error::Invalid(format!(
                "no user with email {}; give firebaseID (the identity provider's subject) to create one",
                new.email
            )));
        }
    };
    sqlx::query(
        r#"INSERT INTO "tblUsersTenantsRelationship" ("tenantID", "userID", "role") VALUES ($1, $2, $3)"#,
    )
    .bind(tenant_id)
    .bind(user_id)
    .bind(&new.role)
    .execute(&mut *conn)
    .await?;
    sqlx::query(
        r#"INSERT INTO "tblUserTenantConfigMap" ("userID", "tenantID", "config") VALUES ($1, $2, '{}')
           ON CONFLICT DO NOTHING"#,
    )
    .bind(user_id)
    .bind(tenant_id)
    .execute(&mut *conn)
    .await?;
    set_roles(conn, tenant_id, user_id, &new.role_ids).await?;
    get_member(&mut *conn, tenant_id, user_id).await
}

async fn set_roles(
    conn: &mut PgConnection,
    tenant_id: TenantId,
    user_id: UserId,
    role_ids: &[RoleId],
) -> Result<()> {
    sqlx::query(
        r#"DELETE FROM "tblUserTenantRoleMappings" WHERE "tenantID" = $1 AND "userID" = $2"#,
    )
    .bind(tenant_id)
    .bind(user_id)
    .execute(&mut *conn)
    .await?;
    sqlx::query(
        r#"INSERT INTO "tblUserTenantRoleMappings" ("userID", "tenantID", "roleID")
           SELECT $1, $2, r FROM unnest($3::uuid[]) AS r ON CONFLICT DO NOTHING"#,
    )
    .bind(user_id)
    .bind(tenant_id)
    .bind(role_ids)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Replaces a member's roles and, when given, the membership role.
pub async fn set_member_roles(
    conn: &mut PgConnection,
    tenant_id: TenantId,
    user_id: UserId,
    membership_role: Option<&str>,
    role_ids: &[RoleId],
) -> Result<Member> {
    let before = get_member(&mut *conn, tenant_id, user_id).await?;
    if let Some(role) = membership_role {
        if before.role == "ADMIN" && role != "ADMIN" {
            ensure_another_admin(conn, tenant_id, user_id).await?;
        }
        sqlx::query(
            r#"UPDATE "tblUsersTenantsRelationship" SET "role" = $3, "updatedAt" = now()
               WHERE "tenantID" = $1 AND "userID" = $2"#,
        )
        .bind(tenant_id)
        .bind(user_id)
        .bind(role)
        .execute(&mut *conn)
        .await?;
    }
    set_roles(conn, tenant_id, user_id, role_ids).await?;
    get_member(&mut *conn, tenant_id, user_id).await
}

/// Removes a member (role mappings go by cascade); the last `ADMIN` cannot be removed.
pub async fn remove_member(
    conn: &mut PgConnection,
    tenant_id: TenantId,
    user_id: UserId,
) -> Result<()> {
    let member = get_member(&mut *conn, tenant_id, user_id).await?;
    if member.role == "ADMIN" {
        ensure_another_admin(conn, tenant_id, user_id).await?;
    }
    sqlx::query(r#"DELETE FROM "tblUserTenantConfigMap" WHERE "tenantID" = $1 AND "userID" = $2"#)
        .bind(tenant_id)
        .bind(user_id)
        .execute(&mut *conn)
        .await?;
    sqlx::query(
        r#"DELETE FROM "tblUsersTenantsRelationship" WHERE "tenantID" = $1 AND "userID" = $2"#,
    )
    .bind(tenant_id)
    .bind(user_id)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// A tenant must keep at least one `ADMIN` member; otherwise nobody could manage it.
async fn ensure_another_admin(
    conn: &mut PgConnection,
    tenant_id: TenantId,
    user_id: UserId,
) -> Result<()> {
    // Lock every admin row, this user's included, so that of two concurrent demotions the
    // second re-reads the first's result and sees it is now the last admin.
    let admins: Vec<UserId> = sqlx::query_scalar(
        r#"SELECT "userID" FROM "tblUsersTenantsRelationship"
           WHERE "tenantID" = $1 AND "role" = 'ADMIN' FOR UPDATE"#,
    )
    .bind(tenant_id)
    .fetch_all(&mut *conn)
    .await?;
    if !admins.iter().any(|id| *id != user_id) {
        return Err(Error::Conflict {
            constraint: "last_admin".into(),
        });
    }
    Ok(())
}

/// The membership role (`ADMIN`/`MEMBER`) of a user in a tenant, if a member.
pub async fn membership_role(
    conn: impl PgExecutor<'_>,
    tenant_id: TenantId,
    user_id: UserId,
) -> Result<Option<String>> {
    Ok(sqlx::query_scalar(
        r#"SELECT "role" FROM "tblUsersTenantsRelationship" WHERE "tenantID" = $1 AND "userID" = $2"#,
    )
    .bind(tenant_id)
    .bind(user_id)
    .fetch_optional(conn)
    .await?)
}
