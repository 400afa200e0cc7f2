//! Which vector instructions the detectors may use.
//!
//! Every vector path gives the same bits as the scalar one, so these choices change speed only.
//! `NOMALY_NO_AVX512=1` in the environment turns the AVX-512 paths off on a CPU that has them, to
//! measure what a CPU without them would do (benchmarks/run.py `--no-avx512`).

use std::sync::OnceLock;

/// AVX-512 F, DQ and BW are present and not turned off by `NOMALY_NO_AVX512`.
pub fn avx512() -> bool {
    static ALLOWED: OnceLock<bool> = OnceLock::new();
    *ALLOWED.get_or_init(|| {
        let off = std::env::var_os("NOMALY_NO_AVX512").is_some_and(|v| !v.is_empty() && v != "0");
        !off && has_avx512()
    })
}

fn has_avx512() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512dq")
            && std::arch::is_x86_feature_detected!("avx512bw")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// AVX2 is present.
pub fn avx2() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx2")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}
