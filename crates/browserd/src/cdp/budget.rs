//! One server-wide bound on the memory that large websocket messages hold.
//!
//! tungstenite buffers a whole message before the relay sees it, and keeps the capacity it
//! grew (its read buffer, the other leg's write buffer) until the connection closes. So
//! twenty clients each sending 100 MiB would hold 4 GiB, and one that sent a large message
//! an hour ago still holds it. [`Metered`] sits under a websocket and reads the frame
//! headers going by: before the payload of a message past [`LARGE`] is let through, its
//! connection must hold budget for it (twice its size: the read buffer that receives it and
//! the write buffer that relays it). A connection keeps what it got until it closes, as
//! tungstenite keeps the memory, and needs more only for a larger message than before.
//! When the budget is spent the payload waits (the sender sees TCP backpressure), and after
//! [`WAIT_LIMIT`] the read fails with [`BudgetExhausted`], which the relay turns into a
//! close that says why.
//!
//! Why by hand: no websocket crate bounds memory across connections, and tungstenite's
//! buffers cannot be shrunk from outside; reading a frame header is a few lines of RFC 6455.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::PollSemaphore;

/// Messages below this size are not counted: ordinary CDP traffic never waits, and what
/// such messages leave in buffers is bounded by the number of connections.
pub const LARGE: u64 = 1024 * 1024;

/// How long a large message may wait for budget before its connection is closed.
pub const WAIT_LIMIT: Duration = Duration::from_secs(30);

/// Budget is counted in KiB: a semaphore's permits are `u32`.
const UNIT: u64 = 1024;

/// The server-wide budget; cheap to clone.
#[derive(Debug, Clone)]
pub struct MessageBudget {
    permits: Arc<Semaphore>,
    total_units: u32,
}

impl MessageBudget {
    /// A budget of `bytes` (at least one largest message's worth is sensible; a message
    /// larger than the whole budget takes all of it, alone).
    pub fn new(bytes: u64) -> Self {
        let total_units = (bytes / UNIT).clamp(1, Semaphore::MAX_PERMITS as u64) as u32;
        Self {
            permits: Arc::new(Semaphore::new(total_units as usize)),
            total_units,
        }
    }

    /// The budget's size in bytes.
    pub fn bytes(&self) -> u64 {
        u64::from(self.total_units) * UNIT
    }

    /// Bytes held by connections now.
    pub fn held(&self) -> u64 {
        u64::from(self.total_units).saturating_sub(self.permits.available_permits() as u64) * UNIT
    }
}

/// A read failed because a large message waited [`WAIT_LIMIT`] for budget.
#[derive(Debug, thiserror::Error)]
#[error(
    "a message of {message} bytes waited {}s for browserd's relay memory ({budget} bytes, taken by other clients' large messages); try again later",
    WAIT_LIMIT.as_secs()
)]
pub struct BudgetExhausted {
    pub message: u64,
    pub budget: u64,
}

impl BudgetExhausted {
    /// The budget error inside a websocket error, if that is what it is.
    pub fn find(error: &tokio_tungstenite::tungstenite::Error) -> Option<&Self> {
        match error {
            tokio_tungstenite::tungstenite::Error::Io(e) => {
                e.get_ref().and_then(|inner| inner.downcast_ref::<Self>())
            }
            _ => None,
        }
    }
}

/// A stream whose incoming websocket frames are metered against a [`MessageBudget`]
/// (writes pass through). Without a budget it is a plain pass-through.
pub struct Metered<S> {
    inner: S,
    budget: Option<MessageBudget>,
    frames: FrameReader,
    /// What this connection holds, and how much (in units).
    held: Option<OwnedSemaphorePermit>,
    /// The budget's semaphore, polled while waiting (made on the first wait).
    semaphore: Option<PollSemaphore>,
    /// A wait for more budget.
    waiting: Option<Wait>,
    /// Bytes read from `inner` but not yet scanned or passed on: a payload held back while
    /// its budget is asked for.
    stash: Vec<u8>,
}

impl<S> Metered<S> {
    pub fn new(inner: S, budget: Option<MessageBudget>) -> Self {
        Self {
            inner,
            budget,
            frames: FrameReader::default(),
            held: None,
            semaphore: None,
            waiting: None,
            stash: Vec::new(),
        }
    }

    /// Starts (or stops) metering; call it at a frame boundary.
    pub fn set_budget(&mut self, budget: Option<MessageBudget>) {
        self.budget = budget;
    }

    /// The stream underneath, to drain a refused message's rest without metering it.
    pub fn inner_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    fn stop_waiting(&mut self) {
        if self.waiting.take().is_some() {
            crate::metrics::METRICS.relay_memory_waiting.dec();
        }
    }

    fn held_units(&self) -> u32 {
        self.held.as_ref().map_or(0, |p| p.num_permits() as u32)
    }

    /// Starts waiting for budget enough for a message of `message` bytes.
    fn ask(&mut self, budget: &MessageBudget, message: u64) {
        let wanted = units_for(message).min(budget.total_units);
        let more = wanted.saturating_sub(self.held_units());
        if more == 0 {
            return;
        }
        self.semaphore
            .get_or_insert_with(|| PollSemaphore::new(Arc::clone(&budget.permits)));
        crate::metrics::METRICS.relay_memory_waiting.inc();
        self.waiting = Some(Wait {
            units: more,
            deadline: Box::pin(tokio::time::sleep(WAIT_LIMIT)),
            message,
        });
    }
}

/// A wait for more budget: how much, until when, for a message of what size.
struct Wait {
    units: u32,
    deadline: Pin<Box<tokio::time::Sleep>>,
    message: u64,
}

/// Budget units for a message of `bytes`: twice it (read and write buffers), rounded up.
fn units_for(bytes: u64) -> u32 {
    (bytes.saturating_mul(2).div_ceil(UNIT)).min(u32::MAX as u64) as u32
}

impl<S: AsyncRead + Unpin> AsyncRead for Metered<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let Some(budget) = this.budget.clone() else {
            return Pin::new(&mut this.inner).poll_read(cx, buf);
        };
        if let (Some(wait), Some(semaphore)) = (&mut this.waiting, &mut this.semaphore) {
            match semaphore.poll_acquire_many(cx, wait.units) {
                Poll::Ready(Some(permit)) => {
                    match &mut this.held {
                        Some(held) => held.merge(permit),
                        None => this.held = Some(permit),
                    }
                    crate::metrics::METRICS
                        .relay_memory_held
                        .set(budget.held() as i64);
                    this.stop_waiting();
                }
                Poll::Ready(None) => unreachable!("the budget's semaphore is never closed"),
                Poll::Pending => {
                    ready!(wait.deadline.as_mut().poll(cx));
                    let error = BudgetExhausted {
                        message: wait.message,
                        budget: budget.bytes(),
                    };
                    crate::metrics::METRICS.relay_memory_refusals.inc();
                    this.stop_waiting();
                    return Poll::Ready(Err(io::Error::other(error)));
                }
            }
        }
        let start = buf.filled().len();
        if this.stash.is_empty() {
            ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
        } else {
            let n = this.stash.len().min(buf.remaining());
            buf.put_slice(&this.stash[..n]);
            this.stash.drain(..n);
        }
        let fresh = &buf.filled()[start..];
        if let Some((cut, message)) = this.frames.scan(fresh) {
            // A large message's payload follows `cut`: hold it back until its budget is held.
            let held_back = fresh[cut..].to_vec();
            this.stash.splice(0..0, held_back);
            buf.set_filled(start + cut);
            this.ask(&budget, message);
        }
        Poll::Ready(Ok(()))
    }
}

impl<S> Drop for Metered<S> {
    fn drop(&mut self) {
        self.stop_waiting();
        if let (Some(budget), Some(held)) = (&self.budget, self.held.take()) {
            drop(held);
            crate::metrics::METRICS
                .relay_memory_held
                .set(budget.held() as i64);
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Metered<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, data)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// Follows the frame boundaries of one direction of a websocket (RFC 6455 §5.2) without
/// keeping payloads: where each header is, and how large the message being received is.
#[derive(Debug, Default)]
struct FrameReader {
    header: [u8; 14],
    header_len: usize,
    payload_left: u64,
    /// Data bytes of the message being received, over all its fragments so far.
    message: u64,
}

impl FrameReader {
    /// Reads `bytes` (the next bytes of the stream). Stops right after a header whose
    /// payload makes a message large, returning the offset of the payload's first byte and
    /// the message's size so far; the caller asks for budget and scans the rest later.
    fn scan(&mut self, bytes: &[u8]) -> Option<(usize, u64)> {
        let mut at = 0;
        while at < bytes.len() {
            if self.payload_left > 0 {
                let skip = self.payload_left.min((bytes.len() - at) as u64);
                self.payload_left -= skip;
                at += skip as usize;
                continue;
            }
            self.header[self.header_len] = bytes[at];
            self.header_len += 1;
            at += 1;
            let Some(length) = self.header_complete() else {
                continue;
            };
            let opcode = self.header[0] & 0x0f;
            self.header_len = 0;
            self.payload_left = length;
            // Control frames (8 and up) are at most 125 bytes and interleave with a
            // fragmented message without being part of it.
            if opcode < 8 {
                if opcode != 0 {
                    self.message = 0;
                }
                self.message = self.message.saturating_add(length);
                if length > 0 && self.message >= LARGE {
                    return Some((at, self.message));
                }
            }
        }
        None
    }

    /// The payload length, once the header collected so far is whole.
    fn header_complete(&self) -> Option<u64> {
        let h = &self.header[..self.header_len];
        if h.len() < 2 {
            return None;
        }
        let masked = h[1] & 0x80 != 0;
        let (extra, length) = match h[1] & 0x7f {
            126 => (2, None),
            127 => (8, None),
            short => (0, Some(u64::from(short))),
        };
        let whole = 2 + extra + if masked { 4 } else { 0 };
        if h.len() < whole {
            return None;
        }
        Some(length.unwrap_or_else(|| {
            h[2..2 + extra]
                .iter()
                .fold(0u64, |n, b| (n << 8) | u64::from(*b))
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::FutureExt;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A frame as a client sends it (masked with a zero key, so the payload reads as is).
    fn frame(opcode: u8, fin: bool, payload: &[u8]) -> Vec<u8> {
        let mut out = vec![(if fin { 0x80 } else { 0 }) | opcode];
        let len = payload.len() as u64;
        match len {
            0..=125 => out.push(0x80 | len as u8),
            126..=0xffff => {
                out.push(0x80 | 126);
                out.extend_from_slice(&(len as u16).to_be_bytes());
            }
            _ => {
                out.push(0x80 | 127);
                out.extend_from_slice(&len.to_be_bytes());
            }
        }
        out.extend_from_slice(&[0; 4]);
        out.extend_from_slice(payload);
        out
    }

    #[test]
    fn headers_are_found_across_any_split() {
        let mut stream = frame(1, true, b"small");
        stream.extend(frame(9, true, b"ping"));
        stream.extend(frame(1, true, &vec![b'x'; 70_000]));
        stream.extend(frame(2, true, &vec![b'y'; LARGE as usize]));
        let large_payload_at = stream.len() - LARGE as usize;
        for chunk in [1, 2, 3, 7, 13, 4096, stream.len()] {
            let mut reader = FrameReader::default();
            let mut found = None;
            let mut offset = 0;
            while offset < stream.len() {
                let end = (offset + chunk).min(stream.len());
                match reader.scan(&stream[offset..end]) {
                    Some((cut, message)) => {
                        assert!(found.is_none(), "found once");
                        found = Some((offset + cut, message));
                        offset += cut;
                    }
                    None => offset = end,
                }
            }
            assert_eq!(found, Some((large_payload_at, LARGE)), "chunks of {chunk}");
        }
    }

    #[test]
    fn fragments_count_as_one_message_and_control_frames_do_not() {
        let half = vec![b'z'; (LARGE / 2) as usize];
        let mut stream = frame(1, false, &half);
        stream.extend(frame(9, true, b"ping"));
        stream.extend(frame(0, true, &half));
        let mut reader = FrameReader::default();
        let (cut, message) = reader
            .scan(&stream)
            .expect("the second fragment makes it large");
        assert_eq!(message, LARGE);
        assert_eq!(cut, stream.len() - half.len());
        // A new message starts counting again.
        assert_eq!(reader.scan(&stream[cut..]), None);
        assert_eq!(reader.scan(&frame(1, true, b"{}")), None);
    }

    async fn send(to: &mut tokio::io::DuplexStream, bytes: Vec<u8>) {
        to.write_all(&bytes).await.unwrap();
    }

    /// Reads `n` bytes through `m`.
    async fn read_n<S: AsyncRead + Unpin>(m: &mut Metered<S>, n: usize) -> io::Result<Vec<u8>> {
        let mut out = vec![0; n];
        m.read_exact(&mut out).await?;
        Ok(out)
    }

    #[tokio::test]
    async fn a_large_message_waits_until_another_connection_gives_its_budget_back() {
        // Room for one 1 MiB message (2 MiB: read and write buffers), not two.
        let budget = MessageBudget::new(3 * LARGE);
        let big = frame(2, true, &vec![7; LARGE as usize]);
        let (mut a_tx, a_rx) = tokio::io::duplex(4 * LARGE as usize);
        let (mut b_tx, b_rx) = tokio::io::duplex(4 * LARGE as usize);
        let mut a = Metered::new(a_rx, Some(budget.clone()));
        let mut b = Metered::new(b_rx, Some(budget.clone()));
        send(&mut a_tx, big.clone()).await;
        send(&mut b_tx, big.clone()).await;
        assert_eq!(read_n(&mut a, big.len()).await.unwrap(), big);
        assert_eq!(budget.held(), 2 * LARGE);
        // b gets its header, then its payload waits.
        let header = read_n(&mut b, big.len() - LARGE as usize).await.unwrap();
        assert_eq!(header, big[..header.len()]);
        let mut byte = [0u8; 1];
        // Its payload is in the pipe already: only the budget holds it back.
        assert!(
            b.read(&mut byte).now_or_never().is_none(),
            "b's payload waits"
        );
        // a keeps its budget for later messages of the same size: no new ask.
        send(&mut a_tx, big.clone()).await;
        assert_eq!(read_n(&mut a, big.len()).await.unwrap(), big);
        // Closing a hands its budget straight to b's waiting payload.
        drop(a);
        let rest = read_n(&mut b, LARGE as usize).await.unwrap();
        assert!(rest.iter().all(|&x| x == 7));
        assert_eq!(budget.held(), 2 * LARGE);
        drop(b);
        assert_eq!(budget.held(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_wait_past_the_limit_is_an_error_that_says_why() {
        let budget = MessageBudget::new(2 * LARGE);
        let _taken = Arc::clone(&budget.permits)
            .acquire_many_owned(1)
            .await
            .unwrap();
        let big = frame(1, true, &vec![b'a'; LARGE as usize]);
        let (mut tx, rx) = tokio::io::duplex(4 * LARGE as usize);
        let mut m = Metered::new(rx, Some(budget));
        send(&mut tx, big.clone()).await;
        let error = read_n(&mut m, big.len()).await.unwrap_err();
        let exhausted = error
            .get_ref()
            .and_then(|e| e.downcast_ref::<BudgetExhausted>())
            .expect("a budget error");
        assert_eq!(exhausted.message, LARGE);
        assert!(error.to_string().contains("try again later"), "{error}");
    }

    #[tokio::test]
    async fn small_messages_never_touch_the_budget() {
        let budget = MessageBudget::new(UNIT);
        let _all = Arc::clone(&budget.permits)
            .acquire_many_owned(1)
            .await
            .unwrap();
        let (mut tx, rx) = tokio::io::duplex(4 * LARGE as usize);
        let mut m = Metered::new(rx, Some(budget));
        let small = frame(1, true, &vec![b'{'; (LARGE - 1) as usize]);
        send(&mut tx, small.clone()).await;
        assert_eq!(read_n(&mut m, small.len()).await.unwrap(), small);
    }
}
