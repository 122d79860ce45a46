//! The derivation: what each value must cover (backwards from the output), then the graph
//! that computes exactly that (forwards).

use std::collections::HashMap;

use archc_runtime::DType;
use indexmap::IndexMap;
use petgraph::graph::NodeIndex;

use super::axes::{bit, operand_masks, Mask, Stream};
use super::index_bounds::{bounds, Bound};
use super::{Derived, PartKind, Phase, StatePart, StepError};
use crate::graph::{infer, BinaryOp, Dim, Graph, Ieee64, Node, Op, TensorType};

/// How node `v` is computed over a mask.
#[derive(Clone, Debug)]
enum Rule {
    /// The op itself, on its operands over these masks.
    Same(Vec<Mask>),
    /// The history from the State, then the new positions: `concat(state, new)` along `axis`.
    Cache { axis: usize },
    /// A pad before the new positions along `axis`: the last inputs from the State instead.
    Window { axis: usize },
    /// A scan along `axis` that starts from the State's carry.
    Carry { axis: usize, masks: Vec<Mask> },
    /// `iota(seq)` at the new positions: shifted by `past`.
    Position,
    /// A gather of windows from a [`Rule::Window`] value: indices relative to its first row.
    Windowed(Vec<Mask>),
}

/// Derives the prefill or step graph of model `g` for token input `input` and output
/// `output` (see the module doc).
pub fn derive(g: &Graph, input: &str, output: &str, phase: Phase) -> Result<Derived, StepError> {
    let &tokens = g
        .inputs
        .get(input)
        .ok_or_else(|| StepError::NoInput(input.to_string()))?;
    let &out = g
        .outputs
        .get(output)
        .ok_or_else(|| StepError::NoOutput(output.to_string()))?;
    let symbol = g
        .ty(tokens)
        .shape
        .get(1)
        .and_then(|d| d.as_symbol())
        .ok_or_else(|| StepError::unsupported(g, tokens, "not a [batch, seq] token input"))?
        .to_string();
    let stream = Stream {
        symbol,
        past: match phase {
            Phase::Prefill => Dim::constant(0),
            Phase::Step => Dim::symbol(PAST),
        },
    };
    let mut d = Deriver {
        g,
        stream,
        phase,
        tokens: reaches(g, tokens),
        rules: HashMap::new(),
        demands: vec![Vec::new(); g.dag.node_count()],
        built: HashMap::new(),
        new: Graph {
            name: g.name.clone(),
            ..Graph::default()
        },
        parts: Vec::new(),
        state_outputs: IndexMap::new(),
        names: HashMap::new(),
    };
    d.demand(out)?;
    d.build()?;
    let mut graph = d.new;
    let root = d.built[&(out.index(), 0)];
    graph.outputs.insert(output.to_string(), root);
    graph.outputs.extend(d.state_outputs);
    graph.symbols = g.symbols.clone();
    if phase == Phase::Step {
        graph.symbols.push(PAST.to_string());
    }
    graph.dim_checks = full_checks(g, &d.stream);
    Ok(Derived {
        graph,
        parts: d.parts,
    })
}

/// The symbol of the number of positions before the step's.
pub const PAST: &str = "past";

/// Conditions on the dims hold for the whole context, not just the new positions (a learned
/// position table bounds `past + seq`).
fn full_checks(g: &Graph, stream: &Stream) -> Vec<archc_runtime::DimCheck> {
    g.dim_checks
        .iter()
        .map(|c| {
            let mut c = c.clone();
            if let Some(d) = stream.full(&c.dim) {
                c.dim = d;
            }
            c
        })
        .collect()
}

/// Which nodes the token input reaches.
fn reaches(g: &Graph, tokens: NodeIndex) -> Vec<bool> {
    let mut r = vec![false; g.dag.node_count()];
    r[tokens.index()] = true;
    for v in g.dag.node_indices() {
        if g.operands(v).iter().any(|o| r[o.index()]) {
            r[v.index()] = true;
        }
    }
    r
}

struct Deriver<'g> {
    g: &'g Graph,
    stream: Stream,
    phase: Phase,
    /// Which nodes depend on the tokens.
    tokens: Vec<bool>,
    rules: HashMap<(usize, Mask), Rule>,
    /// The masks each node is needed over.
    demands: Vec<Vec<Mask>>,
    built: HashMap<(usize, Mask), NodeIndex>,
    new: Graph,
    parts: Vec<StatePart>,
    state_outputs: IndexMap<String, NodeIndex>,
    /// Parts per scope and kind, for their names.
    names: HashMap<String, usize>,
}

impl Deriver<'_> {
    /// Backwards from `out`: the masks each node is needed over. Operands come before their
    /// users, so a node's demands are all known when the walk reaches it.
    fn demand(&mut self, out: NodeIndex) -> Result<(), StepError> {
        self.demands[out.index()].push(0);
        for v in self.g.dag.node_indices().rev() {
            let mut i = 0;
            while let Some(&mask) = self.demands[v.index()].get(i) {
                let rule = self.rule(v, mask)?;
                for (o, m) in self.needs(v, &rule)? {
                    let m = m & self.stream.axes(self.g, o);
                    if !self.demands[o.index()].contains(&m) {
                        self.demands[o.index()].push(m);
                    }
                }
                self.rules.insert((v.index(), mask), rule);
                i += 1;
            }
        }
        Ok(())
    }

    /// What `rule` for `v` reads: (node, mask) pairs.
    fn needs(&self, v: NodeIndex, rule: &Rule) -> Result<Vec<(NodeIndex, Mask)>, StepError> {
        let ops = self.g.operands(v);
        Ok(match rule {
            Rule::Same(masks) | Rule::Carry { masks, .. } | Rule::Windowed(masks) => {
                ops.into_iter().zip(masks.iter().copied()).collect()
            }
            Rule::Cache { .. } => vec![(v, 0)],
            Rule::Window { axis } => {
                let m = operand_masks(self.g, &self.stream, v, 0)?;
                ops.into_iter()
                    .zip(m)
                    .map(|(o, m)| (o, m & !bit(*axis)))
                    .collect()
            }
            Rule::Position => Vec::new(),
        })
    }

    /// How `v` is computed over `mask`.
    fn rule(&self, v: NodeIndex, mask: Mask) -> Result<Rule, StepError> {
        let g = self.g;
        let node = &g.dag[v];
        let axes = self.stream.axes(g, v);
        let view = matches!(node.op, Op::Reshape | Op::Permute(_));
        // A value of the tokens over the whole context (one value per position): its history
        // is kept. Values with several stream axes (attention's scores) are computed from
        // their operands: new queries against the keys' history.
        if mask != 0 && self.tokens[v.index()] && !view && axes.count_ones() == 1 {
            if self.stream_axis_len(v) != Some(true) {
                return Err(StepError::unsupported(
                    g,
                    v,
                    "read over the whole context along an axis longer or shorter than `seq`",
                ));
            }
            return Ok(Rule::Cache {
                axis: axes.trailing_zeros() as usize,
            });
        }
        let along = |axis: usize| self.stream.on(&g.ty(g.operands(v)[0]).shape[axis]);
        Ok(match &node.op {
            Op::Iota if axes != 0 => {
                if self.stream_axis_len(v) != Some(true) {
                    return Err(StepError::unsupported(g, v, "an iota not along `seq`"));
                }
                if mask == 0 {
                    Rule::Position
                } else {
                    Rule::Same(Vec::new())
                }
            }
            Op::Size(d) if self.stream.on(d) => {
                return Err(StepError::unsupported(
                    g,
                    v,
                    "the stream's length as a value",
                ))
            }
            Op::Pad {
                axis,
                before,
                after,
                ..
            } if along(*axis) && mask & bit(*axis) == 0 => {
                if *after != 0 || *before <= 0 {
                    return Err(StepError::unsupported(
                        g,
                        v,
                        "a pad after the stream's positions",
                    ));
                }
                Rule::Window { axis: *axis }
            }
            Op::Slice { axis, .. } | Op::Concat { axis } | Op::Flip { axis }
                if along(*axis) && mask & bit(*axis) == 0 =>
            {
                return Err(StepError::unsupported(
                    g,
                    v,
                    "a shift of the stream's positions",
                ))
            }
            Op::Scan { axis } if along(*axis) && mask & bit(*axis) == 0 => Rule::Carry {
                axis: *axis,
                masks: operand_masks(g, &self.stream, v, mask)?,
            },
            Op::Gather { axis } if along(*axis) => {
                let mut masks = operand_masks(g, &self.stream, v, mask)?;
                if self.windowable(v, *axis, mask) {
                    masks[0] &= !bit(*axis);
                    Rule::Windowed(masks)
                } else {
                    Rule::Same(masks)
                }
            }
            _ => Rule::Same(operand_masks(g, &self.stream, v, mask)?),
        })
    }

    /// Whether node `v`'s single stream axis has exactly the stream's length (`seq`).
    fn stream_axis_len(&self, v: NodeIndex) -> Option<bool> {
        let shape = &self.g.ty(v).shape;
        let d = shape.iter().find(|d| self.stream.on(d))?;
        Some(d.as_symbol() == Some(self.stream.symbol.as_str()))
    }

    /// Whether gather `v` along stream `axis` reads only a window that a pad before the new
    /// positions provides: indices within `position ..= position + before`, at new positions.
    fn windowable(&self, v: NodeIndex, axis: usize, mask: Mask) -> bool {
        let g = self.g;
        let ops = g.operands(v);
        let (Some(&x), Some(&idx)) = (ops.first(), ops.get(1)) else {
            return false;
        };
        let before = match g.dag[x].op {
            Op::Pad {
                axis: a,
                before,
                after: 0,
                ..
            } if a == axis && before > 0 => before,
            _ => return false,
        };
        let at_new = (0..g.ty(idx).rank()).all(|j| mask & bit(j) == 0);
        at_new
            && matches!(
                bounds(g, &self.stream, idx),
                Some((Bound::Relative(lo), Bound::Relative(hi))) if lo >= 0 && hi <= before
            )
    }

    /// Forwards: every demanded (node, mask), operands first; weights always.
    fn build(&mut self) -> Result<(), StepError> {
        for v in self.g.dag.node_indices() {
            let mut masks = std::mem::take(&mut self.demands[v.index()]);
            if masks.is_empty() && matches!(self.g.dag[v].op, Op::Param(_)) {
                masks.push(0);
                self.rules.insert((v.index(), 0), Rule::Same(Vec::new()));
            }
            // A cache reads the node's new positions, built first.
            masks.sort_unstable();
            for mask in masks {
                let rule = self.rules[&(v.index(), mask)].clone();
                let n = self.build_one(v, mask, &rule)?;
                self.built.insert((v.index(), mask), n);
            }
        }
        Ok(())
    }

    fn at(&self, o: NodeIndex, mask: Mask) -> NodeIndex {
        self.built[&(o.index(), mask & self.stream.axes(self.g, o))]
    }

    fn build_one(&mut self, v: NodeIndex, mask: Mask, rule: &Rule) -> Result<NodeIndex, StepError> {
        let g = self.g;
        let node = &g.dag[v];
        let ops = g.operands(v);
        let ty = self.ty_over(v, mask)?;
        let step = self.phase == Phase::Step;
        match rule {
            Rule::Same(masks) => {
                let operands: Vec<NodeIndex> = ops
                    .iter()
                    .zip(masks)
                    .map(|(&o, &m)| self.at(o, m))
                    .collect();
                let op = self.op_over(v, mask)?;
                let n = self.new.add(op, ty, &node.scope, &operands);
                self.new.dag[n].at = node.at.clone();
                match &node.op {
                    Op::Input(name) => {
                        self.new.inputs.insert(name.clone(), n);
                    }
                    Op::Param(name) => {
                        if let Some((_, kind)) = g.params.get(name) {
                            self.new.params.insert(name.clone(), (n, kind.clone()));
                        }
                    }
                    _ => {}
                }
                Ok(n)
            }
            Rule::Cache { axis } => {
                let new = self.at(v, 0);
                let mut shape = g.ty(v).shape.clone();
                shape[*axis] = Dim::symbol(PAST);
                let kind = PartKind::Append { axis: *axis };
                let (state, name) = self.part(v, "cache", kind, g.ty(v).dtype, shape);
                self.state_outputs.insert(name, new);
                match state {
                    Some(state) => self.add(node, Op::Concat { axis: *axis }, &[state, new]),
                    None => Ok(new),
                }
            }
            Rule::Window { axis } => self.window(v, *axis),
            Rule::Carry { axis, masks } => self.carry(v, *axis, masks, &ty),
            Rule::Position => {
                let n = self.new.add(Op::Iota, ty.clone(), &node.scope, &[]);
                if !step {
                    return Ok(n);
                }
                let past = self.past(node, ty.dtype)?;
                self.add(node, Op::Binary(BinaryOp::Add), &[n, past])
            }
            Rule::Windowed(masks) => {
                let x = self.at(ops[0], masks[0]);
                let mut idx = self.at(ops[1], masks[1]);
                if step {
                    // Indices count from the first position; the window starts at `past`.
                    let past = self.past(node, g.ty(ops[1]).dtype)?;
                    idx = self.add(node, Op::Binary(BinaryOp::Sub), &[idx, past])?;
                }
                self.add(node, node.op.clone(), &[x, idx])
            }
        }
    }
}

impl Deriver<'_> {
    /// A pad before the new positions: the State's last rows, then the new ones; the last
    /// `before` rows are the part's next value.
    fn window(&mut self, v: NodeIndex, axis: usize) -> Result<NodeIndex, StepError> {
        let g = self.g;
        let node = &g.dag[v];
        let ops = g.operands(v);
        let ty = self.ty_over(v, 0)?;
        let x = self.at(ops[0], 0);
        let Op::Pad { before, value, .. } = node.op else {
            return Err(StepError::unsupported(g, v, "a window that is not a pad"));
        };
        let mut shape = g.ty(ops[0]).shape.clone();
        shape[axis] = Dim::constant(before);
        let kind = PartKind::Replace { fill: value };
        let (state, name) = self.part(v, "window", kind, ty.dtype, shape);
        let whole = match state {
            Some(state) => self.add(node, Op::Concat { axis }, &[state, x])?,
            None => self.add(node, node.op.clone(), &[x])?,
        };
        // The last `before` rows, for the next step.
        let seq = Dim::symbol(&self.stream.symbol);
        let end = seq
            .add(&Dim::constant(before))
            .unwrap_or_else(|| seq.clone());
        let last = Op::Slice {
            axis,
            start: seq,
            end,
        };
        let out = self.add(node, last, &[whole])?;
        self.state_outputs.insert(name, out);
        Ok(whole)
    }

    /// A scan that starts from the State's carry; its last row is the part's next value.
    fn carry(
        &mut self,
        v: NodeIndex,
        axis: usize,
        masks: &[Mask],
        ty: &TensorType,
    ) -> Result<NodeIndex, StepError> {
        let node = &self.g.dag[v];
        let ops = self.g.operands(v);
        let (a, b) = (self.at(ops[0], masks[0]), self.at(ops[1], masks[1]));
        let mut shape = ty.shape.clone();
        shape[axis] = Dim::constant(1);
        let kind = PartKind::Replace {
            fill: Ieee64::from(0.0),
        };
        let (state, name) = self.part(v, "carry", kind, ty.dtype, shape);
        let b = match state {
            Some(carry) => {
                // h[0] = a[0]·carry + b[0]: the carry enters with the first input.
                let ac = self.add(node, Op::Binary(BinaryOp::Mul), &[a, carry])?;
                let started = self.add(node, Op::Binary(BinaryOp::Add), &[b, ac])?;
                let first = self.first_position(node, axis, ty.rank())?;
                self.add(node, Op::Select, &[first, started, b])?
            }
            None => b,
        };
        let h = self.add(node, node.op.clone(), &[a, b])?;
        let seq = Dim::symbol(&self.stream.symbol);
        let last = Op::Slice {
            axis,
            start: seq.sub(&Dim::constant(1)).unwrap_or_else(|| seq.clone()),
            end: seq,
        };
        let out = self.add(node, last, &[h])?;
        self.state_outputs.insert(name, out);
        Ok(h)
    }

    /// Records a State part for node `v` and, in a step, adds its input.
    fn part(
        &mut self,
        v: NodeIndex,
        what: &str,
        kind: PartKind,
        dtype: DType,
        shape: Vec<Dim>,
    ) -> (Option<NodeIndex>, String) {
        let node = &self.g.dag[v];
        let scope = if node.scope.is_empty() {
            "model"
        } else {
            &node.scope
        };
        let key = format!("{scope}.{what}");
        let count = self.names.entry(key.clone()).or_insert(0);
        let name = format!("{key}{count}");
        *count += 1;
        let ty = TensorType::new(dtype, shape.clone());
        let input = (self.phase == Phase::Step).then(|| {
            let n = self.new.add(Op::Input(name.clone()), ty, &node.scope, &[]);
            self.new.dag[n].at = node.at.clone();
            self.new.inputs.insert(name.clone(), n);
            n
        });
        self.parts.push(StatePart {
            name: name.clone(),
            kind,
            dtype,
            shape,
            origin: node.origin(),
        });
        (input, name)
    }

    /// Adds `op` on `operands`, typed by its rule, where `like` was made.
    fn add(&mut self, like: &Node, op: Op, operands: &[NodeIndex]) -> Result<NodeIndex, StepError> {
        let tys: Vec<&TensorType> = operands.iter().map(|&o| self.new.ty(o)).collect();
        let ty = infer(&op, &tys, None).map_err(|error| StepError::Type {
            origin: like.origin(),
            error,
        })?;
        let n = self.new.add(op, ty, &like.scope, operands);
        self.new.dag[n].at = like.at.clone();
        Ok(n)
    }

    /// Node `v`'s type over `mask`.
    fn ty_over(&self, v: NodeIndex, mask: Mask) -> Result<TensorType, StepError> {
        let ty = self.g.ty(v);
        let shape = self
            .stream
            .shape(&ty.shape, mask)
            .ok_or_else(|| StepError::unsupported(self.g, v, "a shape whose size overflows"))?;
        Ok(TensorType::new(ty.dtype, shape))
    }

    /// Node `v`'s op over `mask`: a slice of the whole context has whole-context bounds.
    fn op_over(&self, v: NodeIndex, mask: Mask) -> Result<Op, StepError> {
        let op = &self.g.dag[v].op;
        Ok(match op {
            Op::Slice { axis, start, end } if mask & bit(*axis) != 0 => {
                let full = |d: &Dim| {
                    self.stream.full(d).ok_or_else(|| {
                        StepError::unsupported(self.g, v, "a slice whose bounds overflow")
                    })
                };
                Op::Slice {
                    axis: *axis,
                    start: full(start)?,
                    end: full(end)?,
                }
            }
            op => op.clone(),
        })
    }

    /// `past` as a scalar of `dtype`.
    fn past(&mut self, like: &Node, dtype: DType) -> Result<NodeIndex, StepError> {
        let ty = TensorType::new(dtype, Vec::new());
        let n = self
            .new
            .add(Op::Size(Dim::symbol(PAST)), ty, &like.scope, &[]);
        self.new.dag[n].at = like.at.clone();
        Ok(n)
    }

    /// A bool mask true at the first new position: `[seq, 1, …]`, to broadcast along `axis` of
    /// a value of rank `rank`.
    fn first_position(
        &mut self,
        like: &Node,
        axis: usize,
        rank: usize,
    ) -> Result<NodeIndex, StepError> {
        let seq = Dim::symbol(&self.stream.symbol);
        let i32_of = |shape: Vec<Dim>| TensorType::new(DType::I32, shape);
        let iota = self
            .new
            .add(Op::Iota, i32_of(vec![seq.clone()]), &like.scope, &[]);
        let zero = self.new.add(
            Op::Const(Ieee64::from(0.0)),
            i32_of(Vec::new()),
            &like.scope,
            &[],
        );
        let first = self.add(like, Op::Binary(BinaryOp::Eq), &[iota, zero])?;
        let mut shape = vec![seq];
        shape.resize(rank - axis, Dim::constant(1));
        let ty = TensorType::new(DType::Bool, shape);
        let n = self.new.add(Op::Reshape, ty, &like.scope, &[first]);
        self.new.dag[n].at = like.at.clone();
        Ok(n)
    }
}
