//! Synod's client side: the HTTP/JSON wire types ([`wire`]) and a small
//! blocking HTTP/1.1 client ([`Client`]) with failover between replicas;
//! exactly-once proposals one at a time ([`Session`]) or up to a bounded
//! window at once ([`Pipeline`]); a resumable subscription to the committed
//! stream ([`subscribe::Subscription`]).
//!
//! The client is plain `std::net` (no async runtime, no HTTP library): it is
//! what the `synod` CLI, tests and tools use to talk to a cluster, and it
//! keeps their build lean.
#![deny(missing_docs)]

pub mod client;
pub mod frontier;
pub mod http;
pub mod pipeline;
mod retry;
pub mod session;
pub mod subscribe;
pub mod wire;

pub use client::{Client, ClientError, CONNECT_TIMEOUT_DEFAULT, READ_TIMEOUT_DEFAULT};
pub use http::MAX_RESPONSE_BYTES;
pub use pipeline::{Pipeline, PipelineError, PipelineOptions, PipelineStats, Ticket, MAX_WINDOW};
pub use session::{Session, OVERLOAD_RETRIES_MAX};
