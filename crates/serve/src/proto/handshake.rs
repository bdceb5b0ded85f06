//! The server's side of the fixed newstyle handshake: the greeting, option requests one
//! at a time, and every option reply.

use byteorder::{BigEndian, ByteOrder};

use super::wire::*;
use super::{ProtocolError, Session};

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
    /// Several connections may be used at once (`NBD_FLAG_CAN_MULTI_CONN`).
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
        let magic = BigEndian::read_u64(&b[..8]);
        if magic != IHAVEOPT {
            return Err(ProtocolError::BadMagic {
                what: "option request",
                found: magic,
            });
        }
        let h = OptionHeader {
            option: BigEndian::read_u32(&b[8..12]),
            len: BigEndian::read_u32(&b[12..16]),
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
        let asked = |t: u16| {
            requests
                .chunks_exact(2)
                .any(|c| BigEndian::read_u16(c) == t)
        };
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
    let name_len = usize::try_from(BigEndian::read_u32(data.get(..4)?)).ok()?;
    if name_len > MAX_STRING {
        return None;
    }
    let name = data.get(4..4usize.checked_add(name_len)?)?;
    let rest = &data[4 + name_len..];
    let n = usize::from(BigEndian::read_u16(rest.get(..2)?));
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
