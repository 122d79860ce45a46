//! Which weight buffers of two plans of one model hold the same values, so that their
//! executors can share them (a generation's prefill and step, which pack the same weights).
//!
//! A buffer's *recipe* says how it is made: a loaded weight by its checkpoint name and type, a
//! prepared one by the prepare kernel that writes it (compared as Kernel IR, names aside) and
//! the recipes of what that kernel reads. Equal recipes give equal values: kernels are
//! deterministic, and both plans load the same checkpoint.

use std::collections::HashMap;

use archc_kernels::ir::Kernel;
use archc_runtime::{Plan, Storage};

use super::Lowered;

/// How a top-level weight buffer is made.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Recipe {
    /// Loaded from the checkpoint: its name, and its dtype, shape and block format (a weight
    /// may be loaded twice: in ggml's blocks for a gather, in groups of rows for matmuls).
    Loaded(String, String),
    /// Written by one prepare step: the kernel (its names cleared) and its inputs' recipes.
    Prepared(Box<Kernel>, Vec<Recipe>),
}

/// Pairs (buffer of `b`, buffer of `a`) of top-level weight buffers with the same recipe.
pub fn same_weights(a: &Lowered, b: &Lowered) -> Vec<(usize, usize)> {
    let of_a: HashMap<Recipe, usize> = recipes(a)
        .into_iter()
        .map(|(buffer, r)| (r, buffer))
        .collect();
    let mut pairs: Vec<(usize, usize)> = recipes(b)
        .into_iter()
        .filter_map(|(buffer, r)| Some((buffer, *of_a.get(&r)?)))
        .collect();
    pairs.sort_unstable();
    pairs
}

/// The recipe of every top-level weight buffer (by root) that has one: buffers written by
/// several prepare steps, or read before they are written, have none.
fn recipes(l: &Lowered) -> HashMap<usize, Recipe> {
    let plan = &l.plan;
    let mut out: HashMap<usize, Recipe> = HashMap::new();
    for w in &plan.weights {
        let b = &plan.buffers[plan.root(w.buffer)];
        let ty = format!("{}{:?}{:?}", b.dtype, b.shape, b.blocks);
        out.insert(plan.root(w.buffer), Recipe::Loaded(w.name.clone(), ty));
    }
    let mut writes: HashMap<usize, usize> = HashMap::new();
    for s in &plan.prepare {
        if let Some(&o) = s.args().first() {
            *writes.entry(plan.root(o)).or_default() += 1;
        }
    }
    for s in &plan.prepare {
        let archc_runtime::Step::Kernel { kernel, args, .. } = s else {
            continue;
        };
        let Some((&o, inputs)) = args.split_first() else {
            continue;
        };
        let o = plan.root(o);
        if writes.get(&o) != Some(&1) || !is_weight(plan, o) {
            continue;
        }
        let inputs: Option<Vec<Recipe>> = inputs
            .iter()
            .map(|&i| out.get(&plan.root(i)).cloned())
            .collect();
        let (Some(inputs), Some(k)) = (inputs, l.kernels.get(*kernel)) else {
            continue;
        };
        // Names are for dumps (the kernel's and its parameters', from graph nodes, which
        // the two plans number differently); the code is what computes the values.
        let mut k = k.clone();
        k.name.clear();
        for p in &mut k.params {
            p.name.clear();
        }
        out.insert(o, Recipe::Prepared(Box::new(k), inputs));
    }
    out
}

fn is_weight(plan: &Plan, b: usize) -> bool {
    matches!(plan.buffers[b].storage, Storage::Weight)
}
