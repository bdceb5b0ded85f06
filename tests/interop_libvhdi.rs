//! vhdkit against libvhdi: pyvhdi (libvhdi's Python binding, attaching parents with
//! `set_parent`) reads the same bytes as `vhdkit read` and a plain byte model, for fixed,
//! dynamic and differencing disks (2 and 3 levels) written by vhdkit; vhdiinfo sees each
//! child's parent identifier equal to the parent's unique id.

mod common;

use std::path::{Path, PathBuf};

use common::*;

// --- fixed and dynamic ------------------------------------------------------------------

fn written(kind: &str, block: Option<&str>, seed: u64) -> (tempfile::TempDir, PathBuf, Model) {
    let dir = tempdir();
    let disk = dir.path().join("d.vhd");
    let mut args = vec!["--type", kind, "--size", "5000704"];
    if let Some(b) = block {
        args.extend(["--block-size", b]);
    }
    create(&disk, &args);
    let mut model = Model::new(5_000_704);
    let mut rng = Rng::new(seed);
    for (off, data) in random_writes(&mut rng, 5_000_704, 30) {
        write_both(&disk, &mut model, off, &data);
    }
    (dir, disk, model)
}

#[test]
fn write_random_fixed_pyvhdi_reads_model() {
    if !have(Tool::Pyvhdi) {
        return;
    }
    let (_d, disk, model) = written("fixed", None, 101);
    assert_bytes_eq("pyvhdi read of fixed", &pyvhdi_read_all(&[&disk]), &model.0);
}

#[test]
fn write_random_dynamic_pyvhdi_reads_model() {
    if !have(Tool::Pyvhdi) {
        return;
    }
    let (_d, disk, model) = written("dynamic", None, 102);
    assert_bytes_eq(
        "pyvhdi read of dynamic",
        &pyvhdi_read_all(&[&disk]),
        &model.0,
    );
}

#[test]
fn write_random_dynamic_block_512k_pyvhdi_reads_model() {
    if !have(Tool::Pyvhdi) {
        return;
    }
    let (_d, disk, model) = written("dynamic", Some("512K"), 103);
    assert_bytes_eq(
        "pyvhdi read (512 KiB blocks)",
        &pyvhdi_read_all(&[&disk]),
        &model.0,
    );
}

#[test]
fn vhdkit_odd_size_fixtures_pyvhdi_reads_like_vhdkit() {
    if !have(Tool::Pyvhdi) {
        return;
    }
    for name in ["vhdkit-fixed-5000704.vhd", "vhdkit-dynamic-5000704.vhd"] {
        let disk = fixture(&format!("vhdkit/{name}"));
        assert_eq!(pyvhdi_size(&disk), 5_000_704, "{name}");
        assert_bytes_eq(name, &pyvhdi_read_all(&[&disk]), &read_all(&disk));
    }
}

#[test]
fn qemu_fixtures_pyvhdi_reads_like_vhdkit() {
    if !have(Tool::Pyvhdi) {
        return;
    }
    for name in [
        "qemu-fixed-5m-chs.vhd",
        "qemu-dynamic-5m-chs.vhd",
        "qemu-fixed-5m-force.vhd",
        "qemu-dynamic-5m-force.vhd",
    ] {
        let disk = fixture(&format!("qemu/{name}"));
        assert_eq!(pyvhdi_size(&disk), vhdkit_size(&disk), "{name}: size");
        assert_bytes_eq(name, &pyvhdi_read_all(&[&disk]), &read_all(&disk));
    }
}

// --- differencing chains written by vhdkit ----------------------------------------------

/// A chain in a temp dir: `paths[0]` is the base, the last is the top; `models[i]` is what
/// level i reads as.
struct Chain {
    _dir: tempfile::TempDir,
    paths: Vec<PathBuf>,
    models: Vec<Model>,
}

impl Chain {
    /// Top first, as pyvhdi_read wants it, from level `top` down.
    fn from(&self, top: usize) -> Vec<&Path> {
        self.paths[..=top]
            .iter()
            .rev()
            .map(|p| p.as_path())
            .collect()
    }
}

/// Writes that land on what the parent holds: a single sector inside it, a few unaligned
/// bytes inside a partly written 4 KiB granule, and explicit zeros over it.
fn overlay_writes(rng: &mut Rng, parent: &[(u64, Vec<u8>)], size: u64) -> Vec<(u64, Vec<u8>)> {
    let mut out = Vec::new();
    for (off, data) in parent.iter().filter(|(_, d)| d.len() >= 2048).take(6) {
        let len = data.len() as u64;
        // One aligned sector somewhere inside the parent's run.
        let first = off.div_ceil(512) * 512;
        if first + 512 <= off + len {
            let s = first + rng.range(0, (off + len - first) / 512) * 512;
            out.push((s.min(size - 512), rng.bytes(512)));
        }
        // A few unaligned bytes inside one granule.
        let at = off + rng.range(1, len - 8);
        let n = rng.range(1, 7) as usize;
        out.push((at, rng.bytes(n)));
        // Zeros over parent data (unaligned start and end).
        let zs = off + rng.range(0, len / 2);
        let zl = rng.range(1, (len / 2).min(5000));
        out.push((zs, vec![0; zl as usize]));
    }
    out
}

/// Builds base (`base_kind`) plus `children` differencing levels, each written with
/// random writes plus overlays of its parent's writes. Children refer to their parent by
/// a relative path (created inside the chain's folder).
fn build_chain(base_kind: &str, size: u64, children: usize, seed: u64) -> Chain {
    let dir = tempdir();
    let mut rng = Rng::new(seed);
    let base = dir.path().join("level0.vhd");
    create(&base, &["--type", base_kind, "--size", &size.to_string()]);
    let mut paths = vec![base];
    let mut model = Model::new(size);
    let mut writes = random_writes(&mut rng, size, 12);
    for (off, data) in &writes {
        write_both(&paths[0], &mut model, *off, data);
    }
    let mut models = vec![model.clone()];
    for level in 1..=children {
        let name = format!("level{level}.vhd");
        let parent = format!("level{}.vhd", level - 1);
        let block = if level % 2 == 1 { "512K" } else { "2M" };
        vhdkit_in(
            dir.path(),
            [
                "create",
                &name,
                "--type",
                "differencing",
                "--parent",
                &parent,
                "--block-size",
                block,
            ],
        )
        .ok();
        let path = dir.path().join(&name);
        // Before any write the child reads exactly as its parent.
        assert_bytes_eq(
            "a new child reads as its parent",
            &read_all(&path),
            &model.0,
        );
        let mut mine = overlay_writes(&mut rng, &writes, size);
        mine.extend(random_writes(&mut rng, size, 10));
        for (off, data) in &mine {
            write_both(&path, &mut model, *off, data);
        }
        paths.push(path);
        models.push(model.clone());
        writes = mine;
    }
    Chain {
        _dir: dir,
        paths,
        models,
    }
}

#[test]
fn chain_two_levels_vhdkit_read_equals_model() {
    let c = build_chain("dynamic", 4 * MIB, 1, 201);
    for (i, p) in c.paths.iter().enumerate() {
        assert_bytes_eq(
            &format!("vhdkit read of level {i}"),
            &read_all(p),
            &c.models[i].0,
        );
    }
}

#[test]
fn chain_two_levels_pyvhdi_reads_model() {
    if !have(Tool::Pyvhdi) {
        return;
    }
    let c = build_chain("dynamic", 4 * MIB, 1, 202);
    assert_bytes_eq(
        "pyvhdi read of the child",
        &pyvhdi_read_all(&c.from(1)),
        &c.models[1].0,
    );
    assert_bytes_eq(
        "vhdkit read of the child",
        &read_all(&c.paths[1]),
        &c.models[1].0,
    );
}

#[test]
fn chain_over_fixed_parent_pyvhdi_reads_model() {
    if !have(Tool::Pyvhdi) {
        return;
    }
    let c = build_chain("fixed", 3 * MIB + 512, 1, 203);
    assert_bytes_eq(
        "vhdkit read of the child",
        &read_all(&c.paths[1]),
        &c.models[1].0,
    );
    assert_bytes_eq(
        "pyvhdi read of the child",
        &pyvhdi_read_all(&c.from(1)),
        &c.models[1].0,
    );
}

#[test]
fn chain_three_levels_vhdkit_read_equals_model() {
    let c = build_chain("dynamic", 5_000_704, 2, 204);
    for (i, p) in c.paths.iter().enumerate() {
        assert_bytes_eq(
            &format!("vhdkit read of level {i}"),
            &read_all(p),
            &c.models[i].0,
        );
    }
}

#[test]
fn chain_three_levels_pyvhdi_reads_model() {
    if !have(Tool::Pyvhdi) {
        return;
    }
    let c = build_chain("dynamic", 5_000_704, 2, 205);
    for top in 1..=2 {
        assert_bytes_eq(
            &format!("pyvhdi read through level {top}"),
            &pyvhdi_read_all(&c.from(top)),
            &c.models[top].0,
        );
    }
}

#[test]
fn chain_sector_and_granule_writes_pyvhdi_reads_model() {
    // Hand-picked writes: parent data in one block, then in the child a single sector, a
    // 1-byte write and a 3-byte write inside the same 4 KiB granule, zeros across a
    // granule boundary over parent data, and a write straddling two child blocks.
    let dir = tempdir();
    let base = dir.path().join("base.vhd");
    create(&base, &["--type", "dynamic", "--size", "4M"]);
    let mut m = Model::new(4 * MIB);
    write_both(&base, &mut m, 0, &pattern(1, 300_000));
    write_both(&base, &mut m, 524_000, &pattern(2, 1000));
    vhdkit_in(
        dir.path(),
        [
            "create",
            "child.vhd",
            "--type",
            "differencing",
            "--parent",
            "base.vhd",
            "--block-size",
            "512K",
        ],
    )
    .ok();
    let child = dir.path().join("child.vhd");
    let mut c = m.clone();
    write_both(&child, &mut c, 8192 + 512, &pattern(3, 512)); // sector 17
    write_both(&child, &mut c, 8192 + 2049, &[0xEE]); // same granule
    write_both(&child, &mut c, 8192 + 4093, &[0xAB, 0xCD, 0xEF]); // its last bytes
    write_both(&child, &mut c, 12_000, &vec![0u8; 5000]); // zeros over parent data
    write_both(&child, &mut c, 524_280, &pattern(4, 16)); // across child blocks 0/1
    write_both(&child, &mut c, 4 * MIB - 1, &[0x7F]); // last byte of the disk
    assert_bytes_eq("vhdkit read of the child", &read_all(&child), &c.0);
    assert_bytes_eq("vhdkit read of the parent", &read_all(&base), &m.0);
    if have(Tool::Pyvhdi) {
        assert_bytes_eq(
            "pyvhdi read of the child",
            &pyvhdi_read_all(&[&child, &base]),
            &c.0,
        );
    }
}

#[test]
fn chain_children_record_parent_unique_id_seen_by_vhdiinfo() {
    if !have(Tool::Vhdiinfo) {
        return;
    }
    let c = build_chain("dynamic", 4 * MIB, 2, 206);
    for level in 1..c.paths.len() {
        let child = &c.paths[level];
        let parent_id = info(&c.paths[level - 1])["unique_id"]
            .as_str()
            .expect("unique_id")
            .to_owned();
        assert_eq!(
            vhdiinfo_field(child, "Disk type").as_deref(),
            Some("Differential")
        );
        assert_eq!(
            vhdiinfo_field(child, "Parent identifier").map(|s| s.to_lowercase()),
            Some(parent_id.to_lowercase()),
            "level {level}"
        );
        assert_eq!(
            vhdiinfo_field(child, "Identifier").map(|s| s.to_lowercase()),
            info(child)["unique_id"].as_str().map(str::to_lowercase),
        );
        assert_eq!(vhdiinfo_size(child), 4 * MIB);
    }
}

#[test]
fn chain_info_shows_parent_id_and_chain() {
    let c = build_chain("dynamic", 4 * MIB, 2, 207);
    let top = info(&c.paths[2]);
    assert_eq!(top["disk_type"], "differencing");
    assert_eq!(top["parent"]["found"], true);
    assert_eq!(
        top["parent"]["unique_id"],
        info(&c.paths[1])["unique_id"],
        "the child records its parent's unique id"
    );
    assert_eq!(top["chain"].as_array().map(Vec::len), Some(3));
}

// --- the fixture chain (fixtures/chain) -------------------------------------------------

/// Replays fixtures/chain/writes.txt: the model of base, mid and top.
fn fixture_chain_models() -> [Model; 3] {
    let text = std::fs::read_to_string(fixture("chain/writes.txt")).expect("writes.txt");
    let order = ["base.vhd", "mid.vhd", "top.vhd"];
    let mut models: [Model; 3] = std::array::from_fn(|_| Model::new(4 * MIB));
    let mut current = Model::new(4 * MIB);
    let mut level = 0;
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let f: Vec<&str> = line.split_whitespace().collect();
        let l = order.iter().position(|n| *n == f[0]).expect("known file");
        while level < l {
            models[level] = current.clone();
            level += 1;
        }
        let (off, len, seed): (u64, usize, u64) = (
            f[1].parse().expect("offset"),
            f[2].parse().expect("length"),
            f[3].parse().expect("seed"),
        );
        current.write(off, &pattern(seed, len));
    }
    while level < 3 {
        models[level] = current.clone();
        level += 1;
    }
    models
}

/// Copies fixtures/chain to a temp dir (so relative locators must be what resolves).
fn moved_fixture_chain() -> (tempfile::TempDir, [PathBuf; 3]) {
    let dir = tempdir();
    let paths = ["base.vhd", "mid.vhd", "top.vhd"].map(|n| {
        let to = dir.path().join(n);
        std::fs::copy(fixture(&format!("chain/{n}")), &to).expect("copy");
        to
    });
    (dir, paths)
}

#[test]
fn fixture_chain_vhdkit_read_equals_model() {
    let models = fixture_chain_models();
    for (i, n) in ["base.vhd", "mid.vhd", "top.vhd"].iter().enumerate() {
        assert_bytes_eq(n, &read_all(&fixture(&format!("chain/{n}"))), &models[i].0);
    }
}

#[test]
fn fixture_chain_moved_resolves_parents_next_to_it() {
    let (dir, paths) = moved_fixture_chain();
    let i = info(&paths[2]);
    let chain: Vec<PathBuf> = i["chain"]
        .as_array()
        .expect("chain")
        .iter()
        .map(|l| PathBuf::from(l["path"].as_str().expect("path")))
        .collect();
    assert_eq!(chain.len(), 3);
    for p in &chain[1..] {
        let p = if p.is_absolute() {
            p.clone()
        } else {
            std::env::current_dir().expect("cwd").join(p)
        };
        assert!(
            p.starts_with(dir.path()),
            "parent {} should be the copy beside the child",
            p.display()
        );
    }
    assert_bytes_eq(
        "moved top",
        &read_all(&paths[2]),
        &fixture_chain_models()[2].0,
    );
}

#[test]
fn fixture_chain_pyvhdi_reads_like_vhdkit_and_model() {
    if !have(Tool::Pyvhdi) {
        return;
    }
    let models = fixture_chain_models();
    let (_dir, [base, mid, top]) = moved_fixture_chain();
    assert_bytes_eq(
        "pyvhdi top",
        &pyvhdi_read_all(&[&top, &mid, &base]),
        &models[2].0,
    );
    assert_bytes_eq("pyvhdi mid", &pyvhdi_read_all(&[&mid, &base]), &models[1].0);
    assert_bytes_eq("vhdkit top", &read_all(&top), &models[2].0);
}

#[test]
fn fixture_chain_vhdiinfo_parent_ids_match() {
    if !have(Tool::Vhdiinfo) {
        return;
    }
    for (child, parent) in [("mid.vhd", "base.vhd"), ("top.vhd", "mid.vhd")] {
        let c = fixture(&format!("chain/{child}"));
        let p = fixture(&format!("chain/{parent}"));
        assert_eq!(
            vhdiinfo_field(&c, "Parent identifier").map(|s| s.to_lowercase()),
            info(&p)["unique_id"].as_str().map(str::to_lowercase),
            "{child} -> {parent}"
        );
    }
}

#[test]
fn chain_child_writes_leave_parent_files_unchanged() {
    let dir = tempdir();
    let base = dir.path().join("base.vhd");
    create(&base, &["--type", "dynamic", "--size", "4M"]);
    write_at(&base, 1000, &pattern(7, 100_000), &[]);
    vhdkit_in(
        dir.path(),
        [
            "create",
            "child.vhd",
            "--type",
            "differencing",
            "--parent",
            "base.vhd",
        ],
    )
    .ok();
    let before = std::fs::read(&base).expect("read");
    let child = dir.path().join("child.vhd");
    let mut rng = Rng::new(208);
    for (off, data) in random_writes(&mut rng, 4 * MIB, 15) {
        write_at(&child, off, &data, &[]);
    }
    assert_eq!(
        std::fs::read(&base).expect("read"),
        before,
        "writing a child must not touch its parent"
    );
}

#[test]
fn chain_over_qemu_made_parent_pyvhdi_reads_model() {
    // A vhdkit child over a qemu-made dynamic parent with a CHS-rounded size.
    let dir = tempdir();
    let base = dir.path().join("qemu.vhd");
    std::fs::copy(fixture("qemu/qemu-dynamic-5m-chs.vhd"), &base).expect("copy");
    let size = vhdkit_size(&base);
    let mut model = Model(read_all(&base));
    vhdkit_in(
        dir.path(),
        [
            "create",
            "child.vhd",
            "--type",
            "differencing",
            "--parent",
            "qemu.vhd",
        ],
    )
    .ok();
    let child = dir.path().join("child.vhd");
    assert_eq!(vhdkit_size(&child), size, "a child has its parent's size");
    let mut writes = vec![
        (0u64, vec![0u8; 1000]),     // zeros over qemu's data
        (1_234_570, pattern(40, 3)), // inside qemu's unaligned write
        (size - 1, vec![0xAA]),      // the very last byte
    ];
    writes.extend(random_writes(&mut Rng::new(209), size, 10));
    for (off, data) in &writes {
        write_both(&child, &mut model, *off, data);
    }
    assert_bytes_eq("vhdkit read of the child", &read_all(&child), &model.0);
    if have(Tool::Pyvhdi) {
        assert_bytes_eq(
            "pyvhdi read of the child",
            &pyvhdi_read_all(&[&child, &base]),
            &model.0,
        );
    }
    if have(Tool::Vhdiinfo) {
        assert_eq!(vhdiinfo_size(&child), size);
    }
}

#[test]
fn chain_deeper_than_64_levels_read_fails_and_info_explains() {
    // base + 65 children: a chain of 65 files (64 parents below the top) is accepted,
    // one more level is refused (OpenOptions::max_depth defaults to 64).
    let dir = tempdir();
    create(
        &dir.path().join("l0.vhd"),
        &["--type", "dynamic", "--size", "3M", "--block-size", "512K"],
    );
    write_at(&dir.path().join("l0.vhd"), 100, b"base", &[]);
    for i in 1..=65 {
        let (name, parent) = (format!("l{i}.vhd"), format!("l{}.vhd", i - 1));
        vhdkit_in(
            dir.path(),
            [
                "create",
                &name,
                "--type",
                "differencing",
                "--parent",
                &parent,
                "--block-size",
                "512K",
            ],
        )
        .ok();
    }
    let ok = read_range(&dir.path().join("l64.vhd"), 100, 4);
    assert_eq!(ok, b"base", "a 65-file chain reads through to the base");
    let top = dir.path().join("l65.vhd");
    let line = assert_failed_one_line(&vhdkit(["read".as_ref(), top.as_os_str()]));
    assert!(line.contains("deeper"), "{line}");
    let i = info(&top);
    assert_eq!(i["parent"]["found"], false);
    assert!(i["parent"]["error"]
        .as_str()
        .is_some_and(|e| e.contains("deeper")));
    let c = vhdkit(["check".as_ref(), top.as_os_str()]);
    assert_eq!(c.code, EXIT_DIFFERENT, "{}", c.stdout_str());
}
