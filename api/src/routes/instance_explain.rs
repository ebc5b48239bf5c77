//! The public shape of "why isn't it running?" (`explainInstance` in `instances`): one typed
//! variant per reason, discriminated by `reason`, converted from `workflow::explain`.

use super::enums::{CollectionType, InstanceStatus, NodeType, UnknownStored, wire_enum};
use chrono::{DateTime, Utc};
use jet_shared::workflow::explain::{Explanation, NodeWait, Reason};
use poem_openapi::{Object, Union};
use uuid::Uuid;

/// A run's status and why each unfinished node is not running now.
#[derive(Debug, Object)]
#[oai(rename_all = "camelCase")]
pub struct ExplainOut {
    #[oai(rename = "instanceID")]
    pub instance_id: Uuid,
    pub status: InstanceStatus,
    /// RUNNING with nothing runnable and nothing waiting: an engine bug (`jet_ops.stuck_instances`).
    pub stuck: bool,
    /// One entry per unfinished node; empty once the run has ended.
    pub nodes: Vec<NodeWaitOut>,
}

/// What every entry says: the node and the reason in words.
#[derive(Debug, Object)]
#[oai(rename_all = "camelCase", skip_serializing_if_is_none)]
pub struct WaitingNode {
    #[oai(rename = "nodeID")]
    pub node_id: String,
    /// The node's type in the run's definition.
    pub node_type: Option<NodeType>,
    /// The reason as one line for a person.
    pub message: String,
}

/// Why one node is not running, by `reason`.
#[derive(Debug, Union)]
#[oai(discriminator_name = "reason", one_of)]
pub enum NodeWaitOut {
    #[oai(mapping = "queued")]
    Queued(ExplainQueued),
    #[oai(mapping = "noNodesWorker")]
    NoNodesWorker(ExplainNoNodesWorker),
    #[oai(mapping = "delayed")]
    Delayed(ExplainDelayed),
    #[oai(mapping = "leased")]
    Leased(ExplainLeased),
    #[oai(mapping = "retryBackoff")]
    RetryBackoff(ExplainRetryBackoff),
    #[oai(mapping = "waitingForHuman")]
    WaitingForHuman(ExplainWaitingForHuman),
    #[oai(mapping = "resumeQueued")]
    ResumeQueued(ExplainResumeQueued),
    #[oai(mapping = "waitingForChild")]
    WaitingForChild(ExplainWaitingForChild),
    #[oai(mapping = "waitingOnJoin")]
    WaitingOnJoin(ExplainWaitingOnJoin),
}

/// Ready, behind older ready executions of its tenant.
#[derive(Debug, Object)]
#[oai(rename_all = "camelCase")]
pub struct ExplainQueued {
    #[oai(flatten)]
    pub node: WaitingNode,
    /// Ready executions of the tenant a claim takes first.
    pub ready_ahead: i64,
    pub ready_since: DateTime<Utc>,
}

/// Ready, but no live worker runs the `nodes` role.
#[derive(Debug, Object)]
#[oai(rename_all = "camelCase")]
pub struct ExplainNoNodesWorker {
    #[oai(flatten)]
    pub node: WaitingNode,
    pub ready_since: DateTime<Utc>,
}

/// Dispatched to run later (a delay node's successor).
#[derive(Debug, Object)]
#[oai(rename_all = "camelCase")]
pub struct ExplainDelayed {
    #[oai(flatten)]
    pub node: WaitingNode,
    pub until: DateTime<Utc>,
}

/// Held by a worker's lease.
#[derive(Debug, Object)]
#[oai(rename_all = "camelCase", skip_serializing_if_is_none)]
pub struct ExplainLeased {
    #[oai(flatten)]
    pub node: WaitingNode,
    /// The lease as written: `<workerID>-nodes-<slot>`.
    pub lease_owner: String,
    /// The registered worker holding it.
    #[oai(rename = "workerID")]
    pub worker_id: Option<String>,
    /// Whether that worker heartbeats (false for an unregistered owner).
    pub worker_alive: bool,
    pub lease_expires_at: DateTime<Utc>,
    /// The lease ran out; the reaper gives the node back to the ready set.
    pub lease_expired: bool,
}

/// Failed; the next try is due later.
#[derive(Debug, Object)]
#[oai(rename_all = "camelCase")]
pub struct ExplainRetryBackoff {
    #[oai(flatten)]
    pub node: WaitingNode,
    pub until: DateTime<Utc>,
    pub failed_tries: i32,
    pub last_error: String,
}

/// A human step waiting for its form or approval.
#[derive(Debug, Object)]
#[oai(rename_all = "camelCase", skip_serializing_if_is_none)]
pub struct ExplainWaitingForHuman {
    #[oai(flatten)]
    pub node: WaitingNode,
    #[oai(rename = "requestID")]
    pub request_id: Uuid,
    pub request_type: CollectionType,
    pub expires_at: Option<DateTime<Utc>>,
}

/// A human step answered or expired whose resume command has not run yet.
#[derive(Debug, Object)]
#[oai(rename_all = "camelCase")]
pub struct ExplainResumeQueued {
    #[oai(flatten)]
    pub node: WaitingNode,
    #[oai(rename = "requestID")]
    pub request_id: Uuid,
    pub request_status: AnsweredStatus,
}

wire_enum! {
    /// How a human step ended before its resume ran: answered or expired.
    pub enum AnsweredStatus {
        Completed = "COMPLETED",
        Expired = "EXPIRED",
    }
}

/// A sub-workflow node parked until its child ends.
#[derive(Debug, Object)]
#[oai(rename_all = "camelCase", skip_serializing_if_is_none)]
pub struct ExplainWaitingForChild {
    #[oai(flatten)]
    pub node: WaitingNode,
    #[oai(rename = "childInstanceID")]
    pub child_instance_id: Uuid,
    /// The child's status; absent when the child is gone.
    pub child_status: Option<InstanceStatus>,
    /// When the node stops waiting; absent for no timeout.
    pub timeout_at: Option<DateTime<Utc>>,
}

/// A join that has some inputs of this pass and waits for the others.
#[derive(Debug, Object)]
#[oai(rename_all = "camelCase")]
pub struct ExplainWaitingOnJoin {
    #[oai(flatten)]
    pub node: WaitingNode,
    /// Input node ids not completed for this pass.
    pub waiting_for: Vec<String>,
    /// Input node ids completed for this pass.
    pub arrived: Vec<String>,
}

impl TryFrom<Explanation> for ExplainOut {
    type Error = UnknownStored;

    fn try_from(e: Explanation) -> Result<Self, UnknownStored> {
        Ok(Self {
            instance_id: e.instance_id,
            status: InstanceStatus::from_stored(&e.status)?,
            stuck: e.stuck,
            nodes: e
                .nodes
                .into_iter()
                .map(NodeWaitOut::try_from)
                .collect::<Result<_, _>>()?,
        })
    }
}

impl TryFrom<NodeWait> for NodeWaitOut {
    type Error = UnknownStored;

    fn try_from(w: NodeWait) -> Result<Self, UnknownStored> {
        let node = WaitingNode {
            message: w.message,
            node_id: w.node_id,
            node_type: w
                .node_type
                .as_deref()
                .map(NodeType::from_stored)
                .transpose()?,
        };
        Ok(match w.reason {
            Reason::Queued {
                ready_ahead,
                ready_since,
            } => Self::Queued(ExplainQueued {
                node,
                ready_ahead,
                ready_since,
            }),
            Reason::NoNodesWorker { ready_since } => {
                Self::NoNodesWorker(ExplainNoNodesWorker { node, ready_since })
            }
            Reason::Delayed { until } => Self::Delayed(ExplainDelayed { node, until }),
            Reason::Leased {
                lease_owner,
                worker_id,
                worker_alive,
                lease_expires_at,
                lease_expired,
            } => Self::Leased(ExplainLeased {
                node,
                lease_owner,
                worker_id,
                worker_alive,
                lease_expires_at,
                lease_expired,
            }),
            Reason::RetryBackoff {
                until,
                failed_tries,
                last_error,
            } => Self::RetryBackoff(ExplainRetryBackoff {
                node,
                until,
                failed_tries,
                last_error,
            }),
            Reason::WaitingForHuman {
                request_id,
                request_type,
                expires_at,
            } => Self::WaitingForHuman(ExplainWaitingForHuman {
                node,
                request_id,
                request_type: CollectionType::from_stored(&request_type)?,
                expires_at,
            }),
            Reason::ResumeQueued {
                request_id,
                request_status,
            } => Self::ResumeQueued(ExplainResumeQueued {
                node,
                request_id,
                request_status: AnsweredStatus::from_stored(&request_status)?,
            }),
            Reason::WaitingForChild {
                child_instance_id,
                child_status,
                timeout_at,
            } => Self::WaitingForChild(ExplainWaitingForChild {
                node,
                child_instance_id,
                child_status: child_status
                    .as_deref()
                    .map(InstanceStatus::from_stored)
                    .transpose()?,
                timeout_at,
            }),
            Reason::WaitingOnJoin {
                waiting_for,
                arrived,
            } => Self::WaitingOnJoin(ExplainWaitingOnJoin {
                node,
                waiting_for,
                arrived,
            }),
        })
    }
}
