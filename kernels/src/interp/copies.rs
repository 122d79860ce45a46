//! The interpreter's asynchronous copies ([`Stmt::CopyAsync`], [`Stmt::AsyncWait`]) under the
//! GPU semantics: a copy reads its source when issued but its elements land only when the
//! issuing thread's wait completes its group, so a kernel that touches them earlier, from
//! any thread, is caught ([`KernelError::Async`]) instead of reading what happened to be
//! there. For the race checker the copy writes its destination both when it is issued (the
//! bytes may land at once) and when it lands, so a copy issued while other threads may still
//! read the old contents is a race too. Copies still in flight when a block ends are an error too: on a GPU they would land
//! in the block's next grid iteration. Without the GPU semantics (threads in order, one set
//! of locals) a copy lands at once and a wait does nothing.
//!
//! [`Stmt::CopyAsync`]: crate::ir::Stmt::CopyAsync
//! [`Stmt::AsyncWait`]: crate::ir::Stmt::AsyncWait

use std::collections::{HashMap, VecDeque};

use super::{i, KernelError, Machine};
use crate::ir::AsyncCopy;

/// One element a copy will write.
struct Landing {
    buf: usize,
    at: usize,
    x: f32,
}

/// One thread's copies in flight.
#[derive(Default)]
struct Groups {
    /// Issued since its last wait.
    open: Vec<Landing>,
    /// Closed by its waits, oldest first.
    closed: VecDeque<Vec<Landing>>,
}

/// The block's copies in flight.
#[derive(Default)]
pub(super) struct InFlight {
    by_thread: HashMap<i64, Groups>,
    /// Every element some copy will write, and the copying thread.
    landing: HashMap<(usize, usize), i64>,
}

impl Machine<'_> {
    /// Issues an asynchronous copy for the running thread (see the module doc).
    pub(super) fn copy_async(&mut self, c: &AsyncCopy) -> Result<(), KernelError> {
        let width = usize::from(c.width);
        let valid = i(&self.eval(&c.valid)?).clamp(0, width as i64) as usize;
        let k = i(&self.eval(&c.dst_at)?);
        self.bound(c.dst, k.saturating_add(width as i64 - 1))?;
        let dst = self.bound(c.dst, k)?;
        let mut xs = vec![0f32; width];
        if valid > 0 {
            let s = i(&self.eval(&c.src_at)?);
            if s.rem_euclid(width as i64) != 0 {
                return Err(self.async_error("reads from a misaligned element", c.src, s));
            }
            self.bound(c.src, s.saturating_add(valid as i64 - 1))?;
            let first = self.bound(c.src, s)?;
            for (e, x) in xs.iter_mut().take(valid).enumerate() {
                *x = self.bufs[c.src].float(first + e);
            }
        }
        if dst % width != 0 {
            return Err(self.async_error("writes to a misaligned element", c.dst, k));
        }
        if self.banks.is_none() {
            for (e, x) in xs.into_iter().enumerate() {
                self.bufs[c.dst].set_float(dst + e, x);
            }
            return Ok(());
        }
        // On a GPU the bytes may land at any time from now on: the issue is already a write,
        // as far as the other threads' unordered reads are concerned.
        self.touch(c.dst, dst, width, true)?;
        let t = self.thread;
        for (e, x) in xs.into_iter().enumerate() {
            let at = dst + e;
            if self.in_flight.landing.insert((c.dst, at), t).is_some() {
                return Err(self.async_error("lands where another is in flight", c.dst, at as i64));
            }
            let groups = self.in_flight.by_thread.entry(t).or_default();
            groups.open.push(Landing { buf: c.dst, at, x });
        }
        Ok(())
    }

    /// The running thread's wait: its open copies become a group, and its oldest groups land
    /// until at most `pending` are in flight.
    pub(super) fn async_wait(&mut self, pending: u8) -> Result<(), KernelError> {
        let Some(groups) = self.in_flight.by_thread.get_mut(&self.thread) else {
            return Ok(());
        };
        let open = std::mem::take(&mut groups.open);
        groups.closed.push_back(open);
        let mut landed = Vec::new();
        while groups.closed.len() > usize::from(pending) {
            landed.extend(groups.closed.pop_front().unwrap_or_default());
        }
        for l in landed {
            self.in_flight.landing.remove(&(l.buf, l.at));
            self.touch(l.buf, l.at, 1, true)?;
            self.bufs[l.buf].set_float(l.at, l.x);
        }
        Ok(())
    }

    /// Fails if a copy in flight will write one of elements `at..at + n` of `buf`.
    pub(super) fn not_landing(&self, buf: usize, at: usize, n: usize) -> Result<(), KernelError> {
        if self.in_flight.landing.is_empty() {
            return Ok(());
        }
        match (at..at + n).find(|&e| self.in_flight.landing.contains_key(&(buf, e))) {
            Some(e) => Err(self.async_error("has not landed where it is touched", buf, e as i64)),
            None => Ok(()),
        }
    }

    /// Fails if any copy or warpgroup product is still in flight (a block ends), else forgets
    /// the empty groups.
    pub(super) fn settled(&mut self) -> Result<(), KernelError> {
        if let Some(&(buf, at)) = self.in_flight.landing.keys().next() {
            return Err(self.async_error("is still in flight as its block ends", buf, at as i64));
        }
        self.in_flight.by_thread.clear();
        self.products_settled()
    }

    fn async_error(&self, why: &'static str, buffer: usize, index: i64) -> KernelError {
        KernelError::Async {
            kernel: self.kernel.name.clone(),
            why,
            buffer,
            index,
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::interp::{run_gpu, BufData, KernelError};
    use crate::ir::build::{add, axis, bin, load, mul, var};
    use crate::ir::{AsyncCopy, Axis, Bin, Elem, Expr, Kernel, Local, Param, Scope, Stmt, Var};

    /// One block of 32 threads: thread `t` copies `x[8t..8t + 8]` (as much of it as lies
    /// below `n`, zeros after) to `tile[8t..]` asynchronously and waits (unless `wait` is
    /// off); after a barrier, thread `t` writes its neighbour's eight to `out[8t..]`.
    fn neighbours(n: i64, src_shift: i64, wait: bool) -> Kernel {
        let [b, t, e, u] = [0, 1, 2, 3].map(Var);
        let int = Expr::Int;
        let at = mul(var(t), int(8));
        let copy = Stmt::CopyAsync(AsyncCopy {
            dst: 4,
            dst_at: at.clone(),
            src: 1,
            src_at: add(at.clone(), int(src_shift)),
            width: 8,
            valid: bin(Bin::Sub, int(n), at.clone()),
        });
        let mut issue = vec![copy];
        if wait {
            issue.push(Stmt::AsyncWait(0));
        }
        let next = mul(bin(Bin::Rem, add(var(u), int(1)), int(32)), int(8));
        let read = vec![
            Stmt::Set(u, var(t)),
            axis(
                Axis::Unroll,
                e,
                int(8),
                vec![Stmt::Store(0, add(at, var(e)), load(4, add(next, var(e))))],
            ),
        ];
        let param = |name: &str, elem, output| Param {
            name: name.into(),
            elem,
            output,
        };
        Kernel {
            name: "copies".into(),
            params: vec![
                param("out", Elem::F32, true),
                param("x", Elem::BF16, false),
                param("status", Elem::I64, true),
            ],
            locals: vec![Local {
                name: "unused".into(),
                elem: Elem::F32,
                len: 1,
            }],
            shared: vec![Local {
                name: "tile".into(),
                elem: Elem::BF16,
                len: 256,
            }],
            body: vec![axis(
                Axis::Grid,
                b,
                int(1),
                vec![
                    axis(Axis::Thread, t, int(32), issue),
                    Stmt::Barrier(Scope::Block),
                    axis(Axis::Thread, t, int(32), read),
                ],
            )],
            occupancy: None,
        }
    }

    /// As [`neighbours`], the reads first and the copies after them with no barrier between:
    /// thread `t` reads what thread `t + 1` then copies over.
    fn reads_then_copies() -> Kernel {
        let mut k = neighbours(250, 0, true);
        if let Stmt::For { body, .. } = &mut k.body[0] {
            let read = body.remove(2);
            body.remove(1);
            body.insert(0, read);
        }
        k
    }

    fn run(k: &Kernel) -> Result<Vec<f32>, KernelError> {
        let x = (0..256).map(|v| half::bf16::from_f32(v as f32).to_bits());
        let mut bufs = vec![
            BufData::zeros(Elem::F32, 256),
            BufData::BF16(x.collect()),
            BufData::zeros(Elem::I64, 1),
        ];
        run_gpu(k, &mut bufs, &[])?;
        let BufData::F32(out) = &bufs[0] else {
            panic!("f32 output")
        };
        Ok(out.clone())
    }

    #[test]
    fn copies_land_at_the_wait_with_zeros_past_the_valid() {
        let k = neighbours(250, 0, true);
        assert!(crate::verify::verify_kernel(&k, 0).is_empty());
        let out = run(&k).expect("runs");
        for t in 0..32 {
            for e in 0..8 {
                let v = (t + 1) % 32 * 8 + e;
                let want = if v < 250 { v as f32 } else { 0.0 };
                assert_eq!(out[8 * t + e], want, "thread {t} element {e}");
            }
        }
    }

    #[test]
    fn touching_a_copy_before_its_wait_or_from_a_misaligned_element_fails() {
        let why = |k: &Kernel| match run(k) {
            Err(KernelError::Async { why, .. }) => why,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            why(&neighbours(250, 0, false)),
            "has not landed where it is touched"
        );
        assert_eq!(
            why(&neighbours(250, 4, true)),
            "reads from a misaligned element"
        );
    }

    #[test]
    fn a_copy_issued_over_unordered_reads_races() {
        // A copy may land as soon as it is issued.
        let raced = run(&reads_then_copies());
        assert!(matches!(raced, Err(KernelError::Race { .. })), "{raced:?}");
    }
}
