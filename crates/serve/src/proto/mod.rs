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
//!
//! One module per job, all re-exported here: `wire` (the numbers and byte layouts every
//! message shares: magics, flags, option and command codes, limits, big-endian fields),
//! `handshake` ([`Negotiation`] and the option replies), `transmission` (requests and
//! [`Session::check`]) and `replies` (simple replies, structured chunks, block status
//! descriptors, the chunk layout of a read).

mod handshake;
mod replies;
mod transmission;
mod wire;

pub use handshake::*;
pub use replies::*;
pub use transmission::*;
pub use wire::*;

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
