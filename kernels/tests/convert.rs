//! bf16 conversions, Split-SGD split/join and VNNI-2 packing, on every ISA this machine has.

use dlrm_microkernels::convert::Converter;
use dlrm_microkernels::{Isa, KernelError, bf16, vnni};
use proptest::prelude::*;

fn converters() -> Vec<Converter> {
    Isa::ALL
        .into_iter()
        .filter_map(|isa| match Converter::with_isa(isa) {
            Ok(c) => Some(c),
            Err(e) => {
                eprintln!("skip: {e}");
                None
            }
        })
        .collect()
}

/// Bit patterns covering every class: normals, subnormals, zeros, infinities, NaNs, ties.
fn special_bits() -> Vec<u32> {
    vec![
        0x0000_0000,
        0x8000_0000,
        0x0000_0001,
        0x807f_ffff,
        0x0080_0000,
        0x3f80_8000,
        0x3f81_8000,
        0x3f80_7fff,
        0x3f80_8001,
        0x7f7f_ffff,
        0xff7f_ffff,
        0x7f80_0000,
        0xff80_0000,
        0x7fc0_0000,
        0x7f80_0001,
        0xffff_ffff,
        0x7fbf_ffff,
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn f32_to_bf16_matches_half_bit_for_bit(bits in prop::collection::vec(any::<u32>(), 0..70)) {
        let src: Vec<f32> = bits.iter().map(|&b| f32::from_bits(b)).collect();
        let want: Vec<u16> = src.iter().map(|&x| bf16::from_f32(x).to_bits()).collect();
        for cvt in converters() {
            let mut dst = vec![bf16::from_bits(0xdead); src.len() + 3];
            cvt.f32_to_bf16(&src, &mut dst[..src.len()]).unwrap();
            let got: Vec<u16> = dst[..src.len()].iter().map(|x| x.to_bits()).collect();
            prop_assert_eq!(&got, &want, "{}", cvt.isa());
            prop_assert!(dst[src.len()..].iter().all(|x| x.to_bits() == 0xdead));
        }
    }

    #[test]
    fn split_join_round_trip_exactly(bits in prop::collection::vec(any::<u32>(), 0..70)) {
        let src: Vec<f32> = bits.iter().map(|&b| f32::from_bits(b)).collect();
        for cvt in converters() {
            let mut hi = vec![bf16::ZERO; src.len()];
            let mut lo = vec![0u16; src.len()];
            cvt.split_f32(&src, &mut hi, &mut lo).unwrap();
            for (i, &b) in bits.iter().enumerate() {
                // Truncation: hi is exactly the upper half, never rounded.
                prop_assert_eq!(hi[i].to_bits(), (b >> 16) as u16);
                prop_assert_eq!(lo[i], b as u16);
            }
            let mut back = vec![0f32; src.len()];
            cvt.join_f32(&hi, &lo, &mut back).unwrap();
            let back_bits: Vec<u32> = back.iter().map(|x| x.to_bits()).collect();
            prop_assert_eq!(&back_bits, &bits, "{}", cvt.isa());
            let mut widened = vec![0f32; src.len()];
            cvt.bf16_to_f32(&hi, &mut widened).unwrap();
            for (w, &b) in widened.iter().zip(&bits) {
                prop_assert_eq!(w.to_bits(), b & 0xffff_0000);
            }
        }
    }
}

#[test]
fn special_values_round_like_half() {
    let src: Vec<f32> = special_bits().into_iter().map(f32::from_bits).collect();
    for cvt in converters() {
        let mut dst = vec![bf16::ZERO; src.len()];
        cvt.f32_to_bf16(&src, &mut dst).unwrap();
        for (s, d) in src.iter().zip(&dst) {
            assert_eq!(
                d.to_bits(),
                bf16::from_f32(*s).to_bits(),
                "{} {:#x}",
                cvt.isa(),
                s.to_bits()
            );
        }
        // The largest finite f32 rounds up to infinity; NaN stays NaN.
        assert!(dst[9].is_infinite() && dst[13].is_nan() && dst[14].is_nan());
    }
}

#[test]
fn length_mismatch_is_an_error_and_writes_nothing() {
    for cvt in converters() {
        let mut dst = [bf16::from_bits(7); 3];
        let err = cvt.f32_to_bf16(&[1.0; 4], &mut dst).unwrap_err();
        assert_eq!(err.to_string(), "src and dst differ in length: 4 vs 3");
        assert!(dst.iter().all(|x| x.to_bits() == 7));
        let mut lo = [9u16; 4];
        let mut hi = [bf16::ZERO; 4];
        let err = cvt.split_f32(&[1.0; 4], &mut hi, &mut lo[..2]).unwrap_err();
        assert!(matches!(
            err,
            KernelError::LengthMismatch {
                what: "src and lo",
                ..
            }
        ));
        let mut out = [5.0f32; 4];
        assert!(cvt.join_f32(&hi, &lo[..3], &mut out).is_err());
        assert!(cvt.bf16_to_f32(&hi[..3], &mut out).is_err());
        assert!(out.iter().all(|&x| x == 5.0));
    }
}

proptest! {
    #[test]
    fn vnni_pack_unpack_round_trip(k in 1usize..20, n in 1usize..20, pad_s in 0usize..3, pad_d in 0usize..3) {
        let (ld_s, ld_d) = (n + pad_s, n + pad_d);
        let src: Vec<bf16> = (0..k * ld_s).map(|i| bf16::from_f32(i as f32)).collect();
        let mut packed = vec![bf16::NAN; k.div_ceil(2) * 2 * ld_d];
        vnni::pack(&src, k, n, ld_s, &mut packed, ld_d).unwrap();
        for kk in 0..k.div_ceil(2) * 2 {
            for j in 0..n {
                let v = packed[vnni::index(kk, j, ld_d)];
                if kk < k {
                    prop_assert_eq!(v, src[kk * ld_s + j]);
                } else {
                    prop_assert_eq!(v.to_bits(), 0, "padding is zero");
                }
            }
        }
        let mut back = vec![bf16::NAN; k * ld_s];
        vnni::unpack(&packed, k, n, ld_d, &mut back, ld_s).unwrap();
        for kk in 0..k {
            prop_assert_eq!(&back[kk * ld_s..kk * ld_s + n], &src[kk * ld_s..kk * ld_s + n]);
        }
    }
}

#[test]
fn vnni_errors() {
    let src = [bf16::ONE; 12];
    let mut dst = [bf16::ZERO; 12];
    assert!(matches!(
        vnni::pack(&src, 3, 4, 3, &mut dst, 4),
        Err(KernelError::LeadingDimension { name: "src", .. })
    ));
    // k = 3, n = 4: packed needs ceil(3/2) * 2 * 4 = 16 elements.
    let err = vnni::pack(&src, 3, 4, 4, &mut dst, 4).unwrap_err();
    assert_eq!(
        err.to_string(),
        "dst slice too short: needs 16 elements, has 12"
    );
    assert!(dst.iter().all(|x| *x == bf16::ZERO));
}
