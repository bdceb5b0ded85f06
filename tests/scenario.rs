//! One CLI scenario on every platform: create, write, a differencing child, info
//! --json, convert (fixed, dynamic, raw), merge, compact, check — each result read back
//! byte for byte through `vhdkit read`; and the VHDX job: a checkpoint chain (`.vhdx`
//! and `.avhdx`, written in place through the VHDX log) to an Azure-ready fixed VHD and
//! to a dynamic VHDX. CI runs it natively on Linux and, built for
//! Windows, under wine (`.ci/windows/run-tests`); with `VHDKIT_SCENARIO_OUT` set, the
//! images it wrote are copied there, with the bytes they must hold, so that the Linux
//! build and qemu-img read back what the Windows build wrote.

mod common;

use std::path::Path;

use common::*;

const MIB: u64 = 1 << 20;
const SIZE: u64 = 8 * MIB;

/// Bytes that differ at every offset (a seed per run of writes).
fn pattern(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) | 1)
        .collect()
}

fn put(model: &mut [u8], at: u64, data: &[u8]) {
    model[at as usize..at as usize + data.len()].copy_from_slice(data);
}

fn ok(args: &[&str]) -> Run {
    vhdkit(args).ok()
}

#[test]
fn create_write_child_convert_merge_compact_check() {
    let dir = tempfile::tempdir().expect("tmp");
    let at = |name: &str| dir.path().join(name);
    let (base, child) = (at("base.vhd"), at("child.vhd"));
    let mut model = vec![0u8; SIZE as usize];

    ok(&["create", p(&base), "--type", "dynamic", "--size", "8M"]);
    for (seed, off, len) in [(1u8, 0u64, 70_000usize), (2, 3 * MIB + 512, 4096)] {
        let data = pattern(seed, len);
        write_at(&base, off, &data, &[]);
        put(&mut model, off, &data);
    }
    ok(&[
        "create",
        p(&child),
        "--type",
        "differencing",
        "--parent",
        p(&base),
    ]);
    let data = pattern(3, 200_000);
    write_at(&child, MIB - 1000, &data, &[]);
    put(&mut model, MIB - 1000, &data);

    let i = info(&child);
    assert_eq!(i["disk_type"], "differencing", "{i}");
    assert_eq!(i["virtual_size"], SIZE, "{i}");
    assert_eq!(read_all(&child), model, "the child's view");

    for (name, kind) in [("fixed.vhd", "fixed"), ("dynamic.vhd", "dynamic")] {
        ok(&["convert", p(&child), p(&at(name)), "--type", kind]);
        assert_eq!(read_all(&at(name)), model, "{name}");
    }
    ok(&["convert", p(&child), p(&at("flat.raw")), "--type", "raw"]);
    assert_eq!(std::fs::read(at("flat.raw")).expect("raw"), model);
    let converted = model.clone();
    // An output is never replaced.
    let again = vhdkit(["convert", p(&child), p(&at("fixed.vhd")), "--type", "fixed"]);
    assert_eq!(again.code, EXIT_FAILED, "{}", again.stderr);

    // Zeros over the first block, then merge and compact: the block goes.
    write_at(&child, 0, &vec![0u8; 2 * MIB as usize], &[]);
    put(&mut model, 0, &vec![0u8; 2 * MIB as usize]);
    ok(&["merge", p(&child), "--delete-child"]);
    assert!(!child.exists(), "merged and deleted");
    assert_eq!(read_all(&base), model, "the merged parent");
    let before = std::fs::metadata(&base).expect("meta").len();
    ok(&["compact", p(&base)]);
    let after = std::fs::metadata(&base).expect("meta").len();
    assert!(
        after < before,
        "compact released the zero block: {before} -> {after}"
    );
    assert_eq!(read_all(&base), model, "compacted");
    let c = vhdkit(["check", p(&base), "--json"]).ok().json();
    assert_eq!(c["clean"], true, "{c}");
    assert_eq!(c["problem_count"], 0, "{c}");

    if let Some(out) = std::env::var_os("VHDKIT_SCENARIO_OUT") {
        export(dir.path(), Path::new(&out), &model, &converted);
    }
}

#[test]
fn vhdx_checkpoint_chain_to_azure_and_to_vhdx() {
    let dir = tempfile::tempdir().expect("tmp");
    let at = |name: &str| dir.path().join(name);
    let (base, child) = (at("base.vhdx"), at("child.avhdx"));
    // Azure takes no disk under 20 MiB.
    let mut model = vec![0u8; 24 * MIB as usize];

    ok(&[
        "create",
        p(&base),
        "--type",
        "dynamic",
        "--size",
        "24M",
        "--block-size",
        "1M",
    ]);
    let data = pattern(4, 1_500_000);
    write_at(&base, 4096, &data, &[]);
    put(&mut model, 4096, &data);
    ok(&[
        "create",
        p(&child),
        "--type",
        "differencing",
        "--parent",
        p(&base),
    ]);
    let data = pattern(5, 70_000);
    write_at(&child, MIB - 512, &data, &[]);
    put(&mut model, MIB - 512, &data);
    let i = info(&child);
    assert_eq!(i["container"], "vhdx", "{i}");
    assert_eq!(i["disk_type"], "differencing", "{i}");
    assert_eq!(read_all(&child), model, "the checkpoint's view");

    let azure = at("azure.vhd");
    ok(&[
        "convert",
        p(&child),
        p(&azure),
        "--type",
        "fixed",
        "--align",
        "1M",
    ]);
    let c = vhdkit(["check", p(&azure), "--for", "azure", "--json"])
        .ok()
        .json();
    assert_eq!(c["conforms"], true, "{c}");
    assert_eq!(read_all(&azure), model, "azure.vhd");
    let flat = at("flat.vhdx");
    ok(&["convert", p(&child), p(&flat), "--type", "dynamic"]);
    assert_eq!(info(&flat)["container"], "vhdx");
    assert_eq!(read_all(&flat), model, "flat.vhdx");

    if let Some(out) = std::env::var_os("VHDKIT_SCENARIO_OUT") {
        let out = Path::new(&out);
        std::fs::create_dir_all(out).expect("mkdir");
        for name in ["azure.vhd", "flat.vhdx"] {
            std::fs::copy(at(name), out.join(name)).expect("copy");
        }
        std::fs::write(out.join("vhdx-chain.raw"), &model).expect("expected bytes");
    }
}

/// Copies the images and the bytes they hold to `out` for the read-back on Linux:
/// `base.vhd` (merged and compacted) holds `base.raw`; `fixed.vhd` and `dynamic.vhd`
/// (the conversions) hold `fixed.raw` and `dynamic.raw`.
fn export(dir: &Path, out: &Path, base: &[u8], converted: &[u8]) {
    std::fs::create_dir_all(out).expect("mkdir");
    for (name, bytes) in [("base", base), ("fixed", converted), ("dynamic", converted)] {
        std::fs::copy(
            dir.join(format!("{name}.vhd")),
            out.join(format!("{name}.vhd")),
        )
        .expect("copy");
        std::fs::write(out.join(format!("{name}.raw")), bytes).expect("expected bytes");
    }
}
