//! Conversions between f32 and bf16, the Split-SGD split and join, and the SGD updates of
//! the x86 SIMD backends, written once against [`Vector`]: whole vectors, then one masked
//! vector for the tail. Each is element-wise with the portable backend's arithmetic
//! (multiply, then subtract), so every backend gives the same bits.

use half::bf16;

use super::vector::Vector;

/// f32 -> bf16, round to nearest even (same bits as `half::bf16::from_f32`).
///
/// # Safety
///
/// The CPU has what `V` needs (callers are `#[target_feature]` shims); `dst` is at least as
/// long as `src`.
#[inline(always)]
pub(crate) unsafe fn f32_to_bf16<V: Vector>(src: &[f32], dst: &mut [bf16]) {
    let (n, lanes) = (src.len(), V::LANES);
    let (s, d) = (src.as_ptr(), dst.as_mut_ptr());
    let mut i = 0;
    // SAFETY: i + lanes <= n for full vectors, masked lanes below n for the tail;
    // dst.len() >= n.
    unsafe {
        while i + lanes <= n {
            V::storeu_bf16(d.add(i), V::loadu(s.add(i)));
            i += lanes;
        }
        if i < n {
            let m = V::first(n - i);
            V::store_bf16(d.add(i), m, V::load(s.add(i), m));
        }
    }
}

/// bf16 -> f32 (exact).
///
/// # Safety
///
/// As [`f32_to_bf16`], with `dst` at least as long as `src`.
#[inline(always)]
pub(crate) unsafe fn bf16_to_f32<V: Vector>(src: &[bf16], dst: &mut [f32]) {
    let (n, lanes) = (src.len(), V::LANES);
    let (s, d) = (src.as_ptr(), dst.as_mut_ptr());
    let mut i = 0;
    // SAFETY: full vectors end at or before n; the tail is masked.
    unsafe {
        while i + lanes <= n {
            V::storeu(d.add(i), V::loadu_bf16(s.add(i)));
            i += lanes;
        }
        if i < n {
            let m = V::first(n - i);
            V::store(d.add(i), m, V::load_bf16(s.add(i), m));
        }
    }
}

/// f32 -> (bf16 upper half, u16 lower half), by truncation.
///
/// # Safety
///
/// As [`f32_to_bf16`], with `hi` and `lo` at least as long as `src`.
#[inline(always)]
pub(crate) unsafe fn split_f32<V: Vector>(src: &[f32], hi: &mut [bf16], lo: &mut [u16]) {
    let (n, lanes) = (src.len(), V::LANES);
    let (s, h, l) = (src.as_ptr(), hi.as_mut_ptr().cast::<u16>(), lo.as_mut_ptr());
    let mut i = 0;
    // SAFETY: full vectors end at or before n; the tail is masked.
    unsafe {
        while i + lanes <= n {
            V::storeu_split(h.add(i), l.add(i), V::loadu(s.add(i)));
            i += lanes;
        }
        if i < n {
            let m = V::first(n - i);
            V::store_split(h.add(i), l.add(i), m, V::load(s.add(i), m));
        }
    }
}

/// (bf16 upper half, u16 lower half) -> f32, exactly.
///
/// # Safety
///
/// As [`f32_to_bf16`], with `hi`, `lo` and `dst` of at least `dst.len()` elements.
#[inline(always)]
pub(crate) unsafe fn join_f32<V: Vector>(hi: &[bf16], lo: &[u16], dst: &mut [f32]) {
    let (n, lanes) = (dst.len(), V::LANES);
    let (h, l, d) = (hi.as_ptr().cast::<u16>(), lo.as_ptr(), dst.as_mut_ptr());
    let mut i = 0;
    // SAFETY: full vectors end at or before n; the tail is masked.
    unsafe {
        while i + lanes <= n {
            V::storeu(d.add(i), V::loadu_split(h.add(i), l.add(i)));
            i += lanes;
        }
        if i < n {
            let m = V::first(n - i);
            V::store(d.add(i), m, V::load_split(h.add(i), l.add(i), m));
        }
    }
}

/// `w -= lr * g` (multiply, then subtract: the same rounding as the portable path).
///
/// # Safety
///
/// The CPU has what `V` needs; `g` is at least as long as `w`.
#[inline(always)]
pub(crate) unsafe fn sgd<V: Vector>(w: &mut [f32], g: &[f32], lr: f32) {
    let (n, lanes) = (w.len(), V::LANES);
    let (wp, gp) = (w.as_mut_ptr(), g.as_ptr());
    let mut i = 0;
    // SAFETY: full vectors end at or before n; the tail is masked.
    unsafe {
        let lrv = V::splat(lr);
        while i + lanes <= n {
            let v = V::sub(V::loadu(wp.add(i)), V::mul(lrv, V::loadu(gp.add(i))));
            V::storeu(wp.add(i), v);
            i += lanes;
        }
        if i < n {
            let m = V::first(n - i);
            let v = V::sub(V::load(wp.add(i), m), V::mul(lrv, V::load(gp.add(i), m)));
            V::store(wp.add(i), m, v);
        }
    }
}

/// Split-SGD on (hi, lo) halves, the same arithmetic as [`sgd`] on the joined weight.
///
/// # Safety
///
/// The CPU has what `V` needs; `lo` and `g` are at least as long as `hi`.
#[inline(always)]
pub(crate) unsafe fn split_sgd<V: Vector>(hi: &mut [bf16], lo: &mut [u16], g: &[f32], lr: f32) {
    let (n, lanes) = (hi.len(), V::LANES);
    let (h, l, gp) = (hi.as_mut_ptr().cast::<u16>(), lo.as_mut_ptr(), g.as_ptr());
    let mut i = 0;
    // SAFETY: every vector is masked to lanes below n (the halves are read and written only
    // there).
    unsafe {
        let lrv = V::splat(lr);
        while i < n {
            let m = V::first(n - i);
            let w = V::load_split(h.add(i), l.add(i), m);
            let w = V::sub(w, V::mul(lrv, V::load(gp.add(i), m)));
            V::store_split(h.add(i), l.add(i), m, w);
            i += lanes;
        }
    }
}

/// A backend's conversion entries: `shims!("its,features", Register)` expands, in the
/// invoking module, to thin `#[target_feature]` shims `f32_to_bf16`, `bf16_to_f32`,
/// `split_f32`, `join_f32`, `sgd` and `split_sgd` over the bodies above, instantiated with
/// the backend's [`Vector`] type.
macro_rules! shims {
    ($features:literal, $v:ty) => {
        use half::bf16;

        /// The body of the same name in `backend::x86::convert`, on this backend.
        ///
        /// # Safety
        ///
        /// The CPU has this backend's features; `dst` is at least as long as `src`.
        #[target_feature(enable = $features)]
        pub(crate) unsafe fn f32_to_bf16(src: &[f32], dst: &mut [bf16]) {
            // SAFETY: forwarded from the caller.
            unsafe { $crate::backend::x86::convert::f32_to_bf16::<$v>(src, dst) }
        }

        /// The body of the same name in `backend::x86::convert`, on this backend.
        ///
        /// # Safety
        ///
        /// As `f32_to_bf16`.
        #[target_feature(enable = $features)]
        pub(crate) unsafe fn bf16_to_f32(src: &[bf16], dst: &mut [f32]) {
            // SAFETY: forwarded from the caller.
            unsafe { $crate::backend::x86::convert::bf16_to_f32::<$v>(src, dst) }
        }

        /// The body of the same name in `backend::x86::convert`, on this backend.
        ///
        /// # Safety
        ///
        /// The CPU has this backend's features; `hi` and `lo` are at least as long as `src`.
        #[target_feature(enable = $features)]
        pub(crate) unsafe fn split_f32(src: &[f32], hi: &mut [bf16], lo: &mut [u16]) {
            // SAFETY: forwarded from the caller.
            unsafe { $crate::backend::x86::convert::split_f32::<$v>(src, hi, lo) }
        }

        /// The body of the same name in `backend::x86::convert`, on this backend.
        ///
        /// # Safety
        ///
        /// The CPU has this backend's features; `hi` and `lo` are at least as long as `dst`.
        #[target_feature(enable = $features)]
        pub(crate) unsafe fn join_f32(hi: &[bf16], lo: &[u16], dst: &mut [f32]) {
            // SAFETY: forwarded from the caller.
            unsafe { $crate::backend::x86::convert::join_f32::<$v>(hi, lo, dst) }
        }

        /// The body of the same name in `backend::x86::convert`, on this backend.
        ///
        /// # Safety
        ///
        /// The CPU has this backend's features; `g` is at least as long as `w`.
        #[target_feature(enable = $features)]
        pub(crate) unsafe fn sgd(w: &mut [f32], g: &[f32], lr: f32) {
            // SAFETY: forwarded from the caller.
            unsafe { $crate::backend::x86::convert::sgd::<$v>(w, g, lr) }
        }

        /// The body of the same name in `backend::x86::convert`, on this backend.
        ///
        /// # Safety
        ///
        /// The CPU has this backend's features; `lo` and `g` are at least as long as `hi`.
        #[target_feature(enable = $features)]
        pub(crate) unsafe fn split_sgd(hi: &mut [bf16], lo: &mut [u16], g: &[f32], lr: f32) {
            // SAFETY: forwarded from the caller.
            unsafe { $crate::backend::x86::convert::split_sgd::<$v>(hi, lo, g, lr) }
        }
    };
}
pub(crate) use shims;
