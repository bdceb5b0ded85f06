//! Per connection, the reader: the handshake, with one deadline counted from accept,
//! then the requests, each checked and dispatched — reads and block status to the
//! connection's sender (made when their turn comes), writes, write zeroes, trims and
//! flushes to the writer. Before reading a request the reader takes its budget
//! ([`super::budget`]): a connection whose replies are not read is not read from.

use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::sync::Arc;
use std::time::{Duration, Instant};

use byteorder::{BigEndian, ByteOrder};
use crossbeam_channel::Sender;

use super::budget::Share;
use super::listener::{Slot, Stream};
use super::sender::{self, Reply};
use super::writer::{WriteJob, WriteOp};
use super::{Counters, Shared};
use crate::proto::{self, Command, Negotiation, Refusal, Session, Step};

/// Bytes of requests read ahead per connection.
const REQUEST_BUFFER: usize = 16 << 10;
/// Send buffer asked for each connection (capped by the kernel's `net.core.wmem_max`).
const SEND_BUFFER: usize = 4 << 20;

/// What the jobs of one connection share: its session, the queue to its sender, its
/// shares of the budgets.
pub(crate) struct Conn {
    pub(crate) session: Session,
    replies_tx: Sender<Reply>,
    /// Unanswered requests; given back by the sender.
    pub(crate) replies: Arc<Share>,
    /// Write payload not yet written; given back by the writer.
    pub(crate) payload: Share,
}

impl Conn {
    /// Queues a reply for the sender.
    pub(crate) fn reply(&self, r: Reply) {
        // The sender outlives every job of its connection; a closed queue only means
        // the connection is gone, and the reply has no one to go to.
        let _ = self.replies_tx.send(r);
    }

    /// Queues an error reply, counted.
    pub(crate) fn error(&self, counters: &Counters, cookie: u64, errno: u32, message: &str) {
        Counters::add(&counters.errors, 1);
        self.reply(Reply::Bytes(proto::error_reply(
            &self.session,
            cookie,
            errno,
            message,
        )));
    }
}

/// Serves one admitted connection to its end; the slot is freed on return.
pub(crate) fn run(shared: &Arc<Shared>, slot: Slot, mut stream: Stream, accepted: Instant) {
    let deadline = accepted + shared.options.handshake_timeout;
    let session = match handshake(shared, &mut stream, deadline) {
        Ok(Some(s)) => s,
        _ => {
            stream.shutdown(Shutdown::Both);
            return;
        }
    };
    Counters::add(&shared.counters.connections, 1);
    // A send buffer that holds whole replies: a 256 KiB read is sent in one `sendfile`
    // while the client drains the previous one, instead of ping-ponging on the 208 KiB
    // default. The kernel caps it at net.core.wmem_max; best effort.
    stream.set_send_buffer(SEND_BUFFER);
    let Ok(out) = stream.try_clone() else {
        stream.shutdown(Shutdown::Both);
        return;
    };
    let (tx, rx) = crossbeam_channel::unbounded::<Reply>();
    let replies = Arc::new(shared.replies.share());
    let sender = {
        let shared = shared.clone();
        let replies = replies.clone();
        std::thread::Builder::new()
            .name("nbd-sender".into())
            .spawn(move || sender::run(&shared, out, rx, &replies, session))
    };
    let Ok(sender) = sender else {
        stream.shutdown(Shutdown::Both);
        return;
    };
    let conn = Arc::new(Conn {
        session,
        replies_tx: tx,
        replies: replies.clone(),
        payload: shared.payload.share(),
    });
    requests(shared, &mut stream, &conn);
    // Answer what is in flight, then close.
    replies.wait_empty();
    drop(conn);
    let _ = sender.join();
    stream.shutdown(Shutdown::Both);
    drop(slot);
}

/// The stream with every read and write bounded by one deadline.
struct Deadline<'a> {
    stream: &'a mut Stream,
    until: Instant,
}

impl Deadline<'_> {
    fn left(&self) -> io::Result<Duration> {
        let left = self.until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the handshake took too long",
            ));
        }
        Ok(left)
    }
}

impl Read for Deadline<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        // Each read waits at most for what is left, so a client that sends a byte at a
        // time still meets the one deadline.
        self.stream.set_read_timeout(Some(self.left()?))?;
        self.stream.read(buf)
    }
}

impl Write for Deadline<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.stream.set_write_timeout(Some(self.left()?))?;
        self.stream.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Runs the handshake, all of it before `deadline`; `Ok(None)` when it ends without
/// transmission.
fn handshake(
    shared: &Shared,
    stream: &mut Stream,
    deadline: Instant,
) -> io::Result<Option<Session>> {
    let mut s = Deadline {
        stream,
        until: deadline,
    };
    s.write_all(&proto::greeting())?;
    let mut flags = [0u8; 4];
    s.read_exact(&mut flags)?;
    let mut neg = Negotiation::new(shared.info.clone());
    if neg.client_flags(BigEndian::read_u32(&flags)).is_err() {
        return Ok(None);
    }
    let mut out = Vec::new();
    let mut data = Vec::new();
    loop {
        let mut h = [0u8; proto::OPTION_HEADER_SIZE];
        s.read_exact(&mut h)?;
        let Ok(header) = proto::OptionHeader::parse(&h) else {
            return Ok(None);
        };
        data.resize(header.len as usize, 0);
        s.read_exact(&mut data)?;
        if shared.is_stopping() {
            neg.set_shutting_down();
        }
        out.clear();
        let step = neg.option(header, &data, &mut out);
        s.write_all(&out)?;
        match step {
            Step::Continue => {}
            Step::Transmission(session) => {
                s.stream.set_read_timeout(None)?;
                if !shared.is_stopping() {
                    // (A stop sets its own send timeout on the stream.)
                    s.stream.set_write_timeout(None)?;
                }
                return Ok(Some(session));
            }
            Step::Close(_) => return Ok(None),
        }
    }
}

/// Reads and dispatches requests until the client disconnects or the server stops.
fn requests(shared: &Shared, stream: &mut Stream, conn: &Arc<Conn>) {
    let counters = &shared.counters;
    // Pipelined request headers come in one `recv`, not one each; payloads longer than
    // the buffer are read straight into place.
    let mut stream = std::io::BufReader::with_capacity(REQUEST_BUFFER, stream);
    let stream = &mut stream;
    loop {
        // Backpressure: room for one more unanswered request before reading it.
        conn.replies.take(1);
        let mut h = [0u8; proto::REQUEST_SIZE];
        let req = match stream.read_exact(&mut h) {
            Ok(()) => proto::parse_request(&h),
            Err(_) => {
                conn.replies.give(1);
                return;
            }
        };
        let Ok(req) = req else {
            conn.replies.give(1);
            return;
        };
        Counters::add(&counters.requests, 1);
        let cookie = req.cookie;
        let cmd = match conn.session.check(&req) {
            Ok(cmd) => cmd,
            Err(Refusal::Error {
                errno,
                skip,
                message,
            }) => {
                if skip_bytes(stream, u64::from(skip)).is_err() {
                    conn.replies.give(1);
                    return;
                }
                conn.error(counters, cookie, errno, message);
                continue;
            }
            Err(Refusal::Close(_)) => {
                conn.replies.give(1);
                return;
            }
        };
        match cmd {
            Command::Disconnect => {
                conn.replies.give(1);
                return;
            }
            Command::Read { offset, len, df } => conn.reply(Reply::Read {
                cookie,
                offset,
                len,
                df,
            }),
            Command::BlockStatus {
                offset,
                len,
                req_one,
            } => conn.reply(Reply::BlockStatus {
                cookie,
                offset,
                len,
                req_one,
            }),
            Command::Write { offset, len, fua } => {
                let n = u64::from(len);
                conn.payload.take(n);
                let mut data = Vec::new();
                let read = data
                    .try_reserve_exact(len as usize)
                    .map_err(|_| io::Error::from(io::ErrorKind::OutOfMemory))
                    .and_then(|()| {
                        data.resize(len as usize, 0);
                        stream.read_exact(&mut data)
                    });
                if read.is_err() {
                    // The request was never complete: nothing to answer.
                    conn.payload.give(n);
                    conn.replies.give(1);
                    return;
                }
                write(shared, conn, cookie, WriteOp::Write { offset, data, fua });
            }
            Command::WriteZeroes {
                offset,
                len,
                fua,
                no_hole,
            } => write(
                shared,
                conn,
                cookie,
                WriteOp::Zeroes {
                    offset,
                    len: u64::from(len),
                    fua,
                    no_hole,
                },
            ),
            Command::Trim { offset, len, fua } => write(
                shared,
                conn,
                cookie,
                WriteOp::Trim {
                    offset,
                    len: u64::from(len),
                    fua,
                },
            ),
            Command::Flush => write(shared, conn, cookie, WriteOp::Flush),
        }
    }
}

/// Hands a write to the writer (or answers `ESHUTDOWN` once it is gone).
fn write(shared: &Shared, conn: &Arc<Conn>, cookie: u64, op: WriteOp) {
    let job = WriteJob {
        conn: conn.clone(),
        cookie,
        op,
    };
    let tx = shared
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
    if let WriteOp::Write { data, .. } = &job.op {
        job.conn.payload.give(data.len() as u64);
    }
    job.conn.error(
        &shared.counters,
        job.cookie,
        proto::ESHUTDOWN,
        "the server is stopping",
    );
}

/// Reads and drops `n` bytes (the payload of a refused write).
fn skip_bytes(stream: &mut impl Read, mut n: u64) -> io::Result<()> {
    let mut buf = [0u8; 64 * 1024];
    while n > 0 {
        let k = (buf.len() as u64).min(n) as usize;
        stream.read_exact(&mut buf[..k])?;
        n -= k as u64;
    }
    Ok(())
}
