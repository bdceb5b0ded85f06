//! Property tests: random sequences of writes (any offset, up to about three blocks long,
//! random, constant or all-zero content) into a dynamic disk and into a differencing
//! disk over a pre-filled parent, compared after every write with a plain byte-array
//! model, then once more in full, and again after reopening the file from disk.
//!
//! 32 cases per property by default; `PROPTEST_CASES=1000 cargo test` runs more.

mod common;

use std::path::Path;

use common::{assert_bytes_eq, create, create_child, read_all, read_range, Rng};
use proptest::prelude::*;
use vhdkit_format::check::check;
use vhdkit_format::{Disk, DiskKind, OpenOptions};

const SIZE: u64 = 4 << 20;
const BLOCK: u32 = 64 * 1024;
const MAX_LEN: u64 = 3 * BLOCK as u64 + 1000;

#[derive(Debug, Clone)]
enum Content {
    Zeros,
    Fill(u8),
    Random(u64),
}

#[derive(Debug, Clone)]
struct Write {
    offset: u64,
    len: u64,
    content: Content,
}

impl Write {
    fn bytes(&self) -> Vec<u8> {
        let n = self.len as usize;
        match self.content {
            Content::Zeros => vec![0; n],
            Content::Fill(b) => vec![b; n],
            Content::Random(seed) => Rng::xorshift_star(seed).bytes(n),
        }
    }
}

fn content() -> impl Strategy<Value = Content> {
    prop_oneof![
        2 => Just(Content::Zeros),
        1 => any::<u8>().prop_map(Content::Fill),
        4 => any::<u64>().prop_map(Content::Random),
    ]
}

/// Offsets biased toward block and sector boundaries, where the bugs live.
fn offset() -> impl Strategy<Value = u64> {
    let bs = u64::from(BLOCK);
    prop_oneof![
        2 => 0..SIZE,
        1 => (0..SIZE / bs, -3i64..=3).prop_map(move |(b, d)| {
            (b * bs).saturating_add_signed(d).min(SIZE - 1)
        }),
        1 => (0..SIZE / 512).prop_map(|s| s * 512),
    ]
}

fn write_op() -> impl Strategy<Value = Write> {
    (offset(), 1..=MAX_LEN, content()).prop_map(|(offset, len, content)| Write {
        offset,
        len: len.min(SIZE - offset),
        content,
    })
}

fn config() -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(32);
    ProptestConfig {
        cases,
        // Each case creates files: keep shrinking short.
        max_shrink_iters: 256,
        ..ProptestConfig::default()
    }
}

/// Applies `writes` to the disk at `path` (starting from `model`), checking the touched
/// range after each write, the whole disk at the end, and the whole disk after
/// reopening; then checks that the image is clean.
fn run(path: &Path, mut model: Vec<u8>, writes: &[Write]) -> Result<(), TestCaseError> {
    let disk = Disk::open_rw(path).expect("open for writing");
    for (i, w) in writes.iter().enumerate() {
        let data = w.bytes();
        disk.write_at(&data, w.offset).expect("write");
        let o = w.offset as usize;
        model[o..o + data.len()].copy_from_slice(&data);
        // Read a little around the write too, to catch spills.
        let from = w.offset.saturating_sub(700);
        let to = (w.offset + w.len + 700).min(SIZE);
        let got = read_range(&disk, from, (to - from) as usize);
        prop_assert!(
            got == model[from as usize..to as usize],
            "after write {i} ({w:?}) the range {from}..{to} differs from the model"
        );
    }
    disk.flush().expect("flush");
    assert_bytes_eq("whole disk before reopening", &read_all(&disk), &model);
    drop(disk);

    let reopened = Disk::open(path).expect("reopen");
    assert_bytes_eq("whole disk after reopening", &read_all(&reopened), &model);
    drop(reopened);

    let report = check(path, &OpenOptions::new()).expect("check");
    let problems: Vec<String> = report.problems().map(|(_, p)| p.to_string()).collect();
    prop_assert!(report.is_clean(), "check after the writes: {problems:#?}");
    Ok(())
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn dynamic_disk_random_writes_match_a_byte_array_model(
        writes in prop::collection::vec(write_op(), 1..24)
    ) {
        let dir = common::fast_tempdir();
        let path = create(dir.path(), "d.vhd", DiskKind::Dynamic, SIZE, BLOCK);
        run(&path, vec![0; SIZE as usize], &writes)?;
    }

    #[test]
    fn differencing_disk_random_writes_over_a_filled_parent_match_a_byte_array_model(
        writes in prop::collection::vec(write_op(), 1..24),
        parent_seed in any::<u64>(),
    ) {
        let dir = common::fast_tempdir();
        // The parent has bigger blocks than the child, every other one of them written
        // (the rest read as zeros), so child blocks straddle present and absent data.
        let parent = create(dir.path(), "p.vhd", DiskKind::Dynamic, SIZE, 4 * BLOCK);
        let mut model = vec![0u8; SIZE as usize];
        {
            let disk = Disk::open_rw(&parent).expect("open parent");
            let chunk = 4 * u64::from(BLOCK);
            for (k, at) in (0..SIZE).step_by(chunk as usize).enumerate() {
                if k % 2 == 0 {
                    let data = Rng::xorshift_star(parent_seed ^ at).bytes(chunk as usize - 1536);
                    disk.write_at(&data, at + 1024).expect("fill parent");
                    let o = at as usize + 1024;
                    model[o..o + data.len()].copy_from_slice(&data);
                }
            }
            disk.flush().expect("flush parent");
        }
        let parent_bytes = std::fs::read(&parent).expect("read parent");
        let child = create_child(dir.path(), "c.vhd", &parent, BLOCK);

        run(&child, model, &writes)?;

        prop_assert!(
            std::fs::read(&parent).expect("read parent") == parent_bytes,
            "writing the child changed the parent file"
        );
    }
}
