//! Commands: everything the API asks the workers to do, pushed to the apalis-postgres queue
//! inside the caller's own transaction, so a command exists exactly when its effects commit.

use apalis::prelude::TaskBuilder;
use serde::{Deserialize, Serialize};
use sqlx::PgConnection;
use uuid::Uuid;

/// The apalis queue (`apalis.jobs.job_type`) commands travel on.
pub const QUEUE: &str = "jet-commands";

/// Attempts before apalis gives a command up.
pub const MAX_ATTEMPTS: usize = 5;

/// A command for the `commands` worker role.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Command {
    /// Dispatch the start node of an instance. Instances are now created with their start node
    /// dispatched; kept so commands queued by earlier versions still run.
    StartInstance {
        #[serde(rename = "instanceID")]
        instance_id: Uuid,
    },
    /// Continue an instance after a human step was answered or expired.
    ResumeHumanStep {
        #[serde(rename = "collectionRequestID")]
        collection_request_id: Uuid,
    },
    /// Stop an instance: no further node runs.
    CancelInstance {
        #[serde(rename = "instanceID")]
        instance_id: Uuid,
    },
}

/// Pushes a command in the caller's transaction.
pub async fn push(conn: &mut PgConnection, command: &Command) -> anyhow::Result<()> {
    let task = TaskBuilder::new(serde_json::to_vec(command)?)
        .max_attempts(MAX_ATTEMPTS)
        .build();
    apalis_postgres::queries::push_tasks(conn, QUEUE, vec![task]).await?;
    Ok(())
}

/// Pushes the bytes of a command as they are (a DLQ re-run: they may not even decode) with a
/// fresh job id, returned so the job's outcome can find its DLQ row.
pub async fn push_raw(
    conn: &mut PgConnection,
    bytes: Vec<u8>,
    max_attempts: usize,
) -> anyhow::Result<String> {
    // apalis-postgres reads job ids back as ULIDs.
    let job_id = ulid::Ulid::generate();
    let task = TaskBuilder::new(bytes)
        .task_id(apalis::prelude::TaskId::from_string(job_id.to_string()))
        .max_attempts(max_attempts.clamp(1, MAX_ATTEMPTS))
        .build();
    apalis_postgres::queries::push_tasks(conn, QUEUE, vec![task]).await?;
    Ok(job_id.to_string())
}
