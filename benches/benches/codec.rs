//! Encode and decode of the hot frames: one 64-byte message, and a batch of 64.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use bytes::BytesMut;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use protocol::codec::{self, FrameDecoder};
use protocol::forward::{CoreIn, read_core_frame};
use protocol::frames::link::CoreFrame;
use protocol::{ConversationId, Message, MessageId, SenderKey, ServerFrame, SessionId, UserId};
use std::hint::black_box;

fn message() -> Message {
    Message {
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
    }
}

fn bench(c: &mut Criterion) {
    let frame = ServerFrame::Deliver(message());
    c.bench_function("encode+decode 64-byte message", |b| {
        let mut buf = BytesMut::with_capacity(256);
        b.iter(|| {
            buf.clear();
            codec::encode(black_box(&frame), &mut buf).unwrap();
            let back: ServerFrame = codec::decode_exact(&buf).unwrap();
            black_box(back);
        })
    });

    let batch: Vec<CoreFrame> = (0..64)
        .map(|i| CoreFrame::Deliver {
            sessions: vec![SessionId(i)],
            message: message(),
        })
        .collect();
    let mut group = c.benchmark_group("batch of 64 deliveries");
    group.throughput(Throughput::Elements(64));
    group.bench_function("encode", |b| {
        let mut buf = BytesMut::with_capacity(64 * 256);
        b.iter(|| {
            buf.clear();
            for f in &batch {
                codec::encode(f, &mut buf).unwrap();
            }
            black_box(buf.len());
        })
    });
    let mut encoded = BytesMut::new();
    for f in &batch {
        codec::encode(f, &mut encoded).unwrap();
    }
    group.bench_function("decode (stream)", |b| {
        b.iter(|| {
            let mut decoder = FrameDecoder::default();
            decoder.extend(&encoded);
            let mut n = 0;
            while let Some(f) = decoder.next_frame::<CoreFrame>().unwrap() {
                black_box(f);
                n += 1;
            }
            assert_eq!(n, 64);
        })
    });
    // What the edge does with each delivery from the core: before, decode it and encode
    // the client's frame; now, check it in place and copy its bytes behind a new prefix.
    group.bench_function("edge: decode + re-encode for the client", |b| {
        let mut out = BytesMut::with_capacity(64 * 256);
        b.iter(|| {
            out.clear();
            let mut decoder = FrameDecoder::default();
            decoder.extend(&encoded);
            while let Some(f) = decoder.next_frame::<CoreFrame>().unwrap() {
                let CoreFrame::Deliver { sessions, message } = f else {
                    unreachable!("only deliveries here")
                };
                black_box(sessions);
                codec::encode(&ServerFrame::Deliver(message), &mut out).unwrap();
            }
            black_box(out.len());
        })
    });
    group.bench_function("edge: forward", |b| {
        let mut out = BytesMut::with_capacity(64 * 256);
        b.iter(|| {
            out.clear();
            let mut decoder = FrameDecoder::default();
            decoder.extend(&encoded);
            while let Some(body) = decoder.next_body().unwrap() {
                let CoreIn::Deliver(forward) = read_core_frame(&body).unwrap() else {
                    unreachable!("only deliveries here")
                };
                black_box(forward.sessions().count());
                out.extend_from_slice(forward.frame.as_bytes());
            }
            black_box(out.len());
        })
    });
    group.finish();

    let a = UserId::new("player-1234").unwrap();
    let b = UserId::new("player-5678").unwrap();
    c.bench_function("lane mapping", |bench| {
        bench.iter(|| black_box(ConversationId::direct(black_box(&a), black_box(&b)).lane(8)))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
