//! The pure VHDX layer (`vhdkit_format::vhdx`) against real files: qemu-img's own
//! (both subformats, every block size, with and without `block_state_zero`, after
//! qemu-io writes, with the log entry qemu leaves behind), and files built from
//! vhdkit's encoders, read back by qemu-img and libvhdi (vhdiinfo, pyvhdi). Each file
//! is made in a temporary folder; nothing is committed.

// qemu-img and libvhdi: Linux CI only.
#![cfg(target_os = "linux")]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use uuid::Uuid;
use vhdkit_format::vhdx::bat::{
    set_bitmap_bits, PAYLOAD_BLOCK_PARTIALLY_PRESENT, SB_BLOCK_PRESENT,
};
use vhdkit_format::vhdx::header::{HEADER_1_OFFSET, HEADER_2_OFFSET};
use vhdkit_format::vhdx::log::replay::LogWrite;
use vhdkit_format::vhdx::{
    BatEntry, DiskType, HeaderSlot, NewVhdx, ParentLocator, ParsedVhdx, PayloadState, VhdxLayout,
    MIB,
};
use vhdkit_testkit::{have, pyvhdi_read_all, run_cmd, tempdir, vhdiinfo_field, Tool};

fn tool(program: &str, args: &[&str]) -> String {
    have(Tool::QemuImg);
    let r = run_cmd(Command::new(program).args(args));
    assert_eq!(
        r.code,
        0,
        "{program} {args:?}: {}{}",
        r.stderr,
        r.stdout_str()
    );
    r.stdout_str()
}

fn qemu_create(dir: &Path, name: &str, opts: &str, size: &str) -> PathBuf {
    let p = dir.join(name);
    let path = p.to_str().expect("UTF-8 path");
    tool(
        "qemu-img",
        &["create", "-q", "-f", "vhdx", "-o", opts, path, size],
    );
    p
}

fn qemu_io(path: &Path, cmd: &str) {
    tool(
        "qemu-io",
        &["-f", "vhdx", "-c", cmd, path.to_str().expect("UTF-8")],
    );
}

fn parse(path: &Path) -> ParsedVhdx {
    let bytes = fs::read(path).expect("read image");
    ParsedVhdx::decode(&bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn qemu_files_decode_for_every_subformat_block_size_and_block_state() {
    let dir = tempdir();
    for subformat in ["dynamic", "fixed"] {
        for bs in [1u64, 2, 8, 32, 64, 256] {
            if subformat == "fixed" && bs > 32 {
                continue; // a fixed file holds whole blocks: keep them small
            }
            for zero in ["on", "off"] {
                let name = format!("{subformat}-{bs}-{zero}.vhdx");
                let opts =
                    format!("subformat={subformat},block_size={bs}M,block_state_zero={zero}");
                let path = qemu_create(dir.path(), &name, &opts, "40M");
                let p = parse(&path);
                let md = &p.metadata;
                assert_eq!(md.file_parameters.block_size as u64, bs * MIB, "{name}");
                assert_eq!(md.virtual_size, 40 * MIB, "{name}");
                assert_eq!(
                    md.file_parameters.leave_blocks_allocated,
                    subformat == "fixed"
                );
                assert!(!md.file_parameters.has_parent);
                assert_eq!(
                    (md.logical_sector_size, md.physical_sector_size),
                    (512, 512)
                );
                assert!(p.header.header.log_guid.is_nil(), "{name}: clean file");
                assert!(
                    !p.regions.bat.required,
                    "qemu-img leaves the required flag clear"
                );
                assert!(p.regions_agree);
                assert!(p.ident.creator.starts_with("QEMU"), "{}", p.ident.creator);
                let want = match (subformat, zero) {
                    ("dynamic", "on") | ("fixed", "on") => PayloadState::Zero,
                    ("dynamic", _) => PayloadState::NotPresent,
                    _ => PayloadState::FullyPresent,
                };
                for b in 0..p.bat.geometry.data_blocks {
                    let blk = p.bat.payload(b).expect("block inside the disk");
                    assert_eq!(blk.state, Some(want), "{name} block {b}");
                }
                assert_eq!(p.bat.geometry.data_blocks, 40u64.div_ceil(bs));
            }
        }
    }
}

#[test]
fn qemu_default_block_size_follows_the_disk_size() {
    let dir = tempdir();
    for (size, bs) in [("100M", 8), ("200G", 32), ("64T", 64)] {
        let path = qemu_create(
            dir.path(),
            &format!("{size}.vhdx"),
            "subformat=dynamic",
            size,
        );
        let p = parse(&path);
        assert_eq!(
            u64::from(p.metadata.file_parameters.block_size),
            bs * MIB,
            "{size}"
        );
    }
}

#[test]
fn blocks_qemu_wrote_decode_with_their_data() {
    let dir = tempdir();
    let path = qemu_create(
        dir.path(),
        "w.vhdx",
        "subformat=dynamic,block_size=1M",
        "16M",
    );
    qemu_io(&path, "write -P 0xab 0 1M");
    qemu_io(&path, "write -P 0xcd 5M 512k");
    let bytes = fs::read(&path).unwrap();
    let p = ParsedVhdx::decode(&bytes).unwrap();
    for (block, byte, len) in [(0u64, 0xab, MIB), (5, 0xcd, MIB / 2)] {
        let blk = p.bat.payload(block).unwrap();
        assert_eq!(blk.state, Some(PayloadState::FullyPresent));
        let at = blk.file_offset.unwrap() as usize;
        assert!(
            bytes[at..at + len as usize].iter().all(|&b| b == byte),
            "block {block}"
        );
    }
    assert_eq!(p.bat.payload(1).unwrap().state, Some(PayloadState::Zero));
}

/// Writes `header` into `slot` of the file at `path`.
fn put_header(path: &Path, slot: HeaderSlot, header: &vhdkit_format::vhdx::Header) {
    let mut bytes = fs::read(path).unwrap();
    let at = slot.offset() as usize;
    bytes[at..at + 4096].copy_from_slice(&header.encode());
    fs::write(path, bytes).unwrap();
}

#[test]
fn qemu_log_entry_replays_to_what_qemu_applied() {
    let dir = tempdir();
    let path = qemu_create(
        dir.path(),
        "log.vhdx",
        "subformat=dynamic,block_size=1M",
        "16M",
    );
    qemu_io(&path, "write -P 0xab 0 1M");
    // qemu wrote the BAT update through its log, applied it, then cleared the header's
    // log GUID; the entry is still in the log. Name its GUID in a newer header: the
    // file now says "replay me", and the replay must be exactly what qemu applied.
    let bytes = fs::read(&path).unwrap();
    let p = ParsedVhdx::decode(&bytes).unwrap();
    let log_at = p.header.header.log_offset as usize;
    assert_eq!(&bytes[log_at..log_at + 4], b"loge", "qemu left its entry");
    let entry_guid = Uuid::from_bytes_le(bytes[log_at + 32..log_at + 48].try_into().unwrap());
    let mut h = p.header.header;
    h.log_guid = entry_guid;
    let (h, slot) = p.header.next(h).unwrap();
    put_header(&path, slot, &h);

    let bytes = fs::read(&path).unwrap();
    let dirty = ParsedVhdx::decode(&bytes).unwrap();
    let plan = dirty.replay.as_ref().expect("a sequence to replay");
    assert_eq!(plan.sequence.entries.len(), 1);
    assert!(!plan.writes.is_empty());
    for w in &plan.writes {
        let LogWrite::Data {
            offset,
            bytes: data,
        } = w
        else {
            panic!("qemu logs data sectors only: {w:?}");
        };
        let at = *offset as usize;
        assert_eq!(
            &bytes[at..at + 4096],
            &data[..],
            "write at {offset:#x} is what qemu applied"
        );
        assert!(*offset >= dirty.regions.bat.offset && *offset < dirty.regions.bat.end());
    }
    assert_eq!(plan.new_file_len, bytes.len() as u64);
    assert_eq!(dirty.bat, p.bat);
}

#[test]
fn vhdkit_log_entry_is_replayed_by_qemu() {
    let dir = tempdir();
    let path = qemu_create(
        dir.path(),
        "ours.vhdx",
        "subformat=dynamic,block_size=1M,block_state_zero=off",
        "8M",
    );
    let mut bytes = fs::read(&path).unwrap();
    let p = ParsedVhdx::decode(&bytes).unwrap();
    let end = bytes.len() as u64;
    // The new block's data goes in place first (past the end of the file) ...
    bytes.extend(std::iter::repeat_n(0xcdu8, MIB as usize));
    // ... then the BAT sector that points at it goes through the log.
    let mut bat = p.bat.clone();
    bat.set_payload(0, PayloadState::FullyPresent, end);
    let bat_at = p.regions.bat.offset as usize;
    let mut sector = bytes[bat_at..bat_at + 4096].to_vec();
    let table = bat.encode();
    sector[..table.len()].copy_from_slice(&table);
    let log_guid = Uuid::new_v4();
    let mut cursor =
        vhdkit_format::vhdx::log::LogCursor::new(u64::from(p.header.header.log_length));
    let placed = cursor
        .append(
            log_guid,
            end + MIB,
            end + MIB,
            &[LogWrite::Data {
                offset: p.regions.bat.offset,
                bytes: sector,
            }],
        )
        .unwrap();
    let log_at = p.header.header.log_offset as usize;
    let log_len = p.header.header.log_length as usize;
    placed.write_into(&mut bytes[log_at..log_at + log_len]);
    let mut h = p.header.header;
    h.log_guid = log_guid;
    let (h, slot) = p.header.next(h).unwrap();
    let at = slot.offset() as usize;
    bytes[at..at + 4096].copy_from_slice(&h.encode());
    fs::write(&path, &bytes).unwrap();

    // vhdkit's own replay of the dirty file.
    let ours = ParsedVhdx::decode(&bytes).unwrap();
    assert_eq!(ours.bat.payload(0).unwrap().file_offset, Some(end));

    // qemu refuses the dirty file read-only, replays it on `check -r all`.
    let ro = run_cmd(
        Command::new("qemu-io")
            .args(["-r", "-f", "vhdx", "-c", "read 0 512"])
            .arg(&path),
    );
    assert_ne!(ro.code, 0, "qemu must refuse a log to replay read-only");
    tool(
        "qemu-img",
        &[
            "check",
            "-q",
            "-r",
            "all",
            "-f",
            "vhdx",
            path.to_str().unwrap(),
        ],
    );
    qemu_io(&path, "read -P 0xcd 0 1M");
    let after = parse(&path);
    assert!(
        after.header.header.log_guid.is_nil(),
        "qemu cleared the log GUID"
    );
    assert_eq!(
        after.bat, ours.bat,
        "qemu applied exactly what vhdkit replays"
    );
}

fn write_new(
    path: &Path,
    l: &VhdxLayout,
    parent: Option<ParentLocator>,
) -> vhdkit_format::vhdx::Header {
    let mut bytes = vec![0u8; l.file_len as usize];
    let header = l.header();
    let md = l.metadata(Uuid::new_v4(), parent);
    for (at, b) in l.initial_writes(&header, &md) {
        bytes[at as usize..at as usize + b.len()].copy_from_slice(&b);
    }
    fs::write(path, bytes).unwrap();
    header
}

#[test]
fn vhdkit_files_are_read_by_qemu_and_libvhdi() {
    let dir = tempdir();
    for (t, bs, ls) in [
        (DiskType::Dynamic, 32u64, 512u32),
        (DiskType::Dynamic, 1, 4096),
        (DiskType::Fixed, 32, 512),
        (DiskType::Fixed, 1, 512),
        (DiskType::Fixed, 2, 4096),
    ] {
        let mut n = NewVhdx::new(t, 20 * MIB);
        n.block_size = (bs * MIB) as u32;
        n.logical_sector_size = ls;
        let l = n.layout().unwrap();
        let path = dir.path().join(format!("{t:?}-{bs}-{ls}.vhdx"));
        let header = write_new(&path, &l, None);
        let p = path.to_str().unwrap();
        if t == DiskType::Fixed {
            // Guest data straight into the payload: fixed blocks lie in order.
            let mut bytes = fs::read(&path).unwrap();
            let at = (l.first_payload + MIB) as usize;
            bytes[at..at + 65536].fill(0x5a);
            fs::write(&path, bytes).unwrap();
        }
        have(Tool::Vhdiinfo);
        let kind = vhdiinfo_field(&path, "Disk type").unwrap();
        assert_eq!(
            kind,
            if t == DiskType::Fixed {
                "Fixed"
            } else {
                "Dynamic"
            }
        );
        assert_eq!(
            vhdiinfo_field(&path, "Bytes per sector").unwrap(),
            format!("{ls} bytes")
        );
        assert_eq!(
            vhdiinfo_field(&path, "Identifier").unwrap(),
            header.data_write_guid.to_string()
        );
        if ls == 512 {
            // qemu-img reads only 512-byte logical sectors ("Operation not supported"
            // for 4096).
            tool("qemu-img", &["check", "-q", "-f", "vhdx", p]);
            let info = tool("qemu-img", &["info", "--output=json", "-f", "vhdx", p]);
            assert!(
                info.contains(&format!("\"virtual-size\": {}", 20 * MIB)),
                "{info}"
            );
            if t == DiskType::Dynamic {
                // qemu writes into the file (through its log); vhdkit decodes the result.
                qemu_io(&path, "write -P 0x5a 1M 64k");
                let after = parse(&path);
                let blk = after.bat.payload(MIB / (bs * MIB)).unwrap();
                assert_eq!(blk.state, Some(PayloadState::FullyPresent));
            }
            qemu_io(&path, "read -P 0x5a 1M 64k");
        }
        // Nothing writes into a dynamic file of 4096-byte sectors here.
        let want = if t == DiskType::Fixed || ls == 512 {
            0x5a
        } else {
            0
        };
        let data = pyvhdi_read_all(&[&path]);
        assert_eq!(data.len() as u64, 20 * MIB);
        assert!(data[MIB as usize..(MIB + 65536) as usize]
            .iter()
            .all(|&b| b == want));
        assert!(data[(MIB + 65536) as usize..].iter().all(|&b| b == 0));
        assert!(data[..MIB as usize].iter().all(|&b| b == 0));
    }
}

#[test]
fn vhdkit_differencing_file_is_read_by_libvhdi_through_its_sector_bitmap() {
    let dir = tempdir();
    let base = dir.path().join("base.vhdx");
    let mut n = NewVhdx::new(DiskType::Dynamic, 8 * MIB);
    n.block_size = MIB as u32;
    write_new(&base, &n.layout().unwrap(), None);
    qemu_io(&base, "write -P 0x11 0 2M");
    let base_guid = parse(&base).header.header.data_write_guid;

    // The child: block 0 partially present (its sectors 8..16 here, the rest from the
    // base), its chunk's sector bitmap present.
    let child = dir.path().join("child.avhdx");
    n.disk_type = DiskType::Differencing;
    let l = n.layout().unwrap();
    let locator = ParentLocator::new(
        base_guid,
        Some("base.vhdx"),
        None,
        Some(r"C:\vms\base.vhdx"),
    );
    write_new(&child, &l, Some(locator));
    let mut bytes = fs::read(&child).unwrap();
    let block_at = l.file_len;
    let bitmap_at = block_at + MIB;
    bytes.resize((bitmap_at + MIB) as usize, 0);
    bytes[(block_at + 8 * 512) as usize..(block_at + 16 * 512) as usize].fill(0x22);
    set_bitmap_bits(&mut bytes[bitmap_at as usize..], 8, 8, true);
    let mut bat = l.initial_bat();
    bat.entries[0] = BatEntry::new(PAYLOAD_BLOCK_PARTIALLY_PRESENT, block_at);
    let sb = l.geometry.bitmap_index(0).unwrap() as usize;
    bat.entries[sb] = BatEntry::new(SB_BLOCK_PRESENT, bitmap_at);
    let b = bat.encode();
    bytes[l.bat.offset as usize..l.bat.offset as usize + b.len()].copy_from_slice(&b);
    fs::write(&child, &bytes).unwrap();

    let p = parse(&child);
    assert_eq!(
        p.metadata.parent_locator.as_ref().unwrap().parent_linkage(),
        Some(base_guid)
    );
    have(Tool::Vhdiinfo);
    assert_eq!(vhdiinfo_field(&child, "Disk type").unwrap(), "Differential");
    assert_eq!(
        vhdiinfo_field(&child, "Parent identifier").unwrap(),
        base_guid.to_string()
    );
    let data = pyvhdi_read_all(&[&child, &base]);
    assert_eq!(data.len() as u64, 8 * MIB);
    assert!(data[..8 * 512].iter().all(|&b| b == 0x11));
    assert!(
        data[8 * 512..16 * 512].iter().all(|&b| b == 0x22),
        "sectors from the child"
    );
    assert!(data[16 * 512..2 * MIB as usize].iter().all(|&b| b == 0x11));
    assert!(data[2 * MIB as usize..].iter().all(|&b| b == 0));
}

#[test]
fn qemu_refuses_header_slots_we_call_invalid() {
    // Both headers damaged: qemu-img and vhdkit refuse alike.
    let dir = tempdir();
    let path = qemu_create(dir.path(), "h.vhdx", "subformat=dynamic", "8M");
    let mut bytes = fs::read(&path).unwrap();
    bytes[HEADER_1_OFFSET as usize + 100] ^= 1;
    bytes[HEADER_2_OFFSET as usize + 100] ^= 1;
    fs::write(&path, &bytes).unwrap();
    assert!(ParsedVhdx::decode(&bytes).is_err());
    let r = run_cmd(
        Command::new("qemu-img")
            .args(["info", "-f", "vhdx"])
            .arg(&path),
    );
    assert_ne!(r.code, 0);
}
