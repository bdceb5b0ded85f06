//! The NBD protocol of `vhdkit-serve` (`proto`) over a client's byte stream: 9 bytes of
//! export (size, read-only/multi-conn bits), then what a client sends — client flags,
//! options (header and data) until transmission, then request headers. Checks that
//! nothing panics, that every option reply is well formed, that an accepted request lies
//! inside the export with capped lengths, and that block status descriptors and read
//! chunks cover their ranges exactly.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vhdkit_serve::proto::{self, Command, ExportInfo, Negotiation, OptionHeader, Refusal, Step};

fuzz_target!(|data: &[u8]| {
    if data.len() < 13 {
        return;
    }
    let size = u64::from_be_bytes(data[..8].try_into().expect("8 bytes")) >> (data[8] & 63);
    let info = ExportInfo::new("disk", size, data[8] & 64 != 0, data[8] & 128 != 0);
    let mut neg = Negotiation::new(info.clone());
    let flags = u32::from_be_bytes(data[9..13].try_into().expect("4 bytes"));
    if neg.client_flags(flags).is_err() {
        assert!(flags & !3 != 0, "known client flags refused");
        return;
    }
    let mut rest = &data[13..];
    let mut out = Vec::new();
    let session = loop {
        let Some(h) = rest.get(..proto::OPTION_HEADER_SIZE) else {
            return;
        };
        let header = match OptionHeader::parse(h.try_into().expect("16 bytes")) {
            Ok(h) => h,
            Err(_) => return,
        };
        assert!(header.len <= proto::MAX_OPTION_DATA);
        let body = &rest[proto::OPTION_HEADER_SIZE..];
        let n = (header.len as usize).min(body.len());
        // A short input stands for a client that sent less: pass what is there with the
        // length it claims fixed up, as the server reads exactly `len` bytes.
        let header = OptionHeader {
            option: header.option,
            len: n as u32,
        };
        out.clear();
        let step = neg.option(header, &body[..n], &mut out);
        rest = &body[n..];
        if header.option != proto::OPT_EXPORT_NAME || !matches!(step, Step::Transmission(_)) {
            check_option_replies(&out, header.option);
        }
        match step {
            Step::Continue => {}
            Step::Close(_) => return,
            Step::Transmission(s) => break s,
        }
    };
    assert_eq!(session.size, size);
    assert!(session.meta_context.is_none() || session.structured);
    for r in rest.chunks_exact(proto::REQUEST_SIZE) {
        let Ok(req) = proto::parse_request(r.try_into().expect("28 bytes")) else {
            continue;
        };
        match session.check(&req) {
            Ok(cmd) => check_command(&session, &cmd, &info),
            Err(Refusal::Error { errno, skip, .. }) => {
                assert!(errno != 0);
                if req.kind == proto::CMD_WRITE {
                    assert_eq!(skip, req.len);
                    assert!(skip <= proto::MAX_REQUEST);
                } else {
                    assert_eq!(skip, 0);
                }
                let reply = proto::error_reply(&session, req.cookie, errno, "x");
                assert!(reply.len() >= 16);
            }
            Err(Refusal::Close(_)) => {
                assert!(req.kind == proto::CMD_WRITE && req.len > proto::MAX_REQUEST)
            }
        }
    }
});

/// Option replies: magic, the option echoed, a length that matches the bytes.
fn check_option_replies(mut out: &[u8], option: u32) {
    while !out.is_empty() {
        assert!(out.len() >= 20, "truncated option reply");
        assert_eq!(
            u64::from_be_bytes(out[..8].try_into().expect("8")),
            proto::OPTION_REPLY_MAGIC
        );
        assert_eq!(
            u32::from_be_bytes(out[8..12].try_into().expect("4")),
            option
        );
        let len = u32::from_be_bytes(out[16..20].try_into().expect("4")) as usize;
        assert!(out.len() >= 20 + len, "reply longer than its bytes");
        out = &out[20 + len..];
    }
}

fn check_command(session: &proto::Session, cmd: &Command, info: &ExportInfo) {
    let inside = |offset: u64, len: u32| {
        assert!(offset
            .checked_add(u64::from(len))
            .is_some_and(|e| e <= session.size));
    };
    match *cmd {
        Command::Read { offset, len, df } => {
            inside(offset, len);
            assert!(len <= proto::MAX_REQUEST);
            assert!(!df || session.structured);
            // Any split into pieces gives chunks that cover the read exactly.
            let parts = split(offset, len);
            let chunks = proto::read_chunks(offset, parts.iter().copied(), df);
            let mut at = offset;
            for c in &chunks {
                assert_eq!(c.offset, at);
                assert!(c.len > 0);
                at += c.len;
            }
            assert_eq!(at, offset + u64::from(len));
            assert!(!df || chunks.len() <= 1);
            // The last chunk carries the final flag, whatever its kind.
            if let Some(last) = chunks.last() {
                let mut h = if last.hole {
                    proto::hole_chunk(1, last.offset, last.len as u32).to_vec()
                } else {
                    proto::data_chunk_header(1, last.offset, last.len as u32).to_vec()
                };
                proto::mark_done(&mut h);
                assert_eq!(
                    u16::from_be_bytes([h[4], h[5]]) & proto::REPLY_FLAG_DONE,
                    proto::REPLY_FLAG_DONE
                );
            }
        }
        Command::Write { offset, len, .. } => {
            assert!(!info.read_only);
            inside(offset, len);
            assert!(len <= proto::MAX_REQUEST);
        }
        Command::Trim { offset, len, .. } | Command::WriteZeroes { offset, len, .. } => {
            assert!(!info.read_only);
            inside(offset, len);
        }
        Command::BlockStatus {
            offset,
            len,
            req_one,
        } => {
            inside(offset, len);
            assert!(session.meta_context.is_some() && len > 0);
            let parts = split(offset, len);
            let d = proto::descriptors(parts.iter().copied(), req_one);
            assert!(!d.is_empty());
            assert!(!req_one || d.len() == 1);
            assert!(d.iter().all(|&(l, _)| l > 0));
            let total: u64 = d.iter().map(|&(l, _)| u64::from(l)).sum();
            assert!(total <= u64::from(len));
            assert!(
                req_one
                    || d.len() == proto::MAX_DESCRIPTORS
                    || total == u64::from(len)
                    || total >= u64::from(u32::MAX) / 512 * 512
            );
            let chunk = proto::block_status_chunk(1, 1, &d);
            assert_eq!(chunk.len(), 20 + 4 + 8 * d.len());
        }
        Command::Flush | Command::Disconnect => {}
    }
}

/// A deterministic split of a range into data and zero parts, from its numbers.
fn split(offset: u64, len: u32) -> Vec<(u64, bool)> {
    let mut parts = Vec::new();
    let mut left = u64::from(len);
    let mut s = offset ^ u64::from(len).rotate_left(17);
    while left > 0 {
        s = s
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let n = ((s >> 33) % 200_000 + 1).min(left);
        parts.push((n, s & 1 == 0));
        left -= n;
        if parts.len() > 10_000 {
            parts.push((left, false));
            break;
        }
    }
    parts
}
