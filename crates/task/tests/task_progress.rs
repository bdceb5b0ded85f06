//! Progress: percent completed (per phase and weighted across phases), events,
//! listeners that are slow or absent.

mod common;

use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use common::{gate, TestError};
use vhdkit_task::{Phase, ProgressEvent, Task, TaskBuilder, VMTaskResult};

const LONG: Duration = Duration::from_secs(30);

#[test]
fn percent_completed_while_running_never_decreases_and_stays_below_100() {
    let (gate, keeper) = gate();
    let task: Task<(), TestError> = Task::spawn("stepped", true, move |progress| {
        progress.set_phase(Phase::Scan, 10, 0);
        gate.pass();
        progress.add_blocks_done(5, 0);
        gate.pass();
        // A new phase resets the counters; the percentage must not follow them down.
        progress.set_phase(Phase::Copy, 4, 400);
        gate.pass();
        for block in 0..4 {
            progress.block_done(block, 100);
            gate.pass();
        }
        progress.set_phase(Phase::Flush, 0, 0);
        gate.pass();
        Ok(())
    });

    let mut seen = Vec::new();
    for _ in 0..8 {
        keeper.wait_arrived();
        seen.push(task.percent_completed());
        keeper.open();
    }
    assert!(task.wait_for_completion(Some(LONG)));

    assert_eq!(seen, [0, 50, 50, 50, 50, 75, 99, 99]);
    assert_eq!(task.percent_completed(), 100);
}

#[test]
fn percent_completed_prefers_bytes_over_blocks() {
    let (gate, keeper) = gate();
    let task: Task<(), TestError> = Task::spawn("bytes", true, move |progress| {
        progress.set_phase(Phase::Copy, 2, 1000);
        progress.block_done(0, 100);
        gate.pass();
        Ok(())
    });
    keeper.wait_arrived();

    assert_eq!(task.percent_completed(), 10);

    keeper.open();
    assert!(task.wait_for_completion(Some(LONG)));
}

#[test]
fn percent_completed_after_failure_stays_where_it_was() {
    let task: Task<(), TestError> = Task::spawn("fails halfway", true, |progress| {
        progress.set_phase(Phase::Copy, 10, 0);
        progress.add_blocks_done(4, 0);
        Err(TestError::BadArgument("block 4".into()))
    });
    assert!(task.wait_for_completion(Some(LONG)));

    assert_eq!(task.percent_completed(), 40);
    assert_eq!(task.percent_completed(), 40);
    assert_eq!(task.progress().phase_blocks_done, 4);
}

#[test]
fn percent_completed_after_success_without_totals_is_100() {
    let task: Task<(), TestError> = Task::spawn("no totals", true, |_| Ok(()));
    assert!(task.wait_for_completion(Some(LONG)));
    assert_eq!(task.percent_completed(), 100);
}

#[test]
fn progress_after_success_has_counters_at_totals() {
    let task: Task<(), TestError> = Task::spawn("under-reporting", true, |progress| {
        progress.set_phase(Phase::Copy, 10, 10 * 512);
        progress.add_blocks_done(7, 7 * 512);
        Ok(())
    });
    assert!(task.wait_for_completion(Some(LONG)));

    let snapshot = task.progress();
    assert_eq!(snapshot.phase, Phase::Finish);
    assert_eq!(
        (snapshot.phase_blocks_done, snapshot.phase_blocks_total),
        (10, 10)
    );
    assert_eq!(
        (snapshot.phase_bytes_done, snapshot.phase_bytes_total),
        (5120, 5120)
    );
}

#[test]
fn listener_that_never_reads_does_not_block_a_million_events() {
    let task: Task<u64, TestError> =
        TaskBuilder::new("flood")
            .event_capacity(64)
            .spawn(|progress| {
                progress.set_phase(Phase::Copy, 1_000_000, 0);
                for block in 0..1_000_000 {
                    progress.block_done(block, 0);
                }
                Ok(progress.snapshot().phase_blocks_done)
            });
    let _never_read = task.subscribe();

    assert!(task.wait_for_completion(Some(LONG)));
    assert_eq!(task.result(), Some(VMTaskResult::Success));
    assert_eq!(task.join().ok(), Some(1_000_000));
}

#[test]
fn listener_that_reads_after_completion_finds_final_event_last() {
    let (start, starter) = gate();
    let task: Task<(), TestError> =
        TaskBuilder::new("slow listener")
            .event_capacity(4)
            .spawn(move |progress| {
                start.pass();
                progress.set_phase(Phase::Copy, 1000, 1000 * 512);
                for block in 0..1000 {
                    progress.block_done(block, 512);
                }
                Ok(())
            });
    starter.wait_arrived();
    let events = task.subscribe();
    let first = events.recv().expect("at least one event");
    starter.open();
    assert!(task.wait_for_completion(Some(LONG)));

    let rest: Vec<ProgressEvent> = events.iter().collect();
    let last = rest.last().expect("final event queued");
    assert!(!first.is_final);
    assert_eq!(rest.len(), 4);
    assert_eq!(rest.iter().filter(|e| e.is_final).count(), 1);
    assert!(last.is_final);
    assert_eq!(last.phase, Phase::Finish);
    assert_eq!(last.result, Some(VMTaskResult::Success));
    assert_eq!(
        (last.phase_blocks_done, last.phase_blocks_total),
        (1000, 1000)
    );
    assert_eq!(last.phase_bytes_done, 1000 * 512);
    assert_eq!((last.phase_percent, last.task_percent), (100, 100));
}

#[test]
fn listener_reading_slowly_during_work_ends_with_final_event() {
    let task: Task<(), TestError> = TaskBuilder::new("concurrent listener")
        .event_capacity(8)
        .spawn(|progress| {
            progress.set_phase(Phase::Copy, 20_000, 0);
            for block in 0..20_000 {
                progress.block_done(block, 0);
            }
            Ok(())
        });
    let events = task.subscribe();
    let listener = thread::spawn(move || {
        let mut received = Vec::new();
        // Ends when the task drops its sender, right after the final event.
        for event in events.iter() {
            thread::yield_now();
            received.push(event);
        }
        received
    });

    let received = listener.join().expect("listener does not panic");
    let last = received.last().expect("final event delivered");
    assert!(task.is_complete());
    assert!(last.is_final);
    assert_eq!(received.iter().filter(|e| e.is_final).count(), 1);
    assert!(received
        .windows(2)
        .all(|w| w[0].phase != w[1].phase || w[0].phase_blocks_done <= w[1].phase_blocks_done));
}

#[test]
fn final_event_of_failed_task_carries_result_and_counters() {
    let task: Task<(), TestError> = Task::spawn("failing", true, |progress| {
        progress.set_phase(Phase::Verify, 10, 0);
        progress.add_blocks_done(3, 0);
        Err(TestError::BadArgument("x".into()))
    });
    let events = task.subscribe();
    assert!(task.wait_for_completion(Some(LONG)));

    let last = events.iter().last().expect("final event");
    assert!(last.is_final);
    assert_eq!(last.result, Some(VMTaskResult::IllegalValueError));
    assert_eq!((last.phase_blocks_done, last.phase_blocks_total), (3, 10));
    assert_eq!((last.phase_percent, last.task_percent), (30, 30));
}

#[test]
fn events_carry_task_id_phase_and_block_index() {
    let (start, starter) = gate();
    let (gate, keeper) = gate();
    let task: Task<(), TestError> = Task::spawn("events", true, move |progress| {
        start.pass();
        progress.set_phase(Phase::Move, 3, 0);
        progress.block_done(17, 0);
        gate.pass();
        Ok(())
    });
    starter.wait_arrived();
    let events = task.subscribe();
    starter.open();
    keeper.wait_arrived();

    let _snapshot = events.recv().expect("snapshot event");
    let phase_event = events.recv().expect("phase event");
    let block_event = events.recv().expect("block event");
    assert_eq!(phase_event.task_id, task.id());
    assert_eq!(phase_event.phase, Phase::Move);
    assert_eq!(phase_event.block_index, None);
    assert_eq!(block_event.block_index, Some(17));
    assert_eq!(
        (
            block_event.phase_blocks_done,
            block_event.phase_blocks_total
        ),
        (1, 3)
    );
    assert!(!block_event.is_final);

    keeper.open();
    assert!(task.wait_for_completion(Some(LONG)));
}

#[test]
fn progress_counted_from_many_threads_counts_every_block() {
    let task: Task<(), TestError> = Task::spawn("parallel", true, |progress| {
        progress.set_phase(Phase::Copy, 8 * 10_000, 8 * 10_000 * 4096);
        thread::scope(|scope| {
            for t in 0..8_u64 {
                scope.spawn(move || {
                    for i in 0..10_000 {
                        progress.block_done(t * 10_000 + i, 4096);
                    }
                });
            }
        });
        let snapshot = progress.snapshot();
        assert_eq!(snapshot.phase_blocks_done, 80_000);
        assert_eq!(snapshot.phase_bytes_done, 80_000 * 4096);
        Ok(())
    });
    assert!(task.wait_for_completion(Some(LONG)));
    assert_eq!(task.result(), Some(VMTaskResult::Success));
}

#[test]
fn subscribe_after_completion_yields_final_event_alone() {
    let (done_tx, done_rx) = mpsc::channel();
    let task: Task<(), TestError> = Task::spawn("early", true, move |progress| {
        progress.set_phase(Phase::Copy, 1, 0);
        progress.block_done(0, 0);
        let _ = done_tx.send(());
        Ok(())
    });
    done_rx.recv().expect("worker ran");
    assert!(task.wait_for_completion(Some(LONG)));

    let events: Vec<_> = task.subscribe().collect();
    assert_eq!(events.len(), 1);
    assert!(events[0].is_final);
    assert_eq!(events[0].result, Some(VMTaskResult::Success));
}

/// Runs a compact-like worker — scan 1 unit, move 5, verify 4 — stopping at a gate
/// after each quarter of each phase; returns `percent_completed` at every stop.
fn percents_through_planned_phases() -> Vec<u32> {
    const UNIT: u64 = 1 << 20;
    let (gate, keeper) = gate();
    let task: Task<(), TestError> = Task::spawn("planned", true, move |progress| {
        progress.plan_phases(&[
            (Phase::Scan, UNIT),
            (Phase::Move, 5 * UNIT),
            (Phase::Verify, 4 * UNIT),
        ]);
        for (phase, work) in [
            (Phase::Scan, UNIT),
            (Phase::Move, 5 * UNIT),
            (Phase::Verify, 4 * UNIT),
        ] {
            progress.set_phase(phase, 4, work);
            for block in 0..4 {
                progress.block_done(block, work / 4);
                gate.pass();
            }
        }
        Ok(())
    });
    let mut seen = Vec::new();
    for _ in 0..12 {
        keeper.wait_arrived();
        seen.push(task.percent_completed());
        keeper.open();
    }
    assert!(task.wait_for_completion(Some(LONG)));
    seen.push(task.percent_completed());
    seen
}

#[test]
fn percent_completed_with_plan_moves_through_every_phase_by_its_work() {
    let seen = percents_through_planned_phases();

    // scan 0..10, move 10..60, verify 60..100
    assert_eq!(seen, [2, 5, 7, 10, 22, 35, 47, 60, 70, 80, 90, 99, 100]);
}

#[test]
fn percent_completed_with_plan_is_not_99_while_most_work_remains() {
    let seen = percents_through_planned_phases();

    // After the scan, 90% of the work remains: the task must say so.
    assert_eq!(seen[3], 10);
    assert_eq!(seen.iter().filter(|&&p| p == 99).count(), 1);
}

#[test]
fn events_with_plan_carry_phase_percent_and_task_percent() {
    let (start, starter) = gate();
    let task: Task<(), TestError> = Task::spawn("planned events", true, move |progress| {
        progress.plan_phases(&[(Phase::Scan, 100), (Phase::Move, 400), (Phase::Verify, 500)]);
        start.pass();
        progress.set_phase(Phase::Scan, 1, 100);
        progress.block_done(0, 100);
        progress.set_phase(Phase::Move, 4, 400);
        progress.block_done(0, 100);
        progress.block_done(1, 100);
        Ok(())
    });
    starter.wait_arrived();
    let events = task.subscribe();
    starter.open();

    let moved: Vec<(Phase, Option<u64>, u32, u32)> = events
        .iter()
        .map(|e| (e.phase, e.block_index, e.phase_percent, e.task_percent))
        .collect();
    assert_eq!(
        moved,
        [
            (Phase::Prepare, None, 0, 0),
            (Phase::Scan, None, 0, 0),
            (Phase::Scan, Some(0), 100, 10),
            (Phase::Move, None, 0, 10),
            (Phase::Move, Some(0), 25, 20),
            (Phase::Move, Some(1), 50, 30),
            (Phase::Finish, None, 100, 100),
        ]
    );
}

#[test]
fn events_task_percent_never_decreases_and_is_100_only_in_final_event() {
    let task: Task<(), TestError> =
        TaskBuilder::new("monotonic")
            .event_capacity(100_000)
            .spawn(|progress| {
                progress.plan_phases(&[(Phase::Copy, 1000), (Phase::Verify, 1000)]);
                for phase in [Phase::Copy, Phase::Flush, Phase::Verify] {
                    progress.set_phase(phase, 1000, 0);
                    for block in 0..1000 {
                        progress.block_done(block, 0);
                    }
                }
                Ok(())
            });
    let events: Vec<ProgressEvent> = task.subscribe().collect();

    assert!(events
        .windows(2)
        .all(|w| w[0].task_percent <= w[1].task_percent));
    let (last, rest) = events.split_last().expect("events");
    assert!(rest.iter().all(|e| e.task_percent <= 99));
    assert_eq!(last.task_percent, 100);
}

#[test]
fn percent_completed_with_plan_after_failure_stays_where_the_work_was() {
    let task: Task<(), TestError> = Task::spawn("fails in move", true, |progress| {
        progress.plan_phases(&[(Phase::Scan, 100), (Phase::Move, 100)]);
        progress.set_phase(Phase::Scan, 1, 100);
        progress.block_done(0, 100);
        progress.set_phase(Phase::Move, 10, 100);
        progress.add_blocks_done(2, 20);
        Err(TestError::BadArgument("block 2".into()))
    });
    assert!(task.wait_for_completion(Some(LONG)));

    assert_eq!(task.percent_completed(), 60);
    assert_eq!(task.progress().task_percent, 60);
}
