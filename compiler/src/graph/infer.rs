//! Type inference for primitive ops: operand types → result type, or why they do not fit.

use archc_runtime::DType;

use super::op::{BinaryOp, Op, TensorType, UnaryOp};
use archc_runtime::Dim;

/// Why an op's operands do not fit together. The elaborator attaches the source span.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TypeError {
    /// Shapes that do not broadcast or contract.
    Shape(String),
    /// Element types that do not fit the op.
    DType(String),
    /// An axis, index or size out of range.
    Range(String),
}

type Infer = Result<TensorType, TypeError>;

fn shape_str(shape: &[Dim]) -> String {
    let d: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    format!("[{}]", d.join(", "))
}

/// Numpy broadcasting of two shapes (aligned on the right; a dim of 1 stretches).
pub fn broadcast(a: &[Dim], b: &[Dim]) -> Option<Vec<Dim>> {
    let n = a.len().max(b.len());
    let one = Dim::constant(1);
    (0..n)
        .map(|i| {
            let da = if i + a.len() >= n {
                &a[i + a.len() - n]
            } else {
                &one
            };
            let db = if i + b.len() >= n {
                &b[i + b.len() - n]
            } else {
                &one
            };
            if da == db || *db == one {
                Some(da.clone())
            } else if *da == one {
                Some(db.clone())
            } else {
                None
            }
        })
        .collect()
}

fn broadcast_or_err(what: &str, a: &TensorType, b: &TensorType) -> Result<Vec<Dim>, TypeError> {
    broadcast(&a.shape, &b.shape).ok_or_else(|| {
        TypeError::Shape(format!(
            "shapes {} and {} do not broadcast in `{what}`",
            shape_str(&a.shape),
            shape_str(&b.shape)
        ))
    })
}

fn same_dtype(what: &str, a: &TensorType, b: &TensorType) -> Result<(), TypeError> {
    if a.dtype == b.dtype {
        Ok(())
    } else {
        Err(TypeError::DType(format!(
            "`{what}` needs operands of one dtype, found {} and {}",
            a.dtype, b.dtype
        )))
    }
}

fn float_only(what: &str, t: &TensorType) -> Result<(), TypeError> {
    if t.dtype.is_float() {
        Ok(())
    } else {
        Err(TypeError::DType(format!(
            "`{what}` needs a float tensor, found {}",
            t.dtype
        )))
    }
}

/// Infers the result type of `op` on operands `ins`. `declared` is the type the elaborator
/// computed for ops whose result is given rather than derived (reshape, cast, inputs, ...).
pub fn infer(op: &Op, ins: &[&TensorType], declared: Option<&TensorType>) -> Infer {
    let given = || declared.cloned().expect("ops with a given type carry it");
    match op {
        Op::Input(_)
        | Op::Param(_)
        | Op::Const(_)
        | Op::Iota
        | Op::Size(_)
        | Op::Fused(_)
        | Op::Call(_) => Ok(given()),
        Op::Unary(u) => {
            let x = ins[0];
            match u {
                UnaryOp::Not if x.dtype != DType::Bool => Err(TypeError::DType(format!(
                    "`not` needs a bool tensor, found {}",
                    x.dtype
                ))),
                UnaryOp::Neg | UnaryOp::Abs | UnaryOp::StopGrad | UnaryOp::Not => Ok(x.clone()),
                _ => {
                    float_only(&u.to_string(), x)?;
                    Ok(x.clone())
                }
            }
        }
        Op::Binary(b) => {
            let (x, y) = (ins[0], ins[1]);
            let name = b.to_string();
            same_dtype(&name, x, y)?;
            let shape = broadcast_or_err(&name, x, y)?;
            let dtype = match b {
                _ if b.is_comparison() => DType::Bool,
                BinaryOp::And | BinaryOp::Or => {
                    if x.dtype != DType::Bool {
                        return Err(TypeError::DType(format!(
                            "`{name}` needs bool tensors, found {}",
                            x.dtype
                        )));
                    }
                    DType::Bool
                }
                _ if x.dtype == DType::Bool => {
                    return Err(TypeError::DType(format!(
                        "`{name}` is not defined on bool tensors"
                    )))
                }
                BinaryOp::Rem if x.dtype.is_float() => {
                    return Err(TypeError::DType(format!(
                        "`%` on tensors needs integers, found {}",
                        x.dtype
                    )))
                }
                _ => x.dtype,
            };
            Ok(TensorType::new(dtype, shape))
        }
        Op::Select => {
            let (c, a, b) = (ins[0], ins[1], ins[2]);
            if c.dtype != DType::Bool {
                return Err(TypeError::DType(format!(
                    "the condition of `where` must be bool, found {}",
                    c.dtype
                )));
            }
            same_dtype("where", a, b)?;
            let ab = broadcast_or_err("where", a, b)?;
            let shape = broadcast_or_err("where", c, &TensorType::new(a.dtype, ab))?;
            Ok(TensorType::new(a.dtype, shape))
        }
        Op::Reduce { axes, keepdim, .. } => {
            let x = ins[0];
            let mut shape = Vec::new();
            for (i, d) in x.shape.iter().enumerate() {
                if axes.contains(&i) {
                    if *keepdim {
                        shape.push(Dim::constant(1));
                    }
                } else {
                    shape.push(d.clone());
                }
            }
            Ok(TensorType::new(x.dtype, shape))
        }
        Op::MatMul => matmul(ins[0], ins[1]),
        Op::Reshape => {
            let out = given();
            let (a, b) = (Dim::product(&ins[0].shape), Dim::product(&out.shape));
            if a.is_none() || a != b {
                return Err(TypeError::Shape(format!(
                    "cannot reshape {} into {}: element counts differ",
                    shape_str(&ins[0].shape),
                    shape_str(&out.shape)
                )));
            }
            Ok(TensorType::new(ins[0].dtype, out.shape))
        }
        Op::Permute(perm) => {
            let x = ins[0];
            let mut seen = vec![false; x.rank()];
            for &p in perm {
                if p >= x.rank() || seen[p] {
                    return Err(TypeError::Range(format!(
                        "{perm:?} is not a permutation of the {} axes of {}",
                        x.rank(),
                        shape_str(&x.shape)
                    )));
                }
                seen[p] = true;
            }
            if perm.len() != x.rank() {
                return Err(TypeError::Range(format!(
                    "{perm:?} is not a permutation of the {} axes of {}",
                    x.rank(),
                    shape_str(&x.shape)
                )));
            }
            Ok(TensorType::new(
                x.dtype,
                perm.iter().map(|&p| x.shape[p].clone()).collect(),
            ))
        }
        Op::Slice { axis, start, end } => {
            let x = ins[0];
            let len = end
                .sub(start)
                .ok_or_else(|| TypeError::Range("slice bounds overflow".into()))?;
            let size = &x.shape[*axis];
            let bad = match (start.as_const(), end.as_const(), size.as_const()) {
                (Some(s), _, _) if s < 0 => true,
                (_, _, _) if len.as_const().is_some_and(|l| l < 0) => true,
                (_, Some(e), Some(n)) => e > n,
                _ => false,
            };
            if bad {
                return Err(TypeError::Range(format!(
                    "slice {start}..{end} is outside axis {axis} of size {size}"
                )));
            }
            let mut shape = x.shape.clone();
            shape[*axis] = len;
            Ok(TensorType::new(x.dtype, shape))
        }
        Op::Concat { axis } => {
            let first = ins[0];
            let mut total = Dim::constant(0);
            for t in ins {
                same_dtype("concat", first, t)?;
                let ok = t.rank() == first.rank()
                    && (0..t.rank()).all(|i| i == *axis || t.shape[i] == first.shape[i]);
                if !ok {
                    return Err(TypeError::Shape(format!(
                        "cannot concat {} with {} along axis {axis}",
                        shape_str(&first.shape),
                        shape_str(&t.shape)
                    )));
                }
                total = total
                    .add(&t.shape[*axis])
                    .ok_or_else(|| TypeError::Range("concat size overflow".into()))?;
            }
            let mut shape = first.shape.clone();
            shape[*axis] = total;
            Ok(TensorType::new(first.dtype, shape))
        }
        Op::Pad {
            axis,
            before,
            after,
            ..
        } => {
            let x = ins[0];
            let mut shape = x.shape.clone();
            shape[*axis] = shape[*axis]
                .add(&Dim::constant(before + after))
                .ok_or_else(|| TypeError::Range("pad size overflow".into()))?;
            Ok(TensorType::new(x.dtype, shape))
        }
        Op::Gather { axis } => gather(ins[0], ins[1], *axis),
        Op::Flip { axis } if *axis >= ins[0].rank() => Err(TypeError::Range(format!(
            "axis {axis} is outside the {} axes of {}",
            ins[0].rank(),
            shape_str(&ins[0].shape)
        ))),
        Op::Flip { .. } => Ok(ins[0].clone()),
        Op::Cast => Ok(TensorType::new(given().dtype, ins[0].shape.clone())),
        Op::Scan { .. } => {
            let (a, b) = (ins[0], ins[1]);
            same_dtype("scan", a, b)?;
            float_only("scan", b)?;
            match broadcast(&a.shape, &b.shape) {
                Some(s) if s == b.shape => Ok(b.clone()),
                _ => Err(TypeError::Shape(format!(
                    "the decay {} of `scan` must broadcast to the input {}",
                    shape_str(&a.shape),
                    shape_str(&b.shape)
                ))),
            }
        }
        Op::SvdVals => svdvals(ins[0]),
    }
}

/// The most columns `svdvals` takes: its kernel holds an n × n Gram matrix per thread.
pub const SVDVALS_MAX_COLUMNS: i64 = 256;

fn svdvals(x: &TensorType) -> Infer {
    float_only("svdvals", x)?;
    if x.rank() < 2 {
        return Err(TypeError::Shape(format!(
            "`svdvals` needs matrices, rank ≥ 2, found {}",
            shape_str(&x.shape)
        )));
    }
    let n = &x.shape[x.rank() - 1];
    match n.as_const() {
        Some(c) if (1..=SVDVALS_MAX_COLUMNS).contains(&c) => {}
        _ => {
            return Err(TypeError::Range(format!(
                "`svdvals` needs a constant number of columns from 1 to \
                 {SVDVALS_MAX_COLUMNS}, found {n} in {}",
                shape_str(&x.shape)
            )))
        }
    }
    let mut shape = x.shape[..x.rank() - 2].to_vec();
    shape.push(n.clone());
    Ok(TensorType::new(x.dtype, shape))
}

fn matmul(a: &TensorType, b: &TensorType) -> Infer {
    same_dtype("matmul", a, b)?;
    float_only("matmul", a)?;
    if a.rank() < 2 || b.rank() < 2 {
        return Err(TypeError::Shape(format!(
            "`matmul` needs operands of rank ≥ 2, found {} and {}",
            shape_str(&a.shape),
            shape_str(&b.shape)
        )));
    }
    let (ra, rb) = (a.rank(), b.rank());
    if a.shape[ra - 1] != b.shape[rb - 2] {
        return Err(TypeError::Shape(format!(
            "`matmul` contracts {} with {}: inner dims {} and {} differ",
            shape_str(&a.shape),
            shape_str(&b.shape),
            a.shape[ra - 1],
            b.shape[rb - 2]
        )));
    }
    let mut shape = broadcast(&a.shape[..ra - 2], &b.shape[..rb - 2]).ok_or_else(|| {
        TypeError::Shape(format!(
            "`matmul` batch dims of {} and {} do not broadcast",
            shape_str(&a.shape),
            shape_str(&b.shape)
        ))
    })?;
    shape.push(a.shape[ra - 2].clone());
    shape.push(b.shape[rb - 1].clone());
    Ok(TensorType::new(a.dtype, shape))
}

/// The first `axis` dims of `gather`'s indices are batch dims: say which shapes fit.
fn gather_lead_error(x: &TensorType, idx: &TensorType, axis: usize) -> TypeError {
    let lead = shape_str(&x.shape[..axis]);
    let mut shared = vec![Dim::constant(1); axis];
    shared.extend(idx.shape.iter().cloned());
    TypeError::Shape(format!(
        "`gather` along axis {axis} of {} needs indices whose first {axis} dims broadcast with \
         {lead} (batch dims), followed by the positions; found indices {}. For the same \
         positions in every batch row, reshape the indices to {}",
        shape_str(&x.shape),
        shape_str(&idx.shape),
        shape_str(&shared)
    ))
}

fn gather(x: &TensorType, idx: &TensorType, axis: usize) -> Infer {
    if !idx.dtype.is_int() {
        return Err(TypeError::DType(format!(
            "`gather` indices must be i32 or i64, found {}",
            idx.dtype
        )));
    }
    if idx.rank() < axis {
        return Err(gather_lead_error(x, idx, axis));
    }
    let lead = broadcast(&x.shape[..axis], &idx.shape[..axis])
        .filter(|l| l.len() == axis)
        .ok_or_else(|| gather_lead_error(x, idx, axis))?;
    let mut shape = lead;
    shape.extend(idx.shape[axis..].iter().cloned());
    shape.extend(x.shape[axis + 1..].iter().cloned());
    Ok(TensorType::new(x.dtype, shape))
}
