//! What the GPU attention templates ([`super::attention_mma`], [`super::attention_lanes`])
//! share: a block's task of query rows, the blocks of keys it visits (those the masks leave
//! visible to some of its rows), and the copies of q's, k's and v's rows into shared memory.

use archc_kernels::ir::build::{add, mul, serial, sub, var};
use archc_kernels::ir::{Expr, Scope, Stmt, Var};

use super::attention::{key_blocks, plain, row_start};
use super::attention_tasks::{over_tasks, task, Task};
use super::attention_tiles::Widths;
use super::fragments::{copy_chunks, int, lt, padded, stage, Slot, THREADS};
use super::index::Ctx;
use crate::graph::{AttentionInfo, TensorType};

/// Where a thread is in the nest: its task's first query row and batch row, the task's batch
/// coordinates, the thread in the block, and the key block's first key.
pub(super) struct Spot {
    pub i0: Var,
    pub bt: Var,
    pub batch: Vec<Expr>,
    pub t: Var,
    pub j0: Var,
}

/// A block's loop nest: its task, the lengths, and the staging copies.
pub(super) struct Nest {
    /// The block's task (its first query row `i0`, its rows `qn`, its batch row `bt`).
    pub task: Task,
    /// The task's batch coordinates.
    pub batch: Vec<Expr>,
    /// The thread in the block.
    pub t: Var,
    /// The key block's first key.
    pub j0: Var,
    /// The first key of the block whose k rows `stage_kv[0]` copies: `j0` unless the
    /// template sets it to a later block's, to stage it ahead.
    pub jk: Var,
    /// The key block's number among those visited.
    jb: Var,
    /// The number of queries and of keys.
    pub s_len: Expr,
    pub t_len: Expr,
    /// The task's statements so far (its coordinates, the range of key blocks).
    per_task: Vec<Stmt>,
    /// The key blocks: the first one visited (when the masks hide some) and their count.
    from: Option<Var>,
    blocks: Expr,
    /// The thread's share of copying the task's rows of q into the `k_tile`.
    pub stage_q: Stmt,
    /// The thread's share of copying the key block's rows of k, then of v, into the tiles.
    pub stage_kv: Vec<Stmt>,
}

impl Nest {
    /// The nest of attention `a` (inputs `ins`, output `out`, widths `w`) whose blocks take
    /// `rows` query rows and keys in blocks of `keys`, staged into shared arrays `k_tile` and
    /// `v_tile` (rows padded as [`stage`] pads them): by plain loads and stores, or, given a
    /// `chunk` of 16 bytes' elements, by asynchronous copies the caller waits for. (A row
    /// starts at a multiple of its width, which a 16-bit head's width of a multiple of 8
    /// makes 16-byte aligned.)
    pub fn new(
        cx: &mut Ctx,
        a: &AttentionInfo,
        (out, ins): (&TensorType, &[&TensorType]),
        (w, rows, keys): (&Widths, i64, i64),
        (k_tile, v_tile, chunk): (usize, usize, Option<i64>),
    ) -> Nest {
        let [qs, ks, vs] = a.qkv;
        let (qt, kt, vt) = (ins[qs], ins[ks], ins[vs]);
        let s_len = cx.dim(&out.shape[out.rank() - 2]);
        let t_len = cx.dim(&kt.shape[a.k_order[a.k_order.len() - 2]]);
        let (mut per_task, task) = task(cx, out, s_len.clone(), rows);
        let batch: Vec<Expr> = task.coords.iter().map(|v| var(*v)).collect();
        let (t, j0, jk, jb) = (cx.var(), cx.var(), cx.var(), cx.var());
        let last = sub(add(var(task.i0), var(task.qn)), int(1));
        let (from, blocks) = key_blocks(
            cx,
            &a.keys,
            (var(task.i0), last),
            t_len.clone(),
            keys,
            &mut per_task,
        );
        let (stage_q, stage_kv) = {
            let q_row = |cx: &Ctx, i: Expr| row_start(cx, &batch, qt, &plain(qt), i);
            let k_row = |cx: &Ctx, j: Expr| row_start(cx, &batch, kt, &a.k_order, j);
            let v_row = |cx: &Ctx, j: Expr| row_start(cx, &batch, vt, &plain(vt), j);
            let queries = tile_rows(var(task.i0), &s_len, &q_row);
            let (k_rows, v_rows) = (
                tile_rows(var(jk), &t_len, &k_row),
                tile_rows(var(j0), &t_len, &v_row),
            );
            let copy = |cx: &mut Ctx, from: (usize, usize), shape, at: Rows| match chunk {
                None => stage(cx, t, from, shape, at),
                Some(n) => {
                    let (height, width) = shape;
                    let slot = padded(int(0), width);
                    let chunks = (from.0, from.1, &slot as Slot);
                    copy_chunks(
                        cx,
                        (t, THREADS),
                        chunks,
                        (height, width, n, 1),
                        &|cx, r, c| {
                            let (inside, index) = at(cx, r, c);
                            (
                                Expr::Select(Box::new(inside), Box::new(int(n)), Box::new(int(0))),
                                index,
                            )
                        },
                    )
                }
            };
            (
                copy(cx, (qs + 1, k_tile), (rows, w.d), &queries),
                vec![
                    copy(cx, (ks + 1, k_tile), (keys, w.d), &k_rows),
                    copy(cx, (vs + 1, v_tile), (keys, w.dv), &v_rows),
                ],
            )
        };
        Nest {
            task,
            batch,
            t,
            j0,
            jk,
            jb,
            s_len,
            t_len,
            per_task,
            from,
            blocks,
            stage_q,
            stage_kv,
        }
    }

    /// Where a thread is.
    pub fn spot(&self) -> Spot {
        Spot {
            i0: self.task.i0,
            bt: self.task.bt,
            batch: self.batch.clone(),
            t: self.t,
            j0: self.j0,
        }
    }

    /// The first key of the task's first visited block of `keys` keys.
    pub fn first_key(&self, keys: i64) -> Expr {
        mul(self.from.map_or(int(0), var), int(keys))
    }

    /// Whether the task visits a key block at all.
    pub fn visits_any(&self) -> Expr {
        lt(int(0), self.blocks.clone())
    }

    /// Whether a key block follows this one in the task's visit.
    pub fn has_next(&self) -> Expr {
        lt(add(var(self.jb), int(1)), self.blocks.clone())
    }

    /// The kernel body: per task its setup and `start`, then per key block (`keys` keys)
    /// `j0` (and `jk`) set and `per_block`, then `end`.
    pub fn body(
        self,
        cx: &mut Ctx,
        out: &TensorType,
        keys: i64,
        [start, per_block, end]: [Vec<Stmt>; 3],
    ) -> Vec<Stmt> {
        let jb = self.jb;
        let block_at = self.from.map_or(var(jb), |f| add(var(f), var(jb)));
        let mut block = vec![
            Stmt::Set(self.j0, mul(block_at, int(keys))),
            Stmt::Set(self.jk, var(self.j0)),
        ];
        block.extend(per_block);
        let mut per_task = self.per_task;
        per_task.extend(start);
        per_task.push(serial(jb, self.blocks, block));
        per_task.extend(end);
        over_tasks(cx, out, &self.task, per_task)
    }
}

/// Where element `(r, c)` of a staged tile lies: whether inside the operand, and its index.
type Rows<'a> = &'a dyn Fn(&Ctx, Expr, Expr) -> (Expr, Expr);

/// A barrier of the block.
pub(super) fn barrier() -> Stmt {
    Stmt::Barrier(Scope::Block)
}

/// Where element `(r, c)` of a staged tile of rows is: row `r` is position `first + r` of
/// `len`, starting at the index `row` gives, its elements contiguous; rows past `len` are
/// outside.
fn tile_rows<'a>(
    first: Expr,
    len: &'a Expr,
    row: &'a dyn Fn(&Ctx, Expr) -> Expr,
) -> impl Fn(&Ctx, Expr, Expr) -> (Expr, Expr) + 'a {
    move |cx: &Ctx, r: Expr, c: Expr| {
        let pos = add(first.clone(), r);
        (lt(pos.clone(), len.clone()), add(row(cx, pos), c))
    }
}
