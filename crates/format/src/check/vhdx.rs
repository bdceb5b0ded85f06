//! `check` of a VHDX file: every problem of each header slot and region table copy
//! (a damaged copy beside a valid one is a warning: a torn update leaves one), then
//! the file opened read-only as vhdkit opens it — the log replayed in memory, the
//! metadata and the BAT — with every BAT problem listed, and a log not yet applied
//! reported (opening the file for writing, or `check --repair`, applies it).

use std::path::Path;
use std::sync::Arc;

use crate::image::backend::{Backend, FileBackend};
use crate::image::vhdx::{open_vhdx, LogState};
use crate::image::OpenOptions;
use crate::spec::{Problem, Severity};
use crate::vhdx::header::{HeaderSlot, RawHeader, HEADER_SIZE};
use crate::vhdx::region::{table_offset, RawRegionTable, REGION_TABLE_SIZE};
use crate::vhdx::{VhdxError, HEADER_SECTION_SIZE};

use super::MAX_LISTED_BAT_PROBLEMS;

fn problem(severity: Severity, e: &VhdxError) -> Problem {
    let name = e.structure().name();
    let text = e.to_string();
    let prefix = format!("{name} at offset {:#x}: ", e.offset());
    let message = text.strip_prefix(&prefix).unwrap_or(&text).to_owned();
    Problem::new(severity, name, "structure", message).at(e.offset())
}

/// A backend of its own over what `b` holds, for the open path: the same file (a
/// second handle), or — memory backends, in tests and fuzzing — a copy of the bytes.
fn own_backend(b: &dyn Backend, len: u64) -> Option<Arc<dyn Backend>> {
    if let Some(f) = b.as_file() {
        return Some(Arc::new(FileBackend::new(f.try_clone().ok()?)));
    }
    #[cfg(any(test, feature = "testing"))]
    {
        let mut all = vec![0u8; usize::try_from(len).ok()?];
        b.read_exact_at(&mut all, 0).ok()?;
        Some(Arc::new(crate::image::backend::MemBackend::new(all)))
    }
    #[cfg(not(any(test, feature = "testing")))]
    {
        let _ = len;
        None
    }
}

/// Every problem of the VHDX file held by `b`.
pub(crate) fn check_vhdx(b: &dyn Backend) -> Vec<Problem> {
    let mut p = Vec::new();
    let len = b.len().unwrap_or(0);
    let mut section = vec![0u8; len.min(HEADER_SECTION_SIZE) as usize];
    if b.read_exact_at(&mut section, 0).is_err() {
        p.push(Problem::new(
            Severity::Error,
            "VHDX header section",
            "structure",
            "cannot be read",
        ));
        return p;
    }
    let part = |at: u64, n: usize| {
        let s = (at as usize).min(section.len());
        &section[s..(s + n).min(section.len())]
    };
    // Each copy on its own; the open below says whether one usable copy is left.
    for slot in [HeaderSlot::First, HeaderSlot::Second] {
        let found = RawHeader::decode(part(slot.offset(), HEADER_SIZE), slot)
            .map(|r| r.problems(slot))
            .unwrap_or_else(|e| vec![e]);
        p.extend(found.iter().map(|e| problem(Severity::Warning, e)));
    }
    for copy in [1u8, 2] {
        let found = RawRegionTable::decode(part(table_offset(copy), REGION_TABLE_SIZE), copy)
            .map(|r| r.problems(copy))
            .unwrap_or_else(|e| vec![e]);
        p.extend(found.iter().map(|e| problem(Severity::Warning, e)));
    }
    let Some(backend) = own_backend(b, len) else {
        p.push(Problem::new(
            Severity::Error,
            "VHDX file",
            "structure",
            "cannot be read",
        ));
        return p;
    };
    let opened = open_vhdx(Path::new("<image>"), backend, len, &OpenOptions::new());
    let (_, v) = match opened {
        Ok(x) => x,
        Err(e) => {
            let (structure, offset) = match &e {
                crate::Error::Corrupt {
                    structure, offset, ..
                } => (*structure, Some(*offset)),
                _ => ("VHDX file", None),
            };
            let mut problem = Problem::new(Severity::Error, structure, "structure", e.to_string());
            problem.offset = offset;
            p.push(problem);
            return p;
        }
    };
    if !v.regions_agree {
        p.push(
            Problem::new(
                Severity::Warning,
                "VHDX region table 2",
                "structure",
                "differs from region table 1",
            )
            .at(table_offset(2)),
        );
    }
    if let LogState::ReplayedInMemory { entries, writes } = v.log {
        p.push(
            Problem::new(
                Severity::Warning,
                "VHDX log",
                "structure",
                format!(
                    "holds {entries} entries ({writes} writes) not yet applied to the file (check --repair, or opening it for writing, replays them)"
                ),
            )
            .at(v.header.header.log_offset),
        );
    }
    let bat = v.bat().problems(&v.areas, v.regions.bat.offset);
    let n = bat.len();
    p.extend(
        bat.iter()
            .take(MAX_LISTED_BAT_PROBLEMS)
            .map(|e| problem(Severity::Error, e)),
    );
    if n > MAX_LISTED_BAT_PROBLEMS {
        p.push(Problem::new(
            Severity::Error,
            "VHDX BAT",
            "structure",
            format!("{} more BAT problems", n - MAX_LISTED_BAT_PROBLEMS),
        ));
    }
    p
}
