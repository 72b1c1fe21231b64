//! Sizes that come from outside (public constructors, configurations): products that would
//! overflow are errors naming the sizes, never wrapped values, panics or aborts.

use dlrm_kernels::blocked::Blocked;
use dlrm_kernels::kernels::BatchKind;
use dlrm_kernels::linear::{Activation, Blocking, Linear, LinearConfig};
use dlrm_kernels::model::{Dlrm, DlrmConfig};
use dlrm_kernels::{Brgemm, BrgemmDesc, Error, KernelError, bf16};

#[test]
fn blocked_tensors_whose_size_overflows_are_errors() {
    let err = Blocked::<f32>::zeros(1 << 58, 64, 64, 64).unwrap_err();
    assert!(matches!(err, Error::Config(_)), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains("288230376151711744 x 64"), "{msg}");
    assert!(Blocked::<bf16>::zeros(64, usize::MAX, 64, 64).is_err());
    assert!(Blocked::<f32>::from_row_major(&[], 1 << 58, 64, 64, 64).is_err());
    // 2^62 elements fit a usize, but not their bytes.
    assert!(Blocked::<f32>::zeros((1 << 62) + 1, 1, 3, 1).is_err());
    // Small sizes are unaffected.
    let z = Blocked::<f32>::zeros(5, 3, 4, 2).unwrap();
    assert_eq!((z.get(4, 2), z.as_slice().len()), (0.0, 8 * 4));
}

#[test]
fn brgemm_descriptors_of_absurd_sizes_saturate_and_are_refused() {
    let d = BrgemmDesc::f32(1 << 33, 8, 1 << 33);
    assert_eq!(
        d.batch,
        BatchKind::Strided {
            stride_a: usize::MAX,
            stride_b: 8 << 33
        }
    );
    assert!(matches!(Brgemm::new(d), Err(KernelError::Overflow { .. })));
    let d = BrgemmDesc::bf16(8, 1 << 33, 1 << 33);
    assert_eq!(
        d.batch,
        BatchKind::Strided {
            stride_a: 8 << 33,
            stride_b: usize::MAX
        }
    );
    assert!(matches!(Brgemm::new(d), Err(KernelError::Overflow { .. })));
    // A bf16 B whose leading dimension doubled overflows.
    let mut d = BrgemmDesc::bf16(2, 2, 4);
    d.ldb = usize::MAX / 2 + 1;
    assert!(matches!(Brgemm::new(d), Err(KernelError::Overflow { .. })));
}

#[test]
fn linear_layers_whose_sizes_overflow_are_errors() {
    let blocking = Blocking {
        bn: 64,
        bc: 64,
        bk: 64,
    };
    let huge = LinearConfig::new(1 << 40, 1 << 40, Activation::Relu, blocking);
    let err = Linear::<f32>::new(huge, 0).unwrap_err();
    assert!(matches!(err, Error::Config(_)), "{err:?}");
    assert!(err.to_string().contains("1099511627776"), "{err}");
    assert!(Linear::<bf16>::new(huge, 0).is_err());
    let wide_blocks = Blocking {
        bn: 1 << 40,
        bc: 1 << 40,
        bk: 4,
    };
    let cfg = LinearConfig::new(8, 4, Activation::None, wide_blocks);
    assert!(Linear::<f32>::new(cfg, 0).is_err());
}

#[test]
fn a_model_whose_batch_size_overflows_is_an_error() {
    let cfg = DlrmConfig {
        batch_size: usize::MAX,
        ..DlrmConfig::tiny()
    };
    let err = Dlrm::new(cfg, 0).unwrap_err();
    assert!(err.to_string().contains("18446744073709551615"), "{err}");
    let cfg = DlrmConfig {
        bottom_mlp: vec![5, 1 << 40],
        embedding_dim: 1 << 40,
        top_mlp: vec![1 << 40, 1],
        ..DlrmConfig::tiny()
    };
    assert!(Dlrm::new(cfg, 0).is_err());
}
