//! Workflows: definitions (graph + validation), instances and their append-only log, the
//! node-execution queue, and the node types.

mod batch_settle;
pub mod context;
pub mod definition;
mod dominance;
pub mod explain;
pub mod finish;
pub mod graph;
pub mod handles;
pub mod human;
pub mod instance;
mod joins;
mod loop_node;
pub mod node_config;
pub mod nodes;
pub mod queue;
pub mod sandbox;
pub mod settle;
pub mod storable;
pub mod subworkflow;
pub mod template;
