//! `/api/v1/tenants/{tenantID}/cronjobs`: cron jobs (upstream's routes), plus run-now, fire
//! time previews and the scheduler's status. Saving a job needs execute on its workflow, whose
//! inputs `workflowConfig.inputValues` must fit.

mod preview;
mod wire;

use super::{ApiTags, Created, Deleted, Page, authorize, page_request};
use crate::error::{ApiError, ApiResult};
use crate::security::JetAuth;
use crate::state::AppState;
use chrono::{DateTime, Utc};
use jet_shared::cron::job::{self, CronJobSpec};
use jet_shared::cron::schedule::Trigger;
use jet_shared::cron::{fire, history, status};
use jet_shared::ids::TenantId;
use jet_shared::rbac::permissions::{
    CRONJOB_CREATE, CRONJOB_DELETE, CRONJOB_LIST, CRONJOB_READ, CRONJOB_UPDATE, WORKFLOW_EXECUTE,
};
use poem_openapi::param::{Path, Query};
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, OpenApi};
use uuid::Uuid;
pub use wire::{CreateCronJob, CronJobOut, HistoryOut, UpdateCronJob};

/// `runCronJob` answers.
#[derive(ApiResponse)]
pub enum RunResponse {
    /// The fire's history row: RUNNING (instance started), QUEUED or SKIPPED (overlap
    /// policy), RETRYING or FAILURE (the workflow could not start).
    #[oai(status = 202)]
    Accepted(Json<HistoryOut>),
}

pub struct CronJobsApi {
    pub state: AppState,
}

#[OpenApi(prefix_path = "/api/v1/tenants", tag = "ApiTags::Cron")]
impl CronJobsApi {
    /// List a tenant's cron jobs
    #[oai(
        path = "/:tenantID/cronjobs",
        method = "get",
        operation_id = "listCronJobs"
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
    ) -> ApiResult<Json<Page<CronJobOut>>> {
        authorize(&self.state, &auth, tenant_id.0, CRONJOB_LIST, None).await?;
        let request = page_request(page.0, page_size.0)?;
        let page = job::list(&self.state.pool, TenantId(tenant_id.0), request).await?;
        Ok(Json(Page::try_from_domain(page, CronJobOut::try_from)?))
    }

    /// Create a cron job
    ///
    /// The schedule is a node-cron expression (5 fields, or 6 with leading seconds) read in
    /// `timezone`; when both day-of-month and day-of-week are restricted, both must match.
    /// 422 codes: `invalid_schedule`, `invalid_timezone`, `invalid_inputs`, `invalid_workflow`,
    /// `validation_failed`; a NUL character anywhere is a 400 `invalid_character`.
    #[oai(
        path = "/:tenantID/cronjobs",
        method = "post",
        operation_id = "createCronJob"
    )]
    async fn create(
        &self,
        auth: JetAuth,
        #[oai(name = "tenantID")] tenant_id: Path<Uuid>,
        body: Json<CreateCronJob>,
    ) -> ApiResult<Created<CronJobOut>> {
        let grants = authorize(&self.state, &auth, tenant_id.0, CRONJOB_CREATE, None).await?;
        let spec = body.0.into_spec();
        wire::check(&spec)?;
        let mut tx = self.state.pool.begin().await?;
        wire::check_workflow(&mut tx, &grants, &spec).await?;
        let now = job::db_now(&mut *tx).await?;
        let next = spec.next_run_after(now).map_err(wire::schedule_error)?;
        let saved = job::insert(
            &mut tx,
            TenantId(tenant_id.0),
            &spec,
            next,
            auth.0.creator(),
        )
        .await?;
        tx.commit().await?;
        Ok(Created::Created(Json(saved.try_into()?)))
    }

    /// Get a cron job
    #[oai(
        path = "/:tenantID/cronjobs/:cronJobID",
        method = "get",
        operation_id = "getCronJob"
    )]
    async fn get(
        &self,
        auth: JetAuth,
        #[oai(name = "tenantID")] tenant_id: Path<Uuid>,
        #[oai(name = "cronJobID")] cron_job_id: Path<Uuid>,
    ) -> ApiResult<Json<CronJobOut>> {
        authorize(
            &self.state,
            &auth,
            tenant_id.0,
            CRONJOB_READ,
            Some(cron_job_id.0),
        )
        .await?;
        let found = job::get(&self.state.pool, TenantId(tenant_id.0), cron_job_id.0).await?;
        Ok(Json(found.try_into()?))
    }

    /// Update a cron job
    ///
    /// Takes effect at the next fire without a restart: a new schedule, zone or enabling
    /// recomputes `nextRunAt` from now. Needs execute on the (new) workflow.
    #[oai(
        path = "/:tenantID/cronjobs/:cronJobID",
        method = "patch",
        operation_id = "updateCronJob"
    )]
    async fn update(
        &self,
        auth: JetAuth,
        #[oai(name = "tenantID")] tenant_id: Path<Uuid>,
        #[oai(name = "cronJobID")] cron_job_id: Path<Uuid>,
        body: Json<UpdateCronJob>,
    ) -> ApiResult<Json<CronJobOut>> {
        let grants = authorize(
            &self.state,
            &auth,
            tenant_id.0,
            CRONJOB_UPDATE,
            Some(cron_job_id.0),
        )
        .await?;
        let tenant = TenantId(tenant_id.0);
        let mut tx = self.state.pool.begin().await?;
        let current = job::get_for_update(&mut tx, tenant, cron_job_id.0).await?;
        let before = CronJobSpec::of(&current);
        let spec = body.0.apply(before.clone());
        wire::check(&spec)?;
        wire::check_workflow(&mut tx, &grants, &spec).await?;
        let reschedule = if spec.reschedules(&before) {
            let now = job::db_now(&mut *tx).await?;
            Some(spec.next_run_after(now).map_err(wire::schedule_error)?)
        } else {
            None
        };
        let saved = job::update(&mut tx, tenant, cron_job_id.0, &spec, reschedule).await?;
        tx.commit().await?;
        Ok(Json(saved.try_into()?))
    }

    /// Delete a cron job and its history
    #[oai(
        path = "/:tenantID/cronjobs/:cronJobID",
        method = "delete",
        operation_id = "deleteCronJob"
    )]
    async fn delete(
        &self,
        auth: JetAuth,
        #[oai(name = "tenantID")] tenant_id: Path<Uuid>,
        #[oai(name = "cronJobID")] cron_job_id: Path<Uuid>,
    ) -> ApiResult<Deleted> {
        authorize(
            &self.state,
            &auth,
            tenant_id.0,
            CRONJOB_DELETE,
            Some(cron_job_id.0),
        )
        .await?;
        let mut tx = self.state.pool.begin().await?;
        job::delete(&mut tx, TenantId(tenant_id.0), cron_job_id.0).await?;
        tx.commit().await?;
        Ok(Deleted::Deleted)
    }

    /// Clone a cron job: a disabled copy
    #[oai(
        path = "/:tenantID/cronjobs/:cronJobID/clone",
        method = "post",
        operation_id = "cloneCronJob"
    )]
    async fn clone_job(
        &self,
        auth: JetAuth,
        #[oai(name = "tenantID")] tenant_id: Path<Uuid>,
        #[oai(name = "cronJobID")] cron_job_id: Path<Uuid>,
    ) -> ApiResult<Created<CronJobOut>> {
        let grants = authorize(&self.state, &auth, tenant_id.0, CRONJOB_CREATE, None).await?;
        grants.require(CRONJOB_READ, Some(cron_job_id.0))?;
        let tenant = TenantId(tenant_id.0);
        let mut tx = self.state.pool.begin().await?;
        let source = job::get(&mut *tx, tenant, cron_job_id.0).await?;
        let mut spec = CronJobSpec::of(&source);
        spec.title = format!("{} (copy)", spec.title);
        spec.is_disabled = true;
        let saved = job::insert(&mut tx, tenant, &spec, None, auth.0.creator()).await?;
        tx.commit().await?;
        Ok(Created::Created(Json(saved.try_into()?)))
    }

    /// A cron job's fires, newest due time first
    #[oai(
        path = "/:tenantID/cronjobs/:cronJobID/history",
        method = "get",
        operation_id = "listCronJobHistory"
    )]
    #[allow(clippy::too_many_arguments)] // one per query parameter of the operation
    async fn history(
        &self,
        auth: JetAuth,
        #[oai(name = "tenantID")] tenant_id: Path<Uuid>,
        #[oai(name = "cronJobID")] cron_job_id: Path<Uuid>,
        /// Only fires with this status.
        status: Query<Option<wire::FireStatus>>,
        /// Only due times at or after this instant.
        from: Query<Option<DateTime<Utc>>>,
        /// Only due times before this instant.
        to: Query<Option<DateTime<Utc>>>,
        #[oai(validator(minimum(value = "1")))] page: Query<Option<i64>>,
        #[oai(
            name = "pageSize",
            validator(minimum(value = "1"), maximum(value = "200"))
        )]
        page_size: Query<Option<i64>>,
    ) -> ApiResult<Json<Page<HistoryOut>>> {
        authorize(
            &self.state,
            &auth,
            tenant_id.0,
            CRONJOB_READ,
            Some(cron_job_id.0),
        )
        .await?;
        let request = page_request(page.0, page_size.0)?;
        let filter = history::HistoryFilter {
            status: status.0.map(|s| s.as_str().to_owned()),
            from: from.0,
            to: to.0,
        };
        let page = history::list(
            &self.state.pool,
            TenantId(tenant_id.0),
            cron_job_id.0,
            &filter,
            request,
        )
        .await?;
        Ok(Json(Page::try_from_domain(page, HistoryOut::try_from)?))
    }

    /// Run a cron job now
    ///
    /// A MANUAL fire, subject to the job's overlap policy; needs update on the job and execute
    /// on its workflow.
    #[oai(
        path = "/:tenantID/cronjobs/:cronJobID/run",
        method = "post",
        operation_id = "runCronJob"
    )]
    async fn run(
        &self,
        auth: JetAuth,
        #[oai(name = "tenantID")] tenant_id: Path<Uuid>,
        #[oai(name = "cronJobID")] cron_job_id: Path<Uuid>,
    ) -> ApiResult<RunResponse> {
        let grants = authorize(
            &self.state,
            &auth,
            tenant_id.0,
            CRONJOB_UPDATE,
            Some(cron_job_id.0),
        )
        .await?;
        let mut tx = self.state.pool.begin().await?;
        let found = job::get_for_update(&mut tx, TenantId(tenant_id.0), cron_job_id.0).await?;
        grants.require(WORKFLOW_EXECUTE, found.workflow_id)?;
        let now = job::db_now(&mut *tx).await?;
        let (history_id, _) = fire::fire(&mut tx, &found, now, Trigger::Manual).await?;
        let history_id = history_id.ok_or_else(|| {
            ApiError::Conflict(Json(crate::error::ErrorBody {
                code: "already_fired".into(),
                message: "a fire at this instant already exists; try again".into(),
            }))
        })?;
        let row = history::get(&mut *tx, history_id).await?;
        tx.commit().await?;
        Ok(RunResponse::Accepted(Json(row.try_into()?)))
    }

    /// Preview a schedule: its next fire times and a description
    ///
    /// `invalid_schedule` or `invalid_timezone` (422) name the bad field.
    #[oai(
        path = "/:tenantID/cronjobs/preview",
        method = "get",
        operation_id = "previewCronSchedule"
    )]
    async fn preview_schedule(
        &self,
        auth: JetAuth,
        #[oai(name = "tenantID")] tenant_id: Path<Uuid>,
        /// node-cron expression.
        #[oai(validator(max_length = 255))]
        schedule: Query<String>,
        /// IANA zone; default `UTC`.
        #[oai(validator(max_length = 64))]
        timezone: Query<Option<String>>,
        /// How many fire times; default 5.
        #[oai(validator(minimum(value = "1"), maximum(value = "100")))]
        count: Query<Option<u32>>,
    ) -> ApiResult<Json<preview::Preview>> {
        authorize(&self.state, &auth, tenant_id.0, CRONJOB_LIST, None).await?;
        let now = job::db_now(&self.state.pool).await?;
        let zone = timezone.0.unwrap_or_else(|| "UTC".into());
        Ok(Json(preview::preview(
            &schedule.0,
            &zone,
            count.0.unwrap_or(5) as usize,
            now,
        )?))
    }

    /// Which scheduler replicas are alive, the next due job, and fire lag
    #[oai(
        path = "/:tenantID/cronjobs/status/connections",
        method = "get",
        operation_id = "getCronStatus"
    )]
    async fn status(
        &self,
        auth: JetAuth,
        #[oai(name = "tenantID")] tenant_id: Path<Uuid>,
    ) -> ApiResult<Json<preview::StatusOut>> {
        authorize(&self.state, &auth, tenant_id.0, CRONJOB_LIST, None).await?;
        let status = status::status(&self.state.pool, TenantId(tenant_id.0)).await?;
        Ok(Json(status.into()))
    }

    /// A cron job's next fire times, in its zone and in UTC
    #[oai(
        path = "/:tenantID/cronjobs/:cronJobID/preview",
        method = "get",
        operation_id = "previewCronJob"
    )]
    async fn preview_job(
        &self,
        auth: JetAuth,
        #[oai(name = "tenantID")] tenant_id: Path<Uuid>,
        #[oai(name = "cronJobID")] cron_job_id: Path<Uuid>,
        /// How many fire times; default 5.
        #[oai(validator(minimum(value = "1"), maximum(value = "100")))]
        count: Query<Option<u32>>,
    ) -> ApiResult<Json<preview::Preview>> {
        authorize(
            &self.state,
            &auth,
            tenant_id.0,
            CRONJOB_READ,
            Some(cron_job_id.0),
        )
        .await?;
        let found = job::get(&self.state.pool, TenantId(tenant_id.0), cron_job_id.0).await?;
        let now = job::db_now(&self.state.pool).await?;
        Ok(Json(preview::preview(
            &found.schedule,
            &found.timezone,
            count.0.unwrap_or(5) as usize,
            now,
        )?))
    }
}
