//! Awaiting tasks without a runtime: `Task: IntoFuture` and `TaskHandle::completed`,
//! driven by the tiny executor in `common::block_on`.

mod common;

use std::future::{Future, IntoFuture};
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use common::{block_on, gate, CountingWaker, TestError};
use vhdkit_task::{Task, TaskFailure, VMTaskResult};

#[test]
fn task_awaited_gives_worker_value() {
    let task: Task<u32, TestError> = Task::spawn("value", true, |_| Ok(42));

    let value = block_on(async { task.await });

    assert_eq!(value.ok(), Some(42));
}

#[test]
fn task_awaited_after_worker_panic_gives_panicked() {
    let task: Task<u32, TestError> = Task::spawn("panics", true, |_| panic!("block 9"));

    let value = block_on(task.into_future());

    assert!(matches!(value, Err(TaskFailure::Panicked(message)) if message == "block 9"));
}

#[test]
fn join_future_while_running_is_pending_and_woken_once_at_completion() {
    let (gate, keeper) = gate();
    let task: Task<u32, TestError> = Task::spawn("held", true, move |_| {
        gate.pass();
        Ok(7)
    });
    keeper.wait_arrived();
    let counter = Arc::new(CountingWaker(AtomicUsize::new(0)));
    let waker = Waker::from(Arc::clone(&counter));
    let mut cx = Context::from_waker(&waker);
    let mut future = task.into_future();

    assert!(Pin::new(&mut future).poll(&mut cx).is_pending());
    assert!(Pin::new(&mut future).poll(&mut cx).is_pending());
    assert_eq!(counter.0.load(Ordering::SeqCst), 0);
    keeper.open();
    let deadline = Instant::now() + Duration::from_secs(30);
    while counter.0.load(Ordering::SeqCst) == 0 && Instant::now() < deadline {
        std::thread::yield_now();
    }

    assert_eq!(counter.0.load(Ordering::SeqCst), 1);
    match Pin::new(&mut future).poll(&mut cx) {
        Poll::Ready(value) => assert_eq!(value.ok(), Some(7)),
        Poll::Pending => panic!("woken but not ready"),
    }
}

#[test]
fn completed_future_of_cancelled_task_gives_cancelled() {
    let (gate, keeper) = gate();
    let task: Task<(), TestError> = Task::spawn("cancelled", true, move |progress| {
        gate.pass();
        progress.check_cancelled()?;
        Ok(())
    });
    keeper.wait_arrived();
    let handle = task.handle();
    task.cancel().expect("cancelable");
    keeper.open();

    let result = block_on(handle.completed());

    assert_eq!(result, VMTaskResult::Cancelled);
}

#[test]
fn tasks_awaited_in_turn_by_one_thread_give_every_value() {
    let tasks: Vec<Task<u64, TestError>> = (0..50_u64)
        .map(|i| Task::spawn(format!("task {i}"), true, move |_| Ok(i * i)))
        .collect();

    let sum = block_on(async {
        let mut sum = 0;
        for task in tasks {
            sum += task.await.expect("every task succeeds");
        }
        sum
    });

    assert_eq!(sum, (0..50_u64).map(|i| i * i).sum::<u64>());
}
