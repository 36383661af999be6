//! Property tests of the codec over every frame type: whatever we encode decodes to the
//! same frame, whole or split at any point; and each way bytes can be wrong — cut short,
//! too long, with bytes left over, naming an unknown variant, carrying invalid UTF-8 — is
//! refused with its own error, never a panic and never a wrong frame.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use proptest::prelude::*;
use protocol::codec::{FrameDecoder, decode_exact, encode_to_vec};
use protocol::forward::{CoreIn, read_core_frame};
use protocol::frames::Validate;
use protocol::frames::client::{
    Accepted, Ack, ClientFrame, Hello, Limits, Rejected, SendMessage, ServerFrame, Welcome,
};
use protocol::frames::link::{Attach, CoreFrame, CoreWelcome, EdgeFrame, EdgeHello, Submit};
use protocol::{
    ConversationId, DecodeError, DeviceId, ErrorCode, IdRange, Message, MessageId, SenderKey,
    SessionId, ShardId, UserId,
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

/// The hand-written shortcut for hot frames ([`Validate::decode_fast`]) must read a body
/// exactly as postcard does: whenever it answers, postcard gives the same frame and the
/// same number of bytes left over (when it does not answer, postcard decides alone).
fn fast_path_agrees<T>(body: &[u8]) -> Result<bool, TestCaseError>
where
    T: DeserializeOwned + Validate + PartialEq + std::fmt::Debug,
{
    let Some((fast, rest)) = T::decode_fast(body) else {
        return Ok(false);
    };
    match postcard::take_from_bytes::<T>(body) {
        Ok((slow, slow_rest)) => {
            prop_assert_eq!(fast, slow);
            prop_assert_eq!(rest, slow_rest.len());
        }
        Err(e) => {
            return Err(TestCaseError::fail(format!(
                "the fast path read {fast:?} where postcard says {e:?}"
            )));
        }
    }
    Ok(true)
}

/// Whether a message's id and name fields are all under 128 bytes: the case the fast path
/// reads itself (longer ones go to postcard).
fn short_fields(m: &Message) -> bool {
    [m.from.as_str(), &m.from_name, m.to.as_str()]
        .iter()
        .all(|s| s.len() < 128)
}

/// A message whose ids and name are near the 128-byte line where a length takes a
/// second byte (the fast path reads one-byte lengths only), all in ASCII with one-byte
/// numbers: a body that any misreading would likely still parse, so it shows.
fn message_near_length_limits() -> impl Strategy<Value = Message> {
    let id = "[a-z0-9]{120,128}".prop_map(|s| UserId::new(s).unwrap());
    let small = 0u64..128;
    (
        (small.clone(), small.clone(), small.clone(), small),
        id.clone(),
        "[a-zA-Z ]{120,128}",
        id,
        "[ -~]{0,300}",
    )
        .prop_map(
            |((id, epoch, counter, sent_at_ms), from, from_name, to, text)| Message {
                id: MessageId(id),
                from,
                from_name,
                to,
                key: SenderKey { epoch, counter },
                sent_at_ms,
                text,
            },
        )
}

/// Damage to a body: bytes overwritten (with values that make lengths long, UTF-8
/// invalid, ids hold control characters, varints run on), and maybe a cut.
fn damage() -> impl Strategy<Value = (Vec<(prop::sample::Index, u8)>, Option<prop::sample::Index>)>
{
    let byte = prop_oneof![
        any::<u8>(),
        Just(0x00u8),
        Just(0x01),
        Just(0x7f),
        Just(0x80),
        Just(0xc2),
        Just(0xff),
    ];
    (
        prop::collection::vec((any::<prop::sample::Index>(), byte), 0..4),
        prop::option::of(any::<prop::sample::Index>()),
    )
}

fn damaged(
    mut body: Vec<u8>,
    edits: &[(prop::sample::Index, u8)],
    cut: Option<prop::sample::Index>,
) -> Vec<u8> {
    for (at, value) in edits {
        let i = at.index(body.len());
        body[i] = *value;
    }
    if let Some(cut) = cut {
        body.truncate(cut.index(body.len() + 1));
    }
    body
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn fast_path_reads_server_frames_as_postcard_does(f in prop_oneof![server_frame(), message_near_length_limits().prop_map(ServerFrame::Deliver)], (edits, cut) in damage(), extra in prop::collection::vec(any::<u8>(), 0..4)) {
        let mut body = postcard::to_allocvec(&f).unwrap();
        let handled = fast_path_agrees::<ServerFrame>(&body)?;
        if let ServerFrame::Deliver(m) = &f {
            prop_assert_eq!(handled, short_fields(m), "a plain delivery takes the fast path");
        }
        body.extend_from_slice(&extra);
        fast_path_agrees::<ServerFrame>(&body)?;
        fast_path_agrees::<ServerFrame>(&damaged(body, &edits, cut))?;
    }

    #[test]
    fn fast_path_reads_core_frames_as_postcard_does(f in prop_oneof![
        core_frame(),
        message_near_length_limits().prop_map(|message| CoreFrame::Deliver { sessions: vec![SessionId(1)], message }),
    ], (edits, cut) in damage(), extra in prop::collection::vec(any::<u8>(), 0..4)) {
        let mut body = postcard::to_allocvec(&f).unwrap();
        let handled = fast_path_agrees::<CoreFrame>(&body)?;
        if let CoreFrame::Deliver { message, .. } = &f {
            prop_assert_eq!(handled, short_fields(message), "a plain delivery takes the fast path");
        }
        body.extend_from_slice(&extra);
        fast_path_agrees::<CoreFrame>(&body)?;
        fast_path_agrees::<CoreFrame>(&damaged(body, &edits, cut))?;
    }
}

/// An edge forwards a core frame body ([`read_core_frame`]) exactly as decoding it would
/// have it: the same error for a body decoding refuses, the same frame for any other
/// kind, and for a delivery the same sessions and conversation and a client frame that
/// decodes to the same message, byte for byte what encoding that message gives when the
/// core's bytes are the canonical encoding.
fn forward_agrees(body: &[u8]) -> Result<(), TestCaseError> {
    let mut prefixed = varint(body.len());
    prefixed.extend_from_slice(body);
    match (read_core_frame(body), decode_exact::<CoreFrame>(&prefixed)) {
        (Ok(CoreIn::Deliver(forward)), Ok(CoreFrame::Deliver { sessions, message })) => {
            prop_assert_eq!(forward.sessions().collect::<Vec<_>>(), sessions.clone());
            prop_assert_eq!(
                forward.conversation,
                ConversationId::direct(&message.from, &message.to)
            );
            let frame = forward.frame.as_bytes();
            prop_assert_eq!(
                decode_exact::<ServerFrame>(frame),
                Ok(ServerFrame::Deliver(message.clone()))
            );
            let canonical = encode_to_vec(&CoreFrame::Deliver {
                sessions,
                message: message.clone(),
            })
            .unwrap();
            if canonical == prefixed {
                prop_assert_eq!(
                    frame,
                    &encode_to_vec(&ServerFrame::Deliver(message)).unwrap()[..]
                );
            }
        }
        (Ok(CoreIn::Frame(forwarded)), Ok(decoded)) => {
            let is_delivery = matches!(decoded, CoreFrame::Deliver { .. });
            prop_assert!(!is_delivery, "a delivery was not forwarded");
            prop_assert_eq!(forwarded, decoded);
        }
        (Err(forwarded), Err(decoded)) => prop_assert_eq!(forwarded, decoded),
        (forwarded, decoded) => {
            return Err(TestCaseError::fail(format!(
                "forwarding read {forwarded:?} where decoding gives {decoded:?}"
            )));
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn forwarded_deliveries_are_what_decoding_and_encoding_give(f in prop_oneof![
        core_frame(),
        message_near_length_limits().prop_map(|message| CoreFrame::Deliver { sessions: vec![SessionId(1)], message }),
        (prop::collection::vec(any::<u64>(), 1..4), message_near_length_limits()).prop_map(|(s, message)| CoreFrame::Deliver { sessions: s.into_iter().map(SessionId).collect(), message }),
    ], (edits, cut) in damage(), extra in prop::collection::vec(any::<u8>(), 0..4)) {
        let mut body = postcard::to_allocvec(&f).unwrap();
        forward_agrees(&body)?;
        body.extend_from_slice(&extra);
        forward_agrees(&body)?;
        forward_agrees(&damaged(body, &edits, cut))?;
    }

    #[test]
    fn forwarding_refuses_what_decoding_refuses(body in prop::collection::vec(any::<u8>(), 0..200)) {
        forward_agrees(&body)?;
    }
}

#[test]
fn an_empty_or_oversized_session_list_is_refused_as_decoding_refuses_it() {
    let (message, _) = plain_delivery();
    for count in [0, protocol::limits::DELIVER_SESSIONS_MAX + 1] {
        let body = postcard::to_allocvec(&CoreFrame::Deliver {
            sessions: (0..count as u64).map(SessionId).collect(),
            message: message.clone(),
        })
        .unwrap();
        assert_eq!(
            read_core_frame(&body).unwrap_err(),
            DecodeError::Invalid("delivery session list size")
        );
    }
}

/// A delivery whose every field is ordinary, for hand-damaged copies.
fn plain_delivery() -> (Message, Vec<u8>) {
    let m = Message {
        id: MessageId(1_234_567),
        from: UserId::new("player-1234").unwrap(),
        from_name: "Player 1234".into(),
        to: UserId::new("player-5678").unwrap(),
        key: SenderKey {
            epoch: 0x1234_5678_9abc,
            counter: 42,
        },
        sent_at_ms: 1_795_000_000_000,
        text: "x".repeat(64),
    };
    let bytes = encode_to_vec(&ServerFrame::Deliver(m.clone())).unwrap();
    (m, bytes)
}

// The fast path refuses nothing itself: damage it meets is reported by postcard, with
// the same error as for any other frame.
#[test]
fn damaged_deliveries_are_refused_with_their_own_error() {
    let (m, bytes) = plain_delivery();
    assert_eq!(
        decode_exact::<ServerFrame>(&bytes),
        Ok(ServerFrame::Deliver(m.clone()))
    );
    // Layout after the 1-byte prefix: variant, id (3 bytes), then `from`'s length.
    let from_at = 1 + 1 + 3 + 1;
    let name_at = from_at + m.from.as_str().len() + 1;
    let text_at = bytes.len() - m.text.len();

    for (at, bad) in [(text_at + 5, 0xffu8), (from_at, 0xc2), (name_at + 3, 0x80)] {
        let mut b = bytes.clone();
        b[at] = bad;
        assert_eq!(
            decode_exact::<ServerFrame>(&b),
            Err(DecodeError::InvalidUtf8),
            "byte {at}"
        );
    }
    let mut b = bytes.clone();
    b[from_at + 2] = 0x07;
    assert_eq!(
        decode_exact::<ServerFrame>(&b),
        Err(DecodeError::Invalid("field value out of range"))
    );
    let mut b = bytes.clone();
    b.push(0);
    b[0] += 1;
    assert_eq!(
        decode_exact::<ServerFrame>(&b),
        Err(DecodeError::TrailingBytes(1))
    );
    for cut in 0..bytes.len() {
        let mut b = bytes[..cut].to_vec();
        if let Some(prefix) = b.first_mut() {
            *prefix = (cut.max(1) - 1) as u8;
        }
        assert_eq!(
            decode_exact::<ServerFrame>(&b),
            Err(DecodeError::Truncated),
            "cut at {cut}"
        );
    }
}

// Names of 128 bytes and over (two-byte lengths) are left to postcard, and still decode.
#[test]
fn long_names_decode_too() {
    let (mut m, _) = plain_delivery();
    m.from_name = "é".repeat(64);
    m.from = UserId::new("u".repeat(protocol::limits::USER_ID_BYTES_MAX)).unwrap();
    let frame = ServerFrame::Deliver(m);
    let body = postcard::to_allocvec(&frame).unwrap();
    assert!(<ServerFrame as Validate>::decode_fast(&body).is_none());
    let bytes = encode_to_vec(&frame).unwrap();
    assert_eq!(decode_exact::<ServerFrame>(&bytes), Ok(frame));
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
