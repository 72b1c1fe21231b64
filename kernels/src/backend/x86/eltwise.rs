//! The element-wise entries of the x86 SIMD backends: the portable bodies
//! ([`crate::backend::portable::eltwise`], which auto-vectorise) compiled again under each
//! backend's target features. The bits are the portable ones, since each body is
//! element-wise or sums in a fixed order.

/// A backend's element-wise entries: `shims!("its,features")` expands, in the invoking
/// module, to thin `#[target_feature]` shims over the portable bodies and the table
/// `ELTWISE` naming them.
macro_rules! shims {
    ($features:literal) => {
        use $crate::activation::Activation;
        use $crate::backend::portable;
        use $crate::dtype::{SliceMut, SliceRef};

        /// The element-wise entries.
        pub(crate) const ELTWISE: $crate::abi::EltwiseFns = $crate::abi::EltwiseFns {
            bias_act,
            act_backward,
            column_sums,
            column_sums_vnni,
            row_dots,
        };

        #[target_feature(enable = $features)]
        unsafe fn bias_act(
            acc: &mut [f32],
            cols: usize,
            valid_rows: usize,
            valid_cols: usize,
            bias: &[f32],
            act: Activation,
        ) {
            // SAFETY: forwarded; the body is safe code.
            unsafe { portable::eltwise::bias_act(acc, cols, valid_rows, valid_cols, bias, act) }
        }

        #[target_feature(enable = $features)]
        unsafe fn act_backward(dy: SliceMut<'_>, y: SliceRef<'_>, act: Activation) {
            // SAFETY: forwarded; the body is safe code.
            unsafe { portable::eltwise::act_backward(dy, y, act) }
        }

        #[target_feature(enable = $features)]
        unsafe fn column_sums(block: SliceRef<'_>, rows: usize, cols: usize, sums: &mut [f32]) {
            // SAFETY: forwarded; the body is safe code.
            unsafe { portable::eltwise::column_sums(block, rows, cols, sums) }
        }

        #[target_feature(enable = $features)]
        unsafe fn column_sums_vnni(
            packed: SliceRef<'_>,
            rows: usize,
            cols: usize,
            sums: &mut [f32],
        ) {
            // SAFETY: forwarded; the body is safe code.
            unsafe { portable::eltwise::column_sums_vnni(packed, rows, cols, sums) }
        }

        #[target_feature(enable = $features)]
        unsafe fn row_dots(
            block: SliceRef<'_>,
            rows: usize,
            cols: usize,
            w: SliceRef<'_>,
            acc: &mut [f32],
        ) {
            // SAFETY: forwarded; the body is safe code.
            unsafe { portable::eltwise::row_dots(block, rows, cols, w, acc) }
        }
    };
}
pub(crate) use shims;
