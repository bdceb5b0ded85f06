//! `vhdkit info`: the library's [`Info`] of the disk, printed as JSON or as text.

use std::path::PathBuf;

use clap::Args;
use vhdkit_format::image::FooterSource;
use vhdkit_format::info::{self, Info};

use super::human::{count, size_and_bytes};
use super::{json, terminal, CliError, OpenArgs, EXIT_OK};

#[derive(Debug, Args)]
pub struct InfoArgs {
    /// The disk.
    path: PathBuf,
    /// Print JSON.
    #[arg(long)]
    pub(super) json: bool,
    #[command(flatten)]
    open: OpenArgs,
}

pub fn run(a: InfoArgs) -> Result<u8, CliError> {
    let opts = a.open.options_for(&a.path)?;
    // A broken chain still gets its info shown: the file alone, and what is wrong with
    // its parent.
    let (disk, chain_error) = info::open(&a.path, &opts)?;
    let info = info::describe(&disk, chain_error.as_ref(), &a.path);
    if a.json {
        json::print(&json::Doc::new(&info))?;
    } else {
        print_text(&info)?;
    }
    Ok(EXIT_OK)
}

/// The text form of a VHDX file: its own facts instead of a VHD footer's.
fn print_vhdx(i: &Info, v: &vhdkit_format::image::VhdxInfo) -> Result<(), CliError> {
    let line = |label: &str, value: String| terminal::line(format!("{label:<19}{value}"));
    line(
        "allocated blocks:",
        format!("{} of {}", v.allocated_blocks, v.blocks),
    )?;
    line(
        "sectors:",
        format!(
            "{} bytes logical, {} bytes physical",
            v.logical_sector_size, v.physical_sector_size
        ),
    )?;
    line("creator:", v.creator.clone())?;
    line(
        "header:",
        format!("{} (sequence {})", v.header_slot, v.header_sequence),
    )?;
    line("data write id:", v.data_write_guid.clone())?;
    let log = match v.log_entries_replayed {
        0 => v.log.to_owned(),
        n => format!("{} ({n} entries)", v.log),
    };
    line("log:", log)?;
    for e in &v.parent_locator {
        line("parent locator:", format!("{} = {}", e.key, e.value))?;
    }
    if let Some(p) = &i.parent {
        match (&p.path, &p.error) {
            (Some(path), _) => line("parent path:", path.display().to_string())?,
            (None, Some(e)) => line("parent:", format!("NOT RESOLVED: {e}"))?,
            (None, None) => {}
        }
    }
    print_chain(i)?;
    for w in &i.warnings {
        line("warning:", w.clone())?;
    }
    Ok(())
}

/// The chain's levels, when there are several.
fn print_chain(i: &Info) -> Result<(), CliError> {
    if i.chain.len() > 1 {
        terminal::line("chain:")?;
        for (n, l) in i.chain.iter().enumerate() {
            // Fixed disks have no blocks: say only what they are.
            let blocks = l
                .allocated_blocks
                .map(|b| format!(", {} allocated", count(b, "block")))
                .unwrap_or_default();
            terminal::line(format!(
                "  {n}: {} ({}{blocks})",
                l.path.display(),
                l.disk_type
            ))?;
        }
    }
    Ok(())
}

/// The text form: one `label: value` line per fact, sizes as `4 MiB (4194304 bytes)`.
fn print_text(i: &Info) -> Result<(), CliError> {
    let line = |label: &str, value: String| terminal::line(format!("{label:<19}{value}"));
    line("path:", i.path.display().to_string())?;
    line("container:", i.container.to_owned())?;
    line("disk type:", i.disk_type.to_owned())?;
    line("virtual size:", size_and_bytes(i.virtual_size))?;
    line("file size:", size_and_bytes(i.file_size))?;
    if let Some(b) = i.block_size {
        line("block size:", size_and_bytes(b))?;
    }
    if let (Some(n), Some(max)) = (i.allocated_blocks, i.max_table_entries) {
        line("allocated blocks:", format!("{n} of {max}"))?;
    }
    if let Some(v) = &i.vhdx {
        return print_vhdx(i, v);
    }
    line(
        "creator:",
        format!(
            "{} {} ({})",
            i.creator_app, i.creator_version, i.creator_host_os
        ),
    )?;
    line("created:", i.timestamp.clone())?;
    let g = &i.geometry;
    line(
        "geometry (CHS):",
        format!(
            "{}/{}/{}, capacity {}",
            g.cylinders,
            g.heads,
            g.sectors_per_track,
            size_and_bytes(g.capacity)
        ),
    )?;
    line("unique id:", i.unique_id.clone())?;
    if i.saved_state {
        line("saved state:", "yes".into())?;
    }
    if i.footer_source != FooterSource::End {
        // Spelled as in the JSON.
        let source = serde_json::to_value(i.footer_source)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        line("footer used:", source)?;
    }
    if let Some(p) = &i.parent {
        line("parent name:", p.name.clone())?;
        line("parent unique id:", p.unique_id.clone())?;
        match (&p.path, &p.error) {
            (Some(path), _) => line("parent path:", path.display().to_string())?,
            (None, Some(e)) => line("parent:", format!("NOT RESOLVED: {e}"))?,
            (None, None) => {}
        }
    }
    if let Some(h) = &i.host_drive {
        line(
            "host drive:",
            format!(
                "{} ({}{})",
                h.device.display(),
                size_and_bytes(h.device_size),
                if h.read_only { ", read-only" } else { "" }
            ),
        )?;
    }
    print_chain(i)?;
    for w in &i.warnings {
        line("warning:", w.clone())?;
    }
    Ok(())
}
