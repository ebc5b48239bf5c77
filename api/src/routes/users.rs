//! `/api/v1/tenants/{tenantID}/users`: members of a tenant, their membership role and roles.

use super::enums::{MembershipRole, UnknownStored};
use super::{ApiTags, Created, Deleted, Page, authorize, page_request};
use crate::error::{ApiError, ApiResult};
use crate::security::JetAuth;
use crate::state::AppState;
use chrono::{DateTime, Utc};
use jet_shared::ids::{RoleId, TenantId, UserId};
use jet_shared::rbac::Grants;
use jet_shared::rbac::permissions::{USER_CREATE, USER_DELETE, USER_LIST, USER_READ, USER_UPDATE};
use jet_shared::{role, user};
use poem_openapi::param::{Path, Query};
use poem_openapi::payload::Json;
use poem_openapi::{Object, OpenApi};
use sqlx::PgConnection;
use uuid::Uuid;

/// A member of a tenant.
#[derive(Debug, Object)]
#[oai(rename_all = "camelCase", skip_serializing_if_is_none)]
pub struct MemberOut {
    #[oai(rename = "userID")]
    pub user_id: Uuid,
    #[oai(rename = "firebaseID")]
    pub firebase_id: String,
    pub email: String,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub phone_number: Option<String>,
    pub is_disabled: bool,
    pub role: MembershipRole,
    /// The tenant or global roles assigned to the member.
    #[oai(rename = "roleIDs")]
    pub role_ids: Vec<Uuid>,
    pub joined_at: DateTime<Utc>,
}

impl TryFrom<user::Member> for MemberOut {
    type Error = UnknownStored;

    fn try_from(m: user::Member) -> Result<Self, UnknownStored> {
        Ok(Self {
            user_id: m.user.user_id.0,
            firebase_id: m.user.firebase_id,
            email: m.user.email,
            first_name: m.user.first_name,
            last_name: m.user.last_name,
            phone_number: m.user.phone_number,
            is_disabled: m.user.is_disabled.unwrap_or(false),
            role: MembershipRole::from_stored(&m.role)?,
            role_ids: m.role_ids.into_iter().map(|r| r.0).collect(),
            joined_at: m.joined_at,
        })
    }
}

/// Body of `addTenantUser`. `role` defaults to `MEMBER`.
#[derive(Debug, Object)]
#[oai(rename_all = "camelCase", skip_serializing_if_is_none)]
pub struct AddMember {
    /// Email of the user; an existing user with this email is linked when no firebaseID is given.
    #[oai(validator(min_length = 3, max_length = 320))]
    pub email: String,
    /// The identity provider's subject (the JWT `sub`). Required to create a new user.
    #[oai(rename = "firebaseID", validator(min_length = 1, max_length = 128))]
    pub firebase_id: Option<String>,
    #[oai(validator(max_length = 255))]
    pub first_name: Option<String>,
    #[oai(validator(max_length = 255))]
    pub last_name: Option<String>,
    pub role: Option<MembershipRole>,
    #[oai(rename = "roleIDs", default)]
    pub role_ids: Vec<Uuid>,
}

/// Body of `setTenantUserRoles`. `role`, when given, changes the membership role.
#[derive(Debug, Object)]
#[oai(rename_all = "camelCase", skip_serializing_if_is_none)]
pub struct SetMemberRoles {
    /// The complete new set of roles.
    #[oai(rename = "roleIDs")]
    pub role_ids: Vec<Uuid>,
    pub role: Option<MembershipRole>,
}

/// Member routes.
pub struct UsersApi {
    pub state: AppState,
}

#[OpenApi(prefix_path = "/api/v1/tenants", tag = "ApiTags::Users")]
impl UsersApi {
    /// List the members of a tenant
    #[oai(
        path = "/:tenantID/users",
        method = "get",
        operation_id = "listTenantUsers"
    )]
    async fn list(
        &self,
        auth: JetAuth,
        #[oai(name = "tenantID")] tenant_id: Path<Uuid>,
        #[oai(validator(minimum(value = "1")))] page: Query<Option<i64>>,
        #[oai(
            name = "pageSize",
            validator(minimum(value = "1"), maximum(value = "200"))
        )]
        page_size: Query<Option<i64>>,
    ) -> ApiResult<Json<Page<MemberOut>>> {
        authorize(&self.state, &auth, tenant_id.0, USER_LIST, None).await?;
        let request = page_request(page.0, page_size.0)?;
        let page = user::list_members(&self.state.pool, TenantId(tenant_id.0), request).await?;
        Ok(Json(Page::try_from_domain(page, MemberOut::try_from)?))
    }

    /// Add a member to a tenant
    ///
    /// Links the user with this firebaseID (or, without one, this email), creating the user
    /// when a firebaseID is given and no user has it. Granting `ADMIN` or roles requires the
    /// caller to hold those permissions itself (403 `permission_escalation`).
    #[oai(
        path = "/:tenantID/users",
        method = "post",
        operation_id = "addTenantUser"
    )]
    async fn add(
        &self,
        auth: JetAuth,
        #[oai(name = "tenantID")] tenant_id: Path<Uuid>,
        body: Json<AddMember>,
    ) -> ApiResult<Created<MemberOut>> {
        let grants = authorize(&self.state, &auth, tenant_id.0, USER_CREATE, None).await?;
        let body = body.0;
        let email = body.email.trim().to_owned();
        if !email.contains('@') {
            return Err(ApiError::unprocessable("email must be an email address"));
        }
        let membership = body.role.unwrap_or(MembershipRole::Member);
        let tenant = TenantId(tenant_id.0);
        let role_ids: Vec<RoleId> = body.role_ids.into_iter().map(RoleId).collect();
        let mut tx = self.state.pool.begin().await?;
        check_assignable(&mut tx, &grants, tenant, membership, &role_ids).await?;
        let member = user::add_member(
            &mut tx,
            tenant,
            &user::NewMember {
                email,
                firebase_id: body.firebase_id,
                first_name: body.first_name,
                last_name: body.last_name,
                role: membership.as_str().to_owned(),
                role_ids,
            },
        )
        .await?;
        tx.commit().await?;
        Ok(Created::Created(Json(member.try_into()?)))
    }

    /// Get one member
    #[oai(
        path = "/:tenantID/users/:tenantUserID",
        method = "get",
        operation_id = "getTenantUser"
    )]
    async fn get(
        &self,
        auth: JetAuth,
        #[oai(name = "tenantID")] tenant_id: Path<Uuid>,
        #[oai(name = "tenantUserID")] user_id: Path<Uuid>,
    ) -> ApiResult<Json<MemberOut>> {
        authorize(&self.state, &auth, tenant_id.0, USER_READ, Some(user_id.0)).await?;
        let member =
            user::get_member(&self.state.pool, TenantId(tenant_id.0), UserId(user_id.0)).await?;
        Ok(Json(member.try_into()?))
    }

    /// Remove a member from a tenant
    ///
    /// The user row stays; only the membership, its roles and UI config go. Only an `ADMIN`
    /// removes an `ADMIN` (403 `admin_required`), and the last `ADMIN` stays (409
    /// `last_admin`).
    #[oai(
        path = "/:tenantID/users/:tenantUserID",
        method = "delete",
        operation_id = "removeTenantUser"
    )]
    async fn remove(
        &self,
        auth: JetAuth,
        #[oai(name = "tenantID")] tenant_id: Path<Uuid>,
        #[oai(name = "tenantUserID")] user_id: Path<Uuid>,
    ) -> ApiResult<Deleted> {
        let grants = authorize(
            &self.state,
            &auth,
            tenant_id.0,
            USER_DELETE,
            Some(user_id.0),
        )
        .await?;
        let (tenant, target) = (TenantId(tenant_id.0), UserId(user_id.0));
        let mut tx = self.state.pool.begin().await?;
        check_admin_target(&mut tx, &grants, tenant, target).await?;
        user::remove_member(&mut tx, tenant, target).await?;
        tx.commit().await?;
        Ok(Deleted::Deleted)
    }

    /// Set a member's roles
    ///
    /// Replaces the member's roles and, when `role` is given, the membership role. The caller
    /// must hold every permission it grants, and only an `ADMIN` changes an `ADMIN`'s
    /// membership (403 `admin_required`).
    #[oai(
        path = "/:tenantID/users/:tenantUserID/roles",
        method = "patch",
        operation_id = "setTenantUserRoles"
    )]
    async fn set_roles(
        &self,
        auth: JetAuth,
        #[oai(name = "tenantID")] tenant_id: Path<Uuid>,
        #[oai(name = "tenantUserID")] user_id: Path<Uuid>,
        body: Json<SetMemberRoles>,
    ) -> ApiResult<Json<MemberOut>> {
        let grants = authorize(
            &self.state,
            &auth,
            tenant_id.0,
            USER_UPDATE,
            Some(user_id.0),
        )
        .await?;
        let tenant = TenantId(tenant_id.0);
        let role_ids: Vec<RoleId> = body.role_ids.iter().copied().map(RoleId).collect();
        let mut tx = self.state.pool.begin().await?;
        check_admin_target(&mut tx, &grants, tenant, UserId(user_id.0)).await?;
        let membership = body.role.unwrap_or(MembershipRole::Member);
        check_assignable(&mut tx, &grants, tenant, membership, &role_ids).await?;
        let member = user::set_member_roles(
            &mut tx,
            tenant,
            UserId(user_id.0),
            body.role.map(MembershipRole::as_str),
            &role_ids,
        )
        .await?;
        tx.commit().await?;
        Ok(Json(member.try_into()?))
    }
}

/// An `ADMIN`'s membership (its role, its roles, whether it stays) is changed only by an
/// `ADMIN`: otherwise a member trusted with `user:update`/`user:delete` could demote or
/// remove the people who manage the tenant. A target that is not a member is left for the
/// domain call to answer 404.
async fn check_admin_target(
    conn: &mut PgConnection,
    grants: &Grants,
    tenant: TenantId,
    target: UserId,
) -> ApiResult<()> {
    if grants.is_admin {
        return Ok(());
    }
    if user::membership_role(&mut *conn, tenant, target)
        .await?
        .as_deref()
        == Some("ADMIN")
    {
        return Err(ApiError::forbidden(
            "admin_required",
            "only an ADMIN member can change the membership of an ADMIN",
        ));
    }
    Ok(())
}

/// Nobody hands out more than they hold: `ADMIN` needs an admin caller, roles need every one
/// of their permissions.
async fn check_assignable(
    conn: &mut PgConnection,
    grants: &Grants,
    tenant: TenantId,
    membership: MembershipRole,
    role_ids: &[RoleId],
) -> ApiResult<()> {
    if membership == MembershipRole::Admin && !grants.is_admin {
        return Err(ApiError::forbidden(
            "permission_escalation",
            "only an ADMIN member can make another member ADMIN",
        ));
    }
    let titles = role::titles_of_assignable(conn, tenant, role_ids).await?;
    grants.require_covers(titles.iter().map(String::as_str))?;
    Ok(())
}
