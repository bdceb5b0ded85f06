//! What the server serves: the [`Export`] trait, and [`DiskExport`], its implementation
//! over a [`vhdkit_format::Disk`] (fixed, dynamic, differencing chain, host drive, raw).

use std::sync::Mutex;

use vhdkit_format::image::Extent;
use vhdkit_format::{Disk, DiskKind, ErrorKind};

use crate::proto;

/// Where a piece of a range lives, as [`Export::map`] describes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Piece {
    /// Reads as zeros; nothing is stored.
    Zero {
        /// Length in bytes.
        len: u64,
    },
    /// Stored in source `source` (an index the export defines, e.g. a chain level) at
    /// `offset` of that source.
    Data {
        /// Which source ([`Export::source_file`], [`Export::read_source`]).
        source: usize,
        /// Byte offset in the source.
        offset: u64,
        /// Length in bytes.
        len: u64,
    },
}

impl Piece {
    /// Length of the piece.
    pub fn len(&self) -> u64 {
        match *self {
            Piece::Zero { len } | Piece::Data { len, .. } => len,
        }
    }

    /// Whether the piece is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// An error an export reports, with the NBD error value the client receives.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct ExportError {
    /// NBD error value (`proto::EIO`, `proto::ENOSPC`, `proto::EPERM`, `proto::EINVAL`).
    pub errno: u32,
    /// What failed, where.
    pub message: String,
}

impl ExportError {
    /// An error with its NBD value.
    pub fn new(errno: u32, message: impl Into<String>) -> ExportError {
        ExportError {
            errno,
            message: message.into(),
        }
    }
}

impl From<vhdkit_format::Error> for ExportError {
    fn from(e: vhdkit_format::Error) -> ExportError {
        let errno = match e.kind() {
            ErrorKind::ReadOnly => proto::EPERM,
            ErrorKind::DiskFull => proto::ENOSPC,
            // A dynamic file that would outgrow what a BAT entry addresses.
            ErrorKind::Unsupported => proto::ENOSPC,
            ErrorKind::OutOfRange | ErrorKind::InvalidArgument => proto::EINVAL,
            _ => proto::EIO,
        };
        ExportError::new(errno, e.to_string())
    }
}

/// Result of export operations.
pub type ExportResult<T> = Result<T, ExportError>;

/// A disk as the server needs it. Every method may be called from many threads at once;
/// the server calls the writing methods ([`Export::write_runs`],
/// [`Export::write_zeroes`], [`Export::trim`]) from one thread at a time.
pub trait Export: Send + Sync {
    /// Size in bytes.
    fn size(&self) -> u64;

    /// Whether writes are refused.
    fn is_read_only(&self) -> bool;

    /// Whether several connections may use the export at once with the guarantees of
    /// `NBD_FLAG_CAN_MULTI_CONN`: every connection sees every completed write, and a flush
    /// on any connection makes every connection's completed writes durable.
    fn can_multi_conn(&self) -> bool;

    /// Appends the pieces of `offset..offset + len` (inside the export) to `out`, in
    /// order; their lengths add up to `len`.
    fn map(&self, offset: u64, len: u64, out: &mut Vec<Piece>) -> ExportResult<()>;

    /// The file of `source`, if its bytes can be sent from it directly (Linux
    /// `sendfile`, no copy through the server's memory).
    fn source_file(&self, source: usize) -> Option<&std::fs::File>;

    /// Reads `buf.len()` bytes at `offset` of `source` (for sources without a
    /// descriptor).
    fn read_source(&self, source: usize, offset: u64, buf: &mut [u8]) -> ExportResult<()>;

    /// Writes the runs `(offset, bytes)` (each inside the export), the later run winning
    /// where they overlap.
    fn write_runs(&self, runs: &[(u64, &[u8])]) -> ExportResult<()>;

    /// Makes the range read as zeros. `may_release`: storage may be released
    /// (`NBD_CMD_FLAG_NO_HOLE` was not set); when false, the range is left allocated
    /// (written zeros, not holes or unallocated blocks), as the flag asks.
    fn write_zeroes(&self, offset: u64, len: u64, may_release: bool) -> ExportResult<()>;

    /// The range is no longer needed (its content may change to anything).
    fn trim(&self, offset: u64, len: u64) -> ExportResult<()>;

    /// Makes every completed write durable.
    fn flush(&self) -> ExportResult<()>;
}

/// Releases whole blocks of the top file so that they read as zeros (a dynamic disk) or
/// from the parent (a differencing disk), where the format allows.
///
/// This is the hook where `NBD_CMD_TRIM` and `NBD_CMD_WRITE_ZEROES` (without
/// `NBD_CMD_FLAG_NO_HOLE`) can give space back. [`DiskExport`] calls it with each
/// request's range, before writing zeros over what was not released; [`DiscardBlocks`],
/// the default, releases the whole blocks of a dynamic disk, and [`KeepBlocks`] releases
/// nothing. A releaser must keep the
/// crash-safety of the write path (the image valid and every other byte unchanged at
/// every instant) and must only release what then reads as the request needs: zeros when
/// `need_zeros` (write zeroes), anything otherwise (trim).
pub trait BlockRelease: Send + Sync {
    /// Releases what it can of `offset..offset + len`, returning the released ranges
    /// `(offset, len)` in order.
    fn release(
        &self,
        disk: &Disk,
        offset: u64,
        len: u64,
        need_zeros: bool,
    ) -> ExportResult<Vec<(u64, u64)>>;
}

/// A [`BlockRelease`] that releases nothing, so trimmed and zeroed ranges are written
/// with zeros where they hold data.
#[derive(Debug, Default, Clone, Copy)]
pub struct KeepBlocks;

impl BlockRelease for KeepBlocks {
    fn release(&self, _: &Disk, _: u64, _: u64, _: bool) -> ExportResult<Vec<(u64, u64)>> {
        Ok(Vec::new())
    }
}

/// The default [`BlockRelease`]: on a dynamic disk, [`Disk::discard`] — the blocks the
/// range covers entirely are released (crash-safe: Xen's batmap bits, then the BAT
/// entries, then the file shortened when they were its last blocks) and read as zeros,
/// which both trim and write zeroes allow. The rest of the range (partial blocks) is
/// left to [`DiskExport`]'s zero writing.
///
/// On a fixed disk or a raw image it releases the whole range: [`Disk::discard`] punches
/// a hole in the file (`fallocate`'s `FALLOC_FL_PUNCH_HOLE`, macOS `F_PUNCHHOLE`, Windows
/// `FSCTL_SET_ZERO_DATA`), or writes zeros where the file system has no holes — either
/// way the range reads as zeros, and the file takes less space.
///
/// On every other disk it releases nothing. A differencing disk's released block would
/// read from its parent: neither zeros (write zeroes) nor what it held (trim must never
/// lose data, and the parent's bytes are not the guest's). A dynamic VHDX releases its
/// whole payload blocks too (the BAT entries set not present through its log, then
/// holes punched over their space); a fixed VHDX releases nothing: zeros are written
/// over its data.
///
/// A read that overlaps a trim or write zeroes in flight may fail (the connection is
/// then closed) or see other bytes: its content was being discarded, and a released
/// block's place in the file may be truncated or given to a new block.
#[derive(Debug, Default, Clone, Copy)]
pub struct DiscardBlocks;

impl BlockRelease for DiscardBlocks {
    fn release(
        &self,
        disk: &Disk,
        offset: u64,
        len: u64,
        _need_zeros: bool,
    ) -> ExportResult<Vec<(u64, u64)>> {
        if matches!(disk.kind(), DiskKind::Fixed | DiskKind::Raw) {
            // The whole range: a hole punched (or zeros written where the file system
            // has no holes); 0 from a container that releases nothing (VHDX).
            let n = disk.discard(offset, len)?;
            return Ok(if n > 0 { vec![(offset, n)] } else { Vec::new() });
        }
        let Some(bs) = disk.top().allocation_unit() else {
            return Ok(Vec::new());
        };
        if disk.kind() != DiskKind::Dynamic {
            return Ok(Vec::new());
        }
        disk.discard(offset, len)?;
        // Every whole block of the range reads as zeros now: released, or never
        // allocated.
        let size = disk.virtual_size();
        let end = offset.saturating_add(len).min(size);
        let first = offset.div_ceil(bs).saturating_mul(bs);
        let stop = if end == size { size } else { end / bs * bs };
        Ok(if first < stop {
            vec![(first, stop - first)]
        } else {
            Vec::new()
        })
    }
}

/// Zero bytes to write and compare against (in the `.bss`, costs no file size).
static ZEROS: [u8; ZERO_STEP as usize] = [0; ZERO_STEP as usize];

/// Bytes examined (read and tested for zeros) per step of a trim or write zeroes.
const ZERO_STEP: u64 = 1 << 20;

/// Granularity at which a trim or write zeroes finds what is already zero.
const ZERO_GRAIN: u64 = 64 * 1024;

/// A [`Disk`] served over NBD.
///
/// Sources are the chain's levels (0 = the file opened). Reads are sent from the files'
/// descriptors; writes go through [`Disk::write_runs`], the crash-safe write path
/// (differencing granules completed from the parent by the format crate); flush is
/// [`Disk::flush`]. One `DiskExport` shared by every connection gives
/// `NBD_FLAG_CAN_MULTI_CONN`: there is no cache of its own, the server serialises the
/// writes, and a flush syncs the one file written.
///
/// ```
/// use vhdkit_format::{CreateOptions, Disk, DiskKind};
/// use vhdkit_serve::{DiskExport, Export};
/// # let dir = tempfile::tempdir().unwrap();
/// let path = dir.path().join("disk.vhd");
/// Disk::create(&path, &CreateOptions::new(DiskKind::Dynamic, 8 << 20)).unwrap();
/// let export = DiskExport::new(Disk::open_rw(&path).unwrap());
/// export.write_runs(&[(4096, b"hello")]).unwrap();
/// let mut pieces = Vec::new();
/// export.map(0, 8 << 20, &mut pieces).unwrap();
/// assert_eq!(pieces.len(), 2); // the written block (all of it: a dynamic block is
///                               // wholly its own), then zeros
/// assert!(!export.is_read_only() && export.can_multi_conn());
/// ```
pub struct DiskExport {
    disk: Disk,
    writable: bool,
    release: Box<dyn BlockRelease>,
    /// Scratch for zero tests, used by the one writing thread.
    scratch: Mutex<Vec<u8>>,
}

impl std::fmt::Debug for DiskExport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DiskExport")
            .field("disk", &self.disk)
            .field("writable", &self.writable)
            .finish_non_exhaustive()
    }
}

impl DiskExport {
    /// Serves `disk`; writable if its top file was opened for writing.
    pub fn new(disk: Disk) -> DiskExport {
        let writable = disk.top().is_writable();
        DiskExport {
            disk,
            writable,
            release: Box::new(DiscardBlocks),
            scratch: Mutex::new(Vec::new()),
        }
    }

    /// Uses `release` to give whole blocks back on trim and write zeroes (instead of
    /// [`DiscardBlocks`]; [`KeepBlocks`] keeps every block).
    pub fn with_block_release(mut self, release: Box<dyn BlockRelease>) -> DiskExport {
        self.release = release;
        self
    }

    /// The disk served.
    pub fn disk(&self) -> &Disk {
        &self.disk
    }

    /// Takes the disk back.
    pub fn into_disk(self) -> Disk {
        self.disk
    }

    /// Allocates `offset..offset + len` in the file of a raw image or a fixed VHD (whose
    /// bytes are the disk's at the same offsets), holes included, without changing a
    /// byte (`vhdkit_platform::reserve`): write zeroes with `NBD_CMD_FLAG_NO_HOLE`
    /// leaves no hole there. Nothing to do on a device. The other kinds get their
    /// blocks from the zeros [`DiskExport::zero_data`] writes.
    fn reserve_plain(&self, offset: u64, len: u64) -> ExportResult<()> {
        let top = self.disk.top();
        if top.is_vhdx() || !matches!(top.kind(), DiskKind::Fixed | DiskKind::Raw) {
            return Ok(());
        }
        // A device has no holes (and no free space of its own to check).
        let Some(file) = top
            .backend()
            .as_file()
            .filter(|f| f.metadata().is_ok_and(|m| m.is_file()))
        else {
            return Ok(());
        };
        vhdkit_platform::reserve(file, offset, len).map_err(|e| {
            let errno = if e.kind() == std::io::ErrorKind::StorageFull {
                proto::ENOSPC
            } else {
                proto::EIO
            };
            let path = top.path().display();
            ExportError::new(
                errno,
                format!("{path}: allocating {len} bytes of data at offset {offset}: {e}"),
            )
        })
    }

    /// Writes zeros over the data of `offset..offset + len` that is not zero already.
    /// `top_only`: only data stored in the top file (trim leaves a parent's data alone,
    /// so that it never allocates blocks in a differencing disk). `release`: offer the
    /// range to the [`BlockRelease`] hook first, saying whether it must then read as
    /// zeros. `allocate` (`NBD_CMD_FLAG_NO_HOLE`): the whole range ends up stored in
    /// the top file — zeros are written over holes, unallocated blocks and a parent's
    /// data too, and only the top file's own zeros are left as they are.
    fn zero_data(
        &self,
        offset: u64,
        len: u64,
        top_only: bool,
        release: Option<bool>,
        allocate: bool,
    ) -> ExportResult<()> {
        let released = match release {
            Some(need_zeros) if len > 0 => {
                self.release.release(&self.disk, offset, len, need_zeros)?
            }
            _ => Vec::new(),
        };
        if released.first() == Some(&(offset, len)) {
            return Ok(());
        }
        let mut scratch = self.scratch.lock().unwrap_or_else(|e| e.into_inner());
        scratch.resize(ZERO_STEP as usize, 0);
        let end = offset + len;
        let mut pos = offset;
        while pos < end {
            let n = ZERO_STEP.min(end - pos);
            let mut runs: Vec<(u64, u64)> = Vec::new();
            let mut at = pos;
            for e in self.disk.extents(pos, n)? {
                let l = e.len();
                let stored_in_top = matches!(e, Extent::Data { layer: 0, .. });
                if allocate && !stored_in_top {
                    match runs.last_mut() {
                        Some((o, rl)) if *o + *rl == at => *rl += l,
                        _ => runs.push((at, l)),
                    }
                } else if let Extent::Data {
                    layer, file_offset, ..
                } = e
                {
                    if !top_only || layer == 0 {
                        // Test each grain; collect the ones holding anything but zeros.
                        let mut g = 0;
                        while g < l {
                            let gl = ZERO_GRAIN.min(l - g);
                            let buf = &mut scratch[..gl as usize];
                            self.disk.layers()[layer]
                                .read_data(buf, file_offset + g)
                                .map_err(ExportError::from)?;
                            let v = at + g;
                            let inside_released = released
                                .iter()
                                .any(|&(ro, rl)| ro <= v && v + gl <= ro + rl);
                            if buf != &ZEROS[..gl as usize] && !inside_released {
                                match runs.last_mut() {
                                    Some((o, rl)) if *o + *rl == v => *rl += gl,
                                    _ => runs.push((v, gl)),
                                }
                            }
                            g += gl;
                        }
                    }
                }
                at += l;
            }
            if !runs.is_empty() {
                let writes: Vec<(u64, &[u8])> = runs
                    .iter()
                    .map(|&(o, l)| (o, &ZEROS[..l as usize]))
                    .collect();
                self.disk.write_runs(&writes)?;
            }
            pos += n;
        }
        Ok(())
    }
}

impl Export for DiskExport {
    fn size(&self) -> u64 {
        self.disk.virtual_size()
    }

    fn is_read_only(&self) -> bool {
        !self.writable
    }

    fn can_multi_conn(&self) -> bool {
        true
    }

    fn map(&self, offset: u64, len: u64, out: &mut Vec<Piece>) -> ExportResult<()> {
        for e in self.disk.extents(offset, len)? {
            out.push(match e {
                Extent::Data {
                    layer,
                    file_offset,
                    len,
                } => Piece::Data {
                    source: layer,
                    offset: file_offset,
                    len,
                },
                Extent::Zero { len } => Piece::Zero { len },
            });
        }
        Ok(())
    }

    fn source_file(&self, source: usize) -> Option<&std::fs::File> {
        let layer = self.disk.layers().get(source)?;
        // A host-drive stub's data lives on its device, which the format crate keeps to
        // itself: those bytes go through `read_source`.
        if layer.kind() == DiskKind::HostDrive {
            return None;
        }
        layer.backend().as_file()
    }

    fn read_source(&self, source: usize, offset: u64, buf: &mut [u8]) -> ExportResult<()> {
        let layer = self
            .disk
            .layers()
            .get(source)
            .ok_or_else(|| ExportError::new(proto::EIO, format!("no chain level {source}")))?;
        Ok(layer.read_data(buf, offset)?)
    }

    fn write_runs(&self, runs: &[(u64, &[u8])]) -> ExportResult<()> {
        Ok(self.disk.write_runs(runs)?)
    }

    fn write_zeroes(&self, offset: u64, len: u64, may_release: bool) -> ExportResult<()> {
        if !may_release {
            self.reserve_plain(offset, len)?;
        }
        self.zero_data(
            offset,
            len,
            false,
            may_release.then_some(true),
            !may_release,
        )
    }

    fn trim(&self, offset: u64, len: u64) -> ExportResult<()> {
        self.zero_data(offset, len, true, Some(false), false)
    }

    fn flush(&self) -> ExportResult<()> {
        Ok(self.disk.flush()?)
    }
}
