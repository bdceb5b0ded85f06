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

use super::{json, CliError, OpenArgs, EXIT_OK};

/// Virtual bytes mapped per step.
const WINDOW: u64 = 16 << 20;

#[derive(Debug, Args)]
pub struct MapArgs {
    /// The disk.
    path: PathBuf,
    /// Print JSON: `{"schema": 1, "rows": [...]}`, the rows streamed as they are found.
    #[arg(long)]
    pub(super) json: bool,
    #[command(flatten)]
    open: OpenArgs,
}

/// One row of the map (`map --json` prints a `rows` array of these; docs/json.md).
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

/// Prints rows as they come: an aligned table, or a JSON document whose `rows` array is
/// written row by row (memory stays bounded; the document is complete only at the end).
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
            write!(self.out, "{{\"schema\":{},\"rows\":[", json::SCHEMA)
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
            let s = json::to_string(r, false)?;
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
            writeln!(self.out, "{}]}}", if self.rows == 0 { "" } else { "\n" })
        } else {
            Ok(())
        };
        r.and_then(|_| self.out.flush())
            .map_err(|e| CliError::io("writing to stdout", e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row<'a>(start: u64, length: u64, file: Option<&'a Path>) -> Row<'a> {
        Row {
            start,
            length,
            kind: if file.is_some() { "allocated" } else { "zero" },
            layer: file.map(|_| 0),
            file,
            file_offset: file.map(|_| 2_190_433_320_960),
        }
    }

    #[test]
    fn text_columns_stay_aligned_for_the_largest_sizes_and_long_paths() {
        let long = Path::new("/a/very/long/folder/name/that/goes/on/and/on/disk image.vhd");
        let mut out = Vec::new();
        let mut p = Printer::new(&mut out, false);
        p.begin().expect("header");
        p.row(&row(0, 4096, Some(long))).expect("row");
        p.row(&row(4096, 2_190_433_316_864, None)).expect("row");
        p.row(&row(2_190_433_316_864, 4096, Some(Path::new("b.vhd"))))
            .expect("row");
        p.end().expect("end");
        let text = String::from_utf8(out).expect("utf-8");
        let lines: Vec<&[u8]> = text.lines().map(str::as_bytes).collect();
        assert_eq!(lines.len(), 4, "{text}");
        // Right-aligned numbers end, and left-aligned columns start, at the same place
        // on every line: start, length, kind, layer, file offset, file.
        let ends = [16, 33, 50, 67];
        let starts = [35, 69];
        for l in &lines {
            let shown = String::from_utf8_lossy(l);
            for e in ends {
                assert!(
                    l[e - 1] != b' ' && l[e] == b' ',
                    "column ending at {e}: {shown}"
                );
            }
            for s in starts {
                assert!(
                    l[s - 1] == b' ' && l[s] != b' ',
                    "column starting at {s}: {shown}"
                );
            }
        }
    }
}
