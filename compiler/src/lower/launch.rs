//! The launch geometry of a kernel step: the kernel's grid and block (read off its axis kinds
//! by `archc_kernels::launch`) as the plan's symbolic sizes.

use archc_kernels::ir::{Bin, Expr, Kernel};
use archc_runtime::{Launch, Size, SizeOp};

/// The launch of `k`, or None when an extent is not an integer expression of the dims (a
/// Grid or Thread loop whose trip count reads a buffer).
pub fn launch(k: &Kernel) -> Option<Launch> {
    let g = archc_kernels::launch::geometry(k);
    let sizes = |extents: &[Expr]| extents.iter().map(size).collect::<Option<Vec<Size>>>();
    Some(Launch {
        grid: sizes(&g.grid)?,
        block: sizes(&g.block)?,
    })
}

/// An index expression over dims and constants as a [`Size`].
fn size(e: &Expr) -> Option<Size> {
    Some(match e {
        Expr::Int(v) => Size::Const(*v),
        Expr::Dim(i) => Size::Symbol(*i),
        Expr::Bin(op, a, b) => {
            let op = match op {
                Bin::Add => SizeOp::Add,
                Bin::Sub => SizeOp::Sub,
                Bin::Mul => SizeOp::Mul,
                Bin::Div | Bin::DivEuclid => SizeOp::Div,
                Bin::Rem | Bin::RemEuclid => SizeOp::Rem,
                Bin::Max => SizeOp::Max,
                Bin::Min => SizeOp::Min,
                Bin::Le => SizeOp::Le,
                _ => return None,
            };
            Size::op(op, size(a)?, size(b)?)
        }
        // c ? a : b with c a comparison (1 or 0): c·a + (1 − c)·b.
        Expr::Select(c, a, b) => {
            let c = size(c)?;
            let not = Size::op(SizeOp::Sub, Size::Const(1), c.clone());
            Size::op(
                SizeOp::Add,
                Size::op(SizeOp::Mul, c, size(a)?),
                Size::op(SizeOp::Mul, not, size(b)?),
            )
        }
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use archc_kernels::ir::build::{add, bin, mul};
    use archc_kernels::ir::{Axis, Kernel, Stmt, Var};

    use super::*;

    fn for_(kind: Axis, v: u32, extent: Expr, body: Vec<Stmt>) -> Stmt {
        archc_kernels::ir::build::axis(kind, Var(v), extent, body)
    }

    #[test]
    fn the_grid_is_the_outer_grid_nest_and_the_block_its_thread_nest() {
        let blocks = bin(Bin::Div, add(Expr::Dim(0), Expr::Int(63)), Expr::Int(64));
        let body = vec![for_(
            Axis::Grid,
            0,
            blocks,
            vec![for_(
                Axis::Grid,
                1,
                Expr::Dim(1),
                vec![
                    for_(Axis::Thread, 2, Expr::Int(64), vec![]),
                    Stmt::Barrier(archc_kernels::ir::Scope::Block),
                    for_(Axis::Thread, 3, Expr::Int(64), vec![]),
                ],
            )],
        )];
        let k = Kernel {
            name: "k".into(),
            params: vec![],
            locals: vec![],
            shared: vec![],
            body,
            occupancy: None,
        };
        let l = launch(&k).expect("dims and constants only");
        let symbols = ["seq".to_string(), "heads".to_string()];
        assert_eq!(l.show(&symbols), "grid=[(seq + 63)/64, heads] block=[64]");
        let serial = Kernel {
            body: vec![for_(
                Axis::Serial,
                0,
                mul(Expr::Dim(0), Expr::Int(2)),
                vec![],
            )],
            ..k
        };
        assert_eq!(launch(&serial), Some(Launch::default()));
    }
}
