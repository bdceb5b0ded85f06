//! Seed generator for the fuzz corpora.
//!
//! ```text
//! cargo run --example seedgen -- synth <out-dir>            # small synthetic images
//! cargo run --example seedgen -- extract <out-dir> FILE...  # seeds cut from real images
//! ```
//!
//! Both write `<out-dir>/<target>/<name>`. `synth` builds small images with the
//! library (dynamic, differencing, fixed, host-drive stub, short footer, footer copy
//! only, chains, a loop); `extract` cuts each file's footer, dynamic header, locator
//! entries with their payloads, BAT and bitmaps into the structure targets' seeds, and
//! keeps the whole file for `open_read` (and the targets `seed.sh` seeds alike), shrunk
//! to its metadata when it is over `MAX_WHOLE` bytes (blocks dropped from the BAT, Xen's
//! batmap kept with its bits cleared, or a fixed disk cut to 64 KiB). Files are broken
//! only on purpose: for a Xen `tap` file, three seeds with a damaged batmap (see
//! `batmap_mutations`), which the targets must survive.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use vhdkit_format::image::MemBackend;
use vhdkit_format::spec::batmap::{self, BatmapHeader};
use vhdkit_format::spec::footer::DISK_TYPE_HOST_DRIVE_STUB;
use vhdkit_format::spec::hostdrive::{HOST_DRIVE_IDENTITY_SPAN, HOST_DRIVE_VERSION};
use vhdkit_format::spec::{
    DiskType, DynamicHeader, Footer, HostDriveHeader, SparseLayout, FOOTER_SIZE, HEADER_SIZE,
    HOST_DRIVE_COOKIE,
};
use vhdkit_format::{Disk, OpenOptions};
use vhdkit_fuzz::{
    child_with_locators, fixed_image, join_files, sparse_image, MemResolver, ParentInfo, FUZZ_DIR,
};
use vhdkit_testkit::pattern;

/// Whole files larger than this are shrunk before they become seeds.
const MAX_WHOLE: usize = 1 << 20;

fn put(out: &Path, target: &str, name: &str, bytes: &[u8]) {
    let dir = out.join(target);
    fs::create_dir_all(&dir).expect("create seed dir");
    fs::write(dir.join(name), bytes).expect("write seed");
}

/// Applies writes to file 0 of `files` (parents resolved from the rest).
fn write_into(files: &[Vec<u8>], writes: &[(u64, usize, u64)]) -> Vec<u8> {
    let mems: Vec<Arc<MemBackend>> = files
        .iter()
        .map(|f| Arc::new(MemBackend::new(f.clone())))
        .collect();
    let resolver = MemResolver::new(mems.clone(), true);
    let opts = OpenOptions::new().writable(true);
    let top = resolver.open_index(0, &opts).expect("open synthetic image");
    let disk = Disk::resolve(top, &opts, &resolver).expect("resolve synthetic chain");
    for &(off, len, seed) in writes {
        disk.write_at(&pattern(seed, len), off)
            .expect("write synthetic data");
    }
    disk.flush().expect("flush");
    drop(disk);
    mems[0].to_vec()
}

fn id(n: u8) -> [u8; 16] {
    [n; 16]
}

fn parent(n: u8, i: usize) -> ParentInfo {
    ParentInfo {
        unique_id: id(n),
        name: format!("{i}.vhd"),
    }
}

fn synth(out: &Path) {
    let k = 1024u64;
    // Dynamic disks.
    let dyn4k = write_into(
        &[sparse_image(256 * k, 4096, None, id(1))],
        &[(0, 1000, 1), (10_000, 5000, 2), (256 * k - 100, 100, 3)],
    );
    let dyn512 = write_into(
        &[sparse_image(64 * k, 512, None, id(2))],
        &[(512, 512, 4), (4000, 3000, 5)],
    );
    let dyn_empty = sparse_image(3 << 20, 2 << 20, None, id(3));
    let fixed = fixed_image(64 * k, &pattern(9, 40_000), id(4));
    // A differencing disk over a dynamic one, and over a fixed one.
    let base = write_into(
        &[sparse_image(128 * k, 4096, None, id(5))],
        &[(0, 20_000, 6), (100_000, 9000, 7)],
    );
    let child = write_into(
        &[
            sparse_image(128 * k, 4096, Some(&parent(5, 1)), id(6)),
            base.clone(),
        ],
        &[(5000, 3000, 8), (120_000, 100, 9)],
    );
    let fixed_base = fixed_image(64 * k, &pattern(10, 64 * 1024), id(7));
    let child_of_fixed = write_into(
        &[
            sparse_image(64 * k, 8192, Some(&parent(7, 1)), id(8)),
            fixed_base.clone(),
        ],
        &[(1, 30_000, 11)],
    );
    // Three and four levels.
    let mid = write_into(
        &[
            sparse_image(128 * k, 4096, Some(&parent(5, 2)), id(9)),
            base.clone(),
        ],
        &[(60_000, 10_000, 12)],
    );
    let top3 = write_into(
        &[
            sparse_image(128 * k, 4096, Some(&parent(9, 1)), id(10)),
            mid.clone(),
            base.clone(),
        ],
        &[(65_000, 100, 13)],
    );
    let mid_b = write_into(
        &[
            sparse_image(128 * k, 4096, Some(&parent(5, 3)), id(11)),
            base.clone(),
        ],
        &[(30_000, 1000, 14)],
    );
    let mid_a = write_into(
        &[
            sparse_image(128 * k, 4096, Some(&parent(11, 2)), id(12)),
            base.clone(), // placeholder: files sit where the 4-level chain has them
            mid_b.clone(),
            base.clone(),
        ],
        &[(31_000, 1000, 15)],
    );
    let top4 = write_into(
        &[
            sparse_image(128 * k, 4096, Some(&parent(12, 1)), id(13)),
            mid_a.clone(),
            mid_b.clone(),
            base.clone(),
        ],
        &[(32_000, 1000, 16)],
    );
    // A child naming itself as parent (a loop), and one whose parent id is wrong.
    let self_loop = sparse_image(64 * k, 4096, Some(&parent(14, 0)), id(14));
    let wrong_id = sparse_image(128 * k, 4096, Some(&parent(99, 1)), id(15));
    // A host-drive stub naming a device that does not exist.
    let stub = host_drive_stub(1 << 20);
    // Footer quirks: the 511-byte footer of old Virtual PC, and a lost trailing footer.
    let mut short = dyn4k.clone();
    short.pop();
    let mut copy_only = dyn4k.clone();
    let n = copy_only.len();
    copy_only[n - FOOTER_SIZE..].fill(0);

    let images: Vec<(&str, &Vec<u8>)> = vec![
        ("dynamic-4k-blocks.vhd", &dyn4k),
        ("dynamic-512-blocks.vhd", &dyn512),
        ("dynamic-empty-2m-blocks.vhd", &dyn_empty),
        ("fixed-64k.vhd", &fixed),
        ("differencing-alone.vhd", &child),
        ("differencing-8k-alone.vhd", &child_of_fixed),
        ("self-loop.vhd", &self_loop),
        ("host-drive-stub.vhd", &stub),
        ("short-footer.vhd", &short),
        ("footer-copy-only.vhd", &copy_only),
    ];
    for (name, bytes) in &images {
        extract(out, name, bytes); // whole files go to open_read (seed.sh copies to check)
    }
    let chains: Vec<(&str, Vec<&[u8]>)> = vec![
        ("diff-over-dynamic", vec![&child, &base]),
        ("diff-over-fixed", vec![&child_of_fixed, &fixed_base]),
        ("three-levels", vec![&top3, &mid, &base]),
        ("four-levels", vec![&top4, &mid_a, &mid_b, &base]),
        ("self-loop", vec![&self_loop, &base]),
        ("wrong-parent-id", vec![&wrong_id, &base]),
    ];
    for (name, files) in chains {
        let flags: &[u8] = if name == "wrong-parent-id" {
            &[0, 1]
        } else {
            &[0]
        };
        for &flags in flags {
            let mut input = vec![flags];
            input.extend_from_slice(&join_files(&files));
            put(out, "chain", &format!("{name}-{flags}"), &input);
        }
    }
    trust_seeds(out);
    // `write` takes structured input; a few byte strings give it a start.
    for (i, s) in [
        &b"\x00\x00\x03\x10\x01\x02\x00\x10\x00\x00\x10\x00\x07\x00\x00"[..],
        &b"\x01\x00\x03\x20\x02\x01\x00\x00\x00\x00\x00\x02\x05\x00\x00\x01\x00\x40\x00\x10\x00\x09\x01\x00"[..],
        &b"\x01\x01\x00\xff\x0f\x01\x00\x00\x00\x00\x00\x02\x05\x00\x00\x01\x00\x00\x10\x00\x00\x10\x00\x09\x00\x00\x03\x00\x11\x00\x00\x40\x00\x00\x00\x01"[..],
    ]
    .iter()
    .enumerate()
    {
        put(out, "write", &format!("seed-{i}"), s);
    }
}

/// Seeds of the `trust` target: crafted children naming the canary outside the test
/// folder (absolute and relative), the FIFO inside it, and a stub naming the secret file
/// with its true size and identity CRC.
fn trust_seeds(out: &Path) {
    use vhdkit_format::spec::PlatformCode::{W2ku, W2ru};
    use vhdkit_fuzz::trust::{CANARY_ID, ROOT};
    let canary_abs = format!("C:{}\\outside\\canary.vhd", ROOT.replace('/', "\\"));
    let size = 4 << 20;
    let seeds: Vec<(&str, Vec<u8>)> = vec![
        (
            "absolute-to-canary",
            child_with_locators(
                size,
                "canary.vhd",
                CANARY_ID,
                &[(W2ku, &canary_abs), (W2ru, ".\\gone.vhd")],
                id(60),
            ),
        ),
        (
            "relative-to-canary",
            child_with_locators(
                size,
                "canary.vhd",
                CANARY_ID,
                &[(W2ru, "..\\outside\\canary.vhd")],
                id(61),
            ),
        ),
        (
            "name-is-the-fifo",
            child_with_locators(size, "pipe.vhd", id(62), &[(W2ru, ".\\pipe.vhd")], id(63)),
        ),
        ("stub-to-secret", secret_stub()),
    ];
    for (name, bytes) in seeds {
        for flags in [0u8, 1, 2] {
            let mut input = vec![flags];
            input.extend_from_slice(&bytes);
            put(out, "trust", &format!("{name}-{flags}"), &input);
        }
    }
}

/// A stub naming the `trust` target's secret file, with its real size and CRC.
fn secret_stub() -> Vec<u8> {
    let size = 1u64 << 20;
    let secret = MemBackend::new(vec![0x5E; size as usize]);
    let crc =
        vhdkit_format::image::hostdrive::identity_crc(&secret, size, HOST_DRIVE_IDENTITY_SPAN)
            .expect("crc of memory");
    let mut stub = host_drive_stub(size);
    let mut header = HostDriveHeader::decode(&stub[512..1536]).expect("header");
    header.identity_crc = crc;
    header.device_path = format!("{}/outside/secret.img", vhdkit_fuzz::trust::ROOT);
    stub[512..1536].copy_from_slice(&header.encode().expect("short path"));
    stub
}

fn host_drive_stub(size: u64) -> Vec<u8> {
    let header = HostDriveHeader {
        cookie: HOST_DRIVE_COOKIE,
        version: HOST_DRIVE_VERSION,
        flags: 1,
        device_size: size,
        identity_crc: 0,
        identity_span: HOST_DRIVE_IDENTITY_SPAN,
        checksum: 0,
        device_path: format!("{FUZZ_DIR}/device"),
    };
    let mut footer = Footer::new(DiskType::Reserved(DISK_TYPE_HOST_DRIVE_STUB), size);
    footer.unique_id = uuid::Uuid::from_bytes(id(42));
    footer.timestamp = vhdkit_format::spec::VhdTime(0x2000_0000);
    footer.data_offset = 512;
    let f = footer.encode();
    let mut out = f.to_vec();
    out.extend_from_slice(&header.encode().expect("short path"));
    out.extend_from_slice(&f);
    out
}

/// Cuts the structure seeds out of one image, and keeps it (shrunk if large) whole.
fn extract(out: &Path, name: &str, bytes: &[u8]) {
    let len = bytes.len();
    if len < FOOTER_SIZE {
        put(out, "footer", name, bytes);
        return;
    }
    let end = &bytes[len - FOOTER_SIZE..];
    let footer_raw = if end.starts_with(b"conectix") {
        end.to_vec()
    } else if len % 512 == 511 && bytes[len - 511..].starts_with(b"conectix") {
        let mut v = bytes[len - 511..].to_vec();
        v.push(0);
        v
    } else {
        bytes[..FOOTER_SIZE].to_vec()
    };
    let mut footer_seed = footer_raw.clone();
    footer_seed.extend_from_slice(&(len as u64).to_be_bytes());
    put(out, "footer", name, &footer_seed);
    let footer = Footer::decode(&footer_raw).expect("512 bytes");
    let hoff = footer.data_offset;
    let Some(hraw) = usize::try_from(hoff)
        .ok()
        .and_then(|h| bytes.get(h..h.checked_add(HEADER_SIZE)?))
    else {
        whole(out, name, bytes, &footer, None);
        return;
    };
    if footer.disk_type == DiskType::Reserved(DISK_TYPE_HOST_DRIVE_STUB) {
        put(out, "host_drive_header", name, hraw);
        whole(out, name, bytes, &footer, None);
        return;
    }
    let header = DynamicHeader::decode(hraw).expect("1024 bytes");
    let mut hseed = hraw.to_vec();
    hseed.extend_from_slice(&footer.current_size.to_be_bytes());
    hseed.extend_from_slice(&(len as u64).to_be_bytes());
    hseed.push(u8::from(footer.disk_type == DiskType::Differencing));
    put(out, "dynamic_header", name, &hseed);
    for (i, l) in header
        .locators
        .iter()
        .enumerate()
        .filter(|(_, l)| l.is_used())
    {
        let mut seed = l.encode().to_vec();
        let at = usize::try_from(l.data_offset).unwrap_or(usize::MAX);
        let n = (l.data_length as usize).min(4096);
        if let Some(p) = at.checked_add(n).and_then(|e| bytes.get(at..e)) {
            seed.extend_from_slice(p);
        }
        put(out, "locator", &format!("{name}-{i}"), &seed);
    }
    let toff = usize::try_from(header.table_offset).unwrap_or(usize::MAX);
    let n = (header.max_table_entries as usize * 4).min(64 << 10);
    if let Some(table) = toff.checked_add(n).and_then(|e| bytes.get(toff..e)) {
        let stride = header.bitmap_size() + u64::from(header.block_size);
        let mut seed = Vec::new();
        seed.extend_from_slice(&stride.to_be_bytes());
        seed.extend_from_slice(&((len - FOOTER_SIZE) as u64).to_be_bytes());
        seed.extend_from_slice(&header.table_offset.to_be_bytes());
        seed.extend_from_slice(&[0, 0, 0x10, 0, 0, 0, 0, 0]);
        seed.extend_from_slice(table);
        put(out, "bat", name, &seed);
        // The first allocated block's bitmap.
        let first = table
            .chunks_exact(4)
            .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]))
            .find(|&e| e != u32::MAX);
        if let Some(sector) = first {
            let at = sector as usize * 512;
            let bm = header.bitmap_size() as usize;
            if let Some(b) = bytes.get(at..at + bm) {
                let mut seed = vec![0u8; 24];
                seed[15] = 64;
                seed[23] = 200;
                seed.extend_from_slice(b);
                put(out, "bitmap", name, &seed);
            }
        }
    }
    whole(out, name, bytes, &footer, Some((&header, hoff)));
}

/// Keeps the file whole for `open_read` and `check`, shrunk when larger than
/// [`MAX_WHOLE`].
fn whole(
    out: &Path,
    name: &str,
    bytes: &[u8],
    footer: &Footer,
    header: Option<(&DynamicHeader, u64)>,
) {
    if bytes.len() <= MAX_WHOLE {
        put(out, "open_read", name, bytes);
        batmap_mutations(out, name, bytes);
        return;
    }
    let shrunk = match (footer.disk_type, header) {
        (DiskType::Dynamic | DiskType::Differencing, Some((h, hoff))) => {
            // Metadata only, as the one layout description lists it (header, BAT,
            // locator payloads, Xen's batmap), with every block dropped from the BAT —
            // and so every batmap bit cleared: the shrunk file is as valid as the
            // original, not cut where its batmap was.
            let len = bytes.len() as u64;
            let layout = SparseLayout::new(h, hoff, footer.current_size, len, len - 512);
            let tap = tap_batmap(footer, h, bytes);
            let layout = match &tap {
                Some((at, m)) => layout.with_batmap(*at, m),
                None => layout,
            };
            let meta_end = layout.metadata_end().div_ceil(512) * 512;
            if meta_end as usize > MAX_WHOLE || meta_end as usize > bytes.len() {
                return;
            }
            let mut v = bytes[..meta_end as usize].to_vec();
            let t = h.table_offset as usize;
            v[t..(h.table_offset + h.bat_size_on_disk()) as usize].fill(0xFF);
            if let Some((at, mut m)) = tap {
                let (start, end) = (
                    m.map_offset as usize,
                    (m.map_offset + m.map_area()) as usize,
                );
                v[start..end].fill(0);
                let n = batmap::map_bytes(footer.current_size) as usize;
                m.checksum = batmap::checksum(&vec![0; n], m.version);
                v[at as usize..at as usize + 512].copy_from_slice(&m.encode());
            }
            v.extend_from_slice(&footer.encode_raw());
            v
        }
        (DiskType::Fixed, _) => {
            let mut f = footer.clone();
            f.current_size = 64 << 10;
            f.original_size = 64 << 10;
            let mut v = bytes[..64 << 10].to_vec();
            v.extend_from_slice(&f.encode());
            v
        }
        _ => return,
    };
    let name = format!("{name}.shrunk");
    put(out, "open_read", &name, &shrunk);
    batmap_mutations(out, &name, &shrunk);
}

/// A `tap` file's valid batmap header and where it is, if it has one.
fn tap_batmap(footer: &Footer, h: &DynamicHeader, bytes: &[u8]) -> Option<(u64, BatmapHeader)> {
    batmap::expects_batmap(footer).filter(|&e| e)?;
    let at = batmap::header_offset(h.table_offset, h.max_table_entries);
    let raw = bytes.get(usize::try_from(at).ok()?..)?;
    let m = BatmapHeader::decode(raw)?;
    let footer_at = bytes.len() as u64 - 512;
    m.validate(footer.current_size, h.max_table_entries, footer_at)
        .is_empty()
        .then_some((at, m))
}

/// Seeds broken on purpose in a `tap` file's batmap — the damage the `open_vs_check`
/// differential must grade alike (a strict open refuses what `check` calls an error):
/// the footer written over the batmap header (a file cut there), a bit set for an
/// unallocated block (checksum kept right), and a checksum that no longer matches.
fn batmap_mutations(out: &Path, name: &str, bytes: &[u8]) {
    let Ok(footer) = Footer::decode(&bytes[bytes.len() - FOOTER_SIZE..]) else {
        return;
    };
    let hoff = footer.data_offset as usize;
    let Some(h) = bytes
        .get(hoff..hoff.saturating_add(HEADER_SIZE))
        .and_then(|raw| DynamicHeader::decode(raw).ok())
    else {
        return;
    };
    let Some((at, m)) = tap_batmap(&footer, &h, bytes) else {
        return;
    };
    let (at, map) = (at as usize, m.map_offset as usize);
    let mut cookie = bytes.to_vec();
    cookie[at..at + 512].copy_from_slice(&bytes[bytes.len() - FOOTER_SIZE..]);
    let mut checksum = bytes.to_vec();
    checksum[at + 24] ^= 0x5A;
    put(out, "open_read", &format!("{name}.batmap-cookie"), &cookie);
    put(
        out,
        "open_read",
        &format!("{name}.batmap-checksum"),
        &checksum,
    );
    let t = h.table_offset as usize;
    let entries = bytes.get(t..).unwrap_or_default().chunks_exact(4);
    let unused = entries
        .take(h.max_table_entries as usize)
        .position(|e| e == [0xFF; 4]);
    if let Some(n) = unused.filter(|n| (n / 8) < m.map_area() as usize) {
        let mut bit = bytes.to_vec();
        bit[map + n / 8] |= 0x80 >> (n % 8);
        let len = batmap::map_bytes(footer.current_size) as usize;
        let mut m = m;
        m.checksum = batmap::checksum(&bit[map..map + len], m.version);
        bit[at..at + 512].copy_from_slice(&m.encode());
        put(out, "open_read", &format!("{name}.batmap-bit"), &bit);
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("synth") if args.len() == 2 => synth(Path::new(&args[1])),
        Some("extract") if args.len() >= 2 => {
            let out = PathBuf::from(&args[1]);
            for f in &args[2..] {
                let path = Path::new(f);
                let Ok(bytes) = fs::read(path) else {
                    eprintln!("skipping {f}: unreadable");
                    continue;
                };
                // Name seeds after the file and its parent directory.
                let name = path
                    .iter()
                    .rev()
                    .take(2)
                    .collect::<Vec<_>>()
                    .into_iter()
                    .rev()
                    .map(|c| c.to_string_lossy().into_owned())
                    .collect::<Vec<_>>()
                    .join("_");
                extract(&out, &name, &bytes);
            }
        }
        _ => {
            eprintln!("usage: seedgen synth <out-dir> | seedgen extract <out-dir> FILE...");
            std::process::exit(2);
        }
    }
}
