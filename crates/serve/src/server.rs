//! Serving an [`Export`] on listeners and streams: the threads, the queues, shutdown.
//!
//! Per connection, a reader thread runs the handshake and then reads requests, and a
//! sender thread writes the replies (the only thread that can block on that client, so a
//! client that stops reading stalls nobody else). Reads and block status are mapped on a
//! pool of worker threads shared by all connections; the sender then streams the data
//! from the image files with `sendfile` (no copy through the server's memory), holes as
//! hole chunks. Writes, write zeroes, trims and flushes go to one writer thread, which
//! serialises them through the export's crash-safe write path and commits neighbouring
//! writes together (one `write_runs`, one pair of barriers for the batch).
//!
//! Bounds: at most [`ServerOptions::max_connections`] connections; per connection at most
//! [`MAX_IN_FLIGHT`] requests and [`MAX_PAYLOAD_IN_FLIGHT`] bytes of write payload not
//! yet written; option data and request lengths capped by [`crate::proto`]. Memory
//! therefore stays below `max_connections × (MAX_PAYLOAD_IN_FLIGHT + a few MiB)`.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender, TryRecvError};

use crate::export::{Export, ExportError, ExportResult, Piece};
use crate::proto::{self, Command, ExportInfo, Negotiation, Refusal, Session, Step};

/// Requests of one connection read but not yet answered; the reader waits beyond this.
pub const MAX_IN_FLIGHT: usize = 256;
/// Write payload bytes of one connection received but not yet written; the reader waits
/// beyond this.
pub const MAX_PAYLOAD_IN_FLIGHT: u64 = 64 << 20;
/// Writes committed together at most (bytes).
const BATCH_BYTES: usize = 64 << 20;
/// Writes committed together at most (count).
const BATCH_WRITES: usize = 256;
/// Longest range one block status reply describes (the client asks again for the rest).
const BLOCK_STATUS_SPAN: u64 = 1 << 30;
/// Buffer for data sent by copying (sources without a descriptor).
const COPY_BUF: usize = 1 << 20;
/// Send buffer asked for each connection (capped by the kernel's `net.core.wmem_max`).
const SEND_BUFFER: usize = 4 << 20;

/// Zeros sent for zero pieces of simple or unfragmented replies.
static ZEROS: [u8; 64 * 1024] = [0; 64 * 1024];

/// How a [`Server`] runs.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// The export's name (clients may also ask for the empty, default name).
    pub export_name: String,
    /// A description clients can show.
    pub description: String,
    /// Connections served at once; more are closed at once.
    pub max_connections: usize,
    /// Worker threads mapping reads and block status.
    pub workers: usize,
    /// Time a client has to finish the handshake.
    pub handshake_timeout: Duration,
    /// Once the server is stopping, how long sending a reply may block on a client that
    /// does not read; then the connection is dropped so that the stop completes.
    pub stop_send_timeout: Duration,
}

impl Default for ServerOptions {
    fn default() -> Self {
        let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
        ServerOptions {
            export_name: String::new(),
            description: String::new(),
            max_connections: 16,
            workers: cpus.clamp(2, 8),
            handshake_timeout: Duration::from_secs(30),
            stop_send_timeout: Duration::from_secs(10),
        }
    }
}

/// A connected client: a Unix or TCP stream.
#[derive(Debug)]
pub enum Stream {
    /// A Unix domain socket.
    Unix(UnixStream),
    /// A TCP connection.
    Tcp(TcpStream),
}

impl From<UnixStream> for Stream {
    fn from(s: UnixStream) -> Stream {
        Stream::Unix(s)
    }
}

impl From<TcpStream> for Stream {
    fn from(s: TcpStream) -> Stream {
        Stream::Tcp(s)
    }
}

impl Stream {
    fn try_clone(&self) -> io::Result<Stream> {
        Ok(match self {
            Stream::Unix(s) => Stream::Unix(s.try_clone()?),
            Stream::Tcp(s) => Stream::Tcp(s.try_clone()?),
        })
    }

    fn shutdown(&self, how: Shutdown) {
        let _ = match self {
            Stream::Unix(s) => s.shutdown(how),
            Stream::Tcp(s) => s.shutdown(how),
        };
    }

    fn set_read_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        match self {
            Stream::Unix(s) => s.set_read_timeout(t),
            Stream::Tcp(s) => s.set_read_timeout(t),
        }
    }

    fn set_write_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        match self {
            Stream::Unix(s) => s.set_write_timeout(t),
            Stream::Tcp(s) => s.set_write_timeout(t),
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Unix(s) => s.read(buf),
            Stream::Tcp(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Unix(s) => s.write(buf),
            Stream::Tcp(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl AsFd for Stream {
    fn as_fd(&self) -> BorrowedFd<'_> {
        match self {
            Stream::Unix(s) => s.as_fd(),
            Stream::Tcp(s) => s.as_fd(),
        }
    }
}

/// A listening socket: Unix or TCP.
#[derive(Debug)]
pub enum Listener {
    /// A Unix domain socket.
    Unix(UnixListener),
    /// A TCP socket.
    Tcp(TcpListener),
}

impl From<UnixListener> for Listener {
    fn from(l: UnixListener) -> Listener {
        Listener::Unix(l)
    }
}

impl From<TcpListener> for Listener {
    fn from(l: TcpListener) -> Listener {
        Listener::Tcp(l)
    }
}

impl Listener {
    fn accept(&self) -> io::Result<Stream> {
        Ok(match self {
            Listener::Unix(l) => Stream::Unix(l.accept()?.0),
            Listener::Tcp(l) => {
                let s = l.accept()?.0;
                // The protocol asks for no Nagle delay on TCP.
                let _ = s.set_nodelay(true);
                Stream::Tcp(s)
            }
        })
    }

    fn as_fd(&self) -> BorrowedFd<'_> {
        match self {
            Listener::Unix(l) => l.as_fd(),
            Listener::Tcp(l) => l.as_fd(),
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
    /// Bytes read by clients (holes included).
    pub bytes_read: u64,
    /// Bytes written by `NBD_CMD_WRITE`.
    pub bytes_written: u64,
    /// Bytes zeroed by `NBD_CMD_WRITE_ZEROES`.
    pub bytes_zeroed: u64,
    /// Bytes trimmed by `NBD_CMD_TRIM`.
    pub bytes_trimmed: u64,
    /// Requests answered with an error.
    pub errors: u64,
}

#[derive(Debug, Default)]
struct Counters {
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

/// A count with a ceiling that waiters block on (requests or bytes in flight).
#[derive(Debug)]
struct Gate {
    used: Mutex<u64>,
    changed: Condvar,
    cap: u64,
}

impl Gate {
    fn new(cap: u64) -> Gate {
        Gate {
            used: Mutex::new(0),
            changed: Condvar::new(),
            cap,
        }
    }

    /// Takes `n` (at most the cap), waiting for room.
    fn acquire(&self, n: u64) {
        let n = n.min(self.cap);
        let mut used = self.used.lock().unwrap_or_else(|e| e.into_inner());
        while *used + n > self.cap {
            used = self.changed.wait(used).unwrap_or_else(|e| e.into_inner());
        }
        *used += n;
    }

    fn release(&self, n: u64) {
        let n = n.min(self.cap);
        let mut used = self.used.lock().unwrap_or_else(|e| e.into_inner());
        *used = used.saturating_sub(n);
        self.changed.notify_all();
    }

    /// Waits until nothing is taken.
    fn wait_empty(&self) {
        let mut used = self.used.lock().unwrap_or_else(|e| e.into_inner());
        while *used > 0 {
            used = self.changed.wait(used).unwrap_or_else(|e| e.into_inner());
        }
    }
}

/// A reply for the sender thread of a connection.
enum Reply {
    /// Bytes ready to send.
    Bytes(Vec<u8>),
    /// A successful read: the sender streams the pieces.
    Read {
        cookie: u64,
        offset: u64,
        df: bool,
        pieces: Vec<Piece>,
    },
}

/// What jobs of one connection share.
struct Conn {
    session: Session,
    replies: Sender<Reply>,
    in_flight: Arc<Gate>,
    payload: Gate,
}

impl Conn {
    fn reply(&self, r: Reply) {
        // The sender thread outlives every job of its connection; a closed channel only
        // means the connection is gone, and the reply has no one to go to.
        let _ = self.replies.send(r);
    }

    fn error(&self, counters: &Counters, cookie: u64, errno: u32, message: &str) {
        Counters::add(&counters.errors, 1);
        self.reply(Reply::Bytes(proto::error_reply(
            &self.session,
            cookie,
            errno,
            message,
        )));
    }
}

type Job = Box<dyn FnOnce() + Send>;

enum WriteOp {
    Write {
        offset: u64,
        data: Vec<u8>,
        fua: bool,
    },
    Zeroes {
        offset: u64,
        len: u64,
        fua: bool,
        no_hole: bool,
    },
    Trim {
        offset: u64,
        len: u64,
        fua: bool,
    },
    Flush,
}

struct WriteJob {
    conn: Arc<Conn>,
    cookie: u64,
    op: WriteOp,
}

/// Threads and queues shared by every connection.
struct Shared {
    export: Arc<dyn Export>,
    info: ExportInfo,
    options: ServerOptions,
    counters: Arc<Counters>,
    stopping: AtomicBool,
    live: Mutex<HashMap<u64, Stream>>,
    live_changed: Condvar,
    next_id: AtomicU64,
    jobs: Mutex<Option<Sender<Job>>>,
    writes: Mutex<Option<Sender<WriteJob>>>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

/// An NBD server for one [`Export`] (fixed newstyle handshake, structured replies,
/// `base:allocation` block status).
///
/// Serve a listener until [`Stopper::stop`], or one already-accepted stream; then
/// [`Server::finish`] waits for the connections to end and flushes the export.
///
/// ```no_run
/// use std::os::unix::net::UnixListener;
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
/// server.serve(UnixListener::bind("/tmp/disk.sock")?)?; // returns once stopped
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
            .field("export", &self.shared.info)
            .finish_non_exhaustive()
    }
}

impl Server {
    /// Starts the worker and writer threads for `export`.
    pub fn new(export: Arc<dyn Export>, options: ServerOptions) -> io::Result<Server> {
        let info = ExportInfo {
            name: options.export_name.clone(),
            description: options.description.clone(),
            size: export.size(),
            read_only: export.is_read_only(),
            multi_conn: export.can_multi_conn(),
        };
        let counters = Arc::new(Counters::default());
        let (job_tx, job_rx) = crossbeam_channel::bounded::<Job>(1024);
        let (write_tx, write_rx) = crossbeam_channel::bounded::<WriteJob>(1024);
        let mut threads = Vec::new();
        for i in 0..options.workers.max(1) {
            let rx = job_rx.clone();
            threads.push(
                std::thread::Builder::new()
                    .name(format!("nbd-worker-{i}"))
                    .spawn(move || {
                        for job in rx.iter() {
                            job();
                        }
                    })?,
            );
        }
        {
            let export = export.clone();
            let counters = counters.clone();
            threads.push(
                std::thread::Builder::new()
                    .name("nbd-writer".into())
                    .spawn(move || writer_loop(&*export, &counters, write_rx))?,
            );
        }
        Ok(Server {
            shared: Arc::new(Shared {
                export,
                info,
                options,
                counters,
                stopping: AtomicBool::new(false),
                live: Mutex::new(HashMap::new()),
                live_changed: Condvar::new(),
                next_id: AtomicU64::new(0),
                jobs: Mutex::new(Some(job_tx)),
                writes: Mutex::new(Some(write_tx)),
                threads: Mutex::new(threads),
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
    /// [`Stopper::stop`]. Returns once the server stops accepting; connections may still
    /// be finishing (see [`Server::finish`]).
    pub fn serve(&self, listener: impl Into<Listener>) -> io::Result<()> {
        let listener = listener.into();
        use rustix::event::{poll, PollFd, PollFlags, Timespec};
        let tick = Timespec {
            tv_sec: 0,
            tv_nsec: 200_000_000,
        };
        while !self.shared.stopping.load(Ordering::SeqCst) {
            let fd = listener.as_fd();
            let mut fds = [PollFd::new(&fd, PollFlags::IN)];
            match poll(&mut fds, Some(&tick)) {
                Ok(0) => continue,
                Ok(_) => {}
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => return Err(e.into()),
            }
            match listener.accept() {
                Ok(stream) => {
                    let shared = self.shared.clone();
                    let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
                    std::thread::Builder::new()
                        .name(format!("nbd-conn-{id}"))
                        .spawn(move || shared.connection(id, stream))?;
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock
                            | io::ErrorKind::Interrupted
                            | io::ErrorKind::ConnectionAborted
                    ) => {}
                // Out of descriptors or memory: keep serving the connections there are.
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
        Ok(())
    }

    /// Serves one already-accepted connection on the calling thread, until the client
    /// disconnects or the server stops.
    pub fn serve_stream(&self, stream: impl Into<Stream>) {
        let id = self.shared.next_id.fetch_add(1, Ordering::Relaxed);
        self.shared.clone().connection(id, stream.into());
    }

    /// Stops the server (if not yet stopped), waits for every connection to end, stops
    /// the threads and flushes the export. Returns the final counters.
    pub fn finish(self) -> ExportResult<Stats> {
        self.shared.stop();
        {
            let mut live = self.shared.live.lock().unwrap_or_else(|e| e.into_inner());
            while !live.is_empty() {
                live = self
                    .shared
                    .live_changed
                    .wait(live)
                    .unwrap_or_else(|e| e.into_inner());
            }
        }
        // Closing the queues ends the workers and the writer once they are drained.
        self.shared
            .jobs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        self.shared
            .writes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        let threads = std::mem::take(
            &mut *self
                .shared
                .threads
                .lock()
                .unwrap_or_else(|e| e.into_inner()),
        );
        for t in threads {
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
        {
            let live = self.live.lock().unwrap_or_else(|e| e.into_inner());
            for s in live.values() {
                // Readers see the end of their stream and stop taking requests; a send
                // that starts from now on gives up on a client that does not read.
                let _ = s.set_write_timeout(Some(self.options.stop_send_timeout));
                s.shutdown(Shutdown::Read);
            }
        }
        // A send already waiting on such a client does not see the timeout: after the
        // grace period, cut off the connections that are still there.
        let shared = Arc::downgrade(self);
        let grace = self.options.stop_send_timeout;
        let _ = std::thread::Builder::new()
            .name("nbd-stop".into())
            .spawn(move || {
                std::thread::sleep(grace);
                if let Some(shared) = shared.upgrade() {
                    let live = shared.live.lock().unwrap_or_else(|e| e.into_inner());
                    for s in live.values() {
                        s.shutdown(Shutdown::Both);
                    }
                }
            });
    }

    /// Registers, serves and unregisters one connection.
    fn connection(self: Arc<Self>, id: u64, stream: Stream) {
        {
            let mut live = self.live.lock().unwrap_or_else(|e| e.into_inner());
            let clone = stream.try_clone();
            if self.stopping.load(Ordering::SeqCst)
                || live.len() >= self.options.max_connections
                || clone.is_err()
            {
                stream.shutdown(Shutdown::Both);
                return;
            }
            if let Ok(c) = clone {
                live.insert(id, c);
            }
        }
        self.run_connection(stream);
        let mut live = self.live.lock().unwrap_or_else(|e| e.into_inner());
        live.remove(&id);
        self.live_changed.notify_all();
    }

    fn run_connection(&self, mut stream: Stream) {
        let Ok(Some(session)) = self.handshake(&mut stream) else {
            stream.shutdown(Shutdown::Both);
            return;
        };
        Counters::add(&self.counters.connections, 1);
        // A send buffer that holds whole replies: a 256 KiB read is sent in one
        // `sendfile` while the client drains the previous one, instead of ping-ponging
        // on the 208 KiB default. The kernel caps it at net.core.wmem_max; best effort.
        let _ = rustix::net::sockopt::set_socket_send_buffer_size(&stream, SEND_BUFFER);
        let Ok(out) = stream.try_clone() else {
            stream.shutdown(Shutdown::Both);
            return;
        };
        let (tx, rx) = crossbeam_channel::unbounded::<Reply>();
        let in_flight = Arc::new(Gate::new(MAX_IN_FLIGHT as u64));
        let sender = {
            let in_flight = in_flight.clone();
            let export = self.export.clone();
            let counters = self.counters.clone();
            let structured = session.structured;
            std::thread::Builder::new()
                .name("nbd-sender".into())
                .spawn(move || sender_loop(out, rx, &in_flight, &*export, &counters, structured))
        };
        let Ok(sender) = sender else {
            stream.shutdown(Shutdown::Both);
            return;
        };
        let conn = Arc::new(Conn {
            session,
            replies: tx,
            in_flight: in_flight.clone(),
            payload: Gate::new(MAX_PAYLOAD_IN_FLIGHT),
        });
        self.requests(&mut stream, &conn);
        // Answer what is in flight, then close.
        in_flight.wait_empty();
        drop(conn);
        let _ = sender.join();
        stream.shutdown(Shutdown::Both);
    }

    /// Runs the handshake; `Ok(None)` when it ends without transmission.
    fn handshake(&self, stream: &mut Stream) -> io::Result<Option<Session>> {
        stream.set_read_timeout(Some(self.options.handshake_timeout))?;
        stream.write_all(&proto::greeting())?;
        let mut flags = [0u8; 4];
        stream.read_exact(&mut flags)?;
        let mut neg = Negotiation::new(self.info.clone());
        if neg.client_flags(u32::from_be_bytes(flags)).is_err() {
            return Ok(None);
        }
        let mut out = Vec::new();
        let mut data = Vec::new();
        loop {
            let mut h = [0u8; proto::OPTION_HEADER_SIZE];
            stream.read_exact(&mut h)?;
            let Ok(header) = proto::OptionHeader::parse(&h) else {
                return Ok(None);
            };
            data.resize(header.len as usize, 0);
            stream.read_exact(&mut data)?;
            if self.stopping.load(Ordering::SeqCst) {
                neg.set_shutting_down();
            }
            out.clear();
            let step = neg.option(header, &data, &mut out);
            stream.write_all(&out)?;
            match step {
                Step::Continue => {}
                Step::Transmission(s) => {
                    stream.set_read_timeout(None)?;
                    return Ok(Some(s));
                }
                Step::Close(_) => return Ok(None),
            }
        }
    }

    /// Reads and dispatches requests until the client disconnects or the server stops.
    fn requests(&self, stream: &mut Stream, conn: &Arc<Conn>) {
        let session = conn.session;
        loop {
            let mut h = [0u8; proto::REQUEST_SIZE];
            if stream.read_exact(&mut h).is_err() {
                return;
            }
            let Ok(req) = proto::parse_request(&h) else {
                return;
            };
            Counters::add(&self.counters.requests, 1);
            let cookie = req.cookie;
            let cmd = match session.check(&req) {
                Ok(cmd) => cmd,
                Err(Refusal::Close(_)) => return,
                Err(Refusal::Error {
                    errno,
                    skip,
                    message,
                }) => {
                    if skip_bytes(stream, u64::from(skip)).is_err() {
                        return;
                    }
                    conn.in_flight.acquire(1);
                    conn.error(&self.counters, cookie, errno, message);
                    continue;
                }
            };
            if cmd == Command::Disconnect {
                return;
            }
            conn.in_flight.acquire(1);
            match cmd {
                Command::Read { offset, len, df } => {
                    let conn = conn.clone();
                    let export = self.export.clone();
                    let counters = self.counters.clone();
                    let job: Job = Box::new(move || {
                        let mut pieces = Vec::new();
                        match export.map(offset, u64::from(len), &mut pieces) {
                            Ok(()) => {
                                Counters::add(&counters.bytes_read, u64::from(len));
                                conn.reply(Reply::Read {
                                    cookie,
                                    offset,
                                    df,
                                    pieces,
                                });
                            }
                            Err(e) => conn.error(&counters, cookie, e.errno, &e.message),
                        }
                    });
                    self.submit(job);
                }
                Command::BlockStatus {
                    offset,
                    len,
                    req_one,
                } => {
                    let conn = conn.clone();
                    let export = self.export.clone();
                    let counters = self.counters.clone();
                    self.submit(Box::new(move || {
                        let span = u64::from(len).min(BLOCK_STATUS_SPAN);
                        let mut pieces = Vec::new();
                        match export.map(offset, span, &mut pieces) {
                            Ok(()) => {
                                let d = proto::descriptors(
                                    pieces
                                        .iter()
                                        .map(|p| (p.len(), matches!(p, Piece::Zero { .. }))),
                                    req_one,
                                );
                                let id = conn
                                    .session
                                    .meta_context
                                    .unwrap_or(proto::META_BASE_ALLOCATION_ID);
                                conn.reply(Reply::Bytes(proto::block_status_chunk(cookie, id, &d)));
                            }
                            Err(e) => conn.error(&counters, cookie, e.errno, &e.message),
                        }
                    }));
                }
                Command::Write { offset, len, fua } => {
                    conn.payload.acquire(u64::from(len));
                    let mut data = Vec::new();
                    if data.try_reserve_exact(len as usize).is_err() {
                        conn.payload.release(u64::from(len));
                        conn.in_flight.release(1);
                        return;
                    }
                    data.resize(len as usize, 0);
                    if stream.read_exact(&mut data).is_err() {
                        conn.payload.release(u64::from(len));
                        // The request was never complete: nothing to answer.
                        conn.in_flight.release(1);
                        return;
                    }
                    self.write(conn, cookie, WriteOp::Write { offset, data, fua });
                }
                Command::WriteZeroes {
                    offset,
                    len,
                    fua,
                    no_hole,
                } => self.write(
                    conn,
                    cookie,
                    WriteOp::Zeroes {
                        offset,
                        len: u64::from(len),
                        fua,
                        no_hole,
                    },
                ),
                Command::Trim { offset, len, fua } => self.write(
                    conn,
                    cookie,
                    WriteOp::Trim {
                        offset,
                        len: u64::from(len),
                        fua,
                    },
                ),
                Command::Flush => self.write(conn, cookie, WriteOp::Flush),
                Command::Disconnect => return,
            }
        }
    }

    fn submit(&self, job: Job) {
        let tx = self.jobs.lock().unwrap_or_else(|e| e.into_inner()).clone();
        match tx {
            Some(tx) => {
                if let Err(e) = tx.send(job) {
                    // Only after finish(): run it here rather than lose the reply.
                    (e.into_inner())();
                }
            }
            None => job(),
        }
    }

    fn write(&self, conn: &Arc<Conn>, cookie: u64, op: WriteOp) {
        let job = WriteJob {
            conn: conn.clone(),
            cookie,
            op,
        };
        let tx = self
            .writes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let job = match tx {
            Some(tx) => match tx.send(job) {
                Ok(()) => return,
                Err(e) => e.into_inner(),
            },
            None => job,
        };
        job.conn.error(
            &self.counters,
            job.cookie,
            proto::ESHUTDOWN,
            "the server is stopping",
        );
        if let WriteOp::Write { data, .. } = &job.op {
            job.conn.payload.release(data.len() as u64);
        }
    }
}

/// Reads and drops `n` bytes (the payload of a refused write).
fn skip_bytes(stream: &mut Stream, mut n: u64) -> io::Result<()> {
    let mut buf = [0u8; 64 * 1024];
    while n > 0 {
        let k = (buf.len() as u64).min(n) as usize;
        stream.read_exact(&mut buf[..k])?;
        n -= k as u64;
    }
    Ok(())
}

/// The one thread that writes: takes write jobs in order, commits neighbouring writes
/// together, answers each.
fn writer_loop(export: &dyn Export, counters: &Counters, rx: Receiver<WriteJob>) {
    let mut next: Option<WriteJob> = None;
    loop {
        let job = match next.take() {
            Some(j) => j,
            None => match rx.recv() {
                Ok(j) => j,
                Err(_) => return,
            },
        };
        if !matches!(job.op, WriteOp::Write { .. }) {
            run_other(export, counters, job);
            continue;
        }
        let mut batch = vec![job];
        let mut bytes = 0usize;
        while batch.len() < BATCH_WRITES && bytes < BATCH_BYTES {
            match rx.try_recv() {
                Ok(j) if matches!(j.op, WriteOp::Write { .. }) => {
                    if let WriteOp::Write { data, .. } = &j.op {
                        bytes += data.len();
                    }
                    batch.push(j);
                }
                Ok(j) => {
                    next = Some(j);
                    break;
                }
                Err(TryRecvError::Empty) | Err(TryRecvError::Disconnected) => break,
            }
        }
        commit_writes(export, counters, batch);
    }
}

fn commit_writes(export: &dyn Export, counters: &Counters, batch: Vec<WriteJob>) {
    let runs: Vec<(u64, &[u8], bool)> = batch
        .iter()
        .filter_map(|j| match &j.op {
            WriteOp::Write { offset, data, fua } => Some((*offset, data.as_slice(), *fua)),
            _ => None,
        })
        .collect();
    let plain: Vec<(u64, &[u8])> = runs.iter().map(|&(o, d, _)| (o, d)).collect();
    let any_fua = runs.iter().any(|r| r.2);
    let mut results: Vec<ExportResult<()>> = match export.write_runs(&plain) {
        Ok(()) => (0..plain.len()).map(|_| Ok(())).collect(),
        // Find which failed: each run again on its own (writes are idempotent).
        Err(_) => plain.iter().map(|r| export.write_runs(&[*r])).collect(),
    };
    if any_fua {
        if let Err(e) = export.flush() {
            for r in results.iter_mut().filter(|r| r.is_ok()) {
                *r = Err(ExportError::new(e.errno, e.message.clone()));
            }
        }
    }
    for (job, result) in batch.iter().zip(results) {
        let len = match &job.op {
            WriteOp::Write { data, .. } => data.len() as u64,
            _ => 0,
        };
        job.conn.payload.release(len);
        match result {
            Ok(()) => {
                Counters::add(&counters.bytes_written, len);
                job.conn
                    .reply(Reply::Bytes(proto::ok_reply(&job.conn.session, job.cookie)));
            }
            Err(e) => job.conn.error(counters, job.cookie, e.errno, &e.message),
        }
    }
}

fn run_other(export: &dyn Export, counters: &Counters, job: WriteJob) {
    let (result, fua) = match job.op {
        WriteOp::Zeroes {
            offset,
            len,
            fua,
            no_hole,
        } => {
            let r = export.write_zeroes(offset, len, !no_hole);
            if r.is_ok() {
                Counters::add(&counters.bytes_zeroed, len);
            }
            (r, fua)
        }
        WriteOp::Trim { offset, len, fua } => {
            let r = export.trim(offset, len);
            if r.is_ok() {
                Counters::add(&counters.bytes_trimmed, len);
            }
            (r, fua)
        }
        WriteOp::Flush => (export.flush(), false),
        WriteOp::Write { .. } => (Ok(()), false),
    };
    let result = result.and_then(|()| if fua { export.flush() } else { Ok(()) });
    match result {
        Ok(()) => job
            .conn
            .reply(Reply::Bytes(proto::ok_reply(&job.conn.session, job.cookie))),
        Err(e) => job.conn.error(counters, job.cookie, e.errno, &e.message),
    }
}

/// The thread that writes one connection's replies, in the order they are ready.
fn sender_loop(
    mut out: Stream,
    rx: Receiver<Reply>,
    in_flight: &Gate,
    export: &dyn Export,
    counters: &Counters,
    structured: bool,
) {
    let mut alive = true;
    let mut buf = Vec::new();
    for reply in rx.iter() {
        if alive {
            let sent = match reply {
                Reply::Bytes(b) => out.write_all(&b),
                Reply::Read {
                    cookie,
                    offset,
                    df,
                    pieces,
                } => send_read(
                    &mut out, export, &mut buf, structured, cookie, offset, df, &pieces,
                ),
            };
            if sent.is_err() {
                // The client is gone or the data could not be read mid-reply: the stream
                // is out of step, close it. Later replies are dropped.
                alive = false;
                Counters::add(&counters.errors, 1);
                out.shutdown(Shutdown::Both);
            }
        }
        in_flight.release(1);
    }
}

/// Sends a successful read: a simple reply with the data, or structured chunks (data
/// chunks streamed from the files, hole chunks for long zero runs).
#[allow(clippy::too_many_arguments)]
fn send_read(
    out: &mut Stream,
    export: &dyn Export,
    buf: &mut Vec<u8>,
    structured: bool,
    cookie: u64,
    offset: u64,
    df: bool,
    pieces: &[Piece],
) -> io::Result<()> {
    if !structured {
        out.write_all(&proto::simple_reply(cookie, 0))?;
        for p in pieces {
            send_piece(out, export, buf, p)?;
        }
        return Ok(());
    }
    let chunks = proto::read_chunks(
        offset,
        pieces
            .iter()
            .map(|p| (p.len(), matches!(p, Piece::Zero { .. }))),
        df,
    );
    let mut next = pieces.iter();
    for c in chunks {
        // Chunks hold whole pieces and lengths of at most MAX_REQUEST.
        let len = u32::try_from(c.len).map_err(|_| io::Error::other("chunk too long"))?;
        if c.hole {
            out.write_all(&proto::hole_chunk(cookie, c.offset, len))?;
            next.next();
            continue;
        }
        out.write_all(&proto::data_chunk_header(cookie, c.offset, len))?;
        let mut sent = 0;
        while sent < c.len {
            let p = next
                .next()
                .ok_or_else(|| io::Error::other("pieces shorter than the read"))?;
            send_piece(out, export, buf, p)?;
            sent += p.len();
        }
    }
    out.write_all(&proto::done_chunk(cookie))
}

/// Sends the bytes of one piece: zeros from a static buffer, data with `sendfile` from
/// the source's descriptor, or read into `buf` and written.
fn send_piece(
    out: &mut Stream,
    export: &dyn Export,
    buf: &mut Vec<u8>,
    p: &Piece,
) -> io::Result<()> {
    match *p {
        Piece::Zero { len } => {
            let mut left = len;
            while left > 0 {
                let n = (ZEROS.len() as u64).min(left) as usize;
                out.write_all(&ZEROS[..n])?;
                left -= n as u64;
            }
            Ok(())
        }
        Piece::Data {
            source,
            offset,
            len,
        } => match export.source_fd(source) {
            Some(fd) => sendfile_all(out, fd, offset, len),
            None => {
                buf.resize(COPY_BUF, 0);
                let mut done = 0;
                while done < len {
                    let n = (COPY_BUF as u64).min(len - done) as usize;
                    export
                        .read_source(source, offset + done, &mut buf[..n])
                        .map_err(|e| io::Error::other(e.message))?;
                    out.write_all(&buf[..n])?;
                    done += n as u64;
                }
                Ok(())
            }
        },
    }
}

/// `sendfile` until `len` bytes of `fd` at `offset` are sent; a file shorter than
/// expected is an error.
fn sendfile_all(out: &Stream, fd: BorrowedFd<'_>, offset: u64, len: u64) -> io::Result<()> {
    let mut off = offset;
    let end = offset + len;
    while off < end {
        let want = usize::try_from(end - off)
            .unwrap_or(usize::MAX)
            .min(1 << 30);
        match rustix::fs::sendfile(out, fd, Some(&mut off), want) {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the image file ended before the data",
                ))
            }
            Ok(_) => {}
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}
