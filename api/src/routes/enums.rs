//! The closed sets of values the status and type fields of several resources take, as Rust
//! types: the spec lists them (`enum`), request bodies are checked against them before any
//! handler runs, and stored values are read into them. Enums of one resource live beside its
//! routes and are declared with the same [`wire_enum!`].
//!
//! Wire values are upstream's names, exactly as stored; a stored value outside its enum is an
//! internal error ([`UnknownStored`]), never passed on as something the spec does not list.

use crate::error::ApiError;
use poem_openapi::types::ParseFromJSON;

/// Declares a `poem_openapi::Enum` whose variants carry their wire value, with `as_str`,
/// `VALUES` (in declaration order, as the spec lists them) and `from_stored`.
macro_rules! wire_enum {
    (
        $(#[$meta:meta])*
        $vis:vis enum $name:ident {
            $( $(#[$vmeta:meta])* $variant:ident = $wire:tt ),+ $(,)?
        }
    ) => {
        #[derive(Debug, Clone, Copy, PartialEq, Eq, poem_openapi::Enum)]
        $(#[$meta])*
        $vis enum $name {
            $( $(#[$vmeta])* #[oai(rename = $wire)] $variant, )+
        }

        impl $name {
            /// Every wire value, in the order the spec lists them.
            #[allow(dead_code)]
            pub const VALUES: &'static [&'static str] = &[$($wire),+];

            /// The wire (and stored) value.
            #[allow(dead_code)]
            pub fn as_str(self) -> &'static str {
                match self {
                    $( $name::$variant => $wire, )+
                }
            }

            /// Reads a stored value; one outside the enum is an [`UnknownStored`].
            #[allow(dead_code)]
            pub fn from_stored(value: &str) -> Result<Self, $crate::routes::enums::UnknownStored> {
                match value {
                    $( $wire => Ok($name::$variant), )+
                    other => Err($crate::routes::enums::UnknownStored {
                        kind: stringify!($name),
                        value: other.chars().take(64).collect(),
                    }),
                }
            }
        }
    };
}
pub(crate) use wire_enum;

/// A stored value this build's enum or shape does not fit (a row written by another version).
#[derive(Debug, thiserror::Error)]
#[error("stored {kind} {value:?} is not one of this build's values")]
pub struct UnknownStored {
    /// The enum's name.
    pub kind: &'static str,
    /// The value found (its first 64 characters).
    pub value: String,
}

/// Reads a JSON value the server stored in one of its own shapes (a DLQ attempt, a cron
/// job's `workflowConfig`); one that does not fit is an [`UnknownStored`] too.
pub fn stored<T: ParseFromJSON>(
    what: &'static str,
    value: serde_json::Value,
) -> Result<T, UnknownStored> {
    T::parse_from_json(Some(value)).map_err(|e| UnknownStored {
        kind: what,
        value: e.into_message().chars().take(64).collect(),
    })
}

impl From<UnknownStored> for ApiError {
    fn from(err: UnknownStored) -> Self {
        ApiError::internal(&err)
    }
}

wire_enum! {
    /// A run's status.
    pub enum InstanceStatus {
        Pending = "PENDING",
        Running = "RUNNING",
        Completed = "COMPLETED",
        Failed = "FAILED",
        Cancelled = "CANCELLED",
    }
}

wire_enum! {
    /// A DLQ row's status.
    pub enum DlqStatus {
        Pending = "PENDING",
        Retrying = "RETRYING",
        Parked = "PARKED",
        Replayed = "REPLAYED",
        Discarded = "DISCARDED",
    }
}

wire_enum! {
    /// Where a DLQ row's failure came from.
    pub enum DlqSource {
        Command = "command",
        Listener = "listener",
        Cdc = "cdc",
        Cron = "cron",
        Webhook = "webhook",
    }
}

wire_enum! {
    /// A listener's type: `postgresql` (NOTIFY or CDC from a datasource) or `webhook`.
    pub enum ListenerType {
        Postgresql = "postgresql",
        Webhook = "webhook",
    }
}

wire_enum! {
    /// A listener pipeline action's type.
    pub enum ActionType {
        Transform = "transform",
        TriggerWorkflow = "trigger_workflow",
        TriggerQuery = "trigger_query",
        SaveToBuffer = "save_to_buffer",
        PushToAppPage = "push_to_app_page",
    }
}

wire_enum! {
    /// A datasource's type.
    pub enum DatasourceType {
        Postgresql = "postgresql",
        Restapi = "restapi",
        Webhook = "webhook",
    }
}

wire_enum! {
    /// What a cron job does when a fire comes while its previous run still runs: `allow` a
    /// second run, `skip` the fire, or keep one fire buffered (`buffer_one`).
    pub enum OverlapPolicy {
        Allow = "allow",
        Skip = "skip",
        BufferOne = "buffer_one",
    }
}

wire_enum! {
    /// What a cron job does with due times missed while no scheduler ran: `skip` them (counted
    /// in one SKIPPED history row) or `catch_up` the most recent `maxCatchupRuns`.
    pub enum CatchupPolicy {
        Skip = "skip",
        CatchUp = "catch_up",
    }
}

wire_enum! {
    /// Membership role: `ADMIN` may do everything in the tenant; `MEMBER` only what its roles
    /// grant.
    pub enum MembershipRole {
        Admin = "ADMIN",
        Member = "MEMBER",
    }
}

wire_enum! {
    /// A workflow node's type, the editor's name for it (see the README for what each does
    /// and which handles it routes on).
    #[oai(remote = "jet_shared::workflow::nodes::NodeType")]
    pub enum NodeType {
        Start = "start",
        End = "end",
        Condition = "condition",
        Switch = "switch",
        Delay = "delay",
        Loop = "loop",
        Fanout = "fanout",
        Join = "join",
        Javascript = "javascript",
        DataCollection = "dataCollection",
        Approval = "approval",
        SubWorkflow = "subWorkflow",
        DataQuery = "dataQuery",
    }
}

wire_enum! {
    /// A human step's kind: a `form` to fill in or an `approval` to give.
    pub enum CollectionType {
        Form = "form",
        Approval = "approval",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The lists `shared` keeps for the domain checks are the same lists, in the same order.
    #[test]
    fn the_domain_lists_and_the_wire_enums_agree() {
        assert_eq!(
            ListenerType::VALUES,
            jet_shared::listener::config::TYPES.as_slice()
        );
        assert_eq!(
            ActionType::VALUES,
            jet_shared::listener::actions::TYPES.as_slice()
        );
        assert_eq!(DlqSource::VALUES, jet_shared::dlq::SOURCES);
        assert_eq!(DlqStatus::VALUES, jet_shared::dlq::STATUSES);
        let mut datasources = jet_shared::datasource::driver::Drivers::TYPES.to_vec();
        datasources.push(jet_shared::datasource::webhook::TYPE);
        assert_eq!(DatasourceType::VALUES, datasources.as_slice());
    }

    /// The engine's node types are the wire's: the `remote` conversion is an exhaustive match
    /// both ways (a new engine type does not compile until it is here), and the names agree.
    #[test]
    fn node_types_are_the_engines() {
        use jet_shared::workflow::nodes::NodeType as Engine;
        for value in NodeType::VALUES {
            let engine: Engine = value.parse().expect("the engine knows it");
            assert_eq!(engine.as_str(), *value);
            assert_eq!(NodeType::from(engine).as_str(), *value);
        }
    }

    #[test]
    fn a_stored_value_reads_back_and_an_unknown_one_is_refused() {
        for value in InstanceStatus::VALUES {
            let status = InstanceStatus::from_stored(value).expect("listed");
            assert_eq!(status.as_str(), *value);
        }
        let err = OverlapPolicy::from_stored("sometimes").expect_err("not listed");
        assert_eq!(err.kind, "OverlapPolicy");
        assert!(CatchupPolicy::from_stored("CATCH_UP").is_err());
    }
}
