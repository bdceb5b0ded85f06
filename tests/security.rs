//! The trust policy (docs/security.md), one test per attack of the review that found
//! them, each with its crafted file built here: a host file is neither read nor written
//! through a crafted host-drive stub; a crafted child cannot make `merge` write into a
//! VHD outside its folder; FIFOs are refused at once; memory stays bounded by what a file
//! really holds; names from images reach the terminal escaped; outputs never go through
//! a symbolic link, onto an input, or stay half-written; a failed `write` changes
//! nothing and a killed one leaves every sector old or new; an empty source is refused;
//! qemu and vhdkit each see the other holding a disk.

mod common;

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use vhdkit_format::spec::{DynamicHeader, ParentLocator};
use vhdkit_format::{CreateOptions, Disk};

/// Address-space limit of the memory tests, in KiB (as `tests/hostile.rs`).
const VMEM_KIB: u64 = 1 << 20;

fn args<'a>(a: &'a [&'a dyn AsRef<OsStr>]) -> Vec<&'a OsStr> {
    a.iter().map(|x| x.as_ref()).collect()
}

fn no_control_chars(s: &str) -> bool {
    !s.chars().any(|c| c.is_control() && c != '\n')
}

// ---------------------------------------------------------------------------------------
// 1. Host-drive stubs naming a host file
// ---------------------------------------------------------------------------------------

/// A "secret" host file and a stub naming it, built as an attacker who learned its
/// size and identity CRC would build it.
fn secret_and_stub(dir: &Path) -> (PathBuf, PathBuf, Vec<u8>) {
    let secret = dir.join("secret.conf");
    let mut content = b"api_key=sk-THIS-MUST-NOT-LEAK\n".to_vec();
    content.resize(4096, b'#');
    std::fs::write(&secret, &content).expect("secret");
    let stub = dir.join("download.vhd");
    Disk::create(&stub, &CreateOptions::host_drive(&secret, false)).expect("stub");
    (secret, stub, content)
}

#[test]
fn stub_naming_a_host_file_is_refused_and_discloses_nothing() {
    let dir = tempdir();
    let (secret, stub, content) = secret_and_stub(dir.path());
    for extra in [
        &[][..],
        &["--host-drive"][..],
        &["--ignore-host-drive-identity"][..],
    ] {
        for cmd in ["info", "read"] {
            let mut a: Vec<&OsStr> = vec![OsStr::new(cmd), stub.as_os_str()];
            a.extend(extra.iter().map(OsStr::new));
            let r = vhdkit(a);
            let line = assert_failed_one_line(&r);
            assert!(
                !r.stdout_str().contains("api_key"),
                "{cmd} {extra:?} leaked"
            );
            for leak in ["4096", "CRC", "crc", "api_key", "bytes now"] {
                assert!(
                    !line.contains(leak),
                    "{cmd} {extra:?} says {leak:?}: {line}"
                );
            }
        }
    }
    let out = dir.path().join("out.raw");
    let r = vhdkit(args(&[&"convert", &stub, &out, &"--type", &"raw"]));
    assert_failed_one_line(&r);
    assert!(!out.exists());
    assert_eq!(std::fs::read(&secret).expect("secret"), content);
}

#[test]
fn stub_naming_a_host_file_cannot_write_it_even_with_the_identity_override() {
    let dir = tempdir();
    let (secret, stub, content) = secret_and_stub(dir.path());
    for extra in [
        &["--ignore-host-drive-identity"][..],
        &["--host-drive", "--ignore-host-drive-identity"][..],
    ] {
        let r = try_write_at(&stub, 0, b"OVERWRITTEN", extra);
        assert_failed_one_line(&r);
    }
    assert_eq!(std::fs::read(&secret).expect("secret"), content);
}

#[test]
fn stub_naming_a_changed_device_says_only_that_it_differs() {
    let dir = tempdir();
    let (secret, stub, _) = secret_and_stub(dir.path());
    std::fs::write(&secret, vec![7u8; 8192]).expect("replace");
    let r = vhdkit(args(&[
        &"info",
        &stub,
        &"--host-drive",
        &"--host-drive-file",
    ]));
    let line = assert_failed_one_line(&r);
    assert!(line.contains("not the drive that was linked"), "{line}");
    for leak in ["8192", "4096", "CRC", "ignore-host-drive-identity"] {
        assert!(!line.contains(leak), "says {leak:?}: {line}");
    }
}

// ---------------------------------------------------------------------------------------
// 2. A crafted child naming a victim VHD by an absolute locator
// ---------------------------------------------------------------------------------------

/// A victim disk in `dir/victim/` and a crafted child in `dir/download/` whose only
/// way to its "parent" is an absolute locator to the victim; the child records the
/// victim's unique id (as if the attacker had learned it) and holds data.
fn victim_and_crafted_child(dir: &Path) -> (PathBuf, PathBuf) {
    let vdir = dir.join("victim");
    let ddir = dir.join("download");
    std::fs::create_dir_all(&vdir).expect("mkdir");
    std::fs::create_dir_all(&ddir).expect("mkdir");
    let victim = vdir.join("important.vhd");
    create(&victim, &["--type", "dynamic", "--size", "4M"]);
    write_at(&victim, 0, b"the user's own data", &[]);
    let child = vdir.join("evil.vhd");
    create(
        &child,
        &["--type", "differencing", "--parent", "important.vhd"],
    );
    write_at(&child, 0, b"ATTACKER", &[]);
    // Moved into the download folder, with the relative locator and the parent name
    // made useless: only the absolute locator leads to the victim.
    let moved = ddir.join("evil.vhd");
    std::fs::rename(&child, &moved).expect("mv");
    let mut bytes = std::fs::read(&moved).expect("read");
    let mut h = DynamicHeader::decode(&bytes[512..1536]).expect("header");
    h.set_parent_name("not-here.vhd").expect("name");
    for l in h.locators.iter_mut() {
        if l.code.to_string() == "W2ru" {
            *l = ParentLocator::EMPTY;
        }
    }
    bytes[512..1536].copy_from_slice(&h.encode());
    std::fs::write(&moved, bytes).expect("write");
    (victim, moved)
}

#[test]
fn merge_of_a_crafted_child_never_writes_the_victim() {
    let dir = tempdir();
    let (victim, child) = victim_and_crafted_child(dir.path());
    let before = std::fs::read(&victim).expect("victim");

    let r = vhdkit(args(&[&"merge", &child]));
    let line = assert_failed_one_line(&r);
    assert!(
        line.contains("--with-parent"),
        "says how to name it: {line}"
    );
    assert_eq!(std::fs::read(&victim).expect("victim"), before);

    // Reading through the absolute locator may be allowed; writing into what it names
    // still needs the parent named on the command line.
    let r = vhdkit(args(&[&"merge", &child, &"--allow-absolute-parent"]));
    let line = assert_failed_one_line(&r);
    assert!(line.contains("--with-parent"), "{line}");
    assert_eq!(std::fs::read(&victim).expect("victim"), before);

    // Named by the user, it is the user's decision.
    let r = vhdkit(args(&[&"merge", &child, &"--with-parent", &victim]));
    assert_eq!(r.code, EXIT_OK, "{}", r.stderr);
    assert_eq!(&read_range(&victim, 0, 8), b"ATTACKER");
}

#[test]
fn parent_id_mismatch_never_prints_the_other_files_id() {
    let dir = tempdir();
    let a = dir.path().join("a.vhd");
    create(&a, &["--type", "dynamic", "--size", "4M"]);
    let child = dir.path().join("c.vhd");
    create(&child, &["--type", "differencing", "--parent", "a.vhd"]);
    std::fs::remove_file(&a).expect("rm");
    create(&a, &["--type", "dynamic", "--size", "4M"]);
    let other_id = info(&a)["unique_id"].as_str().expect("id").to_string();
    for cmd in ["info", "read", "merge", "check"] {
        let r = vhdkit(args(&[&cmd, &child]));
        assert!(!r.stderr.contains(&other_id), "{cmd}: {}", r.stderr);
        assert!(
            !r.stdout_str().contains(&other_id),
            "{cmd}: {}",
            r.stdout_str()
        );
    }
}

// ---------------------------------------------------------------------------------------
// 3. FIFOs
// ---------------------------------------------------------------------------------------

fn mkfifo(p: &Path) {
    let s = Command::new("mkfifo").arg(p).status().expect("mkfifo");
    assert!(s.success());
}

/// Runs vhdkit with a 10 s guard and returns the run and how long it took.
fn timed(a: &[&OsStr]) -> (Run, Duration) {
    let t = Instant::now();
    let o = Command::new("timeout")
        .arg("10")
        .arg(bin())
        .args(a)
        .stdin(Stdio::null())
        .output()
        .expect("run");
    (Run::from_output(o), t.elapsed())
}

#[test]
fn fifos_are_refused_within_a_second() {
    let dir = tempdir();
    let fifo = dir.path().join("pipe.vhd");
    mkfifo(&fifo);
    for cmd in ["info", "check", "read", "map", "compact"] {
        let (r, took) = timed(&[OsStr::new(cmd), fifo.as_os_str()]);
        assert!(took < Duration::from_secs(1), "{cmd} took {took:?}");
        let line = assert_failed_one_line(&r);
        assert!(line.contains("FIFO"), "{cmd}: {line}");
    }
    // A stub naming a FIFO, even with every host-drive allowance.
    let stub_dir = dir.path().join("s");
    std::fs::create_dir(&stub_dir).expect("mkdir");
    let dev = stub_dir.join("dev.img");
    std::fs::write(&dev, vec![0u8; 4096]).expect("dev");
    let stub = stub_dir.join("stub.vhd");
    Disk::create(&stub, &CreateOptions::host_drive(&dev, false)).expect("stub");
    std::fs::remove_file(&dev).expect("rm");
    mkfifo(&dev);
    let (r, took) = timed(&args(&[
        &"read",
        &stub,
        &"--host-drive",
        &"--host-drive-file",
    ]));
    assert!(took < Duration::from_secs(1), "stub took {took:?}");
    assert_failed_one_line(&r);
    // A parent that is a FIFO.
    let base = dir.path().join("base.vhd");
    create(&base, &["--type", "dynamic", "--size", "4M"]);
    let child = dir.path().join("child.vhd");
    create(&child, &["--type", "differencing", "--parent", "base.vhd"]);
    std::fs::remove_file(&base).expect("rm");
    mkfifo(&base);
    for cmd in ["info", "check", "read"] {
        let (r, took) = timed(&[OsStr::new(cmd), child.as_os_str()]);
        assert!(took < Duration::from_secs(1), "{cmd} took {took:?}");
        assert_ne!(r.code, 124, "{cmd} hung");
        if cmd == "info" {
            // info shows a broken chain rather than failing.
            assert!(
                r.stdout_str().contains("NOT RESOLVED"),
                "{}",
                r.stdout_str()
            );
        } else {
            assert_ne!(r.code, EXIT_OK, "{cmd}");
        }
    }
}

// ---------------------------------------------------------------------------------------
// 4. Memory bombs
// ---------------------------------------------------------------------------------------

/// Runs vhdkit under the address-space limit; returns the run.
fn limited(a: &[&OsStr]) -> Run {
    let mut cmd = format!("ulimit -v {VMEM_KIB}; exec timeout -s KILL 60 '{}'", bin());
    for x in a {
        cmd.push_str(&format!(" '{}'", x.to_string_lossy()));
    }
    let o = Command::new("sh")
        .args(["-c", &cmd])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .expect("sh");
    Run::from_output(o)
}

/// A dynamic disk whose header claims `size` bytes in `block` blocks and `entries` BAT
/// entries, in a sparse file of apparent length `len` whose BAT is a hole (all zeros).
fn sparse_bomb(path: &Path, size: u64, block: u32, entries: u32, len: u64) {
    use vhdkit_format::spec::{DiskType, Footer};
    use vhdkit_platform::FileExt;
    let mut footer = Footer::new(DiskType::Dynamic, size);
    footer.data_offset = 512;
    let header = DynamicHeader::new(1536, entries, block);
    let f = std::fs::File::create(path).expect("create");
    f.set_len(len).expect("len");
    f.write_all_at(&footer.encode(), 0).expect("copy");
    f.write_all_at(&header.encode(), 512).expect("header");
    f.write_all_at(&footer.encode(), len - 512).expect("footer");
}

#[test]
fn a_bat_in_a_sparse_hole_is_refused_without_reading_gigabytes() {
    let dir = tempdir();
    let p = dir.path().join("bomb.vhd");
    // 2040 GiB in 4 KiB blocks: a 2 GiB BAT that is one hole; 3 TiB apparent length.
    sparse_bomb(&p, 2040 * GIB, 4096, (2040 * GIB / 4096) as u32, 3 << 40);
    assert!(std::fs::metadata(&p).expect("stat").len() > 1 << 40);
    for cmd in ["info", "check", "read", "map"] {
        let r = limited(&[OsStr::new(cmd), p.as_os_str()]);
        assert_no_panic(&r);
        assert!(
            matches!(r.code, 1 | 3),
            "{cmd}: exit {}: {}",
            r.code,
            r.stderr
        );
    }
}

#[test]
fn a_huge_table_size_field_does_not_allocate_the_table() {
    let dir = tempdir();
    let p = dir.path().join("bomb.vhd");
    // A 16 MiB disk whose header claims 2^32 - 1 entries (16 GiB of table).
    sparse_bomb(&p, 16 * MIB, 2 << 20, u32::MAX, 3 << 40);
    let r = limited(&[OsStr::new("check"), p.as_os_str()]);
    assert_no_panic(&r);
    assert!(matches!(r.code, 1 | 3), "exit {}: {}", r.code, r.stderr);
}

#[test]
fn map_of_a_block_with_an_alternating_bitmap_streams() {
    let dir = tempdir();
    let p = dir.path().join("alt.vhd");
    create(
        &p,
        &[
            "--type",
            "dynamic",
            "--size",
            "256M",
            "--block-size",
            "256M",
        ],
    );
    write_at(&p, 0, &[1u8; 512], &[]);
    // Every other sector of the block marked: half a million extents.
    let d = Disk::open(&p).expect("open");
    let at = d
        .top()
        .bat()
        .expect("bat")
        .block_offset(0)
        .expect("allocated");
    drop(d);
    let mut bytes = std::fs::read(&p).expect("read");
    bytes[at as usize..at as usize + 65536].fill(0xAA);
    std::fs::write(&p, bytes).expect("write");
    for extra in [&["--json"][..], &[][..]] {
        let mut a = vec![OsStr::new("map"), p.as_os_str()];
        a.extend(extra.iter().map(OsStr::new));
        let r = limited(&a);
        assert_eq!(r.code, EXIT_OK, "map {extra:?}: {}", r.stderr);
    }
    // And the rows are right.
    let r = vhdkit(args(&[&"map", &p, &"--json"]));
    let doc = r.json();
    let rows = doc["rows"].as_array().expect("rows");
    assert_eq!(rows.len(), 1 << 19);
    assert_eq!(rows[0]["kind"], "allocated");
    assert_eq!(rows[1]["kind"], "zero");
    assert_eq!(rows[1]["length"], 512);
}

// ---------------------------------------------------------------------------------------
// 5. Terminal escapes
// ---------------------------------------------------------------------------------------

#[test]
fn escape_sequences_in_a_parent_name_reach_the_terminal_escaped() {
    let dir = tempdir();
    let base = dir.path().join("base.vhd");
    create(&base, &["--type", "dynamic", "--size", "4M"]);
    let child = dir.path().join("child.vhd");
    create(&child, &["--type", "differencing", "--parent", "base.vhd"]);
    let mut bytes = std::fs::read(&child).expect("read");
    let mut h = DynamicHeader::decode(&bytes[512..1536]).expect("header");
    h.set_parent_name("x\u{1b}[2K\r\u{1b}[32mno problems found\u{1b}[0m")
        .expect("name");
    h.locators = [ParentLocator::EMPTY; 8];
    bytes[512..1536].copy_from_slice(&h.encode());
    std::fs::write(&child, bytes).expect("write");
    for cmd in ["info", "check", "read", "map"] {
        let r = vhdkit(args(&[&cmd, &child]));
        assert_no_panic(&r);
        assert!(no_control_chars(&r.stderr), "{cmd} stderr: {:?}", r.stderr);
        if cmd != "read" {
            assert!(
                no_control_chars(&r.stdout_str()),
                "{cmd}: {:?}",
                r.stdout_str()
            );
        }
        assert!(
            r.stderr.contains("\\x1b") || r.stdout_str().contains("\\x1b"),
            "{cmd} shows the escape as text"
        );
    }
}

// ---------------------------------------------------------------------------------------
// 6. read --output
// ---------------------------------------------------------------------------------------

fn small_disk(dir: &Path) -> PathBuf {
    let p = dir.join("d.vhd");
    create(&p, &["--type", "dynamic", "--size", "4M"]);
    write_at(&p, 1000, b"payload", &[]);
    p
}

#[cfg(unix)]
#[test]
fn read_output_never_follows_a_symlink() {
    let dir = tempdir();
    let disk = small_disk(dir.path());
    let other = dir.path().join("other.txt");
    std::fs::write(&other, b"keep me").expect("other");
    let link = dir.path().join("out.raw");
    std::os::unix::fs::symlink(&other, &link).expect("symlink");
    let dangling = dir.path().join("dangling.raw");
    std::os::unix::fs::symlink(dir.path().join("nowhere"), &dangling).expect("symlink");
    for out in [&link, &dangling] {
        let r = vhdkit(args(&[&"read", &disk, &"--output", out]));
        let line = assert_failed_one_line(&r);
        assert!(line.contains("exists"), "{line}");
    }
    assert_eq!(std::fs::read(&other).expect("other"), b"keep me");
    assert!(!dir.path().join("nowhere").exists());
}

#[test]
fn read_output_onto_its_own_source_is_refused_and_the_source_kept() {
    let dir = tempdir();
    let disk = small_disk(dir.path());
    let before = std::fs::read(&disk).expect("disk");
    let r = vhdkit(args(&[&"read", &disk, &"--output", &disk]));
    assert_failed_one_line(&r);
    assert_eq!(std::fs::read(&disk).expect("disk"), before);
}

#[test]
fn read_output_that_fails_leaves_nothing() {
    // A 1 MiB tmpfs cannot hold 8 MiB of data: the copy fails part way.
    let dir = tempdir();
    let disk = dir.path().join("d.vhd");
    create(&disk, &["--type", "dynamic", "--size", "8M"]);
    write_at(&disk, 0, &Rng::new(5).bytes(8 << 20), &[]);
    let small = dir.path().join("small");
    std::fs::create_dir(&small).expect("mkdir");
    let m = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
        .arg(&small)
        .status()
        .expect("mount (the tests run as root)");
    assert!(m.success(), "mounting a tmpfs needs root");
    let out = small.join("out.raw");
    let r = vhdkit(args(&[&"read", &disk, &"--output", &out]));
    let names: Vec<_> = std::fs::read_dir(&small)
        .expect("ls")
        .map(|e| e.expect("entry").file_name())
        .collect();
    let _ = Command::new("umount").arg(&small).status();
    assert_failed_one_line(&r);
    assert!(names.is_empty(), "left behind: {names:?}");
}

// ---------------------------------------------------------------------------------------
// 7, 8. write: checked first, never a torn sector
// ---------------------------------------------------------------------------------------

#[test]
fn write_longer_than_the_disk_changes_nothing() {
    let dir = tempdir();
    let disk = dir.path().join("f.vhd");
    create(&disk, &["--type", "fixed", "--size", "4M"]);
    let before = std::fs::read(&disk).expect("disk");
    let r = vhdkit_stdin(
        args(&[&"write", &disk, &"--offset", &"0"]),
        &vec![0x5A; 5 << 20],
    );
    assert_failed_one_line(&r);
    assert_eq!(std::fs::read(&disk).expect("disk"), before);
    // The same through a pipe given as --input.
    let r = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "head -c 5242880 /dev/zero | '{}' write '{}' --offset 1 --input /dev/stdin",
            bin(),
            disk.display()
        ))
        .output()
        .expect("sh");
    assert_ne!(r.status.code(), Some(0));
    assert_eq!(std::fs::read(&disk).expect("disk"), before);
}

#[test]
fn write_killed_at_any_moment_leaves_each_sector_old_or_new() {
    let dir = tempdir();
    let size = 64 * MIB;
    let offset = 3 * MIB + 1234; // unaligned: chunk boundaries must still fall on 4 MiB
    let len = 40 * MIB as usize;
    let new_data = Rng::new(77).bytes(len);
    let input = dir.path().join("input.bin");
    std::fs::write(&input, &new_data).expect("input");
    let mut kills = 0;
    for (kind, delays) in [("dynamic", [5u64, 15, 30, 60]), ("fixed", [5, 15, 30, 60])] {
        for (i, ms) in delays.into_iter().enumerate() {
            let disk = dir.path().join(format!("{kind}{i}.vhd"));
            let sz = size.to_string();
            create(&disk, &["--type", kind, "--size", &sz]);
            let old = Rng::new(i as u64 + 1).bytes(size as usize);
            write_at(&disk, 0, &old, &[]);
            let mut child = Command::new(bin())
                .args(["write".as_ref(), disk.as_os_str(), "--offset".as_ref()])
                .arg(offset.to_string())
                .arg("--input")
                .arg(&input)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("spawn");
            std::thread::sleep(Duration::from_millis(ms));
            let _ = child.kill();
            let status = child.wait().expect("wait");
            kills += u32::from(!status.success());
            let now = read_all(&disk);
            let check = vhdkit(args(&[&"check", &disk]));
            assert_ne!(check.code, 3, "{kind} after {ms} ms: {}", check.stderr);
            let mut model = old.clone();
            model[offset as usize..offset as usize + len].copy_from_slice(&new_data);
            for s in (0..size as usize).step_by(512) {
                let got = &now[s..s + 512];
                assert!(
                    got == &old[s..s + 512] || got == &model[s..s + 512],
                    "{kind} killed after {ms} ms: sector {} is neither old nor new",
                    s / 512
                );
            }
        }
    }
    eprintln!("{kills} of 8 writes were killed before they finished");
}

// ---------------------------------------------------------------------------------------
// 9. An empty source
// ---------------------------------------------------------------------------------------

#[test]
fn convert_of_an_empty_source_is_refused_and_writes_nothing() {
    let dir = tempdir();
    let src = dir.path().join("empty.raw");
    std::fs::write(&src, b"").expect("empty");
    for t in ["dynamic", "fixed", "raw"] {
        let dst = dir.path().join(format!("out-{t}"));
        let r = vhdkit(args(&[&"convert", &src, &dst, &"--type", &t]));
        let line = assert_failed_one_line(&r);
        assert!(line.contains("empty"), "{line}");
        assert!(!dst.exists());
    }
}

// ---------------------------------------------------------------------------------------
// 10. Locks qemu honours
// ---------------------------------------------------------------------------------------

#[test]
fn qemu_io_cannot_write_while_vhdkit_holds_the_disk() {
    assert!(have(Tool::QemuImg));
    let dir = tempdir();
    let disk = dir.path().join("d.vhd");
    create(&disk, &["--type", "dynamic", "--size", "4M"]);
    // `vhdkit write` from a stdin that stays open holds the disk open for writing.
    let mut holder = Command::new(bin())
        .args([
            "write".as_ref(),
            disk.as_os_str(),
            "--offset".as_ref(),
            "0".as_ref(),
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    std::thread::sleep(Duration::from_millis(300));
    let r = run_cmd(
        Command::new("qemu-io")
            .args(["-f", "raw", "-c", "write -P 0x41 0 512"])
            .arg(&disk),
    );
    drop(holder.stdin.take());
    let _ = holder.wait();
    assert_ne!(r.code, 0, "qemu-io wrote: {}", r.stdout_str());
    assert!(r.stderr.contains("lock"), "{}", r.stderr);
}

#[test]
fn vhdkit_refuses_a_disk_qemu_holds() {
    assert!(have(Tool::QemuImg));
    let dir = tempdir();
    let disk = dir.path().join("d.vhd");
    create(&disk, &["--type", "dynamic", "--size", "4M"]);
    let before = std::fs::read(&disk).expect("disk");
    // qemu-io reading commands from a pipe holds the image open read-write.
    let mut qemu = Command::new("qemu-io")
        .args(["-f", "raw"])
        .arg(&disk)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("qemu-io");
    std::thread::sleep(Duration::from_millis(500));
    let w = try_write_at(&disk, 0, b"x", &[]);
    let c = vhdkit(args(&[&"compact", &disk]));
    drop(qemu.stdin.take());
    let _ = qemu.wait();
    for r in [&w, &c] {
        let line = assert_failed_one_line(r);
        assert!(line.contains("in use"), "{line}");
    }
    assert_eq!(std::fs::read(&disk).expect("disk"), before);
}
