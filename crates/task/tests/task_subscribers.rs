//! Subscribers: each its own queue, every event from the moment it subscribed, the
//! newest state when slow or late, and always the final event.

mod common;

use std::thread;
use std::time::Duration;

use common::{gate, TestError};
use vhdkit_task::{Phase, ProgressEvent, Task, TaskBuilder, VMTaskResult};

const LONG: Duration = Duration::from_secs(30);

/// A worker that waits at a gate (so the test can subscribe), then copies `blocks`
/// blocks of 512 bytes, one event each.
fn held_copy(capacity: usize, blocks: u64) -> (Task<(), TestError>, common::GateKeeper) {
    let (start, starter) = gate();
    let task = TaskBuilder::new("copy")
        .event_capacity(capacity)
        .spawn(move |progress| {
            start.pass();
            progress.set_phase(Phase::Copy, blocks, blocks * 512);
            for block in 0..blocks {
                progress.block_done(block, 512);
            }
            Ok(())
        });
    starter.wait_arrived();
    (task, starter)
}

#[test]
fn subscribers_fast_enough_each_receive_every_event() {
    let (task, starter) = held_copy(2000, 1000);
    let listeners: Vec<_> = (0..3)
        .map(|_| {
            let events = task.subscribe();
            thread::spawn(move || events.collect::<Vec<ProgressEvent>>())
        })
        .collect();
    starter.open();

    for listener in listeners {
        let received = listener.join().expect("listener does not panic");
        // snapshot + phase event + 1000 block events + final event
        assert_eq!(received.len(), 1003);
        assert!(received.iter().all(|e| e.lost == 0));
        let blocks: Vec<u64> = received.iter().filter_map(|e| e.block_index).collect();
        assert_eq!(blocks, (0..1000).collect::<Vec<u64>>());
    }
}

#[test]
fn subscribers_reading_concurrently_each_end_with_final_event() {
    let (task, starter) = held_copy(8, 20_000);
    let listeners: Vec<_> = (0..3)
        .map(|_| {
            let events = task.subscribe();
            let handle = task.handle();
            thread::spawn(move || {
                let received: Vec<ProgressEvent> = events.collect();
                (received, handle.is_complete())
            })
        })
        .collect();
    starter.open();

    for listener in listeners {
        let (received, complete_at_end) = listener.join().expect("listener does not panic");
        let (last, rest) = received.split_last().expect("events");
        assert!(complete_at_end);
        assert!(last.is_final);
        assert_eq!(last.result, Some(VMTaskResult::Success));
        assert!(rest.iter().all(|e| !e.is_final));
    }
}

#[test]
fn subscriber_that_reads_only_at_the_end_gets_newest_events_and_lost_count() {
    let (task, starter) = held_copy(4, 1000);
    let events = task.subscribe();
    starter.open();
    assert!(task.wait_for_completion(Some(LONG)));

    let received: Vec<ProgressEvent> = events.collect();

    let blocks: Vec<Option<u64>> = received.iter().map(|e| e.block_index).collect();
    assert_eq!(blocks, [Some(997), Some(998), Some(999), None]);
    assert!(received[3].is_final);
    // 1003 events were sent to it (snapshot, phase, 1000 blocks, final); 4 are here.
    let lost: u64 = received.iter().map(|e| e.lost).sum();
    assert_eq!(lost, 1003 - 4);
    assert_eq!(received[0].lost, lost);
}

#[test]
fn subscriber_joining_at_20_percent_first_sees_current_state() {
    let (gate, keeper) = gate();
    let task: Task<(), TestError> = Task::spawn("copy", true, move |progress| {
        progress.set_phase(Phase::Copy, 10, 1000);
        progress.block_done(0, 100);
        progress.block_done(1, 100);
        gate.pass();
        Ok(())
    });
    keeper.wait_arrived();

    let events = task.subscribe();
    let first = events.try_recv().expect("a snapshot is queued at once");

    assert_eq!(first.phase, Phase::Copy);
    assert_eq!((first.phase_blocks_done, first.phase_bytes_done), (2, 200));
    assert_eq!((first.phase_percent, first.task_percent), (20, 20));
    assert!(!first.is_final);
    keeper.open();
    assert!(task.wait_for_completion(Some(LONG)));
}

#[test]
fn subscriber_after_completion_gets_final_event_then_end() {
    let task: Task<(), TestError> = Task::spawn("done", true, |progress| {
        progress.set_phase(Phase::Copy, 3, 0);
        progress.add_blocks_done(3, 0);
        Ok(())
    });
    assert!(task.wait_for_completion(Some(LONG)));

    let events = task.subscribe();

    let only = events.recv().expect("the final event");
    assert!(only.is_final);
    assert_eq!(only.task_percent, 100);
    assert_eq!(events.recv(), None);
}

#[test]
fn subscriber_capacity_is_the_builders_unless_asked_otherwise() {
    let (task, starter) = held_copy(32, 1);

    let default = task.subscribe();
    let own = task.subscribe_with_capacity(3);
    let zero = task.subscribe_with_capacity(0);

    assert_eq!(
        (default.capacity(), own.capacity(), zero.capacity()),
        (32, 3, 1)
    );
    starter.open();
    assert!(task.wait_for_completion(Some(LONG)));
}

#[test]
fn subscriber_dropped_early_does_not_disturb_the_others() {
    let (task, starter) = held_copy(2000, 100);
    let dropped = task.subscribe();
    let kept = task.subscribe();
    drop(dropped);
    starter.open();

    let received: Vec<ProgressEvent> = kept.collect();

    assert_eq!(received.len(), 103);
    assert!(received.last().is_some_and(|e| e.is_final));
}

#[test]
fn subscription_recv_timeout_while_worker_is_held_times_out() {
    let (task, starter) = held_copy(8, 1);
    let events = task.subscribe();
    let _snapshot = events.recv().expect("snapshot");

    let waited = events.recv_timeout(Duration::from_millis(20));

    assert!(waited.is_err_and(|e| e.is_timeout()));
    starter.open();
    assert!(task.wait_for_completion(Some(LONG)));
}
