//! `vhdkit map`.

use std::path::PathBuf;

use clap::Args;
use serde_json::json;
use vhdkit_format::image::Extent;
use vhdkit_format::Disk;

use super::{print_json, CliError, OpenArgs, EXIT_OK};

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

pub fn run(a: MapArgs) -> Result<u8, CliError> {
    let disk = Disk::open_with(&a.path, &a.open.options())?;
    let extents = disk.extents(0, disk.virtual_size())?;
    let mut rows = Vec::with_capacity(extents.len());
    let mut start = 0u64;
    for e in &extents {
        let row = match *e {
            Extent::Data {
                layer,
                file_offset,
                len,
            } => json!({
                "start": start,
                "length": len,
                "kind": if layer == 0 { "allocated" } else { "parent" },
                "layer": layer,
                "file": disk.layers()[layer].path(),
                "file_offset": file_offset,
            }),
            Extent::Zero { len } => json!({
                "start": start,
                "length": len,
                "kind": "zero",
            }),
        };
        rows.push(row);
        start += e.len();
    }
    if a.json {
        print_json(&json!(rows))?;
    } else {
        println!(
            "{:>16} {:>16}  {:<9} {:>5} {:>16}  file",
            "start", "length", "kind", "layer", "file offset"
        );
        for r in &rows {
            println!(
                "{:>16} {:>16}  {:<9} {:>5} {:>16}  {}",
                r["start"],
                r["length"],
                r["kind"].as_str().unwrap_or(""),
                r.get("layer")
                    .map(|v| v.to_string())
                    .unwrap_or_else(|| "-".into()),
                r.get("file_offset")
                    .map(|v| v.to_string())
                    .unwrap_or_else(|| "-".into()),
                r.get("file").and_then(|v| v.as_str()).unwrap_or("-"),
            );
        }
    }
    Ok(EXIT_OK)
}
