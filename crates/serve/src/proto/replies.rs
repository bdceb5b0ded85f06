//! Replies of the transmission phase: simple replies, structured reply chunks (data,
//! hole, block status, error), block status descriptors and the chunk layout of a read.

use byteorder::{BigEndian, ByteOrder};

use super::wire::*;
use super::Session;

/// A simple reply (16 bytes): magic, error, cookie. A successful read's data follows it.
pub fn simple_reply(cookie: u64, errno: u32) -> [u8; 16] {
    let mut b = [0u8; 16];
    b[..4].copy_from_slice(&SIMPLE_REPLY_MAGIC.to_be_bytes());
    b[4..8].copy_from_slice(&errno.to_be_bytes());
    b[8..].copy_from_slice(&cookie.to_be_bytes());
    b
}

/// A structured reply chunk header (20 bytes): magic, flags, type, cookie, payload length.
pub fn chunk_header(cookie: u64, flags: u16, kind: u16, len: u32) -> [u8; 20] {
    let mut b = [0u8; 20];
    b[..4].copy_from_slice(&STRUCTURED_REPLY_MAGIC.to_be_bytes());
    b[4..6].copy_from_slice(&flags.to_be_bytes());
    b[6..8].copy_from_slice(&kind.to_be_bytes());
    b[8..16].copy_from_slice(&cookie.to_be_bytes());
    b[16..].copy_from_slice(&len.to_be_bytes());
    b
}

/// The final chunk of a successful structured reply.
pub fn done_chunk(cookie: u64) -> [u8; 20] {
    chunk_header(cookie, REPLY_FLAG_DONE, REPLY_TYPE_NONE, 0)
}

/// Header of an `NBD_REPLY_TYPE_OFFSET_DATA` chunk (28 bytes) announcing `len` data bytes
/// at `offset`; the data follows. `len` is at most [`MAX_REQUEST`].
pub fn data_chunk_header(cookie: u64, offset: u64, len: u32) -> [u8; 28] {
    let mut b = [0u8; 28];
    b[..20].copy_from_slice(&chunk_header(
        cookie,
        0,
        REPLY_TYPE_OFFSET_DATA,
        len.saturating_add(8),
    ));
    b[20..].copy_from_slice(&offset.to_be_bytes());
    b
}

/// An `NBD_REPLY_TYPE_OFFSET_HOLE` chunk (32 bytes): `len` zero bytes at `offset`.
pub fn hole_chunk(cookie: u64, offset: u64, len: u32) -> [u8; 32] {
    let mut b = [0u8; 32];
    b[..20].copy_from_slice(&chunk_header(cookie, 0, REPLY_TYPE_OFFSET_HOLE, 12));
    b[20..28].copy_from_slice(&offset.to_be_bytes());
    b[28..].copy_from_slice(&len.to_be_bytes());
    b
}

/// Makes a structured chunk (its header at the start of `chunk`) the last of its reply:
/// sets `NBD_REPLY_FLAG_DONE`, so that a read answered by one data chunk, or ending in
/// one, needs no separate final chunk.
///
/// ```
/// use vhdkit_serve::proto::{data_chunk_header, mark_done, REPLY_FLAG_DONE};
///
/// let mut h = data_chunk_header(7, 4096, 512);
/// mark_done(&mut h);
/// assert_eq!(u16::from_be_bytes([h[4], h[5]]), REPLY_FLAG_DONE);
/// ```
pub fn mark_done(chunk: &mut [u8]) {
    if let Some(f) = chunk.get_mut(4..6) {
        let flags = BigEndian::read_u16(f) | REPLY_FLAG_DONE;
        f.copy_from_slice(&flags.to_be_bytes());
    }
}

/// A final `NBD_REPLY_TYPE_ERROR` chunk with a message (cut to 4096 bytes).
pub fn error_chunk(cookie: u64, errno: u32, message: &str) -> Vec<u8> {
    let msg = &message.as_bytes()[..message.len().min(MAX_STRING)];
    let mut b = Vec::with_capacity(26 + msg.len());
    b.extend_from_slice(&chunk_header(
        cookie,
        REPLY_FLAG_DONE,
        REPLY_TYPE_ERROR,
        6 + msg.len() as u32,
    ));
    b.extend_from_slice(&errno.to_be_bytes());
    b.extend_from_slice(&(msg.len() as u16).to_be_bytes());
    b.extend_from_slice(msg);
    b
}

/// The reply to a request that failed: a structured error chunk when structured replies
/// were negotiated, a simple reply otherwise.
pub fn error_reply(session: &Session, cookie: u64, errno: u32, message: &str) -> Vec<u8> {
    if session.structured {
        error_chunk(cookie, errno, message)
    } else {
        simple_reply(cookie, errno).to_vec()
    }
}

/// The reply to a request that succeeded without data.
pub fn ok_reply(session: &Session, cookie: u64) -> Vec<u8> {
    if session.structured {
        done_chunk(cookie).to_vec()
    } else {
        simple_reply(cookie, 0).to_vec()
    }
}

/// A final `NBD_REPLY_TYPE_BLOCK_STATUS` chunk for `context` with `(length, status)`
/// descriptors (at most [`MAX_DESCRIPTORS`] are used).
pub fn block_status_chunk(cookie: u64, context: u32, descriptors: &[(u32, u32)]) -> Vec<u8> {
    let d = &descriptors[..descriptors.len().min(MAX_DESCRIPTORS)];
    let len = 4 + 8 * d.len() as u32;
    let mut b = Vec::with_capacity(20 + len as usize);
    b.extend_from_slice(&chunk_header(
        cookie,
        REPLY_FLAG_DONE,
        REPLY_TYPE_BLOCK_STATUS,
        len,
    ));
    b.extend_from_slice(&context.to_be_bytes());
    for &(l, s) in d {
        b.extend_from_slice(&l.to_be_bytes());
        b.extend_from_slice(&s.to_be_bytes());
    }
    b
}

/// Block status descriptors for a range starting at the request's offset, from its parts
/// in order (`(length, is_zero)`): neighbours with the same status merged, lengths
/// capped to 32 bits, the list cut after [`MAX_DESCRIPTORS`] (or after one with
/// `req_one`, then no longer than the request). [`Descriptors`] builds the same list
/// part by part.
pub fn descriptors(parts: impl IntoIterator<Item = (u64, bool)>, req_one: bool) -> Vec<(u32, u32)> {
    let mut d = Descriptors::new(req_one);
    for (len, zero) in parts {
        if !d.push(len, zero) {
            break;
        }
    }
    d.finish()
}

/// Block status descriptors built part by part, for a server that maps a long range a
/// window at a time and stops as soon as the reply is full.
///
/// ```
/// use vhdkit_serve::proto::{Descriptors, STATE_HOLE, STATE_ZERO};
///
/// let mut d = Descriptors::new(false);
/// assert!(d.push(4096, false));
/// assert!(d.push(512, false)); // same status: merged
/// assert!(d.push(1 << 20, true));
/// assert_eq!(d.finish(), vec![(4608, 0), (1 << 20, STATE_HOLE | STATE_ZERO)]);
/// ```
#[derive(Debug, Clone)]
pub struct Descriptors {
    out: Vec<(u64, u32)>,
    req_one: bool,
    full: bool,
}

impl Descriptors {
    /// An empty list; `req_one`: one descriptor only (`NBD_CMD_FLAG_REQ_ONE`).
    pub fn new(req_one: bool) -> Descriptors {
        Descriptors {
            out: Vec::new(),
            req_one,
            full: false,
        }
    }

    /// Adds the next part (`len` bytes, zero or not). Returns false once the list is
    /// full (this part and every later one left for the client to ask again).
    pub fn push(&mut self, len: u64, zero: bool) -> bool {
        if self.full {
            return false;
        }
        if len == 0 {
            return true;
        }
        let status = if zero { STATE_HOLE | STATE_ZERO } else { 0 };
        match self.out.last_mut() {
            Some((l, s)) if *s == status => *l = l.saturating_add(len),
            _ => {
                if self.out.len() == MAX_DESCRIPTORS || (self.req_one && !self.out.is_empty()) {
                    self.full = true;
                    return false;
                }
                self.out.push((len, status));
            }
        }
        // A run longer than 32 bits is cut and ends the list (below): nothing after it.
        if self
            .out
            .last()
            .is_some_and(|&(l, _)| l > MAX_DESCRIPTOR_LEN)
        {
            self.full = true;
            return false;
        }
        true
    }

    /// Whether the list takes no more parts.
    pub fn is_full(&self) -> bool {
        self.full
    }

    /// Bytes the list covers so far (before the 32-bit cut of [`Descriptors::finish`]).
    pub fn covered(&self) -> u64 {
        self.out.iter().map(|&(l, _)| l).sum()
    }

    /// The descriptors `(length, status)`: a run longer than 32 bits (only possible for
    /// a request of nearly 4 GiB) is cut to a multiple of 512 and ends the list, so the
    /// descriptors stay contiguous.
    pub fn finish(self) -> Vec<(u32, u32)> {
        let mut d = Vec::with_capacity(self.out.len());
        for (l, s) in self.out {
            if l > MAX_DESCRIPTOR_LEN {
                d.push((MAX_DESCRIPTOR_LEN as u32, s));
                break;
            }
            d.push((l as u32, s));
        }
        d
    }
}

/// Longest descriptor: the 32-bit length field, cut to a multiple of 512.
const MAX_DESCRIPTOR_LEN: u64 = u32::MAX as u64 / 512 * 512;

// ---------------------------------------------------------------------------------------
// Read replies
// ---------------------------------------------------------------------------------------

/// Zero runs shorter than this inside data are sent as zero bytes in the data chunk
/// rather than as a chunk of their own (fewer chunks, as the protocol recommends).
pub const MIN_HOLE_CHUNK: u64 = 64 * 1024;

/// One chunk of a structured read reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadChunk {
    /// Export offset of the chunk.
    pub offset: u64,
    /// Length.
    pub len: u64,
    /// A hole chunk (no data); otherwise a data chunk.
    pub hole: bool,
}

/// Lays out the content chunks of a structured read reply over the read's parts (in
/// order from `offset`, `(length, is_zero)`): zero parts of at least [`MIN_HOLE_CHUNK`]
/// become hole chunks, everything else is grouped into data chunks. With `df`, the
/// whole read is one data chunk.
pub fn read_chunks(
    offset: u64,
    parts: impl IntoIterator<Item = (u64, bool)>,
    df: bool,
) -> Vec<ReadChunk> {
    let mut out: Vec<ReadChunk> = Vec::new();
    let mut pos = offset;
    for (len, zero) in parts {
        if len == 0 {
            continue;
        }
        let hole = zero && !df && len >= MIN_HOLE_CHUNK;
        match out.last_mut() {
            Some(c) if !c.hole && !hole => c.len += len,
            _ => out.push(ReadChunk {
                offset: pos,
                len,
                hole,
            }),
        }
        pos += len;
    }
    out
}
