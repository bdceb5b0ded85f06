//! The listener: accepting connections while there is room for them, the slots they
//! hold, and the stream and listener types.
//!
//! At most [`ServerOptions::max_connections`](super::ServerOptions::max_connections)
//! connections are served at once, counted from accept (the handshake included) to
//! close. When all slots are taken the listener stops accepting: new clients wait in
//! the listen backlog — a queue the kernel bounds (`listen(2)`'s backlog, capped by
//! `net.core.somaxconn`) — and are accepted, in order, as connections end. A client
//! beyond the backlog is refused by the kernel; none is accepted only to be closed.

use std::collections::HashMap;
use std::io;
use std::net::Shutdown;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::{reader, Shared};

/// How often a waiting listener looks whether the server is stopping.
const TICK: Duration = Duration::from_millis(200);

pub use vhdkit_platform::net::{Listener, Stream};

/// The connections admitted: how many slots are taken, and each one's stream (so that a
/// stop can shut them down).
pub(crate) struct Slots {
    max: usize,
    live: Mutex<Live>,
    changed: Condvar,
}

#[derive(Default)]
struct Live {
    taken: usize,
    streams: HashMap<u64, Stream>,
    next_id: u64,
}

impl Slots {
    pub(crate) fn new(max: usize) -> Slots {
        Slots {
            max: max.max(1),
            live: Mutex::new(Live::default()),
            changed: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Live> {
        self.live.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes a slot, waiting up to `timeout` for one; false if none came free.
    fn reserve(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut live = self.lock();
        while live.taken >= self.max {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            live = self
                .changed
                .wait_timeout(live, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        live.taken += 1;
        true
    }

    /// Gives back a slot taken by [`Slots::reserve`] and never used.
    fn unreserve(&self) {
        let mut live = self.lock();
        live.taken = live.taken.saturating_sub(1);
        drop(live);
        self.changed.notify_all();
    }

    /// Records the stream of a reserved slot; returns its id.
    fn register(&self, stream: Stream) -> u64 {
        let mut live = self.lock();
        let id = live.next_id;
        live.next_id += 1;
        live.streams.insert(id, stream);
        id
    }

    /// Frees the slot `id`.
    fn release(&self, id: u64) {
        let mut live = self.lock();
        live.streams.remove(&id);
        live.taken = live.taken.saturating_sub(1);
        drop(live);
        self.changed.notify_all();
    }

    /// Runs `f` on every admitted connection's stream.
    pub(crate) fn for_each(&self, f: impl Fn(&Stream)) {
        for s in self.lock().streams.values() {
            f(s);
        }
    }

    /// Waits until every slot is free.
    pub(crate) fn wait_none(&self) {
        let mut live = self.lock();
        while live.taken > 0 {
            live = self.changed.wait(live).unwrap_or_else(|e| e.into_inner());
        }
    }
}

/// A taken slot; freed on drop.
pub(crate) struct Slot {
    shared: Arc<Shared>,
    id: u64,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.shared.slots.release(self.id);
    }
}

/// Admits `stream` into a reserved slot: registered for the stop, or closed (and the
/// slot freed) when the server is stopping or the stream cannot be shared.
fn admit(shared: &Arc<Shared>, stream: &Stream) -> Option<Slot> {
    let Ok(clone) = stream.try_clone() else {
        shared.slots.unreserve();
        stream.shutdown(Shutdown::Both);
        return None;
    };
    let slot = Slot {
        shared: shared.clone(),
        id: shared.slots.register(clone),
    };
    // Registered before this check: a stop that began earlier is seen here, one that
    // begins later shuts the stream down itself.
    if shared.is_stopping() {
        stream.shutdown(Shutdown::Both);
        return None;
    }
    Some(slot)
}

/// The listener loop of [`Server::serve`](super::Server::serve).
pub(crate) fn serve(shared: &Arc<Shared>, listener: Listener) -> io::Result<()> {
    while !shared.is_stopping() {
        // A slot first: while all are taken, new clients wait in the backlog.
        if !shared.slots.reserve(TICK) {
            continue;
        }
        let ready = match listener.ready(TICK) {
            Ok(r) => r,
            Err(e) => {
                shared.slots.unreserve();
                return Err(e);
            }
        };
        if !ready || shared.is_stopping() {
            shared.slots.unreserve();
            continue;
        }
        let stream = match listener.accept() {
            Ok(s) => s,
            Err(e) => {
                shared.slots.unreserve();
                match e.kind() {
                    io::ErrorKind::WouldBlock
                    | io::ErrorKind::Interrupted
                    | io::ErrorKind::ConnectionAborted => {}
                    // Out of descriptors or memory: keep serving the connections there
                    // are.
                    _ => std::thread::sleep(Duration::from_millis(100)),
                }
                continue;
            }
        };
        let accepted = Instant::now();
        let Some(slot) = admit(shared, &stream) else {
            continue;
        };
        let s = shared.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("nbd-conn-{}", slot.id))
            .spawn(move || reader::run(&s, slot, stream, accepted));
        // On failure the closure (slot and stream) was dropped: the slot is free and
        // the client sees its connection close.
        let _ = spawned;
    }
    Ok(())
}

/// [`Server::serve_stream`](super::Server::serve_stream): a slot like any connection's.
pub(crate) fn serve_stream(shared: &Arc<Shared>, stream: Stream) {
    while !shared.slots.reserve(TICK) {
        if shared.is_stopping() {
            stream.shutdown(Shutdown::Both);
            return;
        }
    }
    let accepted = Instant::now();
    if let Some(slot) = admit(shared, &stream) {
        reader::run(shared, slot, stream, accepted);
    }
}
