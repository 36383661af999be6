//! Identifiers that cross the wire: users, devices, sessions, messages, sender keys.

use compact_str::CompactString;
use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};
use std::fmt;

use crate::limits::USER_ID_BYTES_MAX;

/// A user's id: the verified `sub` of their token. 1 to [`USER_ID_BYTES_MAX`] bytes of
/// UTF-8 with no control characters. Decoding checks this, so a `UserId` is always valid.
///
/// Ids of up to 24 bytes (the common case) are stored inline, without a heap allocation;
/// longer ones live on the heap. On the wire it is a plain string, as a `String` would be.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UserId(CompactString);

/// Why a string is not a valid [`UserId`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UserIdError {
    /// The id is empty.
    #[error("user id is empty")]
    Empty,
    /// The id is longer than [`USER_ID_BYTES_MAX`].
    #[error("user id is {0} bytes, the limit is {USER_ID_BYTES_MAX}")]
    TooLong(usize),
    /// The id contains a control character.
    #[error("user id contains a control character")]
    ControlCharacter,
}

impl UserId {
    /// Checks `id` and wraps it.
    pub fn new(id: impl Into<String>) -> Result<Self, UserIdError> {
        let id = id.into();
        check_user_id(&id)?;
        // Inline when it fits; otherwise the `String`'s buffer is kept as it is.
        Ok(Self(CompactString::from(id)))
    }

    /// Checks `id` and copies it (inline, without allocating, when it is short).
    #[inline]
    pub(crate) fn from_str_checked(id: &str) -> Result<Self, UserIdError> {
        check_user_id(id)?;
        Ok(Self(CompactString::new(id)))
    }

    /// Copies an id that has passed [`check_user_id`].
    #[inline]
    pub(crate) fn from_checked(id: &str) -> Self {
        debug_assert!(check_user_id(id).is_ok());
        Self(CompactString::new(id))
    }

    /// The id as text.
    #[inline]
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }
}

/// The rules of a [`UserId`]: 1 to [`USER_ID_BYTES_MAX`] bytes, no control character.
#[inline]
pub(crate) fn check_user_id(id: &str) -> Result<(), UserIdError> {
    if id.is_empty() {
        return Err(UserIdError::Empty);
    }
    if id.len() > USER_ID_BYTES_MAX {
        return Err(UserIdError::TooLong(id.len()));
    }
    // Printable ASCII (0x20..=0x7e) holds no control character; only an id with another
    // byte needs the per-character check. The byte test has no early exit.
    let printable_ascii = id
        .bytes()
        .fold(true, |ok, b| ok & (0x20..0x7f).contains(&b));
    if !printable_ascii && id.chars().any(char::is_control) {
        return Err(UserIdError::ControlCharacter);
    }
    Ok(())
}

impl Serialize for UserId {
    #[inline]
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for UserId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_str(UserIdVisitor)
    }
}

/// Builds a [`UserId`] from whatever string the format hands over, borrowed or owned,
/// without an intermediate `String` (postcard lends the frame's bytes, already checked as
/// UTF-8). A rule violation is a serde custom error, as with `#[serde(try_from)]`.
struct UserIdVisitor;

impl<'de> Visitor<'de> for UserIdVisitor {
    type Value = UserId;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a user id string")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<UserId, E> {
        UserId::from_str_checked(v).map_err(E::custom)
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<UserId, E> {
        UserId::new(v).map_err(E::custom)
    }

    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<UserId, E> {
        match std::str::from_utf8(v) {
            Ok(s) => self.visit_str(s),
            Err(_) => Err(E::invalid_value(de::Unexpected::Bytes(v), &self)),
        }
    }
}

impl TryFrom<String> for UserId {
    type Error = UserIdError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::new(value)
    }
}

impl std::str::FromStr for UserId {
    type Err = UserIdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::from_str_checked(s)
    }
}

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A device of a user (game client, companion app). Chosen randomly by the client library
/// once and kept, so the core can keep a delivery cursor per device.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct DeviceId(pub u64);

/// One connection of one device at an edge. Assigned by the edge, unique within it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct SessionId(pub u64);

/// A message's id, assigned by the core shard that stores it. Never reused by that shard,
/// even across a crash, and increasing in the order the shard accepted messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct MessageId(pub u64);

/// A core shard's number.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ShardId(pub u16);

/// The sender-side identity of a message: the sender's session epoch (chosen by the
/// client library each time it starts) and a counter that increases with every message
/// of that epoch. Together with the sender's user id it names a message uniquely before
/// the core has given it a [`MessageId`], which makes re-sends idempotent for the
/// recipient: it shows each `(sender, epoch, counter)` once.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct SenderKey {
    /// The sender library's epoch.
    pub epoch: u64,
    /// Position of the message in that epoch, starting at 1.
    pub counter: u64,
}

/// An inclusive range of message ids, as used in acknowledgements.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdRange {
    /// First id in the range.
    pub first: MessageId,
    /// Last id in the range (inclusive, `>= first`).
    pub last: MessageId,
}

impl IdRange {
    /// A range holding exactly one id.
    pub fn single(id: MessageId) -> Self {
        Self {
            first: id,
            last: id,
        }
    }

    /// Whether `id` lies in the range.
    pub fn contains(&self, id: MessageId) -> bool {
        self.first <= id && id <= self.last
    }
}

/// Folds a set of ids into the fewest sorted, non-overlapping inclusive ranges.
pub fn ranges_from_ids(ids: impl IntoIterator<Item = MessageId>) -> Vec<IdRange> {
    let mut ids: Vec<u64> = ids.into_iter().map(|id| id.0).collect();
    ids.sort_unstable();
    ids.dedup();
    let mut ranges: Vec<IdRange> = Vec::new();
    for id in ids {
        match ranges.last_mut() {
            Some(last) if last.last.0.checked_add(1) == Some(id) => last.last = MessageId(id),
            _ => ranges.push(IdRange::single(MessageId(id))),
        }
    }
    ranges
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_ids_are_checked() {
        assert!(UserId::new("alice").is_ok());
        assert_eq!(UserId::new(""), Err(UserIdError::Empty));
        assert_eq!(
            UserId::new("x".repeat(USER_ID_BYTES_MAX + 1)),
            Err(UserIdError::TooLong(USER_ID_BYTES_MAX + 1))
        );
        assert_eq!(UserId::new("a\nb"), Err(UserIdError::ControlCharacter));
    }

    #[test]
    fn ids_fold_into_ranges() {
        let ids = [5, 1, 2, 3, 9, 10, 3].map(MessageId);
        let ranges = ranges_from_ids(ids);
        let pairs: Vec<(u64, u64)> = ranges.iter().map(|r| (r.first.0, r.last.0)).collect();
        assert_eq!(pairs, vec![(1, 3), (5, 5), (9, 10)]);
    }
}
