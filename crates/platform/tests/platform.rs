//! The platform layer on the system it runs on: Linux natively, Windows under wine in
//! CI (`.ci/windows/run-tests`). Each behaviour vhdkit relies on, with the fallback
//! where the file system says no.

use std::fs::File;
use std::io::{Read, Write};
use std::time::Duration;

use vhdkit_platform::{net, FileExt, FileId, FileKind};

fn rw(path: &std::path::Path) -> File {
    File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .expect("open")
}

#[test]
fn positional_io_reads_back_and_stops_at_the_end() {
    let dir = tempfile::tempdir().expect("tmp");
    let f = rw(&dir.path().join("f"));
    f.write_all_at(b"abcdef", 10).expect("write");
    let mut b = [0u8; 6];
    f.read_exact_at(&mut b, 10).expect("read");
    assert_eq!(&b, b"abcdef");
    // Bytes before the first write read as zeros; past the end there is nothing.
    let mut z = [9u8; 10];
    f.read_exact_at(&mut z, 0).expect("read");
    assert_eq!(z, [0; 10]);
    assert_eq!(f.read_at(&mut b, 16).expect("at the end"), 0);
    let e = f.read_exact_at(&mut b, 12).expect_err("past the end");
    assert_eq!(e.kind(), std::io::ErrorKind::UnexpectedEof);
}

#[test]
fn the_writer_lock_excludes_every_other_handle_and_readers_share() {
    let dir = tempfile::tempdir().expect("tmp");
    let p = dir.path().join("f");
    std::fs::write(&p, [7u8; 4096]).expect("write");
    let (a, b) = (rw(&p), rw(&p));
    vhdkit_platform::try_lock(&a, false).expect("a reader");
    vhdkit_platform::try_lock(&b, false).expect("readers share");
    let c = rw(&p);
    assert!(matches!(
        vhdkit_platform::try_lock(&c, true),
        Err(std::fs::TryLockError::WouldBlock)
    ));
    drop((a, b));
    vhdkit_platform::try_lock(&c, true).expect("the writer alone");
    let d = rw(&p);
    assert!(matches!(
        vhdkit_platform::try_lock(&d, false),
        Err(std::fs::TryLockError::WouldBlock)
    ));
    // The lock never stands in the way of the file's bytes (Windows locks are
    // mandatory: it lives far past them).
    let mut back = [0u8; 4096];
    d.read_exact_at(&mut back, 0)
        .expect("read under the writer's lock");
    assert_eq!(back, [7u8; 4096]);
}

#[test]
fn data_and_holes_are_found_or_everything_is_data() {
    const MIB: u64 = 1 << 20;
    let dir = tempfile::tempdir().expect("tmp");
    let f = rw(&dir.path().join("sparse"));
    vhdkit_platform::make_sparse(&f);
    f.set_len(4 * MIB).expect("len");
    f.write_all_at(&[1u8; 4096], MIB).expect("write");
    match vhdkit_platform::next_data(&f, 0) {
        // The file system tells: the data starts at or before 1 MiB, and a hole
        // follows it before the end.
        Ok(Some(d)) => {
            assert!(d <= MIB, "data at {d}");
            let hole = vhdkit_platform::next_hole(&f, MIB).expect("hole");
            assert!(hole > MIB && hole <= 4 * MIB, "hole at {hole}");
        }
        Ok(None) => panic!("the data at 1 MiB was not found"),
        Err(e) => eprintln!("this file system cannot tell data from holes: {e}"),
    }
    // Past the end of the file there is no data.
    assert!(matches!(
        vhdkit_platform::next_data(&f, 4 * MIB),
        Ok(None) | Err(_)
    ));
}

#[test]
fn allocation_sets_the_size_and_reserving_keeps_it() {
    let dir = tempfile::tempdir().expect("tmp");
    let f = rw(&dir.path().join("fixed"));
    vhdkit_platform::allocate(&f, 3 << 20).expect("allocate");
    assert_eq!(f.metadata().expect("meta").len(), 3 << 20);
    vhdkit_platform::reserve(&f, 3 << 20, 1 << 20).expect("reserve");
    assert_eq!(f.metadata().expect("meta").len(), 3 << 20);
    assert!(vhdkit_platform::free_space(&f).expect("free space") > 0);
}

/// Blocks of 512 bytes the file takes on disk (`st_blocks`); on Windows, none to ask.
#[cfg(unix)]
fn allocated(f: &File) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    Some(f.metadata().expect("meta").blocks())
}

#[cfg(windows)]
fn allocated(_: &File) -> Option<u64> {
    None
}

#[test]
fn a_punched_hole_reads_as_zeros_and_gives_the_space_back() {
    const MIB: u64 = 1 << 20;
    let dir = tempfile::tempdir().expect("tmp");
    let f = rw(&dir.path().join("data"));
    let data: Vec<u8> = (0..4 * MIB).map(|i| (i % 251) as u8 + 1).collect();
    f.write_all_at(&data, 0).expect("write");
    f.sync_all().expect("sync");
    let before = allocated(&f);
    // Unaligned at both ends: whole blocks are released, the pieces zeroed.
    let (at, len) = (MIB + 100, 2 * MIB);
    let released = vhdkit_platform::punch_hole(&f, at, len).expect("punch");
    // Past the end: cut at it, the length stays.
    vhdkit_platform::punch_hole(&f, 4 * MIB - 10, 100).expect("punch at the end");
    assert_eq!(f.metadata().expect("meta").len(), 4 * MIB);
    let mut back = vec![0u8; data.len()];
    f.read_exact_at(&mut back, 0).expect("read");
    let mut want = data.clone();
    want[at as usize..(at + len) as usize].fill(0);
    want[(4 * MIB - 10) as usize..].fill(0);
    assert!(back == want, "the file reads other bytes");
    if let (Some(b), Some(a)) = (before, allocated(&f)) {
        // The ext4 or tmpfs under /tmp releases: nearly 2 MiB fewer 512-byte blocks.
        assert!(released, "Linux file systems punch holes");
        assert!(a + (2 * MIB - 8192) / 512 <= b, "{b} -> {a} blocks");
    }
}

#[test]
fn a_clone_the_file_system_cannot_do_is_refused_not_half_done() {
    let dir = tempfile::tempdir().expect("tmp");
    let src = rw(&dir.path().join("src"));
    src.write_all_at(&[5u8; 65536], 0).expect("write");
    let dst = rw(&dir.path().join("dst"));
    if vhdkit_platform::offload_volume(&dst).is_some() {
        eprintln!("this file system clones: the refusal is not exercised here");
        return;
    }
    let e = vhdkit_platform::clone_range(&src, 0, 65536, &dst, 0).expect_err("no clones");
    assert!(vhdkit_platform::clone_refused(&e), "{e}");
    let e = vhdkit_platform::clone_file(&src, &dst).expect_err("no whole-file clones");
    assert!(vhdkit_platform::clone_refused(&e), "{e}");
    let to = dir.path().join("clone");
    let e = vhdkit_platform::clone_file_to(&src, &to).expect_err("no clones into a name");
    assert!(vhdkit_platform::clone_refused(&e), "{e}");
    assert!(!to.exists(), "the refused clone's file is removed");
}

/// A clone into a name never replaces what stands there, a file or a symbolic link
/// (not even a dangling one), and leaves it as it was.
#[test]
fn a_clone_into_a_name_never_replaces_anything() {
    let dir = tempfile::tempdir().expect("tmp");
    let src = rw(&dir.path().join("src"));
    src.write_all_at(b"source", 0).expect("write");
    let taken = dir.path().join("taken");
    std::fs::write(&taken, b"someone else's").expect("write");
    let e = vhdkit_platform::clone_file_to(&src, &taken).expect_err("a file is there");
    assert_eq!(e.kind(), std::io::ErrorKind::AlreadyExists, "{e}");
    assert_eq!(std::fs::read(&taken).expect("read"), b"someone else's");
    #[cfg(unix)]
    {
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(dir.path().join("nowhere"), &link).expect("symlink");
        let e = vhdkit_platform::clone_file_to(&src, &link).expect_err("a link is there");
        assert_eq!(e.kind(), std::io::ErrorKind::AlreadyExists, "{e}");
        assert!(
            !dir.path().join("nowhere").exists(),
            "the link is not followed"
        );
    }
}

#[test]
fn identities_tell_one_file_from_another() {
    let dir = tempfile::tempdir().expect("tmp");
    let (pa, pb) = (dir.path().join("a"), dir.path().join("b"));
    let (a, b) = (rw(&pa), rw(&pb));
    let a2 = File::open(&pa).expect("open");
    let id = vhdkit_platform::file_id(&a).expect("an identity");
    assert!(matches!(id, FileId::File(..)));
    assert_eq!(vhdkit_platform::file_id(&a2), Some(id));
    assert_eq!(vhdkit_platform::path_id(&pa), Some(id));
    assert_ne!(vhdkit_platform::file_id(&b), Some(id));
    assert_eq!(
        vhdkit_platform::volume_of(&a),
        vhdkit_platform::volume_of(&b)
    );
}

#[test]
fn kinds_of_what_is_opened() {
    let dir = tempfile::tempdir().expect("tmp");
    let p = dir.path().join("f");
    std::fs::write(&p, b"x").expect("write");
    let f = vhdkit_platform::open_nonblocking(&p, false).expect("open");
    vhdkit_platform::clear_nonblocking(&f).expect("blocking again");
    assert_eq!(
        vhdkit_platform::kind_of(&f).expect("kind"),
        FileKind::Regular
    );
    let d = vhdkit_platform::open_nonblocking(dir.path(), false).expect("a directory opens");
    assert_eq!(
        vhdkit_platform::kind_of(&d).expect("kind"),
        FileKind::Directory
    );
    assert!(!vhdkit_platform::is_device_name(&p));
    assert_eq!(
        vhdkit_platform::is_device_name(std::path::Path::new(r"\\.\PhysicalDrive1")),
        cfg!(windows)
    );
}

#[test]
fn a_new_file_stays_hidden_until_named_where_the_system_can() {
    let dir = tempfile::tempdir().expect("tmp");
    match vhdkit_platform::open_unnamed(dir.path(), 0o600) {
        Ok(f) => {
            f.write_all_at(b"done", 0).expect("write");
            assert_eq!(std::fs::read_dir(dir.path()).expect("dir").count(), 0);
            let p = dir.path().join("named");
            vhdkit_platform::link_unnamed(&f, &p).expect("link");
            assert_eq!(std::fs::read(&p).expect("read"), b"done");
            let e = vhdkit_platform::link_unnamed(&f, &p).expect_err("never replaces");
            assert_eq!(e.kind(), std::io::ErrorKind::AlreadyExists);
        }
        Err(e) => {
            assert!(vhdkit_platform::unnamed_unsupported(&e), "{e}");
            assert!(!cfg!(target_os = "linux") || e.kind() != std::io::ErrorKind::Unsupported);
        }
    }
}

#[test]
fn signals_keep_their_unix_numbers_for_exit_codes() {
    use vhdkit_platform::signals::Signal;
    assert_eq!(Signal::Interrupt.number(), 2);
    assert_eq!(Signal::Terminate.number(), 15);
    assert_eq!(Signal::Hangup.number(), 1);
    assert_eq!(Signal::Interrupt.to_string(), "SIGINT");
}

#[test]
fn tcp_listener_waits_then_sends_file_data() {
    let dir = tempfile::tempdir().expect("tmp");
    let f = rw(&dir.path().join("data"));
    let bytes: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    f.write_all_at(&bytes, 0).expect("write");

    let l = net::Listener::from(std::net::TcpListener::bind("127.0.0.1:0").expect("bind"));
    let addr = match &l {
        net::Listener::Tcp(t) => t.local_addr().expect("addr"),
        net::Listener::Unix(_) => unreachable!(),
    };
    assert!(
        !l.ready(Duration::from_millis(50)).expect("poll"),
        "no client yet"
    );
    let client = std::thread::spawn(move || {
        let mut s = std::net::TcpStream::connect(addr).expect("connect");
        let mut got = Vec::new();
        s.read_to_end(&mut got).expect("read");
        got
    });
    assert!(
        l.ready(Duration::from_secs(10)).expect("poll"),
        "the client came"
    );
    let mut s = l.accept().expect("accept");
    assert!(s.is_tcp());
    s.send(b"head", true).expect("send");
    s.send_file(&f, 1000, 150_000).expect("send file");
    s.flush().expect("flush");
    s.shutdown(std::net::Shutdown::Both);
    drop(s);
    let got = client.join().expect("client");
    assert_eq!(&got[..4], b"head");
    assert_eq!(&got[4..], &bytes[1000..151_000]);
    // A file shorter than asked: an error, not a short reply.
    let (l2, a2) = {
        let t = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let a = t.local_addr().expect("addr");
        (net::Listener::from(t), a)
    };
    let c2 = std::thread::spawn(move || {
        let mut s = std::net::TcpStream::connect(a2).expect("connect");
        let mut sink = Vec::new();
        let _ = s.read_to_end(&mut sink);
    });
    let mut s2 = l2.accept().expect("accept");
    assert!(s2.send_file(&f, 190_000, 20_000).is_err());
    s2.shutdown(std::net::Shutdown::Both);
    c2.join().expect("client");
}

#[test]
fn unix_sockets_exist_only_where_the_system_has_them() {
    let dir = tempfile::tempdir().expect("tmp");
    let r = net::UnixListener::bind(dir.path().join("s.sock"));
    assert_eq!(r.is_ok(), net::HAS_UNIX_SOCKETS);
}
