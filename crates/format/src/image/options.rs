//! What kind of disk a file is, and how to open one.

/// What kind of disk a file is. The discriminants are the Virtual Server API's
/// `VMHardDiskType` values where it has one (Dynamic 0, FixedSize 1, Differencing 2,
/// HostDrive 4); they are not the footer's disk-type codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum DiskKind {
    /// Dynamically expanding (footer type 3).
    Dynamic = 0,
    /// Fixed size (footer type 2).
    Fixed = 1,
    /// Differencing (footer type 4).
    Differencing = 2,
    /// A vhdkit host-drive stub linking a host block device.
    HostDrive = 4,
    /// A raw image without any VHD structure (not a Virtual Server type).
    Raw = 100,
}

impl DiskKind {
    /// The Virtual Server `VMHardDiskType` value, `None` for raw images.
    pub fn vm_hard_disk_type(self) -> Option<u32> {
        match self {
            DiskKind::Raw => None,
            k => Some(k as u32),
        }
    }

    /// Lower-case name as the CLI spells it.
    pub fn name(self) -> &'static str {
        match self {
            DiskKind::Dynamic => "dynamic",
            DiskKind::Fixed => "fixed",
            DiskKind::Differencing => "differencing",
            DiskKind::HostDrive => "host-drive",
            DiskKind::Raw => "raw",
        }
    }
}

impl std::fmt::Display for DiskKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// How to open an image.
#[derive(Debug, Clone)]
pub struct OpenOptions {
    /// Open the top file for writing (parents are always read-only).
    pub writable: bool,
    /// Refuse bad checksums, and a Xen batmap that `check` calls inconsistent, instead
    /// of reading with a warning (docs/format.md, "Xen's batmap").
    pub strict: bool,
    /// Accept a parent whose unique id differs from the one the child recorded.
    pub ignore_parent_id: bool,
    /// Accept a host drive whose first/last MiB changed since it was linked.
    pub ignore_host_drive_identity: bool,
    /// Deepest differencing chain accepted.
    pub max_depth: usize,
    /// Use this file as the top disk's parent instead of searching the locators.
    pub parent: Option<std::path::PathBuf>,
    /// Do not resolve parents (inspect one file on its own).
    pub no_parents: bool,
    /// Which host drives a host-drive stub may link to (by default none: a stub names a
    /// host path chosen by whoever wrote the stub). `docs/security.md`.
    pub host_drives: HostDrives,
    /// Open the file named (not its parents) as a raw image even when it carries
    /// another format's signature ([`Disk::open_any`](crate::Disk::open_any) only). Off by default: a qcow2,
    /// VHDX, VMDK or VDI file, or a VHD too damaged to open, is refused rather than
    /// taken for raw bytes.
    pub force_raw: bool,
    /// Follow a parent's absolute locator (or absolute parent name) that points outside
    /// the child's folder tree. Off by default: a crafted child must not make vhdkit open
    /// any file on the host. Relative locators and the child's own folder are always
    /// searched. `docs/security.md`.
    pub absolute_parents: bool,
}

/// Which host drives a host-drive stub may link to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HostDrives {
    /// Refuse every host-drive stub (the default).
    #[default]
    Refuse,
    /// Follow stubs that name a block device.
    BlockDevices,
    /// Follow stubs that name a block device or a regular file.
    BlockDevicesAndFiles,
}

/// Default cap on chain depth.
pub const DEFAULT_MAX_DEPTH: usize = 64;

impl Default for OpenOptions {
    fn default() -> Self {
        OpenOptions {
            writable: false,
            strict: false,
            ignore_parent_id: false,
            ignore_host_drive_identity: false,
            max_depth: DEFAULT_MAX_DEPTH,
            parent: None,
            no_parents: false,
            host_drives: HostDrives::Refuse,
            absolute_parents: false,
            force_raw: false,
        }
    }
}

impl OpenOptions {
    /// Read-only, lenient, parents resolved.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets [`OpenOptions::writable`].
    pub fn writable(mut self, yes: bool) -> Self {
        self.writable = yes;
        self
    }

    /// Sets [`OpenOptions::strict`].
    pub fn strict(mut self, yes: bool) -> Self {
        self.strict = yes;
        self
    }

    /// Sets [`OpenOptions::ignore_parent_id`].
    pub fn ignore_parent_id(mut self, yes: bool) -> Self {
        self.ignore_parent_id = yes;
        self
    }

    /// Sets [`OpenOptions::ignore_host_drive_identity`].
    pub fn ignore_host_drive_identity(mut self, yes: bool) -> Self {
        self.ignore_host_drive_identity = yes;
        self
    }

    /// Sets [`OpenOptions::parent`].
    pub fn parent(mut self, path: impl AsRef<std::path::Path>) -> Self {
        self.parent = Some(path.as_ref().to_owned());
        self
    }

    /// Clears [`OpenOptions::parent`].
    pub fn parent_none(mut self) -> Self {
        self.parent = None;
        self
    }

    /// Sets [`OpenOptions::host_drives`].
    pub fn host_drives(mut self, which: HostDrives) -> Self {
        self.host_drives = which;
        self
    }

    /// Sets [`OpenOptions::absolute_parents`].
    pub fn absolute_parents(mut self, yes: bool) -> Self {
        self.absolute_parents = yes;
        self
    }

    /// Sets [`OpenOptions::no_parents`].
    pub fn no_parents(mut self, yes: bool) -> Self {
        self.no_parents = yes;
        self
    }
}
