//! The wire: every number the protocol defines (magics, flags, option, reply, command
//! and error codes), the limits this server holds clients to, and the big-endian fields
//! all messages are made of.

use byteorder::{BigEndian, ByteOrder};

// ---------------------------------------------------------------------------------------
// Magic numbers
// ---------------------------------------------------------------------------------------

/// First 8 bytes the server sends: ASCII `NBDMAGIC`.
pub const NBDMAGIC: u64 = 0x4e42_444d_4147_4943;
/// Newstyle magic after [`NBDMAGIC`], and the magic starting every option request: ASCII
/// `IHAVEOPT`.
pub const IHAVEOPT: u64 = 0x4948_4156_454f_5054;
/// Magic starting every option reply.
pub const OPTION_REPLY_MAGIC: u64 = 0x0003_e889_0455_65a9;
/// Magic starting every transmission request.
pub const REQUEST_MAGIC: u32 = 0x2560_9513;
/// Magic starting a simple reply.
pub const SIMPLE_REPLY_MAGIC: u32 = 0x6744_6698;
/// Magic starting a structured reply chunk.
pub const STRUCTURED_REPLY_MAGIC: u32 = 0x668e_33ef;

// ---------------------------------------------------------------------------------------
// Handshake flags
// ---------------------------------------------------------------------------------------

/// Handshake flag: the server speaks fixed newstyle.
pub const FLAG_FIXED_NEWSTYLE: u16 = 1 << 0;
/// Handshake flag: the server can omit the 124 zero bytes after `NBD_OPT_EXPORT_NAME`.
pub const FLAG_NO_ZEROES: u16 = 1 << 1;
/// Client flag: the client speaks fixed newstyle.
pub const FLAG_C_FIXED_NEWSTYLE: u32 = 1 << 0;
/// Client flag: omit the 124 zero bytes after `NBD_OPT_EXPORT_NAME`.
pub const FLAG_C_NO_ZEROES: u32 = 1 << 1;

// ---------------------------------------------------------------------------------------
// Transmission flags (16 bits, sent with the export's size)
// ---------------------------------------------------------------------------------------

/// Transmission flag: always set.
pub const FLAG_HAS_FLAGS: u16 = 1 << 0;
/// Transmission flag: the export is read-only; writes fail with `EPERM`.
pub const FLAG_READ_ONLY: u16 = 1 << 1;
/// Transmission flag: `NBD_CMD_FLUSH` is understood.
pub const FLAG_SEND_FLUSH: u16 = 1 << 2;
/// Transmission flag: `NBD_CMD_FLAG_FUA` is understood.
pub const FLAG_SEND_FUA: u16 = 1 << 3;
/// Transmission flag: `NBD_CMD_TRIM` is understood.
pub const FLAG_SEND_TRIM: u16 = 1 << 5;
/// Transmission flag: `NBD_CMD_WRITE_ZEROES` (and `NBD_CMD_FLAG_NO_HOLE`) are understood.
pub const FLAG_SEND_WRITE_ZEROES: u16 = 1 << 6;
/// Transmission flag: `NBD_CMD_FLAG_DF` is understood (only with structured replies).
pub const FLAG_SEND_DF: u16 = 1 << 7;
/// Transmission flag: all connections share one cache; a flush on one covers every
/// connection's completed writes.
pub const FLAG_CAN_MULTI_CONN: u16 = 1 << 8;

// ---------------------------------------------------------------------------------------
// Options
// ---------------------------------------------------------------------------------------

/// Option: choose the export and enter transmission (no error reply possible).
pub const OPT_EXPORT_NAME: u32 = 1;
/// Option: the client ends the negotiation.
pub const OPT_ABORT: u32 = 2;
/// Option: list the exports.
pub const OPT_LIST: u32 = 3;
/// Option: start TLS (not offered: this server has no TLS).
pub const OPT_STARTTLS: u32 = 5;
/// Option: describe an export.
pub const OPT_INFO: u32 = 6;
/// Option: describe an export and enter transmission.
pub const OPT_GO: u32 = 7;
/// Option: use structured replies.
pub const OPT_STRUCTURED_REPLY: u32 = 8;
/// Option: list metadata contexts.
pub const OPT_LIST_META_CONTEXT: u32 = 9;
/// Option: select metadata contexts for `NBD_CMD_BLOCK_STATUS`.
pub const OPT_SET_META_CONTEXT: u32 = 10;

/// Option reply: the option succeeded (or a list ended).
pub const REP_ACK: u32 = 1;
/// Option reply: one export of `NBD_OPT_LIST`.
pub const REP_SERVER: u32 = 2;
/// Option reply: one item of information about an export.
pub const REP_INFO: u32 = 3;
/// Option reply: one metadata context.
pub const REP_META_CONTEXT: u32 = 4;
/// Option error: the option is not known or not supported.
pub const REP_ERR_UNSUP: u32 = 0x8000_0001;
/// Option error: the option is known but forbidden here.
pub const REP_ERR_POLICY: u32 = 0x8000_0002;
/// Option error: the option's data is malformed or out of sequence.
pub const REP_ERR_INVALID: u32 = 0x8000_0003;
/// Option error: no such export.
pub const REP_ERR_UNKNOWN: u32 = 0x8000_0006;
/// Option error: the server is shutting down.
pub const REP_ERR_SHUTDOWN: u32 = 0x8000_0007;
/// Option error: the request or the reply would be too large.
pub const REP_ERR_TOO_BIG: u32 = 0x8000_0009;

/// Information type: size and transmission flags (always sent).
pub const INFO_EXPORT: u16 = 0;
/// Information type: the export's canonical name.
pub const INFO_NAME: u16 = 1;
/// Information type: a description for people.
pub const INFO_DESCRIPTION: u16 = 2;
/// Information type: minimum, preferred and maximum block sizes.
pub const INFO_BLOCK_SIZE: u16 = 3;

/// The one metadata context served: allocation status of extents.
pub const META_BASE_ALLOCATION: &str = "base:allocation";
/// The id this server gives `base:allocation` when it is selected.
pub const META_BASE_ALLOCATION_ID: u32 = 1;

// ---------------------------------------------------------------------------------------
// Transmission
// ---------------------------------------------------------------------------------------

/// Command: read.
pub const CMD_READ: u16 = 0;
/// Command: write (a payload of `length` bytes follows the request).
pub const CMD_WRITE: u16 = 1;
/// Command: disconnect after the requests in flight (no reply).
pub const CMD_DISC: u16 = 2;
/// Command: make every completed write durable.
pub const CMD_FLUSH: u16 = 3;
/// Command: the range is no longer needed.
pub const CMD_TRIM: u16 = 4;
/// Command: make the range read as zeros.
pub const CMD_WRITE_ZEROES: u16 = 6;
/// Command: allocation status of a range.
pub const CMD_BLOCK_STATUS: u16 = 7;

/// Command flag: reply only once the command's writes are durable.
pub const CMD_FLAG_FUA: u16 = 1 << 0;
/// Command flag (`WRITE_ZEROES`): leave the range allocated.
pub const CMD_FLAG_NO_HOLE: u16 = 1 << 1;
/// Command flag (`READ`): at most one content chunk.
pub const CMD_FLAG_DF: u16 = 1 << 2;
/// Command flag (`BLOCK_STATUS`): one extent only.
pub const CMD_FLAG_REQ_ONE: u16 = 1 << 3;
/// Command flag (`WRITE_ZEROES`): fail unless faster than a write (not offered).
pub const CMD_FLAG_FAST_ZERO: u16 = 1 << 4;

/// Structured reply flag: the last chunk of a reply.
pub const REPLY_FLAG_DONE: u16 = 1 << 0;
/// Chunk type: nothing (ends a reply).
pub const REPLY_TYPE_NONE: u16 = 0;
/// Chunk type: data at an offset.
pub const REPLY_TYPE_OFFSET_DATA: u16 = 1;
/// Chunk type: a range reading as zeros.
pub const REPLY_TYPE_OFFSET_HOLE: u16 = 2;
/// Chunk type: block status descriptors of one metadata context.
pub const REPLY_TYPE_BLOCK_STATUS: u16 = 5;
/// Chunk type: an error without an offset.
pub const REPLY_TYPE_ERROR: u16 = 0x8001;

/// `base:allocation` status: not allocated.
pub const STATE_HOLE: u32 = 1 << 0;
/// `base:allocation` status: reads as zeros.
pub const STATE_ZERO: u32 = 1 << 1;

/// NBD error: operation not permitted (a write to a read-only export).
pub const EPERM: u32 = 1;
/// NBD error: input/output error.
pub const EIO: u32 = 5;
/// NBD error: invalid argument (bad flags, range, length or command).
pub const EINVAL: u32 = 22;
/// NBD error: no space left (a write past the end, or the host volume is full).
pub const ENOSPC: u32 = 28;
/// NBD error: the server is shutting down.
pub const ESHUTDOWN: u32 = 108;

// ---------------------------------------------------------------------------------------
// Limits
// ---------------------------------------------------------------------------------------

/// Longest option data accepted; a longer option ends the connection (it cannot be
/// skipped without reading it).
pub const MAX_OPTION_DATA: u32 = 64 * 1024;
/// Options accepted in one negotiation before the connection is closed.
pub const MAX_OPTIONS: usize = 128;
/// Queries accepted in one metadata context option.
pub const MAX_META_QUERIES: u32 = 64;
/// Longest string (export name, query) the protocol allows.
pub const MAX_STRING: usize = 4096;
/// Longest `READ` or `WRITE` (the advertised maximum block size, the protocol's
/// portable maximum). A longer read gets `EINVAL`; a longer write ends the connection.
pub const MAX_REQUEST: u32 = 32 * 1024 * 1024;
/// Preferred block size advertised.
pub const PREFERRED_BLOCK: u32 = 4096;
/// Block status descriptors in one reply (the rest of the range is left for the client
/// to ask again, as the protocol allows).
pub const MAX_DESCRIPTORS: usize = 4096;
/// Size of a request header.
pub const REQUEST_SIZE: usize = 28;
/// Size of an option request header.
pub const OPTION_HEADER_SIZE: usize = 16;

/// A cursor over option data: each take fails (None) past the end.
pub(crate) struct Reader<'a>(pub(crate) &'a [u8]);

impl<'a> Reader<'a> {
    pub(crate) fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (a, b) = (self.0.get(..n)?, self.0.get(n..)?);
        self.0 = b;
        Some(a)
    }

    pub(crate) fn u32(&mut self) -> Option<u32> {
        self.take(4).map(BigEndian::read_u32)
    }
}
