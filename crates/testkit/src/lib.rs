//! Test support shared by vhdkit's suites (a dev-dependency only; not published).
//!
//! - [`Rng`]: the seeded generators the suites draw data, offsets and schedules from;
//! - [`Model`]: the byte-array model of a disk, and generators of [`Write`] lists;
//! - [`BatmapDamage`]: the blktap fixtures with an inconsistent Xen batmap;
//! - [`assert_bytes_eq`] and small file helpers ([`tempdir`], [`file_len`], …);
//! - the external readers that judge vhdkit's output: qemu-img ([`qemu_read_all`], …),
//!   libvhdi's `vhdiinfo` ([`vhdiinfo_field`], …) and its Python binding pyvhdi
//!   ([`pyvhdi_read_all`], …), with [`have`] and [`need`] to check they are installed.
//!   A missing reader fails the test that needs it; nothing is skipped.
//!
//! Nothing here depends on vhdkit's own crates: what needs them stays in each suite's
//! `common` module.

#![warn(missing_docs)]

mod blktap;
mod bytes;
mod files;
mod libvhdi;
mod model;
mod qemu;
mod rng;
mod run;

pub use blktap::BatmapDamage;
pub use bytes::{all_zero, assert_bytes_eq};
pub use files::{dir_names, fast_tempdir, file_len, tempdir};
pub use libvhdi::{
    pyvhdi_read_all, pyvhdi_read_cmd, pyvhdi_size, vhdiinfo, vhdiinfo_field, vhdiinfo_size, PYTHON,
};
pub use model::{mixed_writes, random_writes, Model, Write};
pub use qemu::{
    qemu_compare, qemu_compare_raw, qemu_convert_raw, qemu_info, qemu_read_all, qemu_read_range,
    qemu_size,
};
pub use rng::{Algorithm, Rng};
pub use run::{assert_no_panic, assert_streams_eq, have, need, run_cmd, Run, Tool};

/// One KiB.
pub const KIB: u64 = 1024;
/// One MiB.
pub const MIB: u64 = 1024 * KIB;
/// One GiB.
pub const GIB: u64 = 1024 * MIB;
/// One sector: 512 bytes.
pub const SECTOR: u64 = 512;
