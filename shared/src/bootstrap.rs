//! The first tenant and its admin API key, for a fresh database (`jet bootstrap`, `jet dev`).

use crate::Result;
use crate::api_key::{self, Creator};
use crate::crypto::RawApiKey;
use crate::ids::RoleId;
use crate::tenant::{self, Tenant};
use crate::user::{self, User};
use sqlx::PgPool;
use uuid::Uuid;

/// The global `ADMIN` role seeded by the migrations: every permission in every tenant.
pub const GLOBAL_ADMIN_ROLE: RoleId =
    RoleId(Uuid::from_u128(0x00000000_0000_4000_8000_000000000001));

/// A user to make `ADMIN` of the new tenant.
#[derive(Debug, Clone)]
pub struct AdminUser {
    pub email: String,
    /// The identity provider's subject, matched against JWT `sub`.
    pub firebase_id: String,
}

/// What bootstrap created.
#[derive(Debug)]
pub struct Bootstrapped {
    pub tenant: Tenant,
    pub api_key_id: crate::ids::ApiKeyId,
    /// Shown once.
    pub api_key: RawApiKey,
    pub admin_user: Option<User>,
}

/// Creates a tenant and an API key holding the global `ADMIN` role, in one transaction; with
/// `admin`, also that user (or the existing user with its firebaseID) as the tenant's `ADMIN`.
pub async fn bootstrap(
    pool: &PgPool,
    tenant_title: &str,
    admin: Option<&AdminUser>,
) -> Result<Bootstrapped> {
    let mut tx = pool.begin().await?;
    let (tenant, admin_user) = match admin {
        Some(admin) => {
            let existing: Option<crate::ids::UserId> =
                sqlx::query_scalar(r#"SELECT "userID" FROM "tblUsers" WHERE "firebaseID" = $1"#)
                    .bind(&admin.firebase_id)
                    .fetch_optional(&mut *tx)
                    .await?;
            let user_id = match existing {
                Some(id) => id,
                None => {
                    user::insert(&mut tx, &admin.firebase_id, &admin.email, None, None)
                        .await?
                        .user_id
                }
            };
            let tenant = tenant::insert_with_admin(&mut tx, tenant_title, None, user_id).await?;
            (tenant, Some(user_id))
        }
        None => (
            tenant::insert_without_members(&mut tx, tenant_title).await?,
            None,
        ),
    };
    let (key, raw) = api_key::insert(
        &mut tx,
        tenant.tenant_id,
        "bootstrap admin",
        &[GLOBAL_ADMIN_ROLE],
        false,
        Creator {
            user_id: admin_user,
            api_key_id: None,
        },
    )
    .await?;
    tx.commit().await?;
    let admin_user = match admin_user {
        Some(id) => Some(user::get(pool, id).await?),
        None => None,
    };
    Ok(Bootstrapped {
        tenant,
        api_key_id: key.api_key_id,
        api_key: raw,
        admin_user,
    })
}

/// Whether any tenant exists (so `jet dev` bootstraps only a fresh database).
pub async fn any_tenant(pool: &PgPool) -> Result<bool> {
    Ok(
        sqlx::query_scalar(r#"SELECT EXISTS (SELECT 1 FROM "tblTenants")"#)
            .fetch_one(pool)
            .await?,
    )
}
