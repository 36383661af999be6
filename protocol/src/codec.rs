//! The length-prefixed postcard codec.
//!
//! A frame on the wire is `varint(len) ‖ postcard(frame)`. The decoder reads the length,
//! checks it against its maximum *before* buffering or allocating the body, decodes the
//! body with postcard, rejects trailing bytes, and runs the frame's [`Validate`] checks.
//! Nothing here does I/O: bytes in, frames out.

use bytes::{Buf, BufMut, BytesMut};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{DecodeError, EncodeError};
use crate::frames::Validate;
use crate::limits::FRAME_BYTES_MAX;

/// Most bytes a length prefix may take: a varint of a `u32`.
const LENGTH_PREFIX_BYTES_MAX: usize = 5;

/// Appends `frame` to `out` as one length-prefixed frame.
///
/// Fails only if the encoded frame would exceed [`FRAME_BYTES_MAX`]; in that case `out`
/// is left as it was.
pub fn encode<T: Serialize>(frame: &T, out: &mut BytesMut) -> Result<(), EncodeError> {
    // Serialize straight into `out` behind a 3-byte hole for the prefix (frames are below
    // 2^21 bytes, so the prefix is at most 3 bytes), then close the hole. This avoids a
    // scratch allocation per frame.
    const HOLE: usize = 3;
    const _: () = assert!(FRAME_BYTES_MAX < 1 << 21);
    let start = out.len();
    out.put_bytes(0, HOLE);
    let result = postcard::serialize_with_flavor(frame, BytesFlavor(out));
    if result.is_err() {
        out.truncate(start);
        return Err(EncodeError::Serialize);
    }
    let len = out.len() - start - HOLE;
    if len > FRAME_BYTES_MAX {
        out.truncate(start);
        return Err(EncodeError::TooLarge {
            len,
            max: FRAME_BYTES_MAX,
        });
    }
    let mut prefix = [0u8; HOLE];
    let prefix_len = write_varint(len as u32, &mut prefix);
    let body_start = start + HOLE;
    let new_body_start = start + prefix_len;
    out[start..new_body_start].copy_from_slice(&prefix[..prefix_len]);
    if new_body_start != body_start {
        out.copy_within(body_start.., new_body_start);
        out.truncate(out.len() - (body_start - new_body_start));
    }
    Ok(())
}

/// Encodes one frame into a fresh buffer.
pub fn encode_to_vec<T: Serialize>(frame: &T) -> Result<Vec<u8>, EncodeError> {
    let mut out = BytesMut::new();
    encode(frame, &mut out)?;
    Ok(out.to_vec())
}

/// Decodes exactly one length-prefixed frame that fills all of `bytes`.
pub fn decode_exact<T: DeserializeOwned + Validate>(bytes: &[u8]) -> Result<T, DecodeError> {
    let (len, prefix_len) = match read_varint(bytes)? {
        Some(v) => v,
        None => return Err(DecodeError::Truncated),
    };
    check_len(len, FRAME_BYTES_MAX)?;
    let body = &bytes[prefix_len..];
    if body.len() < len {
        return Err(DecodeError::Truncated);
    }
    if body.len() > len {
        return Err(DecodeError::TrailingBytes(body.len() - len));
    }
    decode_body(body)
}

/// Decodes a frame body (no prefix) that must be consumed entirely.
fn decode_body<T: DeserializeOwned + Validate>(body: &[u8]) -> Result<T, DecodeError> {
    // A frame is an enum: postcard writes its variant index first, as a varint.
    match read_varint(body) {
        Ok(Some((variant, _))) if variant >= T::VARIANTS as usize => {
            return Err(DecodeError::UnknownVariant);
        }
        Ok(None) => return Err(DecodeError::Truncated),
        Err(_) => return Err(DecodeError::Malformed),
        Ok(Some(_)) => {}
    }
    let (frame, rest): (T, &[u8]) = postcard::take_from_bytes(body)?;
    if !rest.is_empty() {
        return Err(DecodeError::TrailingBytes(rest.len()));
    }
    frame.validate()?;
    Ok(frame)
}

fn check_len(len: usize, max: usize) -> Result<(), DecodeError> {
    if len > max {
        Err(DecodeError::TooLarge { len, max })
    } else {
        Ok(())
    }
}

/// Reads a LEB128 `u32` length prefix. `Ok(None)` means more bytes are needed.
fn read_varint(bytes: &[u8]) -> Result<Option<(usize, usize)>, DecodeError> {
    let mut value: u64 = 0;
    for (i, &byte) in bytes.iter().enumerate().take(LENGTH_PREFIX_BYTES_MAX) {
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            if value > u64::from(u32::MAX) {
                return Err(DecodeError::BadLength);
            }
            return Ok(Some((value as usize, i + 1)));
        }
    }
    if bytes.len() >= LENGTH_PREFIX_BYTES_MAX {
        Err(DecodeError::BadLength)
    } else {
        Ok(None)
    }
}

/// Writes `value` as LEB128 into `out`, returning the number of bytes used.
fn write_varint(mut value: u32, out: &mut [u8]) -> usize {
    let mut i = 0;
    loop {
        let byte = (value & 0x7f) as u8;
        value >>= 7;
        if value == 0 {
            out[i] = byte;
            return i + 1;
        }
        out[i] = byte | 0x80;
        i += 1;
    }
}

/// A postcard output that appends to a `BytesMut` in place. Unlike postcard's `Extend`
/// adapter, it copies string and byte fields as whole slices, not byte by byte (the text
/// of a message is most of its bytes).
struct BytesFlavor<'a>(&'a mut BytesMut);

impl postcard::ser_flavors::Flavor for BytesFlavor<'_> {
    type Output = ();

    fn try_push(&mut self, byte: u8) -> postcard::Result<()> {
        self.0.put_u8(byte);
        Ok(())
    }

    fn try_extend(&mut self, data: &[u8]) -> postcard::Result<()> {
        self.0.extend_from_slice(data);
        Ok(())
    }

    fn finalize(self) -> postcard::Result<()> {
        Ok(())
    }
}

/// Splits a byte stream into frames.
///
/// Feed it whatever arrives ([`FrameDecoder::extend`]), then call
/// [`FrameDecoder::next_frame`] until it returns `Ok(None)`. It never holds more than one
/// frame's worth of bytes beyond what was fed: an oversized length is refused as soon as
/// the prefix is read. After an error the stream is unusable: close it.
#[derive(Debug)]
pub struct FrameDecoder {
    buf: BytesMut,
    max: usize,
}

impl Default for FrameDecoder {
    fn default() -> Self {
        Self::new(FRAME_BYTES_MAX)
    }
}

impl FrameDecoder {
    /// A decoder refusing frames longer than `max` bytes (capped at [`FRAME_BYTES_MAX`]).
    pub fn new(max: usize) -> Self {
        Self {
            buf: BytesMut::new(),
            max: max.min(FRAME_BYTES_MAX),
        }
    }

    /// Appends received bytes.
    pub fn extend(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// Bytes received but not yet decoded.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Decodes the next complete frame, `Ok(None)` if more bytes are needed.
    pub fn next_frame<T: DeserializeOwned + Validate>(&mut self) -> Result<Option<T>, DecodeError> {
        let Some((len, prefix_len)) = read_varint(&self.buf)? else {
            return Ok(None);
        };
        check_len(len, self.max)?;
        if self.buf.len() < prefix_len + len {
            // Reserve what the frame needs (bounded by `max`) so reads land in place.
            self.buf.reserve(prefix_len + len - self.buf.len());
            return Ok(None);
        }
        self.buf.advance(prefix_len);
        let body = self.buf.split_to(len);
        decode_body(&body).map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frames::client::{Ack, ClientFrame};
    use crate::ids::{IdRange, MessageId};

    #[test]
    fn varint_prefix_round_trips() {
        for v in [0u32, 1, 127, 128, 300, 16_383, 16_384, 2_097_151, u32::MAX] {
            let mut buf = [0u8; 5];
            let n = write_varint(v, &mut buf);
            assert_eq!(read_varint(&buf[..n]).unwrap(), Some((v as usize, n)));
            assert_eq!(read_varint(&buf[..n - 1]).unwrap(), None);
        }
    }

    #[test]
    fn oversized_length_is_refused_before_the_body_arrives() {
        let mut decoder = FrameDecoder::new(1000);
        let mut prefix = [0u8; 5];
        let n = write_varint(1001, &mut prefix);
        decoder.extend(&prefix[..n]);
        assert_eq!(
            decoder.next_frame::<ClientFrame>(),
            Err(DecodeError::TooLarge {
                len: 1001,
                max: 1000
            })
        );
    }

    #[test]
    fn frames_split_across_reads_decode_whole() {
        let frame = ClientFrame::Ack(Ack {
            ranges: vec![IdRange::single(MessageId(7))],
        });
        let bytes = encode_to_vec(&frame).unwrap();
        let mut twice = bytes.clone();
        twice.extend_from_slice(&bytes);
        let mut decoder = FrameDecoder::default();
        let mut out = Vec::new();
        for b in twice {
            decoder.extend(&[b]);
            while let Some(f) = decoder.next_frame::<ClientFrame>().unwrap() {
                out.push(f);
            }
        }
        assert_eq!(out, vec![frame.clone(), frame]);
        assert_eq!(decoder.buffered(), 0);
    }
}
