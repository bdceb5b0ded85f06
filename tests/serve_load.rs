//! `vhdkit serve` under load: clients that never read their replies, many connections
//! at once, idle connections, a cap on connections, and a disk as fragmented as they
//! come (every other sector from the parent). The server holds its bounds (peak RSS read
//! from /proc), keeps serving the clients that behave, and queues what it cannot take
//! yet. Speed lives in `benches/serve-vs-qemu-nbd.sh`, not here.

// Over Unix domain sockets and NBD clients: Unix only.
#![cfg(unix)]

mod serve_support;

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serve_support::*;

/// The bound of issue 19: 16 clients that never read keep the server under this.
const RSS_LIMIT: u64 = 512 << 20;

/// Watches the server's resident memory every 10 ms; `over` turns true (and stays) once
/// it passes [`RSS_LIMIT`], so that a broken server is stopped before it eats the
/// machine.
struct RssWatch {
    stop: Arc<AtomicBool>,
    over: Arc<AtomicBool>,
    max: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl RssWatch {
    fn start(pid: u32) -> RssWatch {
        let stop = Arc::new(AtomicBool::new(false));
        let over = Arc::new(AtomicBool::new(false));
        let max = Arc::new(AtomicU64::new(0));
        let thread = {
            let (stop, over, max) = (stop.clone(), over.clone(), max.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    let Ok(s) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
                        return;
                    };
                    let rss = s
                        .lines()
                        .find(|l| l.starts_with("VmRSS:"))
                        .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
                        .unwrap_or(0)
                        * 1024;
                    max.fetch_max(rss, Ordering::SeqCst);
                    if rss > RSS_LIMIT {
                        over.store(true, Ordering::SeqCst);
                        // Stop a runaway server at once.
                        let _ = Command::new("kill")
                            .args(["-KILL", &pid.to_string()])
                            .status();
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
            })
        };
        RssWatch {
            stop,
            over,
            max,
            thread: Some(thread),
        }
    }

    /// Waits (at most 60 s) until the RSS has not grown for 2 s, or passed the limit.
    fn settle(&self) {
        let mut last = 0;
        let mut still = 0;
        for _ in 0..600 {
            if self.over.load(Ordering::SeqCst) {
                return;
            }
            let now = self.max.load(Ordering::SeqCst);
            if now > last {
                last = now;
                still = 0;
            } else {
                still += 1;
                if still >= 20 {
                    return;
                }
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn assert_under(&self, when: &str) {
        assert!(
            !self.over.load(Ordering::SeqCst),
            "{when}: the server's RSS passed {} MiB (killed)",
            RSS_LIMIT >> 20
        );
    }
}

impl Drop for RssWatch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A client that asks for `count` reads of `len` bytes at `offset` and never reads a
/// reply.
fn never_reads(socket: &std::path::Path, count: u64, offset: u64, len: u32) -> Raw {
    let mut c = Raw::open(socket);
    let mut b = Vec::with_capacity(count as usize * 28);
    for i in 0..count {
        b.extend_from_slice(&REQUEST_MAGIC.to_be_bytes());
        b.extend_from_slice(&0u16.to_be_bytes());
        b.extend_from_slice(&CMD_READ.to_be_bytes());
        b.extend_from_slice(&i.to_be_bytes());
        b.extend_from_slice(&offset.to_be_bytes());
        b.extend_from_slice(&len.to_be_bytes());
    }
    std::io::Write::write_all(&mut c.s, &b).expect("sending the requests");
    c
}

#[test]
fn serve_sixteen_clients_that_never_read_keep_memory_bounded_and_a_reader_is_served() {
    need("nbdcopy", &["--version"]);
    let dir = tempfile::tempdir().expect("temp dir");
    let disk = alternating_disk(dir.path(), 64);
    let want = read_all(&disk);
    let served = serve([disk.as_os_str(), "--read-only".as_ref()]);
    let watch = RssWatch::start(served.pid());
    let socket = served.socket();

    // 16 clients ask for 512 reads of 32 MiB each (the protocol's largest), the
    // map of each one a piece per sector, and read nothing.
    let stalled: Vec<Raw> = (0..16)
        .map(|i| never_reads(&socket, 512, (i % 2) * (32 << 20), 32 << 20))
        .collect();
    watch.settle();
    watch.assert_under("with 16 clients that never read");
    eprintln!(
        "RSS with 16 clients that never read: {} MiB",
        watch.max.load(Ordering::SeqCst) >> 20
    );

    // A client that reads is served meanwhile, byte for byte.
    let out = dir.path().join("copy.raw");
    let copied = Command::new("nbdcopy")
        .arg(&served.uri)
        .arg(&out)
        .stdin(Stdio::null())
        .output()
        .expect("running nbdcopy");
    watch.assert_under("while nbdcopy ran");
    assert!(
        copied.status.success(),
        "nbdcopy failed beside clients that never read: {}",
        String::from_utf8_lossy(&copied.stderr)
    );
    assert!(
        std::fs::read(&out).expect("nbdcopy output") == want,
        "nbdcopy read other bytes"
    );
    let peak = proc_status_bytes(served.pid(), "VmHWM");
    assert!(
        peak < RSS_LIMIT,
        "peak RSS {} MiB (limit {} MiB)",
        peak >> 20,
        RSS_LIMIT >> 20
    );
    eprintln!(
        "peak RSS {} MiB (watched max {} MiB)",
        peak >> 20,
        watch.max.load(Ordering::SeqCst) >> 20
    );
    drop(watch);
    drop(stalled);
    served.stop().clean();
}

#[test]
fn serve_bytes_read_counts_only_replies_sent() {
    let dir = tempfile::tempdir().expect("temp dir");
    let top = chain_copy(dir.path());
    let served = serve([top.as_os_str(), "--read-only".as_ref()]);
    let socket = served.socket();
    // 64 reads of the whole 4 MiB disk, never read: 256 MiB asked, nothing received.
    let stalled = never_reads(&socket, 64, 0, 4 << 20);
    std::thread::sleep(Duration::from_millis(500));
    let mut c = Raw::open(&socket);
    for i in 0..4 {
        assert_eq!(c.read(i * 65536, 65536).error, 0);
    }
    drop(c);
    let ended = served.stop().clean();
    drop(stalled);
    // What the reader got, and at most the few replies of the stalled client that fit
    // into its socket's buffer before it stopped reading (replies wholly sent).
    let read = ended.summary["bytes_read"].as_u64().expect("bytes_read");
    assert!(
        (4 * 65536..4 * 65536 + (16 << 20)).contains(&read),
        "bytes_read {read}: counts replies that were never sent"
    );
}

#[test]
fn serve_twelve_multi_conn_copies_at_once_all_succeed() {
    need("nbdcopy", &["--version"]);
    let dir = tempfile::tempdir().expect("temp dir");
    let top = chain_copy(dir.path());
    let want = read_all(&top);
    let served = serve([top.as_os_str(), "--read-only".as_ref()]);
    // 12 × 4 = 48 connections at once.
    let copies: Vec<_> = (0..12)
        .map(|i| {
            let out = dir.path().join(format!("copy{i}.raw"));
            let child = Command::new("nbdcopy")
                .arg("--connections=4")
                .arg(&served.uri)
                .arg(&out)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .expect("starting nbdcopy");
            (child, out)
        })
        .collect();
    let mut failed = Vec::new();
    for (child, out) in copies {
        let o = child.wait_with_output().expect("waiting for nbdcopy");
        if !o.status.success() {
            failed.push(String::from_utf8_lossy(&o.stderr).into_owned());
        } else {
            assert!(std::fs::read(&out).expect("copy") == want, "a copy differs");
        }
    }
    served.stop().clean();
    assert!(
        failed.is_empty(),
        "{} of 12 copies failed: {failed:?}",
        failed.len()
    );
}

/// `nbdinfo --size` of the 4 MiB chain fixture succeeded.
fn assert_told_the_size(o: &std::process::Output, who: &str) {
    assert!(
        o.status.success(),
        "{who} was turned away: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&o.stdout).trim(),
        (4u64 << 20).to_string()
    );
}

#[test]
fn serve_sixteen_idle_clients_do_not_lock_out_a_new_one() {
    need("nbdinfo", &["--version"]);
    let dir = tempfile::tempdir().expect("temp dir");
    let top = chain_copy(dir.path());
    let served = serve([top.as_os_str(), "--read-only".as_ref()]);
    let socket = served.socket();
    // 16 clients past the handshake that send nothing.
    let idle: Vec<Raw> = (0..16).map(|_| Raw::open(&socket)).collect();
    let o = Command::new("nbdinfo")
        .arg("--size")
        .arg(&served.uri)
        .stdin(Stdio::null())
        .output()
        .expect("running nbdinfo");
    assert_told_the_size(&o, "nbdinfo beside 16 idle clients");
    drop(idle);
    served.stop().clean();
}

#[test]
fn serve_connections_beyond_max_connections_wait_for_a_slot() {
    need("nbdinfo", &["--version"]);
    let dir = tempfile::tempdir().expect("temp dir");
    let top = chain_copy(dir.path());
    let served = serve([
        top.as_os_str(),
        "--read-only".as_ref(),
        "--max-connections".as_ref(),
        "2".as_ref(),
    ]);
    let socket = served.socket();
    let mut idle: Vec<Raw> = (0..2).map(|_| Raw::open(&socket)).collect();
    // A third client waits (it is not closed) ...
    let mut waiting = Command::new("nbdinfo")
        .arg("--size")
        .arg(&served.uri)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting nbdinfo");
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        waiting.try_wait().expect("nbdinfo").is_none(),
        "the client beyond the cap was not queued"
    );
    // ... and is served once a slot frees.
    idle.pop();
    let o = waiting.wait_with_output().expect("nbdinfo");
    assert_told_the_size(&o, "the queued nbdinfo");
    drop(idle);
    served.stop().clean();
}

#[test]
fn serve_fragmented_disk_reads_exactly_through_nbdcopy_and_raw_reads() {
    need("nbdcopy", &["--version"]);
    let dir = tempfile::tempdir().expect("temp dir");
    let disk = alternating_disk(dir.path(), 8);
    let want = read_all(&disk);
    let served = serve([disk.as_os_str(), "--read-only".as_ref()]);
    let out = dir.path().join("copy.raw");
    run(Command::new("nbdcopy").arg(&served.uri).arg(&out));
    assert!(
        std::fs::read(&out).expect("copy") == want,
        "nbdcopy differs"
    );
    // Unaligned reads across the alternation, short and long (past the 4 MiB the
    // server maps at once), structured, unfragmented (DF) and simple.
    let mut structured = Raw::open(&served.socket());
    let mut simple = Raw::connect(&served.socket());
    simple.go();
    let mut rng = vhdkit_testkit::Rng::new(19);
    let size = want.len() as u64;
    let mut cases: Vec<(u64, u32)> = vec![(0, 1), (511, 2), (1000, 70_000), (3 << 20, 1 << 20)];
    for _ in 0..40 {
        let len = rng.range(1, 6 << 20) as u32;
        cases.push((rng.range(0, size - u64::from(len)), len));
    }
    for (i, &(offset, len)) in cases.iter().enumerate() {
        let expect = &want[offset as usize..(offset + u64::from(len)) as usize];
        let r = match i % 3 {
            0 => structured.read(offset, len),
            1 => {
                structured.request(1 << 2, CMD_READ, 5, offset, len);
                structured.reply(Some((offset, len))).expect("a DF reply")
            }
            _ => simple.read(offset, len),
        };
        assert_eq!(r.error, 0);
        assert!(r.data == expect, "read {i} at {offset}+{len} differs");
    }
    drop((structured, simple));
    served.stop().clean();
}
