//! Subscribers: each with its own bounded queue of progress events.

use std::fmt;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender, TrySendError};

use crate::ProgressEvent;

/// The subscribers of one task.
///
/// Senders (the worker's threads) take the read lock and `try_send` to each queue;
/// subscribing, unsubscribing and completion take the write lock. Nobody blocks while
/// holding either (queue operations are all `try_`), so the engine waits at most for
/// a handful of queue operations, however slow a subscriber is.
pub(crate) struct Hub {
    /// Queue capacity of a subscription that does not ask for another.
    capacity: usize,
    /// How many queues there are: lets the worker skip making events nobody reads.
    active: AtomicUsize,
    inner: RwLock<HubInner>,
}

#[derive(Default)]
struct HubInner {
    queues: Vec<Queue>,
    next_id: u64,
    /// Set once the task is complete: the final event, for late subscribers.
    final_event: Option<ProgressEvent>,
}

/// The hub's side of one subscription.
struct Queue {
    id: u64,
    capacity: usize,
    tx: Sender<ProgressEvent>,
    /// A second receiver of the same queue, to drop its oldest event when it is full.
    oldest: Receiver<ProgressEvent>,
    lost: Arc<AtomicU64>,
}

impl Queue {
    /// Queues `event`; if the queue is full, drops its oldest event instead (counted
    /// as lost) so the subscriber always has the newest state. Never blocks.
    fn offer(&self, event: ProgressEvent) {
        match self.tx.try_send(event) {
            Ok(()) | Err(TrySendError::Disconnected(_)) => {}
            Err(TrySendError::Full(event)) => {
                if self.oldest.try_recv().is_ok() {
                    self.lost.fetch_add(1, Ordering::Relaxed);
                }
                // Another thread may have taken the freed slot: then this one is lost.
                if self.tx.try_send(event).is_err() {
                    self.lost.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }

    /// Queues the final event, dropping older events as needed. Called with the write
    /// lock held, so no other sender exists and a freed slot stays free: two attempts
    /// suffice, the bound only guards against looping should that ever change.
    fn deliver_final(&self, mut event: ProgressEvent) {
        for _ in 0..self.capacity.saturating_add(2) {
            match self.tx.try_send(event) {
                Ok(()) | Err(TrySendError::Disconnected(_)) => return,
                Err(TrySendError::Full(back)) => {
                    event = back;
                    if self.oldest.try_recv().is_ok() {
                        self.lost.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }
    }
}

impl Hub {
    /// A hub whose subscriptions hold `capacity` events unless they ask otherwise.
    pub(crate) fn new(capacity: usize) -> Hub {
        Hub {
            capacity: capacity.max(1),
            active: AtomicUsize::new(0),
            inner: RwLock::new(HubInner::default()),
        }
    }

    /// The default queue capacity of a subscription.
    pub(crate) fn capacity(&self) -> usize {
        self.capacity
    }

    // Every change under the lock is a push, a retain or a drain that cannot leave
    // the state half-updated, so a poisoned lock is recovered.
    fn read(&self) -> RwLockReadGuard<'_, HubInner> {
        self.inner.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, HubInner> {
        self.inner.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// A new subscription with a queue of `capacity` events (at least 1). Its first
    /// event is `snapshot()`, made under the lock so that no event can come between
    /// the snapshot and the subscription; after completion, the final event alone.
    pub(crate) fn subscribe(
        self: &Arc<Self>,
        capacity: usize,
        snapshot: impl FnOnce() -> ProgressEvent,
    ) -> Subscription {
        let capacity = capacity.max(1);
        let (tx, rx) = crossbeam_channel::bounded(capacity);
        let lost = Arc::new(AtomicU64::new(0));
        let mut inner = self.write();
        let (first, hub) = match inner.final_event {
            // The sender is dropped below: the stream ends after the final event.
            Some(final_event) => (final_event, None),
            None => {
                let id = inner.next_id;
                inner.next_id = inner.next_id.wrapping_add(1);
                inner.queues.push(Queue {
                    id,
                    capacity,
                    tx: tx.clone(),
                    oldest: rx.clone(),
                    lost: Arc::clone(&lost),
                });
                self.active.store(inner.queues.len(), Ordering::Relaxed);
                (snapshot(), Some((Arc::clone(self), id)))
            }
        };
        // A fresh queue has room for one event.
        let _ = tx.try_send(first);
        drop(tx);
        drop(inner);
        Subscription {
            rx,
            capacity,
            lost,
            last_percent: AtomicU32::new(0),
            hub,
        }
    }

    fn unsubscribe(&self, id: u64) {
        let mut inner = self.write();
        inner.queues.retain(|q| q.id != id);
        self.active.store(inner.queues.len(), Ordering::Relaxed);
    }

    /// Offers the event `make()` returns to every subscriber; makes none when there is
    /// no subscriber.
    pub(crate) fn broadcast(&self, make: impl FnOnce() -> ProgressEvent) {
        // A subscriber added just after this load is covered by its snapshot.
        if self.active.load(Ordering::Relaxed) == 0 {
            return;
        }
        let inner = self.read();
        if inner.queues.is_empty() {
            return;
        }
        // Made under the lock: a subscription's snapshot is never newer than the
        // events that follow it.
        let event = make();
        for queue in &inner.queues {
            queue.offer(event);
        }
    }

    /// Delivers `final_event` to every subscriber and ends their streams; later
    /// subscribers get `final_event` alone.
    pub(crate) fn close(&self, final_event: ProgressEvent) {
        let mut inner = self.write();
        inner.final_event = Some(final_event);
        for queue in inner.queues.drain(..) {
            queue.deliver_final(final_event);
            // Dropping `queue` drops the last sender: the stream ends after the event.
        }
        self.active.store(0, Ordering::Relaxed);
    }

    #[cfg(test)]
    fn subscribers(&self) -> usize {
        self.read().queues.len()
    }
}

/// A subscriber's stream of a task's [`ProgressEvent`]s, from
/// [`TaskHandle::subscribe`](crate::TaskHandle::subscribe).
///
/// Every subscription has its own bounded queue and receives every event the task
/// sends from the moment it subscribed:
///
/// - the first event is a snapshot of the task's state at that moment (a subscriber
///   joining at 20 % first sees 20 %, not the events of the start);
/// - when the queue is full, the oldest queued event is dropped to make room, so the
///   subscriber always gets the newest state; the number of events it lost is in the
///   [`lost`](ProgressEvent::lost) field of the next event it receives;
/// - the last event is always the final one ([`ProgressEvent::is_final`]), sent once
///   the task is complete; then the stream ends ([`recv`](Self::recv) returns `None`,
///   iteration stops). A subscription made after completion yields the final event
///   alone.
///
/// The engine never waits for a subscriber. Iterating blocks until the next event;
/// [`recv_timeout`](Self::recv_timeout) and [`try_recv`](Self::try_recv) bound the wait.
/// Dropping the subscription unsubscribes.
///
/// ```
/// use vhdkit_task::{Phase, Task};
///
/// let task: Task<(), std::io::Error> = Task::spawn("Copying", true, |progress| {
///     progress.set_phase(Phase::Copy, 8, 8 * 512);
///     for block in 0..8 {
///         progress.block_done(block, 512);
///     }
///     Ok(())
/// });
/// let listeners: Vec<_> = (0..3)
///     .map(|_| {
///         let events = task.subscribe();
///         std::thread::spawn(move || events.last().expect("the final event"))
///     })
///     .collect();
/// for listener in listeners {
///     let last = listener.join().expect("listener");
///     assert!(last.is_final);
///     assert_eq!(last.task_percent, 100);
/// }
/// assert!(task.is_complete()); // the stream ended, so the task is complete
/// ```
pub struct Subscription {
    rx: Receiver<ProgressEvent>,
    capacity: usize,
    lost: Arc<AtomicU64>,
    /// The highest task percentage handed out, so it never goes down even when two
    /// worker threads' events arrive out of order.
    last_percent: AtomicU32,
    /// The hub and the queue's id, to unsubscribe on drop; `None` once complete.
    hub: Option<(Arc<Hub>, u64)>,
}

impl Subscription {
    fn deliver(&self, mut event: ProgressEvent) -> ProgressEvent {
        event.lost = self.lost.swap(0, Ordering::Relaxed);
        let before = self
            .last_percent
            .fetch_max(event.task_percent, Ordering::Relaxed);
        event.task_percent = event.task_percent.max(before);
        event
    }

    /// Waits for the next event; `None` once the stream has ended (after the final
    /// event).
    pub fn recv(&self) -> Option<ProgressEvent> {
        self.rx.recv().ok().map(|event| self.deliver(event))
    }

    /// Waits at most `timeout` for the next event.
    pub fn recv_timeout(&self, timeout: Duration) -> Result<ProgressEvent, RecvTimeoutError> {
        match self.rx.recv_timeout(timeout) {
            Ok(event) => Ok(self.deliver(event)),
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => Err(RecvTimeoutError::Timeout),
            Err(crossbeam_channel::RecvTimeoutError::Disconnected) => Err(RecvTimeoutError::Ended),
        }
    }

    /// The next event if one is queued, without waiting.
    pub fn try_recv(&self) -> Result<ProgressEvent, TryRecvError> {
        match self.rx.try_recv() {
            Ok(event) => Ok(self.deliver(event)),
            Err(crossbeam_channel::TryRecvError::Empty) => Err(TryRecvError::Empty),
            Err(crossbeam_channel::TryRecvError::Disconnected) => Err(TryRecvError::Ended),
        }
    }

    /// A blocking iterator over the events, ending with the final one.
    pub fn iter(&self) -> Events<'_> {
        Events { subscription: self }
    }

    /// An iterator over the events queued now, without waiting.
    pub fn try_iter(&self) -> TryEvents<'_> {
        TryEvents { subscription: self }
    }

    /// How many events the queue holds before the oldest are dropped.
    pub fn capacity(&self) -> usize {
        self.capacity
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        if let Some((hub, id)) = self.hub.take() {
            hub.unsubscribe(id);
        }
    }
}

impl fmt::Debug for Subscription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Subscription")
            .field("capacity", &self.capacity)
            .field("queued", &self.rx.len())
            .finish_non_exhaustive()
    }
}

/// Blocking: each item waits for the next event; ends after the final event.
impl Iterator for Subscription {
    type Item = ProgressEvent;

    fn next(&mut self) -> Option<ProgressEvent> {
        self.recv()
    }
}

impl<'a> IntoIterator for &'a Subscription {
    type Item = ProgressEvent;
    type IntoIter = Events<'a>;

    fn into_iter(self) -> Events<'a> {
        self.iter()
    }
}

/// A blocking iterator over a [`Subscription`]'s events, from
/// [`Subscription::iter`]; it ends after the final event.
#[derive(Debug)]
pub struct Events<'a> {
    subscription: &'a Subscription,
}

impl Iterator for Events<'_> {
    type Item = ProgressEvent;

    fn next(&mut self) -> Option<ProgressEvent> {
        self.subscription.recv()
    }
}

/// An iterator over the events a [`Subscription`] holds now, from
/// [`Subscription::try_iter`]; it never waits.
#[derive(Debug)]
pub struct TryEvents<'a> {
    subscription: &'a Subscription,
}

impl Iterator for TryEvents<'_> {
    type Item = ProgressEvent;

    fn next(&mut self) -> Option<ProgressEvent> {
        self.subscription.try_recv().ok()
    }
}

/// Why [`Subscription::recv_timeout`] returned no event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum RecvTimeoutError {
    /// No event arrived within the timeout; the stream goes on.
    #[error("no progress event within the timeout")]
    Timeout,
    /// The stream has ended: the final event was already received.
    #[error("the task's progress events have ended")]
    Ended,
}

impl RecvTimeoutError {
    /// True for [`Timeout`](Self::Timeout).
    pub fn is_timeout(&self) -> bool {
        matches!(self, RecvTimeoutError::Timeout)
    }

    /// True for [`Ended`](Self::Ended).
    pub fn is_ended(&self) -> bool {
        matches!(self, RecvTimeoutError::Ended)
    }
}

/// Why [`Subscription::try_recv`] returned no event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum TryRecvError {
    /// No event is queued now; the stream goes on.
    #[error("no progress event queued")]
    Empty,
    /// The stream has ended: the final event was already received.
    #[error("the task's progress events have ended")]
    Ended,
}

impl TryRecvError {
    /// True for [`Empty`](Self::Empty).
    pub fn is_empty(&self) -> bool {
        matches!(self, TryRecvError::Empty)
    }

    /// True for [`Ended`](Self::Ended).
    pub fn is_ended(&self) -> bool {
        matches!(self, TryRecvError::Ended)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Phase, VMTaskResult};

    fn event(n: u64) -> ProgressEvent {
        ProgressEvent {
            task_id: 1,
            phase: Phase::Copy,
            block_index: Some(n),
            phase_blocks_done: n,
            phase_blocks_total: 100,
            phase_bytes_done: 0,
            phase_bytes_total: 0,
            phase_percent: 0,
            task_percent: 0,
            lost: 0,
            is_final: false,
            result: None,
        }
    }

    fn final_event() -> ProgressEvent {
        ProgressEvent {
            is_final: true,
            result: Some(VMTaskResult::Success),
            task_percent: 100,
            ..event(100)
        }
    }

    #[test]
    fn subscription_is_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Subscription>();
    }

    #[test]
    fn broadcast_without_subscriber_makes_no_event() {
        let hub = Hub::new(4);
        hub.broadcast(|| panic!("no event is made for nobody"));
    }

    #[test]
    fn dropped_subscription_leaves_the_hub() {
        let hub = Arc::new(Hub::new(4));
        let first = hub.subscribe(4, || event(0));
        let second = hub.subscribe(4, || event(0));
        drop(first);
        assert_eq!(hub.subscribers(), 1);
        drop(second);
        assert_eq!(hub.subscribers(), 0);
    }

    #[test]
    fn full_queue_keeps_newest_and_counts_lost() {
        let hub = Arc::new(Hub::new(3));
        let sub = hub.subscribe(3, || event(0));
        for n in 1..=10 {
            hub.broadcast(|| event(n));
        }
        let got: Vec<ProgressEvent> = sub.try_iter().collect();
        let blocks: Vec<u64> = got.iter().map(|e| e.phase_blocks_done).collect();
        assert_eq!(blocks, [8, 9, 10]);
        assert_eq!(got[0].lost, 8);
        assert_eq!(got[1].lost + got[2].lost, 0);
    }

    #[test]
    fn close_on_full_queue_delivers_final_event_last_and_ends_stream() {
        let hub = Arc::new(Hub::new(2));
        let sub = hub.subscribe(2, || event(0));
        hub.broadcast(|| event(1));
        hub.close(final_event());
        let got: Vec<ProgressEvent> = sub.iter().collect();
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].phase_blocks_done, 1);
        assert_eq!(got[0].lost, 1);
        assert!(got[1].is_final);
        assert_eq!(sub.try_recv(), Err(TryRecvError::Ended));
    }

    #[test]
    fn subscribe_after_close_yields_final_event_alone() {
        let hub = Arc::new(Hub::new(2));
        hub.close(final_event());
        let sub = hub.subscribe(2, || panic!("no snapshot after completion"));
        assert_eq!(sub.recv(), Some(final_event()));
        assert_eq!(sub.recv(), None);
    }

    #[test]
    fn recv_timeout_on_quiet_queue_is_timeout() {
        let hub = Arc::new(Hub::new(2));
        let sub = hub.subscribe(2, || event(0));
        assert!(sub.recv().is_some());
        let error = sub.recv_timeout(Duration::from_millis(1));
        assert_eq!(error, Err(RecvTimeoutError::Timeout));
    }

    #[test]
    fn task_percent_arriving_out_of_order_never_goes_down() {
        let hub = Arc::new(Hub::new(4));
        let sub = hub.subscribe(4, || ProgressEvent {
            task_percent: 40,
            ..event(0)
        });
        hub.broadcast(|| ProgressEvent {
            task_percent: 30,
            ..event(1)
        });
        let percents: Vec<u32> = sub.try_iter().map(|e| e.task_percent).collect();
        assert_eq!(percents, [40, 40]);
    }
}
