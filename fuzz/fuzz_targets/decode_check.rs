//! The property every decoder fuzz target checks, shared by the targets.
//!
//! Decoding arbitrary bytes, whole and as a stream split at an arbitrary point, must never
//! panic or allocate past the limit, and anything accepted must re-encode to a frame that
//! decodes to the same value.

use protocol::codec::{self, FrameDecoder};
use protocol::frames::Validate;
use serde::{Serialize, de::DeserializeOwned};

pub fn check<T: DeserializeOwned + Serialize + Validate + PartialEq + std::fmt::Debug>(
    data: &[u8],
) {
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
