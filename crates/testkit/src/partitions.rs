//! Real partition tables, written by util-linux's `sfdisk` (the fdisk package): what a
//! user's disk image holds, not a table the suites build by hand.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use crate::run::need;

/// Partitions the image file `image` with `sfdisk`, `script` in sfdisk's input format
/// (`"label: gpt\n1MiB,30MiB,L\n"`). A missing sfdisk fails the test.
#[track_caller]
pub fn sfdisk(image: &Path, script: &str) {
    need("sfdisk", &["--version"]);
    let mut c = Command::new("sfdisk")
        .arg("--quiet")
        .arg(image)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("sfdisk");
    c.stdin
        .take()
        .expect("stdin")
        .write_all(script.as_bytes())
        .expect("script");
    assert!(
        c.wait().expect("wait").success(),
        "sfdisk failed: {script:?}"
    );
}

/// The partitions of `image` as `sfdisk --dump` lists them: (start, length) in bytes,
/// in table order.
#[track_caller]
pub fn sfdisk_partitions(image: &Path) -> Vec<(u64, u64)> {
    need("sfdisk", &["--version"]);
    let out = Command::new("sfdisk")
        .arg("--dump")
        .arg(image)
        .output()
        .expect("sfdisk --dump");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let field = |line: &str, key: &str| -> Option<u64> {
        let at = line.find(key)? + key.len();
        let rest = line[at..].trim_start();
        let end = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        rest[..end].parse().ok()
    };
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| Some((field(l, "start=")? * 512, field(l, "size=")? * 512)))
        .collect()
}
