//! Cron: jobs (`tblCronJobs`), their schedules in a time zone, fires with overlap and
//! missed-run policies, and the fire history (`tblCronJobHistory`). The `cron` worker role
//! drives [`scheduler`]; the API drives [`job`], [`history`] and manual fires.

mod batch;
pub mod fire;
pub mod history;
pub mod job;
pub mod schedule;
pub mod scheduler;
pub mod status;
