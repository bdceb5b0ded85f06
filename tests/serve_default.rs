//! `vhdkit serve` without `--listen` or `--socket`: a Unix socket in a new private
//! directory on Unix, TCP on 127.0.0.1 at a port the system picks on Windows (run under
//! wine by `.ci/windows/run-tests`). A client connects where the start line says and
//! reads the disk's bytes.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Command, Stdio};

use common::*;

/// NBD's fixed newstyle handshake with `NBD_OPT_EXPORT_NAME` (the default export), then
/// one `NBD_CMD_READ` of `len` bytes at `offset` and `NBD_CMD_DISC`.
fn nbd_read(mut s: impl Read + Write, offset: u64, len: u32) -> Vec<u8> {
    let mut hello = [0u8; 18];
    s.read_exact(&mut hello).expect("the server's greeting");
    assert_eq!(&hello[..8], b"NBDMAGIC");
    assert_eq!(&hello[8..16], b"IHAVEOPT");
    let no_zeroes = u16::from_be_bytes([hello[16], hello[17]]) & 2 != 0;
    let client_flags: u32 = if no_zeroes { 3 } else { 1 };
    s.write_all(&client_flags.to_be_bytes()).expect("flags");
    let mut opt = b"IHAVEOPT".to_vec();
    opt.extend_from_slice(&1u32.to_be_bytes()); // NBD_OPT_EXPORT_NAME
    opt.extend_from_slice(&0u32.to_be_bytes()); // the default (empty) name
    s.write_all(&opt).expect("option");
    let mut export = vec![0u8; if no_zeroes { 10 } else { 134 }];
    s.read_exact(&mut export)
        .expect("the export's size and flags");
    let mut req = 0x2560_9513u32.to_be_bytes().to_vec();
    req.extend_from_slice(&0u16.to_be_bytes()); // flags
    req.extend_from_slice(&0u16.to_be_bytes()); // NBD_CMD_READ
    req.extend_from_slice(&7u64.to_be_bytes()); // cookie
    req.extend_from_slice(&offset.to_be_bytes());
    req.extend_from_slice(&len.to_be_bytes());
    s.write_all(&req).expect("request");
    let mut reply = [0u8; 16];
    s.read_exact(&mut reply).expect("reply");
    assert_eq!(reply[..4], 0x6744_6698u32.to_be_bytes(), "a simple reply");
    assert_eq!(reply[4..8], [0; 4], "the read failed");
    assert_eq!(reply[8..], 7u64.to_be_bytes());
    let mut data = vec![0u8; len as usize];
    s.read_exact(&mut data).expect("data");
    let mut disc = 0x2560_9513u32.to_be_bytes().to_vec();
    disc.extend_from_slice(&0u16.to_be_bytes());
    disc.extend_from_slice(&2u16.to_be_bytes()); // NBD_CMD_DISC
    disc.extend_from_slice(&[0; 20]);
    s.write_all(&disc).expect("disconnect");
    data
}

#[test]
fn serve_without_an_address_listens_where_the_platform_can() {
    let dir = tempdir();
    let disk = dir.path().join("d.vhd");
    create(&disk, &["--type", "dynamic", "--size", "4M"]);
    let data = pattern(5, 8192);
    write_at(&disk, 65536, &data, &[]);
    let runtime = tempdir();
    let mut child = Command::new(bin())
        .arg("serve")
        .arg(&disk)
        .arg("--json")
        .env("XDG_RUNTIME_DIR", runtime.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting vhdkit serve");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("piped"))
        .read_line(&mut line)
        .expect("the start line");
    let start: serde_json::Value = serde_json::from_str(&line)
        .unwrap_or_else(|e| panic!("the start line {line:?} is not JSON: {e}"));
    let got = if cfg!(windows) {
        let addr = start["address"].as_str().expect("a TCP address on Windows");
        assert!(addr.starts_with("127.0.0.1:"), "{start}");
        assert!(start["uri"]
            .as_str()
            .is_some_and(|u| u.starts_with("nbd://127.0.0.1:")));
        let s = std::net::TcpStream::connect(addr).expect("connecting");
        nbd_read(s, 65536, 8192)
    } else {
        let socket = start["socket"].as_str().expect("a Unix socket on Unix");
        assert!(start.get("address").is_none(), "{start}");
        let s = vhdkit_platform::net::UnixStream::connect(socket).expect("connecting");
        nbd_read(s, 65536, 8192)
    };
    let _ = child.kill();
    let _ = child.wait();
    assert!(got == data, "the served disk reads other bytes");
}
