//! What people read: `info` sizes as `qemu-img info` writes them (`1 GiB (1073741824
//! bytes)`), the real file size of an image missing its end footer, `1 block` in the
//! singular.

mod common;

use std::ffi::OsStr;
use std::path::Path;

use common::*;

fn info_text(disk: &Path) -> String {
    vhdkit(["info".as_ref(), disk.as_os_str()])
        .ok()
        .stdout_str()
}

/// The value of `label:` in `info`'s text.
fn field<'a>(text: &'a str, label: &str) -> &'a str {
    text.lines()
        .find_map(|l| l.strip_prefix(label))
        .map(|v| v.trim_start_matches(':').trim())
        .unwrap_or_else(|| panic!("no {label:?} line in:\n{text}"))
}

// --- info ------------------------------------------------------------------------------

#[test]
fn info_text_shows_sizes_human_readable_beside_the_bytes() {
    let dir = tempdir();
    let disk = dir.path().join("d.vhd");
    create(&disk, &["--type", "dynamic", "--size", "1G"]);

    let text = info_text(&disk);

    assert_eq!(field(&text, "virtual size"), "1 GiB (1073741824 bytes)");
    assert_eq!(field(&text, "block size"), "2 MiB (2097152 bytes)");
    let file = std::fs::metadata(&disk).expect("meta").len();
    assert_eq!(
        field(&text, "file size"),
        format!("{} KiB ({file} bytes)", file / 1024)
    );
    assert!(
        field(&text, "geometry (CHS)").ends_with("(1073479680 bytes)"),
        "{text}"
    );
}

#[test]
fn info_text_uses_qemu_img_rounding_for_odd_sizes() {
    let disk = fixture("vhdkit/vhdkit-dynamic-5000704.vhd");

    let text = info_text(&disk);

    assert_eq!(field(&text, "virtual size"), "4.77 MiB (5000704 bytes)");
}

#[test]
fn info_of_an_image_missing_its_end_footer_shows_the_real_file_size() {
    let disk = fixture("malformed/footer-missing.vhd");
    let real = std::fs::metadata(&disk).expect("meta").len();

    let text = info_text(&disk);
    let json = info(&disk);

    assert_eq!(field(&text, "footer used"), "copy", "{text}");
    assert!(
        field(&text, "file size").ends_with(&format!("({real} bytes)")),
        "{text}"
    );
    assert_eq!(json["file_size"], real, "{json}");
    assert_eq!(json["chain"][0]["file_size"], real, "{json}");
}

#[test]
fn info_chain_says_1_block_in_the_singular() {
    let dir = tempdir();
    let base = dir.path().join("base.vhd");
    create(&base, &["--type", "dynamic", "--size", "8M"]);
    write_at(&base, 0, b"one block", &[]);
    let child = dir.path().join("child.vhd");
    create(&child, &["--type", "differencing", "--parent", "base.vhd"]);

    let text = info_text(&child);

    assert!(text.contains("(dynamic, 1 block allocated)"), "{text}");
    assert!(
        text.contains("(differencing, 0 blocks allocated)"),
        "{text}"
    );
}

#[test]
fn operation_summary_says_1_block_in_the_singular_and_human_sizes() {
    let dir = tempdir();
    let base = dir.path().join("base.vhd");
    create(&base, &["--type", "dynamic", "--size", "8M"]);
    let child = dir.path().join("child.vhd");
    create(&child, &["--type", "differencing", "--parent", "base.vhd"]);
    write_at(&child, 0, &pattern(2, 1024), &[]);

    let r = vhdkit([
        "merge".as_ref(),
        child.as_os_str(),
        "--progress".as_ref(),
        OsStr::new("none"),
    ])
    .ok();

    let line = r.stdout_str();
    assert!(line.contains(": 1 block, "), "{line}");
    // However many bytes the merge moved (whole sectors or granules), in both forms.
    let (human, rest) = line
        .split_once(": 1 block, ")
        .map(|(_, r)| r.split_once(" (").expect("a size and its bytes"))
        .expect("1 block");
    assert!(human.ends_with("B"), "{line}");
    assert!(rest.contains(" bytes) merged into the parent"), "{line}");
}
