//! A real file system through `vhdkit serve`: nbdfuse exposes the export as a file,
//! mkfs.ext4 formats it, a loop mount writes files; after unmount and a clean stop the
//! VHD checks clean, libvhdi (pyvhdi) reads the same bytes as vhdkit, e2fsck finds the
//! file system clean and debugfs reads the files back. Needs root (loop mount), FUSE,
//! nbdfuse, e2fsprogs and pyvhdi: a missing one fails the test.

// Over Unix domain sockets and NBD clients: Unix only.
#![cfg(unix)]

mod serve_support;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serve_support::*;

/// Unmounts `dir` (loop mount or FUSE) even when the test fails half way.
struct Mounted<'a> {
    dir: &'a Path,
    fuse: bool,
}

impl Drop for Mounted<'_> {
    fn drop(&mut self) {
        let (cmd, args): (&str, &[&str]) = if self.fuse {
            ("fusermount3", &["-u"])
        } else {
            ("umount", &[])
        };
        let _ = Command::new(cmd).args(args).arg(self.dir).status();
    }
}

fn wait_for(path: &Path, nbdfuse: &mut Child) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !path.exists() {
        if let Ok(Some(s)) = nbdfuse.try_wait() {
            panic!("nbdfuse exited early: {s}");
        }
        assert!(
            Instant::now() < deadline,
            "nbdfuse did not expose {}",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn serve_ext4_through_nbdfuse_and_a_loop_mount_checks_clean() {
    need("nbdfuse", &["--version"]);
    need("mkfs.ext4", &["-V"]);
    need("e2fsck", &["-V"]);
    need("/usr/bin/python3", &["-c", "import pyvhdi"]);
    let dir = tempfile::tempdir().expect("temp dir");
    let disk = dir.path().join("fs.vhd");
    vhdkit([
        "create".as_ref(),
        disk.as_os_str(),
        "--type".as_ref(),
        "dynamic".as_ref(),
        "--size".as_ref(),
        "64M".as_ref(),
    ]);
    let served = serve([disk.as_os_str()]);

    let fuse_dir = dir.path().join("fuse");
    let mnt = dir.path().join("mnt");
    std::fs::create_dir(&fuse_dir).expect("mkdir");
    std::fs::create_dir(&mnt).expect("mkdir");
    let mut nbdfuse = Command::new("nbdfuse")
        .arg(&fuse_dir)
        .arg(&served.uri)
        .stdin(Stdio::null())
        .spawn()
        .expect("starting nbdfuse");
    let file = fuse_dir.join("nbd");
    wait_for(&file, &mut nbdfuse);
    let files: Vec<(String, Vec<u8>)> = (0..20)
        .map(|i| {
            (
                format!("f{i}.bin"),
                bytes(100 + i, 10_000 + 97_000 * i as usize),
            )
        })
        .collect();
    {
        let _fuse = Mounted {
            dir: &fuse_dir,
            fuse: true,
        };
        run(Command::new("mkfs.ext4").args(["-q", "-F"]).arg(&file));
        // Loop devices are found and attached under one lock shared by every test that
        // attaches them (`losetup -f` in parallel processes can race for a device).
        run(Command::new("flock")
            .args(["/tmp/vhdkit-tests-losetup.lock", "mount", "-o", "loop"])
            .arg(&file)
            .arg(&mnt));
        {
            let _mnt = Mounted {
                dir: &mnt,
                fuse: false,
            };
            std::fs::create_dir(mnt.join("sub")).expect("mkdir in the file system");
            for (name, data) in &files {
                std::fs::write(mnt.join("sub").join(name), data).expect("writing a file");
            }
            // Overwrite and delete some, so that trims and rewrites happen too.
            std::fs::remove_file(mnt.join("sub/f3.bin")).expect("rm");
            run(&mut Command::new("sync"));
            let _ = Command::new("fstrim").arg(&mnt).status();
        }
    }
    let status = nbdfuse.wait().expect("waiting for nbdfuse");
    assert!(status.success(), "nbdfuse failed: {status}");
    let ended = served.stop().clean();
    assert!(ended.summary["bytes_written"].as_u64().expect("n") > 1 << 20);

    check_clean(&disk);
    let data = read_all(&disk);
    // libvhdi reads the same bytes.
    let py = "import pyvhdi,sys,hashlib\nf=pyvhdi.file()\nf.open(sys.argv[1])\nh=hashlib.sha256()\nn=f.get_media_size()\nwhile n>0:\n    b=f.read_buffer(min(n,1<<20))\n    h.update(b)\n    n-=len(b)\nprint(h.hexdigest())";
    let got = run(Command::new("/usr/bin/python3").args(["-c", py]).arg(&disk));
    let raw = dir.path().join("fs.raw");
    std::fs::write(&raw, &data).expect("writing the raw copy");
    let sha = run(Command::new("sha256sum").arg(&raw));
    let sha = String::from_utf8_lossy(&sha);
    let sha = sha.split_whitespace().next().expect("hash");
    assert_eq!(
        String::from_utf8_lossy(&got).trim(),
        sha,
        "pyvhdi reads other bytes"
    );

    run(Command::new("e2fsck").arg("-fn").arg(&raw));
    for (name, data) in &files {
        let path = format!("/sub/{name}");
        let o = Command::new("debugfs")
            .args(["-R", &format!("cat {path}")])
            .arg(&raw)
            .stderr(Stdio::null())
            .output()
            .expect("debugfs");
        if name == "f3.bin" {
            assert!(o.stdout.is_empty(), "a deleted file is still there");
        } else {
            assert!(o.stdout == *data, "{path} reads back other bytes");
        }
    }
}
