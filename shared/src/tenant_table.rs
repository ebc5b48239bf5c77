//! The reads and deletes every tenant-owned asset table shares (app pages, widgets, data
//! queries, datasources): a page of the tenant's rows newest first, one row by id, and a
//! delete, each scoped by `tenantID` so another tenant's id is simply not found.

use crate::ids::TenantId;
use crate::page::{Page, PageRequest};
use crate::{Error, Result};
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, PgExecutor, PgPool};
use uuid::Uuid;

/// A tenant-owned table: its quoted name, id column and selected columns are constants of
/// the module that owns it, never input.
#[derive(Debug, Clone, Copy)]
pub struct TenantTable {
    pub table: &'static str,
    pub id: &'static str,
    pub columns: &'static str,
    /// What a missing row is called in `NotFound`.
    pub noun: &'static str,
}

impl TenantTable {
    /// One page of the tenant's rows, newest first, with the total count.
    pub async fn list<T>(
        &self,
        pool: &PgPool,
        tenant_id: TenantId,
        page: PageRequest,
    ) -> Result<Page<T>>
    where
        T: for<'r> sqlx::FromRow<'r, PgRow> + Send + Unpin,
    {
        let Self {
            table, id, columns, ..
        } = self;
        let total: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            r#"SELECT count(*) FROM "{table}" WHERE "tenantID" = $1"#
        )))
        .bind(tenant_id)
        .fetch_one(pool)
        .await?;
        let items = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            r#"SELECT {columns} FROM "{table}" WHERE "tenantID" = $1
               ORDER BY "createdAt" DESC, "{id}" LIMIT $2 OFFSET $3"#
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

    /// One row of the tenant; `NotFound` for another tenant's.
    pub async fn get<T>(
        &self,
        conn: impl PgExecutor<'_>,
        tenant_id: TenantId,
        row_id: Uuid,
    ) -> Result<T>
    where
        T: for<'r> sqlx::FromRow<'r, PgRow> + Send + Unpin,
    {
        let Self {
            table,
            id,
            columns,
            noun,
        } = self;
        sqlx::query_as(sqlx::AssertSqlSafe(format!(
            r#"SELECT {columns} FROM "{table}" WHERE "tenantID" = $1 AND "{id}" = $2"#
        )))
        .bind(tenant_id)
        .bind(row_id)
        .fetch_optional(conn)
        .await?
        .ok_or(Error::NotFound(noun))
    }

    /// Deletes one row of the tenant; `NotFound` when there is none.
    pub async fn delete(
        &self,
        conn: &mut PgConnection,
        tenant_id: TenantId,
        row_id: Uuid,
    ) -> Result<()> {
        let Self {
            table, id, noun, ..
        } = self;
        let done = sqlx::query(sqlx::AssertSqlSafe(format!(
            r#"DELETE FROM "{table}" WHERE "tenantID" = $1 AND "{id}" = $2"#
        )))
        .bind(tenant_id)
        .bind(row_id)
        .execute(conn)
        .await?;
        if done.rows_affected() == 0 {
            return Err(Error::NotFound(noun));
        }
        Ok(())
    }
}
