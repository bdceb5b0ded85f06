//! `vhdkit map`.
//!
//! The map is computed and printed a window at a time, so memory stays bounded however
//! many extents a disk has (a 256 MiB block whose bitmap alternates has half a million).

use std::io::Write;
use std::path::{Path, PathBuf};

use clap::Args;
use serde::Serialize;
use vhdkit_format::image::Extent;
use vhdkit_format::Disk;

use super::{CliError, OpenArgs, EXIT_OK};

/// Virtual bytes mapped per step.
const WINDOW: u64 = 16 << 20;

#[derive(Debug, Args)]
pub struct MapArgs {
    /// The disk.
    path: PathBuf,
    /// Print JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    open: OpenArgs,
}

/// One row of the map (`map --json` prints an array of these; docs/json.md).
#[derive(Debug, Clone, PartialEq, Serialize)]
struct Row<'a> {
    start: u64,
    length: u64,
    /// `allocated` (in the file opened), `parent` (in an ancestor) or `zero`.
    kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    layer: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    file: Option<&'a Path>,
    #[serde(skip_serializing_if = "Option::is_none")]
    file_offset: Option<u64>,
}

impl Row<'_> {
    /// Whether `next` continues this row (same kind and file, contiguous).
    fn absorb(&mut self, next: &Row<'_>) -> bool {
        let contiguous = self.start + self.length == next.start
            && self.kind == next.kind
            && self.layer == next.layer
            && match (self.file_offset, next.file_offset) {
                (Some(a), Some(b)) => a + self.length == b,
                (None, None) => true,
                _ => false,
            };
        if contiguous {
            self.length += next.length;
        }
        contiguous
    }
}

pub fn run(a: MapArgs) -> Result<u8, CliError> {
    let disk = Disk::open_with(&a.path, &a.open.options_for(&a.path)?)?;
    let out = std::io::stdout().lock();
    let mut printer = Printer::new(out, a.json);
    printer.begin()?;
    let size = disk.virtual_size();
    let mut pending: Option<Row<'_>> = None;
    let mut pos = 0u64;
    while pos < size {
        let n = WINDOW.min(size - pos);
        let mut start = pos;
        for e in disk.extents(pos, n)? {
            let row = match e {
                Extent::Data {
                    layer,
                    file_offset,
                    len,
                } => Row {
                    start,
                    length: len,
                    kind: if layer == 0 { "allocated" } else { "parent" },
                    layer: Some(layer),
                    file: Some(disk.layers()[layer].path()),
                    file_offset: Some(file_offset),
                },
                Extent::Zero { len } => Row {
                    start,
                    length: len,
                    kind: "zero",
                    layer: None,
                    file: None,
                    file_offset: None,
                },
            };
            start += e.len();
            let absorbed = pending.as_mut().is_some_and(|p| p.absorb(&row));
            if !absorbed {
                if let Some(done) = pending.replace(row) {
                    printer.row(&done)?;
                }
            }
        }
        pos += n;
    }
    if let Some(done) = pending {
        printer.row(&done)?;
    }
    printer.end()?;
    Ok(EXIT_OK)
}

/// Prints rows as they come: an aligned table, or a JSON array.
struct Printer<W: Write> {
    out: W,
    json: bool,
    rows: u64,
}

impl<W: Write> Printer<W> {
    fn new(out: W, json: bool) -> Self {
        Printer { out, json, rows: 0 }
    }

    fn begin(&mut self) -> Result<(), CliError> {
        let r = if self.json {
            write!(self.out, "[")
        } else {
            writeln!(
                self.out,
                "{:>16} {:>16}  {:<9} {:>5} {:>16}  file",
                "start", "length", "kind", "layer", "file offset"
            )
        };
        r.map_err(|e| CliError::io("writing to stdout", e))
    }

    fn row(&mut self, r: &Row<'_>) -> Result<(), CliError> {
        let res = if self.json {
            let sep = if self.rows == 0 { "\n  " } else { ",\n  " };
            let s = serde_json::to_string(r).map_err(|e| CliError::Other(e.to_string()))?;
            write!(self.out, "{sep}{s}")
        } else {
            let dash = || "-".to_string();
            writeln!(
                self.out,
                "{:>16} {:>16}  {:<9} {:>5} {:>16}  {}",
                r.start,
                r.length,
                r.kind,
                r.layer.map(|l| l.to_string()).unwrap_or_else(dash),
                r.file_offset.map(|o| o.to_string()).unwrap_or_else(dash),
                r.file
                    .map(|f| super::terminal::escape(&f.display().to_string()))
                    .unwrap_or_else(dash),
            )
        };
        self.rows += 1;
        res.map_err(|e| CliError::io("writing to stdout", e))
    }

    fn end(&mut self) -> Result<(), CliError> {
        let r = if self.json {
            writeln!(self.out, "{}]", if self.rows == 0 { "" } else { "\n" })
        } else {
            Ok(())
        };
        r.and_then(|_| self.out.flush())
            .map_err(|e| CliError::io("writing to stdout", e))
    }
}
