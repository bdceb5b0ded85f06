//! Helpers of the CLI integration tests: running the `vhdkit` binary and reading disks
//! through it, the fixtures. Everything that is not about the CLI — generators, the
//! fixtures' content pattern, the byte model, the SIGKILL harness, the external readers
//! (qemu-img, vhdiinfo, pyvhdi; a missing one fails the test), byte comparisons — comes
//! from `vhdkit-testkit` and is re-exported here.

// Each test binary uses a different subset of these helpers.
#![allow(dead_code, unused_imports)]

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::Value;

pub use vhdkit_testkit::*;

/// Exit codes of the CLI contract.
pub const EXIT_OK: i32 = 0;
pub const EXIT_DIFFERENT: i32 = 1;
pub const EXIT_USAGE: i32 = 2;
pub const EXIT_FAILED: i32 = 3;

// ---------------------------------------------------------------------------------------
// Running vhdkit
// ---------------------------------------------------------------------------------------

/// Path of the binary under test.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_vhdkit")
}

/// Runs `vhdkit ARGS` with empty stdin.
pub fn vhdkit<I, S>(args: I) -> Run
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    Run::from_output(vhdkit_output(args))
}

/// Runs `vhdkit ARGS` with empty stdin; its raw output.
pub fn vhdkit_output<I, S>(args: I) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    output(Command::new(bin()).args(args).stdin(Stdio::null()))
}

/// Starts `cmd` (again after wine's hiccup: see [`started`]).
pub fn spawn(cmd: &mut Command) -> std::process::Child {
    started(|| cmd.spawn())
}

/// Runs `cmd` to completion and returns its output (again after wine's hiccup).
pub fn output(cmd: &mut Command) -> Output {
    started(|| cmd.output())
}

/// What `start` returns once it started the process. Wine (the Windows build's tests,
/// .ci/windows/run-tests) now and then fails to create a process with
/// ERROR_INTERNAL_ERROR (1359) before it runs: a harness hiccup, not vhdkit's — the
/// command never started, so it is started again (a few times).
fn started<T>(mut start: impl FnMut() -> std::io::Result<T>) -> T {
    let mut attempt = 0;
    loop {
        match start() {
            Err(e) if cfg!(windows) && e.raw_os_error() == Some(1359) && attempt < 5 => {
                attempt += 1;
                std::thread::sleep(std::time::Duration::from_millis(200));
            }
            r => return r.expect("running vhdkit"),
        }
    }
}

/// Starts `vhdkit args… --progress json`, waits for its first progress line (so its
/// signal handlers are installed), sends it `signal` with `kill` (`-INT`, `-TERM`,
/// `-HUP`), and returns the exit code and the rest of stderr.
pub fn interrupt_with<S: AsRef<OsStr>>(signal: &str, args: &[S]) -> (Option<i32>, String) {
    use std::io::{BufRead, BufReader};
    let mut child = Command::new(bin())
        .args(args)
        .args(["--progress", "json"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut lines = BufReader::new(child.stderr.take().expect("stderr")).lines();
    let first = lines.next().expect("a first line").expect("read");
    assert!(first.starts_with('{'), "{first}");
    let sent = Command::new("kill")
        .args([signal, &child.id().to_string()])
        .status()
        .expect("run kill");
    assert!(sent.success());
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    let t = std::time::Instant::now();
    let status = child.wait().expect("wait");
    assert!(t.elapsed() < std::time::Duration::from_secs(60));
    (status.code(), rest.join("\n"))
}

/// Runs `vhdkit ARGS` in directory `dir`.
pub fn vhdkit_in<I, S>(dir: &Path, args: I) -> Run
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    Run::from_output(output(
        Command::new(bin())
            .current_dir(dir)
            .args(args)
            .stdin(Stdio::null()),
    ))
}

/// Runs `vhdkit ARGS` feeding `input` on stdin.
pub fn vhdkit_stdin<I, S>(args: I, input: &[u8]) -> Run
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    use std::io::Write;
    let mut child = spawn(
        Command::new(bin())
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
    );
    let mut stdin = child.stdin.take().expect("piped stdin");
    let data = input.to_vec();
    let feeder = std::thread::spawn(move || {
        // The child may exit early (e.g. refusing the write): ignore a broken pipe.
        let _ = stdin.write_all(&data);
    });
    let o = child.wait_with_output().expect("waiting for vhdkit");
    feeder.join().expect("stdin feeder");
    Run::from_output(o)
}

/// Asserts the failure contract: exit 3 and exactly one stderr line starting `vhdkit:`.
/// Returns that line.
pub fn assert_failed_one_line(r: &Run) -> String {
    assert_no_panic(r);
    assert_eq!(
        r.code,
        EXIT_FAILED,
        "expected exit 3; stderr: {}; stdout: {}",
        r.stderr,
        r.stdout_str()
    );
    let lines: Vec<&str> = r.stderr.lines().collect();
    assert_eq!(
        lines.len(),
        1,
        "expected one stderr line, got: {:?}",
        r.stderr
    );
    assert!(
        lines[0].starts_with("vhdkit:"),
        "stderr line must start with `vhdkit:`: {:?}",
        lines[0]
    );
    lines[0].to_owned()
}

/// Asserts the failure contract of a command run with `--json`: exit `code` and stderr
/// exactly one line, a JSON object with the fields of docs/json.md ("Errors"). Returns
/// the object.
#[track_caller]
pub fn assert_failed_json(r: &Run, code: i32) -> Value {
    assert_no_panic(r);
    assert_eq!(
        r.code,
        code,
        "expected exit {code}; stderr: {}; stdout: {}",
        r.stderr,
        r.stdout_str()
    );
    let lines: Vec<&str> = r.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "expected one stderr line: {:?}", r.stderr);
    let v: Value = serde_json::from_str(lines[0])
        .unwrap_or_else(|e| panic!("the error is not JSON ({e}): {:?}", lines[0]));
    assert_eq!(v["schema"], 1, "{v}");
    assert!(v["message"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
    assert!(v["kind"].as_str().is_some_and(|k| !k.is_empty()), "{v}");
    let hex = v["hresult"].as_str().expect("hresult is a string");
    let value = v["hresult_value"]
        .as_u64()
        .expect("hresult_value is a number");
    assert_eq!(hex, format!("0x{value:08X}"), "{v}");
    assert_eq!(v["exit_code"], code, "{v}");
    v
}

/// `vhdkit create` with the given extra arguments; asserts success.
pub fn create(path: &Path, args: &[&str]) {
    let mut a: Vec<&OsStr> = vec![OsStr::new("create"), path.as_os_str()];
    a.extend(args.iter().map(OsStr::new));
    vhdkit(a).ok();
}

/// Writes `data` at `offset` with `vhdkit write --input FILE` (extra args appended).
pub fn write_at(disk: &Path, offset: u64, data: &[u8], extra: &[&str]) {
    let r = try_write_at(disk, offset, data, extra);
    assert_eq!(
        r.code,
        EXIT_OK,
        "vhdkit write {} at {offset} ({} bytes) failed: {}",
        disk.display(),
        data.len(),
        r.stderr
    );
}

/// Like [`write_at`], returning the run instead of asserting.
pub fn try_write_at(disk: &Path, offset: u64, data: &[u8], extra: &[&str]) -> Run {
    let input = tempfile::NamedTempFile::new().expect("temp input");
    std::fs::write(input.path(), data).expect("writing the input");
    let off = offset.to_string();
    let mut a: Vec<&OsStr> = vec![
        OsStr::new("write"),
        disk.as_os_str(),
        OsStr::new("--offset"),
        OsStr::new(&off),
        OsStr::new("--input"),
        input.path().as_os_str(),
    ];
    a.extend(extra.iter().map(OsStr::new));
    vhdkit(a)
}

/// The whole virtual disk through `vhdkit read` (to stdout).
pub fn read_all(disk: &Path) -> Vec<u8> {
    vhdkit(["read".as_ref(), disk.as_os_str()]).ok().stdout
}

/// `vhdkit read --offset --length` to stdout.
pub fn read_range(disk: &Path, offset: u64, len: u64) -> Vec<u8> {
    let (o, l) = (offset.to_string(), len.to_string());
    vhdkit([
        "read".as_ref(),
        disk.as_os_str(),
        "--offset".as_ref(),
        o.as_ref(),
        "--length".as_ref(),
        OsStr::new(&l),
    ])
    .ok()
    .stdout
}

/// `vhdkit info --json`.
pub fn info(disk: &Path) -> Value {
    vhdkit(["info".as_ref(), disk.as_os_str(), "--json".as_ref()])
        .ok()
        .json()
}

/// `vhdkit info --json` virtual_size.
pub fn vhdkit_size(disk: &Path) -> u64 {
    info(disk)["virtual_size"]
        .as_u64()
        .expect("virtual_size is a number")
}

// ---------------------------------------------------------------------------------------
// Files and fixtures
// ---------------------------------------------------------------------------------------

/// A path as the `&str` argument of a command (test paths are UTF-8).
pub fn p(path: &Path) -> &str {
    path.to_str().expect("UTF-8 path")
}

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn fixtures() -> PathBuf {
    root().join("fixtures")
}

pub fn fixture(rel: &str) -> PathBuf {
    let p = fixtures().join(rel);
    assert!(
        p.exists(),
        "fixture {} is missing (run fixtures/make-fixtures.sh)",
        p.display()
    );
    p
}

// ---------------------------------------------------------------------------------------
// Content
// ---------------------------------------------------------------------------------------

/// Writes `data` at `offset` both into the disk (vhdkit write) and into the model.
pub fn write_both(disk: &Path, model: &mut Model, offset: u64, data: &[u8]) {
    write_at(disk, offset, data, &[]);
    model.write(offset, data);
}

/// The command `vhdkit read DISK [--offset O --length L]` (to stdout).
pub fn vhdkit_read_cmd(disk: &Path, range: Option<(u64, u64)>) -> Command {
    let mut c = Command::new(bin());
    c.arg("read").arg(disk);
    if let Some((o, l)) = range {
        c.args(["--offset", &o.to_string(), "--length", &l.to_string()]);
    }
    c
}

// ---------------------------------------------------------------------------------------
// The JSON contract
// ---------------------------------------------------------------------------------------

/// The JSON Schema of one document type, `docs/schema/NAME.schema.json`.
pub fn json_schema(name: &str) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("docs/schema")
        .join(format!("{name}.schema.json"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Asserts that `doc` is valid against `docs/schema/NAME.schema.json` (strict schemas:
/// a field they do not describe fails too), listing every violation.
#[track_caller]
pub fn assert_schema(name: &str, doc: &Value) {
    let validator = jsonschema::validator_for(&json_schema(name))
        .unwrap_or_else(|e| panic!("docs/schema/{name}.schema.json is not a schema: {e}"));
    let errors: Vec<String> = validator
        .iter_errors(doc)
        .map(|e| format!("  {} at {:?}", e, e.instance_path().to_string()))
        .collect();
    assert!(
        errors.is_empty(),
        "not a valid `{name}` document ({} problem(s)):\n{}\n{doc}",
        errors.len(),
        errors.join("\n")
    );
}

/// A file of `len` random bytes (from `/dev/urandom`): data in which no block is zero,
/// for operations that should take a while.
pub fn random_file(path: &Path, len: u64) {
    use std::io::Read;
    let mut data = Vec::with_capacity(len as usize);
    std::fs::File::open("/dev/urandom")
        .expect("urandom")
        .take(len)
        .read_to_end(&mut data)
        .expect("read urandom");
    std::fs::write(path, &data).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
}
