//! Outputs that already exist, and the permissions of new ones (issue 18, §3 and §7):
//!
//! - devices (character and block) are written in place by `read --output` and
//!   `convert --type raw`, a block device smaller than the data refused before any write;
//! - a regular file is replaced only with `--force`, atomically: a failed, cancelled or
//!   killed run leaves the old file whole (and a killed run's temporary name is removed
//!   by the next run); symbolic links are never followed;
//! - a file named like a VHD but without a VHD footer is "not a VHD" unless
//!   `--source-format raw`;
//! - new files take the source's permission bits under the umask, as `cp` does.
//!
//! Loop devices and mounts need root (CI runs as root).

// Devices, symbolic links, permission bits and umask: Unix only.
#![cfg(unix)]

mod common;

use std::ffi::OsStr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

fn os(args: &[&dyn AsRef<OsStr>]) -> Vec<std::ffi::OsString> {
    args.iter().map(|a| a.as_ref().to_owned()).collect()
}

/// A 4 MiB dynamic disk with data in its first and last 2 MiB blocks and zeros between,
/// and what it reads as.
fn disk_with_data(dir: &Path) -> (PathBuf, Vec<u8>) {
    let disk = dir.join("d.vhd");
    create(&disk, &["--type", "dynamic", "--size", "6M"]);
    write_at(&disk, 1000, &Rng::new(1).bytes(70_000), &[]);
    write_at(&disk, 5 * MIB + 3, &Rng::new(2).bytes(9_000), &[]);
    let content = read_all(&disk);
    (disk, content)
}

/// A file of `len` seeded random bytes (what a device held before).
fn random_file(path: &Path, len: usize, seed: u64) -> Vec<u8> {
    let bytes = Rng::new(seed).bytes(len);
    std::fs::write(path, &bytes).expect("write");
    bytes
}

/// A loop device over a file; detached when dropped.
struct Loop {
    dev: PathBuf,
}

impl Loop {
    fn new(file: &Path) -> Loop {
        // One lock for every test that attaches loop devices: `losetup -f` in parallel
        // processes can race for the same device.
        let out = Command::new("flock")
            .args(["/tmp/vhdkit-tests-losetup.lock", "losetup", "-f", "--show"])
            .arg(file)
            .output()
            .expect("losetup (util-linux; the tests run as root)");
        assert!(
            out.status.success(),
            "losetup: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let dev = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        Loop { dev: dev.into() }
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("losetup").arg("-d").arg(&self.dev).status();
    }
}

/// A file system of `kind` mounted in a temporary directory: `tmpfs` of `size`, or
/// `ntfs` (ntfs-3g, through FUSE, which has no `O_TMPFILE`; 256 MiB, `size` unused);
/// unmounted when dropped.
struct Mounted {
    dir: tempfile::TempDir,
}

impl Mounted {
    fn new(kind: &str, size: &str) -> Mounted {
        let dir = tempdir();
        std::fs::create_dir(dir.path().join("mnt")).expect("mkdir");
        let mnt = dir.path().join("mnt");
        let status = match kind {
            "tmpfs" => Command::new("mount")
                .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
                .arg(&mnt)
                .status(),
            "ntfs" => {
                let img = dir.path().join("fs.img");
                std::fs::File::create(&img)
                    .and_then(|f| f.set_len(256 << 20))
                    .expect("the file system's image");
                let made = Command::new("mkfs.ntfs")
                    .args(["-F", "-f", "-q"])
                    .arg(&img)
                    .output()
                    .expect("mkfs.ntfs (ntfs-3g)");
                assert!(made.status.success(), "mkfs.ntfs");
                Command::new("ntfs-3g").arg(&img).arg(&mnt).status()
            }
            _ => unreachable!("{kind}"),
        }
        .expect("mount (the tests run as root)");
        assert!(status.success(), "mounting {kind} needs root");
        Mounted { dir }
    }

    fn path(&self) -> PathBuf {
        self.dir.path().join("mnt")
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.path()).status();
    }
}

// ---------------------------------------------------------------------------------------
// Devices are written in place
// ---------------------------------------------------------------------------------------

#[test]
fn read_output_and_convert_raw_onto_dev_null_succeed() {
    let dir = tempdir();
    let (disk, _) = disk_with_data(dir.path());

    let r = vhdkit(os(&[&"read", &disk, &"--output", &"/dev/null"]));
    assert_eq!(r.code, EXIT_OK, "read: {}", r.stderr);
    let r = vhdkit(os(&[
        &"convert",
        &disk,
        &"/dev/null",
        &"--type",
        &"raw",
        &"--json",
    ]));
    assert_eq!(r.code, EXIT_OK, "convert: {}", r.stderr);
    assert_eq!(r.json()["file_size_after"], 6 * MIB, "{}", r.stdout_str());
}

#[test]
fn a_character_device_takes_only_a_raw_result_and_no_verification() {
    let dir = tempdir();
    let (disk, _) = disk_with_data(dir.path());
    for (extra, why) in [
        (&["--type", "dynamic"][..], "--type raw"),
        (&["--type", "raw", "--verify"], "cannot be verified"),
    ] {
        let mut args = os(&[&"convert", &disk, &"/dev/null"]);
        args.extend(extra.iter().map(Into::into));
        let r = vhdkit(&args);
        let line = assert_failed_one_line(&r);
        assert!(
            line.contains("/dev/null") && line.contains(why),
            "{extra:?}: {line}"
        );
    }
}

/// After a write in place onto a device backed by `back`, which held `before`: the
/// disk's bytes `content` from its start (zeros included), the old bytes past them.
fn assert_written_in_place(back: &Path, before: &[u8], content: &[u8]) {
    let after = std::fs::read(back).expect("read back");
    assert_bytes_eq("the disk, zeros included", &after[..content.len()], content);
    assert_bytes_eq(
        "past the disk: untouched",
        &after[content.len()..],
        &before[content.len()..],
    );
}

#[test]
fn read_output_onto_a_block_device_writes_the_disk_in_place_zeros_included() {
    let dir = tempdir();
    let (disk, content) = disk_with_data(dir.path());
    let back = dir.path().join("dev.img");
    let before = random_file(&back, 8 << 20, 7);
    let dev = Loop::new(&back);

    let r = vhdkit(os(&[&"read", &disk, &"--output", &dev.dev]));

    assert_eq!(r.code, EXIT_OK, "{}", r.stderr);
    drop(dev);
    assert_written_in_place(&back, &before, &content);
}

#[test]
fn convert_raw_onto_a_block_device_writes_the_disk_in_place_and_verifies() {
    let dir = tempdir();
    let (disk, content) = disk_with_data(dir.path());
    let back = dir.path().join("dev.img");
    let before = random_file(&back, 8 << 20, 8);
    let dev = Loop::new(&back);

    let r = vhdkit(os(&[
        &"convert",
        &disk,
        &dev.dev,
        &"--type",
        &"raw",
        &"--verify",
        &"--json",
    ]));

    assert_eq!(r.code, EXIT_OK, "{}", r.stderr);
    assert_eq!(r.json()["verified"], true, "{}", r.stdout_str());
    drop(dev);
    assert_written_in_place(&back, &before, &content);
}

#[test]
fn a_symlink_to_a_device_is_not_written_through_and_the_message_names_the_device() {
    let dir = tempdir();
    let (disk, _) = disk_with_data(dir.path());
    let back = dir.path().join("dev.img");
    let before = random_file(&back, 8 << 20, 14);
    let dev = Loop::new(&back);
    let link = dir.path().join("lv");
    std::os::unix::fs::symlink(&dev.dev, &link).expect("symlink");
    for args in [
        os(&[&"read", &disk, &"--output", &link]),
        os(&[&"convert", &disk, &link, &"--type", &"raw"]),
    ] {
        let r = vhdkit(&args);
        let line = assert_failed_one_line(&r);
        assert!(
            line.contains("name the device itself") && line.contains(&*dev.dev.to_string_lossy()),
            "{line}"
        );
    }
    drop(dev);
    assert!(std::fs::read(&back).expect("read") == before);
}

#[test]
fn a_block_device_smaller_than_the_disk_is_refused_before_any_write() {
    let dir = tempdir();
    let (disk, _) = disk_with_data(dir.path());
    let back = dir.path().join("small.img");
    let before = random_file(&back, 4 << 20, 9);
    let dev = Loop::new(&back);

    for (what, args) in [
        ("read", os(&[&"read", &disk, &"--output", &dev.dev])),
        (
            "convert",
            os(&[&"convert", &disk, &dev.dev, &"--type", &"raw"]),
        ),
    ] {
        let r = vhdkit(&args);
        let line = assert_failed_one_line(&r);
        assert!(
            line.contains("fewer than") && line.contains(&*dev.dev.to_string_lossy()),
            "{what}: {line}"
        );
        assert!(
            !line.contains("part of the output"),
            "{what}: refused before the work, nothing written: {line}"
        );
    }
    drop(dev);
    assert!(
        std::fs::read(&back).expect("read") == before,
        "the device is untouched"
    );
}

#[test]
fn convert_to_a_vhd_onto_a_block_device_is_refused() {
    let dir = tempdir();
    let (disk, _) = disk_with_data(dir.path());
    let back = dir.path().join("dev.img");
    let before = random_file(&back, 8 << 20, 10);
    let dev = Loop::new(&back);
    for kind in ["fixed", "dynamic"] {
        let r = vhdkit(os(&[&"convert", &disk, &dev.dev, &"--type", &kind]));
        let line = assert_failed_one_line(&r);
        assert!(line.contains("--type raw"), "{kind}: {line}");
    }
    drop(dev);
    assert!(std::fs::read(&back).expect("read") == before);
}

#[test]
fn a_raw_source_device_is_never_its_own_destination() {
    let dir = tempdir();
    let back = dir.path().join("dev.img");
    let before = random_file(&back, 4 << 20, 11);
    let dev = Loop::new(&back);
    let r = vhdkit(os(&[
        &"convert",
        &dev.dev,
        &dev.dev,
        &"--type",
        &"raw",
        &"--source-format",
        &"raw",
    ]));
    let line = assert_failed_one_line(&r);
    assert!(line.contains("source"), "{line}");
    drop(dev);
    assert!(std::fs::read(&back).expect("read") == before);
}

// ---------------------------------------------------------------------------------------
// Regular files: refused, or replaced atomically with --force
// ---------------------------------------------------------------------------------------

/// Each command that writes an output, with its output path appended.
fn output_commands(disk: &Path, child: &Path) -> Vec<(&'static str, Vec<std::ffi::OsString>)> {
    vec![
        ("read", os(&[&"read", &disk, &"--output"])),
        ("convert", os(&[&"convert", &disk, &"--type", &"dynamic"])),
        (
            "merge-to",
            os(&[&"merge-to", &child, &"--type", &"dynamic"]),
        ),
    ]
}

/// `cmd` with `out` as its output (after the source for convert and merge-to).
fn with_output(cmd: &[std::ffi::OsString], out: &Path, extra: &[&str]) -> Vec<std::ffi::OsString> {
    let mut args = cmd.to_vec();
    if args[0] == "read" {
        args.push(out.into());
    } else {
        args.insert(2, out.into());
    }
    args.extend(extra.iter().map(Into::into));
    args
}

#[test]
fn an_existing_file_is_refused_without_force_and_replaced_with_it() {
    let dir = tempdir();
    let (disk, content) = disk_with_data(dir.path());
    let child = dir.path().join("child.vhd");
    create(&child, &["--type", "differencing", "--parent", p(&disk)]);
    for (what, cmd) in output_commands(&disk, &child) {
        let out = dir.path().join(format!("{what}.out"));
        std::fs::write(&out, b"the old file").expect("old");

        let r = vhdkit(with_output(&cmd, &out, &[]));
        let line = assert_failed_one_line(&r);
        assert!(line.contains("already exists"), "{what}: {line}");
        assert_eq!(std::fs::read(&out).expect("read"), b"the old file");

        let r = vhdkit(with_output(&cmd, &out, &["--force"]));
        assert_eq!(r.code, EXIT_OK, "{what} --force: {}", r.stderr);
        let got = if what == "read" {
            std::fs::read(&out).expect("read")
        } else {
            read_all(&out)
        };
        assert_bytes_eq(what, &got, &content);
    }
    let mut names = dir_names(dir.path());
    names.retain(|n| n.starts_with('.'));
    assert!(names.is_empty(), "nothing else left: {names:?}");
}

#[test]
fn force_never_follows_nor_replaces_a_symlink() {
    let dir = tempdir();
    let (disk, _) = disk_with_data(dir.path());
    let child = dir.path().join("child.vhd");
    create(&child, &["--type", "differencing", "--parent", p(&disk)]);
    let target = dir.path().join("target.txt");
    std::fs::write(&target, b"keep me").expect("target");
    let link = dir.path().join("link.out");
    std::os::unix::fs::symlink(&target, &link).expect("symlink");
    for (what, cmd) in output_commands(&disk, &child) {
        let r = vhdkit(with_output(&cmd, &link, &["--force"]));
        let line = assert_failed_one_line(&r);
        assert!(line.contains("exists"), "{what}: {line}");
        assert!(std::fs::symlink_metadata(&link).expect("link").is_symlink());
        assert_eq!(std::fs::read(&target).expect("target"), b"keep me");
    }
}

#[test]
fn force_onto_the_source_itself_is_refused() {
    let dir = tempdir();
    let (disk, _) = disk_with_data(dir.path());
    let before = std::fs::read(&disk).expect("disk");
    for args in [
        os(&[&"read", &disk, &"--output", &disk, &"--force"]),
        os(&[&"convert", &disk, &disk, &"--type", &"dynamic", &"--force"]),
    ] {
        let r = vhdkit(&args);
        let line = assert_failed_one_line(&r);
        assert!(line.contains("source"), "{line}");
        assert_eq!(std::fs::read(&disk).expect("disk"), before);
    }
}

#[test]
fn a_failed_force_replacement_leaves_the_old_file_whole() {
    // A 1 MiB tmpfs cannot hold 8 MiB of data: each copy fails part way.
    let dir = tempdir();
    let disk = dir.path().join("big.vhd");
    create(&disk, &["--type", "dynamic", "--size", "8M"]);
    write_at(&disk, 0, &Rng::new(5).bytes(8 << 20), &[]);
    let small = Mounted::new("tmpfs", "1m");
    let out = small.path().join("out.raw");
    for args in [
        os(&[&"read", &disk, &"--output", &out, &"--force"]),
        os(&[&"convert", &disk, &out, &"--type", &"raw", &"--force"]),
    ] {
        std::fs::write(&out, b"the old file").expect("old");
        let r = vhdkit(&args);
        assert_failed_one_line(&r);
        assert_eq!(std::fs::read(&out).expect("read"), b"the old file");
        assert_eq!(dir_names(&small.path()), ["out.raw"], "nothing else left");
    }
}

/// A raw image full of data that takes a while to convert.
fn big_raw(path: &Path, mib: usize) {
    use std::io::Write;
    let chunk = Rng::new(3).bytes(MIB as usize);
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).expect("create"));
    for _ in 0..mib {
        f.write_all(&chunk).expect("write");
    }
    f.flush().expect("flush");
}

#[test]
fn a_cancelled_force_replacement_leaves_the_old_file_whole() {
    let dir = tempdir();
    let src = dir.path().join("big.img");
    big_raw(&src, 128);
    let outdir = dir.path().join("out");
    std::fs::create_dir(&outdir).expect("mkdir");
    let out = outdir.join("dst.vhd");
    std::fs::write(&out, b"the old file").expect("old");

    let (code, stderr) = interrupt_with(
        "-INT",
        &os(&[
            &"convert",
            &src,
            &out,
            &"--type",
            &"dynamic",
            &"--verify",
            &"--force",
        ]),
    );

    assert_eq!(code, Some(130), "{stderr}");
    assert_eq!(std::fs::read(&out).expect("read"), b"the old file");
    assert_eq!(dir_names(&outdir), ["dst.vhd"], "nothing else left");
}

#[test]
fn a_killed_run_leaves_the_old_file_and_a_rerun_removes_its_temporary_file() {
    // ntfs-3g (FUSE) has no O_TMPFILE: the new file is written under a temporary name,
    // which a SIGKILL leaves behind; the next run for the same destination removes it.
    let dir = tempdir();
    let src = dir.path().join("big.img");
    big_raw(&src, 96);
    let fs = Mounted::new("ntfs", "");
    let out = fs.path().join("out.raw");
    std::fs::write(&out, b"the old file").expect("old");
    let args = os(&[&"convert", &src, &out, &"--type", &"raw", &"--force"]);

    let mut child = Command::new(bin())
        .args(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let temporary = |names: &[String]| names.iter().any(|n| n.ends_with(".vhdkit-tmp"));
    let start = Instant::now();
    while !temporary(&dir_names(&fs.path())) {
        assert!(
            child.try_wait().expect("try_wait").is_none(),
            "the run ended before its temporary file was seen"
        );
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "no temporary file"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    child.kill().expect("SIGKILL");
    child.wait().expect("wait");

    assert_eq!(std::fs::read(&out).expect("read"), b"the old file");
    let names = dir_names(&fs.path());
    assert!(
        temporary(&names),
        "a kill leaves the temporary file: {names:?}"
    );

    let r = vhdkit(&args);
    assert_eq!(r.code, EXIT_OK, "{}", r.stderr);
    assert_eq!(
        dir_names(&fs.path()),
        ["out.raw"],
        "the leftover is removed"
    );
    assert!(std::fs::read(&out).expect("read") == std::fs::read(&src).expect("src"));
}

// ---------------------------------------------------------------------------------------
// A file named like a VHD is a VHD
// ---------------------------------------------------------------------------------------

#[test]
fn a_file_named_like_a_vhd_without_a_footer_is_not_a_vhd_unless_raw_is_asked() {
    let dir = tempdir();
    let out = dir.path().join("out.raw");
    let other = dir.path().join("other.raw");
    random_file(&other, 1 << 20, 12);
    for name in ["junk.vhd", "junk.AVHD", "junk.vhdx", "junk.avhdx"] {
        let junk = dir.path().join(name);
        random_file(&junk, 1 << 20, 13);
        for args in [
            os(&[&"convert", &junk, &out, &"--type", &"raw", &"--json"]),
            os(&[&"compare", &junk, &other, &"--json"]),
            os(&[&"measure", &junk, &"--type", &"dynamic", &"--json"]),
        ] {
            let r = vhdkit(&args);
            assert_eq!(r.code, EXIT_FAILED, "{args:?}: {}", r.stdout_str());
            let e: serde_json::Value = serde_json::from_str(&r.stderr).expect("JSON error");
            assert_eq!(e["kind"], "not_vhd", "{args:?}: {e}");
            assert_eq!(e["hresult"], "0xA0040682", "VM_E_INVALID_HD_FILE: {e}");
            let message = e["message"].as_str().expect("message");
            assert!(
                message.contains("not a VHD") && message.contains("--source-format raw"),
                "{message}"
            );
            assert!(!out.exists());
        }
        let r = vhdkit(os(&[
            &"convert",
            &junk,
            &out,
            &"--type",
            &"raw",
            &"--source-format",
            &"raw",
        ]));
        assert_eq!(r.code, EXIT_OK, "{name}: {}", r.stderr);
        assert!(std::fs::read(&out).expect("out") == std::fs::read(&junk).expect("junk"));
        std::fs::remove_file(&out).expect("rm");
    }
    // Any other name is still taken as a raw image.
    let r = vhdkit(os(&[&"convert", &other, &out, &"--type", &"raw"]));
    assert_eq!(r.code, EXIT_OK, "{}", r.stderr);
}

// ---------------------------------------------------------------------------------------
// Permissions: a private disk gives private outputs
// ---------------------------------------------------------------------------------------

/// Runs `vhdkit ARGS` under umask 022.
fn vhdkit_umask_022(args: &[std::ffi::OsString]) -> Run {
    run_cmd(
        Command::new("sh")
            .arg("-c")
            .arg("umask 022 && exec \"$0\" \"$@\"")
            .arg(bin())
            .args(args),
    )
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .expect("metadata")
        .permissions()
        .mode()
        & 0o777
}

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

#[test]
fn outputs_of_a_private_disk_are_private_under_umask_022() {
    let dir = tempdir();
    let (disk, _) = disk_with_data(dir.path());
    chmod(&disk, 0o600);
    let child = dir.path().join("child.vhd");
    let run = |args: Vec<std::ffi::OsString>| {
        let r = vhdkit_umask_022(&args);
        assert_eq!(r.code, EXIT_OK, "{args:?}: {}", r.stderr);
    };
    run(os(&[
        &"create",
        &child,
        &"--type",
        &"differencing",
        &"--parent",
        &disk,
    ]));
    assert_eq!(mode(&child), 0o600, "create --type differencing");

    let old = dir.path().join("old.raw");
    std::fs::write(&old, b"old").expect("old");
    chmod(&old, 0o644);
    let outputs = [
        (
            "convert dynamic",
            "c.vhd",
            os(&[&"convert", &disk, &"--type", &"dynamic"]),
        ),
        (
            "convert raw",
            "c.raw",
            os(&[&"convert", &disk, &"--type", &"raw"]),
        ),
        (
            "merge-to",
            "m.vhd",
            os(&[&"merge-to", &child, &"--type", &"fixed"]),
        ),
        ("read --output", "r.raw", os(&[&"read", &disk, &"--output"])),
        (
            "read --force",
            "old.raw",
            os(&[&"read", &disk, &"--output"]),
        ),
    ];
    for (what, name, cmd) in outputs {
        let out = dir.path().join(name);
        let extra: &[&str] = if name == "old.raw" { &["--force"] } else { &[] };
        run(with_output(&cmd, &out, extra));
        assert_eq!(mode(&out), 0o600, "{what}");
    }
}

#[test]
fn an_output_gets_the_bits_every_file_of_its_chain_allows() {
    let dir = tempdir();
    let (disk, _) = disk_with_data(dir.path());
    let child = dir.path().join("child.vhd");
    create(&child, &["--type", "differencing", "--parent", p(&disk)]);
    // A group-readable parent under a world-readable child: the copy holds the
    // parent's bytes, so it is no more readable than the parent.
    chmod(&disk, 0o640);
    chmod(&child, 0o644);
    let flat = dir.path().join("flat.vhd");
    let r = vhdkit_umask_022(&os(&[&"merge-to", &child, &flat, &"--type", &"dynamic"]));
    assert_eq!(r.code, EXIT_OK, "{}", r.stderr);
    assert_eq!(mode(&flat), 0o640);
    // A world-readable disk still gives world-readable copies (0666 under umask 022).
    chmod(&disk, 0o644);
    let copy = dir.path().join("copy.vhd");
    let r = vhdkit_umask_022(&os(&[&"convert", &disk, &copy, &"--type", &"dynamic"]));
    assert_eq!(r.code, EXIT_OK, "{}", r.stderr);
    assert_eq!(mode(&copy), 0o644);
}

#[test]
fn serve_undo_disk_of_a_private_disk_is_private() {
    let dir = tempdir();
    let (disk, _) = disk_with_data(dir.path());
    chmod(&disk, 0o600);
    let undo = dir.path().join("undo.vhd");
    let socket = dir.path().join("nbd.sock");
    let mut server = Command::new("sh")
        .arg("-c")
        .arg("umask 022 && exec \"$0\" \"$@\"")
        .arg(bin())
        .args(os(&[
            &"serve",
            &disk,
            &"--undo",
            &undo,
            &"--socket",
            &socket,
        ]))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn serve");
    let start = Instant::now();
    // The listener is bound before the undo disk is made (a failed bind leaves nothing):
    // wait for both.
    while !(socket.exists() && undo.exists()) {
        if let Some(status) = server.try_wait().expect("try_wait") {
            let mut err = String::new();
            let _ =
                std::io::Read::read_to_string(&mut server.stderr.take().expect("stderr"), &mut err);
            panic!("serve ended: {status}: {err}");
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "serve never listened"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let undo_mode = mode(&undo);
    let stopped = Command::new("kill")
        .args(["-TERM", &server.id().to_string()])
        .status()
        .expect("kill");
    assert!(stopped.success());
    let status = server.wait().expect("wait");
    assert!(status.success(), "serve: {status}");
    assert_eq!(undo_mode, 0o600, "the undo disk receives the VM's writes");
}
