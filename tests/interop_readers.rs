//! What independent readers found (issue 9), each judged by the reader that found it:
//! libvhdi's bulk reads of small-block dynamic disks, `check` on disk2vhd's zero BAT
//! padding and bximage's geometry, a child's block size under its parent, a closed
//! stdout, the chain listing of a fixed parent, and block sizes other readers cannot
//! read.

mod common;

use std::ffi::OsStr;
use std::path::Path;
use std::process::Command;

use common::*;

/// One bulk read of the whole disk with pyvhdi (no chunking: the read that returned
/// zeros for written sectors behind partly set bitmaps).
const PYVHDI_BULK: &str = r#"
import sys, pyvhdi
f = pyvhdi.file()
f.open(sys.argv[1])
n = f.get_media_size()
b = f.read_buffer_at_offset(n, 0)
if len(b) != n:
    sys.exit("short read: %d of %d" % (len(b), n))
sys.stdout.buffer.write(b)
"#;

fn pyvhdi_bulk(disk: &Path) -> Vec<u8> {
    assert!(have(Tool::Pyvhdi));
    let r = run_cmd(Command::new(PYTHON).args(["-c", PYVHDI_BULK]).arg(disk));
    assert_eq!(r.code, 0, "pyvhdi: {}", r.stderr);
    r.stdout
}

#[test]
fn libvhdi_bulk_reads_equal_vhdkit_reads_after_small_random_writes() {
    let dir = tempdir();
    let mut rng = Rng::new(9001);
    let mut trials = 0;
    for (bs, size) in [
        ("512K", 3 * MIB),
        ("1M", 5 * MIB),
        ("2M", 9 * MIB),
        ("16M", 40 * MIB),
    ] {
        for t in 0..6 {
            let disk = dir.path().join(format!("r-{bs}-{t}.vhd"));
            let sz = size.to_string();
            create(
                &disk,
                &["--type", "dynamic", "--size", &sz, "--block-size", bs],
            );
            // The issue's reproduction first, then random 4 KiB writes.
            let mut writes = vec![(0u64, 4096usize), (1_044_480, 4096)];
            for _ in 0..5 {
                writes.push((rng.range(0, size / 512 - 8) * 512, 4096));
            }
            for (off, len) in writes {
                write_at(&disk, off, &rng.bytes(len), &[]);
            }
            let want = read_all(&disk);
            let got = pyvhdi_bulk(&disk);
            assert!(got == want, "{bs} trial {t}: libvhdi's bulk read differs");
            trials += 1;
        }
    }
    assert_eq!(trials, 24);
}

#[test]
fn check_is_clean_on_the_untouched_disk2vhd_image() {
    // QEMU's sample (GPL-2.0): outside the repository, passed over where it is absent.
    let Some(rw) = shared_realworld() else {
        return;
    };
    let dir = tempdir();
    let out = dir.path().join("d2v.vhd");
    let r = run_cmd(Command::new("sh").arg("-c").arg(format!(
            "bzip2 -dc '{}' > '{}'",
            rw.join("disk2vhd-dynamic-251m-zerofilled.vhd.bz2").display(),
            out.display()
        )));
    assert_eq!(r.code, 0, "{}", r.stderr);
    let r = vhdkit(["check".as_ref(), out.as_os_str()]);
    assert_eq!(r.code, EXIT_OK, "{}", r.stdout_str());
    assert!(
        r.stdout_str().contains("padding"),
        "reported as information"
    );
}

#[test]
fn check_is_clean_when_the_bat_padding_is_zero() {
    let dir = tempdir();
    let disk = dir.path().join("p.vhd");
    // 3 MiB in 2 MiB blocks: 2 entries, 126 entries of padding in the BAT's sector.
    create(&disk, &["--type", "dynamic", "--size", "3M"]);
    let mut bytes = std::fs::read(&disk).expect("read");
    bytes[1536 + 8..1536 + 512].fill(0);
    std::fs::write(&disk, bytes).expect("write");
    let r = vhdkit(["check".as_ref(), disk.as_os_str()]);
    assert_eq!(r.code, EXIT_OK, "{}", r.stdout_str());
    assert_eq!(qemu_read_all(&disk), read_all(&disk));
}

#[test]
fn a_geometry_describing_exactly_the_current_size_checks_clean() {
    // bximage's 64 MiB disk: 130/16/63 and a current size of 130·16·63·512.
    let dir = tempdir();
    let disk = dir.path().join("bx.vhd");
    create(&disk, &["--type", "fixed", "--size", "67092480"]);
    let mut bytes = std::fs::read(&disk).expect("read");
    let at = bytes.len() - 512;
    let mut f = vhdkit_format::spec::Footer::decode(&bytes[at..]).expect("footer");
    f.geometry = vhdkit_format::spec::Geometry {
        cylinders: 130,
        heads: 16,
        sectors_per_track: 63,
    };
    f.creator_app = *b"bxim";
    bytes[at..].copy_from_slice(&f.encode());
    std::fs::write(&disk, bytes).expect("write");
    let r = vhdkit(["check".as_ref(), disk.as_os_str()]);
    assert_eq!(r.code, EXIT_OK, "{}", r.stdout_str());
}

#[test]
fn a_child_takes_its_parents_block_size_unless_told() {
    let dir = tempdir();
    let parent = dir.path().join("p.vhd");
    create(
        &parent,
        &["--type", "dynamic", "--size", "64M", "--block-size", "16M"],
    );
    let child = dir.path().join("c.vhd");
    create(&child, &["--type", "differencing", "--parent", "p.vhd"]);
    assert_eq!(info(&child)["block_size"], 16 << 20);
    let other = dir.path().join("o.vhd");
    create(
        &other,
        &[
            "--type",
            "differencing",
            "--parent",
            "p.vhd",
            "--block-size",
            "512K",
        ],
    );
    assert_eq!(info(&other)["block_size"], 512 << 10);
    // Under a fixed parent (no blocks): the default.
    let fixed = dir.path().join("f.vhd");
    create(&fixed, &["--type", "fixed", "--size", "4M"]);
    let fc = dir.path().join("fc.vhd");
    create(&fc, &["--type", "differencing", "--parent", "f.vhd"]);
    assert_eq!(info(&fc)["block_size"], 2 << 20);
}

#[test]
fn the_chain_listing_of_a_fixed_parent_says_what_it_is() {
    let dir = tempdir();
    let fixed = dir.path().join("f.vhd");
    create(&fixed, &["--type", "fixed", "--size", "4M"]);
    let child = dir.path().join("c.vhd");
    create(&child, &["--type", "differencing", "--parent", "f.vhd"]);
    write_at(&child, 0, &[1u8; 512], &[]);
    let out = vhdkit(["info".as_ref(), child.as_os_str()])
        .ok()
        .stdout_str();
    assert!(!out.contains("null"), "{out}");
    assert!(out.contains("(differencing, 1 block allocated)"), "{out}");
    assert!(out.lines().any(|l| l.ends_with("f.vhd (fixed)")), "{out}");
}

#[test]
fn block_sizes_below_4k_are_usage_errors() {
    let dir = tempdir();
    for bs in ["512", "1K", "2K", "3K", "5K"] {
        let d = dir.path().join(format!("b{bs}.vhd"));
        let r = vhdkit([
            "create".as_ref(),
            d.as_os_str(),
            "--type".as_ref(),
            "dynamic".as_ref(),
            "--size".as_ref(),
            "4M".as_ref(),
            "--block-size".as_ref(),
            OsStr::new(bs),
        ]);
        assert_eq!(r.code, EXIT_USAGE, "{bs}: {}", r.stderr);
        assert!(!d.exists());
    }
    let src = dir.path().join("s.raw");
    std::fs::write(&src, vec![1u8; 4 << 20]).expect("src");
    let d = dir.path().join("c.vhd");
    let r = vhdkit([
        "convert".as_ref(),
        src.as_os_str(),
        d.as_os_str(),
        "--type".as_ref(),
        "dynamic".as_ref(),
        "--block-size".as_ref(),
        "2K".as_ref(),
    ]);
    assert_eq!(r.code, EXIT_USAGE, "{}", r.stderr);
    // The library refuses them too.
    let e = vhdkit_format::Disk::create(
        dir.path().join("lib.vhd"),
        &vhdkit_format::CreateOptions::new(vhdkit_format::DiskKind::Dynamic, 4 * MIB)
            .block_size(2048),
    )
    .unwrap_err();
    assert_eq!(e.kind(), vhdkit_format::ErrorKind::InvalidArgument, "{e}");
}

#[test]
fn no_command_panics_when_stdout_closes_at_once() {
    let dir = tempdir();
    let a = dir.path().join("a.vhd");
    create(
        &a,
        &["--type", "dynamic", "--size", "64M", "--block-size", "512K"],
    );
    for i in 0..20u64 {
        write_at(&a, i * 3 * MIB + 1000, &[i as u8 + 1; 3000], &[]);
    }
    let b = dir.path().join("b.raw");
    std::fs::write(&b, vec![0u8; 64 << 20]).expect("raw");
    let (a, b) = (a.display().to_string(), b.display().to_string());
    let cmds = [
        format!("info {a}"),
        format!("info {a} --json"),
        format!("check {a}"),
        format!("check {a} --json"),
        format!("map {a}"),
        format!("map {a} --json"),
        format!("read {a}"),
        format!("compare {a} {b}"),
        "--help".to_string(),
        "info --help".to_string(),
        "--version".to_string(),
    ];
    let mut runs = 0;
    for c in &cmds {
        for _ in 0..10 {
            // PIPESTATUS[0]: vhdkit's own exit, whatever `true` did.
            let script = format!("'{}' {c} | true; exit ${{PIPESTATUS[0]}}", bin());
            let r = run_cmd(Command::new("bash").args(["-c", &script]));
            assert_ne!(r.code, 101, "{c}: {}", r.stderr);
            assert!(!r.stderr.contains("panicked"), "{c}: {}", r.stderr);
            runs += 1;
        }
    }
    assert_eq!(runs, cmds.len() * 10);
}
