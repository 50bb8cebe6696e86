//! The wire format: a fixed-size [`Hello`] once per connection, then
//! length-prefixed frames. Pure and synchronous (no tokio, no I/O), so every
//! decoder here can be fuzzed directly.
//!
//! # Connection
//!
//! ```text
//! dialer  -> acceptor : Hello (HELLO_LEN bytes)
//! acceptor -> dialer  : Hello (HELLO_LEN bytes), only if the dialer's Hello passed
//! dialer  -> acceptor : frame, frame, ...        (the acceptor never writes again)
//! ```
//!
//! # Hello (fixed [`HELLO_LEN`] = 16 bytes, little-endian)
//!
//! | bytes  | field        |                                           |
//! |--------|--------------|-------------------------------------------|
//! | 0..4   | `magic`      | [`MAGIC`], rejects a stray client early   |
//! | 4..6   | `version`    | [`VERSION`], must be equal on both ends   |
//! | 6..14  | `cluster_id` | must be equal on both ends                |
//! | 14..16 | `from`       | the sender's [`NodeId`]                   |
//!
//! # Frame
//!
//! ```text
//! [body_len: u32 LE][body: postcard encoding of a sequence of messages]
//! ```
//!
//! `body_len` counts the body only (not the 4-byte prefix) and must be at most
//! the receiver's `max_frame_bytes`: a receiver checks the prefix *before*
//! allocating the body ([`check_frame_len`]). The body is exactly postcard's
//! encoding of a `Vec<M>`: a varint count followed by the messages, and
//! [`decode_frame`] rejects trailing bytes. A frame is never empty (the
//! writer sends only when it has a message), but an empty sequence decodes
//! fine.

use serde::de::DeserializeOwned;
use serde::Serialize;
use std::fmt;
use synod_types::NodeId;

/// Bytes of the length prefix in front of every frame body.
pub const FRAME_HEADER_LEN: usize = 4;

/// First four bytes of every [`Hello`]: "SYNd" read as a little-endian u32.
/// Rejects a client speaking another protocol (HTTP, a port scanner) on its
/// first 4 bytes.
pub const MAGIC: u32 = u32::from_le_bytes(*b"SYNd");

/// Wire-format version. Bumped on any incompatible change to the Hello, the
/// framing or the message types; both ends must run the same version (a
/// rolling upgrade across versions is not supported yet).
pub const VERSION: u16 = 1;

/// Size of an encoded [`Hello`].
pub const HELLO_LEN: usize = 16;

/// Longest varint postcard writes for a `usize` sequence length on a 64-bit
/// target (10 bytes: 7 bits per byte). Only used to reserve room in front of
/// a [`FrameBuilder`]'s body.
const VARINT_USIZE_MAX_LEN: usize = 10;

/// Why a frame or a Hello was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CodecError {
    /// A frame body of `len` bytes exceeds the limit `max` (on receive: the
    /// length prefix said so, nothing was allocated; on send: the encoding
    /// came out that large and was discarded).
    TooLarge {
        /// Body length in bytes.
        len: u64,
        /// The limit (`max_frame_bytes`).
        max: u32,
    },
    /// Fewer bytes than the fixed-size item needs.
    Truncated {
        /// Bytes needed.
        need: usize,
        /// Bytes given.
        got: usize,
    },
    /// The body does not decode as a sequence of messages (or has trailing
    /// bytes).
    Malformed(String),
    /// Serialization failed (a type postcard cannot encode, e.g. a sequence
    /// of unknown length).
    Encode(String),
    /// The Hello does not start with [`MAGIC`].
    BadMagic {
        /// What was found instead.
        found: u32,
    },
    /// The peer speaks another wire-format version.
    VersionMismatch {
        /// [`VERSION`].
        ours: u16,
        /// The peer's.
        theirs: u16,
    },
    /// The peer belongs to another cluster.
    ClusterMismatch {
        /// Our cluster id.
        ours: u64,
        /// The peer's.
        theirs: u64,
    },
    /// The Hello names a node that is not one of our peers (or is us).
    UnknownPeer(NodeId),
}

impl fmt::Display for CodecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CodecError::TooLarge { len, max } => {
                write!(f, "frame body of {len} bytes exceeds max_frame_bytes {max}")
            }
            CodecError::Truncated { need, got } => {
                write!(f, "truncated: need {need} bytes, got {got}")
            }
            CodecError::Malformed(why) => write!(f, "malformed frame: {why}"),
            CodecError::Encode(why) => write!(f, "cannot encode message: {why}"),
            CodecError::BadMagic { found } => {
                write!(f, "bad magic {found:#010x}, expected {MAGIC:#010x}")
            }
            CodecError::VersionMismatch { ours, theirs } => {
                write!(f, "wire version mismatch: ours {ours}, peer's {theirs}")
            }
            CodecError::ClusterMismatch { ours, theirs } => {
                write!(f, "cluster id mismatch: ours {ours}, peer's {theirs}")
            }
            CodecError::UnknownPeer(id) => write!(f, "hello from unknown node {id}"),
        }
    }
}

impl std::error::Error for CodecError {}

/// The first thing each end of a connection sends (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hello {
    /// [`MAGIC`].
    pub magic: u32,
    /// [`VERSION`].
    pub version: u16,
    /// The sender's cluster id.
    pub cluster_id: u64,
    /// The sender's node id.
    pub from: NodeId,
}

impl Hello {
    /// Our Hello: current magic and version.
    pub fn new(cluster_id: u64, from: NodeId) -> Hello {
        Hello {
            magic: MAGIC,
            version: VERSION,
            cluster_id,
            from,
        }
    }

    /// The fixed-size encoding.
    pub fn encode(&self) -> [u8; HELLO_LEN] {
        let mut out = [0u8; HELLO_LEN];
        out[0..4].copy_from_slice(&self.magic.to_le_bytes());
        out[4..6].copy_from_slice(&self.version.to_le_bytes());
        out[6..14].copy_from_slice(&self.cluster_id.to_le_bytes());
        out[14..16].copy_from_slice(&self.from.to_le_bytes());
        out
    }

    /// Decodes exactly [`HELLO_LEN`] bytes and checks magic and version.
    /// Cluster id and sender are checked by [`Hello::verify`].
    pub fn decode(bytes: &[u8]) -> Result<Hello, CodecError> {
        if bytes.len() != HELLO_LEN {
            return Err(CodecError::Truncated {
                need: HELLO_LEN,
                got: bytes.len(),
            });
        }
        let magic = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
        if magic != MAGIC {
            return Err(CodecError::BadMagic { found: magic });
        }
        let version = u16::from_le_bytes([bytes[4], bytes[5]]);
        if version != VERSION {
            return Err(CodecError::VersionMismatch {
                ours: VERSION,
                theirs: version,
            });
        }
        let mut cluster = [0u8; 8];
        cluster.copy_from_slice(&bytes[6..14]);
        Ok(Hello {
            magic,
            version,
            cluster_id: u64::from_le_bytes(cluster),
            from: u16::from_le_bytes([bytes[14], bytes[15]]),
        })
    }

    /// Checks that the sender is in our cluster and is a node we accept
    /// (`is_peer(from)`).
    pub fn verify(
        &self,
        cluster_id: u64,
        is_peer: impl Fn(NodeId) -> bool,
    ) -> Result<(), CodecError> {
        if self.cluster_id != cluster_id {
            return Err(CodecError::ClusterMismatch {
                ours: cluster_id,
                theirs: self.cluster_id,
            });
        }
        if !is_peer(self.from) {
            return Err(CodecError::UnknownPeer(self.from));
        }
        Ok(())
    }
}

/// Checks a frame's length prefix against `max_frame_bytes` and returns the
/// body length. Called before any buffer for the body is allocated.
pub fn check_frame_len(
    header: [u8; FRAME_HEADER_LEN],
    max_frame_bytes: u32,
) -> Result<usize, CodecError> {
    let len = u32::from_le_bytes(header);
    if len > max_frame_bytes {
        return Err(CodecError::TooLarge {
            len: u64::from(len),
            max: max_frame_bytes,
        });
    }
    Ok(len as usize)
}

/// Splits one complete frame off the front of `buf`: `Ok(Some((body,
/// consumed)))`, or `Ok(None)` if more bytes are needed. The length prefix is
/// checked first, so an oversized prefix is refused as soon as its 4 bytes
/// are in, whatever follows.
pub fn split_frame(buf: &[u8], max_frame_bytes: u32) -> Result<Option<(&[u8], usize)>, CodecError> {
    let Some(header) = buf.first_chunk::<FRAME_HEADER_LEN>() else {
        return Ok(None);
    };
    let len = check_frame_len(*header, max_frame_bytes)?;
    let end = FRAME_HEADER_LEN + len;
    if buf.len() < end {
        return Ok(None);
    }
    Ok(Some((&buf[FRAME_HEADER_LEN..end], end)))
}

/// Appends one frame holding `batch` to `out`: a u32 LE body length, then the
/// postcard encoding of the batch as a `Vec<M>`. On error `out` is left as it
/// was.
pub fn encode_frame<M: Serialize>(
    batch: &[M],
    max_frame_bytes: u32,
    out: &mut Vec<u8>,
) -> Result<(), CodecError> {
    let start = out.len();
    out.extend_from_slice(&[0u8; FRAME_HEADER_LEN]);
    if let Err(e) = append_postcard(batch, out) {
        out.truncate(start);
        return Err(e);
    }
    let body_len = out.len() - start - FRAME_HEADER_LEN;
    if body_len as u64 > u64::from(max_frame_bytes) {
        out.truncate(start);
        return Err(CodecError::TooLarge {
            len: body_len as u64,
            max: max_frame_bytes,
        });
    }
    out[start..start + FRAME_HEADER_LEN].copy_from_slice(&(body_len as u32).to_le_bytes());
    Ok(())
}

/// A postcard output that appends to a borrowed `Vec` (postcard's own
/// `to_extend` takes the vector by value and loses it on error).
struct AppendVec<'a>(&'a mut Vec<u8>);

impl postcard::ser_flavors::Flavor for AppendVec<'_> {
    type Output = ();

    fn try_extend(&mut self, data: &[u8]) -> postcard::Result<()> {
        self.0.extend_from_slice(data);
        Ok(())
    }

    fn try_push(&mut self, data: u8) -> postcard::Result<()> {
        self.0.push(data);
        Ok(())
    }

    fn finalize(self) -> postcard::Result<()> {
        Ok(())
    }
}

/// Appends the postcard encoding of `value` to `out`; on error `out` may hold
/// a partial encoding (callers truncate).
fn append_postcard<T: Serialize + ?Sized>(value: &T, out: &mut Vec<u8>) -> Result<(), CodecError> {
    postcard::serialize_with_flavor(value, AppendVec(out))
        .map_err(|e| CodecError::Encode(e.to_string()))
}

/// Appends `v` as an unsigned LEB128 varint, the encoding postcard uses for
/// sequence lengths.
fn push_varint_usize(mut v: usize, out: &mut Vec<u8>) {
    loop {
        let byte = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

/// Bytes [`push_varint_usize`] writes for `v`.
fn varint_len(v: usize) -> usize {
    let bits = usize::BITS - v.leading_zeros();
    (bits.max(1) as usize).div_ceil(7)
}

/// Builds one frame message by message, so a writer can stop at a byte
/// budget and drop a single oversized message without encoding the batch
/// twice. The result is byte-for-byte what [`encode_frame`] produces for the
/// same messages.
///
/// Layout while building: `[reserved header room][message bytes...]`; the
/// length prefix and the varint count are written right-aligned into the
/// reserved room by [`FrameBuilder::finish`], so the body is never copied.
#[derive(Debug)]
pub struct FrameBuilder {
    /// Reserved header room followed by the encoded messages.
    buf: Vec<u8>,
    /// Messages pushed since the last `clear`.
    count: usize,
}

/// Room reserved in front of a [`FrameBuilder`]'s messages: the length
/// prefix plus the longest varint count.
const BUILDER_RESERVED: usize = FRAME_HEADER_LEN + VARINT_USIZE_MAX_LEN;

impl Default for FrameBuilder {
    fn default() -> Self {
        FrameBuilder::new()
    }
}

impl FrameBuilder {
    /// An empty builder.
    pub fn new() -> FrameBuilder {
        FrameBuilder {
            buf: vec![0u8; BUILDER_RESERVED],
            count: 0,
        }
    }

    /// Starts a new frame, keeping the allocation.
    pub fn clear(&mut self) {
        self.buf.truncate(BUILDER_RESERVED);
        self.count = 0;
    }

    /// Messages in the frame being built.
    pub fn len(&self) -> usize {
        self.count
    }

    /// True when no message has been pushed.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Body bytes the frame would have if finished now.
    pub fn body_len(&self) -> usize {
        varint_len(self.count) + self.buf.len() - BUILDER_RESERVED
    }

    /// Encodes `msg` onto the frame if the body stays within
    /// `max_frame_bytes`. On `TooLarge` or `Encode` the frame is unchanged;
    /// `TooLarge` with an empty frame means the message alone does not fit.
    pub fn push<M: Serialize>(&mut self, msg: &M, max_frame_bytes: u32) -> Result<(), CodecError> {
        let before = self.buf.len();
        if let Err(e) = append_postcard(msg, &mut self.buf) {
            self.buf.truncate(before);
            return Err(e);
        }
        self.count += 1;
        let body_len = self.body_len();
        if body_len as u64 > u64::from(max_frame_bytes) {
            self.buf.truncate(before);
            self.count -= 1;
            return Err(CodecError::TooLarge {
                len: body_len as u64,
                max: max_frame_bytes,
            });
        }
        Ok(())
    }

    /// Writes the header and returns the complete frame (prefix + body).
    /// The builder must be [`clear`](FrameBuilder::clear)ed before reuse.
    pub fn finish(&mut self) -> &[u8] {
        let mut header = Vec::with_capacity(BUILDER_RESERVED);
        let body_len = self.body_len();
        header.extend_from_slice(&(body_len as u32).to_le_bytes());
        push_varint_usize(self.count, &mut header);
        let start = BUILDER_RESERVED - header.len();
        self.buf[start..BUILDER_RESERVED].copy_from_slice(&header);
        &self.buf[start..]
    }
}

/// Decodes a frame body (without its length prefix) into its messages.
/// Never panics on any input; trailing bytes are an error.
pub fn decode_frame<M: DeserializeOwned>(body: &[u8]) -> Result<Vec<M>, CodecError> {
    let (msgs, rest) = postcard::take_from_bytes::<Vec<M>>(body)
        .map_err(|e| CodecError::Malformed(e.to_string()))?;
    if !rest.is_empty() {
        return Err(CodecError::Malformed(format!(
            "{} trailing bytes after {} messages",
            rest.len(),
            msgs.len()
        )));
    }
    Ok(msgs)
}
