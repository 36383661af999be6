//! `Net`: quinn-proto's `Pair` idea for delivery. A few [`Delivery`] machines, a small
//! in-memory model of the edge and core, and a virtual clock; the test moves frames one
//! at a time, so it chooses every interleaving and fault (a dropped connection, a
//! duplicate on the wire, lanes overtaking each other, a core crash) and replays exactly.
//!
//! The core model follows DESIGN.md: a message is pushed to the online recipient at
//! once and kept in memory; it is answered `Accepted` when the recipient acknowledges it
//! or when it is committed ([`Net::flush`]); a crash loses what was not committed. It
//! keeps no memory of sender keys, so a re-send after a lost `Accepted` is stored again
//! under a new id: the recipient's de-duplication is what hides it.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use crate::delivery::{Delivery, DeliveryConfig, DeliveryEvent, SendError};
use crate::error::ErrorCode;
use crate::frames::client::{
    Accepted, ClientFrame, Limits, Message, Rejected, ServerFrame, Welcome,
};
use crate::ids::{MessageId, SenderKey, SessionId, UserId};
use crate::lanes::ConversationId;

/// Which stream of a connection: a lane, or the control stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Stream {
    Lane(u8),
    Control,
}

/// One device: its machine, its connection (if any) and what its game saw.
pub(super) struct Node {
    pub(super) user: UserId,
    pub(super) delivery: Delivery,
    pub(super) link: Option<Link>,
    /// Lanes the edge will announce on this node's next connect.
    pub(super) lanes_next: u8,
    /// Messages the game took, in order.
    pub(super) shown: Vec<Message>,
    /// `Accepted`/`Rejected` events, in order.
    pub(super) answers: Vec<DeliveryEvent>,
    pub(super) synced: usize,
}

/// One connection's in-flight frames, per stream and direction. Dropping it loses them.
pub(super) struct Link {
    pub(super) generation: u64,
    pub(super) lanes: u8,
    pub(super) up_lanes: Vec<VecDeque<ClientFrame>>,
    pub(super) up_control: VecDeque<ClientFrame>,
    pub(super) down_lanes: Vec<VecDeque<ServerFrame>>,
    pub(super) down_control: VecDeque<ServerFrame>,
}

impl Link {
    fn new(generation: u64, lanes: u8) -> Self {
        Self {
            generation,
            lanes,
            up_lanes: (0..lanes).map(|_| VecDeque::new()).collect(),
            up_control: VecDeque::new(),
            down_lanes: (0..lanes).map(|_| VecDeque::new()).collect(),
            down_control: VecDeque::new(),
        }
    }

    pub(super) fn up(&mut self, stream: Stream) -> &mut VecDeque<ClientFrame> {
        match stream {
            Stream::Lane(l) => &mut self.up_lanes[usize::from(l)],
            Stream::Control => &mut self.up_control,
        }
    }

    pub(super) fn down(&mut self, stream: Stream) -> &mut VecDeque<ServerFrame> {
        match stream {
            Stream::Lane(l) => &mut self.down_lanes[usize::from(l)],
            Stream::Control => &mut self.down_control,
        }
    }

    /// Every stream, lanes first.
    pub(super) fn streams(&self) -> Vec<Stream> {
        (0..self.lanes)
            .map(Stream::Lane)
            .chain([Stream::Control])
            .collect()
    }

    fn in_flight(&self) -> usize {
        self.up_lanes.iter().map(VecDeque::len).sum::<usize>()
            + self.up_control.len()
            + self.down_lanes.iter().map(VecDeque::len).sum::<usize>()
            + self.down_control.len()
    }
}

/// A message the core holds for a recipient.
struct Stored {
    message: Message,
    /// Committed to disk: survives a crash.
    durable: bool,
    /// The sender was told `Accepted` (or that answer is lost with its connection).
    answered: bool,
    /// The submitting node and its connection generation, to route the answer.
    sender: (usize, u64),
}

/// The edge and core in one: routes, stores, answers, replays.
#[derive(Default)]
pub(super) struct Core {
    id_last: u64,
    generation_last: u64,
    /// Per recipient, what is not yet acknowledged, in id order.
    inbox: BTreeMap<UserId, BTreeMap<MessageId, Stored>>,
    /// `(from, to)` pairs the core refuses with `Blocked`.
    pub(super) blocked: Vec<(UserId, UserId)>,
}

/// Clients, core and clock.
pub(super) struct Net {
    pub(super) nodes: Vec<Node>,
    pub(super) core: Core,
    base: Instant,
    pub(super) now: Instant,
}

impl Net {
    /// One node per user name, all with `config`, each epoch distinct; none connected.
    pub(super) fn new(users: &[&str], config: DeliveryConfig) -> Self {
        let base = Instant::now();
        let nodes = users
            .iter()
            .enumerate()
            .map(|(i, name)| Node {
                user: UserId::new(*name).unwrap(),
                delivery: Delivery::new(1000 + i as u64, config.clone()),
                link: None,
                lanes_next: 4,
                shown: Vec::new(),
                answers: Vec::new(),
                synced: 0,
            })
            .collect();
        Self {
            nodes,
            core: Core::default(),
            base,
            now: base,
        }
    }

    /// Virtual time since the start.
    pub(super) fn elapsed(&self) -> Duration {
        self.now - self.base
    }

    pub(super) fn user(&self, node: usize) -> UserId {
        self.nodes[node].user.clone()
    }

    /// Node `from` queues a message to node `to`.
    pub(super) fn send(
        &mut self,
        from: usize,
        to: usize,
        text: &str,
    ) -> Result<SenderKey, SendError> {
        let to_user = self.user(to);
        let now = self.now;
        let result = self.nodes[from]
            .delivery
            .send(now, to_user, text.to_string());
        self.pump(from);
        result
    }

    /// Connects a node: `Welcome`, then the core replays its inbox in id order and says
    /// `Synced`.
    pub(super) fn connect(&mut self, node: usize) {
        assert!(self.nodes[node].link.is_none(), "already connected");
        self.core.generation_last += 1;
        let lanes = self.nodes[node].lanes_next;
        let mut link = Link::new(self.core.generation_last, lanes);
        let user = self.user(node);
        if let Some(inbox) = self.core.inbox.get(&user) {
            for stored in inbox.values() {
                let lane = ConversationId::direct(&stored.message.from, &user).lane(lanes);
                link.down(Stream::Lane(lane))
                    .push_back(ServerFrame::Deliver(stored.message.clone()));
            }
        }
        link.down_control.push_back(ServerFrame::Synced);
        let welcome = Welcome {
            user: user.clone(),
            name: user.to_string(),
            session: SessionId(self.core.generation_last),
            limits: Limits {
                text_bytes_max: 4096,
                send_per_second: 100,
                send_burst: 100,
                lanes,
            },
            capabilities: 0,
        };
        self.nodes[node].link = Some(link);
        let now = self.now;
        self.nodes[node].delivery.handle_connected(now, &welcome);
        self.pump(node);
    }

    /// Drops a node's connection with everything in flight on it, both ways.
    pub(super) fn disconnect(&mut self, node: usize) {
        if self.nodes[node].link.take().is_some() {
            let now = self.now;
            self.nodes[node].delivery.handle_disconnected(now);
        }
    }

    pub(super) fn is_connected(&self, node: usize) -> bool {
        self.nodes[node].link.is_some()
    }

    /// Drains the node's events into what the game saw and its transmits onto its
    /// connection — what a driver does after every input.
    pub(super) fn pump(&mut self, node: usize) {
        let n = &mut self.nodes[node];
        // Events first: taking a message queues its acknowledgement for the transmits.
        while let Some(event) = n.delivery.poll_event() {
            match event {
                DeliveryEvent::Message(m) => n.shown.push(m),
                DeliveryEvent::Synced => n.synced += 1,
                answer => n.answers.push(answer),
            }
        }
        while let Some(t) = n.delivery.poll_transmit() {
            let link = n.link.as_mut().expect("transmit while disconnected");
            let stream = match t.lane {
                Some(lane) => {
                    assert!(lane < link.lanes, "lane {lane} of {}", link.lanes);
                    Stream::Lane(lane)
                }
                None => Stream::Control,
            };
            link.up(stream).push_back(t.frame);
        }
    }

    /// Moves the first frame of one of the node's upstream streams to the core. `false`
    /// if there was none.
    pub(super) fn step_up(&mut self, node: usize, stream: Stream) -> bool {
        let Some(link) = self.nodes[node].link.as_mut() else {
            return false;
        };
        let generation = link.generation;
        let Some(frame) = link.up(stream).pop_front() else {
            return false;
        };
        self.core_receive(node, generation, frame);
        true
    }

    /// Moves the first frame of one of the node's downstream streams to its machine,
    /// without draining the machine (so several arrivals can be batched).
    pub(super) fn arrive_down(&mut self, node: usize, stream: Stream) -> bool {
        let now = self.now;
        let n = &mut self.nodes[node];
        let Some(link) = n.link.as_mut() else {
            return false;
        };
        let Some(frame) = link.down(stream).pop_front() else {
            return false;
        };
        n.delivery.handle_frame(now, frame);
        true
    }

    /// [`Net::arrive_down`], then a pump.
    pub(super) fn step_down(&mut self, node: usize, stream: Stream) -> bool {
        let moved = self.arrive_down(node, stream);
        self.pump(node);
        moved
    }

    /// Duplicates the first frame of a downstream stream on the wire.
    pub(super) fn duplicate_down(&mut self, node: usize, stream: Stream) -> bool {
        let Some(link) = self.nodes[node].link.as_mut() else {
            return false;
        };
        let queue = link.down(stream);
        let Some(front) = queue.front().cloned() else {
            return false;
        };
        queue.push_front(front);
        true
    }

    /// Commits everything in memory and answers `Accepted` for what was not answered.
    pub(super) fn flush(&mut self) {
        let mut answers = Vec::new();
        for stored in self
            .core
            .inbox
            .values_mut()
            .flat_map(|inbox| inbox.values_mut())
        {
            stored.durable = true;
            if !stored.answered {
                stored.answered = true;
                answers.push((stored.sender, stored.message.key, stored.message.id));
            }
        }
        for (sender, key, id) in answers {
            self.answer(sender, ServerFrame::Accepted(Accepted { key, id }));
        }
    }

    /// The core crashes: what was not committed is lost, every connection drops.
    pub(super) fn crash_core(&mut self) {
        for inbox in self.core.inbox.values_mut() {
            inbox.retain(|_, s| s.durable);
        }
        for node in 0..self.nodes.len() {
            self.disconnect(node);
        }
    }

    /// Advances the clock and fires due timers.
    pub(super) fn advance(&mut self, by: Duration) {
        self.now += by;
        let now = self.now;
        for node in 0..self.nodes.len() {
            let n = &mut self.nodes[node];
            if n.delivery.poll_timeout().is_some_and(|t| t <= now) {
                n.delivery.handle_timeout(now);
            }
            self.pump(node);
        }
    }

    /// Moves frames until nothing is in flight, in a fixed order. Panics if that takes
    /// unreasonably many steps (a livelock is a bug).
    pub(super) fn run_until_quiet(&mut self) {
        for _ in 0..100_000 {
            let mut moved = false;
            for node in 0..self.nodes.len() {
                self.pump(node);
                let streams = match &self.nodes[node].link {
                    Some(link) => link.streams(),
                    None => continue,
                };
                for stream in streams {
                    while self.step_up(node, stream) {
                        moved = true;
                    }
                    while self.step_down(node, stream) {
                        moved = true;
                    }
                }
            }
            if !moved {
                return;
            }
        }
        panic!("the network did not go quiet");
    }

    /// Frames in flight on a node's connection.
    pub(super) fn in_flight(&self, node: usize) -> usize {
        self.nodes[node].link.as_ref().map_or(0, Link::in_flight)
    }

    /// Messages the core still holds for a node's user.
    pub(super) fn stored_for(&self, node: usize) -> usize {
        self.core
            .inbox
            .get(&self.nodes[node].user)
            .map_or(0, BTreeMap::len)
    }

    fn core_receive(&mut self, node: usize, generation: u64, frame: ClientFrame) {
        let from = self.user(node);
        match frame {
            ClientFrame::Hello(_) => panic!("the model does its own handshake"),
            ClientFrame::Send(s) => {
                if self.core.blocked.contains(&(from.clone(), s.to.clone())) {
                    let rejected = Rejected {
                        key: s.key,
                        code: ErrorCode::Blocked,
                        detail: "blocked".into(),
                    };
                    self.answer((node, generation), ServerFrame::Rejected(rejected));
                    return;
                }
                self.core.id_last += 1;
                let message = Message {
                    id: MessageId(self.core.id_last),
                    from: from.clone(),
                    from_name: from.to_string(),
                    to: s.to.clone(),
                    key: s.key,
                    sent_at_ms: self.elapsed().as_millis() as u64,
                    text: s.text,
                };
                // Push to the online recipient at once, on its lane for this conversation.
                if let Some(recipient) = self.nodes.iter_mut().find(|n| n.user == s.to)
                    && let Some(link) = recipient.link.as_mut()
                {
                    let lane = ConversationId::direct(&from, &s.to).lane(link.lanes);
                    link.down(Stream::Lane(lane))
                        .push_back(ServerFrame::Deliver(message.clone()));
                }
                let stored = Stored {
                    message,
                    durable: false,
                    answered: false,
                    sender: (node, generation),
                };
                self.core
                    .inbox
                    .entry(s.to)
                    .or_default()
                    .insert(MessageId(self.core.id_last), stored);
            }
            ClientFrame::Ack(ack) => {
                let mut answers = Vec::new();
                if let Some(inbox) = self.core.inbox.get_mut(&from) {
                    for range in &ack.ranges {
                        let ids: Vec<MessageId> = inbox
                            .range(range.first..=range.last)
                            .map(|(id, _)| *id)
                            .collect();
                        for id in ids {
                            let stored = inbox.remove(&id).unwrap();
                            if !stored.answered {
                                answers.push((stored.sender, stored.message.key, id));
                            }
                        }
                    }
                }
                for (sender, key, id) in answers {
                    self.answer(sender, ServerFrame::Accepted(Accepted { key, id }));
                }
            }
        }
    }

    /// Sends an answer to the connection that submitted the message; lost if it is gone.
    fn answer(&mut self, (node, generation): (usize, u64), frame: ServerFrame) {
        if let Some(link) = self.nodes[node].link.as_mut()
            && link.generation == generation
        {
            link.down_control.push_back(frame);
        }
    }
}
