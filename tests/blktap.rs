//! Images made by Xen's blktap (`vhd-util`, creator `tap`, fixtures/blktap/) through
//! vhdkit's in-place operations: write, compact and merge leave them as Xen's
//! `vhd-util check` requires — the batmap's area stays metadata (the footer never lands
//! on it), a set batmap bit always names an allocated, fully written block, and its
//! checksum holds. The judge is `XEN_CHECK` below: the BAT and batmap rules of
//! `vhd-util check` (blktap's vhd-util-check.c, described in docs/format.md), written
//! independently in Python, since vhd-util itself is not packaged for Debian 12.

mod common;

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

/// vhd-util check's rules for a dynamic or differencing `tap` file: end of headers
/// (header, padded BAT, batmap header and bitmap, locators), every allocated block after
/// it and before the footer, no overlaps, a valid batmap (cookie, version, checksum over
/// the bytes blktap reads, size, offset before the footer) and no set bit for an
/// unallocated block. Prints "valid" or the first failure.
const XEN_CHECK: &str = r#"
import struct, sys
p = sys.argv[1]
d = open(p, 'rb').read()
eof = len(d)
foot = d[eof - 512:]
def fail(m):
    print(m); sys.exit(1)
if foot[:8] != b'conectix': fail('no footer at the end')
if d[:512] != foot: fail('the footer copy differs')
data_offset, = struct.unpack('>Q', foot[16:24])
curr_size, = struct.unpack('>Q', foot[48:56])
h = d[data_offset:data_offset + 1024]
if h[:8] != b'cxsparse': fail('no dynamic header')
table_offset, = struct.unpack('>Q', h[16:24])
max_bat, block_size = struct.unpack('>II', h[28:36])
pad = max(512, (max_bat * 4 + 511) // 512 * 512)
end = max(data_offset + 1024, table_offset + pad)
bm_hdr = table_offset + pad
bh = d[bm_hdr:bm_hdr + 512]
if bh[:8] != b'tdbatmap': fail('error calculating end of metadata: no batmap header')
map_off, map_sec, ver, csum = struct.unpack('>QIII', bh[8:28])
if ver > 0x00010002: fail('unsupported batmap version')
map_bytes = max(1, -(-(curr_size >> 24) // 512)) * 512
m = d[map_off:map_off + map_bytes]
if len(m) != map_bytes: fail('error calculating end of metadata: short batmap')
if (~sum(m)) & 0xffffffff != csum: fail('error calculating end of metadata: batmap checksum')
end = max(end, bm_hdr + 512, map_off + map_sec * 512)
for i in range(8):
    code, space, length, _, off = struct.unpack('>IIIIQ', h[576 + 24 * i:600 + 24 * i])
    if code == 0: continue
    size = space * 512 if space < 512 else (space if space % 512 == 0 else 0)
    end = max(end, off + size)
if map_sec == 0: fail('batmap is invalid: size zero')
if map_sec * 4096 < max_bat: fail('batmap is invalid: batmap-BAT size mismatch')
if map_off == 0 or map_off % 512: fail('batmap is invalid: offset')
if map_off + map_sec * 512 > eof - 512: fail('batmap is invalid: size')
eof_sec = (eof - 512) // 512
end_sec = end // 512
blocks = curr_size >> 21
spb = block_size // 512
bmp = max(1, -(-(spb // 8) // 512))
bat = struct.unpack('>%dI' % max_bat, d[table_offset:table_offset + max_bat * 4])
used = []
for i in range(blocks):
    e = bat[i]
    if e == 0xffffffff:
        if m[i // 8] & (0x80 >> (i % 8)): fail('batmap shows unallocated block %d full' % i)
        continue
    if e < end_sec: fail('block %d (offset 0x%x) clobbers headers' % (i, e))
    if e + bmp + spb > eof_sec: fail('block %d (offset 0x%x) clobbers footer' % (i, e))
    used.append((e, i))
used.sort()
for (a, ia), (b, ib) in zip(used, used[1:]):
    if a + bmp + spb > b: fail('blocks %d and %d overlap' % (ia, ib))
print('valid')
"#;

fn xen_check(p: &Path) {
    let r = run_cmd(Command::new(PYTHON).args(["-c", XEN_CHECK]).arg(p));
    assert_eq!(r.code, 0, "{}: {}", p.display(), r.stdout_str());
}

fn vhdkit_check_clean(p: &Path) {
    let r = vhdkit(["check".as_ref(), p.as_os_str()]);
    assert_eq!(r.code, EXIT_OK, "{}", r.stdout_str());
}

/// A copy of the four blktap images in a temp dir.
fn copies() -> (tempfile::TempDir, PathBuf) {
    let dir = tempdir();
    for n in ["empty-64m.vhd", "written-64m.vhd", "snap1.vhd", "snap2.vhd"] {
        std::fs::copy(fixture(&format!("blktap/{n}")), dir.path().join(n)).expect("copy");
    }
    // As vhd-util left them: each parent's time the one its child records.
    for (child, parent) in [("snap2.vhd", "snap1.vhd"), ("snap1.vhd", "written-64m.vhd")] {
        restore_parent_time(&dir.path().join(child), &dir.path().join(parent));
    }
    let d = dir.path().to_owned();
    (dir, d)
}

fn sha256(data: &[u8]) -> String {
    let f = tempfile::NamedTempFile::new().expect("tmp");
    std::fs::write(f.path(), data).expect("write");
    let r = run_cmd(Command::new("sha256sum").arg(f.path()));
    assert_eq!(r.code, 0, "{}", r.stderr);
    r.stdout_str()
        .split_whitespace()
        .next()
        .expect("a sum")
        .to_string()
}

fn expected_sums() -> Vec<(String, String)> {
    std::fs::read_to_string(fixture("blktap/SHA256SUMS"))
        .expect("sums")
        .lines()
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            Some((it.next()?.to_string(), it.next()?.to_string()))
        })
        .collect()
}

#[test]
fn blktap_images_read_as_libvhd_reads_them_and_check_clean() {
    let (_d, dir) = copies();
    for (sum, name) in expected_sums() {
        let p = dir.join(&name);
        assert_eq!(sha256(&read_all(&p)), sum, "{name}");
        vhdkit_check_clean(&p);
        xen_check(&p);
        let creator = info(&p)["creator_app"].as_str().unwrap_or("").to_string();
        assert!(creator.starts_with("tap"), "{creator}");
    }
}

#[test]
fn compact_clears_the_bit_of_a_released_block() {
    let (_d, dir) = copies();
    let p = dir.join("written-64m.vhd");
    // Block 0 is full (its batmap bit set); zeroing it makes it releasable.
    write_at(&p, 0, &vec![0u8; 2 << 20], &[]);
    xen_check(&p);
    let want = read_all(&p);
    let r = vhdkit(["compact".as_ref(), p.as_os_str()]);
    assert_eq!(r.code, EXIT_OK, "{}", r.stderr);
    xen_check(&p);
    vhdkit_check_clean(&p);
    assert_eq!(read_all(&p), want);
}

#[test]
fn compact_releasing_every_block_keeps_the_batmap_before_the_footer() {
    let (_d, dir) = copies();
    let p = dir.join("written-64m.vhd");
    write_at(&p, 0, &vec![0u8; 64 << 20], &[]);
    let r = vhdkit(["compact".as_ref(), p.as_os_str(), "--verify".as_ref()]);
    assert_eq!(r.code, EXIT_OK, "{}", r.stderr);
    xen_check(&p);
    vhdkit_check_clean(&p);
    // Nothing but metadata is left: footer copy, header, BAT, batmap, footer.
    assert_eq!(std::fs::metadata(&p).expect("stat").len(), 3584);
    assert!(read_all(&p).iter().all(|&b| b == 0));
}

#[test]
fn writes_into_blktap_files_keep_them_valid() {
    let (_d, dir) = copies();
    let mut rng = Rng::new(44);
    // The child before its ancestor: writing into written-64m.vhd first would leave
    // snap1's record of its time behind, which check rightly warns about.
    for name in ["empty-64m.vhd", "snap2.vhd", "written-64m.vhd"] {
        let p = dir.join(name);
        let mut model = Model(read_all(&p));
        for (off, data) in random_writes(&mut rng, 64 << 20, 12) {
            write_at(&p, off, &data, &[]);
            model.write(off, &data);
        }
        xen_check(&p);
        vhdkit_check_clean(&p);
        assert_bytes_eq(name, &read_all(&p), &model.0);
    }
}

#[test]
fn merge_of_a_blktap_chain_keeps_the_parent_valid() {
    let (_d, dir) = copies();
    let top = dir.join("snap2.vhd");
    let want = read_all(&top);
    let r = vhdkit(["merge".as_ref(), top.as_os_str()]);
    assert_eq!(r.code, EXIT_OK, "{}", r.stderr);
    for n in ["snap1.vhd", "snap2.vhd", "written-64m.vhd"] {
        xen_check(&dir.join(n));
        vhdkit_check_clean(&dir.join(n));
    }
    assert_eq!(read_all(&top), want);
    assert_eq!(read_all(&dir.join("snap1.vhd")), want);
    // And the merged parent compacts (a differencing disk with a batmap).
    let r = vhdkit(["compact".as_ref(), dir.join("snap1.vhd").as_os_str()]);
    assert_eq!(r.code, EXIT_OK, "{}", r.stderr);
    xen_check(&dir.join("snap1.vhd"));
    assert_eq!(read_all(&top), want);
}

/// Patches the batmap of a copy of written-64m.vhd (header at 2048, bitmap at 2560).
fn patched(dir: &Path, edit: impl Fn(&mut Vec<u8>)) -> PathBuf {
    let p = dir.join("written-64m.vhd");
    let mut b = std::fs::read(&p).expect("read");
    edit(&mut b);
    std::fs::write(&p, b).expect("write");
    p
}

#[test]
fn check_finds_a_bad_batmap_checksum_and_repair_restores_it() {
    let (_d, dir) = copies();
    let p = patched(&dir, |b| b[2048 + 24] ^= 0x10);
    let r = vhdkit(["check".as_ref(), p.as_os_str()]);
    assert_eq!(r.code, EXIT_DIFFERENT, "{}", r.stdout_str());
    assert!(r.stdout_str().contains("batmap"), "{}", r.stdout_str());
    let r = vhdkit(["check".as_ref(), p.as_os_str(), "--repair".as_ref()]);
    assert_eq!(r.code, EXIT_OK, "{}", r.stdout_str());
    xen_check(&p);
}

#[test]
fn check_finds_a_set_bit_for_an_unallocated_block_and_repair_clears_it() {
    let (_d, dir) = copies();
    // Block 1 (unallocated) marked full, checksum kept consistent.
    let p = patched(&dir, |b| {
        b[2560] |= 0x40;
        let sum: u32 = b[2560..3072].iter().map(|&x| u32::from(x)).sum();
        b[2048 + 24..2048 + 28].copy_from_slice(&(!sum).to_be_bytes());
    });
    let r = run_cmd(Command::new(PYTHON).args(["-c", XEN_CHECK]).arg(&p));
    assert_ne!(r.code, 0, "the Xen rules see it too");
    let r = vhdkit(["check".as_ref(), p.as_os_str()]);
    assert_eq!(r.code, EXIT_DIFFERENT, "{}", r.stdout_str());
    assert!(
        r.stdout_str().contains("not allocated"),
        "{}",
        r.stdout_str()
    );
    let r = vhdkit([OsStr::new("check"), p.as_os_str(), OsStr::new("--repair")]);
    assert_eq!(r.code, EXIT_OK, "{}", r.stdout_str());
    xen_check(&p);
}

#[test]
fn resize_of_a_blktap_chain_grows_each_disk_in_place_and_keeps_them_valid() {
    let (_d, dir) = copies();
    let top = dir.join("snap2.vhd");
    let want = read_all(&top);
    // 32 entries in a BAT sector that holds 128: 256 MiB in place, the base first.
    for (n, child) in [
        ("written-64m.vhd", "snap1.vhd"),
        ("snap1.vhd", "snap2.vhd"),
        ("snap2.vhd", ""),
    ] {
        let p = dir.join(n);
        let r = vhdkit([
            "resize".as_ref(),
            p.as_os_str(),
            "--size".as_ref(),
            "256M".as_ref(),
            "--force".as_ref(),
            "--json".as_ref(),
        ]);
        assert_eq!(r.code, EXIT_OK, "{n}: {}", r.stderr);
        assert_eq!(r.json()["bat"], "in-place", "{n}");
        // The parent changed after its child recorded its time (check says so until
        // set-parent records it again): set it back, to check everything else.
        if !child.is_empty() {
            restore_parent_time(&dir.join(child), &p);
        }
        xen_check(&p);
        vhdkit_check_clean(&p);
    }
    let mut grown = want.clone();
    grown.resize(256 << 20, 0);
    assert_eq!(read_all(&top), grown);
    // Past what the table holds in place: refused (its batmap follows the BAT, and Xen
    // refuses blocks before the metadata's end), nothing written.
    let p = dir.join("written-64m.vhd");
    let before = std::fs::read(&p).expect("read");
    let r = vhdkit([
        "resize".as_ref(),
        p.as_os_str(),
        "--size".as_ref(),
        "1G".as_ref(),
        "--force".as_ref(),
    ]);
    let line = assert_failed_one_line(&r);
    assert!(line.contains("blktap"), "{line}");
    assert_eq!(std::fs::read(&p).expect("read"), before);
}

#[test]
fn resize_shrinks_a_blktap_disk_and_keeps_its_batmap_valid() {
    let (_d, dir) = copies();
    let p = dir.join("written-64m.vhd");
    let want = read_all(&p);
    // Block 0 is full (bit set); the 12 KiB at 10 MiB stay; shrink to 12 MiB + 1 MiB.
    let r = vhdkit([
        "resize".as_ref(),
        p.as_os_str(),
        "--size".as_ref(),
        "13M".as_ref(),
        "--allow-shrink".as_ref(),
        "--force".as_ref(),
    ]);
    assert_eq!(r.code, EXIT_OK, "{}", r.stderr);
    xen_check(&p);
    vhdkit_check_clean(&p);
    assert_eq!(read_all(&p), want[..13 << 20].to_vec());
}

/// A copy of `form`'s fixture with its batmap damage (`BatmapDamage`).
fn damaged(dir: &Path, form: BatmapDamage) -> PathBuf {
    let bytes = std::fs::read(fixture(&format!("blktap/{}", form.fixture()))).expect("read");
    let p = dir.join(format!("{form:?}.vhd"));
    std::fs::write(&p, form.apply(&bytes)).expect("write");
    p
}

#[test]
fn strict_commands_refuse_an_inconsistent_batmap_naming_the_fix_and_lenient_ones_warn() {
    let dir = tempdir();
    for form in BatmapDamage::ALL {
        let p = damaged(dir.path(), form);

        let strict = vhdkit(["info".as_ref(), p.as_os_str(), "--strict".as_ref()]);
        let lenient = vhdkit(["info".as_ref(), p.as_os_str()]);
        let check = vhdkit(["check".as_ref(), p.as_os_str()]);

        let line = assert_failed_one_line(&strict);
        assert!(line.contains("batmap"), "{form:?}: {line}");
        assert!(line.contains("`vhdkit check --repair`"), "{form:?}: {line}");
        assert_eq!(lenient.code, EXIT_OK, "{form:?}: {}", lenient.stderr);
        if form != BatmapDamage::NotFullBit {
            // (a lenient open does not read sector bitmaps to judge the bits)
            let out = lenient.stdout_str();
            assert!(
                out.contains("warning") && out.contains("batmap"),
                "{form:?}: {out}"
            );
        }
        assert_eq!(
            check.code,
            EXIT_DIFFERENT,
            "{form:?}: {}",
            check.stdout_str()
        );
        assert!(
            check.stdout_str().contains("`vhdkit check --repair`"),
            "{form:?}: {}",
            check.stdout_str()
        );
    }
}

#[test]
fn check_repair_rewrites_an_inconsistent_batmap_and_qemu_and_pyvhdi_read_as_before() {
    let dir = tempdir();
    for form in BatmapDamage::ALL {
        let p = damaged(dir.path(), form);
        let qemu = qemu_read_all(&p);
        let pyvhdi = pyvhdi_read_all(&[&p]);

        let r = vhdkit(["check".as_ref(), p.as_os_str(), "--repair".as_ref()]);

        assert_eq!(r.code, EXIT_OK, "{form:?}: {}", r.stdout_str());
        assert!(r.stdout_str().contains("repaired"), "{form:?}");
        xen_check(&p);
        let strict = vhdkit(["info".as_ref(), p.as_os_str(), "--strict".as_ref()]);
        assert_eq!(strict.code, EXIT_OK, "{form:?}: {}", strict.stderr);
        assert!(
            qemu_read_all(&p) == qemu,
            "{form:?}: qemu-img reads differently"
        );
        assert!(
            pyvhdi_read_all(&[&p]) == pyvhdi,
            "{form:?}: pyvhdi reads differently"
        );
        assert!(read_all(&p) == qemu, "{form:?}: vhdkit reads differently");
    }
}
