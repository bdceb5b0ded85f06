//! The generators and write lists reproduce, bit for bit, the streams the suites were
//! written against (known answers taken from the copies they replace).

use vhdkit_testkit::{mixed_writes, random_writes, Algorithm, Model, Rng, Write, KIB, MIB};

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// FNV-1a over every write's offset (little-endian) and bytes.
fn fingerprint(writes: &[Write]) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    for (o, d) in writes {
        for b in o.to_le_bytes().iter().chain(d) {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}

#[test]
fn splitmix_stream() {
    assert_eq!(hex(&Rng::new(3).bytes(13)), "ed8f01dbe4140b1d89a9817b8a");
}

#[test]
fn xorshift_star_stream() {
    assert_eq!(
        hex(&Rng::xorshift_star(7).bytes(13)),
        "b7afe9e99ddb1e67346bfbd569"
    );
}

#[test]
fn xorshift_stream() {
    let mut r = Rng::xorshift(5);
    let b: Vec<u8> = (0..8).map(|_| (r.next_u64() >> 24) as u8).collect();
    assert_eq!(hex(&b), "af941807770a881b");
    let mut r = Rng::from_state(Algorithm::XorShift, 0x5EED_1234_ABCD_0001);
    assert_eq!(
        [r.next_u64(), r.next_u64(), r.next_u64()],
        [
            0x5dd5_f3f6_e558_ba41,
            0x106a_eaea_3f1e_bb75,
            0xc90a_3512_0d26_fb43
        ]
    );
}

#[test]
fn xorshift_star_from_a_splitmix_state() {
    // The benches' generator: xorshift64* seeded with splitmix64's first value.
    let z = Rng::new(11).next_u64();
    let mut r = Rng::from_state(Algorithm::XorShiftStar, z);
    assert_eq!(
        [r.next_u64(), r.next_u64(), r.next_u64()],
        [
            0x4b3b_93d9_8281_0c21,
            0xaf86_4d73_feae_590c,
            0xcb9d_9eef_d9e6_933a
        ]
    );
}

#[test]
fn fill_equals_bytes() {
    for n in [0, 1, 7, 8, 9, 4096, 4099] {
        let mut buf = vec![0xAA; n];
        Rng::xorshift_star(9).fill(&mut buf);
        assert_eq!(buf, Rng::xorshift_star(9).bytes(n), "{n} bytes");
    }
}

#[test]
#[should_panic(expected = "other than zero")]
fn a_zero_xorshift_state_is_refused() {
    Rng::from_state(Algorithm::XorShiftStar, 0);
}

#[test]
fn mixed_writes_stream() {
    let w = mixed_writes(8 * MIB + 300 * KIB, 512 * KIB, 11);
    assert_eq!((w.len(), fingerprint(&w)), (15, 0x503f_4cb2_a88c_c41c));
    let w = mixed_writes(4 * MIB, 256 * KIB, 72);
    assert_eq!((w.len(), fingerprint(&w)), (14, 0x07dc_aad4_d8b1_d4fe));
}

#[test]
fn random_writes_stream() {
    let w = random_writes(&mut Rng::new(42), 5_000_704, 20);
    assert_eq!((w.len(), fingerprint(&w)), (20, 0x6de6_39d5_4498_f411));
}

#[test]
fn model_applies_writes_in_order() {
    let m = Model::from_writes(16, &[(2, vec![1, 2, 3]), (3, vec![9])]);
    assert_eq!(m.0, [0, 0, 1, 9, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    assert_eq!(m.size(), 16);
}
