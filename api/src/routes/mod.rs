//! One `#[OpenApi]` struct per resource; this module holds what they share.

pub mod api_keys;
pub mod app_pages;
pub mod audit;
pub mod auth;
pub mod cronjobs;
pub mod datasources;
pub mod dlq;
pub mod enums;
pub mod health;
pub mod human;
pub mod instance_explain;
pub mod instances;
pub mod listeners;
pub mod nullable;
pub mod queries;
pub mod roles;
pub mod tenants;
pub mod users;
pub mod webhooks;
pub mod widgets;
pub mod workflows;

use crate::error::{ApiError, ApiResult};
use crate::security::JetAuth;
use crate::state::AppState;
use jet_shared::ids::TenantId;
use jet_shared::page::PageRequest;
use jet_shared::rbac::{Grants, Permission, load_grants};
use poem_openapi::payload::Json;
use poem_openapi::types::{ParseFromJSON, ToJSON};
use poem_openapi::{ApiResponse, Object, Tags};
use uuid::Uuid;

/// Operation groups in the spec and the docs UI.
#[derive(Tags)]
pub enum ApiTags {
    /// Tenants the caller belongs to.
    Tenants,
    /// Members of a tenant and their roles.
    Users,
    /// Roles and the permission catalogue.
    Roles,
    /// API keys of a tenant.
    ApiKeys,
    /// The calling user and their per-tenant settings.
    Auth,
    /// The audit trail of a tenant.
    Audit,
    /// Workflow definitions and their runs.
    Workflows,
    /// Datasources and data queries.
    Data,
    /// App pages and widgets.
    Ui,
    /// Cron jobs, their fires and the scheduler.
    Cron,
    /// Listeners, their actions, ring buffers and live tails.
    Listeners,
    /// The event DLQ: failures to inspect, replay or discard.
    Dlq,
    /// Liveness and readiness.
    Health,
    /// Inbound deliveries to webhook listeners (proved by token or signature, not by login).
    Webhooks,
}

/// One page of a list.
#[derive(Debug, Object)]
#[oai(rename_all = "camelCase", skip_serializing_if_is_none)]
pub struct Page<T: ParseFromJSON + ToJSON + Send + Sync> {
    /// The rows of this page.
    pub items: Vec<T>,
    /// Rows over all pages.
    pub total_count: i64,
    /// This page's number (1-based).
    pub page: i64,
    /// Rows per page.
    pub page_size: i64,
    /// Number of pages.
    pub total_pages: i64,
}

impl<T: ParseFromJSON + ToJSON + Send + Sync> Page<T> {
    /// Converts a domain page, mapping each row to its wire type.
    pub fn from_domain<D>(page: jet_shared::page::Page<D>, f: impl FnMut(D) -> T) -> Self {
        let total_pages = page.total_pages();
        Self {
            total_count: page.total_count,
            page: page.request.page,
            page_size: page.request.page_size,
            total_pages,
            items: page.items.into_iter().map(f).collect(),
        }
    }

    /// Converts a domain page whose rows may fail to convert (a stored value outside an enum).
    pub fn try_from_domain<D, E>(
        page: jet_shared::page::Page<D>,
        f: impl FnMut(D) -> Result<T, E>,
    ) -> Result<Self, E> {
        let total_pages = page.total_pages();
        Ok(Self {
            total_count: page.total_count,
            page: page.request.page,
            page_size: page.request.page_size,
            total_pages,
            items: page.items.into_iter().map(f).collect::<Result<_, _>>()?,
        })
    }
}

/// 201 with the created resource.
#[derive(ApiResponse)]
pub enum Created<T: ParseFromJSON + ToJSON + Send + Sync> {
    /// Created.
    #[oai(status = 201)]
    Created(Json<T>),
}

/// 204 after a deletion.
#[derive(ApiResponse)]
pub enum Deleted {
    /// Deleted.
    #[oai(status = 204)]
    Deleted,
}

/// Builds a page request from query parameters (already range-checked by their validators).
pub fn page_request(page: Option<i64>, page_size: Option<i64>) -> ApiResult<PageRequest> {
    PageRequest::new(page, page_size).map_err(|e| {
        ApiError::BadRequest(Json(crate::error::ErrorBody {
            code: "invalid_pagination".into(),
            message: e.to_string(),
        }))
    })
}

/// Loads the caller's grants in the tenant and requires `permission` (on `resource_id` when
/// the operation targets one resource). Unknown or foreign tenants are 404.
pub async fn authorize(
    state: &AppState,
    auth: &JetAuth,
    tenant_id: Uuid,
    permission: Permission,
    resource_id: Option<Uuid>,
) -> ApiResult<Grants> {
    let grants = load_grants(&state.pool, &auth.0, TenantId(tenant_id)).await?;
    grants.require(permission, resource_id)?;
    Ok(grants)
}

/// A title after trimming; blank titles are a 422.
pub fn required_title(field: &str, value: &str) -> ApiResult<String> {
    let trimmed = value.trim();
    if trimmed.is_empty() {
        return Err(ApiError::unprocessable(format!(
            "{field} must not be blank"
        )));
    }
    Ok(trimmed.to_owned())
}
