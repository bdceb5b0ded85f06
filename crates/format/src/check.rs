//! Validation of an image and its chain that reports every problem found, not only the
//! first: the structural checks of vhd-util check, DiscUtils' checker and qemu's open,
//! described in docs/format.md (what vhd-util check, DiscUtils and qemu verify).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use byteorder::{BigEndian, ByteOrder};

mod links;
mod vhdx;

use crate::error::{Error, Result};
use crate::image::backend::{Backend, FileBackend};
use crate::image::open::{open_unlocked, Accept};
use crate::image::{Disk, OpenOptions};
use crate::spec::header::check_block_size;
use crate::spec::layout::BAT_CHUNK_BYTES;
use crate::spec::{
    Bat, DiskType, DynamicHeader, Footer, HostDriveHeader, Problem, Severity, SparseLayout,
    FOOTER_SIZE, HEADER_SIZE, SECTOR_SIZE,
};

/// Problems found in one file.
#[derive(Debug, Clone, serde::Serialize)]
pub struct FileReport {
    /// The file.
    pub path: PathBuf,
    /// Every problem, in the order found.
    pub problems: Vec<Problem>,
}

/// The result of checking a disk and its chain.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CheckReport {
    /// One report per file: the disk checked first, then its ancestors.
    pub files: Vec<FileReport>,
}

impl CheckReport {
    /// Problems of warning or error severity, over all files.
    pub fn problem_count(&self) -> usize {
        self.problems()
            .filter(|(_, p)| p.severity >= Severity::Warning)
            .count()
    }

    /// Whether nothing of warning or error severity was found.
    pub fn is_clean(&self) -> bool {
        self.problem_count() == 0
    }

    /// Every problem with the file it was found in.
    pub fn problems(&self) -> impl Iterator<Item = (&Path, &Problem)> {
        self.files
            .iter()
            .flat_map(|f| f.problems.iter().map(move |p| (f.path.as_path(), p)))
    }
}

/// Checks the disk at `path` and every ancestor it can reach. Fails only when the file
/// cannot be read at all; everything else is a problem in the report.
pub fn check(path: impl AsRef<Path>, opts: &OpenOptions) -> Result<CheckReport> {
    let path = path.as_ref();
    let file = open_unlocked(path, Accept::RegularOrBlock)?;
    let backend: Arc<dyn Backend> = Arc::new(FileBackend::new(file));
    let mut files = vec![FileReport {
        path: path.to_owned(),
        problems: check_file(&*backend)?,
    }];
    let structurally_ok = files[0]
        .problems
        .iter()
        .all(|p| p.severity < Severity::Error || p.field == "checksum");
    if structurally_ok {
        // Open the chain to check the links; each ancestor is checked as a file too.
        let top_opts = OpenOptions {
            writable: false,
            strict: false,
            ..opts.clone()
        };
        match Disk::open_with(path, &top_opts) {
            Ok(disk) => {
                for (child, parent) in disk.layers().iter().zip(disk.layers().iter().skip(1)) {
                    let problems = links::link_problems(child, parent);
                    let last = files.len() - 1;
                    files[last].problems.extend(problems);
                    let pf = open_unlocked(parent.path(), Accept::Regular)?;
                    files.push(FileReport {
                        path: parent.path().to_owned(),
                        problems: check_file(&FileBackend::new(pf))?,
                    });
                }
            }
            Err(e) => {
                let field = match e {
                    Error::ParentNotFound { .. } | Error::ParentIdMismatch { .. } => "parent",
                    Error::ChainLoop { .. } | Error::ChainTooDeep { .. } => "parent chain",
                    Error::HostDriveNotFound { .. } => "host drive",
                    _ => "open",
                };
                files[0].problems.push(Problem::new(
                    Severity::Error,
                    "chain",
                    field,
                    e.to_string(),
                ));
            }
        }
    }
    Ok(CheckReport { files })
}

/// BAT entry problems listed one by one; the rest are counted in one more problem. A
/// hostile BAT has a bad entry every four bytes: listing them all turned a 1 MiB file
/// into half a million problems and 100 MB of report.
pub const MAX_LISTED_BAT_PROBLEMS: usize = 1000;

/// Checks one file on its own, structure by structure, and lists every problem (BAT
/// entry problems past the first [`MAX_LISTED_BAT_PROBLEMS`] are counted in one).
/// Fails only on an I/O error other than a short read.
pub fn check_file(b: &dyn Backend) -> Result<Vec<Problem>> {
    let mut sig = [0u8; 8];
    if b.read_exact_at(&mut sig, 0).is_ok() && crate::vhdx::parse::is_vhdx(&sig) {
        return Ok(vhdx::check_vhdx(b));
    }
    let mut p = Vec::new();
    let len = b
        .len()
        .map_err(|e| Error::file("<image>", "reading the length", e))?;
    if len < FOOTER_SIZE as u64 {
        p.push(Problem::new(
            Severity::Error,
            "file",
            "length",
            format!("{len} bytes is too short for a footer"),
        ));
        return Ok(p);
    }
    let rem = len % SECTOR_SIZE;
    if rem != 0 && rem != 511 {
        p.push(Problem::new(
            Severity::Warning,
            "file",
            "length",
            format!("{len} is not a multiple of 512 (nor 512·n + 511 for an old short footer)"),
        ));
    }
    let read = |off: u64, n: usize| -> Option<Vec<u8>> {
        let mut buf = vec![0u8; n];
        b.read_exact_at(&mut buf, off).ok().map(|_| buf)
    };
    // The trailing footer as opening picks it (image/footer.rs): the 512 bytes at the end,
    // or the 511-byte footer of old Virtual PC where the length allows one; a candidate
    // with a good cookie and checksum first, then one with a good cookie.
    let mut candidates = vec![len - 512];
    if rem == 511 {
        candidates.push(len - 511);
    }
    let candidates: Vec<(u64, Footer)> = candidates
        .into_iter()
        .map(|at| {
            let mut raw = read(at, (len - at).min(512) as usize).unwrap_or_default();
            raw.resize(FOOTER_SIZE, 0);
            (at, Footer::decode(&raw).expect("512 bytes"))
        })
        .collect();
    let (footer_at, end) = candidates
        .iter()
        .find(|(_, f)| f.cookie_ok() && f.checksum_ok())
        .or_else(|| candidates.iter().find(|(_, f)| f.cookie_ok()))
        .or(candidates.last())
        .cloned()
        .expect("one candidate at least");
    let copy = read(0, FOOTER_SIZE).and_then(|r| Footer::decode(&r).ok());
    let footer = if end.cookie_ok() {
        for x in end.validate(Some(len)) {
            let at = footer_at + field_offset(x.field);
            p.push(x.at(at));
        }
        end.clone()
    } else {
        match copy.clone().filter(|c| c.cookie_ok()) {
            Some(c) => {
                p.push(
                    Problem::new(
                        Severity::Error,
                        "footer",
                        "cookie",
                        "no footer at the end of the file; the copy at offset 0 is intact (repairable)",
                    )
                    .at(footer_at),
                );
                for x in c.validate(Some(len)) {
                    let at = field_offset(x.field);
                    p.push(x.at(at));
                }
                c
            }
            None => {
                p.extend(end.validate(Some(len)).into_iter().map(|x| x.at(footer_at)));
                return Ok(p);
            }
        }
    };
    match footer.disk_type {
        DiskType::Fixed => {
            if footer_at < footer.current_size {
                p.push(
                    Problem::new(
                        Severity::Error,
                        "file",
                        "length",
                        format!(
                            "fixed disk holds {footer_at} bytes of data, its footer says {}",
                            footer.current_size
                        ),
                    )
                    .at(footer_at),
                );
            } else if footer_at > footer.current_size {
                // Nothing reads the padding: the disk is its first `current size` bytes.
                // A resize leaves exactly this when interrupted (docs/crash-safety.md,
                // "Resize"), which is why it is information, not a warning.
                p.push(
                    Problem::new(
                        Severity::Info,
                        "file",
                        "length",
                        format!(
                            "{} bytes between the data and the footer, read by no one: what an interrupted resize leaves (rerun the resize, or check --repair drops them)",
                            footer_at - footer.current_size
                        ),
                    )
                    .at(footer.current_size),
                );
            }
        }
        DiskType::Dynamic | DiskType::Differencing => {
            if let Some(c) = copy.as_ref().filter(|_| end.cookie_ok()) {
                if c.encode_raw() != footer.encode_raw() {
                    let p_ = if resized_copy(c, &footer) {
                        // A resize writes the end footer, syncs, then the copy: a crash
                        // between the two leaves exactly this. The end footer is the one
                        // every reader uses.
                        Problem::new(
                            Severity::Info,
                            "footer copy",
                            "current size",
                            format!(
                                "the footer copy at offset 0 still says {} bytes, the footer at the end {}: a resize was interrupted between its two footer writes (the end footer is the one in use; check --repair or rerunning the resize updates the copy)",
                                c.current_size, footer.current_size
                            ),
                        )
                    } else {
                        let what = if c.cookie_ok() {
                            "differs from the footer at the end"
                        } else {
                            "is missing or damaged"
                        };
                        Problem::new(
                            Severity::Warning,
                            "footer copy",
                            "content",
                            format!("the footer copy at offset 0 {what} (repairable)"),
                        )
                    };
                    p.push(p_.at(0));
                }
            }
            // Without a trailing footer, blocks may legitimately reach the end of the file.
            let limit = if end.cookie_ok() { footer_at } else { len };
            check_sparse(b, &footer, len, limit, &mut p);
        }
        DiskType::Reserved(5) => {
            let at = footer.data_offset;
            match read(at, crate::spec::HOST_DRIVE_HEADER_SIZE) {
                Some(raw) => {
                    let h = HostDriveHeader::decode(&raw).expect("1024 bytes");
                    p.extend(
                        h.validate_for(&raw, footer.current_size)
                            .into_iter()
                            .map(|x| x.at(at)),
                    );
                }
                None => p.push(
                    Problem::new(
                        Severity::Error,
                        "host-drive header",
                        "data offset",
                        "points past the end of the file",
                    )
                    .at(at),
                ),
            }
        }
        _ => {}
    }
    Ok(p)
}

/// Whether the footer copy `copy` is a valid footer that differs from `footer` only in
/// what a resize changes: current and original size, geometry and checksum.
fn resized_copy(copy: &Footer, footer: &Footer) -> bool {
    let mut same = copy.clone();
    same.current_size = footer.current_size;
    same.original_size = footer.original_size;
    same.geometry = footer.geometry;
    same.checksum = footer.checksum;
    copy.cookie_ok() && copy.checksum_ok() && same.encode_raw() == footer.encode_raw()
}

fn field_offset(field: &str) -> u64 {
    use crate::spec::footer::off;
    (match field {
        "features" => off::FEATURES,
        "file format version" => off::VERSION,
        "data offset" => off::DATA_OFFSET,
        "time stamp" => off::TIMESTAMP,
        "current size" => off::CURRENT_SIZE,
        "geometry" => off::GEOMETRY,
        "disk type" => off::DISK_TYPE,
        "checksum" => off::CHECKSUM,
        "unique id" => off::UNIQUE_ID,
        "saved state" => off::SAVED_STATE,
        "reserved" => off::RESERVED,
        _ => 0,
    }) as u64
}

fn check_sparse(b: &dyn Backend, footer: &Footer, len: u64, footer_at: u64, p: &mut Vec<Problem>) {
    let hoff = footer.data_offset;
    let mut raw = [0u8; HEADER_SIZE];
    if hoff.saturating_add(HEADER_SIZE as u64) > len || b.read_exact_at(&mut raw, hoff).is_err() {
        return; // the footer's data offset problem is already reported
    }
    let header = DynamicHeader::decode(&raw).expect("1024 bytes");
    let differencing = footer.disk_type == DiskType::Differencing;
    let hp = header.validate(footer.current_size, Some(len), differencing);
    let fatal = hp
        .iter()
        .any(|x| x.severity == Severity::Error && x.field != "checksum");
    p.extend(hp.into_iter().map(|x| x.at(hoff)));
    if header.cookie != crate::spec::HEADER_COOKIE || check_block_size(header.block_size).is_err() {
        return;
    }
    let layout = SparseLayout::new(&header, hoff, footer.current_size, len, footer_at);
    let batmap = check_batmap(b, footer, &header, len, footer_at, p);
    let layout = match &batmap {
        Some(m) => layout.with_batmap(m.header_offset, &m.header),
        None => layout,
    };
    let toff = layout.table_offset;
    // Read what of the BAT fits in the file, never more, a chunk at a time: memory
    // follows the entries the file really holds, not what its fields claim.
    let on_disk = header.bat_size_on_disk();
    let avail = len.saturating_sub(toff).min(on_disk);
    let used_bytes = layout.used_bat_bytes().min(avail);
    let mut first = 0u64;
    let mut scan = layout.scan().list_at_most(MAX_LISTED_BAT_PROBLEMS);
    let mut chunk = vec![0u8; (avail as usize).min(BAT_CHUNK_BYTES)];
    let mut done = 0u64;
    let mut padding_note = None;
    while done < avail {
        let n = (avail - done).min(chunk.len() as u64) as usize;
        let in_used = used_bytes.saturating_sub(done).min(n as u64) as usize;
        if in_used == n && is_hole(b, toff + done, n as u64) {
            // A hole of a sparse file: zeros, counted without being read.
            scan.push_zeros(first, n as u64 / 4);
            first += n as u64 / 4;
            done += n as u64;
            continue;
        }
        if b.read_exact_at(&mut chunk[..n], toff + done).is_err() {
            return;
        }
        // The part covering the virtual size: entries. The rest: padding, looked at
        // until the first entry that is not 0xFFFFFFFF.
        let in_used = used_bytes.saturating_sub(done).min(n as u64) as usize;
        let mut entries = Bat::from_entries(Vec::new());
        entries.extend_from_bytes(&chunk[..in_used]);
        scan.push(first, entries.entries());
        first += entries.len() as u64;
        if padding_note.is_none() {
            let start = in_used.next_multiple_of(4);
            if let Some(k) = chunk[start.min(n)..n]
                .chunks_exact(4)
                .position(|e| e != [0xFF; 4])
            {
                let i = (done + start as u64) / 4 + k as u64;
                padding_note = Some(i);
            }
        }
        if done + (n as u64) >= used_bytes && padding_note.is_some() {
            break;
        }
        done += n as u64;
    }
    if let Some(i) = padding_note {
        // The specification says nothing of the padding's content; Microsoft's tools
        // (disk2vhd) and vhd-util lineage write zeros there.
        p.push(
            Problem::new(
                Severity::Info,
                "BAT",
                "padding",
                format!("entry {i} lies past the virtual size and is not 0xFFFFFFFF (harmless: the specification leaves the padding's content open)"),
            )
            .at(toff + i * 4),
        );
    }
    let found = scan.finish();
    if let Some(m) = &batmap {
        check_batmap_bits(b, m, &layout, footer.current_size, p);
    }
    for x in &found.problems {
        p.push(Problem::new(Severity::Error, "BAT", "entry", x.to_string()).at(x.offset()));
    }
    let unlisted = found
        .problem_count
        .saturating_sub(found.problems.len() as u64);
    if unlisted > 0 {
        p.push(
            Problem::new(
                Severity::Error,
                "BAT",
                "entry",
                format!("{unlisted} more problems with BAT entries are not listed"),
            )
            .at(toff),
        );
    }
    let stride = layout.stride();
    links::locators_in_table(&header, hoff, p);
    if differencing {
        links::locator_names(b, &header, p);
    }
    if fatal {
        return;
    }
    let data_end = layout.content_end(found.blocks_end);
    if footer_at > layout.data_end(found.blocks_end) {
        let gap = footer_at - data_end;
        // Unreferenced space is not a structural problem: the image reads correctly, and a
        // crash mid-allocation leaves exactly this (by design). Reported, not failed;
        // `check --repair` gives the space back.
        let (severity, why) = if gap >= stride {
            (
                Severity::Info,
                "unreferenced space, e.g. an allocation cut short (check --repair reclaims it)",
            )
        } else {
            (Severity::Info, "padding")
        };
        p.push(
            Problem::new(
                severity,
                "file",
                "length",
                format!(
                    "{gap} bytes between the last block or metadata ({data_end:#x}) and the footer: {why}"
                ),
            )
            .at(data_end),
        );
    }
}

/// Reports the problems of a `tap` file's batmap and returns it when it can be read.
/// `image/batmap.rs` reads it for open, check and repair alike.
fn check_batmap(
    b: &dyn Backend,
    footer: &Footer,
    header: &DynamicHeader,
    len: u64,
    footer_at: u64,
    p: &mut Vec<Problem>,
) -> Option<crate::image::batmap::Batmap> {
    let found = crate::image::batmap::read(b, footer, header, len, footer_at)?;
    p.extend(found.problems);
    found.batmap
}

/// A set batmap bit promises "allocated and fully written": each set bit's block must
/// be allocated (blktap's check) and its sector bitmap full (tapdisk reads every sector
/// of such a block from this file without looking at the bitmap).
fn check_batmap_bits(
    b: &dyn Backend,
    m: &crate::image::batmap::Batmap,
    layout: &SparseLayout,
    current_size: u64,
    p: &mut Vec<Problem>,
) {
    let entry = |n: u64| {
        let mut e = [0u8; 4];
        let at = layout.table_offset + n * 4;
        b.read_exact_at(&mut e, at)
            .ok()
            .map(|_| BigEndian::read_u32(&e))
    };
    let bad = m.bad_bits(layout, current_size, Some(b), entry);
    p.extend(bad.take(MAX_LISTED_BAT_PROBLEMS).map(|x| x.problem(m)));
}

/// Whether `offset..offset + len` of a file is a hole (reads as zeros without being
/// stored). Unknown (not a file, no `SEEK_DATA`): not a hole.
fn is_hole(b: &dyn Backend, offset: u64, len: u64) -> bool {
    let Some(f) = b.as_file() else { return false };
    match vhdkit_platform::next_data(f, offset) {
        Ok(Some(d)) => d >= offset.saturating_add(len),
        Ok(None) => true,
        Err(_) => false,
    }
}
