//! The late pass that maps a kernel's parallel loops onto a GPU's blocks and threads, as
//! tinygrad's `gpudims` does: the one place where a GPU target's thread model meets the
//! Kernel IR.
//!
//! The lowering marks one parallel loop per kernel `Grid` (a flattened nest over the output,
//! matmul tasks, attention query rows, scan channels). On a CPU each OS thread runs a share of
//! its iterations. On a GPU each iteration becomes one thread: the loop
//!
//! ```text
//! grid for v in 0..n { body }
//! ```
//!
//! becomes
//!
//! ```text
//! grid for g in 0..(n + B - 1) / B {          // blockIdx
//!   thread for t in 0..B {                    // threadIdx
//!     v = g * B + t
//!     serial for _ in 0..select(v < n, 1, 0) { body }   // the last block's spare threads
//!   }
//! }
//! ```
//!
//! with `B` the kernel's block (see [`block_threads`]). The guard loop is left out when `B`
//! divides a constant `n`.
//!
//! What holds for a mapped kernel (what the NVPTX code generator and the interpreter's GPU
//! semantics rely on):
//! 1. every top-level Grid loop's body is one Thread loop of constant extent [`Mapped::block`]
//!    (in a kernel mapped here; a cooperative template's blocks hold Thread loops, barriers,
//!    and between them only statements that set variables alike in every thread);
//! 2. no Grid loop is nested in another statement (inner ones run in order: they become
//!    Serial), and no Thread loop in another Thread loop;
//! 3. statements outside the Grid loops are left where they are: one thread (thread 0 of
//!    block 0) runs them, as thread 0 does on a CPU;
//! 4. iteration `v` of every top-level Grid loop runs on the same thread (block `v / B`,
//!    thread `v % B`), so a later loop may read what the same iteration of an earlier one
//!    wrote, as it may when a CPU thread runs a contiguous share of both.
//!
//! Kernels whose Grid bodies already hold Thread loops (cooperative templates with shared
//! arrays and barriers) keep them: they are mapped already.

use crate::ir::build::{add, bin, mul};
use crate::ir::{Axis, Bin, Expr, Kernel, Stmt, Var};

/// A kernel mapped onto blocks of threads.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Mapped {
    /// The kernel, its parallel loops split into blocks and threads.
    pub kernel: Kernel,
    /// Threads per block: the extent of its Thread loops, the launch's block size.
    pub block: u32,
}

/// Threads per block for a kernel whose top-level Grid loops have `extents`: `preferred`,
/// or fewer when every extent is a constant below it (a kernel of 8 iterations gets one block
/// of 8 threads, not one of 128 with 120 idle).
pub fn block_threads(extents: &[&Expr], preferred: u32) -> u32 {
    let constants: Option<Vec<i64>> = extents
        .iter()
        .map(|e| match e {
            Expr::Int(n) => Some(*n),
            _ => None,
        })
        .collect();
    match constants.and_then(|c| c.into_iter().max()) {
        Some(most) => most.clamp(1, i64::from(preferred.max(1))) as u32,
        None => preferred.max(1),
    }
}

/// Maps `k` onto blocks of at most `preferred` threads (see the module doc).
pub fn map(k: &Kernel, preferred: u32) -> Mapped {
    let cooperative = k.body.iter().any(|s| grid_of(s).is_some_and(has_threads));
    let extents: Vec<&Expr> = k.body.iter().filter_map(grid_of).map(|(e, _)| e).collect();
    let block = block_threads(&extents, preferred);
    let mut next = max_var(&k.body).map_or(0, |v| v + 1);
    let mut fresh = || {
        next += 1;
        Var(next - 1)
    };
    let body = k
        .body
        .iter()
        .map(|s| match s {
            Stmt::For {
                var,
                extent,
                kind: Axis::Grid,
                body,
            } if !cooperative => split(
                (*var, extent),
                serialised(body),
                i64::from(block),
                &mut fresh,
            ),
            Stmt::For {
                var,
                extent,
                kind: Axis::Grid,
                body,
            } => Stmt::For {
                var: *var,
                extent: extent.clone(),
                kind: Axis::Grid,
                body: serialised(body),
            },
            // Thread 0 of block 0 runs it: any Grid loop inside runs in order.
            s => serialised(std::slice::from_ref(s)).remove(0),
        })
        .collect();
    Mapped {
        kernel: Kernel { body, ..k.clone() },
        block: if cooperative {
            crate::launch::geometry(k)
                .block
                .iter()
                .map(|e| match e {
                    Expr::Int(n) => *n as u32,
                    _ => preferred,
                })
                .product::<u32>()
                .max(1)
        } else {
            block
        },
    }
}

/// The extent and body of a Grid loop.
fn grid_of(s: &Stmt) -> Option<(&Expr, &[Stmt])> {
    match s {
        Stmt::For {
            extent,
            kind: Axis::Grid,
            body,
            ..
        } => Some((extent, body)),
        _ => None,
    }
}

fn has_threads((_, body): (&Expr, &[Stmt])) -> bool {
    body.iter().any(|s| match s {
        Stmt::For {
            kind: Axis::Thread, ..
        } => true,
        Stmt::For { body, .. } => has_threads((&Expr::Int(0), body)),
        _ => false,
    })
}

/// The blocks of `b` threads `n` iterations take. A `select` between two extents (a kernel's
/// two paths, one of them 0) stays a `select` of their blocks, so that the launch's grid is
/// the larger of them (`launch::geometry`).
fn blocks_for(n: &Expr, b: i64) -> Expr {
    match n {
        Expr::Int(n) => Expr::Int((n + b - 1) / b),
        Expr::Select(c, x, y) => Expr::Select(
            c.clone(),
            Box::new(blocks_for(x, b)),
            Box::new(blocks_for(y, b)),
        ),
        n => bin(Bin::Div, add(n.clone(), Expr::Int(b - 1)), Expr::Int(b)),
    }
}

/// One Grid loop split into blocks of `b` threads.
fn split((var, n): (Var, &Expr), body: Vec<Stmt>, b: i64, fresh: &mut impl FnMut() -> Var) -> Stmt {
    let (g, t) = (fresh(), fresh());
    let blocks = blocks_for(n, b);
    let exact = matches!(n, Expr::Int(n) if n % b == 0);
    let inner = if exact {
        body
    } else {
        let inside = bin(Bin::Lt, Expr::Var(var), n.clone());
        vec![Stmt::For {
            var: fresh(),
            extent: Expr::Select(
                Box::new(inside),
                Box::new(Expr::Int(1)),
                Box::new(Expr::Int(0)),
            ),
            kind: Axis::Serial,
            body,
        }]
    };
    let mut thread_body = vec![Stmt::Set(
        var,
        add(mul(Expr::Var(g), Expr::Int(b)), Expr::Var(t)),
    )];
    thread_body.extend(inner);
    Stmt::For {
        var: g,
        extent: blocks,
        kind: Axis::Grid,
        body: vec![Stmt::For {
            var: t,
            extent: Expr::Int(b),
            kind: Axis::Thread,
            body: thread_body,
        }],
    }
}

/// `body` with its Grid loops made Serial: inside a thread they run in order.
fn serialised(body: &[Stmt]) -> Vec<Stmt> {
    body.iter()
        .map(|s| match s {
            Stmt::For {
                var,
                extent,
                kind,
                body,
            } => Stmt::For {
                var: *var,
                extent: extent.clone(),
                kind: if *kind == Axis::Grid {
                    Axis::Serial
                } else {
                    *kind
                },
                body: serialised(body),
            },
            s => s.clone(),
        })
        .collect()
}

/// The highest variable number `body` sets or loops over.
fn max_var(body: &[Stmt]) -> Option<u32> {
    body.iter()
        .filter_map(|s| match s {
            Stmt::For { var, body, .. } => Some(max_var(body).map_or(var.0, |m| m.max(var.0))),
            Stmt::Set(v, _) => Some(v.0),
            Stmt::LoadMatrix(m) => Some(m.thread.0),
            _ => None,
        })
        .max()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::interp::{run, run_gpu, BufData, KernelError};
    use crate::ir::build::{axis, load};
    use crate::ir::{Elem, Param};
    use crate::printer::print_kernel;

    /// `out[i] = 2·x[i]` over `n` elements.
    fn double(n: Expr) -> Kernel {
        let i = Var(0);
        Kernel {
            name: "double".into(),
            params: vec![
                Param {
                    name: "out".into(),
                    elem: Elem::F32,
                    output: true,
                },
                Param {
                    name: "x".into(),
                    elem: Elem::F32,
                    output: false,
                },
                Param {
                    name: "status".into(),
                    elem: Elem::I64,
                    output: true,
                },
            ],
            locals: Vec::new(),
            shared: Vec::new(),
            body: vec![axis(
                Axis::Grid,
                i,
                n,
                vec![Stmt::Store(
                    0,
                    Expr::Var(i),
                    mul(load(1, Expr::Var(i)), crate::ir::build::f32(2.0)),
                )],
            )],
            occupancy: None,
        }
    }

    #[test]
    fn a_grid_loop_becomes_blocks_of_threads_with_a_guard() {
        let m = map(&double(Expr::Dim(0)), 128);
        assert_eq!(m.block, 128);
        let text = print_kernel(&m.kernel);
        let want = "\
  grid for v1 in 0..((d0 + 127) / 128) {
    thread for v2 in 0..128 {
      v0 = ((v1 * 128) + v2)
      serial for v3 in 0..select((v0 < d0), 1, 0) {
        b0[v0] = (b1[v0] * 2.0f)
      }
    }
  }
";
        assert!(text.contains(want), "{text}");
    }

    #[test]
    fn a_choice_of_paths_keeps_its_select_so_the_grid_is_the_larger() {
        let c = bin(Bin::Le, Expr::Dim(0), Expr::Int(4));
        let n = Expr::Select(Box::new(c), Box::new(Expr::Int(0)), Box::new(Expr::Dim(0)));
        let m = map(&double(n), 128);
        let g = crate::launch::geometry(&m.kernel);
        assert!(
            matches!(g.grid.as_slice(), [Expr::Select(..)]),
            "{:?}",
            g.grid
        );
    }

    #[test]
    fn a_small_constant_grid_gets_one_exact_block() {
        let m = map(&double(Expr::Int(8)), 128);
        assert_eq!(m.block, 8);
        let text = print_kernel(&m.kernel);
        assert!(text.contains("grid for v1 in 0..1 {"), "{text}");
        assert!(!text.contains("select"), "{text}");
    }

    #[test]
    fn mapping_keeps_the_values() {
        for n in [1, 7, 128, 300] {
            let x: Vec<f32> = (0..n).map(|i| i as f32 - 3.5).collect();
            let k = double(Expr::Dim(0));
            let mut outs = [&k, &map(&k, 128).kernel].map(|_| {
                vec![
                    BufData::zeros(Elem::F32, n),
                    BufData::F32(x.clone()),
                    BufData::zeros(Elem::I64, 1),
                ]
            });
            let dims = [n as i64];
            assert_eq!(run(&k, &mut outs[0], &dims), Ok(()));
            assert_eq!(run_gpu(&map(&k, 128).kernel, &mut outs[1], &dims), Ok(()));
            assert_eq!(outs[0], outs[1], "n = {n}");
        }
    }

    #[test]
    fn threads_storing_to_one_element_race() {
        let mut k = double(Expr::Dim(0));
        // Every iteration writes element 0.
        if let Stmt::For { body, .. } = &mut k.body[0] {
            body[0] = Stmt::Store(0, Expr::Int(0), load(1, Expr::Var(Var(0))));
        }
        let mut bufs = vec![
            BufData::zeros(Elem::F32, 4),
            BufData::F32(vec![1.0; 4]),
            BufData::zeros(Elem::I64, 1),
        ];
        assert_eq!(run(&k, &mut bufs.clone(), &[4]), Ok(()));
        let err = run_gpu(&map(&k, 2).kernel, &mut bufs, &[4]);
        assert!(
            matches!(err, Err(KernelError::Race { ref race, .. }) if race.index == 0),
            "{err:?}"
        );
    }
}
