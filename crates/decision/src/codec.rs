//! Body codec, snapshot framing and the deterministic FNV-1a digest.
//!
//! Everything here is total: malformed input yields a typed error, never a
//! panic (quality-bars.md R9).

use crate::decision::{Decision, MAX_ENCODED_DECISION_BYTES};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::fmt;

/// First byte of every encoded [`Decision`]: lets a later release change the
/// body format while old bodies still decode (or are refused with a clear
/// error) after a rolling upgrade.
pub const DECISION_FORMAT_VERSION: u8 = 1;

/// Version of the snapshot layout written by [`crate::StateMachine::snapshot`].
pub const SNAPSHOT_FORMAT_VERSION: u32 = 1;

/// Snapshot magic: identifies a decision-state-machine snapshot file.
const SNAPSHOT_MAGIC: [u8; 8] = *b"SYNODSM\0";

/// magic (8) + format version (u32 LE) + payload length (u64 LE).
const SNAPSHOT_HEADER_BYTES: usize = 8 + 4 + 8;

/// FNV-1a checksum (u64 LE) over header and payload.
const SNAPSHOT_TRAILER_BYTES: usize = 8;

/// Why a command body is not a decision.
///
/// Deliberately coarse and independent of the codec library's error text:
/// it is recorded in client sessions and hashed into the digest, so it must
/// be identical on replicas built against different library versions.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum DecodeError {
    /// Zero bytes.
    Empty,
    /// More than [`MAX_ENCODED_DECISION_BYTES`].
    TooLarge {
        /// body length
        len: usize,
        /// the limit
        max: usize,
    },
    /// The first byte is not [`DECISION_FORMAT_VERSION`].
    UnsupportedVersion {
        /// the byte found
        found: u8,
    },
    /// The bytes do not parse as a decision.
    Malformed,
    /// A decision parsed but bytes were left over.
    TrailingBytes {
        /// how many
        count: usize,
    },
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::Empty => write!(f, "empty body"),
            DecodeError::TooLarge { len, max } => {
                write!(f, "body is {len} bytes, at most {max} allowed")
            }
            DecodeError::UnsupportedVersion { found } => write!(
                f,
                "body format version {found}, this build reads {DECISION_FORMAT_VERSION}"
            ),
            DecodeError::Malformed => write!(f, "body does not parse as a decision"),
            DecodeError::TrailingBytes { count } => {
                write!(f, "{count} trailing bytes after the decision")
            }
        }
    }
}

impl std::error::Error for DecodeError {}

impl Decision {
    /// Encodes the decision as a command body: [`DECISION_FORMAT_VERSION`]
    /// followed by its postcard encoding. Does not validate; an invalid
    /// decision encodes and is rejected (and recorded) at execution.
    pub fn encode(&self) -> Vec<u8> {
        let out = vec![DECISION_FORMAT_VERSION];
        // Serializing plain owned data into a growable Vec cannot fail: the
        // only postcard serialization errors are a full fixed buffer and
        // sequences of unknown length, neither of which occurs here.
        postcard::to_extend(self, out).expect("encoding a Decision into a Vec cannot fail")
    }

    /// Decodes a command body. Never panics; malformed bytes give a typed
    /// error. Does not validate ([`Decision::validate`] does).
    pub fn decode(bytes: &[u8]) -> Result<Decision, DecodeError> {
        let Some((&version, rest)) = bytes.split_first() else {
            return Err(DecodeError::Empty);
        };
        if bytes.len() > MAX_ENCODED_DECISION_BYTES {
            return Err(DecodeError::TooLarge {
                len: bytes.len(),
                max: MAX_ENCODED_DECISION_BYTES,
            });
        }
        if version != DECISION_FORMAT_VERSION {
            return Err(DecodeError::UnsupportedVersion { found: version });
        }
        decode_exact(rest).map_err(|e| match e {
            ExactError::Malformed => DecodeError::Malformed,
            ExactError::Trailing(count) => DecodeError::TrailingBytes { count },
        })
    }
}

pub(crate) enum ExactError {
    Malformed,
    Trailing(usize),
}

/// Postcard-decodes `bytes` as exactly one `T`.
pub(crate) fn decode_exact<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ExactError> {
    let (value, rest) = postcard::take_from_bytes::<T>(bytes).map_err(|_| ExactError::Malformed)?;
    if !rest.is_empty() {
        return Err(ExactError::Trailing(rest.len()));
    }
    Ok(value)
}

/// 64-bit FNV-1a. Chosen over std's hashers because it is specified, has no
/// per-process random seed, and is stable across Rust releases, so digests
/// computed on different replicas (and builds) compare. As a checksum it
/// detects every single-byte change: each step `h = (h ^ b) * PRIME` is a
/// bijection of `h` for a fixed `b`, so two inputs differing in one byte end
/// in different hashes. It is not a defence against a malicious writer.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Fnv1a(u64);

impl Fnv1a {
    const OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;

    pub(crate) fn new() -> Fnv1a {
        Fnv1a(Self::OFFSET_BASIS)
    }

    pub(crate) fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(Self::PRIME);
        }
    }

    pub(crate) fn finish(self) -> u64 {
        self.0
    }
}

/// FNV-1a of a byte string.
pub(crate) fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h = Fnv1a::new();
    h.write(bytes);
    h.finish()
}

/// A postcard output "flavor" that feeds bytes into FNV-1a instead of a
/// buffer, so the digest of a large state needs no allocation. Postcard's
/// encoding of `BTreeMap`s and plain structs is canonical (fixed field order,
/// sorted map keys, minimal varints), so equal states hash equally.
struct HashFlavor(Fnv1a);

impl postcard::ser_flavors::Flavor for HashFlavor {
    type Output = u64;

    fn try_extend(&mut self, data: &[u8]) -> postcard::Result<()> {
        self.0.write(data);
        Ok(())
    }

    fn try_push(&mut self, data: u8) -> postcard::Result<()> {
        self.0.write(&[data]);
        Ok(())
    }

    fn finalize(self) -> postcard::Result<u64> {
        Ok(self.0.finish())
    }
}

/// FNV-1a over the canonical postcard encoding of `value`, prefixed by a
/// domain tag so different structures never share a digest by construction.
pub(crate) fn digest_of<T: Serialize>(domain: &[u8], value: &T) -> u64 {
    let mut h = Fnv1a::new();
    h.write(domain);
    postcard::serialize_with_flavor(value, HashFlavor(h))
        .expect("hashing flavor never fails and state has known lengths")
}

/// Why a snapshot cannot be restored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SnapshotError {
    /// Shorter than header plus checksum.
    Truncated {
        /// bytes given
        len: usize,
    },
    /// Does not start with the snapshot magic.
    BadMagic,
    /// Written by an unknown format version.
    UnsupportedVersion {
        /// version found
        found: u32,
    },
    /// The header's payload length does not match the bytes given.
    LengthMismatch {
        /// length in the header
        declared: u64,
        /// length present
        actual: u64,
    },
    /// The checksum does not match: the bytes are corrupted.
    ChecksumMismatch {
        /// checksum stored in the snapshot
        stored: u64,
        /// checksum of the bytes present
        computed: u64,
    },
    /// The checksum matches but the payload does not parse.
    Malformed,
    /// The payload parses but breaks a state invariant.
    Invalid(String),
}

impl fmt::Display for SnapshotError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SnapshotError::Truncated { len } => write!(f, "snapshot truncated ({len} bytes)"),
            SnapshotError::BadMagic => write!(f, "not a decision state machine snapshot"),
            SnapshotError::UnsupportedVersion { found } => write!(
                f,
                "snapshot format version {found}, this build reads {SNAPSHOT_FORMAT_VERSION}"
            ),
            SnapshotError::LengthMismatch { declared, actual } => write!(
                f,
                "snapshot header declares {declared} payload bytes, {actual} present"
            ),
            SnapshotError::ChecksumMismatch { stored, computed } => write!(
                f,
                "snapshot checksum mismatch: stored {stored:#018x}, computed {computed:#018x}"
            ),
            SnapshotError::Malformed => write!(f, "snapshot payload does not parse"),
            SnapshotError::Invalid(why) => write!(f, "snapshot breaks an invariant: {why}"),
        }
    }
}

impl std::error::Error for SnapshotError {}

/// Frames `value` as a snapshot:
/// `magic | version u32 LE | payload_len u64 LE | payload | fnv1a u64 LE`.
pub(crate) fn write_snapshot<T: Serialize>(value: &T) -> Vec<u8> {
    let payload = postcard::to_allocvec(value).expect("encoding state into a Vec cannot fail");
    let mut out = Vec::with_capacity(SNAPSHOT_HEADER_BYTES + payload.len() + 8);
    out.extend_from_slice(&SNAPSHOT_MAGIC);
    out.extend_from_slice(&SNAPSHOT_FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    out.extend_from_slice(&payload);
    let checksum = fnv1a(&out);
    out.extend_from_slice(&checksum.to_le_bytes());
    out
}

/// Checks the framing written by [`write_snapshot`] and decodes the payload.
pub(crate) fn read_snapshot<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, SnapshotError> {
    if bytes.len() < SNAPSHOT_HEADER_BYTES + SNAPSHOT_TRAILER_BYTES {
        return Err(SnapshotError::Truncated { len: bytes.len() });
    }
    let (body, trailer) = bytes.split_at(bytes.len() - SNAPSHOT_TRAILER_BYTES);
    let (header, payload) = body.split_at(SNAPSHOT_HEADER_BYTES);
    if header[..8] != SNAPSHOT_MAGIC {
        return Err(SnapshotError::BadMagic);
    }
    let version = u32::from_le_bytes(le_array(&header[8..12]));
    if version != SNAPSHOT_FORMAT_VERSION {
        return Err(SnapshotError::UnsupportedVersion { found: version });
    }
    let declared = u64::from_le_bytes(le_array(&header[12..20]));
    if declared != payload.len() as u64 {
        return Err(SnapshotError::LengthMismatch {
            declared,
            actual: payload.len() as u64,
        });
    }
    let stored = u64::from_le_bytes(le_array(trailer));
    let computed = fnv1a(body);
    if stored != computed {
        return Err(SnapshotError::ChecksumMismatch { stored, computed });
    }
    decode_exact(payload).map_err(|_| SnapshotError::Malformed)
}

fn le_array<const N: usize>(bytes: &[u8]) -> [u8; N] {
    let mut out = [0u8; N];
    out.copy_from_slice(bytes);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a_matches_reference_vectors() {
        // Reference values from the FNV specification (draft-eastlake-fnv).
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a(b"foobar"), 0x8594_4171_f739_67e8);
    }
}
