//! SGD and Split-SGD updates: every ISA gives the portable bits, and Split-SGD moves the
//! master weight exactly as fp32 SGD does.

use dlrm_microkernels::convert::Converter;
use dlrm_microkernels::sgd::Sgd;
use dlrm_microkernels::{Isa, KernelError, bf16};
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn split_sgd_is_exact_fp32_sgd_on_every_isa(
        wg in prop::collection::vec((-10.0f32..10.0, -10.0f32..10.0), 0..70),
        lr in 1e-4f32..1.0,
    ) {
        let (w0, g): (Vec<f32>, Vec<f32>) = wg.into_iter().unzip();
        let want: Vec<u32> = w0.iter().zip(&g).map(|(w, g)| (w - lr * g).to_bits()).collect();
        for isa in Isa::available() {
            let sgd = Sgd::with_isa(isa).unwrap();
            let cvt = Converter::with_isa(isa).unwrap();
            let mut w = w0.clone();
            sgd.sgd(&mut w, &g, lr).unwrap();
            prop_assert_eq!(w.iter().map(|x| x.to_bits()).collect::<Vec<_>>(), want.clone(), "{}", isa);

            let mut hi = vec![bf16::ZERO; w0.len()];
            let mut lo = vec![0u16; w0.len()];
            cvt.split_f32(&w0, &mut hi, &mut lo).unwrap();
            sgd.split_sgd(&mut hi, &mut lo, &g, lr).unwrap();
            let mut joined = vec![0f32; w0.len()];
            cvt.join_f32(&hi, &lo, &mut joined).unwrap();
            prop_assert_eq!(joined.iter().map(|x| x.to_bits()).collect::<Vec<_>>(), want.clone(), "{}", isa);
        }
    }
}

#[test]
fn length_mismatch_changes_nothing() {
    for isa in Isa::available() {
        let sgd = Sgd::with_isa(isa).unwrap();
        let mut w = [1.0f32; 5];
        let err = sgd.sgd(&mut w, &[1.0; 4], 0.1).unwrap_err();
        assert_eq!(err.to_string(), "w and g differ in length: 5 vs 4");
        assert!(w.iter().all(|&x| x == 1.0));
        let mut hi = [bf16::ONE; 5];
        let mut lo = [3u16; 4];
        assert!(matches!(
            sgd.split_sgd(&mut hi, &mut lo, &[1.0; 5], 0.1),
            Err(KernelError::LengthMismatch {
                what: "lo and g",
                ..
            })
        ));
        assert!(hi.iter().all(|&x| x == bf16::ONE) && lo.iter().all(|&x| x == 3));
    }
}
