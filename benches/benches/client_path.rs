//! The client library's bookkeeping for each delivered message, without the network: a
//! page of 256 `Deliver` frames decoded, shown once (de-duplication), taken by the game,
//! acknowledged, and the acknowledgements framed — what `client`'s driver does per
//! received message besides QUIC and the hand-off to the game's thread.
//!
//! Two shapes of traffic: one sender whose messages have consecutive ids (a drain of one
//! conversation), and eight senders whose ids are scattered, as on a core that serves
//! many players (every id its own acknowledged range).
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::hint::black_box;
use std::time::Instant;

use bytes::BytesMut;
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use protocol::codec::{self, FrameDecoder};
use protocol::delivery::{Delivery, DeliveryConfig, DeliveryEvent};
use protocol::frames::client::{Limits, Welcome};
use protocol::{Message, MessageId, SenderKey, ServerFrame, SessionId, UserId};

const PAGE: usize = 256;

/// The encoded frames of one page: message `i` is from sender `i % senders`, with id
/// `first_id + i * id_step`.
fn page(senders: u64, id_step: u64) -> Vec<BytesMut> {
    (0..PAGE as u64)
        .map(|i| {
            let sender = i % senders;
            let frame = ServerFrame::Deliver(Message {
                id: MessageId(1_000_000 + i * id_step),
                from: UserId::new(format!("player-{sender}")).unwrap(),
                from_name: format!("Player {sender}"),
                to: UserId::new("player-5678").unwrap(),
                key: SenderKey {
                    epoch: 0x1234_5678_9abc + sender,
                    counter: 1 + i / senders,
                },
                sent_at_ms: 1_795_000_000_000,
                text: "x".repeat(64),
            });
            let mut buf = BytesMut::new();
            codec::encode(&frame, &mut buf).unwrap();
            // The driver decodes each frame's body, as the stream's decoder cuts it.
            let mut decoder = FrameDecoder::new(protocol::limits::FRAME_BYTES_MAX);
            decoder.extend(&buf);
            decoder.next_body().unwrap().unwrap()
        })
        .collect()
}

fn connected() -> Delivery {
    let mut delivery = Delivery::new(
        7,
        DeliveryConfig {
            auto_ack: false,
            ..DeliveryConfig::default()
        },
    );
    delivery.handle_connected(
        Instant::now(),
        &Welcome {
            user: UserId::new("player-5678").unwrap(),
            name: "Player 5678".into(),
            session: SessionId(1),
            limits: Limits {
                text_bytes_max: 4096,
                send_per_second: 100,
                send_burst: 100,
                lanes: 8,
            },
            capabilities: 0,
        },
    );
    delivery
}

/// Everything the client does with one page, as its driver and the game's `Events` do it.
fn receive_page(delivery: &mut Delivery, page: &[BytesMut]) -> usize {
    let now = Instant::now();
    for body in page {
        let frame: ServerFrame = codec::decode_body(body).unwrap();
        delivery.handle_frame(now, frame);
    }
    let mut shown = Vec::with_capacity(PAGE);
    while let Some(event) = delivery.poll_event() {
        if let DeliveryEvent::Message(m) = event {
            shown.push(m.id);
            black_box(m);
        }
    }
    for id in shown {
        delivery.ack(id);
    }
    let mut frames = 0;
    while let Some(t) = delivery.poll_transmit() {
        black_box(t);
        frames += 1;
    }
    frames
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("client receive path, page of 256");
    group.throughput(Throughput::Elements(PAGE as u64));
    for (name, senders, step) in [
        ("one sender, consecutive ids", 1, 1),
        ("eight senders, scattered ids", 8, 7),
    ] {
        let frames = page(senders, step);
        group.bench_function(name, |b| {
            b.iter_batched_ref(
                connected,
                |delivery| black_box(receive_page(delivery, &frames)),
                BatchSize::SmallInput,
            )
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
