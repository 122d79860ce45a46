//! Layout templates: permute, slice, flip, pad, concat and gather. Each is a loop nest over the
//! output (or over each input, for concat) with an index map.

use archc_kernels::ir::build::{bin, sub};
use archc_kernels::ir::{Bin, Expr, Stmt};

use super::elementwise::constant;
use super::index::{exprs, flipped, plus, Ctx};
use super::Template;
use crate::graph::{Dim, Op, TensorType};

/// The layout kernel body for `op`, or None if `op` is not a layout op.
pub fn lower(cx: &mut Ctx, op: &Op, out: &TensorType, ins: &[&TensorType]) -> Option<Template> {
    let x = ins.first()?;
    let vars = cx.vars(out.rank());
    let at = exprs(&vars);
    let out_index = cx.index(&out.shape, &at);
    let store = |value: Expr| vec![Stmt::Store(0, out_index.clone(), value)];
    let (body, checks) = match op {
        Op::Permute(perm) => {
            let mut src = vec![Expr::Int(0); x.rank()];
            for (i, &p) in perm.iter().enumerate() {
                src[p] = at[i].clone();
            }
            (
                store(Expr::Load(1, Box::new(cx.index(&x.shape, &src)))),
                vec![],
            )
        }
        Op::Slice { axis, start, .. } => {
            let mut src = at.clone();
            src[*axis] = plus(src[*axis].clone(), cx.dim(start));
            (
                store(Expr::Load(1, Box::new(cx.index(&x.shape, &src)))),
                vec![],
            )
        }
        Op::Flip { axis } => {
            let src = flipped(cx, &at, *axis, &x.shape[*axis]);
            (
                store(Expr::Load(1, Box::new(cx.index(&x.shape, &src)))),
                vec![],
            )
        }
        Op::Pad {
            axis,
            before,
            value,
            ..
        } => {
            let v = at[*axis].clone();
            let inside = bin(
                Bin::And,
                bin(Bin::Ge, v.clone(), Expr::Int(*before)),
                bin(
                    Bin::Lt,
                    v.clone(),
                    plus(cx.dim(&x.shape[*axis]), Expr::Int(*before)),
                ),
            );
            let mut src = at.clone();
            // Outside the input the index is clamped to 0, so the load stays in bounds.
            src[*axis] = Expr::Select(
                Box::new(inside.clone()),
                Box::new(sub(v, Expr::Int(*before))),
                Box::new(Expr::Int(0)),
            );
            let load = Expr::Load(1, Box::new(cx.index(&x.shape, &src)));
            (
                store(Expr::Select(
                    Box::new(inside),
                    Box::new(load),
                    Box::new(constant(value.value(), out.dtype)),
                )),
                vec![],
            )
        }
        Op::Concat { axis } => {
            // One nest per input, writing its block of the output.
            let mut body = Vec::new();
            let mut offset = Dim::constant(0);
            for (k, t) in ins.iter().enumerate() {
                let vs = cx.vars(t.rank());
                let mut dst = exprs(&vs);
                dst[*axis] = plus(dst[*axis].clone(), cx.dim(&offset));
                let value = Expr::Load(k + 1, Box::new(cx.index(&t.shape, &exprs(&vs))));
                body.extend(cx.nest(
                    &t.shape,
                    &vs,
                    vec![Stmt::Store(0, cx.index(&out.shape, &dst), value)],
                ));
                offset = offset
                    .add(&t.shape[*axis])
                    .expect("concat sizes were checked");
            }
            return Some(Template::new(body, vec![]));
        }
        Op::Gather { axis } => {
            let idx = ins[1];
            let rest_i = idx.rank() - axis;
            let mut idx_at: Vec<Expr> = at[..*axis].to_vec();
            idx_at.extend(at[*axis..*axis + rest_i].iter().cloned());
            let id = cx.var();
            let ok = bin(
                Bin::And,
                bin(Bin::Ge, Expr::Var(id), Expr::Int(0)),
                bin(Bin::Lt, Expr::Var(id), cx.dim(&x.shape[*axis])),
            );
            let safe = Expr::Select(
                Box::new(ok.clone()),
                Box::new(Expr::Var(id)),
                Box::new(Expr::Int(0)),
            );
            let mut x_at: Vec<Expr> = at[..*axis].to_vec();
            x_at.push(safe);
            x_at.extend(at[*axis + rest_i..].iter().cloned());
            let body = vec![
                Stmt::Set(id, Expr::Load(2, Box::new(cx.index(&idx.shape, &idx_at)))),
                Stmt::Check(ok, 1),
                Stmt::Store(
                    0,
                    out_index.clone(),
                    Expr::Load(1, Box::new(cx.index(&x.shape, &x_at))),
                ),
            ];
            let message = format!(
                "an index is out of range for axis {axis} of size {}",
                x.shape[*axis]
            );
            (body, vec![message])
        }
        _ => return None,
    };
    Some(Template::new(cx.nest(&out.shape, &vars, body), checks))
}
