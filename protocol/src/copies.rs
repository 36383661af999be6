//! Lane copies: a second, unreliable copy of small lane frames in a QUIC datagram.
//!
//! Lanes keep a packet lost on one conversation from stalling the others, but the
//! messages in the lost packet itself still wait for QUIC to notice the loss and send them
//! again: about one and a half round trips. On a lossy link those messages are the tail of
//! the latency distribution (at 2 % loss and a 50 ms round trip, the p99). A lane copy
//! sends the same frames once more, a moment later, in a QUIC datagram: if the stream's
//! packet is lost and the copy's is not, the receiver has the frames a few milliseconds
//! late instead of a round trip and a half. The stream stays the reliable path; a copy is
//! only ever a faster way to get frames the stream will bring anyway, so losing a copy
//! costs nothing and a copy never changes what is delivered or in which order.
//!
//! # Datagram layout
//!
//! ```text
//! varint(stream id) ‖ varint(first sequence number) ‖ frame ‖ frame ‖ …
//! ```
//!
//! Varints are LEB128, as postcard writes them. Each frame is exactly as it is on the
//! stream (`varint(len) ‖ postcard(frame)`, see [`crate::codec`]). A lane's frames are
//! numbered from 0 in the order they are written to its stream (the stream's kind byte is
//! not a frame); a copy carries consecutive frames starting at `first`.
//!
//! # Receiving
//!
//! [`LaneMerge`] merges a lane's stream with its copies: every frame is handed out once,
//! in stream order, from whichever arrived first. Copies that arrive ahead of a gap wait
//! in a bounded buffer ([`COPY_EARLY_FRAMES_MAX`]); when it is full the farthest ahead is
//! dropped (the stream brings it later).
//!
//! Copies are negotiated: a peer sends them only to a peer whose hello carried
//! [`crate::frames::CAP_LANE_COPIES`].

use std::collections::{BTreeMap, VecDeque};

use bytes::BytesMut;
use serde::de::DeserializeOwned;

use crate::codec::FrameDecoder;
use crate::error::DecodeError;
use crate::frames::Validate;

/// Most frames one copy datagram may carry.
pub const COPY_FRAMES_MAX: usize = 64;
/// Frames that arrived in copies ahead of the next frame due, kept per lane until the gap
/// is filled. When full, the frame farthest ahead is dropped.
pub const COPY_EARLY_FRAMES_MAX: usize = 64;
/// Largest copy datagram a receiver accepts (a QUIC datagram never exceeds the path MTU;
/// this bounds what a decoder is asked to look at).
pub const COPY_BYTES_MAX: usize = 16 * 1024;

/// Which frames a copy carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CopyHeader {
    /// The QUIC stream id of the lane the frames were written to.
    pub stream: u64,
    /// The sequence number of the first frame in the copy (frames count from 0 per lane).
    pub first: u64,
}

/// Writes a copy's header; append the frames' encoded bytes after it.
pub fn encode_header(header: CopyHeader, out: &mut BytesMut) {
    put_varint(header.stream, out);
    put_varint(header.first, out);
}

/// Decodes a copy datagram: its header and every frame in it. Anything malformed (a bad
/// header, a truncated or invalid frame, too many frames, an oversized datagram) is an
/// error, as the same bytes on a stream would be.
pub fn decode<T: DeserializeOwned + Validate>(
    datagram: &[u8],
    frame_bytes_max: usize,
) -> Result<(CopyHeader, Vec<T>), DecodeError> {
    let (header, header_len) = decode_header(datagram)?;
    let frames = decode_frames(header.first, &datagram[header_len..], frame_bytes_max)?;
    Ok((header, frames))
}

/// Decodes a copy's header alone: the header and its length in bytes (the frames follow).
pub fn decode_header(datagram: &[u8]) -> Result<(CopyHeader, usize), DecodeError> {
    if datagram.len() > COPY_BYTES_MAX {
        return Err(DecodeError::TooLarge {
            len: datagram.len(),
            max: COPY_BYTES_MAX,
        });
    }
    let (stream, rest) = take_varint(datagram)?;
    let (first, rest) = take_varint(rest)?;
    Ok((CopyHeader { stream, first }, datagram.len() - rest.len()))
}

/// Decodes the frames of a copy whose first frame is numbered `first`: at least one, at
/// most [`COPY_FRAMES_MAX`], whole, each valid.
pub fn decode_frames<T: DeserializeOwned + Validate>(
    first: u64,
    bytes: &[u8],
    frame_bytes_max: usize,
) -> Result<Vec<T>, DecodeError> {
    let mut decoder = FrameDecoder::new(frame_bytes_max);
    decoder.extend(bytes);
    let mut frames = Vec::new();
    while let Some(frame) = decoder.next_frame::<T>()? {
        if frames.len() == COPY_FRAMES_MAX {
            return Err(DecodeError::Invalid("too many frames in a lane copy"));
        }
        frames.push(frame);
    }
    if decoder.buffered() != 0 {
        return Err(DecodeError::Truncated);
    }
    if frames.is_empty() {
        return Err(DecodeError::Invalid("lane copy without frames"));
    }
    if first.checked_add(frames.len() as u64).is_none() {
        return Err(DecodeError::Invalid("lane copy sequence overflows"));
    }
    Ok(frames)
}

fn put_varint(mut v: u64, out: &mut BytesMut) {
    while v >= 0x80 {
        out.extend_from_slice(&[(v as u8) | 0x80]);
        v >>= 7;
    }
    out.extend_from_slice(&[v as u8]);
}

fn take_varint(bytes: &[u8]) -> Result<(u64, &[u8]), DecodeError> {
    let mut v: u64 = 0;
    for (i, &b) in bytes.iter().enumerate().take(10) {
        let bits = u64::from(b & 0x7f);
        // The tenth byte may only hold the top bit of a u64.
        if i == 9 && b > 1 {
            return Err(DecodeError::Malformed);
        }
        v |= bits << (7 * i);
        if b & 0x80 == 0 {
            return Ok((v, &bytes[i + 1..]));
        }
    }
    if bytes.len() >= 10 {
        Err(DecodeError::Malformed)
    } else {
        Err(DecodeError::Truncated)
    }
}

/// Counters of a [`LaneMerge`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MergeStats {
    /// Frames handed out from the stream.
    pub from_stream: u64,
    /// Frames handed out from copies (their stream copy, arriving later, is skipped).
    pub from_copies: u64,
    /// Copied frames dropped because the early buffer was full (the stream brings them).
    pub early_dropped: u64,
}

/// One lane's stream merged with its copies, sans-IO: feed frames in with
/// [`LaneMerge::handle_stream_frame`] and [`LaneMerge::handle_copy`], take them out in
/// order with [`LaneMerge::poll_frame`]. Each frame comes out once, in stream order.
#[derive(Debug)]
pub struct LaneMerge<F> {
    /// The sequence number of the next frame to hand out.
    next: u64,
    /// Frames read from the stream so far (the next stream frame's number).
    stream_read: u64,
    /// Copied frames ahead of `next`, waiting for the gap to fill.
    early: BTreeMap<u64, F>,
    /// Frames in order, ready to hand out.
    ready: VecDeque<F>,
    stats: MergeStats,
}

impl<F> Default for LaneMerge<F> {
    fn default() -> Self {
        Self {
            next: 0,
            stream_read: 0,
            early: BTreeMap::new(),
            ready: VecDeque::new(),
            stats: MergeStats::default(),
        }
    }
}

impl<F> LaneMerge<F> {
    /// A lane with nothing received yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// The next frame read from the stream (the stream delivers them in order).
    pub fn handle_stream_frame(&mut self, frame: F) {
        let seq = self.stream_read;
        self.stream_read += 1;
        // Every frame before `next` was handed out already, from the stream or a copy.
        if seq < self.next {
            return;
        }
        debug_assert_eq!(seq, self.next, "the stream cannot skip a frame");
        self.stats.from_stream += 1;
        self.advance(frame);
    }

    /// Frames `first`, `first + 1`, … from a copy.
    pub fn handle_copy(&mut self, first: u64, frames: impl IntoIterator<Item = F>) {
        for (seq, frame) in (first..).zip(frames) {
            if seq < self.next {
                continue;
            }
            if seq == self.next {
                self.stats.from_copies += 1;
                self.advance(frame);
                continue;
            }
            if self.early.len() == COPY_EARLY_FRAMES_MAX {
                // Keep the frames nearest the gap: they are the ones due first.
                match self.early.last_key_value() {
                    Some((&farthest, _)) if farthest > seq => {
                        self.early.remove(&farthest);
                        self.stats.early_dropped += 1;
                    }
                    _ => {
                        self.stats.early_dropped += 1;
                        continue;
                    }
                }
            }
            self.early.entry(seq).or_insert(frame);
        }
    }

    /// The next frame in order, if one is ready.
    pub fn poll_frame(&mut self) -> Option<F> {
        self.ready.pop_front()
    }

    /// The merge's counters.
    pub fn stats(&self) -> MergeStats {
        self.stats
    }

    /// Hands out `frame` (number `next`), then every early frame that now follows.
    fn advance(&mut self, frame: F) {
        self.ready.push_back(frame);
        self.next += 1;
        while let Some(entry) = self.early.first_entry() {
            if *entry.key() < self.next {
                entry.remove();
            } else if *entry.key() == self.next {
                self.ready.push_back(entry.remove());
                self.stats.from_copies += 1;
                self.next += 1;
            } else {
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec;
    use crate::frames::client::{Ack, ClientFrame};
    use crate::ids::{IdRange, MessageId};
    use proptest::prelude::*;

    fn ack(id: u64) -> ClientFrame {
        ClientFrame::Ack(Ack {
            ranges: vec![IdRange::single(MessageId(id))],
        })
    }

    fn drain(merge: &mut LaneMerge<u64>, out: &mut Vec<u64>) {
        while let Some(f) = merge.poll_frame() {
            out.push(f);
        }
    }

    #[test]
    fn copy_round_trips_with_its_frames() {
        let mut buf = BytesMut::new();
        let header = CopyHeader {
            stream: 2 + 4 * 300,
            first: 70_000,
        };
        encode_header(header, &mut buf);
        for id in 0..3 {
            codec::encode(&ack(id), &mut buf).unwrap();
        }
        let (got, frames) = decode::<ClientFrame>(&buf, 4096).unwrap();
        assert_eq!(got, header);
        assert_eq!(frames, vec![ack(0), ack(1), ack(2)]);
    }

    #[test]
    fn malformed_copies_are_refused() {
        let mut buf = BytesMut::new();
        encode_header(
            CopyHeader {
                stream: 3,
                first: 0,
            },
            &mut buf,
        );
        // No frames at all.
        assert!(decode::<ClientFrame>(&buf, 4096).is_err());
        codec::encode(&ack(1), &mut buf).unwrap();
        // A frame cut short.
        assert_eq!(
            decode::<ClientFrame>(&buf[..buf.len() - 1], 4096),
            Err(DecodeError::Truncated)
        );
        // A header cut short, and a runaway varint.
        assert_eq!(
            decode::<ClientFrame>(&[0x80], 4096),
            Err(DecodeError::Truncated)
        );
        assert_eq!(
            decode::<ClientFrame>(&[0xff; 12], 4096),
            Err(DecodeError::Malformed)
        );
        // A sequence number that would overflow.
        let mut far = BytesMut::new();
        encode_header(
            CopyHeader {
                stream: 3,
                first: u64::MAX,
            },
            &mut far,
        );
        codec::encode(&ack(1), &mut far).unwrap();
        assert!(decode::<ClientFrame>(&far, 4096).is_err());
    }

    #[test]
    fn a_copy_fills_the_gap_of_a_lost_stream_packet() {
        let mut merge = LaneMerge::new();
        let mut out = Vec::new();
        merge.handle_stream_frame(0);
        // Frame 1's packet is lost on the stream; its copy and frame 2's arrive.
        merge.handle_copy(1, [1]);
        merge.handle_copy(2, [2]);
        drain(&mut merge, &mut out);
        assert_eq!(out, vec![0, 1, 2]);
        // The stream's retransmission brings 1 and 2 again, then 3: shown once.
        for f in [1, 2, 3] {
            merge.handle_stream_frame(f);
        }
        drain(&mut merge, &mut out);
        assert_eq!(out, vec![0, 1, 2, 3]);
        assert_eq!(merge.stats().from_copies, 2);
        assert_eq!(merge.stats().from_stream, 2);
    }

    #[test]
    fn copies_ahead_of_a_gap_wait_for_it() {
        let mut merge = LaneMerge::new();
        let mut out = Vec::new();
        merge.handle_copy(2, [2, 3]);
        drain(&mut merge, &mut out);
        assert!(out.is_empty(), "0 and 1 have not arrived");
        merge.handle_stream_frame(0);
        merge.handle_stream_frame(1);
        drain(&mut merge, &mut out);
        assert_eq!(out, vec![0, 1, 2, 3]);
    }

    #[test]
    fn a_full_early_buffer_keeps_the_nearest_frames() {
        let mut merge = LaneMerge::new();
        let far: Vec<u64> = (1000..1000 + COPY_EARLY_FRAMES_MAX as u64).collect();
        merge.handle_copy(1000, far.clone());
        // Frames nearer the gap push the farthest out.
        merge.handle_copy(1, [1, 2]);
        merge.handle_stream_frame(0);
        let mut out = Vec::new();
        drain(&mut merge, &mut out);
        assert_eq!(out, vec![0, 1, 2]);
        assert_eq!(merge.stats().early_dropped, 2);
    }

    /// One event at a lane's receiver.
    #[derive(Clone, Debug)]
    enum Arrival {
        /// The stream delivers its next frame.
        Stream,
        /// A copy of frames `first..first + len` arrives.
        Copy { first: u64, len: u64 },
    }

    proptest! {
        /// Whatever copies arrive, duplicated, reordered or far ahead, and however they
        /// interleave with the stream, every frame comes out exactly once and in order.
        #[test]
        fn every_frame_once_in_order(
            n in 1u64..200,
            copies in proptest::collection::vec((0u64..220, 1u64..8), 0..120),
            order in proptest::collection::vec(any::<bool>(), 0..400),
        ) {
            let mut arrivals: Vec<Arrival> = Vec::new();
            let mut copies = copies.into_iter();
            let mut streamed = 0;
            for stream_first in order {
                if stream_first && streamed < n {
                    arrivals.push(Arrival::Stream);
                    streamed += 1;
                } else if let Some((first, len)) = copies.next() {
                    arrivals.push(Arrival::Copy { first, len });
                }
            }
            arrivals.extend((streamed..n).map(|_| Arrival::Stream));
            let mut merge = LaneMerge::new();
            let mut out = Vec::new();
            let mut stream_next = 0;
            for arrival in arrivals {
                match arrival {
                    Arrival::Stream => {
                        merge.handle_stream_frame(stream_next);
                        stream_next += 1;
                    }
                    Arrival::Copy { first, len } => {
                        let end = (first + len).min(n);
                        merge.handle_copy(first, first..end);
                    }
                }
                drain(&mut merge, &mut out);
            }
            prop_assert_eq!(out, (0..n).collect::<Vec<_>>());
        }

        /// Bytes from the network never panic the copy decoder.
        #[test]
        fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = decode::<ClientFrame>(&bytes, 4096);
        }
    }
}
