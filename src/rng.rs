//! A small, seeded, portable random generator (xoshiro256++ seeded by SplitMix64).
//!
//! Used for initialisation and synthetic data so that a seed gives the same model and the
//! same data on every machine and every version of this crate's dependencies.

/// xoshiro256++ generator.
///
/// ```
/// use dlrm_kernels::rng::Rng;
/// let mut a = Rng::new(42);
/// let mut b = Rng::new(42);
/// assert_eq!(a.next_u64(), b.next_u64());
/// let x = a.uniform();
/// assert!((0.0..1.0).contains(&x));
/// ```
#[derive(Debug, Clone)]
pub struct Rng {
    s: [u64; 4],
}

impl Rng {
    /// A generator seeded from `seed` (any value, zero included).
    ///
    /// ```
    /// let _ = dlrm_kernels::rng::Rng::new(0).next_u64();
    /// ```
    pub fn new(seed: u64) -> Self {
        let mut x = seed;
        let mut next = || {
            x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = x;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        };
        Rng {
            s: [next(), next(), next(), next()],
        }
    }

    /// An independent generator for stream `stream` of this seed (e.g. one per table).
    ///
    /// ```
    /// use dlrm_kernels::rng::Rng;
    /// assert_ne!(Rng::new(1).fork(0).next_u64(), Rng::new(1).fork(1).next_u64());
    /// ```
    pub fn fork(&self, stream: u64) -> Rng {
        Rng::new(self.s[0] ^ stream.wrapping_mul(0xd605_bbb5_8c8a_bd1d).rotate_left(17))
    }

    /// The next 64 random bits.
    ///
    /// ```
    /// let mut r = dlrm_kernels::rng::Rng::new(7);
    /// assert_ne!(r.next_u64(), r.next_u64());
    /// ```
    pub fn next_u64(&mut self) -> u64 {
        let s = &mut self.s;
        let result = s[0].wrapping_add(s[3]).rotate_left(23).wrapping_add(s[0]);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        result
    }

    /// Uniform in `[0, 1)`, 24 random bits.
    ///
    /// ```
    /// let x = dlrm_kernels::rng::Rng::new(3).uniform();
    /// assert!(x >= 0.0 && x < 1.0);
    /// ```
    pub fn uniform(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 * (1.0 / (1u64 << 24) as f32)
    }

    /// Two independent uniforms in `[0, 1)`, 24 random bits each, from one draw (the upper
    /// and the next 24 bits): half the cost of two [`Rng::uniform`] calls.
    ///
    /// ```
    /// let [a, b] = dlrm_kernels::rng::Rng::new(3).uniform_pair();
    /// assert!((0.0..1.0).contains(&a) && (0.0..1.0).contains(&b) && a != b);
    /// ```
    pub fn uniform_pair(&mut self) -> [f32; 2] {
        let x = self.next_u64();
        let scale = 1.0 / (1u64 << 24) as f32;
        [
            (x >> 40) as f32 * scale,
            ((x >> 16) & 0xff_ffff) as f32 * scale,
        ]
    }

    /// Uniform in `[0, 1)` as f64, 53 random bits.
    ///
    /// ```
    /// assert!(dlrm_kernels::rng::Rng::new(3).uniform_f64() < 1.0);
    /// ```
    pub fn uniform_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in `[lo, hi)`.
    ///
    /// ```
    /// let x = dlrm_kernels::rng::Rng::new(3).uniform_in(-2.0, -1.0);
    /// assert!((-2.0..-1.0).contains(&x));
    /// ```
    pub fn uniform_in(&mut self, lo: f32, hi: f32) -> f32 {
        let x = lo + (hi - lo) * self.uniform();
        // Rounding can land exactly on `hi`; keep the interval half-open.
        if x >= hi { lo } else { x }
    }

    /// Normal with the given mean and standard deviation (Box-Muller).
    ///
    /// ```
    /// let mut r = dlrm_kernels::rng::Rng::new(5);
    /// let mean: f32 = (0..10_000).map(|_| r.normal(1.0, 0.1)).sum::<f32>() / 10_000.0;
    /// assert!((mean - 1.0).abs() < 0.01);
    /// ```
    pub fn normal(&mut self, mean: f32, std: f32) -> f32 {
        let u1 = 1.0 - self.uniform_f64(); // (0, 1]
        let u2 = self.uniform_f64();
        let z = (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos();
        mean + std * z as f32
    }

    /// Uniform integer in `[0, n)` (`n > 0`), without modulo bias.
    ///
    /// # Panics
    ///
    /// If `n == 0`.
    ///
    /// ```
    /// let mut r = dlrm_kernels::rng::Rng::new(9);
    /// assert!(r.below(10) < 10);
    /// ```
    pub fn below(&mut self, n: u64) -> u64 {
        assert!(n > 0, "Rng::below(0)");
        // Lemire's multiply-shift with rejection.
        loop {
            let x = self.next_u64();
            let m = (x as u128) * (n as u128);
            let low = m as u64;
            if low >= n.wrapping_neg() % n {
                return (m >> 64) as u64;
            }
        }
    }
}
