//! `vhdkit_task::cancel_all` at shutdown. Alone in its test binary: it cancels every
//! task of the process.

mod common;

use std::time::Duration;

use common::{gate, TestError};
use vhdkit_task::{Task, TaskRegistry, VMTaskResult};

#[test]
fn global_cancel_all_cancels_every_running_task_of_the_process() {
    let held: Vec<(Task<(), TestError>, common::GateKeeper)> = (0..3)
        .map(|i| {
            let (gate, keeper) = gate();
            let task = Task::spawn(format!("task {i}"), true, move |progress| {
                gate.pass();
                progress.check_cancelled()?;
                Ok(())
            });
            keeper.wait_arrived();
            (task, keeper)
        })
        .collect();
    assert_eq!(vhdkit_task::running().len(), 3);

    let asked = vhdkit_task::cancel_all();
    for (_, keeper) in &held {
        keeper.open();
    }

    assert_eq!(asked, 3);
    assert!(TaskRegistry::global().wait_all(Some(Duration::from_secs(30))));
    assert!(vhdkit_task::running().is_empty());
    for (task, _) in &held {
        assert_eq!(task.result(), Some(VMTaskResult::Cancelled));
    }
}
