//! The PTX ISA's fragment layouts of `mma.m16n8k16` with 16-bit inputs ([`Stmt::Mma`]): which
//! element of which matrix each thread's fragment elements are. Lane `l` of a warp is in group
//! `g = l / 4` at place `q = l % 4`. The interpreter gathers a warp's matrices through these
//! functions, so a template that places an element in the wrong register computes the wrong
//! product there, as it would on a GPU.
//!
//! [`Stmt::Mma`]: crate::ir::Stmt::Mma

/// Threads in a warp.
pub const WARP: usize = 32;

/// Element `i` (`0..8`) of lane `l`'s `A` fragment: `(row, column)` of the 16×16 `A`.
/// Elements come in pairs along a row (a 32-bit register each).
pub fn a(l: usize, i: usize) -> (usize, usize) {
    let (g, q) = (l / 4, l % 4);
    (g + 8 * ((i / 2) % 2), 2 * q + i % 2 + 8 * (i / 4))
}

/// Element `i` (`0..4`) of lane `l`'s `B` fragment: `(row, column)` of the 16×8 `B`,
/// pairs down a column.
pub fn b(l: usize, i: usize) -> (usize, usize) {
    let (g, q) = (l / 4, l % 4);
    (2 * q + i % 2 + 8 * (i / 2), g)
}

/// Element `i` (`0..4`) of lane `l`'s `C` fragment: `(row, column)` of the 16×8 `C`.
pub fn c(l: usize, i: usize) -> (usize, usize) {
    let (g, q) = (l / 4, l % 4);
    (g + 8 * (i / 2), 2 * q + i % 2)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::interp::{run, run_gpu, BufData, KernelError};
    use crate::ir::build::{add, axis, bin, load, mul, var};
    use crate::ir::{Axis, Bin, Elem, Expr, Fragment, Kernel, Local, Param, Stmt, Var};

    #[test]
    fn each_layout_places_every_element_once() {
        for (f, len, (rows, cols)) in [
            (a as fn(usize, usize) -> (usize, usize), 8, (16, 16)),
            (b, 4, (16, 8)),
            (c, 4, (16, 8)),
        ] {
            let mut seen = vec![0; rows * cols];
            for l in 0..WARP {
                for i in 0..len {
                    let (r, k) = f(l, i);
                    seen[r * cols + k] += 1;
                }
            }
            assert!(seen.iter().all(|&n| n == 1), "{seen:?}");
        }
    }

    fn param(name: &str, elem: Elem, output: bool) -> Param {
        Param {
            name: name.into(),
            elem,
            output,
        }
    }

    fn int(n: i64) -> Expr {
        Expr::Int(n)
    }

    /// `out[w] = a[w]·b[w] + out[w]` for each warp `w` of one block of `warps` warps: a
    /// 16×16 bf16 `a` and a 16×8 `b` per warp, their fragments loaded as the PTX ISA lays them
    /// out (`a_rows`: the row of `A` element `e` of lane group `g`, a template's formula).
    fn product(warps: i64, a_rows: fn(Expr, Expr) -> Expr) -> Kernel {
        let [blk, t, e, l, g, q, w] = [0, 1, 2, 3, 4, 5, 6].map(Var);
        let (ve, vg, vq) = (var(e), var(g), var(q));
        let rem = |x: Expr, n| bin(Bin::Rem, x, int(n));
        let div = |x: Expr, n| bin(Bin::Div, x, int(n));
        let a_col = add(
            add(mul(vq.clone(), int(2)), rem(ve.clone(), 2)),
            mul(div(ve.clone(), 4), int(8)),
        );
        let b_row = add(
            add(mul(vq.clone(), int(2)), rem(ve.clone(), 2)),
            mul(div(ve.clone(), 2), int(8)),
        );
        let c_row = add(vg.clone(), mul(div(ve.clone(), 2), int(8)));
        let c_col = add(mul(vq.clone(), int(2)), rem(ve.clone(), 2));
        let setup = vec![
            Stmt::Set(l, rem(var(t), 32)),
            Stmt::Set(w, div(var(t), 32)),
            Stmt::Set(g, div(var(l), 4)),
            Stmt::Set(q, rem(var(l), 4)),
        ];
        let at =
            |base: Expr, row: Expr, col: Expr, cols: i64| add(base, add(mul(row, int(cols)), col));
        let mut load_frags = setup.clone();
        load_frags.push(axis(
            Axis::Unroll,
            e,
            int(8),
            vec![Stmt::Store(
                4,
                var(e),
                load(
                    1,
                    at(
                        mul(var(w), int(256)),
                        a_rows(vg.clone(), ve.clone()),
                        a_col,
                        16,
                    ),
                ),
            )],
        ));
        load_frags.push(axis(
            Axis::Unroll,
            e,
            int(4),
            vec![
                Stmt::Store(
                    5,
                    var(e),
                    load(2, at(mul(var(w), int(128)), b_row, vg.clone(), 8)),
                ),
                Stmt::Store(
                    6,
                    var(e),
                    load(
                        0,
                        at(mul(var(w), int(128)), c_row.clone(), c_col.clone(), 8),
                    ),
                ),
            ],
        ));
        let mut store = setup;
        store.push(axis(
            Axis::Unroll,
            e,
            int(4),
            vec![Stmt::Store(
                0,
                at(mul(var(w), int(128)), c_row, c_col, 8),
                load(6, var(e)),
            )],
        ));
        let frag = |buf| Fragment { buf, at: int(0) };
        Kernel {
            name: "mma".into(),
            params: vec![
                param("out", Elem::F32, true),
                param("a", Elem::BF16, false),
                param("b", Elem::BF16, false),
                param("status", Elem::I64, true),
            ],
            locals: vec![
                Local {
                    name: "a".into(),
                    elem: Elem::BF16,
                    len: 8,
                },
                Local {
                    name: "b".into(),
                    elem: Elem::BF16,
                    len: 4,
                },
                Local {
                    name: "c".into(),
                    elem: Elem::F32,
                    len: 4,
                },
            ],
            shared: Vec::new(),
            body: vec![axis(
                Axis::Grid,
                blk,
                int(1),
                vec![
                    axis(Axis::Thread, t, int(32 * warps), load_frags),
                    Stmt::Mma {
                        a: frag(4),
                        b: frag(5),
                        c: frag(6),
                    },
                    axis(Axis::Thread, t, int(32 * warps), store),
                ],
            )],
            occupancy: None,
        }
    }

    /// The PTX ISA's rows of `A`: `g + 8·((e / 2) mod 2)`.
    fn ptx_rows(g: Expr, e: Expr) -> Expr {
        add(
            g,
            mul(bin(Bin::Rem, bin(Bin::Div, e, int(2)), int(2)), int(8)),
        )
    }

    /// Inputs of `warps` warps' products, and their exact results (each product of two bf16
    /// values is exact in f32, and the reference sums in the interpreter's order).
    fn case(warps: usize) -> (Vec<BufData>, Vec<f32>) {
        let value = |i: usize, s: usize| ((i * s) % 23) as f32 / 8.0 - 1.25;
        let a: Vec<f32> = (0..warps * 256).map(|i| value(i, 7)).collect();
        let b: Vec<f32> = (0..warps * 128).map(|i| value(i, 5)).collect();
        let c: Vec<f32> = (0..warps * 128).map(|i| value(i, 3)).collect();
        let mut want = c.clone();
        for w in 0..warps {
            for r in 0..16 {
                for n in 0..8 {
                    let d = &mut want[w * 128 + r * 8 + n];
                    *d = (0..16).fold(*d, |acc, k| {
                        a[w * 256 + r * 16 + k].mul_add(b[w * 128 + k * 8 + n], acc)
                    });
                }
            }
        }
        let bf16 =
            |v: &[f32]| BufData::BF16(v.iter().map(|&x| crate::storage::f32_to_bf16(x)).collect());
        (
            vec![BufData::F32(c), bf16(&a), bf16(&b), BufData::I64(vec![0])],
            want,
        )
    }

    #[test]
    fn the_interpreter_multiplies_fragments_laid_out_as_ptx_says() {
        let k = product(2, ptx_rows);
        assert!(
            crate::verify::verify_kernel(&k, 0).is_empty(),
            "{:?}",
            crate::verify::verify_kernel(&k, 0)
        );
        let (mut bufs, want) = case(2);
        assert_eq!(run_gpu(&k, &mut bufs, &[]), Ok(()));
        assert_eq!(bufs[0], BufData::F32(want));
    }

    #[test]
    fn fragments_in_the_wrong_registers_give_a_wrong_product() {
        // Rows g and g + 8 swapped in A's fragment.
        let k = product(1, |g, e| {
            add(
                g,
                mul(
                    bin(
                        Bin::Sub,
                        int(1),
                        bin(Bin::Rem, bin(Bin::Div, e, int(2)), int(2)),
                    ),
                    int(8),
                ),
            )
        });
        let (mut bufs, want) = case(1);
        assert_eq!(run_gpu(&k, &mut bufs, &[]), Ok(()));
        assert_ne!(bufs[0], BufData::F32(want));
    }

    #[test]
    fn an_mma_needs_gpu_semantics_and_whole_warps() {
        let (mut bufs, _) = case(1);
        let err = run(&product(1, ptx_rows), &mut bufs, &[]);
        assert!(matches!(err, Err(KernelError::Warp { .. })), "{err:?}");
        // A block of 48 threads is not whole warps.
        let mut k = product(1, ptx_rows);
        if let Stmt::For { body, .. } = &mut k.body[0] {
            for s in body.iter_mut() {
                if let Stmt::For { extent, .. } = s {
                    *extent = int(48);
                }
            }
        }
        let problems = crate::verify::verify_kernel(&k, 0);
        assert!(
            problems.iter().any(|p| p.what.contains("whole warps")),
            "{problems:?}"
        );
        let err = run_gpu(&k, &mut case(2).0, &[]);
        assert!(matches!(err, Err(KernelError::Warp { .. })), "{err:?}");
    }
}
