//! `check --for azure` and `convert --align`: the rules Azure applies to an uploaded VHD
//! (docs/format.md, "Azure"), and a conversion that meets them in one step — its content
//! judged by qemu-img and libvhdi: the original bytes, then zeros.

mod common;

use std::path::Path;
use std::process::Command;

use common::*;
use serde_json::Value;

fn p(path: &Path) -> &str {
    path.to_str().expect("UTF-8 path")
}

/// `check PATH --for azure --json`: the document, after checking the exit code agrees
/// with it (0 when it conforms, 1 when a rule fails).
fn azure(path: &Path) -> Value {
    let r = vhdkit(["check", p(path), "--for", "azure", "--json"]);
    assert_no_panic(&r);
    let v = r.json();
    assert_eq!(v["schema"], 1, "{v}");
    assert_eq!(v["for"], "azure", "{v}");
    assert_eq!(v["path"], p(path), "{v}");
    let rules = v["rules"].as_array().expect("rules");
    let failed: Vec<&str> = rules
        .iter()
        .filter(|r| r["status"] == "fail")
        .map(|r| r["id"].as_str().expect("id"))
        .collect();
    assert_eq!(v["failed_count"], failed.len(), "{v}");
    assert_eq!(v["conforms"], failed.is_empty(), "{v}");
    let want = if failed.is_empty() {
        EXIT_OK
    } else {
        EXIT_DIFFERENT
    };
    assert_eq!(r.code, want, "{v}");
    for r in rules {
        assert!(r["message"].as_str().is_some_and(|m| !m.is_empty()), "{r}");
        assert!(r["source"].as_str().is_some_and(|m| !m.is_empty()), "{r}");
    }
    v
}

/// The ids of the rules that failed.
fn failed(v: &Value) -> Vec<String> {
    v["rules"]
        .as_array()
        .expect("rules")
        .iter()
        .filter(|r| r["status"] == "fail")
        .map(|r| r["id"].as_str().expect("id").to_owned())
        .collect()
}

fn status<'a>(v: &'a Value, id: &str) -> &'a str {
    v["rules"]
        .as_array()
        .expect("rules")
        .iter()
        .find(|r| r["id"] == id)
        .and_then(|r| r["status"].as_str())
        .unwrap_or_else(|| panic!("no rule {id} in {v}"))
}

const ODD: u64 = 5_000_704;

/// A raw image of `size` random bytes; returns them.
fn raw(path: &Path, size: u64, seed: u64) -> Vec<u8> {
    let data = Rng::new(seed).bytes(size as usize);
    std::fs::write(path, &data).expect("write raw");
    data
}

/// What qemu-img and libvhdi read of `disk` is `want`: `original` then zeros.
fn assert_readers_see(disk: &Path, original: &[u8], size: u64) {
    assert!(have(Tool::QemuImg) && have(Tool::Pyvhdi));
    assert_eq!(qemu_size(disk), size, "qemu-img's virtual size");
    assert_eq!(pyvhdi_size(disk), size, "libvhdi's media size");
    let mut want = original.to_vec();
    want.resize(size as usize, 0);
    assert_bytes_eq("qemu-img's read", &qemu_read_all(disk), &want);
    assert_bytes_eq("libvhdi's read", &pyvhdi_read_all(&[disk]), &want);
}

/// A dynamic disk fails "fixed" (and, as its file holds a header and a BAT, the length
/// rule); its footer and size pass.
#[test]
fn a_dynamic_disk_fails_the_fixed_rule() {
    let dir = tempdir();
    let d = dir.path().join("d.vhd");
    create(&d, &["--type", "dynamic", "--size", "32M"]);
    let v = azure(&d);
    assert_eq!(failed(&v), ["fixed", "file-length"], "{v}");
    assert_eq!(v["disk_type"], "dynamic");
    let diff = dir.path().join("c.vhd");
    create(&diff, &["--type", "differencing", "--parent", p(&d)]);
    let v = azure(&diff);
    assert_eq!(status(&v, "fixed"), "fail", "{v}");
    // The text form: one line per rule, then the verdict; exit 1.
    let r = vhdkit(["check", p(&d), "--for", "azure"]);
    assert_eq!(r.code, EXIT_DIFFERENT, "{}", r.stderr);
    let out = r.stdout_str();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 9, "{out}");
    assert!(lines[2].starts_with("fail  fixed"), "{out}");
    assert!(lines[2].contains("dynamic"), "{out}");
    assert!(lines[8].ends_with("2 of 8 Azure rules failed"), "{out}");
}

/// A 5000704-byte fixed disk fails the MiB rule; converting it with `--align 1M` passes
/// it, and the readers see the original bytes, then zeros. (It stays under the 20 MiB a
/// direct upload takes: that rule still fails, and only that one.)
#[test]
fn align_fixes_the_mib_rule() {
    let dir = tempdir();
    let src = dir.path().join("src.raw");
    let data = raw(&src, ODD, 1);
    let f = dir.path().join("f.vhd");
    vhdkit(["convert", p(&src), p(&f), "--type", "fixed"]).ok();
    let v = azure(&f);
    assert_eq!(status(&v, "size-mib"), "fail", "{v}");
    assert_eq!(v["virtual_size"], ODD);
    assert_eq!(failed(&v), ["size-mib", "size-min"], "{v}");
    let a = dir.path().join("a.vhd");
    vhdkit(["convert", p(&f), p(&a), "--type", "fixed", "--align", "1M"]).ok();
    let v = azure(&a);
    assert_eq!(status(&v, "size-mib"), "pass", "{v}");
    assert_eq!(failed(&v), ["size-min"], "{v}");
    assert_eq!(v["virtual_size"], 5 * MIB);
    assert_eq!(std::fs::metadata(&a).expect("stat").len(), 5 * MIB + 512);
    assert_readers_see(&a, &data, 5 * MIB);
}

/// `convert --type fixed --align 1M` of a dynamic disk that is not a whole number of MiB
/// makes a file that meets every rule, in one step; so does `merge-to` of a chain.
#[test]
fn convert_with_align_makes_a_conforming_file() {
    let dir = tempdir();
    let size = 24 * MIB + ODD; // over the minimum, not a whole number of MiB
    let src = dir.path().join("src.raw");
    let data = raw(&src, size, 2);
    let d = dir.path().join("d.vhd");
    vhdkit(["convert", p(&src), p(&d), "--type", "dynamic"]).ok();
    let v = azure(&d);
    assert_eq!(failed(&v), ["fixed", "file-length", "size-mib"], "{v}");
    let out = dir.path().join("azure.vhd");
    vhdkit([
        "convert",
        p(&d),
        p(&out),
        "--type",
        "fixed",
        "--align",
        "1M",
    ])
    .ok();
    let v = azure(&out);
    assert!(failed(&v).is_empty(), "{v}");
    assert!(
        v["rules"]
            .as_array()
            .expect("rules")
            .iter()
            .all(|r| r["status"] == "pass"),
        "{v}"
    );
    let aligned = size.div_ceil(MIB) * MIB;
    assert_eq!(v["virtual_size"], aligned);
    assert_eq!(v["file_size"], aligned + 512);
    assert_readers_see(&out, &data, aligned);
    let r = vhdkit(["check", p(&out), "--for", "azure"]);
    assert_eq!(r.code, EXIT_OK);
    assert!(
        r.stdout_str().contains("meets every Azure rule"),
        "{}",
        r.stdout_str()
    );

    // merge-to of a chain over that disk.
    let child = dir.path().join("child.vhd");
    create(&child, &["--type", "differencing", "--parent", p(&d)]);
    let patch = pattern(3, 10_000);
    write_at(&child, 1_000_000, &patch, &[]);
    let mut want = data.clone();
    want[1_000_000..1_010_000].copy_from_slice(&patch);
    let merged = dir.path().join("merged.vhd");
    vhdkit([
        "merge-to",
        p(&child),
        p(&merged),
        "--type",
        "fixed",
        "--align",
        "1M",
        "--verify",
    ])
    .ok();
    assert!(failed(&azure(&merged)).is_empty());
    assert_readers_see(&merged, &want, aligned);
}

/// qemu-img's fixed VHDs: without `force_size` its current size is the CHS product
/// (here not a whole number of MiB: the MiB rule fails); with it, creator `qem2` and a
/// geometry that does not match the size, which Azure does not look at: every rule
/// passes.
#[test]
fn qemu_quirks_do_not_matter_but_its_chs_size_does() {
    assert!(have(Tool::QemuImg));
    let dir = tempdir();
    let q = dir.path().join("chs.vhd");
    let r = run_cmd(
        Command::new("qemu-img")
            .args(["create", "-q", "-f", "vpc", "-o", "subformat=fixed"])
            .arg(&q)
            .arg("24M"),
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    let v = azure(&q);
    assert_eq!(failed(&v), ["size-mib"], "{v}");
    let q2 = dir.path().join("forced.vhd");
    let r = run_cmd(
        Command::new("qemu-img")
            .args([
                "create",
                "-q",
                "-f",
                "vpc",
                "-o",
                "subformat=fixed,force_size",
            ])
            .arg(&q2)
            .arg("24M"),
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    let info = vhdkit(["info", p(&q2), "--json"]).ok().json();
    assert_eq!(info["creator_app"], "qem2");
    assert_ne!(info["geometry"]["capacity"], info["virtual_size"]);
    assert!(failed(&azure(&q2)).is_empty());
    // And vhdkit's --align fixes qemu's CHS-sized disk.
    let fixed = dir.path().join("fixed.vhd");
    vhdkit([
        "convert",
        p(&q),
        p(&fixed),
        "--type",
        "fixed",
        "--align",
        "1M",
    ])
    .ok();
    assert!(failed(&azure(&fixed)).is_empty());
}

/// A file that is not a VHD, a damaged checksum, bytes between the data and the
/// footer: each fails its rule.
#[test]
fn footer_checksum_and_length_rules() {
    let dir = tempdir();
    let r = dir.path().join("plain.raw");
    raw(&r, 32 * MIB, 4);
    let v = azure(&r);
    assert_eq!(status(&v, "footer"), "fail");
    assert_eq!(v["failed_count"], 7, "{v}");
    assert!(v["virtual_size"].is_null() && v["disk_type"].is_null());

    let f = dir.path().join("f.vhd");
    create(&f, &["--type", "fixed", "--size", "32M", "--sparse"]);
    assert!(failed(&azure(&f)).is_empty());
    let mut bytes = std::fs::read(&f).expect("read");
    let footer_at = bytes.len() - 512;
    // A byte of the footer's reserved area changed without its checksum.
    bytes[footer_at + 200] ^= 0x40;
    let damaged = dir.path().join("damaged.vhd");
    std::fs::write(&damaged, &bytes).expect("write");
    assert_eq!(failed(&azure(&damaged)), ["checksum"]);
    bytes[footer_at + 200] ^= 0x40;
    // 512 bytes of padding between the data and the footer.
    let footer = bytes.split_off(footer_at);
    bytes.extend_from_slice(&[0u8; 512]);
    bytes.extend_from_slice(&footer);
    let padded = dir.path().join("padded.vhd");
    std::fs::write(&padded, &bytes).expect("write");
    assert_eq!(failed(&azure(&padded)), ["file-length"]);
}

/// The OS-disk limit warns without failing: a 5000 GiB data disk conforms.
#[test]
fn the_os_disk_limit_only_warns() {
    let dir = tempdir();
    let f = dir.path().join("big.vhd");
    // Larger than vhdkit creates: the data area a hole, the footer written by hand.
    let size = 5000 * GIB;
    let file = std::fs::File::create(&f).expect("create");
    file.set_len(size).expect("sparse");
    let footer = vhdkit_format::spec::Footer::new(vhdkit_format::spec::DiskType::Fixed, size);
    vhdkit_platform::FileExt::write_all_at(&file, &footer.encode(), size).expect("footer");
    drop(file);
    let v = azure(&f);
    assert!(failed(&v).is_empty(), "{v}");
    assert_eq!(status(&v, "os-disk-size"), "warn");
    let r = vhdkit(["check", p(&f), "--for", "azure"]);
    assert_eq!(r.code, EXIT_OK);
    assert!(
        r.stdout_str().contains("warn  os-disk-size"),
        "{}",
        r.stdout_str()
    );
}

#[test]
fn usage_errors() {
    let dir = tempdir();
    let f = dir.path().join("f.vhd");
    create(&f, &["--type", "fixed", "--size", "32M", "--sparse"]);
    for args in [
        &["check", p(&f), "--for", "azure", "--repair"][..],
        &["check", p(&f), "--for", "aws"][..],
        &["convert", p(&f), "x.vhd", "--type", "fixed", "--align", "0"][..],
        &[
            "convert",
            p(&f),
            "x.vhd",
            "--type",
            "fixed",
            "--align",
            "100",
        ][..],
    ] {
        let r = vhdkit(args);
        assert_eq!(r.code, EXIT_USAGE, "{args:?}: {}", r.stderr);
    }
    let r = vhdkit(["check", "nope.vhd", "--for", "azure", "--json"]);
    assert_failed_json(&r, EXIT_FAILED);
}
