//! Writes the fuzz seed corpus: one valid encoded frame of every kind, per decoder target.
//!
//! `cargo run -p protocol --example fuzz_seeds -- fuzz/seeds`

use std::path::PathBuf;

use protocol::codec::encode_to_vec;
use protocol::frames::client::{
    Accepted, Ack, ClientFrame, Hello, Limits, Message, Rejected, SendMessage, ServerFrame, Welcome,
};
use protocol::frames::link::{Attach, CoreFrame, CoreWelcome, EdgeFrame, EdgeHello, Submit};
use protocol::{DeviceId, ErrorCode, IdRange, MessageId, SenderKey, SessionId, ShardId, UserId};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out = PathBuf::from(
        std::env::args()
            .nth(1)
            .unwrap_or_else(|| "fuzz/seeds".into()),
    );
    let alice = UserId::new("alice")?;
    let bob = UserId::new("bob")?;
    let key = SenderKey {
        epoch: 7,
        counter: 1,
    };
    let message = Message {
        id: MessageId(42),
        from: alice.clone(),
        from_name: "Alice".into(),
        to: bob.clone(),
        key,
        sent_at_ms: 1_700_000_000_000,
        text: "gg, rematch? 🙂".into(),
    };
    let ranges = vec![IdRange {
        first: MessageId(1),
        last: MessageId(9),
    }];

    let client: Vec<Vec<u8>> = vec![
        encode_to_vec(&ClientFrame::Hello(Hello {
            version: 1,
            token: "eyJhbGciOiJIUzI1NiJ9.e30.sig".into(),
            device: DeviceId(3),
            capabilities: 0,
        }))?,
        encode_to_vec(&ClientFrame::Send(SendMessage {
            to: bob.clone(),
            key,
            text: "hi".into(),
        }))?,
        encode_to_vec(&ClientFrame::Ack(Ack {
            ranges: ranges.clone(),
        }))?,
        encode_to_vec(&ServerFrame::Welcome(Welcome {
            user: alice.clone(),
            name: "Alice".into(),
            session: SessionId(1),
            limits: Limits {
                text_bytes_max: 4096,
                send_per_second: 50,
                send_burst: 100,
                lanes: 8,
            },
            capabilities: 0,
        }))?,
        encode_to_vec(&ServerFrame::Deliver(message.clone()))?,
        encode_to_vec(&ServerFrame::Accepted(Accepted {
            key,
            id: MessageId(42),
        }))?,
        encode_to_vec(&ServerFrame::Rejected(Rejected {
            key,
            code: ErrorCode::InboxFull,
            detail: "full".into(),
        }))?,
        encode_to_vec(&ServerFrame::Synced)?,
    ];
    let link: Vec<Vec<u8>> = vec![
        encode_to_vec(&EdgeFrame::EdgeHello(EdgeHello {
            version: 1,
            edge: "edge-1".into(),
            capabilities: 0,
        }))?,
        encode_to_vec(&EdgeFrame::Attach(Attach {
            session: SessionId(1),
            user: bob.clone(),
            device: DeviceId(3),
        }))?,
        encode_to_vec(&EdgeFrame::Detach {
            session: SessionId(1),
        })?,
        encode_to_vec(&EdgeFrame::Submit(Submit {
            session: SessionId(2),
            from: alice,
            from_name: "Alice".into(),
            to: bob,
            key,
            sent_at_ms: 1_700_000_000_000,
            text: "hi".into(),
        }))?,
        encode_to_vec(&EdgeFrame::Ack {
            session: SessionId(1),
            ranges,
        })?,
        encode_to_vec(&CoreFrame::CoreWelcome(CoreWelcome {
            shard: ShardId(0),
            version: 1,
            lanes: 8,
            capabilities: 0,
        }))?,
        encode_to_vec(&CoreFrame::Deliver {
            sessions: vec![SessionId(1)],
            message,
        })?,
        encode_to_vec(&CoreFrame::Accepted {
            session: SessionId(2),
            key,
            id: MessageId(42),
        })?,
        encode_to_vec(&CoreFrame::Rejected {
            session: SessionId(2),
            key,
            code: ErrorCode::RateLimited,
        })?,
        encode_to_vec(&CoreFrame::Synced {
            session: SessionId(1),
        })?,
        encode_to_vec(&CoreFrame::Kick {
            session: SessionId(1),
            code: ErrorCode::SlowConsumer,
        })?,
    ];
    // Lane copies: a header, then frames exactly as on a lane.
    let copy = |stream: u64, first: u64, frames: &[&[u8]]| {
        let mut buf = bytes::BytesMut::new();
        protocol::copies::encode_header(protocol::copies::CopyHeader { stream, first }, &mut buf);
        for frame in frames {
            buf.extend_from_slice(frame);
        }
        // The target reads several datagrams, each after a length byte.
        let mut seed = vec![u8::try_from(buf.len()).unwrap_or(u8::MAX)];
        seed.extend_from_slice(&buf);
        seed
    };
    let copies: Vec<Vec<u8>> = vec![
        copy(2, 0, &[&client[1]]),
        copy(6, 3, &[&client[1], &client[1]]),
        copy(3, 1, &[&client[4]]),
        copy(7, 9, &[&client[4], &client[4], &client[4]]),
    ];
    for (target, seeds) in [
        ("client_frames", client),
        ("link_frames", link),
        ("lane_copies", copies),
    ] {
        let dir = out.join(target);
        std::fs::create_dir_all(&dir)?;
        for (i, seed) in seeds.iter().enumerate() {
            std::fs::write(dir.join(format!("seed-{i:02}")), seed)?;
        }
    }
    Ok(())
}
