//! Nothing is taken for raw without being told: qcow2, VMDK and VDI files made by
//! qemu-img, and a VHD whose footers are both damaged, are refused by every command that
//! opens an image (naming what the file is), and accepted as raw bytes with
//! `--source-format raw` — as a VHDX file is (which is otherwise read as VHDX:
//! `tests/vhdx_cli.rs`).

mod common;

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

fn qemu_create(dir: &Path, fmt: &str) -> PathBuf {
    assert!(have(Tool::QemuImg));
    let p = dir.join(format!("disk.{fmt}"));
    let r = run_cmd(
        Command::new("qemu-img")
            .args(["create", "-q", "-f", fmt])
            .arg(&p)
            .arg("4M"),
    );
    assert_eq!(r.code, 0, "qemu-img create -f {fmt}: {}", r.stderr);
    p
}

fn damaged_vhd(dir: &Path) -> PathBuf {
    let p = dir.join("damaged.vhd");
    create(&p, &["--type", "dynamic", "--size", "4M"]);
    let mut b = std::fs::read(&p).expect("read");
    let n = b.len();
    // Both footers unusable (cookies gone); the dynamic header is still there.
    b[n - 512..n - 504].copy_from_slice(b"xxxxxxxx");
    b[..8].copy_from_slice(b"xxxxxxxx");
    std::fs::write(&p, b).expect("write");
    p
}

fn cases(dir: &Path) -> Vec<(PathBuf, &'static str)> {
    vec![
        (qemu_create(dir, "qcow2"), "qcow2"),
        (qemu_create(dir, "vmdk"), "VMDK"),
        (qemu_create(dir, "vdi"), "VDI"),
        (damaged_vhd(dir), "a VHD whose footer is damaged"),
    ]
}

#[test]
fn other_formats_are_refused_by_every_command_naming_what_they_are() {
    let dir = tempdir();
    for (p, name) in cases(dir.path()) {
        let out = dir.path().join("out.vhd");
        let runs: Vec<Vec<&OsStr>> = vec![
            vec![
                "convert".as_ref(),
                p.as_os_str(),
                out.as_os_str(),
                "--type".as_ref(),
                "dynamic".as_ref(),
            ],
            vec!["compare".as_ref(), p.as_os_str(), p.as_os_str()],
            vec!["info".as_ref(), p.as_os_str()],
            vec!["read".as_ref(), p.as_os_str()],
            vec!["map".as_ref(), p.as_os_str()],
        ];
        for a in runs {
            let cmd = a[0].to_string_lossy().to_string();
            let r = vhdkit(a);
            let line = assert_failed_one_line(&r);
            assert!(line.contains(name), "{cmd} of {name}: {line}");
        }
        assert!(!out.exists(), "no output for {name}");
    }
}

#[test]
fn source_format_raw_takes_the_bytes_as_they_are() {
    let dir = tempdir();
    let mut all = cases(dir.path());
    all.push((qemu_create(dir.path(), "vhdx"), "VHDX"));
    for (p, name) in all {
        let out = dir.path().join(format!("{}.raw", name.replace(' ', "-")));
        let r = vhdkit([
            "convert".as_ref(),
            p.as_os_str(),
            out.as_os_str(),
            "--type".as_ref(),
            "raw".as_ref(),
            "--source-format".as_ref(),
            "raw".as_ref(),
        ]);
        if std::fs::metadata(&p).expect("stat").len() % 512 != 0 {
            // A raw disk is whole sectors: say so rather than guess.
            assert_eq!(r.code, EXIT_FAILED, "{name}");
            continue;
        }
        assert_eq!(r.code, EXIT_OK, "{name}: {}", r.stderr);
        assert_eq!(
            std::fs::read(&out).expect("out"),
            std::fs::read(&p).expect("in"),
            "{name}"
        );
        let r = vhdkit([
            "compare".as_ref(),
            p.as_os_str(),
            out.as_os_str(),
            "--source-format".as_ref(),
            "raw".as_ref(),
        ]);
        assert_eq!(r.code, EXIT_OK, "{name}: {}", r.stderr);
    }
}
