//! Conversations and the lanes they travel on.
//!
//! A conversation always maps to the same lane (`hash(conversation) % lanes`), so its
//! messages stay in order, while a packet lost on one lane does not stall conversations
//! on the others. The hash is FNV-1a: stable across processes and versions (unlike
//! `std`'s randomly seeded hasher), so both ends of a link agree.

use crate::ids::UserId;

/// A conversation's key: for a direct conversation, both user ids in sorted order, so
/// `A→B` and `B→A` are the same conversation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConversationId(pub u64);

impl ConversationId {
    /// The direct conversation between two users.
    pub fn direct(a: &UserId, b: &UserId) -> Self {
        Self::direct_between(a.as_str(), b.as_str())
    }

    /// [`ConversationId::direct`] from the two ids' text (`UserId` orders as its text
    /// does).
    pub(crate) fn direct_between(a: &str, b: &str) -> Self {
        let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
        let mut h = Fnv1a::new();
        h.write(lo.as_bytes());
        // A separator no user id contains (ids have no control characters), so
        // ("ab","c") and ("a","bc") differ.
        h.write(&[0]);
        h.write(hi.as_bytes());
        Self(h.finish())
    }

    /// The lane this conversation uses when there are `lanes` lanes (at least 1).
    pub fn lane(self, lanes: u8) -> u8 {
        let lanes = u64::from(lanes.max(1));
        (self.0 % lanes) as u8
    }
}

/// 64-bit FNV-1a.
pub(crate) struct Fnv1a(u64);

impl Fnv1a {
    pub(crate) fn new() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }

    pub(crate) fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 ^= u64::from(b);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }

    pub(crate) fn finish(&self) -> u64 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(s: &str) -> UserId {
        UserId::new(s).unwrap()
    }

    #[test]
    fn both_directions_share_a_conversation_and_lane() {
        let (a, b) = (user("alice"), user("bob"));
        assert_eq!(
            ConversationId::direct(&a, &b),
            ConversationId::direct(&b, &a)
        );
        for lanes in 1..=64 {
            let lane = ConversationId::direct(&a, &b).lane(lanes);
            assert!(lane < lanes);
        }
    }

    #[test]
    fn conversations_spread_over_lanes() {
        let me = user("me");
        let mut used = [0u32; 8];
        for i in 0..800 {
            let other = user(&format!("friend-{i}"));
            used[ConversationId::direct(&me, &other).lane(8) as usize] += 1;
        }
        // Every lane gets a fair share (expected 100 each).
        assert!(used.iter().all(|&n| n > 50), "{used:?}");
    }

    #[test]
    fn the_hash_is_stable_across_versions() {
        // Both ends of a link must agree, whatever version each runs: pin the value
        // (FNV-1a of "a\0b", checked independently).
        assert_eq!(
            ConversationId::direct(&user("a"), &user("b")).0,
            16_560_467_112_517_592_754
        );
    }
}
