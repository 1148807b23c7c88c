//! One server-wide bound on the memory that large websocket messages hold.
//!
//! tungstenite buffers a whole message before the relay sees it, and the relay writes it
//! whole into the other leg's buffer: twenty clients each sending 100 MiB at once would
//! hold 4 GiB. [`Metered`] sits under a websocket and reads the frame headers going by:
//! before the payload of a message of [`LARGE`] or more is let through, its connection must
//! hold budget for it (twice its size: the read buffer that receives it and the write
//! buffer that relays it), taken at once when its first payload byte arrives (a header alone
//! costs nothing). The budget is given back when the connection reads on after the message,
//! by which time the relay has written it out and dropped it, and tungstenite (patched,
//! vendor/README.md) has given its buffers' memory back. A message that does not fit waits,
//! its sender seeing TCP backpressure; after [`WAIT_LIMIT`] the read fails with
//! [`BudgetExhausted`], which the relay turns into a close that says why. A large message
//! whose payload stops coming for [`WAIT_LIMIT`] fails its connection too, so nobody holds
//! budget by sending half a message.
//!
//! Why by hand: no websocket crate bounds memory across connections; reading a frame header
//! is a few lines of RFC 6455 ([`super::frames`]).

use super::frames::{FrameReader, Scan};
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
pub(crate) const LARGE: u64 = 1024 * 1024;

/// How long a large message may wait for budget before its connection is closed; also how
/// long it may take to send [`MIN_PROGRESS`] more of itself.
pub(crate) const WAIT_LIMIT: Duration = Duration::from_secs(30);

/// What a large message must send of itself every [`WAIT_LIMIT`] to keep its share.
const MIN_PROGRESS: u64 = 64 * 1024;

/// Budget is counted in KiB: a semaphore's permits are `u32`.
const UNIT: u64 = 1024;

/// The server-wide budget; cheap to clone.
#[derive(Debug, Clone)]
pub struct MessageBudget {
    permits: Arc<Semaphore>,
    total_units: u32,
    /// The server's metrics (what is held, waiting, refused).
    metrics: Arc<crate::metrics::Metrics>,
}

impl MessageBudget {
    /// A budget of `bytes` (at least one largest message's worth is sensible; a message
    /// larger than the whole budget takes all of it, alone).
    pub fn new(bytes: u64, metrics: Arc<crate::metrics::Metrics>) -> Self {
        let most = (u32::MAX as u64).min(Semaphore::MAX_PERMITS as u64);
        let total_units = (bytes / UNIT).clamp(1, most) as u32;
        Self {
            permits: Arc::new(Semaphore::new(total_units as usize)),
            total_units,
            metrics,
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

/// A read failed because a large message waited [`WAIT_LIMIT`] for budget, or could never
/// fit.
#[derive(Debug, Clone, thiserror::Error)]
#[error(
    "try again later: a message of {message} bytes waited {}s for browserd's relay memory ({budget} bytes, taken by other clients' large messages)",
    WAIT_LIMIT.as_secs()
)]
pub(crate) struct BudgetExhausted {
    pub message: u64,
    pub budget: u64,
}

impl BudgetExhausted {
    /// The budget error inside a websocket error, if that is what it is.
    pub(crate) fn find(error: &tokio_tungstenite::tungstenite::Error) -> Option<&Self> {
        match error {
            tokio_tungstenite::tungstenite::Error::Io(e) => {
                e.get_ref().and_then(|inner| inner.downcast_ref::<Self>())
            }
            _ => None,
        }
    }
}

/// Why a metered stream stopped for good; every later read fails the same way.
#[derive(Debug, Clone)]
enum Failure {
    Budget(BudgetExhausted),
    Invalid(&'static str),
    Stalled,
}

impl Failure {
    fn error(&self) -> io::Error {
        match self {
            Self::Budget(e) => io::Error::other(e.clone()),
            Self::Invalid(why) => io::Error::new(
                io::ErrorKind::InvalidData,
                format!("not a websocket frame: {why}"),
            ),
            Self::Stalled => io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "a large message sent less than {} KiB of itself in {}s",
                    MIN_PROGRESS / 1024,
                    WAIT_LIMIT.as_secs()
                ),
            ),
        }
    }
}

/// A stream whose incoming websocket frames are metered against a [`MessageBudget`]
/// (writes pass through). Without a budget it only follows the frames.
pub struct Metered<S> {
    inner: S,
    budget: Option<MessageBudget>,
    frames: FrameReader,
    /// While an HTTP response comes before the frames (a client's handshake): how much of
    /// the blank line that ends its headers has been seen.
    http_end: Option<usize>,
    /// What this connection holds.
    held: Option<OwnedSemaphorePermit>,
    /// The budget's semaphore, polled while waiting (made on the first wait).
    semaphore: Option<PollSemaphore>,
    /// A wait for more budget.
    waiting: Option<Wait>,
    /// Bytes read from `inner` but not yet scanned or passed on: a payload held back while
    /// its budget is asked for.
    stash: Vec<u8>,
    /// While a large message is coming: when it will have been too slow, and how much of
    /// it had passed when that deadline was set.
    stall: Option<(Pin<Box<tokio::time::Sleep>>, u64)>,
    failed: Option<Failure>,
}

impl<S> Metered<S> {
    /// Frames from the first byte (a server's side, after the upgrade).
    pub fn new(inner: S, budget: Option<MessageBudget>) -> Self {
        Self {
            inner,
            budget,
            frames: FrameReader::default(),
            http_end: None,
            held: None,
            semaphore: None,
            waiting: None,
            stash: Vec::new(),
            stall: None,
            failed: None,
        }
    }

    /// Frames after an HTTP response (a client's side, before its handshake): whatever
    /// arrives with the response is metered too.
    pub fn after_http(inner: S, budget: Option<MessageBudget>) -> Self {
        let mut metered = Self::new(inner, budget);
        metered.http_end = Some(0);
        metered
    }

    /// The stream underneath, to drain a refused message's rest without metering it.
    pub fn inner_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Gives back what the connection holds: its large message has been relayed.
    fn give_back(&mut self, budget: &MessageBudget) {
        if self.held.take().is_some() {
            budget.metrics.relay_memory_held.set(budget.held() as i64);
        }
    }

    /// After a read that moved nothing: fails once a large message has sent less than
    /// [`MIN_PROGRESS`] in [`WAIT_LIMIT`] (a byte now and then does not hold its share).
    fn poll_stall(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if !self.frames.in_large_message() {
            self.stall = None;
            return Poll::Pending;
        }
        let passed = self.frames.large_bytes_passed();
        let progressed = match &self.stall {
            Some((_, since)) => passed >= since + MIN_PROGRESS,
            None => true,
        };
        if progressed {
            self.stall = Some((Box::pin(tokio::time::sleep(WAIT_LIMIT)), passed));
        }
        let (deadline, _) = self.stall.as_mut().expect("set above");
        ready!(deadline.as_mut().poll(cx));
        self.failed = Some(Failure::Stalled);
        Poll::Ready(())
    }

    fn stop_waiting(&mut self) {
        if self.waiting.take().is_some()
            && let Some(budget) = &self.budget
        {
            budget.metrics.relay_memory_waiting.dec();
        }
    }

    fn held_units(&self) -> u32 {
        self.held.as_ref().map_or(0, |p| p.num_permits() as u32)
    }

    /// Starts waiting for budget for the large message being received, whole as its
    /// headers claim so far (all at once: a message that held part of what it needs while
    /// waiting for the rest could wait on another that does the same).
    fn ask(&mut self, budget: &MessageBudget) -> Result<(), Failure> {
        let wanted = units_for(self.frames.message()).min(budget.total_units);
        let more = wanted.saturating_sub(self.held_units());
        if more == 0 {
            // It needs more than the whole budget (config keeps messages within half).
            return Err(Failure::Budget(BudgetExhausted {
                message: self.frames.message(),
                budget: budget.bytes(),
            }));
        }
        self.semaphore
            .get_or_insert_with(|| PollSemaphore::new(Arc::clone(&budget.permits)));
        budget.metrics.relay_memory_waiting.inc();
        self.waiting = Some(Wait {
            units: more,
            deadline: Box::pin(tokio::time::sleep(WAIT_LIMIT)),
        });
        Ok(())
    }

    /// Polls a wait for budget: ready once it is over (granted, or failed).
    fn poll_wait(&mut self, cx: &mut Context<'_>, budget: &MessageBudget) -> Poll<()> {
        let (Some(wait), Some(semaphore)) = (&mut self.waiting, &mut self.semaphore) else {
            return Poll::Ready(());
        };
        match semaphore.poll_acquire_many(cx, wait.units) {
            Poll::Ready(Some(permit)) => {
                self.frames.grant(u64::from(wait.units) * UNIT / 2);
                match &mut self.held {
                    Some(held) => held.merge(permit),
                    None => self.held = Some(permit),
                }
                budget.metrics.relay_memory_held.set(budget.held() as i64);
                self.stop_waiting();
            }
            Poll::Ready(None) => unreachable!("the budget's semaphore is never closed"),
            Poll::Pending => {
                ready!(wait.deadline.as_mut().poll(cx));
                budget.metrics.relay_memory_refusals.inc();
                self.failed = Some(Failure::Budget(BudgetExhausted {
                    message: self.frames.message(),
                    budget: budget.bytes(),
                }));
                self.stop_waiting();
            }
        }
        Poll::Ready(())
    }
}

/// A wait for more budget: how much, and until when.
struct Wait {
    units: u32,
    deadline: Pin<Box<tokio::time::Sleep>>,
}

/// Budget units for `bytes` of a message: twice it (read and write buffers), rounded up.
fn units_for(bytes: u64) -> u32 {
    (bytes.saturating_mul(2).div_ceil(UNIT)).min(u32::MAX as u64) as u32
}

/// Where the blank line that ends an HTTP response's headers ends in `bytes`, given how
/// much of it came before (`seen`, updated).
fn end_of_http(seen: &mut usize, bytes: &[u8]) -> Option<usize> {
    const END: &[u8] = b"\r\n\r\n";
    for (i, &b) in bytes.iter().enumerate() {
        *seen = if b == END[*seen] {
            *seen + 1
        } else {
            usize::from(b == b'\r')
        };
        if *seen == END.len() {
            return Some(i + 1);
        }
    }
    None
}

impl<S: AsyncRead + Unpin> AsyncRead for Metered<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if let Some(failure) = &this.failed {
                return Poll::Ready(Err(failure.error()));
            }
            // Only around large messages (the relay's common path clones nothing here).
            if this.frames.completion_pending() || this.waiting.is_some() {
                let budget = this
                    .budget
                    .clone()
                    .expect("only metered reads wait or complete");
                // Read on after a large message: it has been relayed and freed.
                if this.frames.take_completed() {
                    this.give_back(&budget);
                }
                ready!(this.poll_wait(cx, &budget));
                if this.failed.is_some() {
                    continue;
                }
            }
            let start = buf.filled().len();
            if this.stash.is_empty() {
                match Pin::new(&mut this.inner).poll_read(cx, buf) {
                    Poll::Ready(result) => result?,
                    Poll::Pending => {
                        ready!(this.poll_stall(cx));
                        continue;
                    }
                }
            } else {
                let n = this.stash.len().min(buf.remaining());
                buf.put_slice(&this.stash[..n]);
                this.stash.drain(..n);
            }
            let fresh = &buf.filled()[start..];
            let mut from = 0;
            if let Some(seen) = &mut this.http_end {
                match end_of_http(seen, fresh) {
                    Some(end) => {
                        this.http_end = None;
                        from = end;
                    }
                    None => return Poll::Ready(Ok(())),
                }
            }
            let large = if this.budget.is_some() {
                LARGE
            } else {
                u64::MAX
            };
            match this.frames.scan(&fresh[from..], large) {
                Scan::Read => return Poll::Ready(Ok(())),
                Scan::Invalid { why, .. } => {
                    this.failed = Some(Failure::Invalid(why));
                    continue;
                }
                Scan::NeedsRoom { at, .. } => {
                    // The payload from `cut` on waits until its budget is held.
                    let cut = from + at;
                    let held_back = fresh[cut..].to_vec();
                    this.stash.splice(0..0, held_back);
                    buf.set_filled(start + cut);
                    if this.frames.completion_pending() {
                        // The large message before it ended in this very read: its share
                        // is given back on the next read, once it has been relayed, and
                        // this one asks then (cut > 0: that message's bytes are here).
                        return Poll::Ready(Ok(()));
                    }
                    let budget = this.budget.clone().expect("only metered reads stop");
                    if let Err(failure) = this.ask(&budget) {
                        this.failed = Some(failure);
                    }
                    if cut > 0 {
                        return Poll::Ready(Ok(()));
                    }
                    // Nothing to hand on yet (a read of nothing would mean the end).
                }
            }
        }
    }
}

impl<S> Drop for Metered<S> {
    fn drop(&mut self) {
        self.stop_waiting();
        if let (Some(budget), Some(held)) = (&self.budget, self.held.take()) {
            drop(held);
            budget.metrics.relay_memory_held.set(budget.held() as i64);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cdp::frames::tests::frame;
    use futures_util::FutureExt;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

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
    async fn a_large_message_waits_until_another_is_relayed() {
        // Room for one 1 MiB message (2 MiB: read and write buffers), not two.
        let budget = MessageBudget::new(3 * LARGE, Default::default());
        let big = frame(2, true, &vec![7; LARGE as usize]);
        let small = frame(1, true, b"{}");
        let (mut a_tx, a_rx) = tokio::io::duplex(4 * LARGE as usize);
        let (mut b_tx, b_rx) = tokio::io::duplex(4 * LARGE as usize);
        let mut a = Metered::new(a_rx, Some(budget.clone()));
        let mut b = Metered::new(b_rx, Some(budget.clone()));
        send(&mut a_tx, big.clone()).await;
        send(&mut b_tx, big.clone()).await;
        assert_eq!(read_n(&mut a, big.len()).await.unwrap(), big);
        assert_eq!(budget.held(), 2 * LARGE);
        // b gets its header, then its payload waits, though it is in the pipe already.
        let header = read_n(&mut b, big.len() - LARGE as usize).await.unwrap();
        assert_eq!(header, big[..header.len()]);
        let mut byte = [0u8; 1];
        assert!(
            b.read(&mut byte).now_or_never().is_none(),
            "b's payload waits"
        );
        // a reads on: its message has been relayed, and its budget goes to b's.
        send(&mut a_tx, small.clone()).await;
        assert_eq!(read_n(&mut a, small.len()).await.unwrap(), small);
        let rest = read_n(&mut b, LARGE as usize).await.unwrap();
        assert!(rest.iter().all(|&x| x == 7));
        assert_eq!(budget.held(), 2 * LARGE, "b's share");
        send(&mut b_tx, small.clone()).await;
        assert_eq!(read_n(&mut b, small.len()).await.unwrap(), small);
        assert_eq!(budget.held(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_large_message_that_stops_coming_fails_and_gives_its_budget_back() {
        let budget = MessageBudget::new(1024 * LARGE, Default::default());
        let (mut tx, rx) = tokio::io::duplex(1 << 16);
        let mut m = Metered::new(rx, Some(budget.clone()));
        // A header claiming 256 MiB, ten bytes of it, then nothing.
        let mut claim = vec![0x82, 0x80 | 127];
        claim.extend_from_slice(&(256 * LARGE).to_be_bytes());
        claim.extend_from_slice(&[0; 4]);
        claim.extend_from_slice(&[1; 10]);
        send(&mut tx, claim.clone()).await;
        assert_eq!(read_n(&mut m, claim.len()).await.unwrap(), claim);
        assert_eq!(budget.held(), 512 * LARGE);
        let started = tokio::time::Instant::now();
        let mut byte = [0u8; 1];
        let error = m.read(&mut byte).await.unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::TimedOut, "{error}");
        assert_eq!(started.elapsed(), WAIT_LIMIT);
        drop(m);
        assert_eq!(budget.held(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_large_message_sent_a_byte_at_a_time_does_not_keep_its_share() {
        let budget = MessageBudget::new(1024 * LARGE, Default::default());
        let (mut tx, rx) = tokio::io::duplex(1 << 16);
        let mut m = Metered::new(rx, Some(budget.clone()));
        let mut claim = vec![0x82, 0x80 | 127];
        claim.extend_from_slice(&(2 * LARGE).to_be_bytes());
        claim.extend_from_slice(&[0; 4]);
        claim.push(1);
        send(&mut tx, claim.clone()).await;
        assert_eq!(read_n(&mut m, claim.len()).await.unwrap(), claim);
        let started = tokio::time::Instant::now();
        // A byte every 10 s, read by a reader that waits in between, as tungstenite does.
        let mut byte = [0u8; 1];
        let error = loop {
            match tokio::time::timeout(Duration::from_secs(10), m.read(&mut byte)).await {
                Err(_) => send(&mut tx, vec![1]).await,
                Ok(Ok(_)) => {}
                Ok(Err(e)) => break e,
            }
            assert!(
                started.elapsed() < Duration::from_secs(120),
                "never refused"
            );
        };
        assert_eq!(error.kind(), io::ErrorKind::TimedOut, "{error}");
        assert!(started.elapsed() <= WAIT_LIMIT + Duration::from_secs(10));
    }

    #[tokio::test]
    async fn frames_no_endpoint_may_send_fail_the_stream_for_good() {
        let budget = MessageBudget::new(4 * LARGE, Default::default());
        let (mut tx, rx) = tokio::io::duplex(1 << 16);
        let mut m = Metered::new(rx, Some(budget));
        // A ping claiming 64 KiB (tungstenite would buffer it whole before refusing it).
        send(&mut tx, vec![0x89, 0x80 | 126, 0xff, 0xff, 0, 0, 0, 0]).await;
        let mut byte = [0u8; 16];
        for _ in 0..2 {
            let error = m.read(&mut byte).await.unwrap_err();
            assert_eq!(error.kind(), io::ErrorKind::InvalidData, "{error}");
        }
    }

    #[tokio::test]
    async fn frames_that_come_with_the_handshake_response_are_metered() {
        let budget = MessageBudget::new(1024 * LARGE, Default::default());
        let (mut tx, rx) = tokio::io::duplex(8 * LARGE as usize);
        let mut m = Metered::after_http(rx, Some(budget.clone()));
        let mut bytes = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n".to_vec();
        let response = bytes.len();
        bytes.extend(frame(2, true, &vec![5; 2 * LARGE as usize]));
        send(&mut tx, bytes.clone()).await;
        assert_eq!(read_n(&mut m, bytes.len()).await.unwrap(), bytes);
        assert!(response > 0);
        assert_eq!(
            budget.held(),
            4 * LARGE,
            "the frame after the response counted"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_wait_past_the_limit_is_an_error_that_says_why() {
        let budget = MessageBudget::new(2 * LARGE, Default::default());
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
        let budget = MessageBudget::new(UNIT, Default::default());
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
