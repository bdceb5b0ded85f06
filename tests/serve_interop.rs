//! `vhdkit serve` with real NBD clients: qemu-img, qemu-io (QEMU) and nbdcopy, nbdinfo
//! (libnbd). A missing client fails the test.

// Over Unix domain sockets and NBD clients: Unix only.
#![cfg(unix)]

mod serve_support;

use std::process::Command;

use serde_json::Value;
use serve_support::*;

#[test]
fn serve_chain_reads_byte_identically_with_qemu_img_and_nbdcopy() {
    need("qemu-img", &["--version"]);
    need("nbdcopy", &["--version"]);
    let dir = tempfile::tempdir().expect("temp dir");
    let top = chain_copy(dir.path());
    let want = read_all(&top);
    let served = serve([top.as_os_str(), "--read-only".as_ref()]);
    assert_eq!(served.start["mode"], "read-only");
    assert_eq!(served.start["size"], want.len() as u64);

    let q = dir.path().join("qemu.raw");
    run(Command::new("qemu-img")
        .args(["convert", "-f", "raw", &served.uri, "-O", "raw"])
        .arg(&q));
    let n = dir.path().join("nbdcopy.raw");
    run(Command::new("nbdcopy").arg(&served.uri).arg(&n));
    let ended = served.stop().clean();

    assert!(
        std::fs::read(&q).expect("qemu output") == want,
        "qemu-img read other bytes"
    );
    assert!(
        std::fs::read(&n).expect("nbdcopy output") == want,
        "nbdcopy read other bytes"
    );
    assert!(ended.summary["bytes_read"].as_u64().expect("bytes_read") > 0);
}

/// `vhdkit map` of `disk`, merged the way base:allocation reports it: zero extents are
/// holes (type 3), everything stored anywhere in the chain is data (type 0).
fn allocation_map(disk: &std::path::Path) -> Vec<(u64, u64, u64)> {
    let map: Value = serde_json::from_slice(&vhdkit([
        "map".as_ref(),
        disk.as_os_str(),
        "--json".as_ref(),
    ]))
    .expect("map JSON");
    let mut want: Vec<(u64, u64, u64)> = Vec::new();
    for row in map["rows"].as_array().expect("rows") {
        let t = if row["kind"] == "zero" { 3 } else { 0 };
        let (s, l) = (
            row["start"].as_u64().expect("start"),
            row["length"].as_u64().expect("len"),
        );
        match want.last_mut() {
            Some(last) if last.2 == t => last.1 += l,
            _ => want.push((s, l, t)),
        }
    }
    want
}

/// `nbdinfo --map` of the served `disk`: (offset, length, type) per extent.
fn nbdinfo_map(disk: &std::path::Path) -> Vec<(u64, u64, u64)> {
    let served = serve([disk.as_os_str(), "--read-only".as_ref()]);
    let out = run(Command::new("nbdinfo").args(["--map", "--json", &served.uri]));
    served.stop().clean();
    let got: Value = serde_json::from_slice(&out).expect("nbdinfo JSON");
    got.as_array()
        .expect("extents")
        .iter()
        .map(|e| {
            (
                e["offset"].as_u64().expect("offset"),
                e["length"].as_u64().expect("length"),
                e["type"].as_u64().expect("type"),
            )
        })
        .collect()
}

#[test]
fn serve_nbdinfo_map_shows_the_holes_of_the_chain() {
    need("nbdinfo", &["--version"]);
    let dir = tempfile::tempdir().expect("temp dir");
    let top = chain_copy(dir.path());
    let want = allocation_map(&top);
    assert!(want.iter().any(|w| w.2 == 3), "the fixture has holes");
    assert_eq!(nbdinfo_map(&top), want);
}

#[test]
fn serve_nbdinfo_map_of_a_sparse_2040_gib_chain_is_exact() {
    // Block status over the whole of a 2040 GiB disk: a dynamic parent with 3 MiB in
    // the middle, a differencing child with 3 MiB more: five extents in all.
    need("nbdinfo", &["--version"]);
    let dir = tempfile::tempdir().expect("temp dir");
    let base = dir.path().join("huge.vhd");
    let child = dir.path().join("huge-child.vhd");
    create_dynamic(&base, "2040G");
    let data = dir.path().join("data.bin");
    std::fs::write(&data, bytes(5, 3 << 20)).expect("data");
    write_at(&base, 1 << 40, &data);
    create_child(&child, &base);
    write_at(&child, (1 << 40) + (64 << 20), &data);
    let want = allocation_map(&child);
    assert_eq!(want.len(), 5, "{want:?}");
    assert_eq!(nbdinfo_map(&child), want);
}

#[test]
fn serve_qemu_io_writes_land_in_the_disk() {
    need("qemu-io", &["--version"]);
    let dir = tempfile::tempdir().expect("temp dir");
    let top = chain_copy(dir.path());
    let mut want = read_all(&top);
    let served = serve([top.as_os_str()]);
    assert_eq!(served.start["mode"], "read-write");
    // Unaligned, across a block boundary of top.vhd (256 KiB blocks), and one sector.
    run(Command::new("qemu-io").args([
        "-f",
        "raw",
        "-c",
        "write -P 0xab 261000 70000",
        "-c",
        "write -P 0xcd 3145728 512",
        "-c",
        "flush",
        &served.uri,
    ]));
    let ended = served.stop().clean();
    assert_eq!(ended.summary["bytes_written"], 70512);
    want[261_000..331_000].fill(0xab);
    want[3_145_728..3_146_240].fill(0xcd);
    assert!(
        read_all(&top) == want,
        "the disk does not hold what qemu-io wrote"
    );
    check_clean(&top);
}

#[test]
fn serve_nbdcopy_writes_land_in_the_disk() {
    need("nbdcopy", &["--version"]);
    let dir = tempfile::tempdir().expect("temp dir");
    let disk = dir.path().join("d.vhd");
    vhdkit([
        "create".as_ref(),
        disk.as_os_str(),
        "--type".as_ref(),
        "dynamic".as_ref(),
        "--size".as_ref(),
        "8M".as_ref(),
        "--block-size".as_ref(),
        "512K".as_ref(),
    ]);
    // A source with data and holes.
    let src = dir.path().join("src.raw");
    let mut content = vec![0u8; 8 << 20];
    content[..300_000].copy_from_slice(&bytes(1, 300_000));
    content[5 << 20..(5 << 20) + 1_000_000].copy_from_slice(&bytes(2, 1_000_000));
    std::fs::write(&src, &content).expect("writing the source");
    let served = serve([disk.as_os_str()]);
    run(Command::new("nbdcopy").arg(&src).arg(&served.uri));
    served.stop().clean();
    assert!(
        read_all(&disk) == content,
        "the disk does not hold what nbdcopy wrote"
    );
    check_clean(&disk);
    // Holes stayed holes: only the blocks with data were allocated.
    let info: Value = serde_json::from_slice(&vhdkit([
        "info".as_ref(),
        disk.as_os_str(),
        "--json".as_ref(),
    ]))
    .expect("info JSON");
    assert!(
        info["allocated_blocks"].as_u64().expect("count") <= 4,
        "{info}"
    );
}

#[test]
fn serve_undo_writes_only_the_undo_disk_and_merge_commits() {
    need("qemu-io", &["--version"]);
    need("nbdcopy", &["--version"]);
    let dir = tempfile::tempdir().expect("temp dir");
    let top = chain_copy(dir.path());
    let before = chain_files(dir.path());
    let original = read_all(&top);
    let undo = dir.path().join("undo.vhd");
    let served = serve([top.as_os_str(), "--undo".as_ref(), undo.as_os_str()]);
    assert_eq!(served.start["mode"], "undo");
    run(Command::new("qemu-io").args([
        "-f",
        "raw",
        "-c",
        "write -P 0x5a 1000000 200000",
        &served.uri,
    ]));
    let patch = dir.path().join("patch.raw");
    std::fs::write(&patch, bytes(3, 4 << 20)).expect("writing the patch");
    run(Command::new("nbdcopy").arg(&patch).arg(&served.uri));
    let ended = served.stop().clean();
    assert!(ended.stderr.contains("vhdkit merge"), "{}", ended.stderr);

    // The served chain is byte-identical; the undo disk holds the changes.
    assert!(
        chain_files(dir.path()) == before,
        "a file of the served chain changed"
    );
    assert!(read_all(&top) == original);
    let changed = bytes(3, 4 << 20);
    assert!(
        read_all(&undo) == changed,
        "the undo disk does not read as written"
    );
    check_clean(&undo);

    // Commit: merge the undo disk into the chain's top.
    vhdkit(["merge".as_ref(), undo.as_os_str()]);
    assert!(
        read_all(&top) == changed,
        "merge did not commit the changes"
    );
}

#[test]
fn serve_tcp_needs_listen_and_warns() {
    need("nbdinfo", &["--version"]);
    let dir = tempfile::tempdir().expect("temp dir");
    let top = chain_copy(dir.path());
    let served = serve([
        top.as_os_str(),
        "--read-only".as_ref(),
        "--listen".as_ref(),
        "127.0.0.1:0".as_ref(),
    ]);
    assert!(served.uri.starts_with("nbd://127.0.0.1:"), "{}", served.uri);
    let out = run(Command::new("nbdinfo").args(["--size", &served.uri]));
    let ended = served.stop().clean();
    assert_eq!(String::from_utf8_lossy(&out).trim(), "4194304");
    assert!(
        ended.stderr.contains("no authentication"),
        "{}",
        ended.stderr
    );
}

#[test]
fn serve_export_name_is_matched() {
    need("nbdinfo", &["--version"]);
    let dir = tempfile::tempdir().expect("temp dir");
    let top = chain_copy(dir.path());
    let served = serve([
        top.as_os_str(),
        "--read-only".as_ref(),
        "--export-name".as_ref(),
        "disk one".as_ref(),
    ]);
    assert!(
        served.uri.starts_with("nbd+unix:///disk%20one?socket="),
        "{}",
        served.uri
    );
    let socket = served.socket();
    run(Command::new("nbdinfo").args(["--size", &served.uri]));
    let wrong = format!("nbd+unix:///other?socket={}", socket.display());
    let o = Command::new("nbdinfo")
        .args(["--size", &wrong])
        .output()
        .expect("nbdinfo");
    assert!(!o.status.success(), "an unknown export name was accepted");
    served.stop().clean();
}
