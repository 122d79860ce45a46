//! Elementwise ops with numpy broadcasting, conversions and constants.

use archc_runtime::{DType, Data, Tensor};

use crate::graph::{BinaryOp, UnaryOp};

/// For each element of a row-major tensor of shape `out`, the linear index of the element of
/// an operand of shape `shape` (aligned on the right, size-1 dims stretched) that feeds it.
pub fn broadcast_indices(out: &[usize], shape: &[usize]) -> Vec<usize> {
    let n: usize = out.iter().product();
    let offset = out.len() - shape.len();
    // Strides of the operand in the output's axes; 0 where the operand is broadcast.
    let mut strides = vec![0usize; out.len()];
    let mut s = 1;
    for i in (0..shape.len()).rev() {
        if shape[i] != 1 {
            strides[offset + i] = s;
        }
        s *= shape[i];
    }
    let mut idx = Vec::with_capacity(n);
    let mut counter = vec![0usize; out.len()];
    let mut lin = 0usize;
    for _ in 0..n {
        idx.push(lin);
        for ax in (0..out.len()).rev() {
            counter[ax] += 1;
            lin += strides[ax];
            if counter[ax] < out[ax] {
                break;
            }
            lin -= strides[ax] * counter[ax];
            counter[ax] = 0;
        }
    }
    idx
}

/// A constant splatted over `shape`.
pub fn splat(v: f64, dtype: DType, shape: &[usize]) -> Tensor {
    let n = shape.iter().product();
    let data = match dtype {
        d if d.is_float() => Data::F32(vec![v as f32; n]),
        DType::Bool => Data::Bool(vec![v != 0.0; n]),
        _ => Data::I64(vec![v as i64; n]),
    };
    Tensor {
        dtype,
        shape: shape.to_vec(),
        data,
    }
}

/// Converts to another dtype: floats truncate toward zero into integers, booleans are 0/1.
pub fn convert(t: &Tensor, dtype: DType) -> Tensor {
    let data = match (&t.data, dtype) {
        (Data::F32(v), d) if d.is_float() => Data::F32(v.clone()),
        (Data::F32(v), DType::Bool) => Data::Bool(v.iter().map(|&x| x != 0.0).collect()),
        (Data::F32(v), _) => Data::I64(v.iter().map(|&x| x as i64).collect()),
        (Data::I64(v), d) if d.is_float() => Data::F32(v.iter().map(|&x| x as f32).collect()),
        (Data::I64(v), DType::Bool) => Data::Bool(v.iter().map(|&x| x != 0).collect()),
        (Data::I64(v), DType::I32) => Data::I64(v.iter().map(|&x| i64::from(x as i32)).collect()),
        (Data::I64(v), _) => Data::I64(v.clone()),
        (Data::Bool(v), d) if d.is_float() => {
            Data::F32(v.iter().map(|&x| f32::from(u8::from(x))).collect())
        }
        (Data::Bool(v), DType::Bool) => Data::Bool(v.clone()),
        (Data::Bool(v), _) => Data::I64(v.iter().map(|&x| i64::from(x)).collect()),
    };
    Tensor {
        dtype,
        shape: t.shape.clone(),
        data,
    }
}

/// Elementwise unary.
pub fn unary(op: UnaryOp, x: &Tensor) -> Result<Tensor, String> {
    let data = match (&x.data, op) {
        (Data::F32(v), _) => {
            let f: fn(f32) -> f32 = match op {
                UnaryOp::Neg => |a| -a,
                UnaryOp::Exp => f32::exp,
                UnaryOp::Log => f32::ln,
                UnaryOp::Sqrt => f32::sqrt,
                UnaryOp::Rsqrt => |a| 1.0 / a.sqrt(),
                UnaryOp::Tanh => f32::tanh,
                UnaryOp::Erf => |a| archc_kernels::math::erff(a),
                UnaryOp::Sin => f32::sin,
                UnaryOp::Cos => f32::cos,
                UnaryOp::Abs => f32::abs,
                UnaryOp::StopGrad => |a| a,
                UnaryOp::Not => return Err("`not` of a float tensor".into()),
            };
            Data::F32(v.iter().map(|&a| f(a)).collect())
        }
        (Data::I64(v), UnaryOp::Neg) => Data::I64(v.iter().map(|a| a.wrapping_neg()).collect()),
        (Data::I64(v), UnaryOp::Abs) => Data::I64(v.iter().map(|a| a.wrapping_abs()).collect()),
        (Data::I64(v), UnaryOp::StopGrad) => Data::I64(v.clone()),
        (Data::Bool(v), UnaryOp::Not) => Data::Bool(v.iter().map(|a| !a).collect()),
        (Data::Bool(v), UnaryOp::StopGrad) => Data::Bool(v.clone()),
        _ => return Err(format!("`{op}` is not defined on {}", x.dtype)),
    };
    Ok(Tensor { data, ..x.clone() })
}

fn cmp<T: PartialOrd>(op: BinaryOp, a: T, b: T) -> bool {
    match op {
        BinaryOp::Eq => a == b,
        BinaryOp::Ne => a != b,
        BinaryOp::Lt => a < b,
        BinaryOp::Le => a <= b,
        BinaryOp::Gt => a > b,
        _ => a >= b,
    }
}

/// Elementwise binary with broadcasting to `shape`.
pub fn binary(op: BinaryOp, a: &Tensor, b: &Tensor, shape: &[usize]) -> Result<Tensor, String> {
    let ia = broadcast_indices(shape, &a.shape);
    let ib = broadcast_indices(shape, &b.shape);
    let pairs = ia.iter().zip(&ib);
    let (dtype, data) = match (&a.data, &b.data) {
        (Data::F32(x), Data::F32(y)) if op.is_comparison() => (
            DType::Bool,
            Data::Bool(pairs.map(|(&i, &j)| cmp(op, x[i], y[j])).collect()),
        ),
        (Data::I64(x), Data::I64(y)) if op.is_comparison() => (
            DType::Bool,
            Data::Bool(pairs.map(|(&i, &j)| cmp(op, x[i], y[j])).collect()),
        ),
        (Data::Bool(x), Data::Bool(y)) => {
            let f: fn(bool, bool) -> bool = match op {
                BinaryOp::And => |p, q| p && q,
                BinaryOp::Or => |p, q| p || q,
                BinaryOp::Eq => |p, q| p == q,
                BinaryOp::Ne => |p, q| p != q,
                _ => return Err(format!("`{op}` is not defined on bool")),
            };
            (
                DType::Bool,
                Data::Bool(pairs.map(|(&i, &j)| f(x[i], y[j])).collect()),
            )
        }
        (Data::F32(x), Data::F32(y)) => {
            let f: fn(f32, f32) -> f32 = match op {
                BinaryOp::Add => |p, q| p + q,
                BinaryOp::Sub => |p, q| p - q,
                BinaryOp::Mul => |p, q| p * q,
                BinaryOp::Div => |p, q| p / q,
                BinaryOp::Pow => f32::powf,
                BinaryOp::Max => f32::max,
                BinaryOp::Min => f32::min,
                _ => return Err(format!("`{op}` is not defined on floats")),
            };
            (
                a.dtype,
                Data::F32(pairs.map(|(&i, &j)| f(x[i], y[j])).collect()),
            )
        }
        (Data::I64(x), Data::I64(y)) => {
            let f: fn(i64, i64) -> i64 = match op {
                BinaryOp::Add => i64::wrapping_add,
                BinaryOp::Sub => i64::wrapping_sub,
                BinaryOp::Mul => i64::wrapping_mul,
                BinaryOp::Div => archc_kernels::math::div_euclid,
                BinaryOp::Rem => archc_kernels::math::rem_euclid,
                BinaryOp::Pow => |p, q| p.wrapping_pow(q.clamp(0, 63) as u32),
                BinaryOp::Max => std::cmp::max,
                BinaryOp::Min => std::cmp::min,
                _ => return Err(format!("`{op}` is not defined on integers")),
            };
            (
                a.dtype,
                Data::I64(pairs.map(|(&i, &j)| f(x[i], y[j])).collect()),
            )
        }
        _ => return Err(format!("`{op}` on {} and {}", a.dtype, b.dtype)),
    };
    Ok(Tensor {
        dtype,
        shape: shape.to_vec(),
        data,
    })
}

/// `where(cond, a, b)` with broadcasting to `shape`.
pub fn select(c: &Tensor, a: &Tensor, b: &Tensor, shape: &[usize]) -> Result<Tensor, String> {
    let Data::Bool(cv) = &c.data else {
        return Err("the condition of `where` is not bool".into());
    };
    let ic = broadcast_indices(shape, &c.shape);
    let ia = broadcast_indices(shape, &a.shape);
    let ib = broadcast_indices(shape, &b.shape);
    let pick = |k: usize| cv[ic[k]];
    let n = ic.len();
    let data = match (&a.data, &b.data) {
        (Data::F32(x), Data::F32(y)) => Data::F32(
            (0..n)
                .map(|k| if pick(k) { x[ia[k]] } else { y[ib[k]] })
                .collect(),
        ),
        (Data::I64(x), Data::I64(y)) => Data::I64(
            (0..n)
                .map(|k| if pick(k) { x[ia[k]] } else { y[ib[k]] })
                .collect(),
        ),
        (Data::Bool(x), Data::Bool(y)) => Data::Bool(
            (0..n)
                .map(|k| if pick(k) { x[ia[k]] } else { y[ib[k]] })
                .collect(),
        ),
        _ => return Err("`where` branches differ in dtype".into()),
    };
    Ok(Tensor {
        dtype: a.dtype,
        shape: shape.to_vec(),
        data,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broadcast_indices_stretch_size_one_dims() {
        assert_eq!(broadcast_indices(&[2, 3], &[3]), vec![0, 1, 2, 0, 1, 2]);
        assert_eq!(broadcast_indices(&[2, 3], &[2, 1]), vec![0, 0, 0, 1, 1, 1]);
        assert_eq!(broadcast_indices(&[2, 2], &[]), vec![0, 0, 0, 0]);
    }
}
