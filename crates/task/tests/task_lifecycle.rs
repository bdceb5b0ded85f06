//! Task lifecycle: ids, description, waiting, outcomes, panics, joins.

mod common;

use std::collections::HashSet;
use std::io;
use std::thread;
use std::time::Duration;

use common::{gate, TestError};
use vhdkit_task::{HResult, Task, TaskBuilder, TaskFailure, TaskHandle, VMTaskResult};

const SHORT: Duration = Duration::from_millis(20);
const LONG: Duration = Duration::from_secs(30);

fn quick_task(value: u32) -> Task<u32, TestError> {
    Task::spawn("quick", true, move |_| Ok(value))
}

#[test]
fn task_ids_spawned_from_many_threads_are_unique_and_increasing_per_thread() {
    let per_thread: Vec<Vec<u32>> = thread::scope(|scope| {
        let spawners: Vec<_> = (0..8)
            .map(|_| scope.spawn(|| (0..25).map(|i| quick_task(i).id()).collect::<Vec<_>>()))
            .collect();
        spawners
            .into_iter()
            .map(|h| h.join().expect("spawner does not panic"))
            .collect()
    });

    let all: HashSet<u32> = per_thread.iter().flatten().copied().collect();
    assert_eq!(all.len(), 8 * 25);
    assert!(!all.contains(&0));
    for ids in &per_thread {
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids {ids:?}");
    }
}

#[test]
fn task_id_of_later_spawn_is_greater() {
    let first = quick_task(1);
    let second = quick_task(2);
    assert!(first.id() >= 1);
    assert!(second.id() > first.id());
}

#[test]
fn task_description_is_as_given() {
    let task = quick_task(0);
    assert_eq!(task.description(), "quick");
    let task: Task<(), TestError> =
        Task::spawn(String::from("Compacting /tmp/disk.vhd"), true, |_| Ok(()));
    assert_eq!(task.description(), "Compacting /tmp/disk.vhd");
}

#[test]
fn task_while_running_reports_no_result_s_ok_and_empty_description() {
    let (gate, keeper) = gate();
    let task: Task<(), TestError> = Task::spawn("held", true, move |_| {
        gate.pass();
        Ok(())
    });
    keeper.wait_arrived();

    assert!(!task.is_complete());
    assert_eq!(task.result(), None);
    assert_eq!(task.error(), HResult::S_OK);
    assert_eq!(task.error_description(), "");
    let task = task.try_join().expect_err("a running task is given back");

    keeper.open();
    assert!(task.wait_for_completion(Some(LONG)));
}

#[test]
fn wait_for_completion_with_short_timeout_while_running_returns_false() {
    let (gate, keeper) = gate();
    let task: Task<(), TestError> = Task::spawn("held", true, move |_| {
        gate.pass();
        Ok(())
    });
    keeper.wait_arrived();

    assert!(!task.wait_for_completion(Some(SHORT)));
    assert!(!task.wait_for_completion(Some(Duration::ZERO)));
    assert!(!task.is_complete());

    keeper.open();
    assert!(task.wait_for_completion(Some(LONG)));
    assert!(task.is_complete());
}

#[test]
fn wait_for_completion_without_timeout_returns_true_once_complete() {
    let (gate, keeper) = gate();
    let task: Task<(), TestError> = Task::spawn("held", true, move |_| {
        gate.pass();
        Ok(())
    });
    let waiter = {
        let task = task.clone();
        thread::spawn(move || task.wait_for_completion(None))
    };
    keeper.wait_arrived();
    keeper.open();

    assert!(waiter.join().expect("waiter does not panic"));
    assert!(task.is_complete());
    assert_eq!(task.result(), Some(VMTaskResult::Success));
}

#[test]
fn wait_for_completion_on_complete_task_returns_true_at_once() {
    let task = quick_task(3);
    assert!(task.wait_for_completion(None));
    assert!(task.wait_for_completion(Some(Duration::ZERO)));
    assert!(task.wait_for_completion(Some(Duration::MAX)));
}

#[test]
fn task_success_reports_success_s_ok_and_value() {
    let task = quick_task(42);
    assert!(task.wait_for_completion(Some(LONG)));
    assert_eq!(task.result(), Some(VMTaskResult::Success));
    assert_eq!(task.error(), HResult::S_OK);
    assert_eq!(task.error_description(), "");
    assert_eq!(task.join().ok(), Some(42));
}

#[test]
fn task_worker_error_reports_its_hresult_result_and_source_chain() {
    let task: Task<(), TestError> = Task::spawn("failing", true, |_| {
        Err(TestError::Write {
            block: 9,
            source: io::Error::other("no space left on device"),
        })
    });
    assert!(task.wait_for_completion(Some(LONG)));

    assert_eq!(task.result(), Some(VMTaskResult::DiskRelatedError));
    assert_eq!(task.error(), HResult::E_DISK_FULL);
    assert_eq!(
        task.error_description(),
        "writing block 9: no space left on device"
    );
    match task.join() {
        Err(failure @ TaskFailure::Failed(TestError::Write { block: 9, .. })) => {
            assert_eq!(failure.hresult(), HResult::E_DISK_FULL);
            assert_eq!(failure.task_result(), VMTaskResult::DiskRelatedError);
        }
        other => panic!("unexpected join result {other:?}"),
    }
}

#[test]
fn task_worker_bad_argument_is_illegal_value_error() {
    let task: Task<(), TestError> = Task::spawn("bad", true, |_| {
        Err(TestError::BadArgument("size 0".into()))
    });
    assert!(task.wait_for_completion(Some(LONG)));
    assert_eq!(task.result(), Some(VMTaskResult::IllegalValueError));
    assert_eq!(task.error(), HResult::E_INVALIDARG);
    assert_eq!(task.error_description(), "bad argument: size 0");
}

#[test]
fn task_worker_error_claiming_success_is_reported_as_failure() {
    let task: Task<(), TestError> = Task::spawn("confused", true, |_| Err(TestError::Confused));
    assert!(task.wait_for_completion(Some(LONG)));
    assert_eq!(task.result(), Some(VMTaskResult::UnexpectedError));
    assert_eq!(task.error(), HResult::E_FAIL);
    assert!(task.percent_completed() < 100);
}

#[test]
fn task_worker_io_error_uses_io_error_mapping() {
    let task: Task<(), io::Error> = Task::spawn("io", true, |_| {
        Err(io::Error::new(io::ErrorKind::NotFound, "parent.vhd"))
    });
    assert!(task.wait_for_completion(Some(LONG)));
    assert_eq!(task.result(), Some(VMTaskResult::DiskRelatedError));
    assert_eq!(task.error(), HResult::E_FILE_NOT_FOUND);
    assert_eq!(task.error_description(), "parent.vhd");
}

#[test]
fn task_panicking_worker_is_thread_crash_and_wakes_waiters() {
    let (gate, keeper) = gate();
    let task: Task<(), TestError> = Task::spawn("panicking", true, move |_| {
        gate.pass();
        panic!("block {} out of range", 77);
    });
    let waiters: Vec<_> = (0..3)
        .map(|_| {
            let task = task.clone();
            thread::spawn(move || task.wait_for_completion(None))
        })
        .collect();
    keeper.wait_arrived();
    keeper.open();

    for waiter in waiters {
        assert!(waiter.join().expect("waiter does not panic"));
    }
    assert_eq!(task.result(), Some(VMTaskResult::ThreadCrashError));
    assert_eq!(task.error(), HResult::E_FAIL);
    assert_eq!(
        task.error_description(),
        "worker thread panicked: block 77 out of range"
    );
    assert!(task.percent_completed() < 100);
    match task.join() {
        Err(TaskFailure::Panicked(message)) => assert_eq!(message, "block 77 out of range"),
        other => panic!("unexpected join result {other:?}"),
    }
}

#[test]
fn task_panicking_worker_with_static_str_payload_keeps_message() {
    let task: Task<(), TestError> = Task::spawn("panicking", true, |_| panic!("plain message"));
    assert!(task.wait_for_completion(Some(LONG)));
    assert!(task.error_description().contains("plain message"));
}

#[test]
fn task_handle_after_join_still_reports_outcome() {
    let task = quick_task(5);
    let handle = task.handle();
    assert_eq!(task.join().ok(), Some(5));

    assert!(handle.is_complete());
    assert_eq!(handle.result(), Some(VMTaskResult::Success));
    assert_eq!(handle.error(), HResult::S_OK);
    assert_eq!(handle.percent_completed(), 100);
}

#[test]
fn task_clone_is_a_handle_with_the_same_id() {
    let task = quick_task(5);
    let cloned: TaskHandle = task.clone();

    assert_eq!(cloned.id(), task.id());
    assert_eq!(task.join().ok(), Some(5));
    assert!(cloned.wait_for_completion(Some(LONG)));
}

#[test]
fn try_join_after_completion_gives_value() {
    let task = quick_task(6);
    assert!(task.wait_for_completion(Some(LONG)));

    let value = task.try_join().expect("a complete task gives its value");

    assert_eq!(value.ok(), Some(6));
}

#[test]
fn task_many_concurrent_tasks_all_complete_with_own_outcome() {
    let tasks: Vec<(u64, Task<u64, TestError>)> = (0..64_u64)
        .map(|i| {
            let task = TaskBuilder::new(format!("task {i}")).spawn(move |progress| {
                progress.set_phase(vhdkit_task::Phase::Copy, 100, 0);
                let mut sum = 0;
                for block in 0..100 {
                    progress.check_cancelled()?;
                    sum += block * i;
                    progress.block_done(block, 0);
                }
                if i % 8 == 7 {
                    return Err(TestError::BadArgument(format!("task {i}")));
                }
                Ok(sum)
            });
            (i, task)
        })
        .collect();

    for (i, task) in tasks {
        assert!(task.wait_for_completion(Some(LONG)), "task {i}");
        assert_eq!(task.description(), format!("task {i}"));
        if i % 8 == 7 {
            assert_eq!(task.result(), Some(VMTaskResult::IllegalValueError));
            assert_eq!(task.error_description(), format!("bad argument: task {i}"));
        } else {
            assert_eq!(task.percent_completed(), 100);
            assert_eq!(task.join().ok(), Some(4950 * i));
        }
    }
}

#[test]
fn elapsed_after_completion_is_frozen() {
    let task = quick_task(0);
    assert!(task.wait_for_completion(Some(LONG)));
    let first = task.elapsed();
    thread::sleep(Duration::from_millis(2));
    assert_eq!(task.elapsed(), first);
}

#[test]
fn task_builder_zero_capacity_still_delivers_final_event() {
    let task: Task<(), TestError> = TaskBuilder::new("tiny")
        .event_capacity(0)
        .spawn(|progress| {
            for block in 0..10 {
                progress.block_done(block, 1);
            }
            Ok(())
        });
    let events = task.subscribe();
    assert!(task.wait_for_completion(Some(LONG)));
    let received: Vec<_> = events.try_iter().collect();
    assert_eq!(received.len(), 1);
    assert!(received[0].is_final);
}
