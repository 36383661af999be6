//! Decodes arbitrary bytes as edge↔core frames, whole and as a stream split at an
//! arbitrary point. The decoder must never panic, never allocate past its limit, and
//! anything it accepts must re-encode to a frame that decodes to the same value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use protocol::codec::{self, FrameDecoder};
use protocol::frames::Validate;
use protocol::{CoreFrame, EdgeFrame};
use serde::{Serialize, de::DeserializeOwned};

fn check<T: DeserializeOwned + Serialize + Validate + PartialEq + std::fmt::Debug>(data: &[u8]) {
    if let Ok(frame) = codec::decode_exact::<T>(data) {
        let bytes = codec::encode_to_vec(&frame).expect("a decoded frame re-encodes");
        let again = codec::decode_exact::<T>(&bytes).expect("a re-encoded frame decodes");
        assert_eq!(frame, again);
    }
    let split = data.first().map_or(0, |b| usize::from(*b)).min(data.len());
    let mut decoder = FrameDecoder::default();
    decoder.extend(&data[..split]);
    for _ in 0..data.len() + 1 {
        match decoder.next_frame::<T>() {
            Ok(Some(_)) => continue,
            Ok(None) | Err(_) => break,
        }
    }
    decoder.extend(&data[split..]);
    while let Ok(Some(_)) = decoder.next_frame::<T>() {}
}

fuzz_target!(|data: &[u8]| {
    check::<EdgeFrame>(data);
    check::<CoreFrame>(data);
});
