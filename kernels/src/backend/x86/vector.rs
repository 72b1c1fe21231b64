//! One f32 SIMD register width, as the shared tile body needs it.
//!
//! A backend implements [`Vector`] for its registers (zmm with 16-lane `k` masks for AVX-512;
//! a 256-bit backend implements it with 8 lanes) and instantiates the generic bodies with it
//! inside its own `#[target_feature]` shims. Every method is `#[inline(always)]` and only
//! sound to call where the backend's features are enabled, which is why they are `unsafe`.

use half::bf16;

/// An f32 vector register type with lane masks.
pub(crate) trait Vector: Copy + 'static {
    /// f32 lanes per register.
    const LANES: usize;
    /// The register.
    type F: Copy;
    /// A set of lanes.
    type Mask: Copy;

    /// The first `min(n, LANES)` lanes.
    fn first(n: usize) -> Self::Mask;
    /// Every lane.
    fn all() -> Self::Mask;
    /// Zero in every lane.
    unsafe fn zero() -> Self::F;
    /// `a + b`.
    unsafe fn add(a: Self::F, b: Self::F) -> Self::F;
    /// Lanes on `m` from memory, zero elsewhere (lanes off `m` are not read).
    unsafe fn load(ptr: *const f32, m: Self::Mask) -> Self::F;
    /// Lanes on `m` to memory (lanes off `m` are not written).
    unsafe fn store(ptr: *mut f32, m: Self::Mask, v: Self::F);
    /// bf16 lanes on `m` widened to f32, zero elsewhere.
    unsafe fn load_bf16(ptr: *const bf16, m: Self::Mask) -> Self::F;
    /// Lanes on `m` rounded to bf16 (nearest even, NaN kept quiet) and stored.
    unsafe fn store_bf16(ptr: *mut bf16, m: Self::Mask, v: Self::F);
    /// `v <= 0 ? 0 : v` (NaN kept).
    unsafe fn relu(v: Self::F) -> Self::F;
    /// `y > 0 ? v : 0` (NaN and zero in `y` count as not positive).
    unsafe fn where_positive(y: Self::F, v: Self::F) -> Self::F;
    /// `v` on `m`, zero elsewhere.
    unsafe fn keep(m: Self::Mask, v: Self::F) -> Self::F;
    /// Run `f` in a separate, non-inlined function compiled with the backend's features:
    /// for code that must not share a stack frame (and its register allocation) with a hot
    /// loop.
    unsafe fn out_of_line<R>(f: impl FnOnce() -> R) -> R;
}

/// An element type of C: how the tile body loads and stores it.
pub(crate) trait OutElem: crate::Element {
    /// Lanes on `m`, as f32.
    unsafe fn load<V: Vector>(ptr: *const Self, m: V::Mask) -> V::F;
    /// Lanes on `m`, rounded to this type.
    unsafe fn store<V: Vector>(ptr: *mut Self, m: V::Mask, v: V::F);
}

impl OutElem for f32 {
    #[inline(always)]
    unsafe fn load<V: Vector>(ptr: *const f32, m: V::Mask) -> V::F {
        // SAFETY: forwarded from the caller.
        unsafe { V::load(ptr, m) }
    }
    #[inline(always)]
    unsafe fn store<V: Vector>(ptr: *mut f32, m: V::Mask, v: V::F) {
        // SAFETY: forwarded from the caller.
        unsafe { V::store(ptr, m, v) }
    }
}

impl OutElem for bf16 {
    #[inline(always)]
    unsafe fn load<V: Vector>(ptr: *const bf16, m: V::Mask) -> V::F {
        // SAFETY: forwarded from the caller.
        unsafe { V::load_bf16(ptr, m) }
    }
    #[inline(always)]
    unsafe fn store<V: Vector>(ptr: *mut bf16, m: V::Mask, v: V::F) {
        // SAFETY: forwarded from the caller.
        unsafe { V::store_bf16(ptr, m, v) }
    }
}
