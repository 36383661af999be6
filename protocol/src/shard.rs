//! Which core shard owns which user.
//!
//! Every component asks the [`ShardMap`] for "the shard that owns user X", never for "the
//! core", so adding shards later changes configuration, not code. Ownership uses
//! rendezvous (highest random weight) hashing: adding or removing a shard moves only the
//! users of that shard.

use crate::ids::{ShardId, UserId};
use crate::lanes::Fnv1a;

/// The set of core shards and the rule assigning users to them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShardMap {
    shards: Vec<ShardId>,
}

impl ShardMap {
    /// A map with one shard, `ShardId(0)`: the single-core deployment.
    pub fn single() -> Self {
        Self {
            shards: vec![ShardId(0)],
        }
    }

    /// A map over the given shards. Returns `None` if the list is empty.
    pub fn new(mut shards: Vec<ShardId>) -> Option<Self> {
        if shards.is_empty() {
            return None;
        }
        shards.sort_unstable();
        shards.dedup();
        Some(Self { shards })
    }

    /// All shards.
    pub fn shards(&self) -> &[ShardId] {
        &self.shards
    }

    /// The shard that owns `user`: its stored messages, sessions and devices.
    pub fn shard_of(&self, user: &UserId) -> ShardId {
        let mut best = (0u64, self.shards[0]);
        for &shard in &self.shards {
            let mut h = Fnv1a::new();
            h.write(&shard.0.to_le_bytes());
            h.write(user.as_str().as_bytes());
            let weight = h.finish();
            if weight > best.0 || (weight == best.0 && shard < best.1) {
                best = (weight, shard);
            }
        }
        best.1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_shard_owns_everyone() {
        let map = ShardMap::single();
        assert_eq!(map.shard_of(&UserId::new("x").unwrap()), ShardId(0));
    }

    #[test]
    fn adding_a_shard_moves_only_users_to_it() {
        let three = ShardMap::new(vec![ShardId(0), ShardId(1), ShardId(2)]).unwrap();
        let four = ShardMap::new(vec![ShardId(0), ShardId(1), ShardId(2), ShardId(3)]).unwrap();
        for i in 0..1000 {
            let user = UserId::new(format!("u{i}")).unwrap();
            let after = four.shard_of(&user);
            assert!(after == ShardId(3) || after == three.shard_of(&user));
        }
    }
}
