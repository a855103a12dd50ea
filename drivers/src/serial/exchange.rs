//! Request and reply over a [`SerialLink`] with a deadline, bounded retries and reconnection.

use std::time::{Duration, Instant};

use crate::error::{ErrorKind, TransportError};

use super::link::SerialLink;

/// How long to wait and how often to try again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Wait for a reply (on top of any time the command itself takes).
    pub timeout: Duration,
    /// Attempts after the first.
    pub retries: u32,
    /// Pause before reopening a vanished port, times the attempt number.
    pub reconnect_backoff: Duration,
}

impl RetryPolicy {
    /// The longest a request can wait before it fails: every attempt timing out, plus the
    /// backoff before each reconnection (`backoff · k` before attempt `k`), port I/O aside.
    pub fn worst_case(&self, extra: Duration) -> Duration {
        let retries = self.retries;
        (self.timeout + extra) * (retries + 1)
            + self.reconnect_backoff * (retries * (retries + 1) / 2)
    }
}

/// What a reader made of the bytes received so far.
#[derive(Debug)]
pub enum Progress<R> {
    /// Keep reading.
    More,
    /// The reply.
    Done(R),
    /// This attempt failed (damaged reply, or the device refused).
    Failed(TransportError),
}

/// Sends `request` and feeds what arrives to `read` until it has the reply; a damaged reply or a
/// timeout is retried, a vanished port reopened, a refusal returned at once.
pub async fn exchange<R>(
    link: &mut SerialLink,
    policy: &RetryPolicy,
    request: &[u8],
    extra_wait: Duration,
    mut read: impl FnMut(&mut Vec<u8>) -> Progress<R>,
) -> Result<R, TransportError> {
    let mut last = TransportError::Timeout(policy.timeout + extra_wait);
    for attempt in 0..=policy.retries {
        if attempt > 0 {
            if last.kind() == ErrorKind::Reconnect {
                link.close();
                tokio::time::sleep(policy.reconnect_backoff * attempt).await;
            } else if link.discard_input().await.is_err() {
                link.close();
            }
            tracing::debug!(port = %link.settings().path.display(), attempt, error = %last, "retrying");
        }
        match attempt_once(link, policy.timeout + extra_wait, request, &mut read).await {
            Ok(reply) => return Ok(reply),
            Err(e) if e.kind() == ErrorKind::Abort => return Err(e),
            Err(e) => last = e,
        }
    }
    Err(last)
}

async fn attempt_once<R>(
    link: &mut SerialLink,
    wait: Duration,
    request: &[u8],
    read: &mut impl FnMut(&mut Vec<u8>) -> Progress<R>,
) -> Result<R, TransportError> {
    link.send(request).await?;
    let deadline = Instant::now() + wait;
    let mut received = Vec::new();
    loop {
        if Instant::now() >= deadline {
            return Err(TransportError::Timeout(wait));
        }
        if link.receive(&mut received, deadline).await? == 0 {
            continue;
        }
        match read(&mut received) {
            Progress::More => {}
            Progress::Done(reply) => return Ok(reply),
            Progress::Failed(e) => return Err(e),
        }
    }
}
