//! The text of a load message: a fixed-width header, padded with dots to the size asked
//! for.
//!
//! ```text
//! PPPPPPPP SSSSSSSSSS IIIIIIIIIIIIIIIIIII AAAAAAAAAAAAAAAAAAA.........
//! pair     sequence   intended send (ns)  actual send (ns)    padding
//! ```
//!
//! Times are nanoseconds since the run's base instant. The header is plain ASCII so the
//! text is valid UTF-8 of exactly the requested size, as a chat message must be.

/// Bytes of the header; messages must be at least this long.
pub const HEADER_BYTES: usize = 60;

/// What a load message carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// The sender→recipient pair it belongs to.
    pub pair: usize,
    /// Its number within the pair, from 0.
    pub seq: u64,
    /// When the schedule meant it to be sent (ns since the base instant).
    pub intended_ns: u64,
    /// When it was handed to the client library (ns since the base instant).
    pub actual_ns: u64,
}

impl Header {
    /// The message text, `size` bytes long (at least [`HEADER_BYTES`]).
    pub fn encode(&self, size: usize) -> String {
        let mut text = format!(
            "{:08} {:010} {:019} {:019}",
            self.pair, self.seq, self.intended_ns, self.actual_ns
        );
        // The widths above hold any pair below 10⁸ and any time below 10¹⁹ ns (317 years).
        debug_assert!(text.len() < HEADER_BYTES, "header overflow: {text}");
        let padding = size.max(HEADER_BYTES).saturating_sub(text.len());
        text.extend(std::iter::repeat_n('.', padding));
        text
    }

    /// The header of a load message, or `None` if `text` is not one.
    pub fn decode(text: &str) -> Option<Header> {
        let mut parts = text.split(' ');
        let pair = parts.next()?.parse().ok()?;
        let seq = parts.next()?.parse().ok()?;
        let intended_ns = parts.next()?.parse().ok()?;
        let actual_ns = parts.next()?.trim_end_matches('.').parse().ok()?;
        if parts.next().is_some() {
            return None;
        }
        Some(Header {
            pair,
            seq,
            intended_ns,
            actual_ns,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_header_survives_the_text_round_trip_at_the_requested_size() {
        let header = Header {
            pair: 49,
            seq: 1_234_567,
            intended_ns: 10_000_000_123,
            actual_ns: 10_000_400_456,
        };
        for size in [HEADER_BYTES, 64, 1024, 4096] {
            let text = header.encode(size);
            assert_eq!(text.len(), size);
            assert_eq!(Header::decode(&text), Some(header));
        }
    }

    #[test]
    fn the_largest_values_still_fit_the_header() {
        // A wider header would make small messages larger than asked for.
        let header = Header {
            pair: 99_999_999,
            seq: 9_999_999_999,
            intended_ns: 9_999_999_999_999_999_999,
            actual_ns: 9_999_999_999_999_999_999,
        };
        let text = header.encode(HEADER_BYTES);
        assert_eq!(text.len(), HEADER_BYTES);
        assert_eq!(Header::decode(&text), Some(header));
    }

    #[test]
    fn other_texts_are_not_taken_for_load_messages() {
        // A stray message (a leftover from another run, a human) must not be counted.
        assert_eq!(Header::decode("gg, rematch?"), None);
        assert_eq!(Header::decode(""), None);
        assert_eq!(Header::decode("00000001 0000000002 3 4 extra"), None);
        assert_eq!(Header::decode("00000001 x 3 4"), None);
    }
}
