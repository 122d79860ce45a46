//! The oracle of `svdvals`: singular values through the Gram matrix, diagonalised by cyclic
//! Jacobi rotations in f64 until its off-diagonal part is negligible.

use archc_runtime::{Data, Tensor};

/// Sweeps after which the oracle stops even if not converged (cyclic Jacobi converges
/// quadratically: a few sweeps suffice for any matrix it is given).
const MAX_SWEEPS: usize = 60;

/// The singular values of each `[m, n]` matrix of `x`, largest first: `[..., n]`.
pub fn svdvals(x: &Tensor) -> Result<Tensor, String> {
    let Data::F32(v) = &x.data else {
        return Err("svdvals needs a float operand".into());
    };
    let r = x.shape.len();
    let (m, n) = (x.shape[r - 2], x.shape[r - 1]);
    let mut out = Vec::with_capacity(v.len() / m.max(1) * n);
    let count: usize = x.shape[..r - 2].iter().product();
    for b in 0..count {
        let a = &v[b * m * n..(b + 1) * m * n];
        out.extend(matrix_svdvals(a, m, n).into_iter().map(|s| s as f32));
    }
    let mut shape = x.shape[..r - 2].to_vec();
    shape.push(n);
    Ok(Tensor {
        dtype: x.dtype,
        shape,
        data: Data::F32(out),
    })
}

/// One row-major `[m, n]` matrix's singular values, descending: `n` of them, those past
/// `min(m, n)` zero. The Gram matrix is `AᵀA`, or `AAᵀ` (in the corner) when `m < n`, as the
/// kernels compute it (lower/svd.rs).
fn matrix_svdvals(a: &[f32], m: usize, n: usize) -> Vec<f64> {
    let mut g = vec![0f64; n * n];
    let at = |r: usize, c: usize| f64::from(a[r * n + c]);
    if m < n {
        for i in 0..m {
            for j in 0..m {
                g[i * n + j] = (0..n).map(|c| at(i, c) * at(j, c)).sum();
            }
        }
    } else {
        for r in 0..m {
            for i in 0..n {
                for j in 0..n {
                    g[i * n + j] += at(r, i) * at(r, j);
                }
            }
        }
    }
    for _ in 0..MAX_SWEEPS {
        let off: f64 = (0..n)
            .flat_map(|i| (0..n).filter(move |&j| j != i).map(move |j| (i, j)))
            .map(|(i, j)| g[i * n + j] * g[i * n + j])
            .sum();
        let diag: f64 = (0..n).map(|i| g[i * n + i] * g[i * n + i]).sum();
        if off <= 1e-30 * diag.max(f64::MIN_POSITIVE) {
            break;
        }
        for p in 0..n {
            for q in p + 1..n {
                rotate(&mut g, n, p, q);
            }
        }
    }
    let mut s: Vec<f64> = (0..n).map(|i| g[i * n + i].max(0.0).sqrt()).collect();
    s.sort_by(|x, y| y.total_cmp(x));
    s
}

/// The Jacobi rotation in the (p, q) plane that zeroes `g[p][q]` (Numerical Recipes' choice
/// of angle, the smaller one), applied as `Jᵀ·G·J`.
fn rotate(g: &mut [f64], n: usize, p: usize, q: usize) {
    let apq = g[p * n + q];
    if apq == 0.0 {
        return;
    }
    let theta = (g[q * n + q] - g[p * n + p]) / (2.0 * apq);
    let t = theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt());
    let c = 1.0 / (t * t + 1.0).sqrt();
    let s = t * c;
    for k in 0..n {
        let (kp, kq) = (g[k * n + p], g[k * n + q]);
        g[k * n + p] = c * kp - s * kq;
        g[k * n + q] = s * kp + c * kq;
    }
    for k in 0..n {
        let (pk, qk) = (g[p * n + k], g[q * n + k]);
        g[p * n + k] = c * pk - s * qk;
        g[q * n + k] = s * pk + c * qk;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn singular_values_of_known_matrices() {
        // diag(3, 2) padded with a zero row: singular values 3, 2.
        let s = matrix_svdvals(&[0.0, 2.0, 3.0, 0.0, 0.0, 0.0], 3, 2);
        assert!(
            (s[0] - 3.0).abs() < 1e-12 && (s[1] - 2.0).abs() < 1e-12,
            "{s:?}"
        );
        // A rank-one [2, 3] matrix u·vᵀ: one singular value |u|·|v|, then zeros.
        let s = matrix_svdvals(&[1.0, 2.0, 2.0, 2.0, 4.0, 4.0], 2, 3);
        assert!((s[0] - 5f64.sqrt() * 3.0).abs() < 1e-9, "{s:?}");
        assert!(s[1].abs() < 1e-6 && s[2].abs() < 1e-6, "{s:?}");
    }
}
