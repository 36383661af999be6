//! Encodes and decodes one 64-byte message N times (default 100,000), for instruction
//! counts under `valgrind --tool=callgrind`, which are repeatable on a noisy machine where
//! wall-clock time is not:
//!
//! `cargo build --release -p protocol --example codec_loop &&
//!  valgrind --tool=callgrind target/release/examples/codec_loop 100000`
//! (divide the total by N).

use bytes::BytesMut;
use protocol::codec::{decode_exact, encode};
use protocol::{Message, MessageId, SenderKey, ServerFrame, UserId};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let n: u64 = std::env::args().nth(1).map_or(Ok(100_000), |a| a.parse())?;
    let frame = ServerFrame::Deliver(Message {
        id: MessageId(1_234_567),
        from: UserId::new("player-1234")?,
        from_name: "Player 1234".into(),
        to: UserId::new("player-5678")?,
        key: SenderKey {
            epoch: 0x1234_5678_9abc,
            counter: 42,
        },
        sent_at_ms: 1_795_000_000_000,
        text: "x".repeat(64),
    });
    let mut buf = BytesMut::with_capacity(256);
    let mut total = 0usize;
    for _ in 0..n {
        buf.clear();
        encode(std::hint::black_box(&frame), &mut buf)?;
        let back: ServerFrame = decode_exact(&buf)?;
        total += std::hint::black_box(&back).validate_len();
    }
    println!("{total}");
    Ok(())
}

trait ValidateLen {
    fn validate_len(&self) -> usize;
}

impl ValidateLen for ServerFrame {
    fn validate_len(&self) -> usize {
        match self {
            ServerFrame::Deliver(m) => m.text.len(),
            _ => 0,
        }
    }
}
