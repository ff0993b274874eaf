//! The reconnect loop shared by the client's resumable server streams ([`crate::Subscriber`],
//! [`crate::AlertWatcher`]): hand out buffered items, read the next message, and when the
//! stream breaks, open it again from the stream's own resume position after a doubling
//! backoff — until a refusal that retrying cannot fix, or too many failures in a row.
//!
//! A stream that broke after it opened moves the next open to the client's next endpoint
//! ([`Resumable::moved_on`]); opening itself tries every endpoint in turn
//! (`crate::endpoints`), so a reader made from a cluster's endpoints carries on from its
//! position on another node when its own dies.

use std::time::Duration;

use tonic::{Code, Status, Streaming};

use crate::ClientError;

/// The first wait before a reconnect; it doubles up to the stream's `max_backoff`.
const FIRST_BACKOFF: Duration = Duration::from_millis(50);

/// Failures worth a reconnect: the transport or the broker going away (or what the stream
/// reads not existing yet), not a refusal.
pub(crate) fn retryable(s: &Status) -> bool {
    matches!(
        s.code(),
        Code::Unavailable | Code::Unknown | Code::Cancelled | Code::Aborted | Code::Internal
    )
}

/// Where an open stream's messages come from: a gRPC server stream, or a script in tests.
pub(crate) trait MessageStream<M> {
    /// The next message; `None` when the server ended the stream.
    async fn message(&mut self) -> Result<Option<M>, Status>;
}

impl<M> MessageStream<M> for Streaming<M> {
    async fn message(&mut self) -> Result<Option<M>, Status> {
        Streaming::message(self).await
    }
}

/// A server stream that can be opened again exactly where the caller left off.
pub(crate) trait Resumable {
    /// One message of the stream.
    type Message;
    /// What `next` hands out.
    type Item;
    /// The open stream.
    type Stream: MessageStream<Self::Message>;

    /// The open stream, if any.
    fn stream(&mut self) -> &mut Option<Self::Stream>;
    /// Open the stream from the resume position (dropping anything buffered past it).
    async fn open(&mut self) -> Result<Self::Stream, Status>;
    /// The next buffered item, advancing the resume position past it.
    fn pop(&mut self) -> Option<Self::Item>;
    /// Take in one message: buffer its items, remember where it ends.
    fn absorb(&mut self, message: Self::Message);
    /// Consecutive failed reconnects allowed, and the longest wait between them.
    fn policy(&self) -> (u32, Duration);
    /// Log a dropped stream that will be resumed after `backoff`.
    fn log_drop(&self, status: &Status, backoff: Duration);
    /// The open stream broke: the next open starts at the next endpoint.
    fn moved_on(&mut self);
}

/// The next item of `r`, reconnecting as its module docs say. A stream the server ends
/// (e.g. shutting down) counts as `ended`, a retryable failure.
pub(crate) async fn next<R: Resumable>(r: &mut R, ended: &str) -> Result<R::Item, ClientError> {
    let mut failures = 0u32;
    let mut backoff = FIRST_BACKOFF;
    loop {
        if let Some(item) = r.pop() {
            return Ok(item);
        }
        let (outcome, was_open) = match r.stream().as_mut() {
            Some(s) => (s.message().await, true),
            None => match r.open().await {
                Ok(s) => {
                    *r.stream() = Some(s);
                    continue;
                }
                Err(e) => (Err(e), false),
            },
        };
        let status = match outcome {
            Ok(Some(message)) => {
                failures = 0;
                backoff = FIRST_BACKOFF;
                r.absorb(message);
                continue;
            }
            Ok(None) => Status::unavailable(ended.to_owned()),
            Err(s) => s,
        };
        *r.stream() = None;
        if was_open {
            r.moved_on();
        }
        let (max_reconnects, max_backoff) = r.policy();
        if !retryable(&status) || failures >= max_reconnects {
            return Err(ClientError::Status(status));
        }
        failures += 1;
        r.log_drop(&status, backoff);
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(max_backoff);
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use super::*;

    type Reply = Result<Option<Vec<u32>>, Status>;

    /// A scripted open stream: each entry is what one `message()` returns.
    struct Script(VecDeque<Reply>);

    impl MessageStream<Vec<u32>> for Script {
        async fn message(&mut self) -> Reply {
            self.0.pop_front().unwrap_or(Ok(None))
        }
    }

    /// A reader of the numbers 0, 1, 2, ...: its resume position is the next number wanted;
    /// each open takes the next scripted outcome and records the position it opened at.
    struct Fake {
        stream: Option<Script>,
        opens: VecDeque<Result<Vec<Reply>, Status>>,
        opened_at: Vec<u32>,
        buffered: VecDeque<u32>,
        position: u32,
        moved: u32,
        max_reconnects: u32,
    }

    impl Fake {
        fn new(max_reconnects: u32, opens: Vec<Result<Vec<Reply>, Status>>) -> Self {
            Self {
                stream: None,
                opens: opens.into(),
                opened_at: Vec::new(),
                buffered: VecDeque::new(),
                position: 0,
                moved: 0,
                max_reconnects,
            }
        }
    }

    impl Resumable for Fake {
        type Message = Vec<u32>;
        type Item = u32;
        type Stream = Script;

        fn stream(&mut self) -> &mut Option<Script> {
            &mut self.stream
        }

        async fn open(&mut self) -> Result<Script, Status> {
            self.buffered.clear();
            self.opened_at.push(self.position);
            let outcome = self
                .opens
                .pop_front()
                .unwrap_or_else(|| Err(Status::unavailable("no more scripted opens")));
            outcome.map(|replies| Script(replies.into()))
        }

        fn pop(&mut self) -> Option<u32> {
            let n = self.buffered.pop_front()?;
            self.position = n + 1;
            Some(n)
        }

        fn absorb(&mut self, message: Vec<u32>) {
            self.buffered.extend(message);
        }

        fn policy(&self) -> (u32, Duration) {
            (self.max_reconnects, Duration::from_millis(400))
        }

        fn log_drop(&self, _: &Status, _: Duration) {}

        fn moved_on(&mut self) {
            self.moved += 1;
        }
    }

    fn down() -> Status {
        Status::unavailable("node down")
    }

    #[tokio::test(start_paused = true)]
    async fn breaks_and_server_ends_resume_from_the_position() {
        let mut r = Fake::new(
            3,
            vec![
                Ok(vec![Ok(Some(vec![0, 1])), Err(down())]),
                Ok(vec![Ok(Some(vec![2])), Ok(None)]),
                Ok(vec![Ok(Some(vec![3, 4]))]),
            ],
        );
        let mut got = Vec::new();
        for _ in 0..5 {
            got.push(next(&mut r, "ended").await.unwrap());
        }
        assert_eq!(got, [0, 1, 2, 3, 4]);
        assert_eq!(
            r.opened_at,
            [0, 2, 3],
            "each reopen starts where the reader was"
        );
        assert_eq!(
            r.moved, 2,
            "a break and a server end both move to the next endpoint"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_refusal_is_returned_at_once() {
        let mut r = Fake::new(5, vec![Err(Status::not_found("no such topic"))]);
        let e = next(&mut r, "ended").await.unwrap_err();
        assert!(matches!(e, ClientError::Status(s) if s.code() == Code::NotFound));
        assert_eq!(r.opened_at.len(), 1);
        assert_eq!(r.moved, 0, "a failed open is not a broken stream");
    }

    #[tokio::test(start_paused = true)]
    async fn gives_up_after_the_allowed_failures_in_a_row_with_doubling_waits() {
        let mut r = Fake::new(5, (0..7).map(|_| Err(down())).collect());
        let started = tokio::time::Instant::now();
        let e = next(&mut r, "ended").await.unwrap_err();
        assert!(matches!(e, ClientError::Status(s) if s.code() == Code::Unavailable));
        assert_eq!(r.opened_at.len(), 6, "the first try and five reconnects");
        // 50 + 100 + 200 + 400 + 400 ms: doubling, capped by the policy's 400.
        assert_eq!(started.elapsed(), Duration::from_millis(1150));
    }

    #[tokio::test(start_paused = true)]
    async fn a_message_resets_the_failure_count() {
        let mut r = Fake::new(
            2,
            vec![
                Err(down()),
                Err(down()),
                Ok(vec![Ok(Some(vec![0])), Err(down())]),
                Err(down()),
                Ok(vec![Ok(Some(vec![1]))]),
            ],
        );
        assert_eq!(next(&mut r, "ended").await.unwrap(), 0);
        // Two failures again (the break and one open): allowed only because the message
        // in between started the count afresh.
        assert_eq!(next(&mut r, "ended").await.unwrap(), 1);
    }
}
