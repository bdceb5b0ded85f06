//! Cooperative cancellation: a shared flag checked between chunks of work.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::Cancelled;

/// A shared cancellation flag.
///
/// Cloning is cheap (one `Arc` increment) and every clone sees the same flag. Once
/// cancelled, a token stays cancelled. Work is never interrupted: long loops call
/// [`check`](Self::check) once per chunk and return early with the [`Cancelled`] error.
///
/// `cancel` is a `Release` store and `is_cancelled` an `Acquire` load, so whatever the
/// cancelling thread wrote before cancelling is visible to a worker that saw the flag.
///
/// ```
/// use vhdkit_task::{CancelToken, Cancelled};
///
/// fn copy_chunks(token: &CancelToken, chunks: u32) -> Result<u32, Cancelled> {
///     let mut done = 0;
///     for _ in 0..chunks {
///         token.check()?;
///         done += 1; // ... copy one chunk ...
///     }
///     Ok(done)
/// }
///
/// let token = CancelToken::new();
/// assert_eq!(copy_chunks(&token, 4), Ok(4));
/// token.clone().cancel();
/// assert_eq!(copy_chunks(&token, 4), Err(Cancelled));
/// ```
#[derive(Clone, Default)]
pub struct CancelToken {
    flag: Arc<AtomicBool>,
}

impl CancelToken {
    /// A new token, not cancelled.
    pub fn new() -> CancelToken {
        CancelToken::default()
    }

    /// Requests cancellation. Idempotent.
    pub fn cancel(&self) {
        self.flag.store(true, Ordering::Release);
    }

    /// True once [`cancel`](Self::cancel) was called on this token or any clone.
    pub fn is_cancelled(&self) -> bool {
        self.flag.load(Ordering::Acquire)
    }

    /// `Err(Cancelled)` once cancelled, else `Ok(())`; use as `token.check()?` between
    /// chunks of work.
    pub fn check(&self) -> Result<(), Cancelled> {
        if self.is_cancelled() {
            Err(Cancelled)
        } else {
            Ok(())
        }
    }
}

impl fmt::Debug for CancelToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CancelToken")
            .field("cancelled", &self.is_cancelled())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_token_is_not_cancelled() {
        let token = CancelToken::new();
        assert!(!token.is_cancelled());
        assert_eq!(token.check(), Ok(()));
    }

    #[test]
    fn cancel_on_clone_is_seen_by_original() {
        let token = CancelToken::new();
        token.clone().cancel();
        assert!(token.is_cancelled());
        assert_eq!(token.check(), Err(Cancelled));
    }

    #[test]
    fn cancel_twice_stays_cancelled() {
        let token = CancelToken::new();
        token.cancel();
        token.cancel();
        assert!(token.is_cancelled());
    }

    #[test]
    fn cancel_from_other_thread_is_seen() {
        let token = CancelToken::new();
        let remote = token.clone();
        std::thread::spawn(move || remote.cancel())
            .join()
            .expect("cancelling thread does not panic");
        assert!(token.is_cancelled());
    }
}
