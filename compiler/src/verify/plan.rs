//! The plan verifier: a lowered plan against its kernels. For the top level (prepare steps,
//! then steps) and each layer kind, it checks:
//!
//! 1. **Buffers**: every buffer a step or binding names exists; an alias's target exists and
//!    the alias chain ends; `Slot` storage appears only in layer kinds.
//! 2. **Arguments**: a kernel step names an existing kernel and passes one buffer per kernel
//!    param but the status word, each of the param's element type (f32 for f32/f16/bf16, i64
//!    for integers); the kernel writes its first param only, and its last when that is an arena
//!    buffer it works in (a scratch buffer: the op's first kernel writes it before reading it,
//!    its later kernels read what the earlier ones left; not checked here). A call names an existing kind, and
//!    passes a buffer for each slot the kind has, of the slot's element type.
//! 3. **Definitions**: a step reads only buffers defined before it: inputs, weights, values the
//!    prepare steps computed, a kind's argument slots, or what an earlier step wrote.
//! 4. **Weights never written**: no step writes a bound weight, no step but a prepare step
//!    writes `Weight` storage, and a kind writes no slot but its result (slot 0).
//! 5. **Lifetimes**: where `plan_memory` gave an arena buffer a lifetime, every step that
//!    touches it lies inside it, so no step reads a buffer after its memory was reused; inputs
//!    live from the first step and outputs to the end.

use archc_kernels::ir::Kernel;
use archc_runtime::{root, Buffer, Plan, Step, Storage};

use super::Problem;
use crate::lower::{buffer_elem, elem};

/// The problems in `plan`, whose kernel steps run `kernels`.
pub fn verify(plan: &Plan, kernels: &[Kernel]) -> Vec<Problem> {
    let mut v = Frames {
        plan,
        kernels,
        problems: Vec::new(),
    };
    let top = Frame {
        name: "top level".into(),
        buffers: &plan.buffers,
        kind: false,
    };
    let bound: Vec<usize> = plan
        .inputs
        .iter()
        .chain(&plan.weights)
        .map(|b| b.buffer)
        .collect();
    for b in plan.inputs.iter().chain(&plan.weights).chain(&plan.outputs) {
        if b.buffer >= top.buffers.len() {
            v.report(
                &top.name,
                format!("`{}` is bound to missing buffer {}", b.name, b.buffer),
            );
        }
    }
    v.buffers(&top);
    let weights: Vec<usize> = plan.weights.iter().map(|b| b.buffer).collect();
    let mut defined = v.roots(&top, &bound);
    v.steps(&top, &plan.prepare, &mut defined, &weights, true);
    for (i, b) in top.buffers.iter().enumerate() {
        if b.storage == Storage::Weight {
            defined[i] = true;
        }
    }
    v.steps(&top, &plan.steps, &mut defined, &weights, false);
    let inputs: Vec<usize> = plan.inputs.iter().map(|b| b.buffer).collect();
    let outputs: Vec<usize> = plan.outputs.iter().map(|b| b.buffer).collect();
    v.lifetimes(&top, &plan.steps, &inputs, &outputs);
    for (k, kind) in plan.kinds.iter().enumerate() {
        let frame = Frame {
            name: format!("kind{k} ({})", kind.name),
            buffers: &kind.buffers,
            kind: true,
        };
        v.buffers(&frame);
        let args: Vec<usize> = (0..frame.buffers.len())
            .filter(|&b| matches!(frame.buffers[b].storage, Storage::Slot(s) if s > 0))
            .collect();
        let mut defined = v.roots(&frame, &args);
        v.steps(&frame, &kind.steps, &mut defined, &[], false);
        v.lifetimes(&frame, &kind.steps, &[], &[]);
    }
    v.problems
}

/// One frame: the top level or a layer kind.
struct Frame<'a> {
    name: String,
    buffers: &'a [Buffer],
    kind: bool,
}

impl Frame<'_> {
    /// The buffer whose memory `b` uses (None when `b` or an alias on the way is missing or
    /// the aliases loop).
    fn root(&self, mut b: usize) -> Option<usize> {
        for _ in 0..=self.buffers.len() {
            match self.buffers.get(b)?.storage {
                Storage::Alias(of) => b = of,
                _ => return Some(b),
            }
        }
        None
    }
}

struct Frames<'a> {
    plan: &'a Plan,
    kernels: &'a [Kernel],
    problems: Vec<Problem>,
}

impl Frames<'_> {
    fn report(&mut self, at: &str, what: String) {
        self.problems.push(Problem {
            at: at.to_string(),
            what,
        });
    }

    fn buffers(&mut self, f: &Frame) {
        for (i, b) in f.buffers.iter().enumerate() {
            match b.storage {
                _ if f.root(i).is_none() => {
                    self.report(&f.name, format!("buffer {i} `{}` aliases nothing", b.name))
                }
                Storage::Slot(_) if !f.kind => self.report(
                    &f.name,
                    format!("buffer {i} `{}` is a slot outside a layer kind", b.name),
                ),
                _ => {}
            }
        }
    }

    /// Which buffers are defined when `given` are.
    fn roots(&self, f: &Frame, given: &[usize]) -> Vec<bool> {
        let mut defined = vec![false; f.buffers.len()];
        for r in given.iter().filter_map(|b| f.root(*b)) {
            defined[r] = true;
        }
        defined
    }

    fn steps(
        &mut self,
        f: &Frame,
        steps: &[Step],
        defined: &mut [bool],
        weights: &[usize],
        prepare: bool,
    ) {
        let weights: Vec<Option<usize>> = weights.iter().map(|w| f.root(*w)).collect();
        for (i, s) in steps.iter().enumerate() {
            let at = format!("{} step {i}", f.name);
            let at = match s {
                Step::Kernel { origin, .. } if !origin.is_empty() => format!("{at} ({origin})"),
                _ => at,
            };
            // A step whose arguments are broken still defines its result, so that one broken
            // step is one error, not one more per later reader.
            let reads = if self.arguments(f, s, &at) {
                s.args()
            } else {
                &[]
            };
            for (j, &b) in reads.iter().enumerate().skip(1) {
                if self.scratch(s, j) {
                    continue;
                }
                if let Some(r) = f.root(b).filter(|r| !defined[*r]) {
                    self.report(
                        &at,
                        format!(
                            "argument {j} reads buffer {b} `{}` before it is written",
                            f.buffers[r].name
                        ),
                    );
                }
            }
            let Some(&out) = s.args().first() else {
                continue;
            };
            let Some(r) = f.root(out) else { continue };
            let written = &f.buffers[r];
            let bad = if weights.contains(&Some(r)) {
                Some("a weight")
            } else if written.storage == Storage::Weight && !prepare {
                Some("weight storage, outside the prepare steps")
            } else if matches!(written.storage, Storage::Slot(s) if s > 0) {
                Some("an argument slot of the layer")
            } else {
                None
            };
            if let Some(what) = bad {
                self.report(
                    &at,
                    format!("writes buffer {out} `{}`, {what}", written.name),
                );
            }
            defined[r] = true;
        }
    }

    /// Whether argument `j` of step `s` is its kernel's scratch buffer: a last param the kernel
    /// writes (the op's first kernel before it reads it; see the module doc).
    fn scratch(&self, s: &Step, j: usize) -> bool {
        let Step::Kernel { kernel, .. } = s else {
            return false;
        };
        j > 0
            && s.writes(j)
            && self
                .kernels
                .get(*kernel)
                .and_then(|k| k.params.get(j))
                .is_some_and(|p| p.output)
    }

    /// Checks a step's kernel or kind and its arguments' count and element types; false when
    /// they are too broken to look further.
    fn arguments(&mut self, f: &Frame, s: &Step, at: &str) -> bool {
        if let Some(b) = s.args().iter().find(|b| **b >= f.buffers.len()) {
            self.report(
                at,
                format!("names buffer {b}, but the frame has {}", f.buffers.len()),
            );
            return false;
        }
        let elem_of = |b: usize| buffer_elem(&f.buffers[root(f.buffers, b)]);
        match s {
            Step::Kernel { kernel, args, .. } => {
                let Some(k) = self
                    .plan
                    .kernels
                    .get(*kernel)
                    .and(self.kernels.get(*kernel))
                else {
                    self.report(
                        at,
                        format!("launches kernel {kernel}, which does not exist"),
                    );
                    return false;
                };
                if args.len() + 1 != k.params.len() {
                    self.report(
                        at,
                        format!(
                            "passes {} buffers to `{}`, which takes {} and the status word",
                            args.len(),
                            k.name,
                            k.params.len().saturating_sub(1)
                        ),
                    );
                    return false;
                }
                let arena = |b: usize| f.buffers[root(f.buffers, b)].storage == Storage::Arena;
                for (j, (&b, p)) in args.iter().zip(&k.params).enumerate() {
                    if elem_of(b) != p.elem {
                        self.report(
                            at,
                            format!(
                                "argument {j} is buffer {b} `{}` of {:?}, but `{}` takes {:?}",
                                f.buffers[b].name,
                                elem_of(b),
                                k.name,
                                p.elem
                            ),
                        );
                    }
                    if p.output != s.writes(j) || (j > 0 && p.output && !arena(b)) {
                        self.report(
                            at,
                            format!(
                                "kernel `{}` param {j} is{} an output: only the first is",
                                k.name,
                                if p.output { "" } else { " not" }
                            ),
                        );
                    }
                }
            }
            Step::Call { kind, args } => {
                let Some(k) = self.plan.kinds.get(*kind) else {
                    self.report(at, format!("calls kind{kind}, which does not exist"));
                    return false;
                };
                for b in &k.buffers {
                    let Storage::Slot(s) = b.storage else {
                        continue;
                    };
                    match args.get(s) {
                        None => self.report(
                            at,
                            format!("passes {} buffers, but kind{kind} has slot {s}", args.len()),
                        ),
                        Some(&a) if elem_of(a) != elem(b.dtype) => self.report(
                            at,
                            format!(
                                "slot {s} of kind{kind} is {:?}, but buffer {a} `{}` is {:?}",
                                elem(b.dtype),
                                f.buffers[a].name,
                                elem_of(a)
                            ),
                        ),
                        Some(_) => {}
                    }
                }
            }
        }
        true
    }

    /// Every step touching an arena buffer with a lifetime lies inside it.
    fn lifetimes(&mut self, f: &Frame, steps: &[Step], inputs: &[usize], outputs: &[usize]) {
        let live = |b: usize| f.root(b).and_then(|r| f.buffers[r].live.map(|l| (r, l)));
        for (i, s) in steps.iter().enumerate() {
            for &b in s.args() {
                if let Some((r, (first, last))) = live(b).filter(|(_, (a, z))| i < *a || i > *z) {
                    self.report(&format!("{} step {i}", f.name), format!("uses buffer {r} `{}` outside its lifetime (steps {first}..={last}): its memory may be another buffer's", f.buffers[r].name));
                }
            }
        }
        for (bs, want, what) in [
            (inputs, None, "input"),
            (outputs, Some(steps.len()), "output"),
        ] {
            for (r, (first, last)) in bs.iter().filter_map(|b| live(*b)) {
                let ok = match want {
                    None => first == 0,
                    Some(end) => last == end,
                };
                if !ok {
                    self.report(
                        &f.name,
                        format!(
                            "{what} buffer {r} `{}` lives only over steps {first}..={last}",
                            f.buffers[r].name
                        ),
                    );
                }
            }
        }
    }
}
