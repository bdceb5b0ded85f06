//! Repair: restores what is safely restorable in a dynamic or differencing file — a
//! damaged footer from its copy (or the copy from the footer), a file length cut short
//! or left long by a crash, orphaned tail space, Xen's batmap (header, checksum, bits) —
//! using the one layout description (`spec/layout.rs`). It never guesses at data.
//! (`check` only reads; this is the one part of checking that writes.)

use std::path::Path;

use crate::error::{Error, Result};
use crate::image::backend::{Backend, FileBackend};
use crate::spec::header::check_block_size;
use crate::spec::{Bat, DynamicHeader, Footer, SparseLayout, FOOTER_SIZE, HEADER_SIZE};

/// What `repair` did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct RepairReport {
    /// Each action taken, in order, in words.
    pub actions: Vec<String>,
}

/// Restores what is safely restorable in the dynamic or differencing disk at `path`,
/// and never guesses at data:
///
/// - a damaged or missing footer at the end, from a valid copy at offset 0;
/// - a damaged copy at offset 0, from a valid footer at the end;
/// - a file left long by a crash (unreferenced space after the last block of at least
///   one block's size: an allocation cut short, or a compaction stopped before its
///   truncation) — the footer moves past the last block and the file is truncated;
/// - a file cut short after its last block (the footer lost) — the footer is appended.
///
/// - Xen's batmap (a `tap` file's): bits that break the promise "allocated and fully
///   written" cleared, the checksum recomputed, a damaged header rewritten where blktap
///   puts one with every bit clear.
///
/// Refused: fixed disks with a damaged footer (no copy exists), a damaged dynamic
/// header (no copy exists), blocks that run past the end of the file (their data is
/// gone), a damaged batmap header whose area holds a block or other metadata. Write
/// order: footer at its new place, fsync, truncate, fsync, then the batmap (bitmap
/// sectors, header), fsync, then the copy at offset 0, fsync — the file has a valid
/// footer at the end or a valid copy at offset 0 at every instant (docs/crash-safety.md,
/// "Repair").
///
/// A VHDX file: its log is replayed (as a writable open does), nothing else.
pub fn repair(path: impl AsRef<Path>) -> Result<RepairReport> {
    let path = path.as_ref();
    let file =
        crate::image::open::open_file(path, true, crate::image::open::Accept::RegularOrBlock)?;
    let b = FileBackend::with_path(file, path);
    let io = |doing: &'static str, at: u64| move |e| Error::io(path, doing, at, e);
    let len = b
        .len()
        .map_err(|e| Error::file(path, "reading the length", e))?;
    let mut report = RepairReport::default();
    let mut sig = [0u8; 8];
    if b.read_exact_at(&mut sig, 0).is_ok() && crate::vhdx::parse::is_vhdx(&sig) {
        drop(b);
        return repair_vhdx(path, report);
    }
    let read_footer = |at: u64| -> Option<Footer> {
        let mut buf = [0u8; FOOTER_SIZE];
        b.read_exact_at(&mut buf, at).ok()?;
        Footer::decode(&buf)
            .ok()
            .filter(|f| f.cookie_ok() && f.checksum_ok())
    };
    let end_at = len.saturating_sub(FOOTER_SIZE as u64);
    let end = (len >= FOOTER_SIZE as u64)
        .then(|| read_footer(end_at))
        .flatten();
    let copy = read_footer(0).filter(|f| f.disk_type.is_sparse());
    let footer = match (&end, &copy) {
        (Some(e), _) => e.clone(),
        (None, Some(c)) => c.clone(),
        (None, None) => {
            return Err(Error::corrupt(
                path,
                "footer",
                end_at,
                "no valid footer at the end or at offset 0: nothing can be restored safely",
            ))
        }
    };
    if !footer.disk_type.is_sparse() {
        // A fixed disk with a valid footer: only padding between its data and its footer
        // (an interrupted resize) is restorable — nothing reads it.
        let data_end = footer.current_size;
        if let Some(at) = end.as_ref().map(|_| end_at).filter(|&at| at > data_end) {
            let bytes = footer.encode();
            b.write_all_at(&bytes, data_end)
                .map_err(io("writing the footer", data_end))?;
            b.sync()
                .map_err(|e| Error::file(path, "syncing the footer", e))?;
            b.set_len(data_end + FOOTER_SIZE as u64)
                .map_err(|e| Error::file(path, "setting the length", e))?;
            b.sync()
                .map_err(|e| Error::file(path, "syncing the length", e))?;
            report.actions.push(format!(
                "moved the fixed disk's footer from {at:#x} to the end of its data ({data_end:#x}), dropping {} bytes of padding",
                at - data_end
            ));
        }
        return Ok(report);
    }
    let hoff = footer.data_offset;
    let mut raw = [0u8; HEADER_SIZE];
    b.read_exact_at(&mut raw, hoff)
        .map_err(io("reading the dynamic header", hoff))?;
    let header = DynamicHeader::decode(&raw).expect("1024 bytes");
    if header.cookie != crate::spec::HEADER_COOKIE
        || !header.checksum_ok()
        || check_block_size(header.block_size).is_err()
    {
        return Err(Error::corrupt(
            path,
            "dynamic header",
            hoff,
            "the header is damaged and has no copy: not repairable",
        ));
    }
    // The footer's place is decided by the one layout description: past every block
    // and every piece of metadata (Xen's batmap included).
    let footer_at = if end.is_some() { end_at } else { len };
    let layout = SparseLayout::new(&header, hoff, footer.current_size, len, footer_at);
    // Xen's batmap, read as open and check read it; a damaged header is replaced (below).
    let found = crate::image::batmap::read(&b, &footer, &header, len, footer_at);
    let mut batmap = found.as_ref().map(|f| match &f.batmap {
        Some(m) => m.clone(),
        None => crate::image::batmap::Batmap::fresh(f.header_offset, &header, footer.current_size),
    });
    let rebuild = found.as_ref().filter(|f| f.batmap.is_none()).map(|f| {
        let fix = format!("; {}", crate::image::batmap::FIX);
        let what =
            |p: &crate::spec::Problem| format!("{}: {}", p.field, p.message.trim_end_matches(&fix));
        f.problems.iter().map(what).collect::<Vec<_>>()
    });
    let bare = layout.clone();
    let layout = match &batmap {
        Some(m) => layout.with_batmap(m.header_offset, &m.header),
        None => layout,
    };
    let toff = layout.table_offset;
    let used_bytes = layout.used_bat_bytes();
    if toff.saturating_add(used_bytes) > len {
        return Err(Error::corrupt(
            path,
            "BAT",
            toff,
            "the BAT runs past the end of the file: not repairable",
        ));
    }
    let mut bat_raw = vec![0u8; used_bytes as usize];
    b.read_exact_at(&mut bat_raw, toff)
        .map_err(io("reading the BAT", toff))?;
    let bat = Bat::decode(&bat_raw);
    let stride = layout.stride();
    let mut blocks_end = 0;
    for (i, off) in bat.allocated() {
        let block_end = off.saturating_add(stride);
        if block_end > len {
            return Err(Error::corrupt(
                path,
                "BAT",
                toff + i * 4,
                format!("block {i} at {off:#x} runs past the end of the file ({len:#x}): its data is gone, not repairable"),
            ));
        }
        blocks_end = blocks_end.max(block_end);
    }
    if let (Some(m), Some(_)) = (&batmap, &rebuild) {
        fits_where_blktap_puts_it(
            path,
            m,
            &bare,
            &bat,
            footer.current_size,
            header.max_table_entries,
            len,
        )?;
    }
    // The bits that break the promise "allocated and fully written" (a clear bit is
    // always safe), and the checksum: both restorable from the BAT and the bitmaps.
    let before = batmap.as_ref().map(|m| m.map.clone()).unwrap_or_default();
    let mut cleared = 0;
    if let Some(m) = &mut batmap {
        let bad: Vec<u64> = m
            .bad_bits(&layout, footer.current_size, Some(&b), |n| bat.entry(n))
            .map(|x| x.block())
            .collect();
        for &n in &bad {
            crate::spec::batmap::clear_bit(&mut m.map, n);
        }
        cleared = bad.len();
    }
    let data_end = layout.data_end(blocks_end);
    let footer_bytes = footer.encode();
    // Where the footer belongs: keep an intact end footer unless it leaves at least a
    // block's worth of unreferenced space or sits inside the data.
    let keep_end = end.is_some() && end_at >= data_end && end_at - data_end < stride;
    if !keep_end {
        let at = data_end;
        b.write_all_at(&footer_bytes, at)
            .map_err(io("writing the footer", at))?;
        b.sync()
            .map_err(|e| Error::file(path, "syncing the footer", e))?;
        if len != at + FOOTER_SIZE as u64 {
            b.set_len(at + FOOTER_SIZE as u64)
                .map_err(|e| Error::file(path, "setting the length", e))?;
            b.sync()
                .map_err(|e| Error::file(path, "syncing the length", e))?;
        }
        report.actions.push(match &end {
            None => format!("restored the footer at {at:#x} from the copy at offset 0; file length {len} -> {}", at + 512),
            Some(_) if at > end_at => format!(
                "moved the footer from {end_at:#x}, inside the metadata, to {at:#x} past it"
            ),
            Some(_) => format!(
                "moved the footer past the last block to {at:#x}, dropping {} bytes of unreferenced space",
                len.saturating_sub(at + 512)
            ),
        });
    }
    // The batmap after the footer: a footer that sat where the batmap belongs (a file cut
    // there) has moved past it above, so the file keeps a valid footer at its end.
    if let Some(m) = &mut batmap {
        let stale = crate::spec::batmap::checksum(&m.map, m.header.version) != m.header.checksum;
        if let Some(why) = &rebuild {
            m.write_whole(path, &b)?;
            report.actions.push(format!(
                "rewrote the batmap at {:#x} with every bit clear (it was invalid: {})",
                m.header_offset,
                why.join("; ")
            ));
        } else if cleared > 0 || stale {
            m.write(path, &b, &before)?;
            report.actions.push(match cleared {
                0 => "recomputed the batmap checksum".to_string(),
                1 => "cleared the batmap bit of a block not allocated or not fully written, and recomputed the checksum".to_string(),
                n => format!(
                    "cleared the batmap bits of {n} blocks not allocated or not fully written, and recomputed the checksum"
                ),
            });
        }
        if rebuild.is_some() || cleared > 0 || stale {
            b.sync()
                .map_err(|e| Error::file(path, "syncing the batmap", e))?;
        }
    }
    let copy_ok = {
        let mut buf = [0u8; FOOTER_SIZE];
        b.read_exact_at(&mut buf, 0).is_ok() && buf == footer_bytes
    };
    if !copy_ok {
        b.write_all_at(&footer_bytes, 0)
            .map_err(io("writing the footer copy", 0))?;
        b.sync()
            .map_err(|e| Error::file(path, "syncing the footer copy", e))?;
        report
            .actions
            .push("rewrote the footer copy at offset 0 from the footer".into());
    }
    Ok(report)
}

/// Whether a batmap replacing a damaged one fits where blktap puts it: its size covers
/// the disk, and its area (which may run past the end of a file cut there) holds no
/// block and no other metadata. Otherwise nothing can be restored safely.
fn fits_where_blktap_puts_it(
    path: &Path,
    m: &crate::image::batmap::Batmap,
    layout: &SparseLayout,
    bat: &Bat,
    current_size: u64,
    max_table_entries: u32,
    len: u64,
) -> Result<()> {
    let (start, end) = m.area();
    let refuse = |why: String| {
        Error::corrupt(
            path,
            "batmap",
            start,
            format!("cannot be rewritten where blktap puts it: {why}"),
        )
    };
    if start > len {
        return Err(refuse(
            "the BAT's padding runs past the end of the file".into(),
        ));
    }
    if let Some(p) = m
        .header
        .validate(current_size, max_table_entries, u64::MAX)
        .first()
    {
        return Err(refuse(p.message.clone()));
    }
    let overlaps = |s: u64, e: u64| s < end && start < e;
    if let Some(&(s, e)) = layout.metadata.iter().find(|&&(s, e)| overlaps(s, e)) {
        return Err(refuse(format!("metadata lies at {s:#x}..{e:#x}")));
    }
    let stride = layout.stride();
    if let Some((i, off)) = bat
        .allocated()
        .find(|&(_, off)| overlaps(off, off.saturating_add(stride)))
    {
        return Err(refuse(format!("block {i} lies at {off:#x}")));
    }
    Ok(())
}

/// A VHDX file: what is safely restorable is its log, replayed by opening the file for
/// writing (the write order of `image/vhdx/log.rs`); nothing else is touched.
fn repair_vhdx(path: &Path, mut report: RepairReport) -> Result<RepairReport> {
    let f = crate::VhdFile::open(path, &crate::OpenOptions::new().writable(true))?;
    report.actions.extend(
        f.warnings()
            .iter()
            .filter(|w| w.starts_with("replayed the VHDX log"))
            .cloned(),
    );
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::check;
    use crate::image::{CreateOptions, DiskKind};
    use crate::image::{Disk, OpenOptions};
    use std::path::PathBuf;

    fn disk_with_data(dir: &Path) -> (PathBuf, Vec<u8>) {
        let path = dir.join("d.vhd");
        Disk::create(&path, &CreateOptions::new(DiskKind::Dynamic, 8 << 20)).expect("create");
        let disk = Disk::open_rw(&path).expect("open");
        let data: Vec<u8> = (0..3 << 20).map(|i| (i % 251) as u8 + 1).collect();
        disk.write_at(&data, 1 << 20).expect("write");
        disk.flush().expect("flush");
        let mut all = vec![0u8; 8 << 20];
        disk.read_at(&mut all, 0).expect("read");
        (path, all)
    }

    fn content(path: &Path) -> Vec<u8> {
        let disk = Disk::open(path).expect("open");
        let mut all = vec![0u8; disk.virtual_size() as usize];
        disk.read_at(&mut all, 0).expect("read");
        all
    }

    #[test]
    fn repair_with_footer_missing_restores_it_from_the_copy() {
        let dir = tempfile::tempdir().expect("tmp");
        let (path, before) = disk_with_data(dir.path());
        let len = std::fs::metadata(&path).expect("meta").len();
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .and_then(|f| f.set_len(len - 512))
            .expect("cut");
        assert!(!check(&path, &OpenOptions::new()).expect("check").is_clean());
        let r = repair(&path).expect("repair");
        assert_eq!(r.actions.len(), 1, "{:?}", r.actions);
        assert!(check(&path, &OpenOptions::new()).expect("check").is_clean());
        assert_eq!(std::fs::metadata(&path).expect("meta").len(), len);
        assert_eq!(content(&path), before);
    }

    #[test]
    fn repair_of_a_file_left_long_truncates_the_orphaned_tail() {
        let dir = tempfile::tempdir().expect("tmp");
        let (path, before) = disk_with_data(dir.path());
        let len = std::fs::metadata(&path).expect("meta").len();
        let bytes = std::fs::read(&path).expect("read");
        // A crash after the footer moved for a new block, before its BAT entry landed.
        let grown = len + (2 << 20) + 4096;
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .expect("open");
        f.set_len(grown).expect("grow");
        vhdkit_platform::FileExt::write_all_at(&f, &bytes[bytes.len() - 512..], grown - 512)
            .expect("footer");
        drop(f);
        let report = check(&path, &OpenOptions::new()).expect("check");
        assert!(report.is_clean(), "a leak is not a structural problem");
        assert!(report
            .problems()
            .any(|(_, p)| p.message.contains("unreferenced space")));
        let r = repair(&path).expect("repair");
        assert_eq!(r.actions.len(), 1, "{:?}", r.actions);
        assert_eq!(std::fs::metadata(&path).expect("meta").len(), len);
        assert!(check(&path, &OpenOptions::new()).expect("check").is_clean());
        assert_eq!(content(&path), before);
    }

    #[test]
    fn repair_refuses_a_block_cut_off_by_truncation() {
        let dir = tempfile::tempdir().expect("tmp");
        let (path, _) = disk_with_data(dir.path());
        let len = std::fs::metadata(&path).expect("meta").len();
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .and_then(|f| f.set_len(len - (1 << 20)))
            .expect("cut");
        let before = std::fs::read(&path).expect("read");
        assert!(matches!(repair(&path), Err(Error::Corrupt { .. })));
        assert_eq!(
            std::fs::read(&path).expect("read"),
            before,
            "nothing written"
        );
    }

    #[test]
    fn repair_of_a_clean_disk_does_nothing() {
        let dir = tempfile::tempdir().expect("tmp");
        let (path, _) = disk_with_data(dir.path());
        let before = std::fs::read(&path).expect("read");
        assert!(repair(&path).expect("repair").actions.is_empty());
        assert_eq!(std::fs::read(&path).expect("read"), before);
    }

    #[test]
    fn repair_restores_a_damaged_copy_at_offset_zero() {
        let dir = tempfile::tempdir().expect("tmp");
        let (path, before) = disk_with_data(dir.path());
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .expect("open");
        vhdkit_platform::FileExt::write_all_at(&f, &[0xAB; 16], 10).expect("damage");
        drop(f);
        assert!(!check(&path, &OpenOptions::new()).expect("check").is_clean());
        assert_eq!(repair(&path).expect("repair").actions.len(), 1);
        assert!(check(&path, &OpenOptions::new()).expect("check").is_clean());
        assert_eq!(content(&path), before);
    }
}
