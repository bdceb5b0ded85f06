//! The NBD protocol, pure over bytes: no sockets, no threads, no disk.
//!
//! The server side of the fixed newstyle handshake ([`Negotiation`]), the transmission
//! requests ([`parse_request`], [`Session::check`]) and every reply the server sends
//! (option replies, simple replies and structured reply chunks). Values and layouts follow
//! the NBD protocol specification (`doc/proto.md` of the NetworkBlockDevice project);
//! each constant's doc names the field it fills.
//!
//! Everything a client sends is hostile: lengths are checked against the bytes present and
//! against caps ([`MAX_OPTION_DATA`], [`MAX_OPTIONS`], [`MAX_REQUEST`]), offsets against
//! the export size with checked arithmetic, and flags against what was negotiated. A bad
//! option gets an error reply; a bad request gets an NBD error; only what the protocol
//! cannot recover from (bad magic, an unknown client flag, a write payload too large to
//! accept) ends the connection.
//!
//! ```
//! use vhdkit_serve::proto::{ExportInfo, Negotiation, OptionHeader, Step, OPT_GO, REP_ACK};
//!
//! let mut n = Negotiation::new(ExportInfo::new("", 1 << 20, false, true));
//! n.client_flags(1).unwrap(); // NBD_FLAG_C_FIXED_NEWSTYLE
//! // NBD_OPT_GO for the default export, no information requests.
//! let data = [0, 0, 0, 0, 0, 0];
//! let mut out = Vec::new();
//! let step = n.option(OptionHeader { option: OPT_GO, len: 6 }, &data, &mut out);
//! let Step::Transmission(session) = step else { panic!("not accepted") };
//! assert_eq!(session.size, 1 << 20);
//! // The last reply of the option is NBD_REP_ACK.
//! assert_eq!(&out[out.len() - 8..out.len() - 4], &REP_ACK.to_be_bytes());
//! ```

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

// ---------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------

/// A protocol violation the connection cannot survive.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    /// A magic number was wrong.
    #[error("bad magic {found:#x} in {what}")]
    BadMagic {
        /// Which message.
        what: &'static str,
        /// The value found.
        found: u64,
    },
    /// The client set flags the server does not know.
    #[error("unknown client flags {0:#x}")]
    ClientFlags(u32),
    /// An option's data is longer than [`MAX_OPTION_DATA`].
    #[error("option {option} carries {len} bytes (at most {MAX_OPTION_DATA})")]
    OptionTooLong {
        /// The option.
        option: u32,
        /// Its data length.
        len: u32,
    },
    /// More than [`MAX_OPTIONS`] options.
    #[error("more than {MAX_OPTIONS} options")]
    TooManyOptions,
    /// `NBD_OPT_EXPORT_NAME` named an export that does not exist.
    #[error("NBD_OPT_EXPORT_NAME for an unknown export")]
    UnknownExport,
    /// A write longer than [`MAX_REQUEST`].
    #[error("write of {0} bytes (at most {MAX_REQUEST})")]
    WriteTooLong(u32),
    /// The client asked to abort.
    #[error("the client aborted the negotiation")]
    Aborted,
}

// ---------------------------------------------------------------------------------------
// Handshake
// ---------------------------------------------------------------------------------------

/// What the server tells clients about its one export.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportInfo {
    /// The export's name (the empty name, the default export, is accepted too).
    pub name: String,
    /// A description for `NBD_INFO_DESCRIPTION` and `NBD_OPT_LIST`.
    pub description: String,
    /// Size in bytes.
    pub size: u64,
    /// Writes are refused.
    pub read_only: bool,
    /// Several connections may be used at once (see [`FLAG_CAN_MULTI_CONN`]).
    pub multi_conn: bool,
}

impl ExportInfo {
    /// An export without description.
    pub fn new(name: &str, size: u64, read_only: bool, multi_conn: bool) -> ExportInfo {
        ExportInfo {
            name: name.to_owned(),
            description: String::new(),
            size,
            read_only,
            multi_conn,
        }
    }

    /// Whether a client's export name means this export.
    pub fn matches(&self, name: &[u8]) -> bool {
        name.is_empty() || name == self.name.as_bytes()
    }

    /// Transmission flags, given whether structured replies were negotiated.
    pub fn flags(&self, structured: bool) -> u16 {
        let mut f = FLAG_HAS_FLAGS | FLAG_SEND_FLUSH;
        if self.read_only {
            f |= FLAG_READ_ONLY;
        } else {
            f |= FLAG_SEND_FUA | FLAG_SEND_TRIM | FLAG_SEND_WRITE_ZEROES;
        }
        if structured {
            f |= FLAG_SEND_DF;
        }
        if self.multi_conn {
            f |= FLAG_CAN_MULTI_CONN;
        }
        f
    }
}

/// The first message of the server (18 bytes): `NBDMAGIC`, `IHAVEOPT`, handshake flags.
pub fn greeting() -> [u8; 18] {
    let mut b = [0u8; 18];
    b[..8].copy_from_slice(&NBDMAGIC.to_be_bytes());
    b[8..16].copy_from_slice(&IHAVEOPT.to_be_bytes());
    b[16..].copy_from_slice(&(FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES).to_be_bytes());
    b
}

/// The fixed part of an option request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OptionHeader {
    /// Option code (`NBD_OPT_*`).
    pub option: u32,
    /// Length of the option data that follows.
    pub len: u32,
}

impl OptionHeader {
    /// Decodes the 16-byte header: magic, option, length. A length over
    /// [`MAX_OPTION_DATA`] is an error (the connection is closed).
    pub fn parse(b: &[u8; OPTION_HEADER_SIZE]) -> Result<OptionHeader, ProtocolError> {
        let magic = be64(&b[..8]);
        if magic != IHAVEOPT {
            return Err(ProtocolError::BadMagic {
                what: "option request",
                found: magic,
            });
        }
        let h = OptionHeader {
            option: be32(&b[8..12]),
            len: be32(&b[12..16]),
        };
        if h.len > MAX_OPTION_DATA {
            return Err(ProtocolError::OptionTooLong {
                option: h.option,
                len: h.len,
            });
        }
        Ok(h)
    }
}

/// What follows an option.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Read the next option.
    Continue,
    /// Send the replies, then enter transmission with this session.
    Transmission(Session),
    /// Send the replies, then close the connection.
    Close(ProtocolError),
}

/// The server's side of the fixed newstyle handshake, one option at a time.
#[derive(Debug, Clone)]
pub struct Negotiation {
    export: ExportInfo,
    no_zeroes: bool,
    structured: bool,
    meta: bool,
    options: usize,
    shutting_down: bool,
}

impl Negotiation {
    /// A negotiation for `export`.
    pub fn new(export: ExportInfo) -> Negotiation {
        Negotiation {
            export,
            no_zeroes: false,
            structured: false,
            meta: false,
            options: 0,
            shutting_down: false,
        }
    }

    /// From now on, answer every option but `NBD_OPT_ABORT` with `NBD_REP_ERR_SHUTDOWN`.
    pub fn set_shutting_down(&mut self) {
        self.shutting_down = true;
    }

    /// Takes the client's 32-bit flags (after [`greeting`]). Unknown flags end the
    /// connection, as the protocol requires. A client without fixed newstyle is served
    /// as if it had it (the protocol allows this).
    pub fn client_flags(&mut self, flags: u32) -> Result<(), ProtocolError> {
        if flags & !(FLAG_C_FIXED_NEWSTYLE | FLAG_C_NO_ZEROES) != 0 {
            return Err(ProtocolError::ClientFlags(flags));
        }
        self.no_zeroes = flags & FLAG_C_NO_ZEROES != 0;
        Ok(())
    }

    /// Handles one option with its `data` (exactly `header.len` bytes), appending every
    /// reply to `out`.
    pub fn option(&mut self, header: OptionHeader, data: &[u8], out: &mut Vec<u8>) -> Step {
        let opt = header.option;
        self.options += 1;
        if self.options > MAX_OPTIONS {
            return Step::Close(ProtocolError::TooManyOptions);
        }
        if data.len() != header.len as usize {
            option_reply(out, opt, REP_ERR_INVALID, b"option length mismatch");
            return Step::Continue;
        }
        if self.shutting_down && opt != OPT_ABORT {
            if opt == OPT_EXPORT_NAME {
                return Step::Close(ProtocolError::UnknownExport);
            }
            option_reply(out, opt, REP_ERR_SHUTDOWN, b"the server is shutting down");
            return Step::Continue;
        }
        match opt {
            OPT_EXPORT_NAME => {
                if !self.export.matches(data) {
                    return Step::Close(ProtocolError::UnknownExport);
                }
                out.extend_from_slice(&self.export.size.to_be_bytes());
                out.extend_from_slice(&self.export.flags(self.structured).to_be_bytes());
                if !self.no_zeroes {
                    out.extend_from_slice(&[0u8; 124]);
                }
                Step::Transmission(self.session())
            }
            OPT_ABORT => {
                option_reply(out, opt, REP_ACK, b"");
                Step::Close(ProtocolError::Aborted)
            }
            OPT_LIST => {
                if !data.is_empty() {
                    option_reply(out, opt, REP_ERR_INVALID, b"NBD_OPT_LIST takes no data");
                    return Step::Continue;
                }
                let mut p = Vec::with_capacity(4 + self.export.name.len());
                p.extend_from_slice(&(self.export.name.len() as u32).to_be_bytes());
                p.extend_from_slice(self.export.name.as_bytes());
                p.extend_from_slice(self.export.description.as_bytes());
                option_reply(out, opt, REP_SERVER, &p);
                option_reply(out, opt, REP_ACK, b"");
                Step::Continue
            }
            OPT_STRUCTURED_REPLY => {
                if !data.is_empty() {
                    option_reply(out, opt, REP_ERR_INVALID, b"takes no data");
                } else if self.structured {
                    option_reply(out, opt, REP_ERR_INVALID, b"already negotiated");
                } else {
                    self.structured = true;
                    option_reply(out, opt, REP_ACK, b"");
                }
                Step::Continue
            }
            OPT_INFO | OPT_GO => self.info_or_go(opt, data, out),
            OPT_LIST_META_CONTEXT | OPT_SET_META_CONTEXT => {
                let set = opt == OPT_SET_META_CONTEXT;
                if set {
                    // Replaced even when the option fails.
                    self.meta = false;
                }
                if !self.structured {
                    option_reply(
                        out,
                        opt,
                        REP_ERR_INVALID,
                        b"negotiate structured replies first",
                    );
                    return Step::Continue;
                }
                let q = match parse_meta_request(data) {
                    Ok(q) => q,
                    Err(MetaError::Invalid(why)) => {
                        option_reply(out, opt, REP_ERR_INVALID, why.as_bytes());
                        return Step::Continue;
                    }
                    Err(MetaError::TooBig) => {
                        option_reply(out, opt, REP_ERR_TOO_BIG, b"too many queries");
                        return Step::Continue;
                    }
                };
                if !self.export.matches(q.export) {
                    option_reply(out, opt, REP_ERR_UNKNOWN, b"no such export");
                    return Step::Continue;
                }
                let selected = if set {
                    q.queries
                        .iter()
                        .any(|s| *s == META_BASE_ALLOCATION.as_bytes())
                } else {
                    q.queries.is_empty()
                        || q.queries
                            .iter()
                            .any(|s| *s == b"base:" || *s == META_BASE_ALLOCATION.as_bytes())
                };
                if selected {
                    let id = if set { META_BASE_ALLOCATION_ID } else { 0 };
                    let mut p = id.to_be_bytes().to_vec();
                    p.extend_from_slice(META_BASE_ALLOCATION.as_bytes());
                    option_reply(out, opt, REP_META_CONTEXT, &p);
                }
                if set {
                    self.meta = selected;
                }
                option_reply(out, opt, REP_ACK, b"");
                Step::Continue
            }
            OPT_STARTTLS => {
                option_reply(out, opt, REP_ERR_UNSUP, b"this server has no TLS");
                Step::Continue
            }
            _ => {
                option_reply(out, opt, REP_ERR_UNSUP, b"unknown option");
                Step::Continue
            }
        }
    }

    fn info_or_go(&mut self, opt: u32, data: &[u8], out: &mut Vec<u8>) -> Step {
        let Some((name, requests)) = parse_info_request(data) else {
            option_reply(out, opt, REP_ERR_INVALID, b"malformed NBD_OPT_INFO/GO data");
            return Step::Continue;
        };
        if !self.export.matches(name) {
            option_reply(out, opt, REP_ERR_UNKNOWN, b"no such export");
            return Step::Continue;
        }
        let mut p = Vec::with_capacity(12);
        p.extend_from_slice(&INFO_EXPORT.to_be_bytes());
        p.extend_from_slice(&self.export.size.to_be_bytes());
        p.extend_from_slice(&self.export.flags(self.structured).to_be_bytes());
        option_reply(out, opt, REP_INFO, &p);
        let asked = |t: u16| requests.chunks_exact(2).any(|c| be16(c) == t);
        if asked(INFO_NAME) {
            let mut p = INFO_NAME.to_be_bytes().to_vec();
            p.extend_from_slice(self.export.name.as_bytes());
            option_reply(out, opt, REP_INFO, &p);
        }
        if asked(INFO_DESCRIPTION) && !self.export.description.is_empty() {
            let mut p = INFO_DESCRIPTION.to_be_bytes().to_vec();
            p.extend_from_slice(self.export.description.as_bytes());
            option_reply(out, opt, REP_INFO, &p);
        }
        // Block sizes are always sent: any byte alignment works (minimum 1), 4 KiB is
        // efficient, reads and writes are capped at MAX_REQUEST.
        let mut p = INFO_BLOCK_SIZE.to_be_bytes().to_vec();
        p.extend_from_slice(&1u32.to_be_bytes());
        p.extend_from_slice(&PREFERRED_BLOCK.to_be_bytes());
        p.extend_from_slice(&MAX_REQUEST.to_be_bytes());
        option_reply(out, opt, REP_INFO, &p);
        option_reply(out, opt, REP_ACK, b"");
        if opt == OPT_GO {
            Step::Transmission(self.session())
        } else {
            Step::Continue
        }
    }

    fn session(&self) -> Session {
        Session {
            size: self.export.size,
            flags: self.export.flags(self.structured),
            structured: self.structured,
            meta_context: self.meta.then_some(META_BASE_ALLOCATION_ID),
        }
    }
}

/// Appends one option reply: magic, option, reply type, length, data.
pub fn option_reply(out: &mut Vec<u8>, option: u32, reply: u32, data: &[u8]) {
    out.extend_from_slice(&OPTION_REPLY_MAGIC.to_be_bytes());
    out.extend_from_slice(&option.to_be_bytes());
    out.extend_from_slice(&reply.to_be_bytes());
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    out.extend_from_slice(data);
}

/// `NBD_OPT_INFO`/`NBD_OPT_GO` data: name length, name, count, count × 16-bit requests.
fn parse_info_request(data: &[u8]) -> Option<(&[u8], &[u8])> {
    let name_len = usize::try_from(be32(data.get(..4)?)).ok()?;
    if name_len > MAX_STRING {
        return None;
    }
    let name = data.get(4..4usize.checked_add(name_len)?)?;
    let rest = &data[4 + name_len..];
    let n = usize::from(be16(rest.get(..2)?));
    let requests = &rest[2..];
    (requests.len() == n * 2).then_some((name, requests))
}

struct MetaRequest<'a> {
    export: &'a [u8],
    queries: Vec<&'a [u8]>,
}

enum MetaError {
    Invalid(&'static str),
    TooBig,
}

/// Metadata context option data: name length, name, query count, queries (length, text).
fn parse_meta_request(data: &[u8]) -> Result<MetaRequest<'_>, MetaError> {
    let mut r = Reader(data);
    let name_len = r
        .u32()
        .ok_or(MetaError::Invalid("truncated export name length"))?;
    if name_len as usize > MAX_STRING {
        return Err(MetaError::Invalid("export name too long"));
    }
    let export = r
        .take(name_len as usize)
        .ok_or(MetaError::Invalid("truncated export name"))?;
    let n = r.u32().ok_or(MetaError::Invalid("truncated query count"))?;
    if n > MAX_META_QUERIES {
        return Err(MetaError::TooBig);
    }
    let mut queries = Vec::with_capacity(n as usize);
    for _ in 0..n {
        let len = r
            .u32()
            .ok_or(MetaError::Invalid("truncated query length"))?;
        if len as usize > MAX_STRING {
            return Err(MetaError::Invalid("query too long"));
        }
        queries.push(
            r.take(len as usize)
                .ok_or(MetaError::Invalid("truncated query"))?,
        );
    }
    if !r.0.is_empty() {
        return Err(MetaError::Invalid("trailing bytes"));
    }
    Ok(MetaRequest { export, queries })
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (a, b) = (self.0.get(..n)?, self.0.get(n..)?);
        self.0 = b;
        Some(a)
    }

    fn u32(&mut self) -> Option<u32> {
        self.take(4).map(be32)
    }
}

// ---------------------------------------------------------------------------------------
// Transmission requests
// ---------------------------------------------------------------------------------------

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
    let magic = be32(&b[..4]);
    if magic != REQUEST_MAGIC {
        return Err(ProtocolError::BadMagic {
            what: "request",
            found: u64::from(magic),
        });
    }
    Ok(Request {
        flags: be16(&b[4..6]),
        kind: be16(&b[6..8]),
        cookie: be64(&b[8..16]),
        offset: be64(&b[16..24]),
        len: be32(&b[24..28]),
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

// ---------------------------------------------------------------------------------------
// Replies
// ---------------------------------------------------------------------------------------

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
/// `req_one`, then no longer than the request).
pub fn descriptors(parts: impl IntoIterator<Item = (u64, bool)>, req_one: bool) -> Vec<(u32, u32)> {
    let mut out: Vec<(u64, u32)> = Vec::new();
    for (len, zero) in parts {
        if len == 0 {
            continue;
        }
        let status = if zero { STATE_HOLE | STATE_ZERO } else { 0 };
        match out.last_mut() {
            Some((l, s)) if *s == status => *l += len,
            _ => {
                if out.len() == MAX_DESCRIPTORS || (req_one && !out.is_empty()) {
                    break;
                }
                out.push((len, status));
            }
        }
    }
    // 32-bit lengths: a longer run (only possible for a request of nearly 4 GiB) is cut
    // to a multiple of 512 and ends the list, so the descriptors stay contiguous.
    let max = u64::from(u32::MAX) / 512 * 512;
    let mut d = Vec::with_capacity(out.len());
    for (l, s) in out {
        if l > max {
            d.push((max as u32, s));
            break;
        }
        d.push((l as u32, s));
    }
    d
}

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

// ---------------------------------------------------------------------------------------
// Big-endian helpers (callers pass slices of the right length)
// ---------------------------------------------------------------------------------------

fn be16(b: &[u8]) -> u16 {
    u16::from_be_bytes([b[0], b[1]])
}

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

fn be64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_be_bytes(a)
}
