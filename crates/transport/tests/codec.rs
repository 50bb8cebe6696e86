//! The wire codec (crate `codec` docs): round trips of real EPaxos\*
//! messages, and robustness of every decoder on hostile bytes (quality-bars
//! R9: "peer-message decoders fuzzed").

use proptest::prelude::*;
use std::sync::Arc;
use synod_epaxos::Message;
use synod_transport::codec::{
    check_frame_len, decode_frame, encode_frame, split_frame, CodecError, FrameBuilder, Hello,
    FRAME_HEADER_LEN, HELLO_LEN, MAGIC, VERSION,
};
use synod_types::{Access, Ballot, CmdId, Command, Deps, Floor, Payload, Phase};

const MAX: u32 = 16 << 20;

fn id(seq: u64, origin: u16) -> CmdId {
    CmdId {
        epoch: 3,
        seq,
        origin,
    }
}

fn command(key: &str, body: &[u8], request: u64) -> Command {
    Command {
        keys: vec![
            (Arc::from(key), Access::Write),
            (Arc::from("shared"), Access::Read),
        ],
        body: Arc::from(body),
        client: 77,
        request,
    }
}

/// One message of each shape that matters: batches, deps, nested options,
/// vectors of tuples, and the smallest messages.
fn sample_messages() -> Vec<Message> {
    let batch = Arc::new(vec![
        command("inventory/sku-42", b"{\"op\":\"put\"}", 1),
        command("k2", &[0u8; 300], 2),
    ]);
    let mut floor = Floor::new();
    floor.raise(3, 0, 1_000);
    floor.raise(3, 2, 17);
    let mut dep = Deps::with_floor(floor);
    dep.extend([id(1, 0), id(2, 1), id(9, 2)]);
    let ballot = Ballot {
        epoch: 3,
        round: 2,
        node: 1,
    };
    vec![
        Message::PreAccept {
            id: id(10, 0),
            cmd: Arc::clone(&batch),
            dep: dep.clone(),
        },
        Message::PreAcceptOk {
            id: id(10, 0),
            dep: dep.clone(),
        },
        Message::Commit {
            ballot,
            id: id(10, 0),
            payload: Payload::Op(Arc::clone(&batch)),
            dep: dep.clone(),
        },
        Message::Commit {
            ballot,
            id: id(11, 2),
            payload: Payload::Nop,
            dep: Deps::new(),
        },
        Message::RecoverOk {
            ballot,
            id: id(12, 1),
            abal: Ballot::initial(id(12, 1)),
            cmd: None,
            dep: dep.clone(),
            init_dep: Deps::new(),
            phase: Phase::PreAccepted,
        },
        Message::ValidateOk {
            ballot,
            id: id(12, 1),
            conflicts: vec![(id(1, 0), Phase::Committed), (id(2, 1), Phase::Accepted)],
        },
        Message::Heartbeat {
            epoch: 3,
            committed_prefix: vec![(0, 100), (1, 7), (2, u64::MAX)],
            executed_prefix: vec![(0, 99), (2, 3)],
        },
        Message::Forward {
            cmds: vec![command("hot", b"x", 9)],
        },
        Message::Learn { id: id(5, 2) },
        Message::Nack {
            id: id(5, 2),
            bal: ballot,
        },
    ]
}

#[test]
fn epaxos_messages_round_trip_through_one_frame() {
    let msgs = sample_messages();
    let mut out = vec![0xAB]; // encode_frame appends: existing bytes stay
    encode_frame(&msgs, MAX, &mut out).unwrap();
    assert_eq!(out[0], 0xAB);
    let (body, used) = split_frame(&out[1..], MAX)
        .unwrap()
        .expect("complete frame");
    assert_eq!(used, out.len() - 1);
    let back: Vec<Message> = decode_frame(body).unwrap();
    assert_eq!(back, msgs);
}

#[test]
fn each_epaxos_message_round_trips_alone_and_builder_matches_encode_frame() {
    let mut builder = FrameBuilder::new();
    for m in sample_messages() {
        let mut out = Vec::new();
        encode_frame(std::slice::from_ref(&m), MAX, &mut out).unwrap();
        let back: Vec<Message> = decode_frame(&out[FRAME_HEADER_LEN..]).unwrap();
        assert_eq!(back, vec![m.clone()], "{}", m.kind());
        builder.clear();
        builder.push(&m, MAX).unwrap();
        assert_eq!(builder.finish(), &out[..], "{}", m.kind());
    }
}

#[test]
fn builder_refuses_a_message_that_does_not_fit_and_keeps_the_frame() {
    let small = Message::Learn { id: id(1, 0) };
    let big = Message::Forward {
        cmds: vec![command("k", &[7u8; 4000], 1)],
    };
    let mut b = FrameBuilder::new();
    b.push(&small, 1000).unwrap();
    let before = b.body_len();
    let err = b.push(&big, 1000).unwrap_err();
    assert!(
        matches!(err, CodecError::TooLarge { max: 1000, .. }),
        "{err}"
    );
    assert_eq!((b.len(), b.body_len()), (1, before));
    let frame = b.finish().to_vec();
    let back: Vec<Message> = decode_frame(&frame[FRAME_HEADER_LEN..]).unwrap();
    assert_eq!(back, vec![small]);
    // The same limit through encode_frame: refused, `out` untouched.
    let mut out = vec![1, 2, 3];
    let err = encode_frame(&[big], 1000, &mut out).unwrap_err();
    assert!(matches!(err, CodecError::TooLarge { max: 1000, .. }));
    assert_eq!(out, vec![1, 2, 3]);
}

#[test]
fn trailing_bytes_are_malformed() {
    let mut out = Vec::new();
    encode_frame(&sample_messages(), MAX, &mut out).unwrap();
    out.push(0);
    let err = decode_frame::<Message>(&out[FRAME_HEADER_LEN..]).unwrap_err();
    assert!(matches!(err, CodecError::Malformed(_)), "{err}");
}

#[test]
fn hello_round_trips_and_each_check_refuses() {
    let h = Hello::new(0xC1, 2);
    let bytes = h.encode();
    assert_eq!(bytes.len(), HELLO_LEN);
    assert_eq!(Hello::decode(&bytes).unwrap(), h);
    assert_eq!(h.verify(0xC1, |n| n == 2), Ok(()));
    assert_eq!(
        h.verify(0xC2, |_| true),
        Err(CodecError::ClusterMismatch {
            ours: 0xC2,
            theirs: 0xC1
        })
    );
    assert_eq!(h.verify(0xC1, |n| n != 2), Err(CodecError::UnknownPeer(2)));

    let mut bad = bytes;
    bad[0] ^= 1;
    assert!(matches!(
        Hello::decode(&bad),
        Err(CodecError::BadMagic { .. })
    ));
    let mut bad = bytes;
    bad[4..6].copy_from_slice(&(VERSION + 1).to_le_bytes());
    assert_eq!(
        Hello::decode(&bad),
        Err(CodecError::VersionMismatch {
            ours: VERSION,
            theirs: VERSION + 1
        })
    );
    assert!(matches!(
        Hello::decode(&bytes[..15]),
        Err(CodecError::Truncated { need: 16, got: 15 })
    ));
    assert_eq!(u32::from_le_bytes(bytes[..4].try_into().unwrap()), MAGIC);
}

#[test]
fn oversized_prefix_is_refused_from_the_header_alone() {
    // Only the 4 header bytes exist: a decoder that allocated or waited for
    // the body first would return Ok(None) here, not TooLarge.
    let header = (MAX + 1).to_le_bytes();
    assert_eq!(
        split_frame(&header, MAX),
        Err(CodecError::TooLarge {
            len: u64::from(MAX) + 1,
            max: MAX
        })
    );
    assert_eq!(
        check_frame_len(u32::MAX.to_le_bytes(), MAX),
        Err(CodecError::TooLarge {
            len: u64::from(u32::MAX),
            max: MAX
        })
    );
    assert_eq!(check_frame_len(MAX.to_le_bytes(), MAX), Ok(MAX as usize));
}

fn encoded_sample() -> Vec<u8> {
    let mut out = Vec::new();
    encode_frame(&sample_messages(), MAX, &mut out).unwrap();
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    /// Arbitrary bytes: a value or an error, never a panic.
    #[test]
    fn decode_frame_never_panics_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = decode_frame::<Message>(&bytes);
        let _ = split_frame(&bytes, 256);
    }

    #[test]
    fn hello_decode_never_panics_and_accepts_only_good_magic_and_version(bytes in proptest::collection::vec(any::<u8>(), 0..40)) {
        if let Ok(h) = Hello::decode(&bytes) {
            prop_assert_eq!(bytes.len(), HELLO_LEN);
            prop_assert_eq!((h.magic, h.version), (MAGIC, VERSION));
            prop_assert_eq!(&h.encode()[..], &bytes[..]);
        }
    }

    /// A valid frame cut short: never a panic, never a wrong full decode.
    #[test]
    fn truncated_frames_never_panic(cut in 0usize..4096) {
        let frame = encoded_sample();
        let cut = cut % frame.len();
        let head = &frame[..cut];
        prop_assert_eq!(split_frame(head, MAX), Ok(None));
        if cut > FRAME_HEADER_LEN {
            prop_assert!(decode_frame::<Message>(&head[FRAME_HEADER_LEN..]).is_err());
        }
    }

    /// Bit flips anywhere in a valid body: decodes to something or errs.
    #[test]
    fn bit_flipped_frames_never_panic(flips in proptest::collection::vec((any::<usize>(), 0u8..8), 1..8)) {
        let mut frame = encoded_sample();
        for (at, bit) in flips {
            let at = FRAME_HEADER_LEN + at % (frame.len() - FRAME_HEADER_LEN);
            frame[at] ^= 1 << bit;
        }
        let _ = decode_frame::<Message>(&frame[FRAME_HEADER_LEN..]);
    }

    /// Any prefix above the limit is refused by its header alone, with the
    /// typed error carrying the announced length.
    #[test]
    fn length_prefix_above_max_is_refused(max in 16u32..(1 << 24), excess in 1u32..u32::MAX) {
        let len = max.saturating_add(excess);
        prop_assume!(len > max);
        let header = len.to_le_bytes();
        prop_assert_eq!(
            split_frame(&header, max),
            Err(CodecError::TooLarge { len: u64::from(len), max })
        );
    }

    /// The builder and `encode_frame` agree byte for byte on any batch of
    /// heartbeats (variable-length vectors exercise the varint count).
    #[test]
    fn builder_matches_encode_frame(prefixes in proptest::collection::vec(proptest::collection::vec((any::<u16>(), any::<u64>()), 0..4), 0..300)) {
        let msgs: Vec<Message> = prefixes
            .into_iter()
            .map(|committed_prefix| Message::Heartbeat {
                epoch: 1,
                executed_prefix: committed_prefix.clone(),
                committed_prefix,
            })
            .collect();
        let mut expected = Vec::new();
        encode_frame(&msgs, MAX, &mut expected).unwrap();
        let mut b = FrameBuilder::new();
        for m in &msgs {
            b.push(m, MAX).unwrap();
        }
        prop_assert_eq!(b.finish(), &expected[..]);
        prop_assert_eq!(decode_frame::<Message>(&expected[FRAME_HEADER_LEN..]).unwrap(), msgs);
    }
}
