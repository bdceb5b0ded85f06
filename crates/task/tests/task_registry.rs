//! The task registry: listing running tasks and cancelling them all at shutdown.

mod common;

use std::time::Duration;

use common::{gate, TestError};
use vhdkit_task::{Phase, Task, TaskBuilder, TaskRegistry, VMTaskResult};

const LONG: Duration = Duration::from_secs(30);

/// A task in `registry` that counts 3 of 10 blocks, then waits at a gate (and
/// stops there if cancelled).
fn held_task(
    registry: &TaskRegistry,
    description: &str,
    cancelable: bool,
) -> (Task<(), TestError>, common::GateKeeper) {
    let (gate, keeper) = gate();
    let task = TaskBuilder::new(description)
        .cancelable(cancelable)
        .registry(registry)
        .spawn(move |progress| {
            progress.set_phase(Phase::Copy, 10, 0);
            progress.add_blocks_done(3, 0);
            gate.pass();
            progress.check_cancelled()?;
            Ok(())
        });
    keeper.wait_arrived();
    (task, keeper)
}

#[test]
fn registry_running_lists_each_running_task_with_its_members() {
    let registry = TaskRegistry::new();
    let (first, first_keeper) = held_task(&registry, "Compacting a.vhd", true);
    let (second, second_keeper) = held_task(&registry, "Merging b.vhd", false);

    let listed: Vec<(u32, String, u32, bool)> = registry
        .running()
        .iter()
        .map(|t| {
            (
                t.id(),
                t.description().to_owned(),
                t.percent_completed(),
                t.is_cancelable(),
            )
        })
        .collect();

    assert_eq!(
        listed,
        [
            (first.id(), "Compacting a.vhd".to_owned(), 30, true),
            (second.id(), "Merging b.vhd".to_owned(), 30, false),
        ]
    );
    first_keeper.open();
    second_keeper.open();
    assert!(registry.wait_all(Some(LONG)));
}

#[test]
fn registry_after_task_completes_no_longer_lists_it() {
    let registry = TaskRegistry::new();
    let (done, done_keeper) = held_task(&registry, "done", true);
    let (running, running_keeper) = held_task(&registry, "running", true);
    done_keeper.open();
    assert!(done.wait_for_completion(Some(LONG)));

    let ids: Vec<u32> = registry.running().iter().map(|t| t.id()).collect();

    assert_eq!(ids, [running.id()]);
    assert_eq!(registry.len(), 1);
    running_keeper.open();
    assert!(running.wait_for_completion(Some(LONG)));
    assert!(registry.is_empty());
}

#[test]
fn registry_cancel_all_cancels_every_cancelable_task_and_spares_the_others() {
    let registry = TaskRegistry::new();
    let (a, a_keeper) = held_task(&registry, "a", true);
    let (b, b_keeper) = held_task(&registry, "b", true);
    let (fixed, fixed_keeper) = held_task(&registry, "not cancelable", false);

    let asked = registry.cancel_all();
    for keeper in [&a_keeper, &b_keeper, &fixed_keeper] {
        keeper.open();
    }

    assert_eq!(asked, 2);
    assert!(registry.wait_all(Some(LONG)));
    assert_eq!(a.result(), Some(VMTaskResult::Cancelled));
    assert_eq!(b.result(), Some(VMTaskResult::Cancelled));
    assert_eq!(fixed.result(), Some(VMTaskResult::Success));
    assert!(registry.is_empty());
}

#[test]
fn registry_wait_all_with_short_timeout_on_held_task_is_false() {
    let registry = TaskRegistry::new();
    let (task, keeper) = held_task(&registry, "held", true);

    assert!(!registry.wait_all(Some(Duration::from_millis(20))));

    keeper.open();
    assert!(registry.wait_all(Some(LONG)));
    assert!(task.is_complete());
}

#[test]
fn task_without_registry_is_listed_by_global_running_until_it_completes() {
    let (gate, keeper) = gate();
    let task: Task<(), TestError> = Task::spawn("global", true, move |_| {
        gate.pass();
        Ok(())
    });
    keeper.wait_arrived();

    let listed = vhdkit_task::running().iter().any(|t| t.id() == task.id());
    keeper.open();
    assert!(task.wait_for_completion(Some(LONG)));
    let listed_after = vhdkit_task::running().iter().any(|t| t.id() == task.id());

    assert!(listed);
    assert!(!listed_after);
}

#[test]
fn task_in_own_registry_is_not_in_global_registry() {
    let registry = TaskRegistry::new();
    let (task, keeper) = held_task(&registry, "private", true);

    let in_global = TaskRegistry::global()
        .running()
        .iter()
        .any(|t| t.id() == task.id());

    assert!(!in_global);
    keeper.open();
    assert!(task.wait_for_completion(Some(LONG)));
}
