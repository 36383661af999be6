//! Property tests of the codec over every frame type: whatever we encode decodes to the
//! same frame, whole or split at any point; and each way bytes can be wrong — cut short,
//! too long, with bytes left over, naming an unknown variant, carrying invalid UTF-8 — is
//! refused with its own error, never a panic and never a wrong frame.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use proptest::prelude::*;
use protocol::codec::{FrameDecoder, decode_exact, encode_to_vec};
use protocol::frames::Validate;
use protocol::frames::client::{
    Accepted, Ack, ClientFrame, Hello, Limits, Rejected, SendMessage, ServerFrame, Welcome,
};
use protocol::frames::link::{Attach, CoreFrame, CoreWelcome, EdgeFrame, EdgeHello, Submit};
use protocol::{
    DecodeError, DeviceId, ErrorCode, IdRange, Message, MessageId, SenderKey, SessionId, ShardId,
    UserId,
};
use serde::Serialize;
use serde::de::DeserializeOwned;

fn user() -> impl Strategy<Value = UserId> {
    "[a-zA-Z0-9_.@-]{1,40}".prop_map(|s| UserId::new(s).unwrap())
}
fn text() -> impl Strategy<Value = String> {
    any::<String>().prop_filter("within the ceiling", |s| s.len() <= 4096)
}
fn name() -> impl Strategy<Value = String> {
    "[^\u{0}]{0,30}".prop_filter("short", |s| s.len() <= 128)
}
fn key() -> impl Strategy<Value = SenderKey> {
    (any::<u64>(), any::<u64>()).prop_map(|(epoch, counter)| SenderKey { epoch, counter })
}
fn ranges() -> impl Strategy<Value = Vec<IdRange>> {
    prop::collection::vec((any::<u64>(), 0u64..1000), 0..20).prop_map(|v| {
        v.into_iter()
            .map(|(a, n)| IdRange {
                first: MessageId(a),
                last: MessageId(a.saturating_add(n)),
            })
            .collect()
    })
}
fn message() -> impl Strategy<Value = Message> {
    (
        any::<u64>(),
        user(),
        name(),
        user(),
        key(),
        any::<u64>(),
        text(),
    )
        .prop_map(|(id, from, from_name, to, key, sent_at_ms, text)| Message {
            id: MessageId(id),
            from,
            from_name,
            to,
            key,
            sent_at_ms,
            text,
        })
}
fn code() -> impl Strategy<Value = ErrorCode> {
    any::<u16>().prop_map(ErrorCode::from)
}

fn client_frame() -> impl Strategy<Value = ClientFrame> {
    prop_oneof![
        ("[ -~]{0,200}", any::<u64>(), any::<u64>(), any::<u16>()).prop_map(
            |(token, device, capabilities, version)| ClientFrame::Hello(Hello {
                version,
                token,
                device: DeviceId(device),
                capabilities,
            })
        ),
        (user(), key(), text()).prop_map(|(to, key, text)| ClientFrame::Send(SendMessage {
            to,
            key,
            text
        })),
        ranges().prop_map(|ranges| ClientFrame::Ack(Ack { ranges })),
    ]
}

fn server_frame() -> impl Strategy<Value = ServerFrame> {
    prop_oneof![
        (user(), name(), any::<u64>(), any::<u32>(), 1u8..=64).prop_map(
            |(user, name, session, n, lanes)| ServerFrame::Welcome(Welcome {
                user,
                name,
                session: SessionId(session),
                limits: Limits {
                    text_bytes_max: n,
                    send_per_second: n,
                    send_burst: n,
                    lanes
                },
                capabilities: 0,
            })
        ),
        message().prop_map(ServerFrame::Deliver),
        (key(), any::<u64>()).prop_map(|(key, id)| ServerFrame::Accepted(Accepted {
            key,
            id: MessageId(id)
        })),
        (key(), code(), "[ -~]{0,100}")
            .prop_map(|(key, code, detail)| ServerFrame::Rejected(Rejected { key, code, detail })),
        Just(ServerFrame::Synced),
    ]
}

fn edge_frame() -> impl Strategy<Value = EdgeFrame> {
    prop_oneof![
        ("[a-z0-9-]{0,40}", any::<u16>()).prop_map(|(edge, version)| EdgeFrame::EdgeHello(
            EdgeHello {
                version,
                edge,
                capabilities: 0
            }
        )),
        (any::<u64>(), user(), any::<u64>()).prop_map(|(s, user, d)| EdgeFrame::Attach(Attach {
            session: SessionId(s),
            user,
            device: DeviceId(d),
        })),
        any::<u64>().prop_map(|s| EdgeFrame::Detach {
            session: SessionId(s)
        }),
        (
            any::<u64>(),
            user(),
            name(),
            user(),
            key(),
            any::<u64>(),
            text()
        )
            .prop_map(
                |(s, from, from_name, to, key, sent_at_ms, text)| EdgeFrame::Submit(Submit {
                    session: SessionId(s),
                    from,
                    from_name,
                    to,
                    key,
                    sent_at_ms,
                    text,
                })
            ),
        (any::<u64>(), ranges()).prop_map(|(s, ranges)| EdgeFrame::Ack {
            session: SessionId(s),
            ranges
        }),
    ]
}

fn core_frame() -> impl Strategy<Value = CoreFrame> {
    prop_oneof![
        (any::<u16>(), 1u8..=64).prop_map(|(shard, lanes)| CoreFrame::CoreWelcome(CoreWelcome {
            shard: ShardId(shard),
            version: 1,
            lanes,
            capabilities: 0,
        })),
        (prop::collection::vec(any::<u64>(), 1..50), message()).prop_map(|(s, message)| {
            CoreFrame::Deliver {
                sessions: s.into_iter().map(SessionId).collect(),
                message,
            }
        }),
        (any::<u64>(), key(), any::<u64>()).prop_map(|(s, key, id)| CoreFrame::Accepted {
            session: SessionId(s),
            key,
            id: MessageId(id),
        }),
        (any::<u64>(), key(), code()).prop_map(|(s, key, code)| CoreFrame::Rejected {
            session: SessionId(s),
            key,
            code,
        }),
        any::<u64>().prop_map(|s| CoreFrame::Synced {
            session: SessionId(s)
        }),
        (any::<u64>(), code()).prop_map(|(s, code)| CoreFrame::Kick {
            session: SessionId(s),
            code
        }),
    ]
}

/// Splits a frame's encoding into its length prefix and body.
fn split_prefix(bytes: &[u8]) -> (usize, &[u8]) {
    let prefix_len = bytes.iter().position(|b| b & 0x80 == 0).unwrap() + 1;
    (prefix_len, &bytes[prefix_len..])
}

fn varint(mut v: usize) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let byte = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(byte);
            return out;
        }
        out.push(byte | 0x80);
    }
}

fn check_frame<T>(frame: T, split: prop::sample::Index, extra: Vec<u8>) -> Result<(), TestCaseError>
where
    T: Serialize + DeserializeOwned + Validate + PartialEq + std::fmt::Debug + Clone,
{
    let bytes = encode_to_vec(&frame).unwrap();

    // Round trip, whole.
    prop_assert_eq!(decode_exact::<T>(&bytes).unwrap(), frame.clone());

    // Round trip, streamed in two pieces split anywhere (also: two frames back to back).
    let mut twice = bytes.clone();
    twice.extend_from_slice(&bytes);
    let at = split.index(twice.len() + 1);
    let mut decoder = FrameDecoder::default();
    let mut out = Vec::new();
    decoder.extend(&twice[..at]);
    while let Some(f) = decoder.next_frame::<T>().unwrap() {
        out.push(f);
    }
    decoder.extend(&twice[at..]);
    while let Some(f) = decoder.next_frame::<T>().unwrap() {
        out.push(f);
    }
    prop_assert_eq!(out, vec![frame.clone(), frame]);

    // Truncated anywhere: refused as truncated, and a stream just waits for more.
    let cut = split.index(bytes.len());
    prop_assert_eq!(
        decode_exact::<T>(&bytes[..cut]),
        Err(DecodeError::Truncated)
    );
    let mut decoder = FrameDecoder::default();
    decoder.extend(&bytes[..cut]);
    prop_assert_eq!(decoder.next_frame::<T>(), Ok(None));

    // Bytes after the frame: refused, whether outside the declared length or inside it.
    if !extra.is_empty() {
        let mut after = bytes.clone();
        after.extend_from_slice(&extra);
        prop_assert_eq!(
            decode_exact::<T>(&after),
            Err(DecodeError::TrailingBytes(extra.len()))
        );
        let (_, body) = split_prefix(&bytes);
        let mut inside = varint(body.len() + extra.len());
        inside.extend_from_slice(body);
        inside.extend_from_slice(&extra);
        prop_assert_eq!(
            decode_exact::<T>(&inside),
            Err(DecodeError::TrailingBytes(extra.len()))
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn client_frames_round_trip_and_refuse_damage(
        f in client_frame(), split in any::<prop::sample::Index>(), extra in prop::collection::vec(any::<u8>(), 0..8)
    ) {
        check_frame(f, split, extra)?;
    }

    #[test]
    fn server_frames_round_trip_and_refuse_damage(
        f in server_frame(), split in any::<prop::sample::Index>(), extra in prop::collection::vec(any::<u8>(), 0..8)
    ) {
        check_frame(f, split, extra)?;
    }

    #[test]
    fn edge_frames_round_trip_and_refuse_damage(
        f in edge_frame(), split in any::<prop::sample::Index>(), extra in prop::collection::vec(any::<u8>(), 0..8)
    ) {
        check_frame(f, split, extra)?;
    }

    #[test]
    fn core_frames_round_trip_and_refuse_damage(
        f in core_frame(), split in any::<prop::sample::Index>(), extra in prop::collection::vec(any::<u8>(), 0..8)
    ) {
        check_frame(f, split, extra)?;
    }

    // A length above the limit is refused from the prefix alone: the decoder never waits
    // for (or allocates) a body it would refuse.
    #[test]
    fn oversized_lengths_are_refused_before_the_body(len in (protocol::limits::FRAME_BYTES_MAX + 1)..(u32::MAX as usize)) {
        let prefix = varint(len);
        let mut decoder = FrameDecoder::default();
        decoder.extend(&prefix);
        let err = decoder.next_frame::<ClientFrame>().unwrap_err();
        prop_assert!(matches!(err, DecodeError::TooLarge { .. }), "{err:?}");
        prop_assert_eq!(err.code(), ErrorCode::FrameTooLarge);
        prop_assert!(decoder.buffered() <= prefix.len());
        let whole = decode_exact::<EdgeFrame>(&prefix);
        prop_assert!(matches!(whole, Err(DecodeError::TooLarge { .. })), "{:?}", whole);
    }

    // A frame naming a variant this version does not know is refused as such.
    #[test]
    fn unknown_variants_are_refused(variant in 3u8..=127, rest in prop::collection::vec(any::<u8>(), 0..16)) {
        // ClientFrame and EdgeFrame have 3 and 5 variants, ServerFrame 5, CoreFrame 6;
        // a postcard enum starts with its variant index as a varint.
        let mut body = vec![variant.max(6)];
        body.extend_from_slice(&rest);
        let mut bytes = varint(body.len());
        bytes.extend_from_slice(&body);
        prop_assert_eq!(decode_exact::<ClientFrame>(&bytes), Err(DecodeError::UnknownVariant));
        prop_assert_eq!(decode_exact::<ServerFrame>(&bytes), Err(DecodeError::UnknownVariant));
        prop_assert_eq!(decode_exact::<EdgeFrame>(&bytes), Err(DecodeError::UnknownVariant));
        prop_assert_eq!(decode_exact::<CoreFrame>(&bytes), Err(DecodeError::UnknownVariant));
    }

    // Text that is not UTF-8 never becomes a `String`: the frame is refused.
    #[test]
    fn invalid_utf8_text_is_refused(text in "[a-z]{1,50}", at in any::<prop::sample::Index>(), bad in 0x80u8..=0xff) {
        let frame = ClientFrame::Send(SendMessage {
            to: UserId::new("bob").unwrap(),
            key: SenderKey { epoch: 1, counter: 1 },
            text: text.clone(),
        });
        let mut bytes = encode_to_vec(&frame).unwrap();
        // The text is the last field: its bytes end the frame.
        let start = bytes.len() - text.len();
        let i = start + at.index(text.len());
        // A lone continuation byte, or a lead byte followed by ASCII: never valid UTF-8.
        bytes[i] = bad;
        prop_assert_eq!(decode_exact::<ClientFrame>(&bytes), Err(DecodeError::InvalidUtf8));
    }
}

// Field checks run after decoding: an invalid user id or an unordered ack range in an
// otherwise well-formed frame is refused.
#[test]
fn out_of_range_fields_are_refused() {
    let bad_range = ClientFrame::Ack(Ack {
        ranges: vec![IdRange {
            first: MessageId(5),
            last: MessageId(4),
        }],
    });
    let bytes = encode_to_vec(&bad_range).unwrap();
    assert!(matches!(
        decode_exact::<ClientFrame>(&bytes),
        Err(DecodeError::Invalid(_))
    ));

    // A Send whose recipient is the empty string (a `UserId` cannot be built empty, so
    // write the bytes by hand: variant 1, empty string, key, text "hi").
    let body = [1u8, 0, 1, 1, 2, b'h', b'i'];
    let mut bytes = varint(body.len());
    bytes.extend_from_slice(&body);
    assert!(matches!(
        decode_exact::<ClientFrame>(&bytes),
        Err(DecodeError::Invalid(_))
    ));
}
