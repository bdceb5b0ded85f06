//! `vhdkit resize`: change a disk's virtual size in place. The engine does the resize
//! (`vhdkit_format::ops::resize`); this command adds what the engine does not know —
//! the partition table, read with `vhdkit-volume` over the disk's virtual view, which a
//! shrink must not cut, whose end `--to-minimum` shrinks to, and whose backup GPT a
//! resize leaves for the user to move.

use std::path::{Path, PathBuf};

use clap::Args;
use vhdkit_format::ops::resize::target_size;
use vhdkit_format::ops::{self, OpsOptions, ResizeOptions};
use vhdkit_format::volume::{shrink_guard, DiskView};
use vhdkit_format::MIN_CREATE_SIZE;
use vhdkit_format::{Disk, DiskKind};
use vhdkit_volume::table::{read_table, Table, TableKind};

use super::human::size_and_bytes;
use super::runner::{self, RunArgs};
use super::{size_arg, terminal, CliError, OpenArgs};

#[derive(Debug, Args)]
pub struct ResizeArgs {
    /// A fixed, dynamic or differencing disk, resized in place.
    path: PathBuf,
    /// The new virtual size: bytes or K/M/G/T, fractions allowed (`1.5G`; 3 MiB to
    /// 2040 GiB, a multiple of 512).
    #[arg(
        long,
        value_parser = size_arg,
        required_unless_present_any = ["align", "to_minimum"],
        conflicts_with = "to_minimum"
    )]
    size: Option<u64>,
    /// Shrink to the end of the last partition (for a GPT, plus the room its backup
    /// copy takes: as many sectors as the table keeps before its first usable one),
    /// rounded up to --align, never below 3 MiB: Hyper-V's `Resize-VHD
    /// -ToMinimumSize`. Refused, with the reason, where no partition table is
    /// understood. Implies --allow-shrink.
    #[arg(long)]
    to_minimum: bool,
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

/// For a disk whose creator makes qemu-img (and Virtual PC) take the size from the CHS
/// geometry (`vpc `, `qemu`), the creator and the size they will show at `new` bytes,
/// when it is not `new`.
fn chs_sized(disk: &Disk, new: u64) -> Option<(String, u64)> {
    use vhdkit_format::Geometry;
    let footer = disk.top().footer();
    if !matches!(&footer.creator_app, b"vpc " | b"qemu") {
        return None;
    }
    let g = Geometry::from_total_sectors(new / 512);
    (g != Geometry::MAX && g.capacity() != new).then(|| (footer.creator_app_string(), g.capacity()))
}

/// `--to-minimum`: the end of the last partition of `table` (read from the disk at
/// `path`), never below the smallest disk vhdkit writes; or why there is none.
fn minimum(path: &Path, table: &Result<Table, String>) -> Result<u64, CliError> {
    let why = match table.as_ref().map(Table::minimum_size) {
        Ok(Ok(end)) => return Ok(end.max(MIN_CREATE_SIZE)),
        Ok(Err(why)) => why,
        Err(why) => why.clone(),
    };
    Err(vhdkit_format::Error::NotAllowed {
        path: path.to_owned(),
        detail: format!("--to-minimum shrinks to the end of the last partition, and {why}"),
    }
    .into())
}

/// What a resize from `old` to `new` bytes left of a GPT's backup copy, when that is
/// worth saying: it was at the old end (a grow or a shrink: tools look for it at the
/// end), or a shrink cut it. Nothing when the size did not change or the backup lies
/// elsewhere untouched.
fn gpt_note(table: &Table, old: u64, new: u64) -> Option<String> {
    let g = table
        .gpt
        .filter(|_| table.kind == TableKind::Gpt && old != new)?;
    let at = g.backup_header;
    if at.checked_add(512) == Some(old) {
        Some(format!(
            "its backup GPT header was at the old end of the disk (byte {at}); rewrite it at the new end (e.g. `sgdisk -e`)"
        ))
    } else if new < old && at.saturating_add(512) > new {
        Some(format!(
            "its backup GPT header (byte {at}) lay past the new end and was cut; rewrite it at the new end (e.g. `sgdisk -e`)"
        ))
    } else {
        None
    }
}

pub fn run(a: ResizeArgs) -> Result<u8, CliError> {
    let open = a.open.options_for(&a.path)?;
    let mut resize = ResizeOptions {
        size: a.size,
        align: a.align,
        allow_shrink: a.allow_shrink || a.to_minimum,
        shrink_guard: None,
    };
    let opts = OpsOptions {
        open,
        force: a.force,
        also_check: a.also_check,
        sparse: a.sparse,
        ..OpsOptions::default()
    };
    // The disk is opened once, for writing: the partition table is read from it, the
    // engine's checks run on it, and the task resizes it.
    let disk = Disk::open_with(&a.path, &opts.open.clone().writable(true))?;
    // What the command line alone gets wrong is a usage mistake (exit 2): a shrink not
    // asked for, --sparse on a disk that is not fixed. Before the engine's checks.
    let current = disk.virtual_size();
    let table = read_table(&DiskView::new(&disk))
        .map_err(|e| format!("its partition table cannot be read ({e})"));
    if a.to_minimum {
        resize.size = Some(minimum(&a.path, &table)?);
    }
    let new = target_size(current, &resize)?;
    if new < current && !resize.allow_shrink {
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
    let resize = ResizeOptions {
        shrink_guard: Some(shrink_guard()),
        ..resize
    };
    // The plan, on the disk opened above: what the notes below say comes from it.
    let prepared = ops::resize::prepare(disk, &resize, &opts)?;
    let (old, new) = prepared.sizes();
    let gpt_note = table.ok().and_then(|t| gpt_note(&t, old, new));
    let chs_note = chs_sized(prepared.disk(), new);
    let fixed = prepared.disk().kind() == DiskKind::Fixed;
    let task = ops::resize_prepared_task(prepared, &opts);
    let ran = runner::run(task, &a.run, runner::Leaves::Resize);
    let code = runner::hint_sparse(ran, fixed && !a.sparse)?;
    if let Some(shown) = chs_note {
        terminal::eline(format!(
            "vhdkit: note: {} was created by {}, whose disks qemu-img and Virtual PC size by their CHS geometry: they show {} (the geometry holds no more); sizes they agree on are whole geometries, or above 127 GiB",
            a.path.display(),
            shown.0,
            size_and_bytes(shown.1)
        ));
    }
    if let Some(note) = gpt_note {
        terminal::eline(format!("vhdkit: note: {}: {note}", a.path.display()));
    }
    Ok(code)
}
