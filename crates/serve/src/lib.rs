//! # vhdkit-serve
//!
//! An NBD (Network Block Device) server for VHD disks: fixed, dynamic, differencing
//! chains, host-drive stubs and raw images, read-only or read-write, for every NBD
//! client at once — the kernel (`nbd-client`), `nbdfuse`, qemu and `qemu-img`,
//! libguestfs, `nbdcopy` and `nbdinfo`.
//!
//! - `proto` (public with the `testing` feature, for the tests and the fuzz target): the
//!   protocol, pure over bytes (fixed newstyle handshake with
//!   `NBD_OPT_GO`/`INFO`/`EXPORT_NAME`/`LIST`/`ABORT`/`STRUCTURED_REPLY` and the metadata
//!   context options; requests; simple and structured replies; `base:allocation`). Its
//!   numbers are the protocol's, not this crate's API; what a caller needs of them is
//!   re-exported here ([`ExportInfo`], [`MAX_STRING`]).
//! - [`Export`]: what the server serves, and [`DiskExport`], the export of a
//!   [`vhdkit_format::Disk`] (reads sent from the image files with `sendfile`, writes
//!   through the crash-safe write path).
//! - [`Server`]: serves an export on a Unix or TCP listener, or on one already-accepted
//!   stream: several connections at once (the ones beyond
//!   [`ServerOptions::max_connections`] wait in the listen backlog), a reader and a
//!   sender thread per connection, one writer for the export, replies made when their
//!   turn comes, memory bounded per connection and in all whatever clients do (see
//!   [`ServerOptions`]), and a clean stop.
//!
//! ```no_run
//! use std::net::TcpListener;
//! use std::sync::Arc;
//! use vhdkit_format::{Disk, OpenOptions};
//! use vhdkit_serve::{DiskExport, Server, ServerOptions};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let disk = Disk::open_with("child.vhd", &OpenOptions::new().writable(true))?;
//! let server = Server::new(Arc::new(DiskExport::new(disk)), ServerOptions::default())?;
//! // Clients connect to nbd://127.0.0.1:10809 (on Unix a `UnixListener` serves too:
//! // nbd+unix:///?socket=/tmp/child.sock)
//! let stopper = server.stopper();
//! std::thread::spawn(move || {
//!     std::thread::sleep(std::time::Duration::from_secs(60));
//!     stopper.stop();
//! });
//! server.serve(TcpListener::bind("127.0.0.1:10809")?)?;
//! let stats = server.finish()?;
//! eprintln!("{} bytes read, {} bytes written", stats.bytes_read, stats.bytes_written);
//! # Ok(()) }
//! ```

#![warn(missing_docs)]
#![deny(unsafe_code)]

mod export;
#[cfg(feature = "testing")]
pub mod proto;
// The protocol names every number it defines, also those the server never sends.
#[cfg(not(feature = "testing"))]
#[allow(dead_code, unused_imports)]
mod proto;
mod server;

pub use export::{
    BlockRelease, DiscardBlocks, DiskExport, Export, ExportError, ExportResult, KeepBlocks, Piece,
};
pub use proto::{ExportInfo, MAX_STRING};
pub use server::{
    Listener, Server, ServerOptions, Stats, Stopper, Stream, MAX_CONNECTIONS, MAX_IN_FLIGHT,
    MAX_IN_FLIGHT_TOTAL, MAX_PAYLOAD_IN_FLIGHT, MAX_PAYLOAD_TOTAL,
};
