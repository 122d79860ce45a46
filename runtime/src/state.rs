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
            let t = outputs
                .remove(&part.name)
                .ok_or_else(|| StateError::Missing(part.name.clone()))?;
            *slot = Some(match (&part.update, slot.take()) {
                (Update::Append(axis), Some(old)) => append(&part.name, old, t, *axis)?,
                (_, _) => t,
            });
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

    /// Goes back to a snapshot of the same layout.
    pub fn restore(&mut self, snapshot: &State) {
        self.clone_from(snapshot);
    }
}

/// `new` after `old` along `axis`.
fn append(name: &str, old: Tensor, new: Tensor, axis: usize) -> Result<Tensor, StateError> {
    let fits = old.shape.len() == new.shape.len()
        && axis < old.shape.len()
        && old
            .shape
            .iter()
            .zip(&new.shape)
            .enumerate()
            .all(|(i, (a, b))| i == axis || a == b)
        && old.dtype == new.dtype;
    if !fits {
        return Err(StateError::Shape {
            name: name.to_string(),
            had: old.shape,
            got: new.shape,
        });
    }
    // Rows of the axis and everything after it, per index of the axes before it.
    let inner: usize = old.shape[axis + 1..].iter().product();
    let outer: usize = old.shape[..axis].iter().product();
    let (a, b) = (old.shape[axis] * inner, new.shape[axis] * inner);
    let mut shape = old.shape.clone();
    shape[axis] += new.shape[axis];
    fn join<T: Copy>(x: &[T], y: &[T], outer: usize, a: usize, b: usize) -> Vec<T> {
        let mut out = Vec::with_capacity(outer * (a + b));
        for o in 0..outer {
            out.extend_from_slice(&x[o * a..(o + 1) * a]);
            out.extend_from_slice(&y[o * b..(o + 1) * b]);
        }
        out
    }
    if outer == 1 {
        // The stream axis is the outermost that is not 1 (one row's cache): appending extends
        // the storage, in amortized time of the new part.
        let mut old = old;
        old.shape = shape;
        match (&mut old.data, new.data) {
            (Data::F32(x), Data::F32(y)) => x.extend(y),
            (Data::I64(x), Data::I64(y)) => x.extend(y),
            (Data::Bool(x), Data::Bool(y)) => x.extend(y),
            _ => {
                return Err(StateError::Shape {
                    name: name.to_string(),
                    had: old.shape,
                    got: new.shape,
                })
            }
        }
        return Ok(old);
    }
    let data = match (&old.data, &new.data) {
        (Data::F32(x), Data::F32(y)) => Data::F32(join(x, y, outer, a, b)),
        (Data::I64(x), Data::I64(y)) => Data::I64(join(x, y, outer, a, b)),
        (Data::Bool(x), Data::Bool(y)) => Data::Bool(join(x, y, outer, a, b)),
        _ => {
            return Err(StateError::Shape {
                name: name.to_string(),
                had: old.shape,
                got: new.shape,
            })
        }
    };
    Ok(Tensor {
        dtype: old.dtype,
        shape,
        data,
    })
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
    fn one_rows_cache_grows_in_place() {
        let old = Tensor::f32(vec![1, 2, 2], vec![1.0, 2.0, 3.0, 4.0]);
        let new = Tensor::f32(vec![1, 1, 2], vec![5.0, 6.0]);
        let both = append("k", old, new, 1).expect("fits");
        assert_eq!(both.shape, [1, 3, 2]);
        assert_eq!(both.to_f32(), [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        let wrong = Tensor::f32(vec![1, 1, 3], vec![0.0; 3]);
        assert!(append("k", both, wrong, 1).is_err());
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
