//! Stopping `vhdkit serve` while clients write: SIGTERM answers what is in flight,
//! flushes and exits 0 with nothing acknowledged lost; SIGKILL leaves an image that
//! opens and checks clean with every flushed write in it.

// Over Unix domain sockets and NBD clients: Unix only.
#![cfg(unix)]

mod serve_support;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serve_support::*;

const CHUNK: usize = 64 * 1024;

/// Writes chunk after chunk (flushing every 4) until the connection ends; counts what
/// was acknowledged and what was flushed. Chunk `i` of writer `w` lands at
/// `(i * writers + w) * CHUNK`.
fn writer(
    socket: std::path::PathBuf,
    w: u64,
    writers: u64,
    acked: Arc<AtomicU64>,
    flushed: Arc<AtomicU64>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut c = Raw::open(&socket);
        let chunks = c.size / CHUNK as u64 / writers;
        for i in 0..chunks {
            let at = (i * writers + w) * CHUNK as u64;
            if c.try_request(0, CMD_WRITE, i, at, CHUNK as u32).is_err()
                || std::io::Write::write_all(&mut c.s, &bytes(at, CHUNK)).is_err()
            {
                return;
            }
            match c.reply(None) {
                Ok(r) if r.error == 0 => acked.store(i + 1, Ordering::SeqCst),
                _ => return,
            }
            if i % 4 == 3 {
                match c.reply_to_flush() {
                    Some(true) => flushed.store(i + 1, Ordering::SeqCst),
                    _ => return,
                }
            }
        }
    })
}

trait FlushExt {
    fn reply_to_flush(&mut self) -> Option<bool>;
}

impl FlushExt for Raw {
    fn reply_to_flush(&mut self) -> Option<bool> {
        self.try_request(0, CMD_FLUSH, 0, 0, 0).ok()?;
        self.reply(None).ok().map(|r| r.error == 0)
    }
}

fn wait_until(what: &str, f: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn stop_during_writes(signal: &str) {
    let dir = tempfile::tempdir().expect("temp dir");
    let disk = dir.path().join("w.vhd");
    vhdkit([
        "create".as_ref(),
        disk.as_os_str(),
        "--type".as_ref(),
        "dynamic".as_ref(),
        "--size".as_ref(),
        "32M".as_ref(),
        "--block-size".as_ref(),
        "512K".as_ref(),
    ]);
    let served = serve([disk.as_os_str()]);
    let socket = served.socket();
    let writers = 2u64;
    let counts: Vec<(Arc<AtomicU64>, Arc<AtomicU64>)> = (0..writers)
        .map(|_| (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0))))
        .collect();
    let threads: Vec<_> = counts
        .iter()
        .enumerate()
        .map(|(w, (a, f))| writer(socket.clone(), w as u64, writers, a.clone(), f.clone()))
        .collect();
    // Stop in the middle: some chunks flushed, some not yet written.
    wait_until("some flushed writes", || {
        counts.iter().all(|(_, f)| f.load(Ordering::SeqCst) >= 8)
    });
    served.signal(signal);
    for t in threads {
        t.join().expect("writer thread");
    }
    let ended = served.wait();
    if signal == "TERM" {
        ended.clean();
    }

    check_clean(&disk);
    let data = read_all(&disk);
    let chunks = data.len() as u64 / CHUNK as u64 / writers;
    for (w, (acked, flushed)) in counts.iter().enumerate() {
        let acked = acked.load(Ordering::SeqCst);
        let flushed = flushed.load(Ordering::SeqCst);
        assert!(acked < chunks, "the writers finished before the stop");
        // SIGTERM: everything acknowledged is there. SIGKILL: everything flushed.
        let must = if signal == "TERM" { acked } else { flushed };
        for i in 0..must {
            let at = ((i * writers + w as u64) * CHUNK as u64) as usize;
            assert!(
                data[at..at + CHUNK] == bytes(at as u64, CHUNK)[..],
                "writer {w}: chunk {i} (acknowledged {acked}, flushed {flushed}) was lost"
            );
        }
    }
}

#[test]
fn serve_sigterm_during_writes_loses_nothing_acknowledged() {
    stop_during_writes("TERM");
}

#[test]
fn serve_sigkill_during_writes_leaves_a_clean_image_with_every_flushed_write() {
    stop_during_writes("KILL");
}

/// A server with a client that asked for reads and reads nothing: its stop has to wait
/// (up to the grace period) for replies that cannot go out.
fn stopping_slowly(dir: &std::path::Path) -> (Served, Raw) {
    let top = chain_copy(dir);
    let served = serve([top.as_os_str(), "--read-only".as_ref()]);
    let mut stalled = Raw::open(&served.socket());
    for i in 0..64 {
        stalled.request(0, CMD_READ, i, 0, 4 << 20);
    }
    std::thread::sleep(Duration::from_millis(300));
    (served, stalled)
}

#[test]
fn serve_second_sigterm_keeps_the_clean_stop() {
    // What `timeout N vhdkit serve` does: SIGTERM to the server, then to its group.
    let dir = tempfile::tempdir().expect("temp dir");
    let (served, stalled) = stopping_slowly(dir.path());
    served.signal("TERM");
    std::thread::sleep(Duration::from_millis(200));
    served.signal("TERM");
    let ended = served.wait();
    drop(stalled);
    assert!(
        !ended.stderr.contains("interrupted again"),
        "a second SIGTERM cut the stop short: {}",
        ended.stderr
    );
    ended.clean();
}

#[test]
fn serve_second_sigint_exits_without_waiting() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (served, stalled) = stopping_slowly(dir.path());
    served.signal("INT");
    std::thread::sleep(Duration::from_millis(200));
    served.signal("INT");
    let ended = served.wait();
    drop(stalled);
    assert_eq!(ended.code, 130, "{}", ended.stderr);
    assert!(
        ended.stderr.contains("interrupted again"),
        "{}",
        ended.stderr
    );
}
