//! Prints what `vhdkit_volume::scan` finds on a raw disk image:
//! `cargo run -p vhdkit-volume --example volscan -- disk.img`.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    for path in std::env::args().skip(1) {
        let file = std::fs::File::open(&path)?;
        let report = vhdkit_volume::scan(&file)?;
        println!(
            "{path}: {:?}, {} bytes, {} free",
            report.table,
            report.size,
            report.free_bytes()
        );
        for w in &report.warnings {
            println!("  warning: {w}");
        }
        for p in &report.partitions {
            println!(
                "  #{} {}+{} {} fs={} size={:?} unit={:?} free={} ranges={} {}",
                p.index,
                p.start,
                p.length,
                p.ptype,
                p.fs,
                p.fs_size,
                p.fs_unit,
                p.free_bytes,
                p.free.len(),
                p.left_alone
                    .as_ref()
                    .map(|r| format!("LEFT ALONE: {r}"))
                    .unwrap_or_default()
            );
            for w in &p.warnings {
                println!("    warning: {w}");
            }
        }
    }
    Ok(())
}
