//! On-disk layouts: segment header, record header, snapshot header, file names.
//!
//! All integers are little-endian. Every byte that recovery trusts is covered
//! by a crc32c (Castagnoli):
//!
//! ```text
//! segment header (24 B): "SYNODWAL" | version u32 | crc u32 | first_lsn u64
//!                        crc = crc32c(magic | version | first_lsn)
//! record (16 B + len):   len u32 | crc u32 | lsn u64 | payload[len]
//!                        crc = crc32c(lsn | payload)
//! snapshot header (32 B): "SYNODSNP" | version u32 | crc u32 | lsn u64 | len u64
//!                        crc = crc32c(lsn | len | body); body[len] follows
//! ```
//!
//! A record header of sixteen zero bytes marks the end of a segment's records:
//! segments are zero-filled when preallocated, and no valid record header is
//! all zeros (LSNs start at 1). The record `len` is not under the crc, but a
//! wrong `len` moves the payload window, which the crc then catches.

use crate::Lsn;

/// Segment file magic.
pub(crate) const SEG_MAGIC: &[u8; 8] = b"SYNODWAL";
/// Segment format version; bump on any layout change.
pub(crate) const SEG_VERSION: u32 = 1;
/// Bytes of the segment header.
pub(crate) const SEG_HEADER_LEN: usize = 24;
/// Bytes of a record header.
pub(crate) const REC_HEADER_LEN: usize = 16;
/// Snapshot file magic.
pub(crate) const SNAP_MAGIC: &[u8; 8] = b"SYNODSNP";
/// Snapshot format version.
pub(crate) const SNAP_VERSION: u32 = 1;
/// Bytes of the snapshot header.
pub(crate) const SNAP_HEADER_LEN: usize = 32;

/// Name of the preallocated spare segment, renamed into place at rollover.
pub(crate) const SPARE_NAME: &str = "spare.tmp";

pub(crate) fn seg_name(first_lsn: Lsn) -> String {
    format!("wal-{first_lsn:020}.seg")
}

pub(crate) fn parse_seg_name(name: &str) -> Option<Lsn> {
    parse_num(name.strip_prefix("wal-")?.strip_suffix(".seg")?)
}

pub(crate) fn snap_name(lsn: Lsn) -> String {
    format!("snap-{lsn:020}.snap")
}

pub(crate) fn parse_snap_name(name: &str) -> Option<Lsn> {
    parse_num(name.strip_prefix("snap-")?.strip_suffix(".snap")?)
}

fn parse_num(digits: &str) -> Option<Lsn> {
    if digits.len() == 20 && digits.bytes().all(|b| b.is_ascii_digit()) {
        digits.parse().ok()
    } else {
        None
    }
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

pub(crate) fn encode_seg_header(first_lsn: Lsn) -> [u8; SEG_HEADER_LEN] {
    assert!(first_lsn >= 1, "LSNs start at 1");
    let mut h = [0u8; SEG_HEADER_LEN];
    h[0..8].copy_from_slice(SEG_MAGIC);
    h[8..12].copy_from_slice(&SEG_VERSION.to_le_bytes());
    h[16..24].copy_from_slice(&first_lsn.to_le_bytes());
    let crc = seg_header_crc(&h);
    h[12..16].copy_from_slice(&crc.to_le_bytes());
    h
}

fn seg_header_crc(h: &[u8]) -> u32 {
    crc32c::crc32c_append(crc32c::crc32c(&h[0..12]), &h[16..24])
}

/// Returns the segment's first LSN, or why the header is bad.
pub(crate) fn decode_seg_header(b: &[u8]) -> Result<Lsn, String> {
    if b.len() < SEG_HEADER_LEN {
        return Err(format!(
            "file is {} bytes, shorter than a segment header",
            b.len()
        ));
    }
    if &b[0..8] != SEG_MAGIC {
        return Err("bad segment magic".into());
    }
    let version = u32_at(b, 8);
    if version != SEG_VERSION {
        return Err(format!("unknown segment version {version}"));
    }
    if u32_at(b, 12) != seg_header_crc(b) {
        return Err("segment header crc mismatch".into());
    }
    let first = u64_at(b, 16);
    if first == 0 {
        return Err("segment first lsn is 0".into());
    }
    Ok(first)
}

pub(crate) fn record_crc(lsn: Lsn, payload: &[u8]) -> u32 {
    crc32c::crc32c_append(crc32c::crc32c(&lsn.to_le_bytes()), payload)
}

pub(crate) fn encode_record(buf: &mut Vec<u8>, lsn: Lsn, payload: &[u8]) {
    assert!(lsn >= 1, "LSNs start at 1");
    let len = u32::try_from(payload.len()).expect("record length checked at append");
    buf.extend_from_slice(&len.to_le_bytes());
    buf.extend_from_slice(&record_crc(lsn, payload).to_le_bytes());
    buf.extend_from_slice(&lsn.to_le_bytes());
    buf.extend_from_slice(payload);
}

/// What sits at one offset of a segment.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum RecordAt {
    /// Sixteen zero bytes, or too little room left for a header.
    End,
    /// A header that does not describe a valid record.
    Bad(String),
    /// A valid record (crc checked); its LSN is not yet checked for order.
    Valid {
        lsn: Lsn,
        payload: std::ops::Range<usize>,
    },
}

pub(crate) fn decode_record(b: &[u8], pos: usize) -> RecordAt {
    if b.len() < pos + REC_HEADER_LEN {
        return RecordAt::End;
    }
    let h = &b[pos..pos + REC_HEADER_LEN];
    if h.iter().all(|&x| x == 0) {
        return RecordAt::End;
    }
    let len = u32_at(h, 0) as usize;
    let crc = u32_at(h, 4);
    let lsn = u64_at(h, 8);
    let start = pos + REC_HEADER_LEN;
    if len > b.len() - start {
        return RecordAt::Bad(format!(
            "record length {len} runs past the end of the segment ({} bytes)",
            b.len()
        ));
    }
    if record_crc(lsn, &b[start..start + len]) != crc {
        return RecordAt::Bad("record crc mismatch".into());
    }
    RecordAt::Valid {
        lsn,
        payload: start..start + len,
    }
}

pub(crate) fn encode_snap_header(lsn: Lsn, body: &[u8]) -> [u8; SNAP_HEADER_LEN] {
    let mut h = [0u8; SNAP_HEADER_LEN];
    h[0..8].copy_from_slice(SNAP_MAGIC);
    h[8..12].copy_from_slice(&SNAP_VERSION.to_le_bytes());
    h[16..24].copy_from_slice(&lsn.to_le_bytes());
    h[24..32].copy_from_slice(&(body.len() as u64).to_le_bytes());
    let crc = crc32c::crc32c_append(crc32c::crc32c(&h[16..32]), body);
    h[12..16].copy_from_slice(&crc.to_le_bytes());
    h
}

/// Verifies a whole snapshot file; returns its LSN and the body's range, or
/// the offset and reason of the first problem.
pub(crate) fn decode_snap(b: &[u8]) -> Result<(Lsn, std::ops::Range<usize>), (u64, String)> {
    if b.len() < SNAP_HEADER_LEN {
        return Err((
            0,
            format!("file is {} bytes, shorter than a snapshot header", b.len()),
        ));
    }
    if &b[0..8] != SNAP_MAGIC {
        return Err((0, "bad snapshot magic".into()));
    }
    let version = u32_at(b, 8);
    if version != SNAP_VERSION {
        return Err((8, format!("unknown snapshot version {version}")));
    }
    let lsn = u64_at(b, 16);
    let len = u64_at(b, 24);
    let have = (b.len() - SNAP_HEADER_LEN) as u64;
    if len != have {
        return Err((
            24,
            format!("header says {len} body bytes, file has {have} (truncated or extended)"),
        ));
    }
    let crc = crc32c::crc32c_append(crc32c::crc32c(&b[16..32]), &b[SNAP_HEADER_LEN..]);
    if crc != u32_at(b, 12) {
        return Err((12, "snapshot crc mismatch".into()));
    }
    Ok((lsn, SNAP_HEADER_LEN..b.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_sort_in_lsn_order_and_round_trip() {
        assert!(seg_name(9) < seg_name(10));
        assert_eq!(parse_seg_name(&seg_name(42)), Some(42));
        assert_eq!(parse_snap_name(&snap_name(u64::MAX)), Some(u64::MAX));
        assert_eq!(parse_seg_name("wal-1.seg"), None);
        assert_eq!(parse_snap_name(&(snap_name(3) + ".tmp")), None);
    }

    #[test]
    fn record_round_trips_and_zero_header_is_end() {
        let mut buf = Vec::new();
        encode_record(&mut buf, 7, b"hello");
        buf.extend_from_slice(&[0u8; 16]);
        assert_eq!(
            decode_record(&buf, 0),
            RecordAt::Valid {
                lsn: 7,
                payload: 16..21
            }
        );
        assert_eq!(decode_record(&buf, 21), RecordAt::End);
        buf[18] ^= 1;
        assert!(matches!(decode_record(&buf, 0), RecordAt::Bad(_)));
    }

    #[test]
    fn empty_payload_record_is_not_end() {
        let mut buf = Vec::new();
        encode_record(&mut buf, 1, b"");
        assert!(matches!(
            decode_record(&buf, 0),
            RecordAt::Valid { lsn: 1, .. }
        ));
    }

    #[test]
    fn headers_round_trip_and_detect_flips() {
        let h = encode_seg_header(5);
        assert_eq!(decode_seg_header(&h), Ok(5));
        for bit in 0..SEG_HEADER_LEN * 8 {
            let mut bad = h;
            bad[bit / 8] ^= 1 << (bit % 8);
            assert!(decode_seg_header(&bad).is_err(), "bit {bit}");
        }
        let mut snap = encode_snap_header(9, b"body").to_vec();
        snap.extend_from_slice(b"body");
        assert_eq!(decode_snap(&snap), Ok((9, 32..36)));
        for bit in 0..snap.len() * 8 {
            let mut bad = snap.clone();
            bad[bit / 8] ^= 1 << (bit % 8);
            assert!(decode_snap(&bad).is_err(), "bit {bit}");
        }
        assert!(decode_snap(&snap[..35]).is_err());
    }
}
