//! Backpressure: what the server holds for its clients, per connection and for all
//! connections together.
//!
//! Two budgets, both taken by a connection's reader *before* it reads the next request
//! (or, for a write, its payload), so a connection over budget is simply not read from
//! until it drains:
//!
//! - **Unanswered requests** ([`ServerOptions::replies_per_connection`],
//!   [`ServerOptions::replies_total`]): a request counts from the moment the reader is
//!   ready to read it until its reply has been handed to the socket. Replies are made
//!   lazily by the sender — a queued read holds its request (a few dozen bytes), not its
//!   map or its data — so an unanswered request holds at most one error message
//!   ([`crate::proto::MAX_STRING`] bytes). This budget drains only if clients read: one
//!   that never does keeps its share forever. So a connection that holds nothing may
//!   always take one request past the total, and clients that never read can fill the
//!   budget but never lock out one that does (it is then served one request at a time).
//! - **Write payload** ([`ServerOptions::payload_per_connection`],
//!   [`ServerOptions::payload_total`]): bytes received and not yet written. The writer
//!   never waits on a client, so this budget always drains; readers wait for room in
//!   the order they asked (a 32 MiB write is not starved by small ones).
//!
//! Memory for clients is therefore bounded by `payload_total + replies_total × 4 KiB +
//! max_connections × (one request + the sender's buffers)`, whatever the clients do.
//!
//! [`ServerOptions::replies_per_connection`]: super::ServerOptions::replies_per_connection
//! [`ServerOptions::replies_total`]: super::ServerOptions::replies_total
//! [`ServerOptions::payload_per_connection`]: super::ServerOptions::payload_per_connection
//! [`ServerOptions::payload_total`]: super::ServerOptions::payload_total

use std::sync::{Arc, Condvar, Mutex, MutexGuard};

/// What a budget does when all connections together have used it up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WhenFull {
    /// Takers wait in the order they came (for budgets that always drain).
    Queue,
    /// A connection holding nothing takes anyway; others wait (for budgets that clients
    /// can pin by not reading).
    IdleMayOverrun,
}

/// One budget of the server: a cap per connection and a cap for all of them.
#[derive(Debug)]
pub(crate) struct Budget {
    per_connection: u64,
    total: u64,
    when_full: WhenFull,
    state: Mutex<State>,
    changed: Condvar,
}

#[derive(Debug, Default)]
struct State {
    /// Taken by all connections.
    used: u64,
    /// Tickets of [`WhenFull::Queue`]: the next one given out, and the one served.
    next_ticket: u64,
    serving: u64,
}

impl Budget {
    pub(crate) fn new(per_connection: u64, total: u64, when_full: WhenFull) -> Arc<Budget> {
        Arc::new(Budget {
            per_connection: per_connection.max(1),
            total: total.max(1),
            when_full,
            state: Mutex::new(State::default()),
            changed: Condvar::new(),
        })
    }

    /// A connection's share (empty).
    pub(crate) fn share(self: &Arc<Self>) -> Share {
        Share {
            budget: self.clone(),
            used: Mutex::new(0),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn wait<'a>(&self, g: MutexGuard<'a, State>) -> MutexGuard<'a, State> {
        self.changed.wait(g).unwrap_or_else(|e| e.into_inner())
    }

    /// What one take of `n` charges: a request larger than a cap goes alone.
    fn charge(&self, n: u64) -> u64 {
        n.min(self.per_connection).min(self.total)
    }

    /// Taken by all connections.
    #[cfg(test)]
    fn used(&self) -> u64 {
        self.lock().used
    }
}

/// One connection's part of a [`Budget`].
#[derive(Debug)]
pub(crate) struct Share {
    budget: Arc<Budget>,
    /// Taken by this connection; changed only under the budget's lock (and its own).
    used: Mutex<u64>,
}

impl Share {
    fn mine(&self) -> u64 {
        *self.used.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn set_mine(&self, v: u64) {
        *self.used.lock().unwrap_or_else(|e| e.into_inner()) = v;
    }

    /// Takes `n`, waiting for room in this connection's share and in the total.
    pub(crate) fn take(&self, n: u64) {
        let b = &*self.budget;
        let n = b.charge(n);
        if n == 0 {
            return;
        }
        let mut st = b.lock();
        // Only this connection's reader takes from its share, and gives only lower it,
        // so once there is room it stays.
        while !(self.mine() == 0 || self.mine() + n <= b.per_connection) {
            st = b.wait(st);
        }
        match b.when_full {
            WhenFull::IdleMayOverrun => {
                while !(self.mine() == 0 || st.used + n <= b.total) {
                    st = b.wait(st);
                }
            }
            WhenFull::Queue => {
                let ticket = st.next_ticket;
                st.next_ticket += 1;
                while !(st.serving == ticket && st.used + n <= b.total) {
                    st = b.wait(st);
                }
                st.serving += 1;
                // The next ticket may fit too.
                b.changed.notify_all();
            }
        }
        st.used += n;
        self.set_mine(self.mine() + n);
    }

    /// Gives back `n` taken before.
    pub(crate) fn give(&self, n: u64) {
        let b = &*self.budget;
        let n = b.charge(n);
        if n == 0 {
            return;
        }
        let mut st = b.lock();
        st.used = st.used.saturating_sub(n);
        self.set_mine(self.mine().saturating_sub(n));
        drop(st);
        b.changed.notify_all();
    }

    /// Waits until this connection holds nothing.
    pub(crate) fn wait_empty(&self) {
        let b = &*self.budget;
        let mut st = b.lock();
        while self.mine() > 0 {
            st = b.wait(st);
        }
    }
}

impl Drop for Share {
    /// A connection that ends gives back whatever it still held.
    fn drop(&mut self) {
        let left = self.mine();
        if left > 0 {
            let b = &*self.budget;
            let mut st = b.lock();
            st.used = st.used.saturating_sub(left);
            drop(st);
            b.changed.notify_all();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn blocks(f: impl FnOnce() + Send + 'static) -> bool {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            f();
            let _ = tx.send(());
        });
        rx.recv_timeout(Duration::from_millis(200)).is_err()
    }

    #[test]
    fn share_waits_at_its_own_cap_and_resumes_when_given_back() {
        let b = Budget::new(2, 100, WhenFull::IdleMayOverrun);
        let s = Arc::new(b.share());
        s.take(1);
        s.take(1);
        let s2 = s.clone();
        assert!(blocks(move || s2.take(1)));
        s.give(1);
        // The blocked take went through.
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(b.used(), 2);
    }

    #[test]
    fn idle_connection_may_overrun_a_full_total_and_a_busy_one_may_not() {
        let b = Budget::new(10, 4, WhenFull::IdleMayOverrun);
        let pinned = b.share();
        for _ in 0..4 {
            pinned.take(1);
        }
        let idle = Arc::new(b.share());
        idle.take(1); // holds nothing: may take
        assert_eq!(b.used(), 5);
        let busy = idle.clone();
        assert!(blocks(move || busy.take(1)));
    }

    #[test]
    fn queued_takers_are_served_in_order() {
        let b = Budget::new(100, 100, WhenFull::Queue);
        let a = b.share();
        a.take(90);
        // A big taker waits first; a small one after it must not overtake it.
        let big = Arc::new(b.share());
        let big2 = big.clone();
        let t = std::thread::spawn(move || big2.take(50));
        std::thread::sleep(Duration::from_millis(100));
        let small = Arc::new(b.share());
        let small2 = small.clone();
        assert!(blocks(move || small2.take(5)));
        a.give(90);
        t.join().expect("big taker");
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(b.used(), 55);
    }

    #[test]
    fn dropped_share_gives_back_what_it_held() {
        let b = Budget::new(10, 10, WhenFull::Queue);
        let s = b.share();
        s.take(7);
        drop(s);
        assert_eq!(b.used(), 0);
    }
}
