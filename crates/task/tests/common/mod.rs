//! Helpers shared by the integration tests: a worker error type and a gate that holds
//! a worker until the test lets it go.

#![allow(dead_code)]

use std::io;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};

use vhdkit_task::{Cancelled, HResult, TaskError, VMTaskResult};

/// A worker error shaped like an engine's: a kind per failed step, with context.
#[derive(Debug, thiserror::Error)]
pub enum TestError {
    #[error("writing block {block}")]
    Write {
        block: u64,
        #[source]
        source: io::Error,
    },
    #[error("bad argument: {0}")]
    BadArgument(String),
    #[error("returns a success code although it is an error")]
    Confused,
    #[error(transparent)]
    Cancelled(#[from] Cancelled),
}

impl TaskError for TestError {
    fn hresult(&self) -> HResult {
        match self {
            TestError::Write { .. } => HResult::E_DISK_FULL,
            TestError::BadArgument(_) => HResult::E_INVALIDARG,
            TestError::Confused => HResult::S_OK,
            TestError::Cancelled(c) => c.hresult(),
        }
    }

    fn task_result(&self) -> VMTaskResult {
        match self {
            TestError::Write { .. } => VMTaskResult::DiskRelatedError,
            TestError::BadArgument(_) => VMTaskResult::IllegalValueError,
            TestError::Confused => VMTaskResult::Success,
            TestError::Cancelled(_) => VMTaskResult::Cancelled,
        }
    }

    fn is_cancelled(&self) -> bool {
        matches!(self, TestError::Cancelled(_))
    }
}

/// Holds a worker at a point until the test opens the gate. `arrived` tells the test
/// the worker has reached the gate.
pub struct Gate {
    arrived_tx: SyncSender<()>,
    open_rx: Receiver<()>,
}

/// The test's side of a [`Gate`].
pub struct GateKeeper {
    arrived_rx: Receiver<()>,
    open_tx: SyncSender<()>,
}

pub fn gate() -> (Gate, GateKeeper) {
    let (arrived_tx, arrived_rx) = sync_channel(1);
    let (open_tx, open_rx) = sync_channel(1);
    (
        Gate {
            arrived_tx,
            open_rx,
        },
        GateKeeper {
            arrived_rx,
            open_tx,
        },
    )
}

impl Gate {
    /// Announces arrival, then waits until opened (or until the keeper is dropped).
    pub fn pass(&self) {
        let _ = self.arrived_tx.send(());
        let _ = self.open_rx.recv();
    }
}

impl GateKeeper {
    /// Waits until the worker is at the gate.
    pub fn wait_arrived(&self) {
        self.arrived_rx.recv().expect("worker reaches the gate");
    }

    /// Lets the worker through once.
    pub fn open(&self) {
        self.open_tx.send(()).expect("worker is still waiting");
    }
}

/// Runs `future` to completion on the current thread: the smallest executor there
/// is, parking the thread until the future's waker unparks it.
pub fn block_on<F: std::future::Future>(future: F) -> F::Output {
    use std::sync::Arc;
    use std::task::{Context, Poll, Wake, Waker};

    struct Unpark(std::thread::Thread);

    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }

    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut future = std::pin::pin!(future);
    loop {
        if let Poll::Ready(value) = future.as_mut().poll(&mut cx) {
            return value;
        }
        std::thread::park();
    }
}

/// A waker that counts its wakes.
pub struct CountingWaker(pub std::sync::atomic::AtomicUsize);

impl std::task::Wake for CountingWaker {
    fn wake(self: std::sync::Arc<Self>) {
        self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }
}
