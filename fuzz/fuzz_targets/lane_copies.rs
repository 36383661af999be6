//! Decodes arbitrary bytes as lane-copy datagrams (client↔edge frames in both directions)
//! and merges whatever decodes with a lane's stream: decoding never panics, and the merge
//! hands out every stream frame once, in order, whatever the copies said.
#![no_main]

use libfuzzer_sys::fuzz_target;
use protocol::copies::{self, LaneMerge};
use protocol::limits::FRAME_BYTES_MAX;
use protocol::{ClientFrame, ServerFrame};

/// Frames the stream carries in each run.
const STREAM_FRAMES: u64 = 64;

fuzz_target!(|data: &[u8]| {
    let _ = copies::decode::<ServerFrame>(data, FRAME_BYTES_MAX);
    // The input is several datagrams: each starts with a length byte.
    let mut merge = LaneMerge::new();
    let mut out = Vec::new();
    let mut stream_next = 0u64;
    let mut rest = data;
    while let Some((&len, tail)) = rest.split_first() {
        let (datagram, tail) = tail.split_at(usize::from(len).min(tail.len()));
        rest = tail;
        if let Ok((header, frames)) = copies::decode::<ClientFrame>(datagram, FRAME_BYTES_MAX) {
            // Copies name frames near the stream's, to exercise the gaps and the buffer.
            let first = header.first % (STREAM_FRAMES * 2);
            let numbers = (first..first + frames.len() as u64).filter(|&n| n < STREAM_FRAMES);
            merge.handle_copy(first, numbers);
        }
        if stream_next < STREAM_FRAMES {
            merge.handle_stream_frame(stream_next);
            stream_next += 1;
        }
        while let Some(frame) = merge.poll_frame() {
            out.push(frame);
        }
    }
    while stream_next < STREAM_FRAMES {
        merge.handle_stream_frame(stream_next);
        stream_next += 1;
    }
    while let Some(frame) = merge.poll_frame() {
        out.push(frame);
    }
    assert_eq!(out, (0..STREAM_FRAMES).collect::<Vec<_>>());
});
