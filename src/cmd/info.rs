//! `vhdkit info`.

use std::path::{Path, PathBuf};

use clap::Args;
use serde_json::{json, Value};
use vhdkit_format::image::VhdFile;
use vhdkit_format::{Disk, DiskKind, Error, OpenOptions};

use super::{print_json, terminal, CliError, OpenArgs, EXIT_OK};

#[derive(Debug, Args)]
pub struct InfoArgs {
    /// The disk.
    path: PathBuf,
    /// Print JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    open: OpenArgs,
}

pub fn run(a: InfoArgs) -> Result<u8, CliError> {
    let opts = a.open.options_for(&a.path)?;
    // A broken chain still gets its info shown: open the file alone and say what is
    // wrong with its parent.
    let (disk, chain_error) = match Disk::open_with(&a.path, &opts) {
        Ok(d) => (d, None),
        Err(
            e @ (Error::ParentNotFound { .. }
            | Error::ParentIdMismatch { .. }
            | Error::ChainLoop { .. }
            | Error::ChainTooDeep { .. }),
        ) => {
            let alone = OpenOptions {
                no_parents: true,
                ..opts.clone()
            };
            (Disk::open_with(&a.path, &alone)?, Some(e))
        }
        Err(e) => return Err(e.into()),
    };
    let v = describe(&disk, chain_error.as_ref(), &a.path);
    if a.json {
        print_json(&v)?;
    } else {
        print_text(&v)?;
    }
    Ok(EXIT_OK)
}

fn layer_json(f: &VhdFile) -> Value {
    let footer = f.footer();
    let mut v = json!({
        "path": f.path(),
        "disk_type": f.kind().name(),
        "virtual_size": f.virtual_size(),
        "file_size": f.file_len(),
        "unique_id": footer.unique_id.to_string(),
    });
    if let Some(h) = f.header() {
        v["block_size"] = json!(h.block_size);
        v["allocated_blocks"] = json!(f.allocated_blocks());
        v["max_table_entries"] = json!(h.max_table_entries);
    }
    v
}

fn describe(disk: &Disk, chain_error: Option<&Error>, path: &Path) -> Value {
    let top = disk.top();
    let footer = top.footer();
    let kind = top.kind();
    let mut v = json!({
        "path": path,
        "disk_type": kind.name(),
        "vm_hard_disk_type": kind.vm_hard_disk_type(),
        "virtual_size": top.virtual_size(),
        "file_size": top.file_len(),
        "block_size": top.block_size(),
        "bitmap_size": top.bitmap_size(),
        "allocated_blocks": top.header().map(|_| top.allocated_blocks()),
        "max_table_entries": top.header().map(|h| h.max_table_entries),
        "creator_app": footer.creator_app_string(),
        "creator_version": format!("{}.{}", footer.creator_version >> 16, footer.creator_version & 0xFFFF),
        "creator_host_os": footer.creator_host_os_string(),
        "timestamp": footer.timestamp.to_rfc3339(),
        "original_size": footer.original_size,
        "geometry": {
            "cylinders": footer.geometry.cylinders,
            "heads": footer.geometry.heads,
            "sectors_per_track": footer.geometry.sectors_per_track,
            "capacity": footer.geometry.capacity(),
        },
        "footer_disk_type": footer.disk_type.code(),
        "unique_id": footer.unique_id.to_string(),
        "saved_state": footer.saved_state != 0,
        "footer_source": top.footer_source(),
        "host_free_disk_space": path.parent().and_then(|p| {
            let p = if p.as_os_str().is_empty() { Path::new(".") } else { p };
            fs4::available_space(p).ok()
        }),
        "parent": Value::Null,
        "host_drive": Value::Null,
        "chain": disk.layers().iter().map(layer_json).collect::<Vec<_>>(),
        "warnings": disk.warnings(),
    });
    if kind == DiskKind::Differencing {
        let h = top.header().expect("differencing disks have a header");
        let found = disk.layers().get(1);
        v["parent"] = json!({
            "name": h.parent_name(),
            "unique_id": h.parent_unique_id.to_string(),
            "timestamp": h.parent_timestamp.to_rfc3339(),
            "path": found.map(|p| p.path().to_owned()),
            "found": found.is_some(),
            "error": chain_error.map(|e| e.to_string()),
            "locators": h.locators.iter().filter(|l| l.is_used()).map(|l| json!({
                "code": l.code.to_string(),
                "data_offset": l.data_offset,
                "data_length": l.data_length,
                "data_space": l.data_space,
            })).collect::<Vec<_>>(),
            "candidates": vhdkit_format::image::parent_candidates(top),
        });
    }
    if let Some((h, device)) = top.host_drive() {
        v["host_drive"] = json!({
            "device": device,
            "read_only": h.read_only(),
            "device_size": h.device_size,
            "identity_crc32": format!("{:08x}", h.identity_crc),
        });
    }
    v
}

fn print_text(v: &Value) -> Result<(), CliError> {
    let s = |k: &str| match &v[k] {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    };
    terminal::line(format!("path:              {}", s("path")))?;
    terminal::line(format!("disk type:         {}", s("disk_type")))?;
    terminal::line(format!("virtual size:      {} bytes", s("virtual_size")))?;
    terminal::line(format!("file size:         {} bytes", s("file_size")))?;
    if !v["block_size"].is_null() {
        terminal::line(format!("block size:        {} bytes", s("block_size")))?;
        terminal::line(format!(
            "allocated blocks:  {} of {}",
            s("allocated_blocks"),
            s("max_table_entries")
        ))?;
    }
    terminal::line(format!(
        "creator:           {} {} ({})",
        s("creator_app"),
        s("creator_version"),
        s("creator_host_os")
    ))?;
    terminal::line(format!("created:           {}", s("timestamp")))?;
    let g = &v["geometry"];
    terminal::line(format!(
        "geometry (CHS):    {}/{}/{} ({} bytes)",
        g["cylinders"], g["heads"], g["sectors_per_track"], g["capacity"]
    ))?;
    terminal::line(format!("unique id:         {}", s("unique_id")))?;
    if v["saved_state"] == Value::Bool(true) {
        terminal::line("saved state:       yes")?;
    }
    if v["footer_source"] != "end" {
        terminal::line(format!("footer used:       {}", s("footer_source")))?;
    }
    if let Value::Object(p) = &v["parent"] {
        terminal::line(format!(
            "parent name:       {}",
            p["name"].as_str().unwrap_or("")
        ))?;
        terminal::line(format!(
            "parent unique id:  {}",
            p["unique_id"].as_str().unwrap_or("")
        ))?;
        match (&p["path"], &p["error"]) {
            (Value::String(path), _) => terminal::line(format!("parent path:       {path}"))?,
            (_, Value::String(e)) => {
                terminal::line(format!("parent:            NOT RESOLVED: {e}"))?
            }
            _ => {}
        }
    }
    if let Value::Object(h) = &v["host_drive"] {
        terminal::line(format!(
            "host drive:        {} ({} bytes{})",
            h["device"].as_str().unwrap_or(""),
            h["device_size"],
            if h["read_only"] == Value::Bool(true) {
                ", read-only"
            } else {
                ""
            }
        ))?;
    }
    if let Value::Array(chain) = &v["chain"] {
        if chain.len() > 1 {
            terminal::line("chain:")?;
            for (i, l) in chain.iter().enumerate() {
                // Fixed disks have no blocks: say only what they are.
                let blocks = match l["allocated_blocks"].as_u64() {
                    Some(1) => ", 1 block allocated".to_string(),
                    Some(n) => format!(", {n} blocks allocated"),
                    None => String::new(),
                };
                terminal::line(format!(
                    "  {i}: {} ({}{blocks})",
                    l["path"].as_str().unwrap_or(""),
                    l["disk_type"].as_str().unwrap_or(""),
                ))?;
            }
        }
    }
    if let Value::Array(w) = &v["warnings"] {
        for w in w {
            terminal::line(format!("warning:           {}", w.as_str().unwrap_or("")))?;
        }
    }
    Ok(())
}
