//! The EPaxos\* replica as a pure state machine.
//!
//! This crate implements `shared/design/epaxos.md` (Ryabinin, Gotsman, Sutra,
//! OPODIS 2025). A [`Replica`] is driven by three inputs, [`Replica::propose`]
//! (client commands, batched), [`Replica::step`] (a message from a peer) and
//! [`Replica::tick`] (one unit of logical time), and answers each with an
//! [`Output`].
//!
//! # The output contract (epaxos.md §2.4)
//!
//! The caller must handle every `Output` in this order:
//!
//! 1. make `writes` durable (fsync; group commit across outputs is fine);
//! 2. only then send `messages`;
//! 3. then apply `executions`, in order, to the state machine, persisting the
//!    application state and the executed set atomically;
//! 4. then answer clients (`executions` of own commands, `aborted`).
//!
//! Nothing from an output may be released before the writes of that output and
//! of every earlier output are durable. The core never does I/O, reads no
//! clock and uses no OS randomness: time is [`Replica::tick`], randomness is
//! a seed in [`Options`].

#![deny(missing_docs)]

mod messages;
mod replica;

pub use messages::{Envelope, Message};
pub use replica::{
    Aborted, EpochState, Execution, InstanceRecord, Mutation, Options, Output, Replica, SealRecord,
    SealReport, Stats, Write,
};
pub use synod_types as types;
