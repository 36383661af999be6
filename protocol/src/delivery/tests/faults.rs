//! Random fault schedules over [`Net`]: sends interleaved with dropped connections,
//! duplicates on the wire, lanes overtaking each other, commits and core crashes. After
//! the faults stop and the network heals, every message sent must have been shown exactly
//! once, in per-sender order, and answered `Accepted` exactly once. Proptest shrinks a
//! failure to a short schedule and prints its seed, which replays it exactly.

use std::collections::BTreeMap;
use std::time::Duration;

use proptest::prelude::*;

use super::net::{Net, Stream};
use crate::delivery::{DeliveryConfig, DeliveryEvent};
use crate::ids::SenderKey;

const NODES: usize = 3;

#[derive(Clone, Debug)]
enum Op {
    /// `from` sends to the `skip`-th other node.
    Send {
        from: usize,
        skip: usize,
    },
    /// One frame from a node's upstream stream (chosen modulo the stream count) to the core.
    Up {
        node: usize,
        stream: usize,
    },
    /// One frame from the core to a node.
    Down {
        node: usize,
        stream: usize,
    },
    /// The first frame of a downstream stream arrives twice.
    DuplicateDown {
        node: usize,
        stream: usize,
    },
    Disconnect {
        node: usize,
    },
    Connect {
        node: usize,
        lanes: u8,
    },
    Flush,
    CrashCore,
    Advance {
        ms: u64,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let node = 0..NODES;
    let stream = 0usize..16;
    prop_oneof![
        6 => (node.clone(), 0..NODES - 1).prop_map(|(from, skip)| Op::Send { from, skip }),
        10 => (node.clone(), stream.clone()).prop_map(|(node, stream)| Op::Up { node, stream }),
        10 => (node.clone(), stream.clone()).prop_map(|(node, stream)| Op::Down { node, stream }),
        1 => (node.clone(), stream).prop_map(|(node, stream)| Op::DuplicateDown { node, stream }),
        1 => node.clone().prop_map(|node| Op::Disconnect { node }),
        2 => (node, 1u8..=4).prop_map(|(node, lanes)| Op::Connect { node, lanes }),
        2 => Just(Op::Flush),
        1 => Just(Op::CrashCore),
        1 => (0u64..2000).prop_map(|ms| Op::Advance { ms }),
    ]
}

/// The stream a random index names on a node's current connection.
fn pick_stream(net: &Net, node: usize, index: usize) -> Option<Stream> {
    let streams = net.nodes[node].link.as_ref()?.streams();
    Some(streams[index % streams.len()])
}

/// A sent message: sender node, recipient node, key.
type Sent = (usize, usize, SenderKey);

fn run(ops: &[Op]) -> (Net, Vec<Sent>) {
    let mut net = Net::new(&["alice", "bob", "carol"], DeliveryConfig::default());
    for node in 0..NODES {
        net.connect(node);
    }
    let mut sent = Vec::new();
    for op in ops {
        match *op {
            Op::Send { from, skip } => {
                let to = (from + 1 + skip) % NODES;
                let text = format!("{from}->{to} #{}", sent.len());
                let key = net
                    .send(from, to, &text)
                    .expect("the outbox is large enough");
                sent.push((from, to, key));
            }
            Op::Up { node, stream } => {
                if let Some(s) = pick_stream(&net, node, stream) {
                    net.step_up(node, s);
                }
            }
            Op::Down { node, stream } => {
                if let Some(s) = pick_stream(&net, node, stream) {
                    net.step_down(node, s);
                }
            }
            Op::DuplicateDown { node, stream } => {
                if let Some(s) = pick_stream(&net, node, stream) {
                    net.duplicate_down(node, s);
                }
            }
            Op::Disconnect { node } => net.disconnect(node),
            Op::Connect { node, lanes } => {
                if !net.is_connected(node) {
                    net.nodes[node].lanes_next = lanes;
                    net.connect(node);
                }
            }
            Op::Flush => net.flush(),
            Op::CrashCore => net.crash_core(),
            Op::Advance { ms } => net.advance(Duration::from_millis(ms)),
        }
    }
    // The faults stop; the network heals. Commits answer what no one acknowledged.
    for node in 0..NODES {
        if !net.is_connected(node) {
            net.connect(node);
        }
    }
    for _ in 0..4 {
        net.run_until_quiet();
        net.flush();
    }
    net.run_until_quiet();
    (net, sent)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn every_sent_message_is_shown_exactly_once_in_per_sender_order(
        ops in proptest::collection::vec(op(), 0..250)
    ) {
        let (net, sent) = run(&ops);

        for to in 0..NODES {
            let shown = &net.nodes[to].shown;
            // Exactly once: the shown keys, per sender, are exactly the keys sent to us.
            let mut shown_count: BTreeMap<(String, SenderKey), usize> = BTreeMap::new();
            for m in shown {
                *shown_count.entry((m.from.to_string(), m.key)).or_default() += 1;
            }
            let expected: BTreeMap<(String, SenderKey), usize> = sent
                .iter()
                .filter(|(_, t, _)| *t == to)
                .map(|(from, _, key)| ((net.user(*from).to_string(), *key), 1))
                .collect();
            prop_assert_eq!(&shown_count, &expected, "node {} shown", to);
            // In order: per sender, counters increase.
            for from in 0..NODES {
                let counters: Vec<u64> = shown
                    .iter()
                    .filter(|m| m.from == net.user(from))
                    .map(|m| m.key.counter)
                    .collect();
                prop_assert!(counters.windows(2).all(|w| w[0] < w[1]), "order {:?}", counters);
            }
            // Everything acknowledged: the core keeps nothing.
            prop_assert_eq!(net.stored_for(to), 0);
        }
        for from in 0..NODES {
            let mut accepted: Vec<SenderKey> = Vec::new();
            for answer in &net.nodes[from].answers {
                match answer {
                    DeliveryEvent::Accepted { key, .. } => accepted.push(*key),
                    other => prop_assert!(false, "unexpected answer {:?}", other),
                }
            }
            let mut expected: Vec<SenderKey> =
                sent.iter().filter(|(f, _, _)| *f == from).map(|(_, _, k)| *k).collect();
            accepted.sort();
            expected.sort();
            prop_assert_eq!(accepted, expected, "node {} accepted once each", from);
            prop_assert_eq!(net.nodes[from].delivery.outbox_len(), 0);
            prop_assert_eq!(net.in_flight(from), 0);
        }
    }
}
