//! Deterministic hashing and random numbers. Nothing here may depend on the platform, the process or
//! the order rows arrive in: these values decide which rows train an isolation tree and which rows
//! estimate a threshold, and every engine must decide the same way.

/// The SplitMix64 finaliser: a bijective, well-mixed 64-bit hash step.
#[inline]
pub fn mix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The top 53 bits of `bits` as a uniform value in [0, 1). The one place random bits become a
/// fraction (the detectors' RNG, retry jitter, fault injection draws).
#[inline]
pub fn unit_f64(bits: u64) -> f64 {
    (bits >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
}

/// Canonical bits of a finite value: +0.0 and -0.0 hash alike so equal rows hash alike.
#[inline]
pub fn canonical_bits(v: f64) -> u64 {
    if v == 0.0 { 0 } else { v.to_bits() }
}

/// Hash of one row of feature values under a seed.
#[inline]
pub fn row_hash(seed: u64, row: &[f64]) -> u64 {
    row.iter()
        .fold(row_hash_start(seed), |h, &v| row_hash_step(h, v))
}

/// The state [`row_hash`] starts from, for hashing a batch column by column.
#[inline]
pub fn row_hash_start(seed: u64) -> u64 {
    mix64(seed ^ 0x6E6F_6D61_6C79_0001)
}

/// Folds the next feature value of a row into its hash.
#[inline]
pub fn row_hash_step(h: u64, v: f64) -> u64 {
    mix64(h ^ canonical_bits(v))
}

/// Folds one feature column into the running hashes of its rows: `hashes[i] = row_hash_step(hashes[i],
/// col[i])`. Integer arithmetic only, so the vector path gives the same bits as the scalar one; on
/// x86-64 with AVX-512 (which has a 64-bit vector multiply) it runs eight rows per instruction.
pub fn hash_column(hashes: &mut [u64], col: &[f64]) {
    #[cfg(target_arch = "x86_64")]
    {
        if crate::cpu::avx512() {
            // SAFETY: the CPU has the features the function is compiled for (checked above).
            unsafe { hash_column_avx512(hashes, col) };
            return;
        }
    }
    hash_column_scalar(hashes, col);
}

#[inline(always)]
fn hash_column_scalar(hashes: &mut [u64], col: &[f64]) {
    for (h, &x) in hashes.iter_mut().zip(col) {
        *h = row_hash_step(*h, x);
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512dq")]
unsafe fn hash_column_avx512(hashes: &mut [u64], col: &[f64]) {
    // The same loop, compiled with 64-bit vector multiplies available.
    hash_column_scalar(hashes, col);
}

/// xoshiro256** seeded through SplitMix64: small, fast, and identical on every platform.
#[derive(Debug, Clone)]
pub struct DeterministicRng {
    s: [u64; 4],
}

impl DeterministicRng {
    pub fn new(seed: u64) -> Self {
        let mut x = seed;
        let mut next = || {
            x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
            mix64(x)
        };
        Self {
            s: [next(), next(), next(), next()],
        }
    }

    #[inline]
    pub fn next_u64(&mut self) -> u64 {
        let result = self.s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = self.s[1] << 17;
        self.s[2] ^= self.s[0];
        self.s[3] ^= self.s[1];
        self.s[1] ^= self.s[2];
        self.s[0] ^= self.s[3];
        self.s[2] ^= t;
        self.s[3] = self.s[3].rotate_left(45);
        result
    }

    /// Uniform in [0, 1) with 53 random bits.
    #[inline]
    pub fn next_f64(&mut self) -> f64 {
        unit_f64(self.next_u64())
    }

    /// Uniform integer in [0, n); n > 0. Lemire's multiply-shift without the rejection step: the
    /// bias is below 2^-40 for the n we use (feature counts, sample sizes).
    #[inline]
    pub fn next_below(&mut self, n: usize) -> usize {
        ((self.next_u64() as u128 * n as u128) >> 64) as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rng_is_reproducible_and_uniform_enough() {
        let mut a = DeterministicRng::new(42);
        let mut b = DeterministicRng::new(42);
        let xs: Vec<u64> = (0..100).map(|_| a.next_u64()).collect();
        let ys: Vec<u64> = (0..100).map(|_| b.next_u64()).collect();
        assert_eq!(xs, ys);
        let mut r = DeterministicRng::new(7);
        let mean = (0..100_000).map(|_| r.next_f64()).sum::<f64>() / 100_000.0;
        assert!((mean - 0.5).abs() < 0.01, "mean {mean}");
        let mut counts = [0usize; 5];
        for _ in 0..50_000 {
            counts[r.next_below(5)] += 1;
        }
        assert!(
            counts.iter().all(|&c| (9_000..11_000).contains(&c)),
            "{counts:?}"
        );
    }

    #[test]
    fn signed_zero_hashes_alike() {
        assert_eq!(row_hash(1, &[0.0, 1.0]), row_hash(1, &[-0.0, 1.0]));
        assert_ne!(row_hash(1, &[0.0, 1.0]), row_hash(2, &[0.0, 1.0]));
    }
}
