//! Property: after any sequence of creates, deletes and overwrites made through the real
//! file-system driver (kernel ext4, ntfs-3g, mtools for FAT), filling every free range the
//! scanner reports leaves the checker clean and every surviving file identical. Few cases
//! per file system (each builds a real image), so the suite stays fast.

// Disks built by sfdisk, mkfs and loop devices: Linux only.
#![cfg(target_os = "linux")]

mod common;

use common::*;
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    Create(usize),
    Delete(usize),
    Overwrite(usize, usize),
}

fn ops() -> impl Strategy<Value = Vec<Op>> {
    prop::collection::vec(
        prop_oneof![
            3 => (1usize..400_000).prop_map(Op::Create),
            1 => any::<usize>().prop_map(Op::Delete),
            1 => (any::<usize>(), 1usize..400_000).prop_map(|(i, n)| Op::Overwrite(i, n)),
        ],
        1..16,
    )
}

/// Applies `ops` and returns the expected files. `write`/`remove` act on the file system.
fn apply(ops: &[Op], mut write: impl FnMut(&str, &[u8]), mut remove: impl FnMut(&str)) -> Files {
    let mut files = Files::new();
    let mut next = 0u64;
    for op in ops {
        match op {
            Op::Create(n) => {
                let name = format!("p{next}.bin");
                let data = content(next * 31 + *n as u64, *n);
                write(&name, &data);
                files.insert(name, data);
                next += 1;
            }
            Op::Delete(i) | Op::Overwrite(i, _) if files.is_empty() => {
                let _ = i;
            }
            Op::Delete(i) => {
                let name = files.keys().nth(i % files.len()).cloned().expect("name");
                remove(&name);
                files.remove(&name);
            }
            Op::Overwrite(i, n) => {
                let name = files.keys().nth(i % files.len()).cloned().expect("name");
                let data = content(next * 17 + *n as u64, *n);
                next += 1;
                write(&name, &data);
                files.insert(name, data);
            }
        }
    }
    files
}

fn run(fs: &'static str, size: u64, ops: &[Op]) {
    let disk = Disk::new(size);
    let part = Part {
        start: 0,
        len: size,
        fs,
    };
    let lo = disk.loopdev(&part);
    mkfs(fs, &lo.dev);
    let files = if is_fat(fs) {
        let tmp = tempfile::tempdir().expect("temp dir");
        let dev = lo.dev.clone();
        let src = tmp.path().join("src");
        apply(
            ops,
            |name, data| {
                std::fs::write(&src, data).expect("write");
                mtools(&format!("mcopy -o -i {dev} '{}' ::/{name}", src.display()));
            },
            |name| {
                mtools(&format!("mdel -i {dev} ::/{name}"));
            },
        )
    } else {
        let m = Mount::new(&lo.dev, mount_kind(fs).expect("mountable"), false);
        let root = m.path().to_path_buf();
        let files = apply(
            ops,
            |name, data| std::fs::write(root.join(name), data).expect("write"),
            |name| std::fs::remove_file(root.join(name)).expect("remove"),
        );
        m.unmount();
        files
    };
    drop(lo);
    let made = Made {
        part,
        files,
        fs_free: None,
    };
    let report = verify(&disk, &[made]);
    assert!(report.partitions[0].left_alone.is_none(), "{report:#?}");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 4, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn ext4_random_ops_free_ranges_hold_no_file_data(ops in ops()) {
        run("ext4", 24 * MIB, &ops);
    }

    #[test]
    fn ext2_random_ops_free_ranges_hold_no_file_data(ops in ops()) {
        run("ext2", 16 * MIB, &ops);
    }

    #[test]
    fn fat16_random_ops_free_ranges_hold_no_file_data(ops in ops()) {
        run("fat16", 24 * MIB, &ops);
    }

    #[test]
    fn fat32_random_ops_free_ranges_hold_no_file_data(ops in ops()) {
        run("fat32", 40 * MIB, &ops);
    }

    #[test]
    fn ntfs_random_ops_free_ranges_hold_no_file_data(ops in ops()) {
        run("ntfs", 24 * MIB, &ops);
    }
}
