//! Test support shared by vhdkit's suites (a dev-dependency only; not published).
//!
//! - [`Rng`]: the seeded generators the suites draw data, offsets and schedules from;
//! - [`Model`]: the byte-array model of a disk, and generators of [`Write`] lists;
//! - [`pattern`]: the content pattern of the fixtures, which every suite writes;
//! - the SIGKILL harness ([`timed`], [`kill_points`], [`run_and_kill`]);
//! - [`BatmapDamage`]: the blktap fixtures with an inconsistent Xen batmap;
//! - [`assert_bytes_eq`] and small file helpers ([`tempdir`], [`file_len`],
//!   [`copy_keeping_time`], …);
//! - [`disks`]: real disks over loop devices — sfdisk, mkfs, mounts, files written and
//!   checked (root and the tools of `.ci/run`);
//! - [`mbr_with_partition`]: a partition table without `sfdisk`;
//! - real partition tables written by `sfdisk` ([`sfdisk`], [`sfdisk_partitions`]);
//! - raw edits of a VHD's metadata for crafting images ([`move_locator_payload`],
//!   [`restore_parent_time`], …);
//! - the external readers that judge vhdkit's output: qemu-img ([`qemu_read_all`], …),
//!   libvhdi's `vhdiinfo` ([`vhdiinfo_field`], …) and its Python binding pyvhdi
//!   ([`pyvhdi_read_all`], …), with [`have`] and [`need`] to check they are installed.
//!   A missing reader fails the test that needs it; nothing is skipped.
//! - where the real-world images live: [`realworld_fixtures`] (copied into the
//!   repository) and [`shared_realworld`] (GPL/LGPL, outside it; passed over when absent
//!   unless `VHDKIT_REQUIRE_REALWORLD=1`).
//!
//! Nothing here depends on vhdkit's own crates: what needs them stays in each suite's
//! `common` module.

#![warn(missing_docs)]

mod blktap;
mod bytes;
pub mod disks;
mod files;
#[cfg(unix)]
mod kill;
mod libvhdi;
mod mbr;
mod model;
mod partitions;
mod pattern;
mod qemu;
mod realworld;
mod rng;
mod run;
mod vhd_bytes;
mod vhdx_readers;

pub use blktap::BatmapDamage;
pub use bytes::{all_zero, assert_bytes_eq};
pub use files::{copy_keeping_time, dir_names, fast_tempdir, file_len, tempdir, umask, Tmpfs};
#[cfg(unix)]
pub use kill::{kill_points, run_and_kill, timed, KillAt, Timing};
pub use libvhdi::{
    pyvhdi_read_all, pyvhdi_read_cmd, pyvhdi_size, vhdiinfo, vhdiinfo_field, vhdiinfo_size, PYTHON,
};
pub use mbr::mbr_with_partition;
pub use model::{mixed_writes, random_writes, Model, Write};
pub use partitions::{sfdisk, sfdisk_partitions};
pub use pattern::pattern;
pub use qemu::{
    qemu_compare, qemu_compare_raw, qemu_convert_raw, qemu_info, qemu_read_all, qemu_read_range,
    qemu_size,
};
pub use realworld::{
    realworld_fixtures, shared_realworld, workspace_root, REALWORLD_ENV, REQUIRE_REALWORLD_ENV,
};
pub use rng::{Algorithm, Rng};
pub use run::{assert_no_panic, assert_streams_eq, have, need, run_cmd, Run, Tool};
pub use vhd_bytes::{clear_locator, move_locator_payload, restore_parent_time};
pub use vhdx_readers::{
    dissect_geometry, dissect_read_all, dissect_read_ranges, libvhdi_python_read_all,
    libvhdi_python_read_ranges, vhdx_venv_python, VHDX_VENV_ENV,
};

/// One KiB.
pub const KIB: u64 = 1024;
/// One MiB.
pub const MIB: u64 = 1024 * KIB;
/// One GiB.
pub const GIB: u64 = 1024 * MIB;
/// One sector: 512 bytes.
pub const SECTOR: u64 = 512;
