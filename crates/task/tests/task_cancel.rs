//! Cancellation: acceptance, idempotence, races with completion, cooperative stopping.

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::Duration;

use common::{gate, TestError};
use vhdkit_task::{Cancelled, HResult, Phase, Task, TaskFailure, VMTaskResult};

const LONG: Duration = Duration::from_secs(30);

#[test]
fn cancel_on_non_cancelable_task_is_e_fail_and_work_continues() {
    let (gate, keeper) = gate();
    let task: Task<u32, TestError> = Task::spawn("not cancelable", false, move |progress| {
        gate.pass();
        progress.check_cancelled()?;
        Ok(1)
    });
    keeper.wait_arrived();

    assert!(!task.is_cancelable());
    assert_eq!(task.cancel(), Err(HResult::E_FAIL));
    assert!(!task.is_cancel_requested());

    keeper.open();
    assert!(task.wait_for_completion(Some(LONG)));
    assert_eq!(task.result(), Some(VMTaskResult::Success));
    assert_eq!(task.join().ok(), Some(1));
}

#[test]
fn cancel_twice_on_running_task_is_ok_and_task_ends_cancelled() {
    let (gate, keeper) = gate();
    let task: Task<(), TestError> = Task::spawn("cancelable", true, move |progress| {
        gate.pass();
        progress.check_cancelled()?;
        Ok(())
    });
    keeper.wait_arrived();

    assert!(task.is_cancelable());
    assert_eq!(task.cancel(), Ok(()));
    assert_eq!(task.cancel(), Ok(()));
    assert!(task.is_cancel_requested());
    keeper.open();

    assert!(task.wait_for_completion(Some(LONG)));
    assert_eq!(task.result(), Some(VMTaskResult::Cancelled));
    assert_eq!(task.error(), HResult::E_ABORT);
    assert_eq!(task.error_description(), "operation cancelled");
    assert!(task.percent_completed() < 100);
    assert!(matches!(task.join(), Err(TaskFailure::Cancelled)));
}

#[test]
fn cancel_after_completion_has_no_effect() {
    let task: Task<u8, TestError> = Task::spawn("done", true, |_| Ok(9));
    assert!(task.wait_for_completion(Some(LONG)));

    assert_eq!(task.cancel(), Ok(()));
    assert_eq!(task.cancel(), Ok(()));

    assert!(!task.is_cancel_requested());
    assert_eq!(task.result(), Some(VMTaskResult::Success));
    assert_eq!(task.error(), HResult::S_OK);
    assert_eq!(task.percent_completed(), 100);
    assert_eq!(task.join().ok(), Some(9));
}

#[test]
fn cancel_racing_completion_gives_success_or_cancelled_consistently() {
    for round in 0..200 {
        let task: Task<(), TestError> = Task::spawn("race", true, |progress| {
            progress.set_phase(Phase::Copy, 4, 0);
            for block in 0..4 {
                progress.check_cancelled()?;
                progress.block_done(block, 0);
            }
            Ok(())
        });
        let canceller = {
            let task = task.clone();
            thread::spawn(move || task.cancel())
        };

        assert!(task.wait_for_completion(Some(LONG)), "round {round}");
        assert_eq!(canceller.join().expect("canceller does not panic"), Ok(()));
        match task.result() {
            Some(VMTaskResult::Success) => {
                assert_eq!(task.error(), HResult::S_OK, "round {round}");
                assert_eq!(task.error_description(), "");
                assert_eq!(task.percent_completed(), 100);
                assert!(task.join().is_ok());
            }
            Some(VMTaskResult::Cancelled) => {
                assert_eq!(task.error(), HResult::E_ABORT, "round {round}");
                assert_eq!(task.error_description(), "operation cancelled");
                assert!(task.percent_completed() < 100);
                assert!(matches!(task.join(), Err(TaskFailure::Cancelled)));
            }
            other => panic!("round {round}: unexpected result {other:?}"),
        }
    }
}

#[test]
fn cancel_during_chunked_work_stops_within_one_chunk() {
    let processed = Arc::new(AtomicU64::new(0));
    let (reached_tx, reached_rx) = mpsc::channel();
    let task: Task<u64, TestError> = {
        let processed = Arc::clone(&processed);
        Task::spawn("chunked", true, move |progress| {
            // Bounded so that a broken cancel fails the test instead of hanging it.
            for chunk in 0..50_000_000_u64 {
                progress.check_cancelled()?;
                std::hint::black_box(chunk.wrapping_mul(31));
                processed.fetch_add(1, Ordering::SeqCst);
                if chunk == 10 {
                    let _ = reached_tx.send(());
                }
            }
            Ok(processed.load(Ordering::SeqCst))
        })
    };
    reached_rx.recv().expect("worker reaches chunk 10");

    let handle = task.handle();
    task.cancel().expect("task is cancelable");
    let at_cancel = processed.load(Ordering::SeqCst);
    let outcome = task.join();

    let after_cancel = processed.load(Ordering::SeqCst) - at_cancel;
    assert!(matches!(outcome, Err(TaskFailure::Cancelled)));
    assert!(after_cancel <= 1, "{after_cancel} chunks ran after cancel");
    assert_eq!(handle.result(), Some(VMTaskResult::Cancelled));
}

#[test]
fn cancel_stops_every_thread_of_a_parallel_worker() {
    let (gate, keeper) = gate();
    let task: Task<(), TestError> = Task::spawn("parallel", true, move |progress| {
        progress.set_phase(Phase::Copy, 8 * 1_000_000, 0);
        thread::scope(|scope| {
            let workers: Vec<_> = (0..8_u64)
                .map(|t| {
                    scope.spawn(move || -> Result<(), TestError> {
                        for i in 0..1_000_000 {
                            progress.check_cancelled()?;
                            progress.block_done(t * 1_000_000 + i, 0);
                        }
                        Ok(())
                    })
                })
                .collect();
            gate.pass();
            workers
                .into_iter()
                .try_for_each(|w| w.join().expect("chunk worker does not panic"))
        })
    });
    keeper.wait_arrived();

    task.cancel().expect("task is cancelable");
    keeper.open();

    assert!(task.wait_for_completion(Some(LONG)));
    assert_eq!(task.result(), Some(VMTaskResult::Cancelled));
    assert!(task.progress().phase_blocks_done < 8 * 1_000_000);
}

#[test]
fn worker_returning_cancelled_without_cancel_request_ends_cancelled() {
    let task: Task<(), Cancelled> = Task::spawn("self-cancel", true, |_| Err(Cancelled));
    assert!(task.wait_for_completion(Some(LONG)));
    assert!(!task.is_cancel_requested());
    assert_eq!(task.result(), Some(VMTaskResult::Cancelled));
    assert_eq!(task.error(), HResult::E_ABORT);
}

#[test]
fn cancel_token_from_progress_is_cancelled_by_task_cancel() {
    let (token_tx, token_rx) = mpsc::channel();
    let (gate, keeper) = gate();
    let task: Task<(), TestError> = Task::spawn("token", true, move |progress| {
        let _ = token_tx.send(progress.cancel_token().clone());
        gate.pass();
        Ok(())
    });
    let token = token_rx.recv().expect("worker sends its token");
    keeper.wait_arrived();

    assert!(!token.is_cancelled());
    task.cancel().expect("task is cancelable");
    assert!(token.is_cancelled());

    keeper.open();
    assert!(task.wait_for_completion(Some(LONG)));
    // The worker never checked the token, so it finished its work.
    assert_eq!(task.result(), Some(VMTaskResult::Success));
}
