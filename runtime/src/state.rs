//! The State of a generation: what a model's derived step keeps between steps (KV caches,
//! convolution windows, scan carries), one tensor per part, as the compiler listed them.
//!
//! The prefill's outputs start it; each step reads it as inputs and its outputs update it: a
//! cache part's new positions are appended along its stream axis (up to the capacity, the
//! longest context), every other part is replaced. A State can be snapshotted and restored,
//! since an SSM's carry cannot be cropped back to an earlier position.

use std::collections::HashMap;

use thiserror::Error;

use crate::{Data, Tensor};

/// How one part is updated by a step's output.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Update {
    /// Appended along this axis (a cache: one entry per position so far).
    Append(usize),
    /// Replaced (a fixed-size state).
    Replace,
}

/// One part's name and update.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PartLayout {
    /// The input and output name of the part in the derived graphs.
    pub name: String,
    /// How it changes.
    pub update: Update,
}

/// Why a State cannot take a step's outputs.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum StateError {
    /// An output the State needs is missing.
    #[error("the step did not output the state part `{0}`")]
    Missing(String),
    /// A cache would hold more positions than the capacity.
    #[error("the context would reach {needed} positions, past --max-context {capacity}")]
    Full {
        /// The positions the context would hold.
        needed: usize,
        /// The most it may hold.
        capacity: usize,
    },
    /// A step's output does not fit the part's tensor.
    #[error("the state part `{name}` cannot take a {got:?} after a {had:?}")]
    Shape {
        /// The part.
        name: String,
        /// Its shape.
        had: Vec<usize>,
        /// The output's shape.
        got: Vec<usize>,
    },
}

/// The State of one generation.
#[derive(Clone, Debug)]
pub struct State {
    layout: Vec<PartLayout>,
    tensors: Vec<Option<Tensor>>,
    /// Positions so far.
    context: usize,
    /// The most positions the context may hold.
    capacity: usize,
}

impl State {
    /// An empty State for these parts, holding at most `capacity` positions.
    pub fn new(layout: Vec<PartLayout>, capacity: usize) -> State {
        let tensors = vec![None; layout.len()];
        State {
            layout,
            tensors,
            context: 0,
            capacity,
        }
    }

    /// Positions the State holds.
    pub fn context(&self) -> usize {
        self.context
    }

    /// Takes the parts out of a prefill's or step's `outputs`, which covered `new` positions.
    pub fn absorb(
        &mut self,
        outputs: &mut HashMap<String, Tensor>,
        new: usize,
    ) -> Result<(), StateError> {
        let needed = self.context + new;
        if needed > self.capacity {
            return Err(StateError::Full {
                needed,
                capacity: self.capacity,
            });
        }
        for (part, slot) in self.layout.iter().zip(&mut self.tensors) {
            let mut t = outputs
                .remove(&part.name)
                .ok_or_else(|| StateError::Missing(part.name.clone()))?;
            match (&part.update, slot) {
                (Update::Append(axis), Some(old)) => append(&part.name, old, t, *axis)?,
                // A fixed-size part keeps its storage: its values are replaced in place.
                (Update::Replace, Some(old)) if old.shape == t.shape && old.dtype == t.dtype => {
                    old.data.clone_from(&t.data);
                }
                (update, slot) => {
                    if let Update::Append(axis) = update {
                        reserve(&mut t, *axis, self.capacity);
                    }
                    *slot = Some(t);
                }
            }
        }
        self.context = needed;
        Ok(())
    }

    /// The parts as a step's inputs (none before the prefill).
    pub fn inputs(&self) -> impl Iterator<Item = (&str, &Tensor)> {
        self.layout
            .iter()
            .zip(&self.tensors)
            .filter_map(|(p, t)| Some((p.name.as_str(), t.as_ref()?)))
    }

    /// Moves the parts into `inputs` for a step to read (in place: the executor reads an
    /// input's storage where it is), until [`State::take_back`] returns them.
    pub fn lend(&mut self, inputs: &mut HashMap<String, Tensor>) {
        for (p, t) in self.layout.iter().zip(&mut self.tensors) {
            if let Some(t) = t.take() {
                inputs.insert(p.name.clone(), t);
            }
        }
    }

    /// Takes back the parts [`State::lend`] moved into `inputs`.
    pub fn take_back(&mut self, inputs: &mut HashMap<String, Tensor>) {
        for (p, t) in self.layout.iter().zip(&mut self.tensors) {
            if let Some(back) = inputs.remove(&p.name) {
                *t = Some(back);
            }
        }
    }

    /// Each part's name and bytes now.
    pub fn bytes(&self) -> Vec<(&str, usize)> {
        self.layout
            .iter()
            .zip(&self.tensors)
            .map(|(p, t)| {
                let bytes = t.as_ref().map_or(0, |t| t.numel() * t.dtype.size_bytes());
                (p.name.as_str(), bytes)
            })
            .collect()
    }

    /// How each part changes, in order.
    pub fn updates(&self) -> impl Iterator<Item = &Update> {
        self.layout.iter().map(|p| &p.update)
    }

    /// A copy to restore later.
    pub fn snapshot(&self) -> State {
        self.clone()
    }

    /// The States of several generations as one batch: each part's tensors stacked along
    /// their first axis (which must be the batch, one row each or more), in order. They must
    /// hold the same parts over the same number of positions.
    pub fn stack(states: &[State]) -> Result<State, StateError> {
        let Some(first) = states.first() else {
            return Err(StateError::Missing("the States to stack".into()));
        };
        let mut out = first.clone();
        for (i, part) in first.layout.iter().enumerate() {
            let mismatch = |had: &Tensor, got: &Tensor| StateError::Shape {
                name: part.name.clone(),
                had: had.shape.clone(),
                got: got.shape.clone(),
            };
            for other in &states[1..] {
                let same = other.layout == first.layout && other.context == first.context;
                let (Some(t), Some(Some(o))) = (out.tensors[i].as_mut(), other.tensors.get(i))
                else {
                    return Err(StateError::Missing(part.name.clone()));
                };
                let fits = same
                    && t.shape.len() == o.shape.len()
                    && t.shape.get(1..) == o.shape.get(1..)
                    && t.dtype == o.dtype;
                if !fits {
                    return Err(mismatch(t, o));
                }
                match (&mut t.data, &o.data) {
                    (Data::F32(x), Data::F32(y)) => x.extend_from_slice(y),
                    (Data::I64(x), Data::I64(y)) => x.extend_from_slice(y),
                    (Data::Bool(x), Data::Bool(y)) => x.extend_from_slice(y),
                    _ => return Err(mismatch(t, o)),
                }
                t.shape[0] += o.shape[0];
            }
            if let (Update::Append(axis), Some(t)) = (&part.update, out.tensors[i].as_mut()) {
                reserve(t, *axis, out.capacity);
            }
        }
        Ok(out)
    }

    /// Goes back to a snapshot of the same layout, into the storage it has (which keeps its
    /// reserved room).
    pub fn restore(&mut self, snapshot: &State) {
        self.context = snapshot.context;
        self.capacity = snapshot.capacity;
        for (mine, theirs) in self.tensors.iter_mut().zip(&snapshot.tensors) {
            match (mine.as_mut(), theirs) {
                (Some(m), Some(t)) => {
                    m.shape.clone_from(&t.shape);
                    m.data.clone_from(&t.data);
                }
                (_, t) => mine.clone_from(t),
            }
        }
    }
}

/// Appends `new` to `old` along `axis`, in `old`'s storage: its rows move apart in place
/// (from the last, so none is overwritten before it moved), and the storage, reserved for the
/// capacity when the part began, does not move.
fn append(name: &str, old: &mut Tensor, new: Tensor, axis: usize) -> Result<(), StateError> {
    let fits = old.shape.len() == new.shape.len()
        && axis < old.shape.len()
        && old
            .shape
            .iter()
            .zip(&new.shape)
            .enumerate()
            .all(|(i, (a, b))| i == axis || a == b)
        && old.dtype == new.dtype;
    let mismatch = |old: &Tensor, new: &Tensor| StateError::Shape {
        name: name.to_string(),
        had: old.shape.clone(),
        got: new.shape.clone(),
    };
    if !fits {
        return Err(mismatch(old, &new));
    }
    // Rows of the axis and everything after it, per index of the axes before it.
    let inner: usize = old.shape[axis + 1..].iter().product();
    let outer: usize = old.shape[..axis].iter().product();
    let (a, b) = (old.shape[axis] * inner, new.shape[axis] * inner);
    match (&mut old.data, &new.data) {
        (Data::F32(x), Data::F32(y)) => interleave(x, y, outer, a, b),
        (Data::I64(x), Data::I64(y)) => interleave(x, y, outer, a, b),
        (Data::Bool(x), Data::Bool(y)) => interleave(x, y, outer, a, b),
        _ => return Err(mismatch(old, &new)),
    }
    old.shape[axis] += new.shape[axis];
    Ok(())
}

/// `x` (`outer` runs of `a`) becomes `outer` runs of `a + b`: each run of `x`, then the
/// matching run of `y`.
fn interleave<T: Copy + Default>(x: &mut Vec<T>, y: &[T], outer: usize, a: usize, b: usize) {
    x.resize(outer * (a + b), T::default());
    for o in (0..outer).rev() {
        x.copy_within(o * a..(o + 1) * a, o * (a + b));
        x[o * (a + b) + a..(o + 1) * (a + b)].copy_from_slice(&y[o * b..(o + 1) * b]);
    }
}

/// Reserves room for `capacity` positions along `axis` in a new cache part, so that its
/// appends never move it.
fn reserve(t: &mut Tensor, axis: usize, capacity: usize) {
    let now = t.shape.get(axis).copied().unwrap_or(0);
    let per = t.numel().checked_div(now).unwrap_or(0);
    let more = per.saturating_mul(capacity.saturating_sub(now));
    match &mut t.data {
        Data::F32(v) => v.reserve_exact(more),
        Data::I64(v) => v.reserve_exact(more),
        Data::Bool(v) => v.reserve_exact(more),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache(capacity: usize) -> State {
        let layout = vec![
            PartLayout {
                name: "k".into(),
                update: Update::Append(1),
            },
            PartLayout {
                name: "h".into(),
                update: Update::Replace,
            },
        ];
        State::new(layout, capacity)
    }

    fn outputs(k: Vec<f32>, t: usize, h: f32) -> HashMap<String, Tensor> {
        HashMap::from([
            ("k".to_string(), Tensor::f32(vec![2, t], k)),
            ("h".to_string(), Tensor::f32(vec![1], vec![h])),
        ])
    }

    #[test]
    fn caches_append_along_their_axis_and_the_rest_is_replaced() {
        let mut s = cache(8);
        s.absorb(&mut outputs(vec![1.0, 2.0, 5.0, 6.0], 2, 0.5), 2)
            .expect("prefill");
        let snap = s.snapshot();
        s.absorb(&mut outputs(vec![3.0, 7.0], 1, 0.25), 1)
            .expect("step");
        let got: HashMap<&str, &Tensor> = s.inputs().collect();
        assert_eq!(got["k"].to_f32(), [1.0, 2.0, 3.0, 5.0, 6.0, 7.0]);
        assert_eq!(got["k"].shape, [2, 3]);
        assert_eq!(got["h"].to_f32(), [0.25]);
        assert_eq!(s.context(), 3);
        assert_eq!(s.bytes(), [("k", 24), ("h", 4)]);
        s.restore(&snap);
        assert_eq!(s.context(), 2);
        assert_eq!(s.inputs().count(), 2);
    }

    #[test]
    fn caches_grow_in_their_reserved_storage() {
        let mut s = cache(8);
        s.absorb(&mut outputs(vec![1.0, 2.0, 5.0, 6.0], 2, 0.5), 2)
            .expect("prefill");
        let at = |s: &State| match &s.tensors[0].as_ref().map(|t| &t.data) {
            Some(Data::F32(v)) => (v.as_ptr(), v.capacity()),
            _ => (std::ptr::null(), 0),
        };
        let (first, room) = at(&s);
        assert!(room >= 16, "room for 8 positions of 2 rows");
        for step in 0..6 {
            let x = step as f32;
            s.absorb(&mut outputs(vec![x, -x], 1, x), 1).expect("step");
            assert_eq!(at(&s).0, first, "step {step} moved the cache");
        }
        let mut inputs = HashMap::new();
        s.lend(&mut inputs);
        assert_eq!(s.inputs().count(), 0);
        assert_eq!(inputs["k"].shape, [2, 8]);
        s.take_back(&mut inputs);
        assert_eq!(at(&s).0, first);
        let wrong = Tensor::f32(vec![3, 1], vec![0.0; 3]);
        let mut t = Tensor::f32(vec![2, 1], vec![0.0; 2]);
        assert!(append("k", &mut t, wrong, 1).is_err());
    }

    #[test]
    fn states_stack_along_the_batch() {
        let row = |k: [f32; 2], h: f32, t: usize| {
            let mut s = cache(8);
            let mut out = HashMap::from([
                ("k".to_string(), Tensor::f32(vec![1, t], k[..t].to_vec())),
                ("h".to_string(), Tensor::f32(vec![1, 1], vec![h])),
            ]);
            s.absorb(&mut out, t).expect("prefill");
            s
        };
        let mut s = State::stack(&[row([1.0, 2.0], 0.5, 2), row([3.0, 4.0], 0.25, 2)])
            .expect("two rows of two positions");
        let mut step = HashMap::from([
            ("k".to_string(), Tensor::f32(vec![2, 1], vec![5.0, 6.0])),
            ("h".to_string(), Tensor::f32(vec![2, 1], vec![0.0, 1.0])),
        ]);
        s.absorb(&mut step, 1).expect("a step of both rows");
        let got: HashMap<&str, &Tensor> = s.inputs().collect();
        assert_eq!(got["k"].to_f32(), [1.0, 2.0, 5.0, 3.0, 4.0, 6.0]);
        assert_eq!(got["h"].shape, [2, 1]);
        assert_eq!(s.context(), 3);
        let uneven = State::stack(&[row([1.0, 2.0], 0.5, 2), row([3.0, 0.0], 0.25, 1)]);
        assert!(matches!(uneven, Err(StateError::Shape { .. })));
        assert!(State::stack(&[]).is_err());
    }

    #[test]
    fn a_full_state_and_a_missing_part_are_errors() {
        let mut s = cache(2);
        let err = s.absorb(&mut outputs(vec![0.0; 6], 3, 0.0), 3);
        assert_eq!(
            err,
            Err(StateError::Full {
                needed: 3,
                capacity: 2
            })
        );
        let mut only_k = outputs(vec![0.0; 2], 1, 0.0);
        only_k.remove("h");
        assert_eq!(
            s.absorb(&mut only_k, 1),
            Err(StateError::Missing("h".into()))
        );
    }
}
