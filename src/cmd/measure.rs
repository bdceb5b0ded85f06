//! `vhdkit measure`: the exact length of the file `convert` (or `merge-to`) would write.

use std::path::PathBuf;

use clap::{Args, ValueEnum};
use vhdkit_format::ops::layout::LayoutRequest;
use vhdkit_format::ops::{self, Measure, OpsOptions, Target};
use vhdkit_format::report::MeasureDoc;

use super::create::{logical_sector_arg, FormatArg};
use super::human::{count, size_and_bytes};
use super::runner::{self, RunArgs};
use super::{align_arg, block_size_arg, json, terminal, CliError, OpenArgs, SourceArgs, EXIT_OK};

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum MeasureType {
    Fixed,
    Dynamic,
    Raw,
}

#[derive(Debug, Args)]
pub struct MeasureArgs {
    /// Source: any VHD or VHDX (a differencing chain is flattened, as convert and
    /// merge-to flatten it), host-drive stub or raw image.
    src: PathBuf,
    /// Kind of the file to measure.
    #[arg(long = "type", value_enum)]
    kind: MeasureType,
    /// Container of a fixed or dynamic result, as convert's `--format` (default: vhd;
    /// there is no destination name to go by).
    #[arg(long, value_enum)]
    format: Option<FormatArg>,
    /// Block size of a dynamic result: a power of two from 4K to 256M (default 2M).
    /// A VHDX result (fixed or dynamic): 1M to 256M, default 32M as Hyper-V.
    #[arg(long, value_parser = block_size_arg)]
    block_size: Option<u32>,
    /// Logical sector size of a VHDX result: 512 (default) or 4096.
    #[arg(long, value_name = "BYTES", value_parser = logical_sector_arg)]
    logical_sector: Option<u32>,
    /// Round the virtual size up to a multiple of SIZE, as `convert --align` does.
    #[arg(long, value_name = "SIZE", value_parser = align_arg)]
    align: Option<u64>,
    #[command(flatten)]
    pub(super) run: RunArgs,
    #[command(flatten)]
    source: SourceArgs,
    #[command(flatten)]
    open: OpenArgs,
}

/// What `measure --json` prints (docs/json.md).
pub fn run(a: MeasureArgs) -> Result<u8, CliError> {
    let target = match a.kind {
        MeasureType::Fixed => Target::Fixed,
        MeasureType::Dynamic => Target::Dynamic,
        MeasureType::Raw => Target::Raw,
    };
    let format = a.format.map(FormatArg::container);
    let layout = LayoutRequest {
        format,
        block_size: a.block_size,
        logical_sector: a.logical_sector,
        ..LayoutRequest::new(target, None)
    }
    .check()
    .map_err(|m| super::usage_error(&m.message(super::flag)))?;
    let opts = OpsOptions {
        open: a.source.apply(a.open.options_for(&a.src)?),
        align: a.align,
        ..OpsOptions::default()
    };
    let opts = layout.apply(opts, format);
    let task = ops::measure_task(&a.src, target, &opts)?;
    let m = runner::wait(task, &a.run, runner::Leaves::Nothing)?;
    if a.run.json {
        json::print(&json::Doc::new(MeasureDoc::new(&a.src, &m)))?;
    } else {
        print_text(&m)?;
    }
    Ok(EXIT_OK)
}

fn print_text(m: &Measure) -> Result<(), CliError> {
    let line = |label: &str, value: String| terminal::line(format!("{label:<19}{value}"));
    line("type:", m.target.name().to_owned())?;
    if let Some(f) = m.format {
        line("format:", f.name().to_owned())?;
    }
    line("virtual size:", size_and_bytes(m.virtual_size))?;
    if m.virtual_size != m.source_size {
        line("source size:", size_and_bytes(m.source_size))?;
    }
    if let Some(b) = m.block_size {
        line("block size:", size_and_bytes(u64::from(b)))?;
    }
    if let (Some(n), Some(total)) = (m.allocated_blocks, m.blocks_total) {
        line(
            "allocated blocks:",
            format!("{n} of {}", count(total, "block")),
        )?;
    }
    line("required size:", size_and_bytes(m.required_bytes))
}
