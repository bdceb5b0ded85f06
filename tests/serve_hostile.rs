//! Hostile and broken clients against `vhdkit serve`, byte by byte: each gets an NBD
//! error or a closed connection, while another connection keeps reading the right data
//! and the server stops cleanly afterwards.

// Over Unix domain sockets and NBD clients: Unix only.
#![cfg(unix)]

mod serve_support;

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use serve_support::*;

/// A connection that keeps reading the second half of the disk (which the hostile
/// clients never change) and comparing, until told to stop.
fn watcher(
    socket: std::path::PathBuf,
    want: Vec<u8>,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<u64> {
    std::thread::spawn(move || {
        let mut c = Raw::open(&socket);
        let mut reads = 0u64;
        let half = want.len() as u64 / 2;
        let mut at = half;
        while !stop.load(Ordering::SeqCst) || reads < 10 {
            let len = 65_536u32.min((want.len() as u64 - at) as u32);
            let r = c.read(at, len);
            assert_eq!(r.error, 0, "the good connection got an error");
            assert!(
                r.data == want[at as usize..(at + u64::from(len)) as usize],
                "the good connection read wrong data at {at}"
            );
            at += 65_536;
            if at >= want.len() as u64 {
                at = half;
            }
            reads += 1;
        }
        reads
    })
}

#[test]
fn serve_hostile_requests_get_errors_and_other_connections_keep_working() {
    let dir = tempfile::tempdir().expect("temp dir");
    let top = chain_copy(dir.path());
    let want = read_all(&top);
    let size = want.len() as u64;
    let served = serve([top.as_os_str()]);
    let socket = served.socket();
    let stop = Arc::new(AtomicBool::new(false));
    let good = watcher(socket.clone(), want.clone(), stop.clone());

    let mut c = Raw::open(&socket);
    assert_eq!(c.size, size);
    // Out of range, past the end, and wrapping around u64.
    c.request(0, CMD_READ, 1, size - 512, 1024);
    assert_eq!(
        c.reply(Some((size - 512, 1024))).expect("reply").error,
        EINVAL
    );
    c.request(0, CMD_READ, 2, u64::MAX - 10, 100);
    assert_eq!(c.reply(Some((0, 100))).expect("reply").error, EINVAL);
    // A huge read length.
    c.request(0, CMD_READ, 3, 0, u32::MAX);
    assert_eq!(c.reply(Some((0, 0))).expect("reply").error, EINVAL);
    // An unknown command, unknown flags, a flag of another command.
    c.request(0, 99, 4, 0, 512);
    assert_eq!(c.reply(None).expect("reply").error, EINVAL);
    c.request(0x8000, CMD_READ, 5, 0, 512);
    assert_eq!(c.reply(Some((0, 512))).expect("reply").error, EINVAL);
    c.request(1 << 3, CMD_READ, 6, 0, 512);
    assert_eq!(c.reply(Some((0, 512))).expect("reply").error, EINVAL);
    // A write past the end: its payload is skipped, the stream stays in step.
    let r = c.write(size - 100, &[0x77; 512]);
    assert_eq!(r.error, ENOSPC);
    // Flush with a length, block status of nothing.
    c.request(0, CMD_FLUSH, 7, 0, 10);
    assert_eq!(c.reply(None).expect("reply").error, EINVAL);
    c.request(0, CMD_BLOCK_STATUS, 8, 0, 0);
    assert_eq!(c.reply(None).expect("reply").error, EINVAL);
    // Still a working connection.
    let r = c.read(0, 4096);
    assert_eq!(r.error, 0);
    assert!(r.data == want[..4096]);
    let r = c.write(4096, &[0x42; 4096]);
    assert_eq!(r.error, 0);
    assert_eq!(c.read(4096, 4096).data, vec![0x42; 4096]);

    // A write longer than the maximum block size closes that connection.
    c.request(0, CMD_WRITE, 9, 0, 64 << 20);
    assert!(c.is_closed(), "a 64 MiB write was not refused");

    // Bad magic closes the connection.
    let mut c = Raw::open(&socket);
    c.s.write_all(&[0u8; 28]).expect("sending");
    assert!(c.is_closed());

    // Disconnect in the middle of a write's payload: nothing of it lands.
    let mut c = Raw::open(&socket);
    c.request(0, CMD_WRITE, 10, 1 << 20, 1 << 20);
    c.s.write_all(&[0x99; 300_000]).expect("half a payload");
    drop(c);
    // Disconnect with reads in flight whose replies are never read.
    let mut c = Raw::open(&socket);
    for i in 0..64 {
        c.request(0, CMD_READ, 100 + i, 0, 1 << 20);
    }
    drop(c);
    // A client that sends requests and stops reading replies stalls only itself.
    let mut stalled = Raw::open(&socket);
    for i in 0..200 {
        stalled.request(0, CMD_READ, 200 + i, 0, 1 << 20);
    }

    // Options: unknown ones are refused, oversized ones close, floods close.
    let mut c = Raw::connect(&socket);
    c.option(0x1234, b"whatever");
    let r = c.opt_replies();
    assert_eq!(r.last().expect("reply").kind, REP_ERR_UNSUP);
    c.option(10, &[0, 0, 0, 0]); // SET_META_CONTEXT before structured replies
    assert!(c.opt_replies().last().expect("reply").kind & 0x8000_0000 != 0);
    c.option(7, &[0, 0, 0, 5, b'x']); // GO with a truncated name
    assert!(c.opt_replies().last().expect("reply").kind & 0x8000_0000 != 0);
    c.go();
    assert_eq!(c.size, size);
    let mut c = Raw::connect(&socket);
    let mut h = Vec::new();
    h.extend_from_slice(&IHAVEOPT.to_be_bytes());
    h.extend_from_slice(&3u32.to_be_bytes());
    h.extend_from_slice(&u32::MAX.to_be_bytes());
    c.s.write_all(&h).expect("sending");
    assert!(c.is_closed(), "a 4 GiB option was not refused");
    let mut c = Raw::connect(&socket);
    for _ in 0..200 {
        c.option(0x4444, &[]);
    }
    let mut answered = 0;
    while c.opt_reply().is_ok() {
        answered += 1;
    }
    assert!(answered < 200, "an option flood was answered forever");

    stop.store(true, Ordering::SeqCst);
    let reads = good.join().expect("the good connection");
    assert!(reads >= 10);
    drop(stalled);
    let ended = served.stop().clean();
    assert!(ended.summary["errors"].as_u64().expect("errors") >= 10);
    check_clean(&top);
    let mut expect = want.clone();
    expect[4096..8192].fill(0x42);
    assert!(
        read_all(&top) == expect,
        "the disk holds more than the one good write"
    );
}

#[test]
fn serve_read_only_refuses_writes_with_eperm() {
    let dir = tempfile::tempdir().expect("temp dir");
    let top = chain_copy(dir.path());
    let before = std::fs::read(&top).expect("read");
    let served = serve([top.as_os_str(), "--read-only".as_ref()]);
    let mut c = Raw::open(&served.socket());
    assert!(c.flags & 2 != 0, "NBD_FLAG_READ_ONLY not set");
    assert_eq!(c.write(0, &[1; 4096]).error, EPERM);
    assert_eq!(c.read(0, 512).error, 0);
    drop(c);
    served.stop().clean();
    assert!(std::fs::read(&top).expect("read") == before);
}

#[test]
fn serve_simple_replies_without_structured_negotiation() {
    let dir = tempfile::tempdir().expect("temp dir");
    let top = chain_copy(dir.path());
    let want = read_all(&top);
    let served = serve([top.as_os_str(), "--read-only".as_ref()]);
    let mut c = Raw::connect(&served.socket());
    c.go();
    assert!(
        c.flags & (1 << 7) == 0,
        "DF advertised without structured replies"
    );
    // A read across data and holes comes back whole in one simple reply.
    let r = c.read(0, 1 << 20);
    assert_eq!(r.error, 0);
    assert!(r.data == want[..1 << 20]);
    c.request(0, CMD_READ, 3, 0, u32::MAX);
    assert_eq!(c.reply(Some((0, 0))).expect("reply").error, EINVAL);
    // No metadata context: block status is refused.
    c.request(0, CMD_BLOCK_STATUS, 4, 0, 4096);
    assert_eq!(c.reply(None).expect("reply").error, EINVAL);
    c.request(0, CMD_DISC, 5, 0, 0);
    assert!(c.is_closed());
    served.stop().clean();
}

#[test]
fn serve_block_status_and_df_reads_are_exact() {
    let dir = tempfile::tempdir().expect("temp dir");
    let top = chain_copy(dir.path());
    let want = read_all(&top);
    let served = serve([top.as_os_str(), "--read-only".as_ref()]);
    let mut c = Raw::open(&served.socket());
    // Unfragmented read over data and holes.
    c.request(1 << 2, CMD_READ, 1, 0, 2 << 20);
    let r = c.reply(Some((0, 2 << 20))).expect("reply");
    assert_eq!(r.error, 0);
    assert!(r.data == want[..2 << 20]);
    // Block status covers the request contiguously; REQ_ONE gives one descriptor.
    c.request(0, CMD_BLOCK_STATUS, 2, 0, 4 << 20);
    let r = c.reply(None).expect("reply");
    assert_eq!(
        r.status.iter().map(|d| u64::from(d.0)).sum::<u64>(),
        4 << 20
    );
    c.request(1 << 3, CMD_BLOCK_STATUS, 3, 100_000, 4096);
    let r = c.reply(None).expect("reply");
    assert_eq!(r.status.len(), 1);
    assert!(r.status[0].0 <= 4096);
    served.stop().clean();
}
