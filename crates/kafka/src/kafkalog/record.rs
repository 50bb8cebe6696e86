//! The records of the decisions log and of the election topic, and their
//! versioned binary encoding (kafka.md §3 rules 2–3).
//!
//! Every record value is `"SKL" | format version (1 byte) | postcard`.
//! The magic lets a node tell a Synod record from anything else someone
//! wrote to the topic; the version lets a later release change the layout
//! while old records still decode (or are refused with a clear error) after
//! a rolling upgrade. A record that does not decode is skipped by every
//! node identically (and counted): it can never block the log.

use serde::{de::DeserializeOwned, Deserialize, Serialize};
use std::fmt;
use synod_decision::MAX_ENCODED_DECISION_BYTES;
use synod_types::{ClientId, NodeId};

/// First bytes of every record value.
pub const RECORD_MAGIC: [u8; 3] = *b"SKL";

/// The layout this build writes and reads.
pub const RECORD_FORMAT_VERSION: u8 = 1;

/// Largest advertised API address a claim or heartbeat may carry: a
/// host name (at most 253 bytes) and a port, with room to spare.
pub const MAX_API_ADDR_BYTES: usize = 300;

/// Largest record value this build decodes: the largest decision body
/// plus the record's fixed fields and an API address, rounded up. Keeps a
/// garbage record from making a node allocate without bound.
pub const MAX_RECORD_BYTES: usize = MAX_ENCODED_DECISION_BYTES + 4096;

/// One record of the decisions log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum LogRecord {
    /// "`node` leads `term`": effective iff `term` is greater than every
    /// earlier claim's term in the log (rule 2).
    Claim(Claim),
    /// A decision appended by the leader of `term` (rule 3).
    Decision(DecisionRecord),
}

/// A claim of leadership (rule 2).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claim {
    /// The term claimed.
    pub term: u64,
    /// The claiming node.
    pub node: NodeId,
    /// Random id of the claiming process's incarnation. A restarted node
    /// must not mistake a claim its previous incarnation made (and whose
    /// decisions may still be in flight) for its own, or it would reuse
    /// that term's sequence numbers: it only leads a term whose winning
    /// claim carries its own `boot`.
    pub boot: u64,
    /// The claimant's HTTP API address, `host:port`: followers redirect
    /// proposals there.
    pub api_addr: String,
}

/// A decision as the leader appends it (rule 3).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DecisionRecord {
    /// The leader's term.
    pub term: u64,
    /// The leader that appended it.
    pub leader: NodeId,
    /// 1 for the first decision of `term`, then +1 per decision.
    pub seq: u64,
    /// Client session (`synod_decision::command`).
    pub client: ClientId,
    /// Request number within the session.
    pub request: u64,
    /// `synod_decision::Decision::encode()`.
    pub body: Vec<u8>,
}

/// One message of the election topic (liveness only: it confers nothing).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ElectionMessage {
    /// The leader of `term` is alive.
    Heartbeat {
        /// Its term.
        term: u64,
        /// The leader.
        node: NodeId,
        /// Its incarnation (see [`Claim::boot`]).
        boot: u64,
    },
}

/// Why a record value does not decode. Coarse and independent of the codec
/// library's error text, so every node counts the same thing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RecordError {
    /// Zero bytes (or a null value).
    Empty,
    /// More than [`MAX_RECORD_BYTES`].
    TooLarge {
        /// its length
        len: usize,
    },
    /// Not starting with [`RECORD_MAGIC`]: not a Synod record.
    BadMagic,
    /// A layout this build does not read.
    UnsupportedVersion {
        /// the version byte found
        found: u8,
    },
    /// The bytes after the header do not parse.
    Malformed,
    /// A record parsed but bytes were left over.
    TrailingBytes {
        /// how many
        count: usize,
    },
    /// A claim's `api_addr` is longer than [`MAX_API_ADDR_BYTES`].
    ApiAddrTooLong {
        /// its length
        len: usize,
    },
}

impl fmt::Display for RecordError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RecordError::Empty => write!(f, "empty record"),
            RecordError::TooLarge { len } => {
                write!(f, "record is {len} bytes, at most {MAX_RECORD_BYTES}")
            }
            RecordError::BadMagic => write!(f, "not a Synod Kafka-log record (bad magic)"),
            RecordError::UnsupportedVersion { found } => write!(
                f,
                "record format version {found}, this build reads {RECORD_FORMAT_VERSION}"
            ),
            RecordError::Malformed => write!(f, "record does not parse"),
            RecordError::TrailingBytes { count } => write!(f, "{count} trailing bytes"),
            RecordError::ApiAddrTooLong { len } => {
                write!(f, "api_addr is {len} bytes, at most {MAX_API_ADDR_BYTES}")
            }
        }
    }
}

impl std::error::Error for RecordError {}

fn encode_value<T: Serialize>(value: &T) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    out.extend_from_slice(&RECORD_MAGIC);
    out.push(RECORD_FORMAT_VERSION);
    // Serializing owned data into a growable Vec cannot fail (postcard
    // only fails on a full fixed buffer or a sequence of unknown length).
    postcard::to_extend(value, out).expect("encoding a record into a Vec cannot fail")
}

fn decode_value<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, RecordError> {
    if bytes.is_empty() {
        return Err(RecordError::Empty);
    }
    if bytes.len() > MAX_RECORD_BYTES {
        return Err(RecordError::TooLarge { len: bytes.len() });
    }
    let Some(rest) = bytes.strip_prefix(&RECORD_MAGIC[..]) else {
        return Err(RecordError::BadMagic);
    };
    let Some((&version, rest)) = rest.split_first() else {
        return Err(RecordError::Malformed);
    };
    if version != RECORD_FORMAT_VERSION {
        return Err(RecordError::UnsupportedVersion { found: version });
    }
    let (value, left) = postcard::take_from_bytes::<T>(rest).map_err(|_| RecordError::Malformed)?;
    if !left.is_empty() {
        return Err(RecordError::TrailingBytes { count: left.len() });
    }
    Ok(value)
}

impl LogRecord {
    /// The record's value bytes.
    pub fn encode(&self) -> Vec<u8> {
        encode_value(self)
    }

    /// Decodes a record value; never panics.
    pub fn decode(bytes: &[u8]) -> Result<LogRecord, RecordError> {
        let r: LogRecord = decode_value(bytes)?;
        if let LogRecord::Claim(c) = &r {
            if c.api_addr.len() > MAX_API_ADDR_BYTES {
                return Err(RecordError::ApiAddrTooLong {
                    len: c.api_addr.len(),
                });
            }
        }
        Ok(r)
    }
}

impl ElectionMessage {
    /// The message's value bytes.
    pub fn encode(&self) -> Vec<u8> {
        encode_value(self)
    }

    /// Decodes an election message; never panics.
    pub fn decode(bytes: &[u8]) -> Result<ElectionMessage, RecordError> {
        decode_value(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claim() -> LogRecord {
        LogRecord::Claim(Claim {
            term: 3,
            node: 2,
            boot: 99,
            api_addr: "10.0.0.2:7000".into(),
        })
    }

    #[test]
    fn records_round_trip() {
        let d = LogRecord::Decision(DecisionRecord {
            term: 3,
            leader: 2,
            seq: 1,
            client: 7,
            request: 4,
            body: vec![1, 2, 3],
        });
        for r in [claim(), d] {
            assert_eq!(LogRecord::decode(&r.encode()), Ok(r));
        }
        let h = ElectionMessage::Heartbeat {
            term: 1,
            node: 1,
            boot: 5,
        };
        assert_eq!(ElectionMessage::decode(&h.encode()), Ok(h));
    }

    #[test]
    fn bad_bytes_are_typed_errors() {
        let good = claim().encode();
        assert_eq!(LogRecord::decode(&[]), Err(RecordError::Empty));
        assert_eq!(LogRecord::decode(b"hello"), Err(RecordError::BadMagic));
        let mut v2 = good.clone();
        v2[3] = 2;
        assert_eq!(
            LogRecord::decode(&v2),
            Err(RecordError::UnsupportedVersion { found: 2 })
        );
        let mut long = good.clone();
        long.push(0);
        assert_eq!(
            LogRecord::decode(&long),
            Err(RecordError::TrailingBytes { count: 1 })
        );
        assert_eq!(
            LogRecord::decode(&good[..good.len() - 1]),
            Err(RecordError::Malformed)
        );
        assert_eq!(
            LogRecord::decode(&vec![0; MAX_RECORD_BYTES + 1]),
            Err(RecordError::TooLarge {
                len: MAX_RECORD_BYTES + 1
            })
        );
        let big = LogRecord::Claim(Claim {
            term: 1,
            node: 1,
            boot: 1,
            api_addr: "x".repeat(MAX_API_ADDR_BYTES + 1),
        });
        assert_eq!(
            LogRecord::decode(&big.encode()),
            Err(RecordError::ApiAddrTooLong {
                len: MAX_API_ADDR_BYTES + 1
            })
        );
        // Every truncation of a valid record is an error, never a panic.
        for n in 0..good.len() {
            assert!(LogRecord::decode(&good[..n]).is_err(), "prefix {n}");
        }
    }
}
