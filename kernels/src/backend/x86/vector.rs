//! One f32 SIMD register width, as the shared bodies need it.
//!
//! A backend implements [`Vector`] for its registers (zmm with 16-lane `k` masks for AVX-512;
//! ymm with 8-lane sign masks for AVX2) and instantiates the generic bodies with it inside
//! its own `#[target_feature]` shims: the BRGEMM tile body ([`super::tile`]), the embedding
//! bags ([`super::embedding`]), the conversions and Split-SGD ([`super::convert`]) and the
//! pairwise dots ([`super::pair_dots`]). Every method is `#[inline(always)]` and only sound to
//! call where the backend's features are enabled, which is why they are `unsafe`.
//!
//! Masks passed to the methods are always prefixes: the first `n` lanes ([`Vector::first`]).

use half::bf16;

/// An f32 vector register type with lane masks.
pub(crate) trait Vector: Copy + 'static {
    /// f32 lanes per register.
    const LANES: usize;
    /// Vector registers the ISA has (16 ymm for AVX2, 32 zmm for AVX-512): the tile body
    /// gives a tile no more accumulators than fit them with its B vectors.
    const REGISTERS: usize;
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
    /// `x` in every lane.
    unsafe fn splat(x: f32) -> Self::F;
    /// `a + b`.
    unsafe fn add(a: Self::F, b: Self::F) -> Self::F;
    /// `a - b`.
    unsafe fn sub(a: Self::F, b: Self::F) -> Self::F;
    /// `a * b` (rounded: never fused with an add).
    unsafe fn mul(a: Self::F, b: Self::F) -> Self::F;
    /// `a / b`.
    unsafe fn div(a: Self::F, b: Self::F) -> Self::F;
    /// `LANES` values from memory.
    unsafe fn loadu(ptr: *const f32) -> Self::F;
    /// `LANES` values to memory.
    unsafe fn storeu(ptr: *mut f32, v: Self::F);
    /// Lanes on `m` from memory, zero elsewhere (lanes off `m` are not read).
    unsafe fn load(ptr: *const f32, m: Self::Mask) -> Self::F;
    /// Lanes on `m` to memory (lanes off `m` are not written).
    unsafe fn store(ptr: *mut f32, m: Self::Mask, v: Self::F);
    /// `LANES` bf16 widened to f32.
    unsafe fn loadu_bf16(ptr: *const bf16) -> Self::F;
    /// `LANES` lanes rounded to bf16 (nearest even, NaN kept quiet) and stored.
    unsafe fn storeu_bf16(ptr: *mut bf16, v: Self::F);
    /// `2 * LANES` bf16 widened to f32, as two registers holding them in an order of the
    /// backend's choosing: lane-wise sums of such pairs come back to element order through
    /// [`Vector::unsplit_bf16x2`]. (By default two whole loads, in order.)
    #[inline(always)]
    unsafe fn load_bf16x2(ptr: *const bf16) -> [Self::F; 2] {
        // SAFETY: `2 * LANES` values at `ptr` are in bounds (caller).
        unsafe {
            [
                Self::loadu_bf16(ptr),
                Self::loadu_bf16(ptr.add(Self::LANES)),
            ]
        }
    }
    /// Two registers in the order of [`Vector::load_bf16x2`], back in element order.
    #[inline(always)]
    unsafe fn unsplit_bf16x2(v: [Self::F; 2]) -> [Self::F; 2] {
        v
    }
    /// bf16 lanes on `m` widened to f32, zero elsewhere.
    unsafe fn load_bf16(ptr: *const bf16, m: Self::Mask) -> Self::F;
    /// Lanes on `m` rounded to bf16 (nearest even, NaN kept quiet) and stored.
    unsafe fn store_bf16(ptr: *mut bf16, m: Self::Mask, v: Self::F);
    /// The f32 of `LANES` Split-SGD halves, `(hi << 16) | lo` exactly.
    unsafe fn loadu_split(hi: *const u16, lo: *const u16) -> Self::F;
    /// `LANES` lanes split into their upper (`hi`) and lower (`lo`) 16 bits and stored.
    unsafe fn storeu_split(hi: *mut u16, lo: *mut u16, v: Self::F);
    /// The f32 of Split-SGD halves on `m`, `(hi << 16) | lo` exactly, zero elsewhere.
    unsafe fn load_split(hi: *const u16, lo: *const u16, m: Self::Mask) -> Self::F;
    /// Lanes on `m` split into their upper (`hi`) and lower (`lo`) 16 bits and stored.
    unsafe fn store_split(hi: *mut u16, lo: *mut u16, m: Self::Mask, v: Self::F);
    /// `v <= 0 ? 0 : v` (NaN kept).
    unsafe fn relu(v: Self::F) -> Self::F;
    /// `y > 0 ? v : 0` (NaN and zero in `y` count as not positive).
    unsafe fn where_positive(y: Self::F, v: Self::F) -> Self::F;
    /// `v` on `m`, zero elsewhere.
    unsafe fn keep(m: Self::Mask, v: Self::F) -> Self::F;
    /// The sum of 16 lanes in the portable order ([`crate::backend::portable::reduce_halves`]):
    /// halves added pairwise (8, 4, 2, 1). The 16 lanes are `parts[0]` for 16-lane
    /// registers, `parts[0]` then `parts[1]` for 8-lane ones (see [`Vector::PARTS16`]).
    unsafe fn reduce16(parts: [Self::F; 2]) -> f32;
    /// Run `f` in a separate, non-inlined function compiled with the backend's features:
    /// for code that must not share a stack frame (and its register allocation) with a hot
    /// loop.
    unsafe fn out_of_line<R>(f: impl FnOnce() -> R) -> R;

    /// Registers that hold 16 lanes (1 or 2): sums defined in 16 lanes (the portable
    /// order) keep this many accumulators, register `q` holding lanes `LANES * q ..`.
    const PARTS16: usize = 16 / Self::LANES;
}

/// An element type of C or of an embedding table: how the bodies load and store it.
pub(crate) trait OutElem: crate::Element {
    /// Lanes on `m`, as f32.
    unsafe fn load<V: Vector>(ptr: *const Self, m: V::Mask) -> V::F;
    /// Lanes on `m`, rounded to this type.
    unsafe fn store<V: Vector>(ptr: *mut Self, m: V::Mask, v: V::F);
    /// `2 * LANES` values as f32, in two registers in the order of [`Vector::load_bf16x2`]
    /// for bf16 (in order for f32).
    unsafe fn load_x2<V: Vector>(ptr: *const Self) -> [V::F; 2];
    /// Lane-wise sums of `load_x2` values back in element order.
    unsafe fn unsplit_x2<V: Vector>(v: [V::F; 2]) -> [V::F; 2];
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
    #[inline(always)]
    unsafe fn load_x2<V: Vector>(ptr: *const f32) -> [V::F; 2] {
        // SAFETY: `2 * LANES` values at `ptr` are in bounds (caller).
        unsafe { [V::loadu(ptr), V::loadu(ptr.add(V::LANES))] }
    }
    #[inline(always)]
    unsafe fn unsplit_x2<V: Vector>(v: [V::F; 2]) -> [V::F; 2] {
        v
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
    #[inline(always)]
    unsafe fn load_x2<V: Vector>(ptr: *const bf16) -> [V::F; 2] {
        // SAFETY: forwarded from the caller.
        unsafe { V::load_bf16x2(ptr) }
    }
    #[inline(always)]
    unsafe fn unsplit_x2<V: Vector>(v: [V::F; 2]) -> [V::F; 2] {
        // SAFETY: register-only operations (the caller's CPU has the features).
        unsafe { V::unsplit_bf16x2(v) }
    }
}
