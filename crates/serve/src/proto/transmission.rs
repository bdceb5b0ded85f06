//! The transmission phase: request headers decoded, and checked against what was
//! negotiated before anything runs.

use byteorder::{BigEndian, ByteOrder};

use super::wire::*;
use super::ProtocolError;

/// What was negotiated for the transmission phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Session {
    /// Export size in bytes.
    pub size: u64,
    /// Transmission flags sent to the client.
    pub flags: u16,
    /// Structured replies were negotiated.
    pub structured: bool,
    /// The id of `base:allocation` if it was selected.
    pub meta_context: Option<u32>,
}

/// A request header as sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request {
    /// Command flags.
    pub flags: u16,
    /// Command type.
    pub kind: u16,
    /// The client's cookie (handle), echoed in the reply.
    pub cookie: u64,
    /// Offset in the export.
    pub offset: u64,
    /// Length.
    pub len: u32,
}

/// Decodes a 28-byte request header; a bad magic ends the connection.
pub fn parse_request(b: &[u8; REQUEST_SIZE]) -> Result<Request, ProtocolError> {
    let magic = BigEndian::read_u32(&b[..4]);
    if magic != REQUEST_MAGIC {
        return Err(ProtocolError::BadMagic {
            what: "request",
            found: u64::from(magic),
        });
    }
    Ok(Request {
        flags: BigEndian::read_u16(&b[4..6]),
        kind: BigEndian::read_u16(&b[6..8]),
        cookie: BigEndian::read_u64(&b[8..16]),
        offset: BigEndian::read_u64(&b[16..24]),
        len: BigEndian::read_u32(&b[24..28]),
    })
}

/// A valid request, ready to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// Read `len` bytes at `offset`; `df`: one content chunk.
    Read {
        /// Offset.
        offset: u64,
        /// Length (at most [`MAX_REQUEST`]).
        len: u32,
        /// Don't fragment.
        df: bool,
    },
    /// Write the `len`-byte payload at `offset`.
    Write {
        /// Offset.
        offset: u64,
        /// Payload length (at most [`MAX_REQUEST`]).
        len: u32,
        /// Durable before the reply.
        fua: bool,
    },
    /// Disconnect once the requests in flight are answered.
    Disconnect,
    /// Make every completed write durable.
    Flush,
    /// The range is no longer needed.
    Trim {
        /// Offset.
        offset: u64,
        /// Length.
        len: u32,
        /// Durable before the reply.
        fua: bool,
    },
    /// Make the range read as zeros.
    WriteZeroes {
        /// Offset.
        offset: u64,
        /// Length.
        len: u32,
        /// Durable before the reply.
        fua: bool,
        /// The range must stay allocated.
        no_hole: bool,
    },
    /// Allocation status of the range.
    BlockStatus {
        /// Offset.
        offset: u64,
        /// Length.
        len: u32,
        /// One descriptor only.
        req_one: bool,
    },
}

/// Why a request is not run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Answer with this NBD error, after skipping `skip` payload bytes.
    Error {
        /// NBD error value.
        errno: u32,
        /// Payload bytes that follow the request and must be read and dropped.
        skip: u32,
        /// Why, for people.
        message: &'static str,
    },
    /// Close the connection (no reply).
    Close(ProtocolError),
}

impl Session {
    /// Whether the session advertised `flag`.
    pub fn has(&self, flag: u16) -> bool {
        self.flags & flag != 0
    }

    /// Validates a request against what was negotiated: command known, flags allowed
    /// for it, range inside the export, lengths capped.
    pub fn check(&self, r: &Request) -> Result<Command, Refusal> {
        let skip = if r.kind == CMD_WRITE { r.len } else { 0 };
        let refuse = |errno, message| Refusal::Error {
            errno,
            skip,
            message,
        };
        if r.kind == CMD_WRITE && r.len > MAX_REQUEST {
            return Err(Refusal::Close(ProtocolError::WriteTooLong(r.len)));
        }
        let fua_ok = if self.has(FLAG_SEND_FUA) {
            CMD_FLAG_FUA
        } else {
            0
        };
        let allowed = fua_ok
            | match r.kind {
                CMD_READ if self.structured => CMD_FLAG_DF,
                CMD_WRITE_ZEROES => CMD_FLAG_NO_HOLE,
                CMD_BLOCK_STATUS => CMD_FLAG_REQ_ONE,
                CMD_READ | CMD_WRITE | CMD_DISC | CMD_FLUSH | CMD_TRIM => 0,
                _ => return Err(refuse(EINVAL, "unknown command")),
            };
        if r.kind == CMD_DISC {
            return Ok(Command::Disconnect);
        }
        if r.flags & !allowed != 0 {
            return Err(refuse(EINVAL, "command flags not valid for this command"));
        }
        let fua = r.flags & CMD_FLAG_FUA != 0;
        if r.kind == CMD_FLUSH {
            if r.offset != 0 || r.len != 0 {
                return Err(refuse(EINVAL, "flush with a nonzero offset or length"));
            }
            return Ok(Command::Flush);
        }
        let writes = matches!(r.kind, CMD_WRITE | CMD_TRIM | CMD_WRITE_ZEROES);
        if writes && self.has(FLAG_READ_ONLY) {
            return Err(refuse(EPERM, "the export is read-only"));
        }
        if r.kind == CMD_READ && r.len > MAX_REQUEST {
            return Err(refuse(EINVAL, "read longer than the maximum block size"));
        }
        let inside = r
            .offset
            .checked_add(u64::from(r.len))
            .is_some_and(|end| end <= self.size);
        if !inside {
            let errno = if matches!(r.kind, CMD_WRITE | CMD_WRITE_ZEROES) {
                ENOSPC
            } else {
                EINVAL
            };
            return Err(refuse(errno, "range outside the export"));
        }
        let (offset, len) = (r.offset, r.len);
        Ok(match r.kind {
            CMD_READ => Command::Read {
                offset,
                len,
                df: r.flags & CMD_FLAG_DF != 0,
            },
            CMD_WRITE => Command::Write { offset, len, fua },
            CMD_TRIM => Command::Trim { offset, len, fua },
            CMD_WRITE_ZEROES => Command::WriteZeroes {
                offset,
                len,
                fua,
                no_hole: r.flags & CMD_FLAG_NO_HOLE != 0,
            },
            _ => {
                if !self.structured || self.meta_context.is_none() {
                    return Err(refuse(EINVAL, "no metadata context was negotiated"));
                }
                if len == 0 {
                    return Err(refuse(EINVAL, "block status of zero bytes"));
                }
                Command::BlockStatus {
                    offset,
                    len,
                    req_one: r.flags & CMD_FLAG_REQ_ONE != 0,
                }
            }
        })
    }
}
