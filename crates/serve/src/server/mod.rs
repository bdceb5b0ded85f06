//! Serving an [`Export`] on listeners and streams: the threads, the budgets, shutdown.
//!
//! One room per job:
//!
//! - [`listener`]: the listener loop, which admits at most
//!   [`ServerOptions::max_connections`] connections at once and leaves the others
//!   waiting in the listen backlog (a bounded queue the kernel keeps) until one ends;
//!   and the [`Stream`] and [`Listener`] types.
//! - [`reader`]: per connection, the handshake (one deadline from accept) and then the
//!   requests: each is checked, and the reader takes its [`budget`] before reading the
//!   next, so a connection whose replies are not read stops being read.
//! - [`writer`]: the one thread that writes to the export; it serialises writes, write
//!   zeroes, trims and flushes through the crash-safe write path and commits
//!   neighbouring writes together. Payloads wait in its budget.
//! - [`sender`]: per connection, the thread that makes and writes the replies, in the
//!   order they are queued, the only thread that can block on that client; reads and
//!   block status are mapped only when their turn comes, and a read's pieces go out
//!   coalesced ([`read`]): long runs with `sendfile` from the image files, short ones
//!   gathered into one buffer, long zero runs as hole chunks.
//! - [`budget`]: what one connection and all of them together may hold.

mod budget;
mod listener;
mod read;
mod reader;
mod sender;
mod writer;

use std::net::Shutdown;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::Sender;

use crate::export::{Export, ExportResult};
use crate::proto::ExportInfo;

use budget::{Budget, WhenFull};
use listener::Slots;
pub use listener::{Listener, Stream};
use writer::WriteJob;

/// Requests one connection may have unanswered, by default
/// ([`ServerOptions::replies_per_connection`]).
pub const MAX_IN_FLIGHT: usize = 256;
/// Requests all connections together may have unanswered, by default
/// ([`ServerOptions::replies_total`]).
pub const MAX_IN_FLIGHT_TOTAL: usize = 4096;
/// Write payload bytes one connection may have received and not yet written, by
/// default ([`ServerOptions::payload_per_connection`]).
pub const MAX_PAYLOAD_IN_FLIGHT: u64 = 64 << 20;
/// Write payload bytes all connections together may have received and not yet written,
/// by default ([`ServerOptions::payload_total`]).
pub const MAX_PAYLOAD_TOTAL: u64 = 256 << 20;
/// Connections served at once, by default ([`ServerOptions::max_connections`]): more
/// than a few multi-connection clients use (`nbdcopy` opens 4, qemu up to 16).
pub const MAX_CONNECTIONS: usize = 128;

/// How a [`Server`] runs.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// The export's name (clients may also ask for the empty, default name).
    pub export_name: String,
    /// A description clients can show (none when empty).
    pub description: String,
    /// Connections served at once, in the handshake or after it. Connections beyond
    /// wait in the listen backlog (they are not accepted) until one ends.
    pub max_connections: usize,
    /// Time a client has to finish the handshake, counted from accept.
    pub handshake_timeout: Duration,
    /// Once the server is stopping, how long sending a reply may block on a client that
    /// does not read; then the connection is dropped so that the stop completes.
    pub stop_send_timeout: Duration,
    /// Requests one connection may have unanswered; its reader waits beyond.
    pub replies_per_connection: usize,
    /// Requests all connections together may have unanswered; beyond, a connection
    /// waits unless it has none (so clients that do not read never lock out one that
    /// does).
    pub replies_total: usize,
    /// Write payload bytes one connection may have received and not yet written.
    pub payload_per_connection: u64,
    /// Write payload bytes all connections together may have received and not yet
    /// written.
    pub payload_total: u64,
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            export_name: String::new(),
            description: String::new(),
            max_connections: MAX_CONNECTIONS,
            handshake_timeout: Duration::from_secs(30),
            stop_send_timeout: Duration::from_secs(10),
            replies_per_connection: MAX_IN_FLIGHT,
            replies_total: MAX_IN_FLIGHT_TOTAL,
            payload_per_connection: MAX_PAYLOAD_IN_FLIGHT,
            payload_total: MAX_PAYLOAD_TOTAL,
        }
    }
}

/// Counters of what a server did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Connections that reached the transmission phase.
    pub connections: u64,
    /// Requests received.
    pub requests: u64,
    /// Bytes of read replies sent to clients (holes included): a reply counts once it
    /// has been handed whole to the socket.
    pub bytes_read: u64,
    /// Bytes written by `NBD_CMD_WRITE`.
    pub bytes_written: u64,
    /// Bytes zeroed by `NBD_CMD_WRITE_ZEROES`.
    pub bytes_zeroed: u64,
    /// Bytes trimmed by `NBD_CMD_TRIM`.
    pub bytes_trimmed: u64,
    /// Requests answered with an error, and replies that could not be sent.
    pub errors: u64,
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    connections: AtomicU64,
    requests: AtomicU64,
    bytes_read: AtomicU64,
    bytes_written: AtomicU64,
    bytes_zeroed: AtomicU64,
    bytes_trimmed: AtomicU64,
    errors: AtomicU64,
}

impl Counters {
    fn add(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Ordering::Relaxed);
    }

    fn snapshot(&self) -> Stats {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        Stats {
            connections: g(&self.connections),
            requests: g(&self.requests),
            bytes_read: g(&self.bytes_read),
            bytes_written: g(&self.bytes_written),
            bytes_zeroed: g(&self.bytes_zeroed),
            bytes_trimmed: g(&self.bytes_trimmed),
            errors: g(&self.errors),
        }
    }
}

/// What every connection and thread of a server shares.
pub(crate) struct Shared {
    export: Arc<dyn Export>,
    info: ExportInfo,
    options: ServerOptions,
    counters: Arc<Counters>,
    stopping: AtomicBool,
    /// The connections admitted, and the wait for a free one.
    slots: Slots,
    /// Unanswered requests ([`budget`]).
    replies: Arc<Budget>,
    /// Write payloads not yet written ([`budget`]).
    payload: Arc<Budget>,
    /// The writer's queue; `None` once finished.
    writes: Mutex<Option<Sender<WriteJob>>>,
    writer: Mutex<Option<JoinHandle<()>>>,
}

/// An NBD server for one [`Export`] (fixed newstyle handshake, structured replies,
/// `base:allocation` block status).
///
/// Serve a listener until [`Stopper::stop`], or one already-accepted stream; then
/// [`Server::finish`] waits for the connections to end and flushes the export.
///
/// ```no_run
/// use std::net::TcpListener;
/// use std::sync::Arc;
/// use vhdkit_format::Disk;
/// use vhdkit_serve::{DiskExport, Server, ServerOptions};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let export = DiskExport::new(Disk::open_rw("disk.vhd")?);
/// let server = Server::new(Arc::new(export), ServerOptions::default())?;
/// let stopper = server.stopper();
/// // e.g. from a signal-handling thread: stopper.stop();
/// # stopper.stop();
/// server.serve(TcpListener::bind("127.0.0.1:10809")?)?; // returns once stopped
/// let stats = server.finish()?; // connections ended, every write flushed
/// println!("{} bytes read, {} written", stats.bytes_read, stats.bytes_written);
/// # Ok(()) }
/// ```
pub struct Server {
    shared: Arc<Shared>,
}

/// Stops a [`Server`] from any thread: no new connections, no new requests; requests in
/// flight are answered, then connections close.
#[derive(Clone)]
pub struct Stopper {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Stopper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stopper").finish_non_exhaustive()
    }
}

impl Stopper {
    /// Asks the server to stop (idempotent).
    pub fn stop(&self) {
        self.shared.stop();
    }

    /// Whether a stop was asked.
    pub fn is_stopping(&self) -> bool {
        self.shared.stopping.load(Ordering::SeqCst)
    }
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("info", &self.shared.info)
            .field("options", &self.shared.options)
            .finish_non_exhaustive()
    }
}

impl Server {
    /// A server for `export`; starts the writer thread.
    pub fn new(export: Arc<dyn Export>, options: ServerOptions) -> std::io::Result<Server> {
        let mut info = ExportInfo::new(
            &options.export_name,
            export.size(),
            export.is_read_only(),
            export.can_multi_conn(),
        );
        info.description = options.description.clone();
        let counters = Arc::new(Counters::default());
        let (write_tx, write_rx) = crossbeam_channel::unbounded::<WriteJob>();
        let writer = {
            let export = export.clone();
            let counters = counters.clone();
            std::thread::Builder::new()
                .name("nbd-writer".into())
                .spawn(move || writer::run(&*export, &counters, write_rx))?
        };
        let replies = Budget::new(
            options.replies_per_connection as u64,
            options.replies_total as u64,
            WhenFull::IdleMayOverrun,
        );
        let payload = Budget::new(
            options.payload_per_connection,
            options.payload_total,
            WhenFull::Queue,
        );
        Ok(Server {
            shared: Arc::new(Shared {
                export,
                info,
                slots: Slots::new(options.max_connections),
                options,
                counters,
                stopping: AtomicBool::new(false),
                replies,
                payload,
                writes: Mutex::new(Some(write_tx)),
                writer: Mutex::new(Some(writer)),
            }),
        })
    }

    /// A handle that stops the server from another thread.
    pub fn stopper(&self) -> Stopper {
        Stopper {
            shared: self.shared.clone(),
        }
    }

    /// What was served so far.
    pub fn stats(&self) -> Stats {
        self.shared.counters.snapshot()
    }

    /// The export's description as clients see it.
    pub fn export_info(&self) -> &ExportInfo {
        &self.shared.info
    }

    /// Accepts connections on `listener`, each served on its own threads, until
    /// [`Stopper::stop`]. At most [`ServerOptions::max_connections`] are served at once;
    /// the others wait, not accepted, until one ends. Returns once the server stops
    /// accepting; connections may still be finishing (see [`Server::finish`]).
    pub fn serve(&self, listener: impl Into<Listener>) -> std::io::Result<()> {
        listener::serve(&self.shared, listener.into())
    }

    /// Serves one already-accepted connection on the calling thread, until the client
    /// disconnects or the server stops. It takes a connection slot like any other
    /// (waiting for one if all are taken).
    pub fn serve_stream(&self, stream: impl Into<Stream>) {
        listener::serve_stream(&self.shared, stream.into());
    }

    /// Stops the server (if not yet stopped), waits for every connection to end, stops
    /// the writer and flushes the export. Returns the final counters.
    pub fn finish(self) -> ExportResult<Stats> {
        self.shared.stop();
        self.shared.slots.wait_none();
        // Closing the queue ends the writer once it is drained.
        self.shared
            .writes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        let writer = self
            .shared
            .writer
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(t) = writer {
            let _ = t.join();
        }
        self.shared.export.flush()?;
        Ok(self.shared.counters.snapshot())
    }
}

impl Shared {
    fn stop(self: &Arc<Self>) {
        if self.stopping.swap(true, Ordering::SeqCst) {
            return;
        }
        // Readers see the end of their stream and stop taking requests; a send that
        // starts from now on gives up on a client that does not read.
        self.slots.for_each(|s| {
            let _ = s.set_write_timeout(Some(self.options.stop_send_timeout));
            s.shutdown(Shutdown::Read);
        });
        // A send already waiting on such a client does not see the timeout: after the
        // grace period, cut off the connections that are still there.
        let shared = Arc::downgrade(self);
        let grace = self.options.stop_send_timeout;
        let _ = std::thread::Builder::new()
            .name("nbd-stop".into())
            .spawn(move || {
                std::thread::sleep(grace);
                if let Some(shared) = shared.upgrade() {
                    shared.slots.for_each(|s| s.shutdown(Shutdown::Both));
                }
            });
    }

    fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }
}
