//! Where the real-world images (made by other programs) live.
//!
//! - The permissively licensed ones (MIT, Apache-2.0, BSD-2-Clause, and Xen's blktap
//!   set) are copied into the repository: `fixtures/realworld/` and `fixtures/blktap/`
//!   ([`realworld_fixtures`]). Every clone has them.
//! - The GPL-2.0 and LGPL-3.0 ones must not be copied: they stay in `../shared/realworld`
//!   beside the workspace (or wherever `VHDKIT_REALWORLD` points), present in the
//!   workplace and in CI but not in a user's clone ([`shared_realworld`]). Where that
//!   folder is absent, a test says so in one line and passes over those images — unless
//!   `VHDKIT_REQUIRE_REALWORLD=1` (set by `.ci/run`), which makes their absence a
//!   failure.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Once;

/// The environment variable naming the folder of the GPL/LGPL real-world images
/// (default: `../shared/realworld` beside the workspace).
pub const REALWORLD_ENV: &str = "VHDKIT_REALWORLD";

/// The environment variable that, set to `1`, makes a missing [`shared_realworld`] folder
/// fail the test instead of being passed over (CI sets it).
pub const REQUIRE_REALWORLD_ENV: &str = "VHDKIT_REQUIRE_REALWORLD";

/// The workspace's root directory.
pub fn workspace_root() -> PathBuf {
    let testkit = Path::new(env!("CARGO_MANIFEST_DIR"));
    testkit
        .ancestors()
        .nth(2)
        .expect("crates/testkit lies two levels below the workspace root")
        .to_owned()
}

/// `fixtures/realworld/`: the permissively licensed real-world images copied into the
/// repository (origin and license in `fixtures/README.md`).
#[track_caller]
pub fn realworld_fixtures() -> PathBuf {
    let dir = workspace_root().join("fixtures/realworld");
    assert!(
        dir.is_dir(),
        "{} is missing from the repository",
        dir.display()
    );
    dir
}

/// The folder of the GPL/LGPL real-world images, which stay outside the repository:
/// `$VHDKIT_REALWORLD`, else `../shared/realworld` beside the workspace. `None` when it
/// is absent, after saying so on stderr once per test program (one line, shown even
/// though the harness captures the test's output); with `VHDKIT_REQUIRE_REALWORLD=1` its
/// absence fails the test instead.
#[track_caller]
pub fn shared_realworld() -> Option<PathBuf> {
    let dir = std::env::var_os(REALWORLD_ENV)
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let root = workspace_root();
            root.parent().unwrap_or(&root).join("shared/realworld")
        });
    if dir.is_dir() {
        return Some(dir);
    }
    let required = std::env::var_os(REQUIRE_REALWORLD_ENV).is_some_and(|v| v == "1");
    assert!(
        !required,
        "{} is absent and {REQUIRE_REALWORLD_ENV}=1: the GPL/LGPL real-world images are \
         required here (set {REALWORLD_ENV} to their folder)",
        dir.display()
    );
    static SAID: Once = Once::new();
    SAID.call_once(|| {
        // Straight to the process's stderr: the test harness captures `eprintln!`.
        let _ = writeln!(
            std::io::stderr(),
            "note: {} is absent: passing over the GPL/LGPL real-world images \
             ({REQUIRE_REALWORLD_ENV}=1 makes this a failure)",
            dir.display()
        );
    });
    None
}
