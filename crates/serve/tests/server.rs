//! The library API: DiskExport's trim and write zeroes on real disks, and a Server
//! embedded on an already-accepted stream and on a listener.
//!
//! The Unix-socket tests run where the system has them; the TCP one everywhere
//! (Windows: under wine in CI).

use std::io::{Read, Write};
#[cfg(unix)]
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::Arc;

use byteorder::{BigEndian, ByteOrder};
use vhdkit_format::{CreateOptions, Disk, DiskKind};
use vhdkit_serve::proto::*;
use vhdkit_serve::{DiskExport, Export, Piece, Server, ServerOptions};
use vhdkit_testkit::tempdir;
#[cfg(unix)]
use vhdkit_testkit::{workspace_root, Algorithm, Rng};

fn dynamic(dir: &std::path::Path, name: &str, size: u64) -> std::path::PathBuf {
    let p = dir.join(name);
    Disk::create(
        &p,
        &CreateOptions::new(DiskKind::Dynamic, size).block_size(512 * 1024),
    )
    .expect("create");
    p
}

fn read(e: &DiskExport, offset: u64, len: usize) -> Vec<u8> {
    let mut b = vec![0u8; len];
    e.disk().read_at(&mut b, offset).expect("read");
    b
}

#[test]
fn disk_export_trim_zeroes_top_data_without_allocating_in_a_child() {
    let dir = tempdir();
    let base = dynamic(dir.path(), "base.vhd", 8 << 20);
    {
        let d = Disk::open_rw(&base).expect("open");
        d.write_at(&[7u8; 1 << 20], 0).expect("write");
        d.flush().expect("flush");
    }
    let child = dir.path().join("child.vhd");
    Disk::create(&child, &CreateOptions::differencing(&base)).expect("child");
    let e = DiskExport::new(Disk::open_rw(&child).expect("open child"));
    // A trim over the parent's data leaves it alone: no block allocated in the child.
    e.trim(0, 1 << 20).expect("trim");
    assert_eq!(e.disk().top().allocated_blocks(), 0);
    // Data of the child itself is zeroed by a trim.
    e.write_runs(&[(4 << 20, &[9u8; 8192][..])]).expect("write");
    let blocks = e.disk().top().allocated_blocks();
    e.trim(4 << 20, 8192).expect("trim");
    assert_eq!(read(&e, 4 << 20, 8192), vec![0; 8192]);
    assert_eq!(e.disk().top().allocated_blocks(), blocks);
}

#[test]
fn disk_export_write_zeroes_reads_zero_even_over_parent_data() {
    let dir = tempdir();
    let base = dynamic(dir.path(), "base.vhd", 8 << 20);
    {
        let d = Disk::open_rw(&base).expect("open");
        d.write_at(&[7u8; 100_000], 50_000).expect("write");
        d.flush().expect("flush");
    }
    let child = dir.path().join("child.vhd");
    Disk::create(&child, &CreateOptions::differencing(&base)).expect("child");
    let e = DiskExport::new(Disk::open_rw(&child).expect("open child"));
    e.write_zeroes(60_000, 10_000, true).expect("zero");
    let got = read(&e, 0, 200_000);
    assert!(got[50_000..60_000].iter().all(|&b| b == 7));
    assert!(got[60_000..70_000].iter().all(|&b| b == 0));
    assert!(got[70_000..150_000].iter().all(|&b| b == 7));
    // Zeroing what is already zero writes nothing.
    let blocks = e.disk().top().allocated_blocks();
    e.write_zeroes(4 << 20, 1 << 20, true).expect("zero");
    assert_eq!(e.disk().top().allocated_blocks(), blocks);
}

#[test]
fn disk_export_maps_holes_and_file_data() {
    let dir = tempdir();
    let p = dynamic(dir.path(), "d.vhd", 4 << 20);
    let e = DiskExport::new(Disk::open_rw(&p).expect("open"));
    // 4 KiB at 3 MiB: a dynamic disk's new block is wholly its own (full bitmap), so
    // the map is a hole, the whole block as file data, a hole.
    e.write_runs(&[(3 << 20, &[1u8; 4096][..])]).expect("write");
    let block = e.disk().top().block_size().expect("dynamic");
    let mut pieces = Vec::new();
    e.map(0, 4 << 20, &mut pieces).expect("map");
    assert_eq!(pieces.iter().map(Piece::len).sum::<u64>(), 4 << 20);
    assert!(
        matches!(pieces[0], Piece::Zero { len } if len == 3 << 20),
        "{pieces:?}"
    );
    assert!(
        matches!(pieces[1], Piece::Data { source: 0, len, .. } if len == block),
        "{pieces:?}"
    );
    assert!(e.source_file(0).is_some());
}

/// The smallest client: structured replies, GO, then one request at a time.
struct Client<S>(S);

impl<S: Read + Write> Client<S> {
    fn new(mut s: S) -> Client<S> {
        let mut g = [0u8; 18];
        s.read_exact(&mut g).expect("greeting");
        s.write_all(&3u32.to_be_bytes()).expect("flags");
        let mut c = Client(s);
        c.option(OPT_STRUCTURED_REPLY, &[]);
        c.option(OPT_GO, &[0, 0, 0, 0, 0, 0]);
        c
    }

    fn option(&mut self, opt: u32, data: &[u8]) {
        let mut b = IHAVEOPT.to_be_bytes().to_vec();
        b.extend_from_slice(&opt.to_be_bytes());
        b.extend_from_slice(&(data.len() as u32).to_be_bytes());
        b.extend_from_slice(data);
        self.0.write_all(&b).expect("option");
        loop {
            let mut h = [0u8; 20];
            self.0.read_exact(&mut h).expect("option reply");
            let kind = BigEndian::read_u32(&h[12..16]);
            let len = BigEndian::read_u32(&h[16..20]);
            let mut d = vec![0u8; len as usize];
            self.0.read_exact(&mut d).expect("option data");
            assert!(kind & 0x8000_0000 == 0, "option {opt} refused");
            if kind == REP_ACK {
                return;
            }
        }
    }

    fn send(&mut self, kind: u16, offset: u64, len: u32, payload: &[u8]) {
        let mut b = REQUEST_MAGIC.to_be_bytes().to_vec();
        b.extend_from_slice(&0u16.to_be_bytes());
        b.extend_from_slice(&kind.to_be_bytes());
        b.extend_from_slice(&42u64.to_be_bytes());
        b.extend_from_slice(&offset.to_be_bytes());
        b.extend_from_slice(&len.to_be_bytes());
        b.extend_from_slice(payload);
        self.0.write_all(&b).expect("request");
    }

    /// Reads one structured reply; returns the error and the read data.
    fn reply(&mut self, offset: u64, len: usize) -> (u32, Vec<u8>) {
        let mut data = vec![0xEEu8; len];
        let mut error = 0;
        loop {
            let mut h = [0u8; 20];
            self.0.read_exact(&mut h).expect("chunk");
            let flags = BigEndian::read_u16(&h[4..]);
            let kind = BigEndian::read_u16(&h[6..]);
            let n = BigEndian::read_u32(&h[16..20]);
            let mut p = vec![0u8; n as usize];
            self.0.read_exact(&mut p).expect("payload");
            match kind {
                REPLY_TYPE_OFFSET_DATA => {
                    let at = (BigEndian::read_u64(&p[..8]) - offset) as usize;
                    data[at..at + p.len() - 8].copy_from_slice(&p[8..]);
                }
                REPLY_TYPE_OFFSET_HOLE => {
                    let at = (BigEndian::read_u64(&p[..8]) - offset) as usize;
                    let l = BigEndian::read_u32(&p[8..12]) as usize;
                    data[at..at + l].fill(0);
                }
                REPLY_TYPE_ERROR => error = BigEndian::read_u32(&p[..4]),
                _ => {}
            }
            if flags & REPLY_FLAG_DONE != 0 {
                return (error, data);
            }
        }
    }
}

#[cfg(unix)]
#[test]
fn server_on_an_accepted_stream_reads_and_writes_and_finish_flushes() {
    let dir = tempdir();
    let p = dynamic(dir.path(), "d.vhd", 4 << 20);
    let export = Arc::new(DiskExport::new(Disk::open_rw(&p).expect("open")));
    let server = Arc::new(Server::new(export, ServerOptions::default()).expect("server"));
    let (a, b) = UnixStream::pair().expect("pair");
    let s = server.clone();
    let t = std::thread::spawn(move || s.serve_stream(a));
    let mut c = Client::new(b);
    let payload = vec![0x5au8; 100_000];
    c.send(CMD_WRITE, 1_000_000, payload.len() as u32, &payload);
    assert_eq!(c.reply(0, 0).0, 0);
    c.send(CMD_READ, 900_000, 300_000, &[]);
    let (err, data) = c.reply(900_000, 300_000);
    assert_eq!(err, 0);
    assert!(data[..100_000].iter().all(|&x| x == 0));
    assert!(data[100_000..200_000] == payload[..]);
    c.send(CMD_READ, 4 << 20, 1, &[]);
    assert_eq!(c.reply(4 << 20, 0).0, EINVAL);
    c.send(CMD_DISC, 0, 0, &[]);
    t.join().expect("server thread");
    let server = Arc::into_inner(server).expect("one owner");
    let stats = server.finish().expect("finish");
    assert_eq!(stats.bytes_written, 100_000);
    assert_eq!(stats.errors, 1);
    let d = Disk::open(&p).expect("reopen");
    let mut b = vec![0u8; 100_000];
    d.read_at(&mut b, 1_000_000).expect("read");
    assert!(b == payload);
}

#[cfg(unix)]
#[test]
fn server_on_a_listener_serves_until_stopped() {
    let dir = tempdir();
    let p = dynamic(dir.path(), "d.vhd", 4 << 20);
    let disk = Disk::open(&p).expect("open read-only");
    let server =
        Server::new(Arc::new(DiskExport::new(disk)), ServerOptions::default()).expect("server");
    assert!(server.export_info().read_only);
    let sock = dir.path().join("s.sock");
    let listener = UnixListener::bind(&sock).expect("bind");
    let stopper = server.stopper();
    let clients = std::thread::spawn(move || {
        let mut conns: Vec<Client<UnixStream>> = (0..3)
            .map(|_| Client::new(UnixStream::connect(&sock).expect("connect")))
            .collect();
        for c in &mut conns {
            c.send(CMD_READ, 0, 65536, &[]);
            assert_eq!(c.reply(0, 65536), (0, vec![0; 65536]));
            c.send(CMD_WRITE, 0, 1, &[1]);
            assert_eq!(c.reply(0, 0).0, EPERM);
        }
        stopper.stop();
        // The stop closes the connections once they are idle.
        for mut c in conns {
            let mut b = [0u8; 1];
            assert_eq!(c.0.read(&mut b).expect("eof"), 0);
        }
    });
    server.serve(listener).expect("serve");
    clients.join().expect("clients");
    let stats = server.finish().expect("finish");
    assert_eq!(stats.connections, 3);
    assert_eq!(stats.bytes_read, 3 * 65536);
}

#[cfg(unix)]
#[test]
fn server_random_reads_of_a_chain_match_the_disk_with_and_without_df() {
    let dir = tempdir();
    let fixtures = workspace_root().join("fixtures/chain");
    for f in ["base.vhd", "mid.vhd", "top.vhd"] {
        std::fs::copy(fixtures.join(f), dir.path().join(f)).expect("copy fixture");
    }
    let disk = Disk::open(dir.path().join("top.vhd")).expect("open chain");
    let size = disk.virtual_size();
    let mut want = vec![0u8; size as usize];
    disk.read_at(&mut want, 0).expect("read");
    let server = Arc::new(
        Server::new(Arc::new(DiskExport::new(disk)), ServerOptions::default()).expect("server"),
    );
    let (a, b) = UnixStream::pair().expect("pair");
    let s = server.clone();
    let t = std::thread::spawn(move || s.serve_stream(a));
    let mut c = Client::new(b);
    let mut rng = Rng::from_state(Algorithm::XorShift, 0x1234_5678_9abc_def0);
    for i in 0..300 {
        let x = rng.next_u64();
        let len = (x % 700_000) as u32;
        let offset = (x >> 20) % (size - u64::from(len) + 1);
        let df = i % 3 == 0;
        let mut b = REQUEST_MAGIC.to_be_bytes().to_vec();
        b.extend_from_slice(&(if df { CMD_FLAG_DF } else { 0 }).to_be_bytes());
        b.extend_from_slice(&CMD_READ.to_be_bytes());
        b.extend_from_slice(&(i as u64).to_be_bytes());
        b.extend_from_slice(&offset.to_be_bytes());
        b.extend_from_slice(&len.to_be_bytes());
        c.0.write_all(&b).expect("request");
        let (err, data) = c.reply(offset, len as usize);
        assert_eq!(err, 0);
        assert!(
            data == want[offset as usize..offset as usize + len as usize],
            "read {i} at {offset}+{len} (df {df}) differs"
        );
    }
    c.send(CMD_DISC, 0, 0, &[]);
    t.join().expect("server thread");
}

#[cfg(unix)]
#[test]
fn server_stop_completes_while_a_client_stops_reading_its_replies() {
    let dir = tempdir();
    let p = dynamic(dir.path(), "d.vhd", 64 << 20);
    {
        let d = Disk::open_rw(&p).expect("open");
        d.write_at(&vec![3u8; 8 << 20], 0).expect("fill");
    }
    let options = ServerOptions {
        stop_send_timeout: std::time::Duration::from_millis(300),
        ..ServerOptions::default()
    };
    let server = Arc::new(
        Server::new(
            Arc::new(DiskExport::new(Disk::open(&p).expect("open"))),
            options,
        )
        .expect("server"),
    );
    let (a, b) = UnixStream::pair().expect("pair");
    let s = server.clone();
    let t = std::thread::spawn(move || s.serve_stream(a));
    let mut c = Client::new(b);
    for _ in 0..100 {
        c.send(CMD_READ, 0, 8 << 20, &[]);
    }
    std::thread::sleep(std::time::Duration::from_millis(200));
    let started = std::time::Instant::now();
    server.stopper().stop();
    t.join().expect("server thread");
    let server = Arc::into_inner(server).expect("one owner");
    server.finish().expect("finish");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(5),
        "the stop waited {:?} for a client that does not read",
        started.elapsed()
    );
    drop(c);
}

#[cfg(unix)]
/// A read-only server of a 64 MiB dynamic disk full of data on a Unix listener in `dir`,
/// served on a thread; returns the server, the socket and the thread.
fn listening(
    dir: &std::path::Path,
    options: ServerOptions,
) -> (
    Arc<Server>,
    std::path::PathBuf,
    std::thread::JoinHandle<std::io::Result<()>>,
) {
    let p = dynamic(dir, "d.vhd", 64 << 20);
    {
        let d = Disk::open_rw(&p).expect("open");
        d.write_at(&vec![3u8; 64 << 20], 0).expect("fill");
        d.flush().expect("flush");
    }
    let server = Arc::new(
        Server::new(
            Arc::new(DiskExport::new(Disk::open(&p).expect("open"))),
            options,
        )
        .expect("server"),
    );
    let sock = dir.join("s.sock");
    let listener = UnixListener::bind(&sock).expect("bind");
    let s = server.clone();
    let t = std::thread::spawn(move || s.serve(listener));
    (server, sock, t)
}

#[cfg(unix)]
fn stop(server: Arc<Server>, t: std::thread::JoinHandle<std::io::Result<()>>) {
    server.stopper().stop();
    t.join().expect("serve thread").expect("serve");
    Arc::into_inner(server)
        .expect("one owner")
        .finish()
        .expect("finish");
}

/// Waits until `f` gives the same value for 500 ms (at most 20 s); returns it.
#[cfg(unix)]
fn settled(f: impl Fn() -> u64) -> u64 {
    let mut last = f();
    let mut same = 0;
    for _ in 0..400 {
        std::thread::sleep(std::time::Duration::from_millis(50));
        let now = f();
        if now == last {
            same += 1;
            if same == 10 {
                return now;
            }
        } else {
            (last, same) = (now, 0);
        }
    }
    panic!("never settled (last {last})");
}

#[cfg(unix)]
/// A client that sends `n` reads of 32 MiB (no reply of which fits into a socket
/// buffer) and never reads.
fn never_reads(sock: &std::path::Path, n: u64) -> Client<UnixStream> {
    let mut c = Client::new(UnixStream::connect(sock).expect("connect"));
    for _ in 0..n {
        c.send(CMD_READ, 0, 32 << 20, &[]);
    }
    c
}

#[cfg(unix)]
#[test]
fn server_stops_reading_a_connection_whose_replies_are_over_budget() {
    let dir = tempdir();
    let options = ServerOptions {
        replies_per_connection: 8,
        replies_total: 16,
        ..ServerOptions::default()
    };
    let (server, sock, t) = listening(dir.path(), options);
    // Two clients that never read: each is read up to its budget, together up to the
    // server's.
    let a = never_reads(&sock, 100);
    let b = never_reads(&sock, 100);
    assert_eq!(settled(|| server.stats().requests), 16);
    // A third one: the server's budget is spent, but a connection that owes nothing
    // may always send one request.
    let c = never_reads(&sock, 100);
    assert_eq!(settled(|| server.stats().requests), 17);
    // A client that reads its replies is served meanwhile, one request at a time.
    let mut good = Client::new(UnixStream::connect(&sock).expect("connect"));
    for i in 0..10u64 {
        good.send(CMD_READ, i << 20, 65536, &[]);
        assert_eq!(good.reply(i << 20, 65536), (0, vec![3; 65536]));
    }
    assert_eq!(server.stats().requests, 27);
    drop((a, b, c, good));
    stop(server, t);
}

#[cfg(unix)]
#[test]
fn server_handshake_has_one_deadline_from_accept_and_the_next_client_waits_for_a_slot() {
    let dir = tempdir();
    let options = ServerOptions {
        handshake_timeout: std::time::Duration::from_secs(1),
        max_connections: 2,
        ..ServerOptions::default()
    };
    let (server, sock, t) = listening(dir.path(), options);
    // Two clients that send their handshake one byte every 100 ms: 26 bytes, 2.6 s.
    let drips: Vec<_> = (0..2)
        .map(|_| {
            let sock = sock.clone();
            std::thread::spawn(move || {
                let mut s = UnixStream::connect(&sock).expect("connect");
                let mut g = [0u8; 18];
                s.read_exact(&mut g).expect("greeting");
                let mut msg = 3u32.to_be_bytes().to_vec();
                msg.extend_from_slice(&IHAVEOPT.to_be_bytes());
                msg.extend_from_slice(&OPT_GO.to_be_bytes());
                msg.extend_from_slice(&6u32.to_be_bytes());
                msg.extend_from_slice(&[0; 6]);
                for b in msg {
                    if s.write_all(&[b]).is_err() {
                        return false;
                    }
                    std::thread::sleep(std::time::Duration::from_millis(100));
                }
                // Whether the server still answers after the whole drip.
                let mut h = [0u8; 20];
                s.read_exact(&mut h).is_ok()
            })
        })
        .collect();
    std::thread::sleep(std::time::Duration::from_millis(300));
    // A third client, beyond the cap, waits and is then served.
    let mut c = Client::new(UnixStream::connect(&sock).expect("connect"));
    c.send(CMD_READ, 0, 4096, &[]);
    assert_eq!(c.reply(0, 4096), (0, vec![3; 4096]));
    for d in drips {
        assert!(
            !d.join().expect("drip"),
            "a client that dripped its handshake past the deadline was answered"
        );
    }
    drop(c);
    stop(server, t);
}

/// The server on a TCP listener (the transport every system has, Windows' only one):
/// reads of a chain's data (sent from the file: `sendfile` on Linux, a buffered copy
/// elsewhere), a write, a read past the end refused, and a clean stop.
#[test]
fn server_on_a_tcp_listener_reads_and_writes_a_chain() {
    let dir = tempdir();
    let base = dynamic(dir.path(), "base.vhd", 8 << 20);
    {
        let d = Disk::open_rw(&base).expect("open");
        d.write_at(&vec![7u8; 3 << 20], 1 << 20).expect("fill");
        d.flush().expect("flush");
    }
    let child = dir.path().join("child.vhd");
    Disk::create(&child, &CreateOptions::differencing(&base)).expect("child");
    let export = Arc::new(DiskExport::new(Disk::open_rw(&child).expect("open")));
    let server = Arc::new(Server::new(export, ServerOptions::default()).expect("server"));
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let s = server.clone();
    let t = std::thread::spawn(move || s.serve(listener));

    let mut c = Client::new(std::net::TcpStream::connect(addr).expect("connect"));
    c.send(CMD_READ, 512 << 10, 1 << 20, &[]);
    let (err, data) = c.reply(512 << 10, 1 << 20);
    assert_eq!(err, 0);
    assert!(data[..512 << 10].iter().all(|&b| b == 0));
    assert!(data[512 << 10..].iter().all(|&b| b == 7));
    c.send(CMD_WRITE, 2 << 20, 4096, &[9u8; 4096]);
    assert_eq!(c.reply(0, 0).0, 0);
    c.send(CMD_READ, (2 << 20) - 4096, 8192, &[]);
    let (err, data) = c.reply((2 << 20) - 4096, 8192);
    assert_eq!(err, 0);
    assert!(data[..4096].iter().all(|&b| b == 7) && data[4096..].iter().all(|&b| b == 9));
    c.send(CMD_READ, 8 << 20, 1, &[]);
    assert_eq!(c.reply(8 << 20, 0).0, EINVAL);
    c.send(CMD_DISC, 0, 0, &[]);
    server.stopper().stop();
    t.join().expect("serve thread").expect("serve");
    let stats = Arc::into_inner(server)
        .expect("one owner")
        .finish()
        .expect("finish");
    assert_eq!(stats.bytes_written, 4096);
    let d = Disk::open(&child).expect("reopen");
    let mut b = vec![0u8; 4096];
    d.read_at(&mut b, 2 << 20).expect("read");
    assert!(b.iter().all(|&x| x == 9));
}
