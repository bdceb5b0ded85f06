//! The checks of a differencing disk's links: its locators (where their payloads lie,
//! what they name) and the parent its chain opened (size, time stamp, unique id).

use crate::image::backend::Backend;
use crate::image::VhdFile;
use crate::spec::{DynamicHeader, Problem, Severity};

/// What is wrong with the link from `child` to the `parent` its chain opened:
///
/// - a parent of another virtual size: an **error**. Windows refuses such a chain
///   (`ERROR_VHD_CHILD_PARENT_SIZE_MISMATCH`), vhdkit's resize and set-parent refuse to
///   make one, and past the smaller size the child reads what no writer meant;
/// - a parent modified after the time stamp the child records: a **warning** — its
///   content may have changed under the child (or it was copied without its times);
///   modified before it (e.g. restored from a backup): information;
/// - a parent with another unique id (used as asked): an error.
pub(super) fn link_problems(child: &VhdFile, parent: &VhdFile) -> Vec<Problem> {
    let mut problems = Vec::new();
    if parent.virtual_size() != child.virtual_size() {
        let vhdx = child.is_vhdx();
        let p = Problem::new(
            Severity::Error,
            if vhdx { "VHDX metadata" } else { "footer" },
            if vhdx { "virtual disk size" } else { "current size" },
            format!(
                "{} bytes, its parent {} {} bytes: a child and its parent have one size (Windows refuses the chain; resize the child to its parent's size, or the parent back)",
                child.virtual_size(),
                parent.path().display(),
                parent.virtual_size()
            ),
        );
        problems.push(if vhdx {
            p
        } else {
            p.at(child.footer_offset() + crate::spec::footer::off::CURRENT_SIZE as u64)
        });
    }
    // VHDX files record no parent time stamp.
    let Some(h) = child.header() else {
        return problems;
    };
    let mtime = std::fs::metadata(parent.path())
        .and_then(|m| m.modified())
        .ok()
        .map(crate::spec::VhdTime::from_system_time);
    if let Some(t) = mtime.filter(|&t| h.parent_timestamp.0 != 0 && t != h.parent_timestamp) {
        let newer = t.0 > h.parent_timestamp.0;
        let message = if newer {
            format!(
                "records {}, but the parent {} was modified later, {}: if its content changed since, the child reads through different bytes than it was written over (a copy that did not keep modification times looks the same; once the chain reads right, `set-parent` records the parent's time again)",
                h.parent_timestamp.to_rfc3339(),
                parent.path().display(),
                t.to_rfc3339()
            )
        } else {
            format!(
                "records {}, the parent was modified {}",
                h.parent_timestamp.to_rfc3339(),
                t.to_rfc3339()
            )
        };
        let severity = if newer {
            Severity::Warning
        } else {
            Severity::Info
        };
        problems.push(
            Problem::new(severity, "dynamic header", "parent time stamp", message)
                .at(child.footer().data_offset),
        );
    }
    if parent.footer().unique_id != h.parent_unique_id {
        problems.push(Problem::new(
            Severity::Error,
            "dynamic header",
            "parent unique id",
            format!(
                "records {}; the parent used, {}, has another (used as asked)",
                h.parent_unique_id,
                parent.path().display(),
            ),
        ));
    }
    problems
}

/// Reports every used parent locator whose payload overlaps the BAT: over the table's
/// entries, an error (the two claim the same bytes: one of them is wrong); over the
/// padding of its last sector, a warning (every reader reads it right, but a table that
/// grows in place writes its new entries there — vhdkit's resize moves the table
/// instead; other tools' may not).
pub(super) fn locators_in_table(header: &DynamicHeader, hoff: u64, p: &mut Vec<Problem>) {
    use crate::spec::header::LOCATORS_OFFSET;
    use crate::spec::layout::locator_payload;
    use crate::spec::locator::LOCATOR_ENTRY_SIZE;
    let toff = header.table_offset;
    let entries_end = toff.saturating_add(u64::from(header.max_table_entries) * 4);
    let table_end = toff.saturating_add(header.bat_size_on_disk());
    for (slot, l) in header.locators.iter().enumerate() {
        let Some((start, end)) = locator_payload(l) else {
            continue;
        };
        if start >= table_end || end <= toff {
            continue;
        }
        let (severity, what) = if start < entries_end {
            (Severity::Error, "the table's entries")
        } else {
            (
                Severity::Warning,
                "the padding of the table's last sector, where a table that grows in place writes its new entries (vhdkit's resize moves the table instead)",
            )
        };
        p.push(
            Problem::new(
                severity,
                "parent locator",
                "data offset",
                format!(
                    "locator {slot} ({}) payload at {start:#x}..{end:#x} overlaps the BAT ({toff:#x}..{table_end:#x}): it lies in {what}",
                    l.code
                ),
            )
            .at(hoff + (LOCATORS_OFFSET + slot * LOCATOR_ENTRY_SIZE) as u64),
        );
    }
}

/// Reports what a differencing disk's locators name against its header's parent name
/// (information where they differ), and a disk with neither a usable locator nor a
/// parent name (a warning: its parent cannot be found).
pub(super) fn locator_names(b: &dyn Backend, header: &DynamicHeader, p: &mut Vec<Problem>) {
    let names: Vec<String> = header
        .locators
        .iter()
        .filter(|l| l.is_used())
        .filter_map(|l| {
            let n = l.data_length.min(crate::spec::locator::MAX_LOCATOR_DATA) as usize;
            let mut buf = vec![0u8; n];
            b.read_exact_at(&mut buf, l.data_offset).ok()?;
            l.decode_path(&buf).map(|x| x.path)
        })
        .collect();
    let parent_name = crate::spec::locator::windows_to_unix(&header.parent_name());
    let base = |s: &str| s.rsplit(['/', '\\']).next().unwrap_or(s).to_owned();
    for n in &names {
        if !parent_name.is_empty() && base(n) != base(&parent_name) {
            p.push(Problem::new(
                Severity::Info,
                "parent locator",
                "path",
                format!("locator names {n:?}, the header's parent name is {parent_name:?}"),
            ));
        }
    }
    if names.is_empty() && parent_name.is_empty() {
        p.push(Problem::new(
            Severity::Warning,
            "dynamic header",
            "parent",
            "no usable parent locator and no parent name: the parent cannot be found",
        ));
    }
}
