//! The length-prefixed postcard codec.
//!
//! A frame on the wire is `varint(len) ‖ postcard(frame)`. The decoder reads the length,
//! checks it against its maximum *before* buffering or allocating the body, decodes the
//! body with postcard, rejects trailing bytes, and runs the frame's [`Validate`] checks.
//! Nothing here does I/O: bytes in, frames out.
//!
//! Message deliveries, nearly all the traffic, are read by a hand-written `Reader`
//! instead ([`Validate::decode_fast`]): it reads postcard's layout to the same frame, with
//! one UTF-8 check for the ids and name together and no serde plumbing, and hands any body
//! it does not find ordinary to postcard, so errors are always postcard's.

use std::marker::PhantomData;

use bytes::{Buf, BufMut, Bytes, BytesMut};
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
    // Serialize straight into `out` behind a one-byte hole for the prefix, then fill the
    // hole. A body under 128 bytes (most chat messages) needs exactly that byte; a longer
    // one shifts its body up by the one or two extra prefix bytes (frames are below 2^21
    // bytes, so the prefix is at most 3 bytes). No scratch allocation per frame.
    const _: () = assert!(FRAME_BYTES_MAX < 1 << 21);
    let start = out.len();
    out.put_u8(0);
    let result = postcard::serialize_with_flavor(frame, BytesFlavor(out));
    if result.is_err() {
        out.truncate(start);
        return Err(EncodeError::Serialize);
    }
    let body_start = start + 1;
    let len = out.len() - body_start;
    if len > FRAME_BYTES_MAX {
        out.truncate(start);
        return Err(EncodeError::TooLarge {
            len,
            max: FRAME_BYTES_MAX,
        });
    }
    let mut prefix = [0u8; LENGTH_PREFIX_BYTES_MAX];
    let prefix_len = write_varint(len as u64, &mut prefix);
    if prefix_len > 1 {
        let extra = prefix_len - 1;
        out.put_bytes(0, extra);
        out.copy_within(body_start..body_start + len, body_start + extra);
    }
    out[start..start + prefix_len].copy_from_slice(&prefix[..prefix_len]);
    Ok(())
}

/// One frame of type `T`, already encoded: its length prefix and body, ready to be
/// written as they are. Cheap to clone (the bytes are shared), so one encoding can go to
/// several streams. Only this crate makes one from bytes it did not encode itself (an
/// edge forwarding a core's delivery, [`crate::forward`]), after checking them.
pub struct Encoded<T> {
    bytes: Bytes,
    frame: PhantomData<fn() -> T>,
}

impl<T: Serialize> Encoded<T> {
    /// Encodes `frame` (see [`encode`]).
    pub fn new(frame: &T) -> Result<Self, EncodeError> {
        let mut out = BytesMut::new();
        encode(frame, &mut out)?;
        Ok(Self::from_frame_bytes(out.freeze()))
    }
}

impl<T> Encoded<T> {
    /// Wraps bytes that hold exactly one length-prefixed frame of type `T`.
    fn from_frame_bytes(bytes: Bytes) -> Self {
        Self {
            bytes,
            frame: PhantomData,
        }
    }

    /// A frame whose body is `parts` one after the other, behind its length prefix: for
    /// bodies this crate has checked read as a `T`.
    pub(crate) fn from_body_parts(parts: &[&[u8]]) -> Result<Self, EncodeError> {
        let len: usize = parts.iter().map(|part| part.len()).sum();
        if len > FRAME_BYTES_MAX {
            return Err(EncodeError::TooLarge {
                len,
                max: FRAME_BYTES_MAX,
            });
        }
        let mut prefix = [0u8; LENGTH_PREFIX_BYTES_MAX];
        let prefix_len = write_varint(len as u64, &mut prefix);
        let mut out = BytesMut::with_capacity(prefix_len + len);
        out.extend_from_slice(&prefix[..prefix_len]);
        for part in parts {
            out.extend_from_slice(part);
        }
        Ok(Self::from_frame_bytes(out.freeze()))
    }

    /// The frame's bytes, length prefix included.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }
}

impl<T> Clone for Encoded<T> {
    fn clone(&self) -> Self {
        Self::from_frame_bytes(self.bytes.clone())
    }
}

impl<T> PartialEq for Encoded<T> {
    fn eq(&self, other: &Self) -> bool {
        self.bytes == other.bytes
    }
}

impl<T> Eq for Encoded<T> {}

impl<T> std::fmt::Debug for Encoded<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Encoded")
            .field("frame", &std::any::type_name::<T>())
            .field("bytes", &self.bytes.len())
            .finish()
    }
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

/// Decodes a frame body (no prefix, as [`FrameDecoder::next_body`] gives it) that must
/// be consumed entirely, and validates the frame.
pub fn decode_body<T: DeserializeOwned + Validate>(body: &[u8]) -> Result<T, DecodeError> {
    // A frame is an enum: postcard writes its variant index first, as a varint.
    match read_varint(body) {
        Ok(Some((variant, _))) if variant >= T::VARIANTS as usize => {
            return Err(DecodeError::UnknownVariant);
        }
        Ok(None) => return Err(DecodeError::Truncated),
        Err(_) => return Err(DecodeError::Malformed),
        Ok(Some(_)) => {}
    }
    let (frame, rest) = match T::decode_fast(body) {
        Some(done) => done,
        None => {
            let (frame, rest): (T, &[u8]) = postcard::take_from_bytes(body)?;
            (frame, rest.len())
        }
    };
    if rest != 0 {
        return Err(DecodeError::TrailingBytes(rest));
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

/// Writes `value` as LEB128 (postcard's varint) into `out`, returning the number of bytes
/// used: at most 5 for a `u32`, 10 for a `u64`.
pub(crate) fn write_varint(mut value: u64, out: &mut [u8]) -> usize {
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

    #[inline]
    fn try_push(&mut self, byte: u8) -> postcard::Result<()> {
        self.0.put_u8(byte);
        Ok(())
    }

    #[inline]
    fn try_extend(&mut self, data: &[u8]) -> postcard::Result<()> {
        // Varints arrive here as short slices, most often one byte: store that directly
        // rather than through a `memcpy` call.
        if let [byte] = data {
            self.0.put_u8(*byte);
        } else {
            self.0.extend_from_slice(data);
        }
        Ok(())
    }

    #[inline]
    fn finalize(self) -> postcard::Result<()> {
        Ok(())
    }
}

/// Reads fields in postcard's encoding for [`Validate::decode_fast`]. Every method returns
/// what postcard's deserializer would read for the same type, or `None` where postcard
/// would fail, or might: the caller then leaves the whole body to postcard.
pub(crate) struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    /// A reader over `body`; `None` where a `usize` is not 64 bits (postcard then reads
    /// lengths as narrower varints).
    #[inline]
    pub(crate) fn new(body: &'a [u8]) -> Option<Self> {
        cfg!(target_pointer_width = "64").then_some(Self { rest: body })
    }

    /// Bytes not read yet.
    #[inline]
    pub(crate) fn remaining(&self) -> usize {
        self.rest.len()
    }

    /// A `u64` varint, as postcard reads it: up to 10 bytes, the 10th holding one bit.
    #[inline]
    pub(crate) fn u64(&mut self) -> Option<u64> {
        let (&first, rest) = self.rest.split_first()?;
        if first & 0x80 == 0 {
            self.rest = rest;
            return Some(u64::from(first));
        }
        // A varint of at most 8 bytes, with 8 bytes to look at: find its last byte (the
        // first with the top bit clear) and gather the 7-bit groups without a loop.
        if let Some(word) = self.rest.first_chunk::<8>() {
            let word = u64::from_le_bytes(*word);
            let ends = !word & 0x8080_8080_8080_8080;
            if ends != 0 {
                let len = ends.trailing_zeros() / 8 + 1;
                let x = word & (u64::MAX >> (64 - 8 * len));
                let x = (x & 0x007f_007f_007f_007f) | ((x & 0x7f00_7f00_7f00_7f00) >> 1);
                let x = (x & 0x0000_3fff_0000_3fff) | ((x & 0x3fff_0000_3fff_0000) >> 2);
                let x = (x & 0x0000_0000_0fff_ffff) | ((x & 0x0fff_ffff_0000_0000) >> 4);
                self.rest = &self.rest[len as usize..];
                return Some(x);
            }
        }
        self.u64_bytewise()
    }

    /// [`Reader::u64`] a byte at a time, for the 9- and 10-byte varints and the last
    /// bytes of a body.
    #[cold]
    fn u64_bytewise(&mut self) -> Option<u64> {
        let mut out = 0u64;
        for (i, &byte) in self.rest.iter().enumerate().take(10) {
            out |= u64::from(byte & 0x7f) << (7 * i);
            if byte & 0x80 == 0 {
                if i == 9 && byte > 1 {
                    return None;
                }
                self.rest = &self.rest[i + 1..];
                return Some(out);
            }
        }
        None
    }

    /// A string: a `usize` varint length, then that many bytes of UTF-8.
    #[inline]
    pub(crate) fn str(&mut self) -> Option<&'a str> {
        let len = usize::try_from(self.u64()?).ok()?;
        let (bytes, rest) = self.rest.split_at_checked(len)?;
        self.rest = rest;
        std::str::from_utf8(bytes).ok()
    }

    /// Three strings in a row, each under 128 bytes (so each length is one byte), with
    /// one UTF-8 check for all three: the length bytes between them are ASCII, so the
    /// checked text splits at character boundaries exactly where the strings meet.
    #[inline]
    pub(crate) fn short_strs(&mut self) -> Option<[&'a str; 3]> {
        let whole = self.rest;
        let mut at = 0;
        let mut lens = [0usize; 3];
        for len in &mut lens {
            let &byte = whole.get(at)?;
            if byte & 0x80 != 0 {
                return None;
            }
            *len = usize::from(byte);
            at += 1 + *len;
        }
        let (span, rest) = whole.split_at_checked(at)?;
        let text = std::str::from_utf8(span).ok()?;
        self.rest = rest;
        let (first, text) = text.get(1..)?.split_at_checked(lens[0])?;
        let (second, text) = text.get(1..)?.split_at_checked(lens[1])?;
        let third = text.get(1..)?;
        Some([first, second, third])
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
        match self.next_body()? {
            Some(body) => decode_body(&body).map(Some),
            None => Ok(None),
        }
    }

    /// The body of the next complete frame, not decoded (its length checked against the
    /// maximum); `Ok(None)` if more bytes are needed. For readers that decode it
    /// themselves, such as an edge forwarding deliveries ([`crate::forward`]).
    pub fn next_body(&mut self) -> Result<Option<BytesMut>, DecodeError> {
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
        Ok(Some(self.buf.split_to(len)))
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
            let n = write_varint(u64::from(v), &mut buf);
            assert_eq!(read_varint(&buf[..n]).unwrap(), Some((v as usize, n)));
            assert_eq!(read_varint(&buf[..n - 1]).unwrap(), None);
        }
    }

    // The fast reader's varints against postcard's, for every length of encoding (with
    // and without bytes after it, so both the 8-byte gather and the bytewise loop run),
    // including overlong (non-canonical) encodings, which postcard accepts, and runaway or
    // overflowing ones, which it refuses.
    #[test]
    fn fast_varints_read_as_postcard_reads_them() {
        let mut cases: Vec<Vec<u8>> = Vec::new();
        for bits in 0..64 {
            for v in [1u64 << bits, (1u64 << bits) - 1, u64::MAX >> bits] {
                cases.push(postcard::to_allocvec(&v).unwrap());
            }
        }
        for len in 1..=11 {
            let mut overlong = vec![0x80u8; len - 1];
            overlong.push(0);
            cases.push(overlong);
            let mut ones = vec![0xffu8; len - 1];
            ones.push(0x01);
            cases.push(ones);
            cases.push(vec![0xffu8; len]);
        }
        let mut nine_then_two = vec![0xffu8; 9];
        nine_then_two.push(0x02);
        cases.push(nine_then_two);
        for case in cases {
            for tail in [&[][..], &[0x05], &[0x80; 9], &[0x00; 12]] {
                let mut bytes = case.clone();
                bytes.extend_from_slice(tail);
                let expected = postcard::take_from_bytes::<u64>(&bytes)
                    .ok()
                    .map(|(v, rest)| (v, rest.len()));
                let mut r = Reader { rest: &bytes };
                let got = r.u64().map(|v| (v, r.remaining()));
                assert_eq!(got, expected, "{bytes:02x?}");
            }
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
