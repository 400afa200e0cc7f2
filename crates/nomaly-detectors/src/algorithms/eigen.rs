//! Eigen-decomposition of a small symmetric matrix by cyclic Jacobi rotations: plain loops in a
//! fixed order, so the same matrix gives the same bits on every CPU, and accurate to a few ulps
//! of the largest eigenvalue (what `numpy.linalg.eigh` gives, up to rounding).

/// Eigenvalues (descending) and unit eigenvectors (`vectors[k]` belongs to `values[k]`) of the
/// symmetric `n`×`n` matrix `a` (row-major; only symmetric input is meaningful).
pub fn symmetric_eigen(a: &[f64], n: usize) -> (Vec<f64>, Vec<Vec<f64>>) {
    assert_eq!(a.len(), n * n, "an n×n matrix");
    let mut m = a.to_vec();
    // v's columns are the eigenvectors, built up as the product of the rotations.
    let mut v = vec![0.0; n * n];
    for i in 0..n {
        v[i * n + i] = 1.0;
    }
    for _sweep in 0..100 {
        let off: f64 = (0..n)
            .flat_map(|i| (0..n).filter(move |&j| j != i).map(move |j| (i, j)))
            .map(|(i, j)| m[i * n + j] * m[i * n + j])
            .sum();
        let scale: f64 = (0..n).map(|i| m[i * n + i] * m[i * n + i]).sum::<f64>() + off;
        if off == 0.0 || off <= scale * 1e-32 {
            break;
        }
        for p in 0..n {
            for q in p + 1..n {
                let apq = m[p * n + q];
                if apq == 0.0 {
                    continue;
                }
                let (app, aqq) = (m[p * n + p], m[q * n + q]);
                // The rotation that zeroes m[p][q] (Golub & Van Loan, 8.5.2): t = tan θ, the
                // smaller root, for stability.
                let theta = (aqq - app) / (2.0 * apq);
                let t = theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt());
                let c = 1.0 / (t * t + 1.0).sqrt();
                let s = t * c;
                for k in 0..n {
                    let (mkp, mkq) = (m[k * n + p], m[k * n + q]);
                    m[k * n + p] = c * mkp - s * mkq;
                    m[k * n + q] = s * mkp + c * mkq;
                }
                for k in 0..n {
                    let (mpk, mqk) = (m[p * n + k], m[q * n + k]);
                    m[p * n + k] = c * mpk - s * mqk;
                    m[q * n + k] = s * mpk + c * mqk;
                }
                for k in 0..n {
                    let (vkp, vkq) = (v[k * n + p], v[k * n + q]);
                    v[k * n + p] = c * vkp - s * vkq;
                    v[k * n + q] = s * vkp + c * vkq;
                }
            }
        }
    }
    let mut order: Vec<usize> = (0..n).collect();
    // Descending; equal eigenvalues keep their index order (a stable sort).
    order.sort_by(|&i, &j| m[j * n + j].total_cmp(&m[i * n + i]));
    let values = order.iter().map(|&i| m[i * n + i]).collect();
    let vectors = order
        .iter()
        .map(|&i| (0..n).map(|k| v[k * n + i]).collect())
        .collect();
    (values, vectors)
}

/// scipy's `pinvh` of the symmetric `n`×`n` matrix `a`: the pseudo-inverse from its eigenvalues,
/// those at or below n·ε·|λ|max counted as zero; with ln det a (-∞ when an eigenvalue is ≤ 0).
pub fn pinvh(a: &[f64], n: usize) -> (Vec<f64>, f64) {
    let (values, vectors) = symmetric_eigen(a, n);
    let largest = values.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    let cutoff = n as f64 * f64::EPSILON * largest;
    let mut inverse = vec![0.0; n * n];
    let mut log_det = 0.0;
    for (value, v) in values.iter().zip(&vectors) {
        log_det = if *value <= 0.0 {
            f64::NEG_INFINITY
        } else {
            log_det + value.ln()
        };
        if value.abs() <= cutoff {
            continue;
        }
        for i in 0..n {
            for j in 0..n {
                inverse[i * n + j] += v[i] * v[j] / value;
            }
        }
    }
    (inverse, log_det)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decomposes_a_known_matrix() {
        // [[2, 1], [1, 2]]: eigenvalues 3 and 1, vectors (1, 1)/√2 and (1, -1)/√2.
        let (values, vectors) = symmetric_eigen(&[2.0, 1.0, 1.0, 2.0], 2);
        assert!((values[0] - 3.0).abs() < 1e-15 && (values[1] - 1.0).abs() < 1e-15);
        let h = std::f64::consts::FRAC_1_SQRT_2;
        assert!((vectors[0][0].abs() - h).abs() < 1e-15);
        assert!((vectors[0][0] - vectors[0][1]).abs() < 1e-15);
        assert!((vectors[1][0] + vectors[1][1]).abs() < 1e-15);
    }

    #[test]
    fn reconstructs_a_random_symmetric_matrix() {
        let n = 9;
        let mut rng = crate::hashing::DeterministicRng::new(5);
        let mut a = vec![0.0; n * n];
        for i in 0..n {
            for j in i..n {
                let x = rng.next_f64() * 2.0 - 1.0;
                a[i * n + j] = x;
                a[j * n + i] = x;
            }
        }
        let (values, vectors) = symmetric_eigen(&a, n);
        assert!(values.windows(2).all(|w| w[0] >= w[1]));
        for i in 0..n {
            for j in 0..n {
                let back: f64 = (0..n)
                    .map(|k| values[k] * vectors[k][i] * vectors[k][j])
                    .sum();
                assert!((back - a[i * n + j]).abs() < 1e-13, "({i}, {j}): {back}");
                let dot: f64 = (0..n).map(|k| vectors[i][k] * vectors[j][k]).sum();
                assert!((dot - f64::from(i == j)).abs() < 1e-13);
            }
        }
    }
}
