//! Synthetic seeds for the VHDX fuzz targets, built with vhdkit's own encoders:
//!
//! ```text
//! cargo run --example vhdx_seedgen -- <seeds-dir>
//! ```
//!
//! Writes `<seeds-dir>/vhdx_{header,metadata,bat,log}/synth-*`: a vhdkit header section
//! whose newer header names a log, metadata of a differencing file (parent locator) and
//! of 4096-byte sectors, a differencing BAT with a partially present block and its
//! sector bitmap, and logs whose entries wrap around the ring, span several descriptor
//! sectors, or form a sequence whose head names an older tail. `vhdx_seeds.sh` adds the
//! seeds cut from qemu-img's files.

use std::fs;
use std::path::Path;

use uuid::Uuid;
use vhdkit_format::vhdx::bat::{BatEntry, PAYLOAD_BLOCK_PARTIALLY_PRESENT, SB_BLOCK_PRESENT};
use vhdkit_format::vhdx::log::encode::{encode_entry, EntryParams};
use vhdkit_format::vhdx::log::replay::LogWrite;
use vhdkit_format::vhdx::log::LogCursor;
use vhdkit_format::vhdx::{DiskType, NewVhdx, ParentLocator, MIB};

fn put(out: &Path, target: &str, name: &str, bytes: &[u8]) {
    let dir = out.join(target);
    fs::create_dir_all(&dir).expect("create seed dir");
    fs::write(dir.join(name), bytes).expect("write seed");
}

fn sector(seed: u8) -> Vec<u8> {
    (0..4096u32)
        .map(|i| (i as u8).wrapping_mul(13) ^ seed)
        .collect()
}

/// The log target's config: file length, flag 1 (GUID from the first sector).
fn log_seed(file_len: u64, log: &[u8]) -> Vec<u8> {
    let mut b = file_len.to_le_bytes().to_vec();
    b.push(1);
    b.resize(32, 0);
    b.extend_from_slice(log);
    b
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [out] = args.as_slice() else {
        eprintln!("usage: vhdx_seedgen <seeds-dir>");
        std::process::exit(2);
    };
    let out = Path::new(out);
    let guid = Uuid::from_u128(0x5eed_0000_0000_4000_8000_0000_0000_0001);

    // Header section of a vhdkit file whose current header names a log.
    let mut n = NewVhdx::new(DiskType::Dynamic, 100 * MIB);
    n.block_size = MIB as u32;
    let l = n.layout().expect("layout");
    let mut head = vec![0u8; 320 * 1024];
    let mut h = l.header();
    let md = l.metadata(Uuid::from_u128(83), None);
    h.log_guid = guid;
    for (at, bytes) in l.initial_writes(&h, &md) {
        let at = at as usize;
        if at < head.len() {
            head[at..at + bytes.len()].copy_from_slice(&bytes);
        }
    }
    put(out, "vhdx_header", "synth-vhdkit-log", &head);

    // Metadata: differencing with every locator key; 4096-byte sectors.
    n.disk_type = DiskType::Differencing;
    let ld = n.layout().expect("layout");
    let locator = ParentLocator::new(
        Uuid::from_u128(77),
        Some(r"..\base.vhdx"),
        Some(r"\\?\Volume{26a21bda-a627-11d7-9931-806e6f6e6963}\base.vhdx"),
        Some(r"C:\vms\base.vhdx"),
    );
    put(
        out,
        "vhdx_metadata",
        "synth-differencing",
        &ld.metadata(Uuid::from_u128(1), Some(locator.clone()))
            .encode(),
    );
    let mut n4 = NewVhdx::new(DiskType::Fixed, 64 * MIB);
    n4.logical_sector_size = 4096;
    let l4 = n4.layout().expect("layout");
    put(
        out,
        "vhdx_metadata",
        "synth-4k-fixed",
        &l4.metadata(Uuid::from_u128(2), None).encode(),
    );

    // BAT of the differencing layout: block 0 partially present, chunk 0's bitmap.
    let mut bat = ld.initial_bat();
    bat.entries[0] = BatEntry::new(PAYLOAD_BLOCK_PARTIALLY_PRESENT, 8 * MIB);
    let sb = ld
        .geometry
        .bitmap_index(0)
        .expect("a differencing table has bitmap entries") as usize;
    bat.entries[sb] = BatEntry::new(SB_BLOCK_PRESENT, 9 * MIB);
    bat.entries[2] = BatEntry::new(6, 10 * MIB);
    let mut cfg = 100u32.to_le_bytes().to_vec();
    cfg.extend_from_slice(&[0, 0, 1, 0]); // 1 MiB blocks, 512-byte sectors, differencing
    cfg.extend_from_slice(&(16u32 * 16).to_le_bytes()); // 16 MiB file
    cfg.resize(24, 0);
    cfg.extend_from_slice(&bat.encode());
    put(out, "vhdx_bat", "synth-differencing", &cfg);

    // Logs.
    let log_len = 64 * 1024;
    let mut log = vec![0u8; log_len];
    let mut c = LogCursor::new(log_len as u64);
    for i in 0..6u8 {
        let ws = [
            LogWrite::Data {
                offset: 2 * MIB,
                bytes: sector(i),
            },
            LogWrite::Data {
                offset: 2 * MIB + 4096,
                bytes: sector(i + 50),
            },
        ];
        c.append(guid, 16 * MIB, 16 * MIB, &ws)
            .expect("entry")
            .write_into(&mut log);
    }
    put(out, "vhdx_log", "synth-wrapping", &log_seed(16 * MIB, &log));

    let mut ws: Vec<LogWrite> = (0..300)
        .map(|i| LogWrite::Zero {
            offset: 4 * MIB + i * 8192,
            length: 4096,
        })
        .collect();
    ws.push(LogWrite::Data {
        offset: 3 * MIB,
        bytes: sector(9),
    });
    let mut log = vec![0u8; 16 * 1024];
    LogCursor::new(16 * 1024)
        .append(guid, 16 * MIB, 17 * MIB, &ws)
        .expect("entry")
        .write_into(&mut log);
    put(
        out,
        "vhdx_log",
        "synth-many-descriptors",
        &log_seed(16 * MIB, &log),
    );

    let p = |seq, tail| EntryParams {
        log_guid: guid,
        sequence_number: seq,
        tail,
        flushed_file_offset: 16 * MIB,
        last_file_offset: 16 * MIB,
    };
    let w = |s| {
        [LogWrite::Data {
            offset: 2 * MIB,
            bytes: sector(s),
        }]
    };
    let mut log = vec![0u8; 32 * 1024];
    for (i, (seq, tail)) in [(1u64, 0u32), (2, 8192), (3, 8192)].into_iter().enumerate() {
        let e = encode_entry(&p(seq, tail), &w(seq as u8)).expect("entry");
        log[i * 8192..(i + 1) * 8192].copy_from_slice(&e);
    }
    put(out, "vhdx_log", "synth-sequence", &log_seed(16 * MIB, &log));
    eprintln!("VHDX synthetic seeds written under {}", out.display());
}
