//! Per connection, the sender: the one thread that writes the connection's replies, in
//! the order they are queued, and the only one that can block on that client (a client
//! that stops reading stalls nobody else).
//!
//! Replies are made when their turn comes: a read is mapped and planned
//! ([`super::read`]) right before it is sent, block status walked right before it is
//! answered, so a queued reply holds its request and nothing more. Small replies and
//! gathered data go through one buffer, written when it fills, before a `sendfile`,
//! and when the queue is empty; replies handed to the socket give their place in the
//! budget of unanswered requests back and count in the totals.

use std::io::{self, Write};
use std::net::Shutdown;

use crossbeam_channel::Receiver;

use super::budget::Share;
use super::listener::Stream;
use super::read::{self, Gatherer, Mapped, Segment, GATHER_MAX, PLAN_WINDOW};
use super::{Counters, Shared};
use crate::export::{Export, Piece};
use crate::proto::{self, Session};

/// The sender's buffer: a gathered step and the chunk headers around it.
const OUT_BUF: usize = GATHER_MAX + 4096;
/// Replies buffered at most before the buffer is written (and their places given back)
/// even while more are queued.
const FLUSH_EVERY: u64 = 64;

/// Zeros sent for zero runs of simple or unfragmented replies (in the `.bss`: no
/// memory until touched, and then the one shared zero page).
static ZEROS: [u8; 1 << 20] = [0; 1 << 20];

/// A reply for the sender of a connection.
pub(crate) enum Reply {
    /// Bytes ready to send.
    Bytes(Vec<u8>),
    /// A read, checked; mapped and sent when its turn comes.
    Read {
        cookie: u64,
        offset: u64,
        len: u32,
        df: bool,
    },
    /// Block status, checked; walked and sent when its turn comes.
    BlockStatus {
        cookie: u64,
        offset: u64,
        len: u32,
        req_one: bool,
    },
}

/// The connection's stream with a buffer in front.
struct Out {
    stream: Stream,
    buf: Box<[u8]>,
    used: usize,
}

impl Out {
    fn new(stream: Stream) -> Out {
        Out {
            stream,
            buf: Box::default(),
            used: 0,
        }
    }

    fn room(&mut self) -> usize {
        if self.buf.is_empty() {
            self.buf = vec![0u8; OUT_BUF].into_boxed_slice();
        }
        self.buf.len() - self.used
    }

    /// Appends bytes (written at once if they do not fit).
    fn put(&mut self, b: &[u8]) -> io::Result<()> {
        if b.len() > self.room() {
            self.flush(true)?;
            if b.len() > self.room() {
                return self.stream.write_all(b);
            }
        }
        self.buf[self.used..self.used + b.len()].copy_from_slice(b);
        self.used += b.len();
        Ok(())
    }

    /// Writes what is buffered; `more`: more of the same reply follows at once (TCP
    /// holds the bytes back to fill segments).
    fn flush(&mut self, more: bool) -> io::Result<()> {
        let mut b = &self.buf[..self.used];
        while !b.is_empty() {
            let n = match self.stream.send(b, more) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if n == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            b = &b[n..];
        }
        self.used = 0;
        Ok(())
    }

    /// Sends `len` bytes of `file` at `offset`, after what is buffered.
    fn file(&mut self, file: &std::fs::File, offset: u64, len: u64) -> io::Result<()> {
        self.flush(true)?;
        self.stream.send_file(file, offset, len)
    }

    /// Sends `len` zero bytes.
    fn zeros(&mut self, mut len: u64) -> io::Result<()> {
        if len <= self.room() as u64 {
            self.buf[self.used..self.used + len as usize].fill(0);
            self.used += len as usize;
            return Ok(());
        }
        self.flush(true)?;
        while len > 0 {
            let n = (ZEROS.len() as u64).min(len) as usize;
            self.stream.write_all(&ZEROS[..n])?;
            len -= n as u64;
        }
        Ok(())
    }

    /// Lets `f` fill the next `n` bytes of the buffer (`n` at most [`GATHER_MAX`]).
    fn fill(&mut self, n: usize, f: impl FnOnce(&mut [u8]) -> io::Result<()>) -> io::Result<()> {
        if n > self.room() {
            self.flush(true)?;
        }
        f(&mut self.buf[self.used..self.used + n])?;
        self.used += n;
        Ok(())
    }
}

/// One connection's sending state.
struct Sending<'a> {
    out: Out,
    export: &'a dyn Export,
    counters: &'a Counters,
    session: Session,
    /// The map of the read being sent, when its plan kept it whole.
    pieces: Vec<Piece>,
    mapped: Option<Mapped>,
    gather: Gatherer,
}

/// The sender thread of one connection: sends the queued replies until the queue
/// closes. After a failed send the connection is shut down and the rest dropped.
pub(crate) fn run(
    shared: &Shared,
    stream: Stream,
    rx: Receiver<Reply>,
    replies: &Share,
    session: Session,
) {
    let mut s = Sending {
        out: Out::new(stream),
        export: &*shared.export,
        counters: &shared.counters,
        session,
        pieces: Vec::new(),
        mapped: None,
        gather: Gatherer::default(),
    };
    let mut alive = true;
    // Replies made but still (partly) in the buffer, and their read bytes.
    let mut held = 0u64;
    let mut held_read = 0u64;
    for reply in rx.iter() {
        if alive {
            held += 1;
            match s.send(reply) {
                Ok(read) => held_read += read,
                Err(_) => alive = false,
            }
            if alive && (rx.is_empty() || held >= FLUSH_EVERY) {
                alive = s.out.flush(false).is_ok();
                if alive {
                    Counters::add(&s.counters.bytes_read, held_read);
                    replies.give(held);
                    (held, held_read) = (0, 0);
                }
            }
            if !alive {
                // The client is gone, or the data could not be read mid-reply: the
                // stream is out of step, close it. Later replies are dropped.
                Counters::add(&s.counters.errors, 1);
                s.out.stream.shutdown(Shutdown::Both);
                replies.give(held);
                held = 0;
            }
        } else {
            replies.give(1);
        }
    }
    // (The last reply always finds the queue empty and is flushed above; this only
    // settles the count should that ever change.)
    if alive && s.out.flush(false).is_ok() {
        Counters::add(&s.counters.bytes_read, held_read);
    }
    replies.give(held);
}

impl Sending<'_> {
    /// Makes and sends (or buffers) one reply; returns the read bytes it carries.
    fn send(&mut self, reply: Reply) -> io::Result<u64> {
        match reply {
            Reply::Bytes(b) => self.out.put(&b).map(|()| 0),
            Reply::Read {
                cookie,
                offset,
                len,
                df,
            } => {
                let len = u64::from(len);
                match read::plan(self.export, offset, len, &mut self.pieces) {
                    Ok(segs) => {
                        // A read within one plan window is gathered from the plan's
                        // map, not mapped again.
                        self.mapped = (len <= PLAN_WINDOW).then(|| Mapped::new(offset));
                        let sent = self.send_read(cookie, offset, df, &segs);
                        self.mapped = None;
                        sent?;
                        Ok(len)
                    }
                    Err(e) => self.error(cookie, e.errno, &e.message).map(|()| 0),
                }
            }
            Reply::BlockStatus {
                cookie,
                offset,
                len,
                req_one,
            } => {
                match read::block_status(
                    self.export,
                    offset,
                    u64::from(len),
                    req_one,
                    &mut self.pieces,
                ) {
                    Ok(d) if !d.is_empty() => {
                        let id = self
                            .session
                            .meta_context
                            .unwrap_or(proto::META_BASE_ALLOCATION_ID);
                        self.out.put(&proto::block_status_chunk(cookie, id, &d))?;
                    }
                    Ok(_) => self.error(cookie, proto::EIO, "the export mapped nothing")?,
                    Err(e) => self.error(cookie, e.errno, &e.message)?,
                }
                Ok(0)
            }
        }
    }

    fn error(&mut self, cookie: u64, errno: u32, message: &str) -> io::Result<()> {
        Counters::add(&self.counters.errors, 1);
        self.out
            .put(&proto::error_reply(&self.session, cookie, errno, message))
    }

    /// Sends a successful read: a simple reply with the data, or structured chunks —
    /// one data chunk for everything between holes long enough to matter.
    fn send_read(
        &mut self,
        cookie: u64,
        offset: u64,
        df: bool,
        segs: &[Segment],
    ) -> io::Result<()> {
        if !self.session.structured {
            self.out.put(&proto::simple_reply(cookie, 0))?;
            let mut at = offset;
            for seg in segs {
                self.send_segment(seg, at)?;
                at += seg.len();
            }
            return Ok(());
        }
        let chunks = proto::read_chunks(offset, segs.iter().map(|s| (s.len(), s.is_zero())), df);
        let Some(last) = chunks.len().checked_sub(1) else {
            // A read of nothing: the final chunk alone.
            return self.out.put(&proto::done_chunk(cookie));
        };
        let mut next = segs.iter();
        let mut at = offset;
        for (i, c) in chunks.iter().enumerate() {
            // Chunks hold whole segments and lengths of at most MAX_REQUEST. The last
            // one carries the final flag (no separate final chunk).
            let len = u32::try_from(c.len).map_err(|_| io::Error::other("chunk too long"))?;
            if c.hole {
                let mut h = proto::hole_chunk(cookie, c.offset, len);
                if i == last {
                    proto::mark_done(&mut h);
                }
                self.out.put(&h)?;
                next.next();
                at += c.len;
                continue;
            }
            let mut h = proto::data_chunk_header(cookie, c.offset, len);
            if i == last {
                proto::mark_done(&mut h);
            }
            self.out.put(&h)?;
            let mut sent = 0;
            while sent < c.len {
                let seg = next
                    .next()
                    .ok_or_else(|| io::Error::other("segments shorter than the read"))?;
                self.send_segment(seg, at)?;
                sent += seg.len();
                at += seg.len();
            }
        }
        Ok(())
    }

    /// Sends the bytes of one segment, which starts at export offset `at`.
    fn send_segment(&mut self, seg: &Segment, at: u64) -> io::Result<()> {
        match *seg {
            Segment::File {
                source,
                offset,
                len,
            } => match self.export.source_file(source) {
                Some(file) => self.out.file(file, offset, len),
                None => self.gather(at, len),
            },
            Segment::Zero { len } => self.out.zeros(len),
            Segment::Gather { len } => self.gather(at, len),
        }
    }

    /// Gathers `len` bytes at export offset `at` through the buffer.
    fn gather(&mut self, at: u64, len: u64) -> io::Result<()> {
        let mut done = 0u64;
        while done < len {
            let n = (GATHER_MAX as u64).min(len - done) as usize;
            let (export, gather) = (self.export, &mut self.gather);
            let mapped = self.mapped.as_mut().map(|m| (m, self.pieces.as_slice()));
            self.out.fill(n, |dst| {
                gather
                    .fill(export, at + done, dst, mapped)
                    .map_err(|e| io::Error::other(e.message))
            })?;
            done += n as u64;
        }
        Ok(())
    }
}
