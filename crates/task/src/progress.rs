//! Progress counting and progress events.
//!
//! The worker closure of a [`Task`](crate::Task) receives a [`Progress`]: a handful of
//! atomic counters plus the sending half of a bounded channel. Counting is a relaxed
//! atomic add; each count also offers a [`ProgressEvent`] to the channel with
//! `try_send`, so a slow or absent listener never slows the engine — when the channel
//! is full the event is dropped (events *coalesce*), and the counters still hold the
//! truth.
//!
//! # The final event always arrives
//!
//! When the worker returns, the task sends one last event with
//! [`is_final`](ProgressEvent::is_final) set and [`result`](ProgressEvent::result) filled
//! in, *before* the task is marked complete. If the channel is full at that moment the
//! task discards the oldest queued event to make room: the task keeps a receiver of
//! its own (it is what [`Task::subscribe`](crate::Task::subscribe) clones), and after
//! the worker has returned no other sender exists, so room freed this way cannot be
//! taken by anyone else. A listener therefore always finds the final event as the last
//! item of the channel, however slowly it reads, and an iteration over the receiver
//! ends right after it (the task drops the last sender once it has sent it).
//!
//! This was preferred over reserving a slot (ordinary events only while
//! `len() < capacity - 1`): with many rayon threads sending at once, the length check
//! and the send race, so the reserved slot cannot be guaranteed without a lock.

use std::fmt;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;

use crossbeam_channel::{Receiver, Sender, TrySendError};

use crate::{CancelToken, Cancelled, VMTaskResult};

/// The stage an operation is in. Each phase has its own block and byte totals
/// (see [`Progress::set_phase`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
#[repr(u8)]
pub enum Phase {
    /// Opening files and building the plan; the phase of a task that has not called
    /// [`Progress::set_phase`] yet.
    #[default]
    Prepare = 0,
    /// Reading metadata or data to decide what to do (e.g. finding zero blocks).
    Scan = 1,
    /// Copying blocks to a new or target image.
    Copy = 2,
    /// Moving blocks inside an image (compaction).
    Move = 3,
    /// Writing zeros or releasing blocks.
    Zero = 4,
    /// Reading back and checking what was written.
    Verify = 5,
    /// Flushing data and writing the final metadata (BAT, headers, footer).
    Flush = 6,
    /// The task has finished: the phase of the final event, whatever the outcome.
    Finish = 7,
}

impl Phase {
    /// Every phase, in the order of their numbers.
    pub const ALL: [Phase; 8] = [
        Phase::Prepare,
        Phase::Scan,
        Phase::Copy,
        Phase::Move,
        Phase::Zero,
        Phase::Verify,
        Phase::Flush,
        Phase::Finish,
    ];

    /// A short lower-case name (`"copy"`), also what `Display` prints.
    pub const fn name(self) -> &'static str {
        match self {
            Phase::Prepare => "prepare",
            Phase::Scan => "scan",
            Phase::Copy => "copy",
            Phase::Move => "move",
            Phase::Zero => "zero",
            Phase::Verify => "verify",
            Phase::Flush => "flush",
            Phase::Finish => "finish",
        }
    }

    const fn from_u8(value: u8) -> Phase {
        match value {
            1 => Phase::Scan,
            2 => Phase::Copy,
            3 => Phase::Move,
            4 => Phase::Zero,
            5 => Phase::Verify,
            6 => Phase::Flush,
            7 => Phase::Finish,
            _ => Phase::Prepare,
        }
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One progress notification, as received from [`Task::subscribe`](crate::Task::subscribe).
///
/// Counters are those of the current [`phase`](Self::phase). Events may be dropped
/// when the listener is slow (see the [module docs](self)); the counters in a later
/// event include everything an earlier, dropped one reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ProgressEvent {
    /// The [`Task::id`](crate::Task::id) of the task that sent the event.
    pub task_id: u32,
    /// The phase the counters belong to.
    pub phase: Phase,
    /// The block this event reports, for [`Progress::block_done`]; `None` for a phase
    /// change, a batched [`Progress::add_blocks_done`], and the final event.
    pub block_index: Option<u64>,
    /// Blocks done in this phase.
    pub blocks_done: u64,
    /// Blocks to do in this phase (0 if unknown).
    pub blocks_total: u64,
    /// Bytes done in this phase.
    pub bytes_done: u64,
    /// Bytes to do in this phase (0 if unknown).
    pub bytes_total: u64,
    /// True only for the last event of a task, sent when the worker has returned
    /// and before the task is marked complete. Its phase is [`Phase::Finish`]; on
    /// success its counters equal its totals.
    pub is_final: bool,
    /// The task's outcome; `Some` exactly when `is_final` is true.
    pub result: Option<VMTaskResult>,
}

impl ProgressEvent {
    /// The phase's completion in percent, from bytes if `bytes_total > 0`, else from
    /// blocks: 0..=99, and 100 only in a final event of a successful task. Unlike
    /// [`Task::percent_completed`](crate::Task::percent_completed) this is per event
    /// and can go down when a new phase starts.
    pub fn percent(&self) -> u32 {
        if self.result == Some(VMTaskResult::Success) {
            return 100;
        }
        percent_of(
            self.blocks_done,
            self.blocks_total,
            self.bytes_done,
            self.bytes_total,
        )
        .unwrap_or(0)
    }
}

/// The counters of a task at one moment; see [`Progress::snapshot`] and
/// [`Task::progress`](crate::Task::progress).
///
/// Each field is read separately with a relaxed load, so while workers are counting
/// the fields can be a few increments apart from each other.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct ProgressSnapshot {
    /// The current phase.
    pub phase: Phase,
    /// Blocks done in this phase.
    pub blocks_done: u64,
    /// Blocks to do in this phase (0 if unknown).
    pub blocks_total: u64,
    /// Bytes done in this phase.
    pub bytes_done: u64,
    /// Bytes to do in this phase (0 if unknown).
    pub bytes_total: u64,
}

/// Percent (0..=99) from bytes if their total is known, else from blocks; `None` if
/// neither total is known.
fn percent_of(
    blocks_done: u64,
    blocks_total: u64,
    bytes_done: u64,
    bytes_total: u64,
) -> Option<u32> {
    let (done, total) = if bytes_total > 0 {
        (bytes_done, bytes_total)
    } else if blocks_total > 0 {
        (blocks_done, blocks_total)
    } else {
        return None;
    };
    let percent = u128::from(done.min(total)) * 100 / u128::from(total);
    // `percent <= 100`, so the conversion cannot fail; 99 is the cap anyway.
    Some(u32::try_from(percent).unwrap_or(99).min(99))
}

/// Set in [`Counters::percent`] once the task is complete: the value no longer moves.
const PERCENT_FROZEN: u32 = 1 << 31;

/// The counters shared by a task's handle and its [`Progress`].
#[derive(Debug, Default)]
pub(crate) struct Counters {
    blocks_done: AtomicU64,
    blocks_total: AtomicU64,
    bytes_done: AtomicU64,
    bytes_total: AtomicU64,
    phase: AtomicU8,
    /// The highest percentage reported so far, plus [`PERCENT_FROZEN`] once complete.
    percent: AtomicU32,
}

impl Counters {
    pub(crate) fn snapshot(&self) -> ProgressSnapshot {
        ProgressSnapshot {
            phase: Phase::from_u8(self.phase.load(Ordering::Relaxed)),
            blocks_done: self.blocks_done.load(Ordering::Relaxed),
            blocks_total: self.blocks_total.load(Ordering::Relaxed),
            bytes_done: self.bytes_done.load(Ordering::Relaxed),
            bytes_total: self.bytes_total.load(Ordering::Relaxed),
        }
    }

    fn current_percent(&self) -> Option<u32> {
        let s = self.snapshot();
        percent_of(s.blocks_done, s.blocks_total, s.bytes_done, s.bytes_total)
    }

    /// The monotonic percentage: the maximum of every value computed so far, 0..=99
    /// while running; once frozen, the frozen value.
    pub(crate) fn percent(&self) -> u32 {
        let mut current = self.percent.load(Ordering::Acquire);
        if current & PERCENT_FROZEN != 0 {
            return current & !PERCENT_FROZEN;
        }
        let computed = self.current_percent().unwrap_or(0);
        loop {
            if current & PERCENT_FROZEN != 0 || computed <= current {
                return current & !PERCENT_FROZEN;
            }
            match self.percent.compare_exchange_weak(
                current,
                computed,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return computed,
                Err(actual) => current = actual,
            }
        }
    }

    /// Ends counting: phase `Finish`, counters at their totals on success, and the
    /// percentage frozen (100 on success, else where it was). Returns the counters.
    fn complete(&self, success: bool) -> ProgressSnapshot {
        if success {
            for (done, total) in [
                (&self.blocks_done, &self.blocks_total),
                (&self.bytes_done, &self.bytes_total),
            ] {
                let all = done
                    .load(Ordering::Relaxed)
                    .max(total.load(Ordering::Relaxed));
                total.store(all, Ordering::Relaxed);
                done.store(all, Ordering::Relaxed);
            }
        }
        let computed = self.current_percent().unwrap_or(0);
        // Err only if already frozen, which completion (called once) never finds.
        let _ = self
            .percent
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |current| {
                if current & PERCENT_FROZEN != 0 {
                    None
                } else if success {
                    Some(PERCENT_FROZEN | 100)
                } else {
                    Some(PERCENT_FROZEN | current.max(computed))
                }
            });
        self.phase.store(Phase::Finish as u8, Ordering::Relaxed);
        self.snapshot()
    }
}

/// The progress and cancellation context handed to a task's worker.
///
/// `Progress` is `Sync`: pass `&Progress` into rayon closures and count from every
/// thread at once. Counting is a relaxed atomic add and a `try_send` that never
/// blocks (see the [module docs](self)).
///
/// ```
/// use vhdkit_task::{CancelToken, Cancelled, Phase, Progress};
///
/// let progress = Progress::detached(CancelToken::new());
/// progress.set_phase(Phase::Copy, 4, 4 * 512);
/// for block in 0..4 {
///     progress.check_cancelled()?;
///     progress.block_done(block, 512);
/// }
/// assert_eq!(progress.snapshot().bytes_done, 2048);
/// # Ok::<(), Cancelled>(())
/// ```
pub struct Progress {
    task_id: u32,
    counters: Arc<Counters>,
    token: CancelToken,
    events: Sender<ProgressEvent>,
}

impl Progress {
    pub(crate) fn new(
        task_id: u32,
        counters: Arc<Counters>,
        token: CancelToken,
        events: Sender<ProgressEvent>,
    ) -> Progress {
        Progress {
            task_id,
            counters,
            token,
            events,
        }
    }

    /// A progress context that belongs to no task, for running an operation
    /// synchronously (tests, a CLI without a background thread). Counters work as
    /// usual; events are discarded; `task_id` is 0. Cancel through `token`.
    pub fn detached(token: CancelToken) -> Progress {
        let (events, _) = crossbeam_channel::bounded(1);
        Progress::new(0, Arc::new(Counters::default()), token, events)
    }

    /// The id of the task this context belongs to (0 if [`detached`](Self::detached)).
    pub fn task_id(&self) -> u32 {
        self.task_id
    }

    /// Starts a new phase: sets its totals (0 where unknown), resets the done counters
    /// to 0, and sends an event with `block_index: None`.
    ///
    /// Call it between phases, not while other threads are still counting the
    /// previous one. [`Task::percent_completed`](crate::Task::percent_completed) never
    /// goes down, so give the bulk of the work one phase whose totals cover it; short
    /// phases can pass totals of 0, which leave the percentage where it is.
    pub fn set_phase(&self, phase: Phase, blocks_total: u64, bytes_total: u64) {
        let c = &self.counters;
        c.blocks_total.store(blocks_total, Ordering::Relaxed);
        c.bytes_total.store(bytes_total, Ordering::Relaxed);
        c.blocks_done.store(0, Ordering::Relaxed);
        c.bytes_done.store(0, Ordering::Relaxed);
        c.phase.store(phase as u8, Ordering::Relaxed);
        self.offer(ProgressEvent {
            task_id: self.task_id,
            phase,
            block_index: None,
            blocks_done: 0,
            blocks_total,
            bytes_done: 0,
            bytes_total,
            is_final: false,
            result: None,
        });
    }

    /// Counts one finished block of `bytes` bytes and offers an event naming
    /// `block_index`. Never blocks.
    pub fn block_done(&self, block_index: u64, bytes: u64) {
        self.count(Some(block_index), 1, bytes);
    }

    /// Counts `blocks` finished blocks totalling `bytes` bytes at once (batching) and
    /// offers one event with `block_index: None`. Never blocks.
    pub fn add_blocks_done(&self, blocks: u64, bytes: u64) {
        self.count(None, blocks, bytes);
    }

    fn count(&self, block_index: Option<u64>, blocks: u64, bytes: u64) {
        let c = &self.counters;
        let blocks_done = c
            .blocks_done
            .fetch_add(blocks, Ordering::Relaxed)
            .wrapping_add(blocks);
        let bytes_done = c
            .bytes_done
            .fetch_add(bytes, Ordering::Relaxed)
            .wrapping_add(bytes);
        if self.events.is_full() {
            // Coalesce: the counters already hold the truth.
            return;
        }
        self.offer(ProgressEvent {
            task_id: self.task_id,
            phase: Phase::from_u8(c.phase.load(Ordering::Relaxed)),
            block_index,
            blocks_done,
            blocks_total: c.blocks_total.load(Ordering::Relaxed),
            bytes_done,
            bytes_total: c.bytes_total.load(Ordering::Relaxed),
            is_final: false,
            result: None,
        });
    }

    /// `try_send`: a full or disconnected channel drops the event.
    fn offer(&self, event: ProgressEvent) {
        let _ = self.events.try_send(event);
    }

    /// The counters now.
    pub fn snapshot(&self) -> ProgressSnapshot {
        self.counters.snapshot()
    }

    /// The task's cancellation token (clone it to hand it on).
    pub fn cancel_token(&self) -> &CancelToken {
        &self.token
    }

    /// True once the task was cancelled.
    pub fn is_cancelled(&self) -> bool {
        self.token.is_cancelled()
    }

    /// `Err(Cancelled)` once the task was cancelled; call it once per chunk, as
    /// `progress.check_cancelled()?`.
    pub fn check_cancelled(&self) -> Result<(), Cancelled> {
        self.token.check()
    }

    /// Ends the task's progress: finalises the counters and delivers the final event
    /// (making room by discarding the oldest queued event if needed), then drops the
    /// sender so that listeners' iterations end.
    pub(crate) fn finish(self, receiver: &Receiver<ProgressEvent>, result: VMTaskResult) {
        let s = self.counters.complete(result.is_success());
        let mut event = ProgressEvent {
            task_id: self.task_id,
            phase: s.phase,
            block_index: None,
            blocks_done: s.blocks_done,
            blocks_total: s.blocks_total,
            bytes_done: s.bytes_done,
            bytes_total: s.bytes_total,
            is_final: true,
            result: Some(result),
        };
        // No other sender exists any more (the worker only ever borrowed `self`), so
        // each slot freed below stays free until our next `try_send`. The bound only
        // guards against looping forever should that ever stop being true.
        let attempts = self.events.capacity().unwrap_or(1).saturating_add(8);
        for _ in 0..attempts {
            match self.events.try_send(event) {
                Ok(()) | Err(TrySendError::Disconnected(_)) => return,
                Err(TrySendError::Full(back)) => {
                    event = back;
                    let _ = receiver.try_recv();
                }
            }
        }
    }
}

impl fmt::Debug for Progress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Progress")
            .field("task_id", &self.task_id)
            .field("counters", &self.snapshot())
            .field("cancelled", &self.is_cancelled())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attached(capacity: usize) -> (Progress, Receiver<ProgressEvent>) {
        let (tx, rx) = crossbeam_channel::bounded(capacity);
        let progress = Progress::new(7, Arc::new(Counters::default()), CancelToken::new(), tx);
        (progress, rx)
    }

    #[test]
    fn progress_is_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Progress>();
    }

    #[test]
    fn block_done_counts_and_sends_event() {
        let (progress, rx) = attached(8);
        progress.set_phase(Phase::Copy, 10, 5120);
        progress.block_done(3, 512);
        let phase_event = rx.try_recv().expect("phase event");
        let block_event = rx.try_recv().expect("block event");
        assert_eq!(phase_event.phase, Phase::Copy);
        assert_eq!(phase_event.block_index, None);
        assert_eq!(block_event.block_index, Some(3));
        assert_eq!(block_event.blocks_done, 1);
        assert_eq!(block_event.bytes_done, 512);
        assert_eq!(block_event.bytes_total, 5120);
        assert_eq!(block_event.task_id, 7);
        assert!(!block_event.is_final);
    }

    #[test]
    fn set_phase_resets_done_counters() {
        let (progress, _rx) = attached(8);
        progress.set_phase(Phase::Scan, 2, 0);
        progress.add_blocks_done(2, 0);
        progress.set_phase(Phase::Copy, 5, 0);
        let s = progress.snapshot();
        assert_eq!(
            (s.phase, s.blocks_done, s.blocks_total),
            (Phase::Copy, 0, 5)
        );
    }

    #[test]
    fn block_done_on_full_channel_drops_event_but_counts() {
        let (progress, rx) = attached(2);
        for block in 0..100 {
            progress.block_done(block, 1);
        }
        assert_eq!(rx.len(), 2);
        assert_eq!(progress.snapshot().blocks_done, 100);
    }

    #[test]
    fn finish_on_full_channel_makes_final_event_last() {
        let (progress, rx) = attached(4);
        progress.set_phase(Phase::Copy, 100, 0);
        for block in 0..100 {
            progress.block_done(block, 0);
        }
        progress.finish(&rx, VMTaskResult::Success);
        let events: Vec<_> = rx.try_iter().collect();
        let last = events.last().expect("at least the final event");
        assert_eq!(events.len(), 4);
        assert!(last.is_final);
        assert_eq!(last.phase, Phase::Finish);
        assert_eq!(last.result, Some(VMTaskResult::Success));
        assert_eq!((last.blocks_done, last.blocks_total), (100, 100));
        assert!(events[..3].iter().all(|e| !e.is_final));
    }

    #[test]
    fn percent_of_prefers_bytes_and_caps_at_99() {
        assert_eq!(percent_of(1, 4, 0, 0), Some(25));
        assert_eq!(percent_of(1, 4, 30, 100), Some(30));
        assert_eq!(percent_of(4, 4, 0, 0), Some(99));
        assert_eq!(percent_of(9, 4, 0, 0), Some(99));
        assert_eq!(percent_of(u64::MAX, u64::MAX, 0, 0), Some(99));
        assert_eq!(percent_of(3, 0, 3, 0), None);
    }

    #[test]
    fn detached_progress_counts_without_listener() {
        let progress = Progress::detached(CancelToken::new());
        progress.block_done(0, 10);
        assert_eq!(progress.task_id(), 0);
        assert_eq!(progress.snapshot().bytes_done, 10);
        assert_eq!(progress.check_cancelled(), Ok(()));
    }
}
