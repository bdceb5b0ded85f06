//! Windows: Ctrl-C in the console during a conversion rolls it back as SIGINT does on
//! Unix (`tests/ops_cli.rs`): exit code 130, "cancelled by SIGINT", no output left.
//!
//! The event comes from `GenerateConsoleCtrlEvent(CTRL_C_EVENT, 0)`, which reaches every
//! process of the console, as a Ctrl-C typed in it does. Wine gives a process a console
//! only when it runs on a terminal: `.ci/windows/run-tests` runs this test under
//! `script` (a pseudo-terminal); without a console the test fails and says so. On Unix
//! there is nothing here (the signals are tested in `tests/ops_cli.rs`).

#![cfg(windows)]

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

use common::*;
use windows_sys::Win32::System::Console::{
    GenerateConsoleCtrlEvent, SetConsoleCtrlHandler, CTRL_C_EVENT,
};

/// This test process's own answer to the Ctrl-C it sends: handled (ignored).
unsafe extern "system" fn ignore(_: u32) -> windows_sys::core::BOOL {
    1
}

#[test]
fn ctrl_c_in_the_console_rolls_a_convert_back_and_exits_130() {
    let dir = tempdir();
    let src = dir.path().join("big.img");
    {
        let chunk = Rng::xorshift_star(3).bytes(MIB as usize);
        let mut f = std::io::BufWriter::new(std::fs::File::create(&src).expect("create"));
        for _ in 0..128 {
            f.write_all(&chunk).expect("write");
        }
        f.flush().expect("flush");
    }
    let out = dir.path().join("out");
    std::fs::create_dir(&out).expect("mkdir");
    let dst = out.join("dst.vhd");
    // SAFETY: registers a handler with the right signature, for the process's life.
    assert!(unsafe { SetConsoleCtrlHandler(Some(ignore), 1) } != 0);

    let mut child = Command::new(bin())
        .args(["convert", p(&src), p(&dst), "--type", "dynamic", "--verify"])
        .args(["--progress", "json"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut lines = BufReader::new(child.stderr.take().expect("stderr")).lines();
    // The first progress line: the handler is installed, the conversion under way.
    let first = lines.next().expect("a first line").expect("read");
    assert!(first.starts_with('{'), "{first}");
    // SAFETY: no pointers; group 0 is every process of this console.
    let sent = unsafe { GenerateConsoleCtrlEvent(CTRL_C_EVENT, 0) };
    if sent == 0 {
        let e = std::io::Error::last_os_error();
        let _ = child.kill();
        panic!(
            "no console to send Ctrl-C in ({e}): run this test on a terminal (under wine: \
             `script -qec 'cargo test …' /dev/null`, as .ci/windows/run-tests does)"
        );
    }
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    let stderr = rest.join("\n");
    let code = child.wait().expect("wait").code();

    assert_eq!(code, Some(130), "{stderr}");
    assert!(stderr.contains("cancelled by SIGINT"), "{stderr}");
    let last: serde_json::Value = serde_json::from_str(stderr.lines().last().unwrap_or(""))
        .unwrap_or_else(|e| panic!("not JSON ({e}): {stderr}"));
    assert_eq!(last["kind"], "cancelled", "{last}");
    assert_eq!(last["exit_code"], 130, "{last}");
    assert!(!dst.exists());
    let left: Vec<_> = std::fs::read_dir(&out).expect("read dir").collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}
