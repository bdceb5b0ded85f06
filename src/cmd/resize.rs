//! `vhdkit resize`: change a disk's virtual size in place. The engine does the resize
//! (`vhdkit_format::ops::resize`); this command adds what the engine does not know —
//! the partition table, read with `vhdkit-volume` over the disk's virtual view, which a
//! shrink must not cut.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use clap::Args;
use vhdkit_format::ops::resize::{target_size, ShrinkGuard};
use vhdkit_format::ops::{self, OpsOptions, ResizeOptions};
use vhdkit_format::{Disk, DiskKind};
use vhdkit_volume::table::{read_table, TableKind};

use super::human::size_and_bytes;
use super::runner::{self, RunArgs};
use super::volumes::View;
use super::{size_arg, terminal, CliError, OpenArgs};

#[derive(Debug, Args)]
pub struct ResizeArgs {
    /// A fixed, dynamic or differencing disk, resized in place.
    path: PathBuf,
    /// The new virtual size: bytes or K/M/G/T (3 MiB to 2040 GiB, a multiple of 512).
    #[arg(long, value_parser = size_arg, required_unless_present = "align")]
    size: Option<u64>,
    /// Round the size (the one given, or the current one) up to a multiple of this,
    /// e.g. 1M for Azure.
    #[arg(long, value_parser = size_arg)]
    align: Option<u64>,
    /// Allow a size smaller than the current one: the data past it is cut (refused
    /// anyway when a partition ends past the new size).
    #[arg(long)]
    allow_shrink: bool,
    /// Resize even though other disks name it as their parent (resize each of them to
    /// the same size afterwards).
    #[arg(long)]
    force: bool,
    /// Also look in DIR for disks naming this one as their parent (besides its own
    /// folder); repeatable.
    #[arg(long, value_name = "DIR")]
    also_check: Vec<PathBuf>,
    /// A fixed disk that grows: leave the new space sparse instead of allocating it.
    #[arg(long)]
    sparse: bool,
    #[command(flatten)]
    pub(super) run: RunArgs,
    #[command(flatten)]
    open: OpenArgs,
}

/// Refuses a shrink that would cut a partition (or a file system spanning a disk
/// without a table); notes in `gpt` whether the disk has a GPT, whose backup header at
/// the end a shrink cuts.
fn partition_guard(gpt: Arc<AtomicBool>) -> ShrinkGuard {
    Arc::new(move |disk: &Disk, new: u64| {
        let table = read_table(&View::new(disk)).map_err(|e| {
            format!("its partition table cannot be read ({e}), so a shrink could cut a partition")
        })?;
        gpt.store(table.kind == TableKind::Gpt, Ordering::Relaxed);
        let cut: Vec<String> = table
            .entries
            .iter()
            .filter(|e| e.start.saturating_add(e.len) > new)
            .map(|e| {
                let what = if table.kind == TableKind::WholeDisk {
                    "a file system without a partition table".to_owned()
                } else {
                    format!("partition {}", e.index)
                };
                format!(
                    "{what} (bytes {}..{}, {})",
                    e.start,
                    e.start.saturating_add(e.len),
                    e.ptype.name()
                )
            })
            .collect();
        if cut.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "shrinking to {new} bytes would cut {}; shrink the file system and the partition first, then the disk",
                cut.join(", ")
            ))
        }
    })
}

/// For a disk whose creator makes qemu-img (and Virtual PC) take the size from the CHS
/// geometry (`vpc `, `qemu`), the creator and the size they will show at `new` bytes,
/// when it is not `new`.
fn chs_sized(disk: &Disk, new: u64) -> Option<(String, u64)> {
    use vhdkit_format::spec::Geometry;
    let footer = disk.top().footer();
    if !matches!(&footer.creator_app, b"vpc " | b"qemu") {
        return None;
    }
    let g = Geometry::from_total_sectors(new / 512);
    (g != Geometry::MAX && g.capacity() != new).then(|| (footer.creator_app_string(), g.capacity()))
}

pub fn run(a: ResizeArgs) -> Result<u8, CliError> {
    let open = a.open.options_for(&a.path)?;
    let resize = ResizeOptions {
        size: a.size,
        align: a.align,
        allow_shrink: a.allow_shrink,
        shrink_guard: None,
    };
    // What the command line alone gets wrong is a usage mistake (exit 2): a shrink not
    // asked for, --sparse on a disk that is not fixed. Read-only, before the task opens
    // the disk for writing.
    let chs_note = {
        let disk = Disk::open_with(&a.path, &open.clone().writable(false))?;
        let current = disk.virtual_size();
        let new = target_size(current, &resize)?;
        if new < current && !a.allow_shrink {
            return Err(super::usage_error(&format!(
                "{} is smaller than the disk's {}: shrinking cuts the data past the new size; pass --allow-shrink to do it anyway",
                size_and_bytes(new),
                size_and_bytes(current)
            )));
        }
        if a.sparse && disk.kind() != DiskKind::Fixed {
            return Err(super::usage_error(&format!(
                "--sparse applies to a fixed disk; {} is {}",
                a.path.display(),
                disk.kind()
            )));
        }
        chs_sized(&disk, new)
    };
    let gpt = Arc::new(AtomicBool::new(false));
    let resize = ResizeOptions {
        shrink_guard: Some(partition_guard(gpt.clone())),
        ..resize
    };
    let opts = OpsOptions {
        open,
        force: a.force,
        also_check: a.also_check,
        sparse: a.sparse,
        ..OpsOptions::default()
    };
    let task = ops::resize_task(&a.path, &resize, &opts)?;
    let code = runner::run(task, &a.run, runner::Leaves::Resize)?;
    if let Some(shown) = chs_note {
        terminal::eline(format!(
            "vhdkit: note: {} was created by {}, whose disks qemu-img and Virtual PC size by their CHS geometry: they show {} (the geometry holds no more); sizes they agree on are whole geometries, or above 127 GiB",
            a.path.display(),
            shown.0,
            size_and_bytes(shown.1)
        ));
    }
    if gpt.load(Ordering::Relaxed) {
        terminal::eline(format!(
            "vhdkit: note: {} has a GPT: its backup header was at the old end of the disk; rewrite it at the new end (e.g. `sgdisk -e`)",
            a.path.display()
        ));
    }
    Ok(code)
}
