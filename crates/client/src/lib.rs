//! Synod's client side: the HTTP/JSON wire types ([`wire`]) and a small
//! blocking HTTP/1.1 client ([`Client`]) with failover between replicas.
//!
//! The client is plain `std::net` (no async runtime, no HTTP library): it is
//! what the `synod` CLI, tests and tools use to talk to a cluster, and it
//! keeps their build lean.
#![deny(missing_docs)]

pub mod client;
pub mod frontier;
pub mod http;
pub mod session;
pub mod subscribe;
pub mod wire;

pub use client::{Client, ClientError, CONNECT_TIMEOUT_DEFAULT, READ_TIMEOUT_DEFAULT};
pub use http::MAX_RESPONSE_BYTES;
