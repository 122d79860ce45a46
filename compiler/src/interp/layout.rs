//! Ops that move elements: permute, slice, flip, concat, pad and gather.

use archc_runtime::{Data, Tensor};

/// Row-major strides of a shape.
pub fn strides(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * shape[i + 1];
    }
    s
}

/// Builds a tensor of `shape` whose element at each multi-index comes from `source(index)`
/// (a linear index into `t`, or None for a fill value).
fn remap(
    t: &Tensor,
    shape: &[usize],
    fill: f64,
    mut source: impl FnMut(&[usize]) -> Option<usize>,
) -> Tensor {
    let n: usize = shape.iter().product();
    let mut idx = vec![0usize; shape.len()];
    let mut picks = Vec::with_capacity(n);
    for _ in 0..n {
        picks.push(source(&idx));
        for ax in (0..shape.len()).rev() {
            idx[ax] += 1;
            if idx[ax] < shape[ax] {
                break;
            }
            idx[ax] = 0;
        }
    }
    let data = match &t.data {
        Data::F32(v) => Data::F32(
            picks
                .iter()
                .map(|p| p.map_or(fill as f32, |i| v[i]))
                .collect(),
        ),
        Data::I64(v) => Data::I64(
            picks
                .iter()
                .map(|p| p.map_or(fill as i64, |i| v[i]))
                .collect(),
        ),
        Data::Bool(v) => Data::Bool(
            picks
                .iter()
                .map(|p| p.map_or(fill != 0.0, |i| v[i]))
                .collect(),
        ),
    };
    Tensor {
        dtype: t.dtype,
        shape: shape.to_vec(),
        data,
    }
}

/// Output axis i is input axis `perm[i]`.
pub fn permute(t: &Tensor, perm: &[usize]) -> Tensor {
    let st = strides(&t.shape);
    let shape: Vec<usize> = perm.iter().map(|&p| t.shape[p]).collect();
    remap(t, &shape, 0.0, |idx| {
        Some(idx.iter().zip(perm).map(|(&i, &p)| i * st[p]).sum())
    })
}

/// `len` elements from `start` along `axis`.
pub fn slice(t: &Tensor, axis: usize, start: usize, len: usize) -> Tensor {
    let st = strides(&t.shape);
    let mut shape = t.shape.clone();
    shape[axis] = len;
    remap(t, &shape, 0.0, |idx| {
        Some(
            idx.iter()
                .enumerate()
                .map(|(a, &i)| (if a == axis { i + start } else { i }) * st[a])
                .sum(),
        )
    })
}

/// The elements in reverse order along `axis`.
pub fn flip(t: &Tensor, axis: usize) -> Tensor {
    let st = strides(&t.shape);
    let last = t.shape[axis].saturating_sub(1);
    remap(t, &t.shape, 0.0, |idx| {
        Some(
            idx.iter()
                .enumerate()
                .map(|(a, &i)| (if a == axis { last - i } else { i }) * st[a])
                .sum(),
        )
    })
}

/// Concatenation along `axis` into `shape`.
pub fn concat(ts: &[&Tensor], axis: usize, shape: &[usize]) -> Tensor {
    let mut out = remap(ts[0], shape, 0.0, |_| Some(0));
    let outer: usize = shape[..axis].iter().product();
    let inner: usize = shape[axis + 1..].iter().product();
    // Element order: for each outer index, each input's [axis, inner] block in turn.
    let mut order: Vec<(usize, usize)> = Vec::new();
    for o in 0..outer {
        for (k, t) in ts.iter().enumerate() {
            let block = t.shape[axis] * inner;
            for j in 0..block {
                order.push((k, o * block + j));
            }
        }
    }
    out.data = match &ts[0].data {
        Data::F32(_) => Data::F32(
            order
                .iter()
                .map(|&(k, i)| match &ts[k].data {
                    Data::F32(v) => v[i],
                    _ => 0.0,
                })
                .collect(),
        ),
        Data::I64(_) => Data::I64(
            order
                .iter()
                .map(|&(k, i)| match &ts[k].data {
                    Data::I64(v) => v[i],
                    _ => 0,
                })
                .collect(),
        ),
        Data::Bool(_) => Data::Bool(
            order
                .iter()
                .map(|&(k, i)| match &ts[k].data {
                    Data::Bool(v) => v[i],
                    _ => false,
                })
                .collect(),
        ),
    };
    out
}

/// `before` fill values, the input, then fill values up to `shape[axis]`, along `axis`.
pub fn pad(t: &Tensor, axis: usize, before: usize, value: f64, shape: &[usize]) -> Tensor {
    let st = strides(&t.shape);
    let size = t.shape[axis];
    remap(t, shape, value, |idx| {
        let i = idx[axis];
        if i < before || i - before >= size {
            return None;
        }
        Some(
            idx.iter()
                .enumerate()
                .map(|(a, &j)| (if a == axis { j - before } else { j }) * st[a])
                .sum(),
        )
    })
}

/// Batched take along `axis` (see `Op::Gather`). Indices outside the axis are an error.
pub fn gather(x: &Tensor, index: &Tensor, axis: usize, shape: &[usize]) -> Result<Tensor, String> {
    let Data::I64(ids) = &index.data else {
        return Err("gather indices are not integers".into());
    };
    let size = x.shape[axis] as i64;
    if let Some(bad) = ids.iter().find(|&&i| i < 0 || i >= size) {
        return Err(format!(
            "index {bad} is out of range for axis {axis} of size {size}"
        ));
    }
    let xs = strides(&x.shape);
    let is = strides(&index.shape);
    let rank_i = index.shape.len();
    Ok(remap(x, shape, 0.0, |idx| {
        // idx = [lead (axis dims) | index dims after lead | x dims after axis]
        let lead = &idx[..axis];
        let rest_i = &idx[axis..axis + (rank_i - axis)];
        let rest_x = &idx[axis + (rank_i - axis)..];
        let mut ii = 0;
        for (a, &v) in lead.iter().enumerate() {
            if index.shape[a] != 1 {
                ii += v * is[a];
            }
        }
        for (k, &v) in rest_i.iter().enumerate() {
            ii += v * is[axis + k];
        }
        let row = ids[ii] as usize;
        let mut xi = row * xs[axis];
        for (a, &v) in lead.iter().enumerate() {
            if x.shape[a] != 1 {
                xi += v * xs[a];
            }
        }
        for (k, &v) in rest_x.iter().enumerate() {
            xi += v * xs[axis + 1 + k];
        }
        Some(xi)
    }))
}
