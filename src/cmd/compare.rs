//! `vhdkit compare`.

use std::path::PathBuf;

use clap::Args;
use vhdkit_format::image::Extent;
use vhdkit_format::Disk;

use super::{terminal, CliError, OpenArgs, EXIT_DIFFERENT, EXIT_OK};

const CHUNK: u64 = 4 << 20;

#[derive(Debug, Args)]
pub struct CompareArgs {
    /// First disk: any VHD (chains resolved) or a raw image.
    a: PathBuf,
    /// Second disk: any VHD (chains resolved) or a raw image.
    b: PathBuf,
    #[command(flatten)]
    open: OpenArgs,
}

pub fn run(args: CompareArgs) -> Result<u8, CliError> {
    let opts = args.open.options();
    let a = Disk::open_any(&args.a, &opts)?;
    let b = Disk::open_any(&args.b, &opts)?;
    let (sa, sb) = (a.virtual_size(), b.virtual_size());
    if sa != sb {
        terminal::line(format!(
            "Image size mismatch: {} is {sa} bytes, {} is {sb} bytes",
            args.a.display(),
            args.b.display()
        ))?;
        return Ok(EXIT_DIFFERENT);
    }
    let mut ba = vec![0u8; CHUNK as usize];
    let mut bb = vec![0u8; CHUNK as usize];
    let mut pos = 0;
    while pos < sa {
        let n = CHUNK.min(sa - pos);
        let zero = |d: &Disk| -> Result<bool, CliError> {
            Ok(d.extents(pos, n)?
                .iter()
                .all(|e| matches!(e, Extent::Zero { .. })))
        };
        if !(zero(&a)? && zero(&b)?) {
            let (ca, cb) = (&mut ba[..n as usize], &mut bb[..n as usize]);
            a.read_at(ca, pos)?;
            b.read_at(cb, pos)?;
            if let Some(i) = ca.iter().zip(cb.iter()).position(|(x, y)| x != y) {
                terminal::line(format!("Content mismatch at offset {}", pos + i as u64))?;
                return Ok(EXIT_DIFFERENT);
            }
        }
        pos += n;
    }
    terminal::line("Images are identical.")?;
    Ok(EXIT_OK)
}
