//! Opening a VHDX file: the header section (identifier, current header, region
//! table), the areas they name checked against the file's length, the log (replayed
//! in memory or on disk, `log.rs`), then the metadata and the BAT as the replay left
//! them. Every read is bounded by the file's real length before anything is allocated
//! for it; a damaged structure is [`Error::Corrupt`] naming it and its offset.

use std::path::Path;
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::vhdx::bat::{Bat, BatGeometry};
use crate::vhdx::header::{HEADER_1_OFFSET, HEADER_2_OFFSET, HEADER_SIZE};
use crate::vhdx::ident::RawFileIdentifier;
use crate::vhdx::log::replay;
use crate::vhdx::region::{REGION_TABLE_1_OFFSET, REGION_TABLE_2_OFFSET, REGION_TABLE_SIZE};
use crate::vhdx::{
    CurrentHeader, FileAreas, Metadata, RegionTable, Structure, VhdxError, HEADER_SECTION_SIZE,
};

use super::super::backend::Backend;
use super::super::core::FileCore;
use super::super::footer::FooterSource;
use super::super::OpenOptions;
use super::log::{replay_on_disk, slot_name, LogState, Overlay};
use super::{made_up_footer, Vhdx};

/// The [`Error`] for a format-layer error in the file at `path`: VM_E_INVALID_HD_FILE,
/// naming the structure and its offset.
pub(crate) fn corrupt(path: &Path, e: VhdxError) -> Error {
    Error::corrupt(path, e.structure().name(), e.offset(), e.to_string())
}

/// `len` bytes of `section` (the file's first bytes) from `at`, or nothing when the
/// file is too short (the format layer then names what is missing).
fn part(section: &[u8], at: u64, len: usize) -> &[u8] {
    let s = (at as usize).min(section.len());
    &section[s..(s + len).min(section.len())]
}

/// Opens the VHDX file held by `backend` (`len` bytes): its [`FileCore`], with the
/// footer made up from its metadata, and its container.
pub(crate) fn open_vhdx(
    path: &Path,
    backend: Arc<dyn Backend>,
    len: u64,
    opts: &OpenOptions,
) -> Result<(FileCore, Vhdx)> {
    let bad = |e| corrupt(path, e);
    let mut section = vec![0u8; len.min(HEADER_SECTION_SIZE) as usize];
    backend
        .read_exact_at(&mut section, 0)
        .map_err(|e| Error::io(path, "reading the VHDX header section", 0, e))?;
    let ident = RawFileIdentifier::decode(&section)
        .and_then(|r| r.validate())
        .map_err(bad)?;
    let header = CurrentHeader::choose(
        part(&section, HEADER_1_OFFSET, HEADER_SIZE),
        part(&section, HEADER_2_OFFSET, HEADER_SIZE),
    )
    .map_err(bad)?;
    let (regions, regions_agree) = RegionTable::choose(
        part(&section, REGION_TABLE_1_OFFSET, REGION_TABLE_SIZE),
        part(&section, REGION_TABLE_2_OFFSET, REGION_TABLE_SIZE),
    )
    .map_err(bad)?;
    drop(section);
    let h = header.header;
    let mut areas = FileAreas::new(&h, &regions, len).map_err(bad)?;
    let mut core = FileCore {
        path: path.to_owned(),
        backend,
        writable: opts.writable,
        footer: crate::spec::Footer::new(crate::spec::DiskType::Dynamic, 0),
        footer_source: FooterSource::End,
        file_len: len,
        warnings: Vec::new(),
    };
    if !regions_agree {
        core.warnings
            .push("the two VHDX region tables differ; using the first valid one".into());
    }
    let plan = if h.has_log() {
        // The log lies inside the file (FileAreas checked it).
        let mut log = vec![0u8; h.log_length as usize];
        core.read(&mut log, h.log_offset, "reading the VHDX log")?;
        replay(&log, &h, &areas).map_err(bad)?
    } else {
        None
    };
    let plan_touches_regions = plan.as_ref().is_some_and(|p| {
        p.writes
            .iter()
            .any(|w| w.offset() < HEADER_SECTION_SIZE && !w.is_empty())
    });
    let (header, log_state, overlay) = match plan {
        None if h.has_log() => (header, LogState::NothingToReplay, Overlay::default()),
        None => (header, LogState::Clean, Overlay::default()),
        Some(plan) => {
            let (entries, writes) = (plan.sequence.entries.len(), plan.writes.len());
            areas.file_len = plan.new_file_len.max(len);
            if opts.writable {
                let new = replay_on_disk(&core, &header, &plan)?;
                core.file_len = areas.file_len;
                core.warnings.push(format!(
                    "replayed the VHDX log ({entries} entries, {writes} writes) into the file and cleared it ({} now current)",
                    slot_name(new.slot)
                ));
                (
                    new,
                    LogState::ReplayedOnDisk { entries, writes },
                    Overlay::default(),
                )
            } else {
                core.warnings.push(format!(
                    "the VHDX log holds {entries} entries not yet applied; replayed in memory (the file is not written; opening it for writing applies them)"
                ));
                (
                    header,
                    LogState::ReplayedInMemory { entries, writes },
                    Overlay::new(&plan, len),
                )
            }
        }
    };
    // A log that switched the region table (a BAT region moved by a resize): the table
    // as replayed is the one in force, and the areas follow it.
    let (regions, regions_agree) = match plan_touches_regions {
        false => (regions, regions_agree),
        true => {
            let mut t = vec![0u8; (REGION_TABLE_2_OFFSET as usize) + REGION_TABLE_SIZE];
            read_replayed(&core, &overlay, &mut t, 0, "reading the VHDX region tables")?;
            let chosen = RegionTable::choose(
                &t[REGION_TABLE_1_OFFSET as usize..],
                &t[REGION_TABLE_2_OFFSET as usize..],
            )
            .map_err(bad)?;
            areas = FileAreas::new(&header.header, &chosen.0, areas.file_len).map_err(bad)?;
            chosen
        }
    };
    let md = regions.metadata;
    let mut bytes = vec![0u8; md.length as usize];
    read_replayed(
        &core,
        &overlay,
        &mut bytes,
        md.offset,
        "reading the VHDX metadata region",
    )?;
    let metadata = Metadata::decode(&bytes, md.offset).map_err(bad)?;
    if metadata.file_parameters.has_parent && metadata.parent_locator.is_none() {
        return Err(bad(VhdxError::field(
            Structure::MetadataTable,
            md.offset,
            "parent locator",
            "absent",
            "present in a differencing file",
        )));
    }
    let geometry = BatGeometry::from_metadata(&metadata).map_err(bad)?;
    let b = regions.bat;
    if geometry.bat_bytes() > u64::from(b.length) {
        return Err(bad(VhdxError::field(
            Structure::Bat,
            b.offset,
            "region length",
            b.length,
            format!("at least the table's {} bytes", geometry.bat_bytes()),
        )));
    }
    let mut bytes = vec![0u8; geometry.bat_bytes() as usize];
    read_replayed(
        &core,
        &overlay,
        &mut bytes,
        b.offset,
        "reading the VHDX BAT",
    )?;
    let bat = Bat::decode(&bytes, geometry, b.offset).map_err(bad)?;
    if let Some(p) = bat.problems(&areas, b.offset).into_iter().next() {
        return Err(bad(p));
    }
    let log_len = u64::from(header.header.log_length);
    let file_end = areas.file_len;
    let v = Vhdx {
        ident,
        header,
        regions,
        regions_agree,
        areas,
        metadata,
        bat: std::sync::RwLock::new(bat),
        write: std::sync::Mutex::new(super::write::WriteState::new(&header, file_end, log_len)),
        log: log_state,
        overlay,
    };
    core.footer = made_up_footer(&v, core.backend.as_file());
    Ok((core, v))
}

/// Reads `buf.len()` bytes at file offset `at` as the file reads after the log's
/// replay: the file's bytes (zeros past its end, where a replay grew it), with an
/// in-memory replay's writes on top.
pub(super) fn read_replayed(
    f: &FileCore,
    overlay: &Overlay,
    buf: &mut [u8],
    at: u64,
    doing: &'static str,
) -> Result<()> {
    if overlay.is_empty() {
        // The file as it is (a writable file grows past its length at opening).
        return f.read(buf, at, doing);
    }
    // A read-only open: the file keeps the length it had.
    let stored = f.file_len.saturating_sub(at).min(buf.len() as u64) as usize;
    if stored > 0 {
        f.read(&mut buf[..stored], at, doing)?;
    }
    buf[stored..].fill(0);
    overlay.apply(buf, at);
    Ok(())
}
