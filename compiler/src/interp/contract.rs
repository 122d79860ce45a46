//! Ops that combine elements: reductions, matmul and the linear recurrence `scan`.

use archc_runtime::{Data, Tensor};

use super::elementwise::broadcast_indices;
use super::layout::strides;
use crate::graph::ReduceOp;

/// Sum or max over `axes`. Float sums accumulate in f64.
pub fn reduce(op: ReduceOp, t: &Tensor, axes: &[usize], keepdim: bool) -> Result<Tensor, String> {
    let kept: Vec<usize> = t
        .shape
        .iter()
        .enumerate()
        .map(|(i, &d)| if axes.contains(&i) { 1 } else { d })
        .collect();
    let n_out: usize = kept.iter().product();
    let ks = strides(&kept);
    let ts = strides(&t.shape);
    // The output slot of each input element.
    let slot = |lin: usize| -> usize {
        t.shape
            .iter()
            .enumerate()
            .map(|(a, _)| {
                if axes.contains(&a) {
                    0
                } else {
                    (lin / ts[a]) % t.shape[a] * ks[a]
                }
            })
            .sum()
    };
    let data = match &t.data {
        Data::F32(v) => {
            let mut acc = vec![
                if op == ReduceOp::Sum {
                    0.0f64
                } else {
                    f64::NEG_INFINITY
                };
                n_out
            ];
            for (i, &x) in v.iter().enumerate() {
                let s = slot(i);
                acc[s] = match op {
                    ReduceOp::Sum => acc[s] + f64::from(x),
                    ReduceOp::Max => acc[s].max(f64::from(x)),
                };
            }
            Data::F32(acc.into_iter().map(|a| a as f32).collect())
        }
        Data::I64(v) => {
            let mut acc = vec![if op == ReduceOp::Sum { 0i64 } else { i64::MIN }; n_out];
            for (i, &x) in v.iter().enumerate() {
                let s = slot(i);
                acc[s] = match op {
                    ReduceOp::Sum => acc[s].wrapping_add(x),
                    ReduceOp::Max => acc[s].max(x),
                };
            }
            Data::I64(acc)
        }
        Data::Bool(_) => return Err("reductions of bool tensors: cast to a number first".into()),
    };
    let shape = if keepdim {
        kept
    } else {
        t.shape
            .iter()
            .enumerate()
            .filter(|(i, _)| !axes.contains(i))
            .map(|(_, &d)| d)
            .collect()
    };
    Ok(Tensor {
        dtype: t.dtype,
        shape,
        data,
    })
}

/// `[…, m, k] × […, k, n]` with broadcast batch dims into `shape`; f64 accumulation.
pub fn matmul(a: &Tensor, b: &Tensor, shape: &[usize]) -> Result<Tensor, String> {
    let (Data::F32(x), Data::F32(y)) = (&a.data, &b.data) else {
        return Err("matmul needs float operands".into());
    };
    let (ra, rb, r) = (a.shape.len(), b.shape.len(), shape.len());
    let (m, k, n) = (a.shape[ra - 2], a.shape[ra - 1], b.shape[rb - 1]);
    let batch = &shape[..r - 2];
    let ia = broadcast_indices(batch, &a.shape[..ra - 2]);
    let ib = broadcast_indices(batch, &b.shape[..rb - 2]);
    let mut out = vec![0f32; shape.iter().product()];
    for (bi, (&pa, &pb)) in ia.iter().zip(&ib).enumerate() {
        let (xa, yb, o) = (pa * m * k, pb * k * n, bi * m * n);
        for i in 0..m {
            for j in 0..n {
                let mut acc = 0f64;
                for p in 0..k {
                    acc += f64::from(x[xa + i * k + p]) * f64::from(y[yb + p * n + j]);
                }
                out[o + i * n + j] = acc as f32;
            }
        }
    }
    Ok(Tensor {
        dtype: a.dtype,
        shape: shape.to_vec(),
        data: Data::F32(out),
    })
}

/// `h[t] = a[t]·h[t−1] + b[t]` along `axis` with `h[−1] = 0`; `a` broadcasts to `b`.
pub fn scan(a: &Tensor, b: &Tensor, axis: usize) -> Result<Tensor, String> {
    let (Data::F32(av), Data::F32(bv)) = (&a.data, &b.data) else {
        return Err("scan needs float operands".into());
    };
    let ia = broadcast_indices(&b.shape, &a.shape);
    let st = strides(&b.shape);
    let len = b.shape[axis];
    let step = st[axis];
    let mut h = vec![0f32; bv.len()];
    for (lin, &bval) in bv.iter().enumerate() {
        let t = (lin / step) % len;
        let prev = if t == 0 { 0.0 } else { h[lin - step] };
        h[lin] = av[ia[lin]] * prev + bval;
    }
    Ok(Tensor {
        dtype: b.dtype,
        shape: b.shape.clone(),
        data: Data::F32(h),
    })
}
