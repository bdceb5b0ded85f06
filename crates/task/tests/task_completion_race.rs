//! Completion ordering under load: hundreds of tasks, each watched by concurrent
//! pollers and listeners. Whoever sees 100 % or the end of an event stream must find
//! the task complete, its result stored (and `Success` with 100 %).
//!
//! Each test prints how many times it saw the moment it checks, so a run shows the
//! checks were really exercised (`cargo test -- --nocapture`).

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::Duration;

use common::TestError;
use vhdkit_task::{Phase, ProgressEvent, Task, TaskBuilder, TaskHandle, VMTaskResult};

const TASKS: u64 = 300;
const BATCH: u64 = 20;
const LONG: Duration = Duration::from_secs(60);

/// A short task: a planned copy of 32 blocks, yielding between blocks so that the
/// watchers run while it works; every tenth task fails instead of succeeding.
fn short_task(i: u64) -> Task<u64, TestError> {
    TaskBuilder::new(format!("race {i}"))
        .event_capacity(4)
        .spawn(move |progress| {
            progress.plan_phases(&[(Phase::Copy, 32 * 512), (Phase::Verify, 512)]);
            progress.set_phase(Phase::Copy, 32, 32 * 512);
            for block in 0..32 {
                progress.block_done(block, 512);
                thread::yield_now();
            }
            progress.set_phase(Phase::Verify, 1, 512);
            progress.block_done(0, 512);
            if i % 10 == 9 {
                return Err(TestError::BadArgument(format!("task {i}")));
            }
            Ok(i)
        })
}

/// What the watchers saw.
#[derive(Default)]
struct Tally {
    /// Times a watcher saw the moment it checks (100 %, or a stream's end).
    observed: AtomicU64,
    /// Times the task was not complete, or had no (or the wrong) result, then.
    violations: AtomicU64,
}

impl Tally {
    fn check(&self, ok: bool) {
        self.observed.fetch_add(1, Ordering::Relaxed);
        if !ok {
            self.violations.fetch_add(1, Ordering::Relaxed);
        }
    }
}

#[test]
fn percent_completed_100_seen_by_concurrent_pollers_implies_complete_success() {
    let tally = Tally::default();
    let percent_went_down = AtomicU64::new(0);
    // Times a poller's reading before was below 100: it watched the task finish.
    let seen_reaching_100 = AtomicU64::new(0);

    for batch in 0..TASKS / BATCH {
        let tasks: Vec<Task<u64, TestError>> =
            (0..BATCH).map(|i| short_task(batch * BATCH + i)).collect();
        let handles: Vec<TaskHandle> = tasks.iter().map(|t| t.handle()).collect();
        let all_done = AtomicBool::new(false);
        thread::scope(|scope| {
            for _ in 0..4 {
                scope.spawn(|| {
                    let mut last = vec![0_u32; handles.len()];
                    while !all_done.load(Ordering::Acquire) {
                        for (task, last) in handles.iter().zip(&mut last) {
                            let percent = task.percent_completed();
                            if percent < *last {
                                percent_went_down.fetch_add(1, Ordering::Relaxed);
                            }
                            if percent == 100 && *last < 100 {
                                seen_reaching_100.fetch_add(1, Ordering::Relaxed);
                            }
                            *last = percent;
                            if percent == 100 {
                                tally.check(
                                    task.is_complete()
                                        && task.result() == Some(VMTaskResult::Success),
                                );
                            }
                        }
                    }
                });
            }
            for task in &handles {
                assert!(task.wait_for_completion(Some(LONG)));
            }
            all_done.store(true, Ordering::Release);
        });
    }

    let observed = tally.observed.load(Ordering::Relaxed);
    let violations = tally.violations.load(Ordering::Relaxed);
    let reaching = seen_reaching_100.load(Ordering::Relaxed);
    println!(
        "{TASKS} tasks, 4 pollers: 100% seen {observed} times ({reaching} as the task \
         reached it), {violations} violations"
    );
    assert!(reaching > 0, "the pollers never watched a task reach 100%");
    assert_eq!(violations, 0, "100% seen before the outcome was stored");
    assert_eq!(percent_went_down.load(Ordering::Relaxed), 0);
}

#[test]
fn event_stream_end_seen_by_concurrent_listeners_implies_complete_with_result() {
    let tally = Tally::default();
    let ended_while_waiting = AtomicU64::new(0);

    for batch in 0..TASKS / BATCH {
        let tasks: Vec<Task<u64, TestError>> =
            (0..BATCH).map(|i| short_task(batch * BATCH + i)).collect();
        thread::scope(|scope| {
            for task in &tasks {
                for _ in 0..3 {
                    let events = task.subscribe();
                    let task = task.handle();
                    let tally = &tally;
                    let ended_while_waiting = &ended_while_waiting;
                    scope.spawn(move || {
                        let mut last: Option<ProgressEvent> = None;
                        let mut waited = false;
                        loop {
                            // Blocks while the task works: the stream ends under us.
                            waited |= !task.is_complete();
                            match events.recv() {
                                Some(event) => last = Some(event),
                                None => break,
                            }
                        }
                        if waited {
                            ended_while_waiting.fetch_add(1, Ordering::Relaxed);
                        }
                        let result = task.result();
                        let final_event = last.filter(|e| e.is_final);
                        tally.check(
                            task.is_complete()
                                && result.is_some()
                                && final_event.is_some_and(|e| e.result == result),
                        );
                    });
                }
            }
        });
    }

    let observed = tally.observed.load(Ordering::Relaxed);
    let violations = tally.violations.load(Ordering::Relaxed);
    let racing = ended_while_waiting.load(Ordering::Relaxed);
    println!(
        "{TASKS} tasks, 3 listeners each: {observed} stream ends ({racing} while the task ran), \
         {violations} violations"
    );
    assert_eq!(observed, TASKS * 3);
    assert!(racing > 0, "no stream ended while its task was running");
    assert_eq!(
        violations, 0,
        "a stream ended before the outcome was stored"
    );
}

#[test]
fn join_and_handles_of_300_tasks_agree_on_every_outcome() {
    let tasks: Vec<(u64, Task<u64, TestError>)> = (0..TASKS).map(|i| (i, short_task(i))).collect();

    for (i, task) in tasks {
        let handle = task.handle();
        let joined = task.join();
        match joined {
            Ok(value) => {
                assert_eq!(value, i);
                assert_eq!(handle.result(), Some(VMTaskResult::Success));
                assert_eq!(handle.percent_completed(), 100);
            }
            Err(failure) => {
                assert_eq!(i % 10, 9, "task {i}: {failure}");
                assert_eq!(handle.result(), Some(VMTaskResult::IllegalValueError));
                assert!(handle.percent_completed() < 100);
            }
        }
    }
}
