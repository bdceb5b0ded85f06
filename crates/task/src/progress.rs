//! Progress counting, phase weighting and progress events.
//!
//! The worker closure of a [`Task`](crate::Task) receives a [`Progress`]: a handful of
//! atomic counters, the task's phase plan, and the task's subscribers. Counting is a
//! relaxed atomic add; when someone [subscribed](crate::TaskHandle::subscribe), each
//! count also offers a [`ProgressEvent`] to every subscriber's own bounded queue with
//! `try_send`, so a slow or absent listener never slows the engine (see
//! [`Subscription`](crate::Subscription) for what a slow subscriber loses).
//!
//! # Phases and the task's percentage
//!
//! An operation runs through phases ([`Phase`]): scan, then move, then verify, say.
//! [`Progress::set_phase`] starts one, with the phase's own block and byte totals, and
//! resets the done counters; every event carries the phase's percentage
//! ([`ProgressEvent::phase_percent`]) and the task's ([`ProgressEvent::task_percent`]).
//!
//! How the task's percentage follows the phases is up to the operation:
//!
//! - **Planned** (what every operation with more than one long phase should do): it
//!   first declares its phases with the work of each in bytes,
//!   [`Progress::plan_phases`]`(&[(Phase::Scan, s), (Phase::Move, m), (Phase::Verify, v)])`.
//!   The task's percentage is then the planned work of the phases already left behind,
//!   plus the current phase's planned work times its own fraction done, over the work
//!   of the whole plan: with `s = 1`, `m = 5`, `v = 4` GiB the scan moves the task from
//!   0 to 10 %, the move from 10 to 60 %, the verify from 60 to 99 %. Phases that are
//!   not in the plan (a short flush) weigh nothing. The plan can be declared again at
//!   any time, for instance once the scan knows how much will move.
//! - **Unplanned** (no `plan_phases`, or a plan whose work is all 0): the task's
//!   percentage is the highest percentage any phase has reached, so a task whose first
//!   phase covers the bulk of the work reads as before.
//!
//! Either way the task's percentage never decreases (a re-plan or a new phase that would
//! lower it leaves it where it is until the work catches up), stays at most 99 while
//! the task runs, and is 100 exactly when the task has succeeded.
//!
//! # Completion
//!
//! When the worker returns, the task stores its outcome, marks itself complete, and
//! only then sends every subscriber one last event with
//! [`is_final`](ProgressEvent::is_final) set and [`result`](ProgressEvent::result)
//! filled in; after it each subscriber's stream ends. So a listener that saw the stream
//! end, or a poller that saw 100 %, always finds [`is_complete`](crate::TaskHandle::is_complete)
//! true and the [`result`](crate::TaskHandle::result) stored.

use std::fmt;
use std::sync::atomic::{fence, AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use crate::subscription::Hub;
use crate::{CancelToken, Cancelled, VMTaskResult};

/// How many [`Phase`] values there are.
const PHASE_COUNT: usize = Phase::ALL.len();

/// The stage an operation is in. Each phase has its own block and byte totals (see
/// [`Progress::set_phase`]) and, once planned, its own share of the task's percentage
/// (see [`Progress::plan_phases`]).
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

    /// The phase's number, as an index into per-phase arrays.
    const fn index(self) -> usize {
        self as usize
    }
}

/// Prints the [`name`](Phase::name), honouring width and alignment (`{:>7}`).
impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.name())
    }
}

/// One progress notification, as received from a [`Subscription`](crate::Subscription).
///
/// Counters are those of the current [`phase`](Self::phase). A subscription's first
/// event is a snapshot of the state at the moment it subscribed; then come the events
/// the task sends. A slow subscriber loses intermediate events (never the newest state
/// and never the final event); [`lost`](Self::lost) says how many it lost just before
/// this one, and the counters of an event include everything a lost one reported.
///
/// The fields carry the names of the `vhdkit` command line's `--progress json` lines
/// (`docs/json.md`), where each means the same: the `phase_*` counters are the current
/// phase's, never the whole operation's (the report of a finished operation,
/// `vhdkit_format::ops::Report`, counts its blocks as `blocks_total`, `blocks_copied`,
/// …). Two differ in spelling only: `task_percent` is `percent` there, and `is_final`
/// is `final` (a Rust keyword).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct ProgressEvent {
    /// The [`id`](crate::TaskHandle::id) of the task that sent the event.
    pub task_id: u32,
    /// The phase the counters belong to.
    pub phase: Phase,
    /// The block this event reports, for [`Progress::block_done`]; `None` for a phase
    /// change, a batched [`Progress::add_blocks_done`], a snapshot and the final event.
    pub block_index: Option<u64>,
    /// Blocks done in this phase.
    pub phase_blocks_done: u64,
    /// Blocks to do in this phase (0 if unknown).
    pub phase_blocks_total: u64,
    /// Bytes done in this phase.
    pub phase_bytes_done: u64,
    /// Bytes to do in this phase (0 if unknown).
    pub phase_bytes_total: u64,
    /// The phase's completion in percent, 0..=100: from bytes if `bytes_total > 0`,
    /// else from blocks, else 0. It starts again from 0 in each phase.
    pub phase_percent: u32,
    /// The task's completion in percent, weighted across its phases (see the
    /// [module docs](self)): what [`percent_completed`](crate::TaskHandle::percent_completed)
    /// said when the event was made. It never decreases within one subscription, stays
    /// at most 99 in every event but the final one, and is 100 only in the final event
    /// of a successful task.
    pub task_percent: u32,
    /// How many events this subscriber lost, because its queue was full, between the
    /// event it received before this one and this one.
    pub lost: u64,
    /// True only for the last event of a task, sent once the task is complete (its
    /// outcome stored). Its phase is [`Phase::Finish`]; on success its counters equal
    /// its totals.
    pub is_final: bool,
    /// The task's outcome; `Some` exactly when `is_final` is true.
    pub result: Option<VMTaskResult>,
}

/// The progress of a task at one moment; see [`Progress::snapshot`] and
/// [`TaskHandle::progress`](crate::TaskHandle::progress).
///
/// The phase, its totals and the percentages are consistent with each other; the done
/// counters can be a few increments behind what other threads are counting right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub struct ProgressSnapshot {
    /// The current phase.
    pub phase: Phase,
    /// Blocks done in this phase.
    pub phase_blocks_done: u64,
    /// Blocks to do in this phase (0 if unknown).
    pub phase_blocks_total: u64,
    /// Bytes done in this phase.
    pub phase_bytes_done: u64,
    /// Bytes to do in this phase (0 if unknown).
    pub phase_bytes_total: u64,
    /// The phase's completion in percent, as in [`ProgressEvent::phase_percent`].
    pub phase_percent: u32,
    /// The task's completion in percent, as in [`ProgressEvent::task_percent`].
    pub task_percent: u32,
}

/// How the phase plan weighs the current phase: the planned work (bytes) of the
/// phases already left behind, of the current phase, and of the whole plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct Weighting {
    before: u64,
    current: u64,
    total: u64,
}

/// The phase plan, changed only by `set_phase`, `plan_phases` and completion.
#[derive(Debug, Default)]
struct Plan {
    /// Planned work of each phase in bytes, by [`Phase::index`].
    work: [u64; PHASE_COUNT],
    /// The phases entered so far, one bit per [`Phase::index`].
    entered: u16,
    /// The current phase.
    phase: Phase,
}

impl Plan {
    fn weighting(&self) -> Weighting {
        let total = self
            .work
            .iter()
            .fold(0_u64, |sum, &w| sum.saturating_add(w));
        let current = self.work[self.phase.index()];
        let before = Phase::ALL
            .iter()
            .filter(|&&p| p != self.phase && self.entered & (1 << p.index()) != 0)
            .fold(0_u64, |sum, p| sum.saturating_add(self.work[p.index()]));
        Weighting {
            before,
            current,
            total,
        }
    }
}

/// One consistent reading of the phase state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct View {
    phase: Phase,
    blocks_done: u64,
    blocks_total: u64,
    bytes_done: u64,
    bytes_total: u64,
    weighting: Weighting,
}

impl View {
    /// The phase's (done, total) in the unit that counts: bytes if their total is
    /// known, else blocks; `None` if neither total is known.
    fn fraction(&self) -> Option<(u64, u64)> {
        if self.bytes_total > 0 {
            Some((self.bytes_done.min(self.bytes_total), self.bytes_total))
        } else if self.blocks_total > 0 {
            Some((self.blocks_done.min(self.blocks_total), self.blocks_total))
        } else {
            None
        }
    }

    /// The phase's completion, 0..=100.
    fn phase_percent(&self) -> u32 {
        self.fraction().map_or(0, |(done, total)| {
            percent(u128::from(done), u128::from(total))
        })
    }

    /// The task's completion from this view alone, 0..=99 (see the module docs).
    fn task_percent(&self) -> u32 {
        let w = self.weighting;
        let raw = if w.total == 0 {
            self.phase_percent()
        } else {
            let (done, unit) = self.fraction().unwrap_or((0, 1));
            let unit = u128::from(unit);
            let work_done = u128::from(w.before) * unit + u128::from(w.current) * u128::from(done);
            percent(work_done, u128::from(w.total) * unit)
        };
        raw.min(99)
    }
}

/// `100 * done / total`, rounded down, at most 100; 0 if `total` is 0.
fn percent(done: u128, total: u128) -> u32 {
    if total == 0 {
        return 0;
    }
    let value = done.min(total) * 100 / total;
    // `value <= 100`, so the conversion cannot fail.
    u32::try_from(value).unwrap_or(100)
}

/// The progress state of one task, shared by its handles, its [`Progress`] and its
/// subscriptions.
///
/// The phase, its totals and its weighting change together (in `set_phase`,
/// `plan_phases` and completion, which hold `plan`) and are read without a lock
/// through a sequence lock: `seq` is odd while a writer is changing them, and a reader
/// that saw it change reads again. The done counters are plain atomic adds; `set_phase`
/// resets them inside the writer's window, so a reading never mixes one phase's counts
/// with another's totals.
pub(crate) struct ProgressState {
    task_id: u32,
    seq: AtomicU64,
    phase: AtomicU8,
    blocks_total: AtomicU64,
    bytes_total: AtomicU64,
    weight_before: AtomicU64,
    weight_current: AtomicU64,
    weight_total: AtomicU64,
    blocks_done: AtomicU64,
    bytes_done: AtomicU64,
    /// The highest task percentage reported so far (0..=99).
    percent_max: AtomicU32,
    plan: Mutex<Plan>,
    pub(crate) hub: Arc<Hub>,
}

impl ProgressState {
    /// The state of a task that has not started a phase yet; its subscribers get
    /// queues of `event_capacity` events unless they ask otherwise.
    pub(crate) fn new(task_id: u32, event_capacity: usize) -> ProgressState {
        ProgressState {
            task_id,
            seq: AtomicU64::new(0),
            phase: AtomicU8::new(Phase::Prepare as u8),
            blocks_total: AtomicU64::new(0),
            bytes_total: AtomicU64::new(0),
            weight_before: AtomicU64::new(0),
            weight_current: AtomicU64::new(0),
            weight_total: AtomicU64::new(0),
            blocks_done: AtomicU64::new(0),
            bytes_done: AtomicU64::new(0),
            percent_max: AtomicU32::new(0),
            plan: Mutex::new(Plan {
                entered: 1 << Phase::Prepare.index(),
                ..Plan::default()
            }),
            hub: Arc::new(Hub::new(event_capacity)),
        }
    }

    /// One consistent reading of phase, totals, weighting and done counters.
    fn view(&self) -> View {
        let mut spins = 0_u32;
        loop {
            let before = self.seq.load(Ordering::Acquire);
            if before & 1 == 0 {
                let view = View {
                    phase: Phase::from_u8(self.phase.load(Ordering::Relaxed)),
                    blocks_done: self.blocks_done.load(Ordering::Relaxed),
                    blocks_total: self.blocks_total.load(Ordering::Relaxed),
                    bytes_done: self.bytes_done.load(Ordering::Relaxed),
                    bytes_total: self.bytes_total.load(Ordering::Relaxed),
                    weighting: Weighting {
                        before: self.weight_before.load(Ordering::Relaxed),
                        current: self.weight_current.load(Ordering::Relaxed),
                        total: self.weight_total.load(Ordering::Relaxed),
                    },
                };
                fence(Ordering::Acquire);
                if self.seq.load(Ordering::Relaxed) == before {
                    return view;
                }
            }
            // A writer is inside its window of a few stores; let it finish.
            spins = spins.wrapping_add(1);
            if spins.is_multiple_of(64) {
                std::thread::yield_now();
            } else {
                std::hint::spin_loop();
            }
        }
    }

    /// Runs `write` as the sequence lock's writer. The caller holds `plan`, which
    /// makes it the only writer.
    fn write_phase_state(&self, write: impl FnOnce()) {
        let seq = self.seq.load(Ordering::Relaxed);
        self.seq.store(seq.wrapping_add(1), Ordering::Relaxed);
        fence(Ordering::Release);
        write();
        self.seq.store(seq.wrapping_add(2), Ordering::Release);
    }

    fn store_weighting(&self, w: Weighting) {
        self.weight_before.store(w.before, Ordering::Relaxed);
        self.weight_current.store(w.current, Ordering::Relaxed);
        self.weight_total.store(w.total, Ordering::Relaxed);
    }

    fn lock_plan(&self) -> std::sync::MutexGuard<'_, Plan> {
        // Every change to the plan is a few assignments that cannot panic halfway.
        self.plan.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn set_phase(&self, phase: Phase, blocks_total: u64, bytes_total: u64) {
        let mut plan = self.lock_plan();
        // What the phase that ends reached stays reached, even if nobody looked.
        self.running_percent();
        plan.phase = phase;
        plan.entered |= 1 << phase.index();
        let weighting = plan.weighting();
        self.write_phase_state(|| {
            self.phase.store(phase as u8, Ordering::Relaxed);
            self.blocks_total.store(blocks_total, Ordering::Relaxed);
            self.bytes_total.store(bytes_total, Ordering::Relaxed);
            self.blocks_done.store(0, Ordering::Relaxed);
            self.bytes_done.store(0, Ordering::Relaxed);
            self.store_weighting(weighting);
        });
    }

    fn plan_phases(&self, phases: &[(Phase, u64)]) {
        let mut plan = self.lock_plan();
        // What the old plan reached stays reached.
        self.running_percent();
        plan.work = [0; PHASE_COUNT];
        for &(phase, bytes) in phases {
            let work = &mut plan.work[phase.index()];
            *work = work.saturating_add(bytes);
        }
        let weighting = plan.weighting();
        self.write_phase_state(|| self.store_weighting(weighting));
    }

    /// Ends counting: phase [`Phase::Finish`] and, on success, the done counters at
    /// their totals. The weighting stays as it was, so the task's percentage of a
    /// failed task stays where the work left it.
    pub(crate) fn finish(&self, success: bool) {
        let mut plan = self.lock_plan();
        plan.phase = Phase::Finish;
        self.write_phase_state(|| {
            self.phase.store(Phase::Finish as u8, Ordering::Relaxed);
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
        });
    }

    /// The running task percentage: the highest value computed so far, 0..=99.
    fn percent_of(&self, view: &View) -> u32 {
        let computed = view.task_percent();
        let previous = self.percent_max.fetch_max(computed, Ordering::AcqRel);
        previous.max(computed)
    }

    /// The running task percentage now, 0..=99 (completion is the task's business).
    pub(crate) fn running_percent(&self) -> u32 {
        self.percent_of(&self.view())
    }

    /// The counters and percentages now, with the running task percentage.
    pub(crate) fn snapshot(&self) -> ProgressSnapshot {
        let view = self.view();
        ProgressSnapshot {
            phase: view.phase,
            phase_blocks_done: view.blocks_done,
            phase_blocks_total: view.blocks_total,
            phase_bytes_done: view.bytes_done,
            phase_bytes_total: view.bytes_total,
            phase_percent: view.phase_percent(),
            task_percent: self.percent_of(&view),
        }
    }

    /// An event of the state now.
    pub(crate) fn event(&self, block_index: Option<u64>) -> ProgressEvent {
        let s = self.snapshot();
        ProgressEvent {
            task_id: self.task_id,
            phase: s.phase,
            block_index,
            phase_blocks_done: s.phase_blocks_done,
            phase_blocks_total: s.phase_blocks_total,
            phase_bytes_done: s.phase_bytes_done,
            phase_bytes_total: s.phase_bytes_total,
            phase_percent: s.phase_percent,
            task_percent: s.task_percent,
            lost: 0,
            is_final: false,
            result: None,
        }
    }

    /// Sends every subscriber the final event (the state after [`finish`](Self::finish),
    /// with the task's final percentage and result) and ends their streams.
    pub(crate) fn close(&self, result: VMTaskResult, task_percent: u32) {
        let mut event = self.event(None);
        event.task_percent = task_percent;
        if result.is_success() {
            // Also when the phase never said how much it had to do.
            event.phase_percent = 100;
        }
        event.is_final = true;
        event.result = Some(result);
        self.hub.close(event);
    }

    /// Offers an event of the state now to every subscriber; free when there is none.
    fn broadcast(&self, block_index: Option<u64>) {
        self.hub.broadcast(|| self.event(block_index));
    }
}

impl fmt::Debug for ProgressState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProgressState")
            .field("task_id", &self.task_id)
            .field("snapshot", &self.snapshot())
            .finish_non_exhaustive()
    }
}

/// The progress and cancellation context handed to a task's worker.
///
/// `Progress` is `Sync`: pass `&Progress` into rayon closures and count from every
/// thread at once. Counting is a relaxed atomic add, plus, when someone subscribed,
/// one `try_send` per subscriber that never blocks (see the [module docs](self)).
///
/// ```
/// use vhdkit_task::{CancelToken, Cancelled, Phase, Progress};
///
/// let progress = Progress::detached(CancelToken::new());
/// // Declare the phases and their work in bytes, then run them.
/// progress.plan_phases(&[(Phase::Copy, 4 * 512), (Phase::Verify, 4 * 512)]);
/// progress.set_phase(Phase::Copy, 4, 4 * 512);
/// for block in 0..4 {
///     progress.check_cancelled()?;
///     progress.block_done(block, 512);
/// }
/// progress.set_phase(Phase::Verify, 4, 4 * 512);
/// progress.add_blocks_done(2, 2 * 512);
///
/// let now = progress.snapshot();
/// assert_eq!((now.phase, now.phase_bytes_done), (Phase::Verify, 1024));
/// assert_eq!(now.phase_percent, 50);
/// assert_eq!(now.task_percent, 75); // the copy's half, plus half of the verify's
/// # Ok::<(), Cancelled>(())
/// ```
pub struct Progress {
    state: Arc<ProgressState>,
    token: CancelToken,
}

impl Progress {
    pub(crate) fn new(state: Arc<ProgressState>, token: CancelToken) -> Progress {
        Progress { state, token }
    }

    /// A progress context that belongs to no task, for running an operation
    /// synchronously (tests, a CLI without a background thread). Counters and
    /// percentages work as usual; nobody can subscribe, so no event is made;
    /// `task_id` is 0. Cancel through `token`.
    pub fn detached(token: CancelToken) -> Progress {
        Progress::new(Arc::new(ProgressState::new(0, 1)), token)
    }

    /// The id of the task this context belongs to (0 if [`detached`](Self::detached)).
    pub fn task_id(&self) -> u32 {
        self.state.task_id
    }

    /// Declares the phases the operation will run through, each with its work in
    /// bytes, so that the task's percentage moves through all of them (see the
    /// [module docs](self)).
    ///
    /// Call it before the first phase, with every long phase (those that will not run
    /// can be left out or given 0); list them in the order they run, for the reader.
    /// A phase listed twice gets the sum. Calling it again replaces the plan, for
    /// instance once a scan knows how much a move will have to do; the task's
    /// percentage never goes down because of it.
    ///
    /// ```
    /// use vhdkit_task::{CancelToken, Phase, Progress};
    ///
    /// let progress = Progress::detached(CancelToken::new());
    /// progress.plan_phases(&[(Phase::Scan, 100), (Phase::Move, 500), (Phase::Verify, 400)]);
    /// progress.set_phase(Phase::Scan, 1, 100);
    /// progress.block_done(0, 100);
    /// assert_eq!(progress.snapshot().task_percent, 10);
    /// progress.set_phase(Phase::Move, 5, 500);
    /// progress.add_blocks_done(2, 200);
    /// assert_eq!(progress.snapshot().task_percent, 30);
    /// ```
    pub fn plan_phases(&self, phases: &[(Phase, u64)]) {
        self.state.plan_phases(phases);
    }

    /// Starts a new phase: sets its totals (0 where unknown), resets the done counters
    /// to 0, and sends an event with `block_index: None`.
    ///
    /// Call it between phases, not while other threads are still counting the
    /// previous one. How the phase counts toward the task's percentage depends on the
    /// plan ([`plan_phases`](Self::plan_phases)); without one, give the bulk of the
    /// work one phase whose totals cover it, since the task's percentage is then the
    /// highest any phase reached.
    pub fn set_phase(&self, phase: Phase, blocks_total: u64, bytes_total: u64) {
        self.state.set_phase(phase, blocks_total, bytes_total);
        self.state.broadcast(None);
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
        self.state.blocks_done.fetch_add(blocks, Ordering::Relaxed);
        self.state.bytes_done.fetch_add(bytes, Ordering::Relaxed);
        self.state.broadcast(block_index);
    }

    /// The counters and percentages now.
    pub fn snapshot(&self) -> ProgressSnapshot {
        self.state.snapshot()
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
}

impl fmt::Debug for Progress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Progress")
            .field("task_id", &self.task_id())
            .field("progress", &self.snapshot())
            .field("cancelled", &self.is_cancelled())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn detached() -> Progress {
        Progress::detached(CancelToken::new())
    }

    #[test]
    fn progress_is_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Progress>();
    }

    #[test]
    fn phase_display_honours_width() {
        assert_eq!(format!("[{:>6}]", Phase::Copy), "[  copy]");
        assert_eq!(format!("[{:<6}]", Phase::Scan), "[scan  ]");
    }

    #[test]
    fn set_phase_resets_done_counters() {
        let progress = detached();
        progress.set_phase(Phase::Scan, 2, 0);
        progress.add_blocks_done(2, 0);
        progress.set_phase(Phase::Copy, 5, 0);
        let s = progress.snapshot();
        assert_eq!(
            (s.phase, s.phase_blocks_done, s.phase_blocks_total),
            (Phase::Copy, 0, 5)
        );
    }

    #[test]
    fn percent_of_full_fraction_is_100_and_of_zero_total_is_0() {
        assert_eq!(percent(1, 4), 25);
        assert_eq!(percent(4, 4), 100);
        assert_eq!(percent(9, 4), 100);
        assert_eq!(percent(u128::from(u64::MAX), u128::from(u64::MAX)), 100);
        assert_eq!(percent(3, 0), 0);
    }

    #[test]
    fn phase_percent_prefers_bytes_over_blocks() {
        let progress = detached();
        progress.set_phase(Phase::Copy, 2, 1000);
        progress.block_done(0, 100);
        assert_eq!(progress.snapshot().phase_percent, 10);
    }

    #[test]
    fn phase_percent_of_finished_phase_is_100_but_task_percent_99() {
        let progress = detached();
        progress.set_phase(Phase::Copy, 4, 0);
        progress.add_blocks_done(4, 0);
        let s = progress.snapshot();
        assert_eq!((s.phase_percent, s.task_percent), (100, 99));
    }

    #[test]
    fn task_percent_without_plan_is_highest_phase_percent() {
        let progress = detached();
        progress.set_phase(Phase::Scan, 10, 0);
        progress.add_blocks_done(6, 0);
        progress.set_phase(Phase::Move, 10, 0);
        progress.add_blocks_done(3, 0);
        assert_eq!(progress.snapshot().task_percent, 60);
    }

    #[test]
    fn task_percent_with_plan_weighs_each_phase_by_its_work() {
        let progress = detached();
        progress.plan_phases(&[(Phase::Scan, 100), (Phase::Move, 400), (Phase::Verify, 500)]);
        let mut seen = Vec::new();
        progress.set_phase(Phase::Scan, 10, 0);
        progress.add_blocks_done(10, 0);
        seen.push(progress.snapshot().task_percent);
        progress.set_phase(Phase::Move, 4, 400);
        progress.add_blocks_done(2, 200);
        seen.push(progress.snapshot().task_percent);
        progress.set_phase(Phase::Verify, 0, 500);
        progress.add_blocks_done(0, 250);
        seen.push(progress.snapshot().task_percent);
        progress.add_blocks_done(0, 250);
        seen.push(progress.snapshot().task_percent);
        assert_eq!(seen, [10, 30, 75, 99]);
    }

    #[test]
    fn task_percent_of_unplanned_phase_counts_phases_left_behind() {
        let progress = detached();
        progress.plan_phases(&[(Phase::Copy, 300), (Phase::Verify, 100)]);
        progress.set_phase(Phase::Copy, 3, 300);
        progress.add_blocks_done(1, 100);
        progress.set_phase(Phase::Flush, 0, 0);
        assert_eq!(progress.snapshot().task_percent, 75);
        progress.set_phase(Phase::Verify, 1, 100);
        assert_eq!(progress.snapshot().task_percent, 75);
    }

    #[test]
    fn task_percent_after_replan_to_more_work_holds_then_moves_on() {
        let progress = detached();
        progress.plan_phases(&[(Phase::Scan, 100), (Phase::Move, 100)]);
        progress.set_phase(Phase::Scan, 1, 100);
        progress.block_done(0, 100);
        let before = progress.snapshot().task_percent;
        progress.plan_phases(&[(Phase::Scan, 100), (Phase::Move, 900)]);
        let held = progress.snapshot().task_percent;
        progress.set_phase(Phase::Move, 9, 900);
        progress.add_blocks_done(7, 700);
        let later = progress.snapshot().task_percent;
        assert_eq!((before, held, later), (50, 50, 80));
    }

    #[test]
    fn task_percent_with_all_zero_plan_falls_back_to_phase_percent() {
        let progress = detached();
        progress.plan_phases(&[(Phase::Copy, 0)]);
        progress.set_phase(Phase::Copy, 4, 0);
        progress.add_blocks_done(1, 0);
        assert_eq!(progress.snapshot().task_percent, 25);
    }

    #[test]
    fn finish_on_success_sets_counters_to_totals_and_phase_finish() {
        let state = ProgressState::new(1, 1);
        state.set_phase(Phase::Copy, 10, 5120);
        state.finish(true);
        let s = state.snapshot();
        assert_eq!(s.phase, Phase::Finish);
        assert_eq!((s.phase_blocks_done, s.phase_bytes_done), (10, 5120));
    }

    #[test]
    fn finish_on_failure_keeps_task_percent() {
        let state = ProgressState::new(1, 1);
        state.plan_phases(&[(Phase::Copy, 100), (Phase::Verify, 100)]);
        state.set_phase(Phase::Copy, 10, 0);
        state.blocks_done.store(4, Ordering::Relaxed);
        state.finish(false);
        assert_eq!(state.running_percent(), 20);
    }

    #[test]
    fn detached_progress_counts_without_listener() {
        let progress = detached();
        progress.block_done(0, 10);
        assert_eq!(progress.task_id(), 0);
        assert_eq!(progress.snapshot().phase_bytes_done, 10);
        assert_eq!(progress.check_cancelled(), Ok(()));
    }
}
