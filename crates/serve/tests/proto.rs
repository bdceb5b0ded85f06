//! The NBD protocol module over bytes: negotiation, request validation, reply layout.

use byteorder::{BigEndian, ByteOrder};
use vhdkit_serve::proto::*;

/// Splits option replies into (reply type, data).
fn replies(mut out: &[u8]) -> Vec<(u32, Vec<u8>)> {
    let mut v = Vec::new();
    while !out.is_empty() {
        assert_eq!(BigEndian::read_u64(&out[..8]), OPTION_REPLY_MAGIC);
        let len = BigEndian::read_u32(&out[16..]) as usize;
        v.push((BigEndian::read_u32(&out[12..]), out[20..20 + len].to_vec()));
        out = &out[20 + len..];
    }
    v
}

fn option(n: &mut Negotiation, opt: u32, data: &[u8]) -> (Step, Vec<(u32, Vec<u8>)>) {
    let mut out = Vec::new();
    let step = n.option(
        OptionHeader {
            option: opt,
            len: data.len() as u32,
        },
        data,
        &mut out,
    );
    (step, replies(&out))
}

fn meta_data(export: &str, queries: &[&str]) -> Vec<u8> {
    let mut d = (export.len() as u32).to_be_bytes().to_vec();
    d.extend_from_slice(export.as_bytes());
    d.extend_from_slice(&(queries.len() as u32).to_be_bytes());
    for q in queries {
        d.extend_from_slice(&(q.len() as u32).to_be_bytes());
        d.extend_from_slice(q.as_bytes());
    }
    d
}

fn go_data(name: &str, infos: &[u16]) -> Vec<u8> {
    let mut d = (name.len() as u32).to_be_bytes().to_vec();
    d.extend_from_slice(name.as_bytes());
    d.extend_from_slice(&(infos.len() as u16).to_be_bytes());
    for i in infos {
        d.extend_from_slice(&i.to_be_bytes());
    }
    d
}

fn negotiation(read_only: bool) -> Negotiation {
    let mut n = Negotiation::new(ExportInfo::new("disk", 1 << 30, read_only, true));
    n.client_flags(FLAG_C_FIXED_NEWSTYLE | FLAG_C_NO_ZEROES)
        .expect("known flags");
    n
}

fn session(structured: bool, meta: bool, read_only: bool) -> Session {
    let mut n = negotiation(read_only);
    if structured {
        option(&mut n, OPT_STRUCTURED_REPLY, &[]);
    }
    if meta {
        option(
            &mut n,
            OPT_SET_META_CONTEXT,
            &meta_data("disk", &["base:allocation"]),
        );
    }
    match option(&mut n, OPT_GO, &go_data("", &[])).0 {
        Step::Transmission(s) => s,
        other => panic!("GO refused: {other:?}"),
    }
}

fn req(kind: u16, flags: u16, offset: u64, len: u32) -> Request {
    Request {
        flags,
        kind,
        cookie: 1,
        offset,
        len,
    }
}

#[test]
fn greeting_announces_fixed_newstyle_and_no_zeroes() {
    let g = greeting();
    assert_eq!(&g[..8], b"NBDMAGIC");
    assert_eq!(&g[8..16], b"IHAVEOPT");
    assert_eq!(
        g[16..],
        (FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES).to_be_bytes()
    );
}

#[test]
fn client_flags_unknown_bits_are_refused() {
    let mut n = Negotiation::new(ExportInfo::new("", 1, false, true));
    assert!(n.client_flags(1 << 5).is_err());
    assert!(n.client_flags(FLAG_C_FIXED_NEWSTYLE).is_ok());
}

#[test]
fn option_header_longer_than_the_cap_is_refused() {
    let mut h = [0u8; 16];
    h[..8].copy_from_slice(&IHAVEOPT.to_be_bytes());
    h[8..12].copy_from_slice(&OPT_GO.to_be_bytes());
    h[12..].copy_from_slice(&(MAX_OPTION_DATA + 1).to_be_bytes());
    assert!(matches!(
        OptionHeader::parse(&h),
        Err(ProtocolError::OptionTooLong { .. })
    ));
    h[0] = 0;
    assert!(matches!(
        OptionHeader::parse(&h),
        Err(ProtocolError::BadMagic { .. })
    ));
}

#[test]
fn go_after_structured_and_meta_context_enters_transmission_with_the_context() {
    let mut n = negotiation(false);
    let (_, r) = option(&mut n, OPT_STRUCTURED_REPLY, &[]);
    assert_eq!(r, vec![(REP_ACK, vec![])]);
    let (_, r) = option(
        &mut n,
        OPT_SET_META_CONTEXT,
        &meta_data("disk", &["base:allocation", "qemu:dirty-bitmap:x"]),
    );
    assert_eq!(r.len(), 2);
    assert_eq!(r[0].0, REP_META_CONTEXT);
    assert_eq!(BigEndian::read_u32(&r[0].1), META_BASE_ALLOCATION_ID);
    assert_eq!(&r[0].1[4..], b"base:allocation");
    let (step, r) = option(
        &mut n,
        OPT_GO,
        &go_data("disk", &[INFO_NAME, INFO_BLOCK_SIZE]),
    );
    let Step::Transmission(s) = step else {
        panic!("not in transmission")
    };
    assert_eq!(s.meta_context, Some(META_BASE_ALLOCATION_ID));
    assert!(s.structured && s.has(FLAG_SEND_DF) && s.has(FLAG_CAN_MULTI_CONN));
    assert_eq!(r.last().expect("replies").0, REP_ACK);
    let export = r
        .iter()
        .find(|(t, d)| *t == REP_INFO && d[..2] == INFO_EXPORT.to_be_bytes())
        .expect("NBD_INFO_EXPORT");
    assert_eq!(export.1.len(), 12);
    assert_eq!(BigEndian::read_u64(&export.1[2..10]), 1 << 30);
    let block = r
        .iter()
        .find(|(t, d)| *t == REP_INFO && d[..2] == INFO_BLOCK_SIZE.to_be_bytes())
        .expect("NBD_INFO_BLOCK_SIZE");
    assert_eq!(BigEndian::read_u32(&block.1[10..]), MAX_REQUEST);
}

#[test]
fn info_does_not_enter_transmission_and_unknown_exports_are_refused() {
    let mut n = negotiation(false);
    let (step, r) = option(&mut n, OPT_INFO, &go_data("disk", &[]));
    assert_eq!(step, Step::Continue);
    assert_eq!(r.last().expect("reply").0, REP_ACK);
    let (step, r) = option(&mut n, OPT_GO, &go_data("other", &[]));
    assert_eq!(step, Step::Continue);
    assert_eq!(r, vec![(REP_ERR_UNKNOWN, b"no such export".to_vec())]);
    let (step, r) = option(&mut n, OPT_GO, &[0, 0, 0, 9, b'x']);
    assert_eq!(step, Step::Continue);
    assert_eq!(r[0].0, REP_ERR_INVALID);
}

#[test]
fn export_name_for_an_unknown_export_closes_and_a_known_one_omits_padding() {
    let mut n = negotiation(false);
    let (step, _) = option(&mut n, OPT_EXPORT_NAME, b"nope");
    assert!(matches!(step, Step::Close(ProtocolError::UnknownExport)));

    let mut n = negotiation(true);
    let mut out = Vec::new();
    let step = n.option(
        OptionHeader {
            option: OPT_EXPORT_NAME,
            len: 4,
        },
        b"disk",
        &mut out,
    );
    assert!(matches!(step, Step::Transmission(_)));
    assert_eq!(out.len(), 10, "size and flags, no zero padding");
    let flags = BigEndian::read_u16(&out[8..]);
    assert!(flags & FLAG_READ_ONLY != 0 && flags & FLAG_SEND_TRIM == 0);
}

#[test]
fn list_abort_starttls_and_unknown_options_are_answered() {
    let mut n = negotiation(false);
    let (_, r) = option(&mut n, OPT_LIST, &[]);
    assert_eq!(r[0].0, REP_SERVER);
    assert_eq!(&r[0].1[4..8], b"disk");
    assert_eq!(r[1].0, REP_ACK);
    let (_, r) = option(&mut n, OPT_LIST, b"x");
    assert_eq!(r[0].0, REP_ERR_INVALID);
    let (_, r) = option(&mut n, OPT_STARTTLS, &[]);
    assert_eq!(r[0].0, REP_ERR_UNSUP);
    let (step, r) = option(&mut n, 0xdead, b"zz");
    assert_eq!(step, Step::Continue);
    assert_eq!(r[0].0, REP_ERR_UNSUP);
    let (step, r) = option(&mut n, OPT_ABORT, &[]);
    assert!(matches!(step, Step::Close(ProtocolError::Aborted)));
    assert_eq!(r, vec![(REP_ACK, vec![])]);
}

#[test]
fn meta_context_needs_structured_replies_and_lists_base_allocation() {
    let mut n = negotiation(false);
    let (_, r) = option(&mut n, OPT_LIST_META_CONTEXT, &meta_data("", &[]));
    assert_eq!(r[0].0, REP_ERR_INVALID);
    option(&mut n, OPT_STRUCTURED_REPLY, &[]);
    let (_, r) = option(&mut n, OPT_LIST_META_CONTEXT, &meta_data("", &["base:"]));
    assert_eq!(r[0].0, REP_META_CONTEXT);
    assert_eq!(&r[0].1[4..], b"base:allocation");
    let (_, r) = option(&mut n, OPT_SET_META_CONTEXT, &meta_data("", &["base:"]));
    assert_eq!(r, vec![(REP_ACK, vec![])], "base: selects nothing");
    let mut bad = meta_data("", &["base:allocation"]);
    bad.truncate(bad.len() - 3);
    let (_, r) = option(&mut n, OPT_SET_META_CONTEXT, &bad);
    assert_eq!(r[0].0, REP_ERR_INVALID);
}

#[test]
fn option_flood_closes_the_connection() {
    let mut n = negotiation(false);
    let mut closed = false;
    for _ in 0..=MAX_OPTIONS {
        if let (Step::Close(ProtocolError::TooManyOptions), _) = option(&mut n, 0x99, &[]) {
            closed = true;
        }
    }
    assert!(closed);
}

#[test]
fn shutting_down_refuses_options() {
    let mut n = negotiation(false);
    n.set_shutting_down();
    let (_, r) = option(&mut n, OPT_GO, &go_data("", &[]));
    assert_eq!(r[0].0, REP_ERR_SHUTDOWN);
}

#[test]
fn request_with_bad_magic_is_a_protocol_error() {
    let mut b = [0u8; REQUEST_SIZE];
    assert!(parse_request(&b).is_err());
    b[..4].copy_from_slice(&REQUEST_MAGIC.to_be_bytes());
    b[6..8].copy_from_slice(&CMD_WRITE.to_be_bytes());
    b[24..].copy_from_slice(&4096u32.to_be_bytes());
    let r = parse_request(&b).expect("valid header");
    assert_eq!((r.kind, r.len), (CMD_WRITE, 4096));
}

#[test]
fn request_checks_range_length_flags_and_mode() {
    let s = session(true, true, false);
    let size = s.size;
    assert!(matches!(
        s.check(&req(CMD_READ, 0, size - 512, 512)),
        Ok(Command::Read { .. })
    ));
    let err = |r: Result<Command, Refusal>| match r {
        Err(Refusal::Error { errno, skip, .. }) => (errno, skip),
        other => panic!("expected an error, got {other:?}"),
    };
    assert_eq!(
        err(s.check(&req(CMD_READ, 0, size - 511, 512))),
        (EINVAL, 0)
    );
    assert_eq!(err(s.check(&req(CMD_READ, 0, u64::MAX, 2))), (EINVAL, 0));
    assert_eq!(
        err(s.check(&req(CMD_READ, 0, 0, MAX_REQUEST + 1))),
        (EINVAL, 0)
    );
    assert_eq!(err(s.check(&req(CMD_WRITE, 0, size, 512))), (ENOSPC, 512));
    assert!(matches!(
        s.check(&req(CMD_WRITE, 0, 0, MAX_REQUEST + 1)),
        Err(Refusal::Close(ProtocolError::WriteTooLong(_)))
    ));
    assert_eq!(err(s.check(&req(77, 0, 0, 0))), (EINVAL, 0));
    assert_eq!(
        err(s.check(&req(CMD_READ, CMD_FLAG_REQ_ONE, 0, 1))),
        (EINVAL, 0)
    );
    assert_eq!(err(s.check(&req(CMD_READ, 1 << 9, 0, 1))), (EINVAL, 0));
    assert_eq!(err(s.check(&req(CMD_FLUSH, 0, 1, 0))), (EINVAL, 0));
    assert_eq!(
        err(s.check(&req(CMD_WRITE_ZEROES, CMD_FLAG_FAST_ZERO, 0, 512))),
        (EINVAL, 0)
    );
    assert!(matches!(
        s.check(&req(CMD_WRITE, CMD_FLAG_FUA, 0, 512)),
        Ok(Command::Write { fua: true, .. })
    ));
    assert!(matches!(
        s.check(&req(CMD_READ, CMD_FLAG_DF, 0, 512)),
        Ok(Command::Read { df: true, .. })
    ));
    assert!(matches!(
        s.check(&req(CMD_DISC, 0xffff, 5, 5)),
        Ok(Command::Disconnect)
    ));

    let ro = session(false, false, true);
    assert_eq!(err(ro.check(&req(CMD_WRITE, 0, 0, 4096))), (EPERM, 4096));
    assert_eq!(err(ro.check(&req(CMD_TRIM, 0, 0, 4096))), (EPERM, 0));
    assert_eq!(
        err(ro.check(&req(CMD_WRITE, CMD_FLAG_FUA, 0, 1))),
        (EINVAL, 1)
    );
    assert_eq!(
        err(ro.check(&req(CMD_READ, CMD_FLAG_DF, 0, 1))),
        (EINVAL, 0)
    );
    assert_eq!(
        err(ro.check(&req(CMD_BLOCK_STATUS, 0, 0, 512))),
        (EINVAL, 0)
    );
}

#[test]
fn descriptors_merge_same_status_and_respect_req_one() {
    let d = descriptors(
        [(512, false), (1024, false), (4096, true), (512, false)],
        false,
    );
    assert_eq!(
        d,
        vec![(1536, 0), (4096, STATE_HOLE | STATE_ZERO), (512, 0)]
    );
    let d = descriptors([(512, true), (1024, false)], true);
    assert_eq!(d, vec![(512, STATE_HOLE | STATE_ZERO)]);
    let many = (0..2 * MAX_DESCRIPTORS).map(|i| (512u64, i % 2 == 0));
    assert_eq!(descriptors(many, false).len(), MAX_DESCRIPTORS);
}

#[test]
fn read_chunks_keep_small_holes_in_data_and_df_makes_one_chunk() {
    let parts = [
        (4096, false),
        (4096, true),
        (4096, false),
        (MIN_HOLE_CHUNK, true),
        (512, false),
    ];
    let c = read_chunks(1000, parts, false);
    assert_eq!(
        c,
        vec![
            ReadChunk {
                offset: 1000,
                len: 3 * 4096,
                hole: false
            },
            ReadChunk {
                offset: 1000 + 3 * 4096,
                len: MIN_HOLE_CHUNK,
                hole: true
            },
            ReadChunk {
                offset: 1000 + 3 * 4096 + MIN_HOLE_CHUNK,
                len: 512,
                hole: false
            },
        ]
    );
    let c = read_chunks(0, parts, true);
    assert_eq!(c.len(), 1);
    assert_eq!(c[0].len, 3 * 4096 + MIN_HOLE_CHUNK + 512);
}

#[test]
fn replies_have_the_documented_layouts() {
    assert_eq!(
        &simple_reply(7, EIO)[..4],
        &SIMPLE_REPLY_MAGIC.to_be_bytes()
    );
    let h = data_chunk_header(7, 4096, 100);
    assert_eq!(BigEndian::read_u32(&h[16..]), 108);
    let hole = hole_chunk(7, 0, 512);
    assert_eq!(BigEndian::read_u32(&hole[16..]), 12);
    let e = error_chunk(7, EINVAL, "bad");
    assert_eq!(BigEndian::read_u16(&e[4..]), REPLY_FLAG_DONE);
    assert_eq!(BigEndian::read_u32(&e[16..]), 9);
    let b = block_status_chunk(7, 1, &[(512, 0), (1024, 3)]);
    assert_eq!(BigEndian::read_u32(&b[16..]), 4 + 16);
}
