//! Frames on quinn streams.
//!
//! Reading: [`FramedRecv`] turns a receive stream into frames with
//! [`protocol::codec::FrameDecoder`] (length checked before allocating).
//!
//! Writing: each send stream has a bounded queue ([`FrameSender`]) drained by a writer
//! task, which takes every frame already queued and hands them to quinn together. That is
//! adaptive batching with no timer: at low load a frame goes out alone and at once; under
//! load, while quinn is busy, the next batch accumulates, so QUIC packs many frames per
//! packet. The streams of one connection share one task ([`WriterGroup`], see
//! [`crate::group`]); [`spawn_writer`] is a group of one.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use bytes::BytesMut;
use protocol::ErrorCode;
use protocol::codec::{self, Encoded, FrameDecoder};
use protocol::error::{DecodeError, EncodeError};
use protocol::frames::Validate;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::{Notify, oneshot};

use crate::group::WriterGroup;
use crate::queue;

pub use tokio::sync::mpsc::error::TrySendError;

/// Bytes asked of quinn per read.
const READ_CHUNK_BYTES: usize = 64 * 1024;

/// Why a stream stopped carrying frames.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    /// The peer sent bytes that are not a valid frame.
    #[error("bad frame: {0}")]
    Decode(#[from] DecodeError),
    /// A frame could not be encoded.
    #[error("frame not encodable: {0}")]
    Encode(#[from] EncodeError),
    /// Reading failed (connection lost, stream reset).
    #[error("reading: {0}")]
    Read(#[from] quinn::ReadError),
    /// Writing failed (connection lost, stream stopped).
    #[error("writing: {0}")]
    Write(#[from] quinn::WriteError),
    /// A unidirectional stream began with an unknown kind byte.
    #[error("unknown stream kind {0}")]
    UnexpectedKind(u8),
    /// The stream ended before its first byte.
    #[error("stream ended before its kind byte")]
    MissingKind,
    /// The writer task is gone (its stream failed or the connection closed).
    #[error("stream closed")]
    Closed,
}

impl StreamError {
    /// The close code to end the connection with when this error came from the peer.
    pub fn code(&self) -> ErrorCode {
        match self {
            StreamError::Decode(e) => e.code(),
            StreamError::UnexpectedKind(_) | StreamError::MissingKind => {
                ErrorCode::ProtocolViolation
            }
            StreamError::Encode(_) => ErrorCode::Internal,
            StreamError::Read(_) | StreamError::Write(_) | StreamError::Closed => {
                ErrorCode::NoError
            }
        }
    }

    /// Whether the peer misbehaved (as opposed to the connection simply going away).
    pub fn is_protocol_violation(&self) -> bool {
        matches!(
            self,
            StreamError::Decode(_) | StreamError::UnexpectedKind(_) | StreamError::MissingKind
        )
    }
}

/// A receive stream read as frames.
#[derive(Debug)]
pub struct FramedRecv {
    recv: quinn::RecvStream,
    decoder: FrameDecoder,
}

impl FramedRecv {
    /// Frames up to [`protocol::limits::FRAME_BYTES_MAX`].
    pub fn new(recv: quinn::RecvStream) -> Self {
        Self {
            recv,
            decoder: FrameDecoder::default(),
        }
    }

    /// Frames up to `max` bytes (never above the protocol's maximum).
    pub fn with_max(recv: quinn::RecvStream, max: usize) -> Self {
        Self {
            recv,
            decoder: FrameDecoder::new(max),
        }
    }

    /// Reads the one-byte kind that starts a unidirectional stream. Call before [`next`].
    ///
    /// [`next`]: FramedRecv::next
    pub async fn read_kind(&mut self) -> Result<u8, StreamError> {
        let mut byte = [0u8; 1];
        match self.recv.read(&mut byte).await? {
            Some(1) => Ok(byte[0]),
            _ => Err(StreamError::MissingKind),
        }
    }

    /// Reads a unidirectional stream's kind byte and checks it is `expected`.
    pub async fn expect_kind(&mut self, expected: u8) -> Result<(), StreamError> {
        match self.read_kind().await? {
            kind if kind == expected => Ok(()),
            other => Err(StreamError::UnexpectedKind(other)),
        }
    }

    /// The next frame; `Ok(None)` when the peer finished the stream cleanly between
    /// frames. A stream that ends inside a frame is an error.
    pub async fn next<T: DeserializeOwned + Validate>(&mut self) -> Result<Option<T>, StreamError> {
        match self.next_body().await? {
            Some(body) => Ok(Some(codec::decode_body(&body)?)),
            None => Ok(None),
        }
    }

    /// The next frame's body, not decoded (its length checked), for a reader that decodes
    /// it itself; `Ok(None)` as for [`FramedRecv::next`].
    pub async fn next_body(&mut self) -> Result<Option<BytesMut>, StreamError> {
        loop {
            if let Some(body) = self.decoder.next_body()? {
                return Ok(Some(body));
            }
            match self.recv.read_chunk(READ_CHUNK_BYTES, true).await? {
                Some(chunk) => self.decoder.extend(&chunk.bytes),
                None if self.decoder.buffered() == 0 => return Ok(None),
                None => return Err(DecodeError::Truncated.into()),
            }
        }
    }

    /// The underlying stream, e.g. to stop it.
    pub fn stream_mut(&mut self) -> &mut quinn::RecvStream {
        &mut self.recv
    }
}

/// Writes one frame at once (for handshakes, before a writer task exists).
pub async fn write_frame<T: Serialize>(
    send: &mut quinn::SendStream,
    frame: &T,
) -> Result<(), StreamError> {
    let mut buf = BytesMut::new();
    codec::encode(frame, &mut buf)?;
    send.write_all(&buf).await?;
    Ok(())
}

/// Counters a writer task keeps, for benchmarks and metrics.
#[derive(Debug, Default)]
pub struct WriterStats {
    /// Frames written.
    pub frames: AtomicU64,
    /// Batched writes (`write_all` calls) issued.
    pub writes: AtomicU64,
    /// Bytes written.
    pub bytes: AtomicU64,
}

/// What travels from a [`FrameSender`] to its writer task.
#[derive(Debug)]
pub(crate) enum WriterItem<T> {
    /// A frame to write.
    ///
    /// Boxed, so a queue's slots are small: a frame is about 150 bytes, and a queue
    /// keeps up to 32 slots after a burst (see [`crate::queue`]).
    Frame(Box<T>),
    /// A frame encoded already (an edge forwarding a core's delivery): its bytes are
    /// written as they are.
    Encoded(Encoded<T>),
    /// Write everything queued before this, finish the stream, wait until the peer has
    /// read all of it, then answer.
    Finish(oneshot::Sender<()>),
}

/// How long a finishing writer waits for the peer to read the end of the stream.
pub(crate) const FINISH_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// The sending side of a writer task: a bounded queue of frames. Cheap to clone.
#[derive(Debug)]
pub struct FrameSender<T> {
    tx: queue::Sender<WriterItem<T>>,
    stats: Arc<WriterStats>,
}

impl<T> Clone for FrameSender<T> {
    fn clone(&self) -> Self {
        Self {
            tx: self.tx.clone(),
            stats: self.stats.clone(),
        }
    }
}

impl<T> FrameSender<T> {
    pub(crate) fn new(tx: queue::Sender<WriterItem<T>>, stats: Arc<WriterStats>) -> Self {
        Self { tx, stats }
    }

    /// Queues a frame, waiting while the queue is full.
    pub async fn send(&self, frame: T) -> Result<(), StreamError> {
        self.tx
            .send(WriterItem::Frame(Box::new(frame)))
            .await
            .map_err(|_| StreamError::Closed)
    }

    /// Writes every frame queued so far, finishes the stream and waits (at most a few
    /// seconds) until the peer has read all of it. Closing a QUIC connection discards
    /// stream data not yet delivered, so call this before a deliberate close when the
    /// last frames matter (a client's final acknowledgements). Frames sent after this
    /// are dropped.
    pub async fn finish(&self) -> Result<(), StreamError> {
        let (done_tx, done_rx) = oneshot::channel();
        self.tx
            .send(WriterItem::Finish(done_tx))
            .await
            .map_err(|_| StreamError::Closed)?;
        done_rx.await.map_err(|_| StreamError::Closed)
    }

    /// Queues a frame if there is room now. The caller decides what a full queue means
    /// (the edge closes a slow client; the core lets a session catch up from the store).
    pub fn try_send(&self, frame: T) -> Result<(), TrySendError<T>> {
        self.try_send_item(WriterItem::Frame(Box::new(frame)), |item| match item {
            WriterItem::Frame(frame) => Some(*frame),
            _ => None,
        })
    }

    /// Like [`FrameSender::try_send`], for a frame encoded already: the writer copies its
    /// bytes as they are. Several streams can share one encoding (clones share bytes).
    pub fn try_send_encoded(&self, frame: Encoded<T>) -> Result<(), TrySendError<Encoded<T>>> {
        self.try_send_item(WriterItem::Encoded(frame), |item| match item {
            WriterItem::Encoded(frame) => Some(frame),
            _ => None,
        })
    }

    /// Queues `item` if there is room now; on failure, gives back what `unwrap` takes
    /// out of it (always the item just sent).
    fn try_send_item<F>(
        &self,
        item: WriterItem<T>,
        unwrap: impl Fn(WriterItem<T>) -> Option<F>,
    ) -> Result<(), TrySendError<F>> {
        let back = |item| unwrap(item).unwrap_or_else(|| unreachable!("the item sent comes back"));
        self.tx.try_send(item).map_err(|e| match e {
            TrySendError::Full(item) => TrySendError::Full(back(item)),
            TrySendError::Closed(item) => TrySendError::Closed(back(item)),
        })
    }

    /// Room left in the queue.
    pub fn capacity(&self) -> usize {
        self.tx.capacity()
    }

    /// Whether the writer task has stopped.
    pub fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }

    /// Resolves when the writer task has stopped (stream failed or connection closed).
    pub async fn closed(&self) {
        self.tx.closed().await
    }

    /// The writer's counters.
    pub fn stats(&self) -> &Arc<WriterStats> {
        &self.stats
    }
}

/// Spawns a writer task for `send` alone with a queue of `queue` frames (at least 1). If
/// `kind` is given it is written first, at once, so the peer learns of the stream
/// immediately. The task finishes the stream when every [`FrameSender`] is dropped, and
/// stops (closing the queue) if a write fails. Streams of one connection that carry
/// traffic together should share a [`WriterGroup`] instead.
pub fn spawn_writer<T: Serialize + Send + 'static>(
    send: quinn::SendStream,
    kind: Option<u8>,
    queue: usize,
) -> FrameSender<T> {
    spawn_writer_notifying(send, kind, queue, None)
}

/// Like [`spawn_writer`], and signals `room` every time the writer takes frames off its
/// queue. Several writers can share one `room`, so a sender that keeps frames back
/// rather than wait on one full queue can wait until *any* of them has space.
pub fn spawn_writer_notifying<T: Serialize + Send + 'static>(
    send: quinn::SendStream,
    kind: Option<u8>,
    queue: usize,
    room: Option<Arc<Notify>>,
) -> FrameSender<T> {
    let mut group = WriterGroup::new(room);
    let sender = group.add(send, kind, queue);
    group.spawn();
    sender
}
