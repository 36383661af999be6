//! The text of every benchmark message: which conversation, which message of it, and
//! when it was meant to be sent, so the receiving side alone can measure latency and
//! detect loss, duplicates and reordering. The same text travels over quichat and MQTT.

/// Bytes the header takes; a message is at least this long.
pub const HEADER_BYTES: usize = 36;

/// What a message says about itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// The conversation (0-based index).
    pub conversation: usize,
    /// The message's number within its conversation, from 0, in sending order.
    pub seq: u64,
    /// The intended send time, in nanoseconds since the run's base instant.
    pub intended_ns: u64,
}

/// The text for `header`, padded with `.` to `size` bytes (at least [`HEADER_BYTES`]).
pub fn encode(header: Header, size: usize) -> String {
    let Header {
        conversation,
        seq,
        intended_ns,
    } = header;
    let mut text = format!("{conversation:04} {seq:010} {intended_ns:020}");
    debug_assert_eq!(text.len(), HEADER_BYTES, "header fields out of range");
    if text.len() < size {
        text.extend(std::iter::repeat_n('.', size - text.len()));
    }
    text
}

/// Reads the header back; `None` if `text` is not one of ours.
pub fn decode(text: &str) -> Option<Header> {
    let head = text.get(..HEADER_BYTES)?;
    let mut parts = head.split(' ');
    let conversation = parts.next()?.parse().ok()?;
    let seq = parts.next()?.parse().ok()?;
    let intended_ns = parts.next()?.parse().ok()?;
    if parts.next().is_some() || text[HEADER_BYTES..].bytes().any(|b| b != b'.') {
        return None;
    }
    Some(Header {
        conversation,
        seq,
        intended_ns,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_header_survives_the_round_trip_at_any_size() {
        let header = Header {
            conversation: 49,
            seq: 1_234_567,
            intended_ns: 98_765_432_100,
        };
        for size in [0, HEADER_BYTES, 64, 4096] {
            let text = encode(header, size);
            assert_eq!(text.len(), size.max(HEADER_BYTES));
            assert_eq!(decode(&text), Some(header));
        }
    }

    #[test]
    fn foreign_or_damaged_text_is_not_taken_for_a_message() {
        // A corrupted message must count as unreadable, never as some other message.
        let text = encode(
            Header {
                conversation: 1,
                seq: 2,
                intended_ns: 3,
            },
            64,
        );
        assert_eq!(decode("gg, rematch?"), None);
        assert_eq!(decode(&text[..20]), None);
        assert_eq!(decode(&text.replacen('.', "x", 1)), None);
    }
}
