//! Kafka-log mode, `synod agent --kafka-log` (kafka.md §3): one partition
//! of a Kafka topic is the decision log; EPaxos\* is not involved.
//!
//! - [`record`]: the log's records (`Claim`, `Decision`) and the election
//!   topic's heartbeats, in a versioned binary encoding;
//! - [`fold`]: the pure fold ([`LogState`]): rules 2–3 decide which records
//!   are valid, valid decisions go to the decision state machine with the
//!   replica's session rules; snapshots (rule 6);
//! - [`store`]: snapshot files, written atomically;
//! - [`agent`]: the reader and driver threads around the fold: Kafka
//!   clients, elections, appends, answers after read-back (rule 4),
//!   transactional fencing (rule 5), rule 7's contract;
//! - [`http`]: the replica-shaped HTTP API.
//!
//! Safety rests on rules 2–4 alone, which every node applies identically
//! while reading the same log; transactions (rule 5) only make a deposed
//! leader's appends fail earlier, and can be switched off for brokers
//! without them.

pub mod agent;
pub mod fold;
pub mod http;
pub mod record;
pub mod store;

pub use agent::{Agent, AgentConfig, AgentError, AgentHandle, AgentStatus, Proposed};
pub use fold::{Counters, Invalid, Leader, LogState, Rules, Step};
pub use record::{Claim, DecisionRecord, ElectionMessage, LogRecord, RecordError};
