//! Compile-time values: what an expression evaluates to during elaboration.

use std::rc::Rc;

use archc_runtime::DType;
use petgraph::graph::NodeIndex;

use crate::graph::Dim;
use crate::syntax::ast::BlockDef;

/// A value during elaboration. Tensors are graph nodes; everything else is known at compile time.
#[derive(Clone, Debug)]
pub enum Value {
    /// An integer (also a constant dim).
    Int(i64),
    /// A float.
    Float(f64),
    /// A boolean.
    Bool(bool),
    /// A string (stack patterns).
    Str(String),
    /// `none`: an absent optional argument.
    None,
    /// A symbolic dim that is not a constant.
    Dim(Dim),
    /// A dtype name (`f32`, `i64`).
    DType(DType),
    /// A list.
    List(Vec<Value>),
    /// A tensor: the graph node producing it.
    Tensor(NodeIndex),
    /// A block, possibly with bound arguments or a fixed weight scope.
    Block(BlockValue),
    /// A built-in function.
    Builtin(&'static str),
    /// A per-layer choice for `stack`.
    Rule(Rc<LayerRule>),
}

/// A block as a value.
#[derive(Clone, Debug)]
pub struct BlockValue {
    /// The definition.
    pub def: Rc<BlockDef>,
    /// Arguments bound by `bind(block, k = v)`.
    pub bound: Vec<(String, Value)>,
    /// Set for `shared` and `ema` instances: their weights live at one fixed scope.
    pub instance: Option<Rc<Instance>>,
}

/// A block instance with its own weights at a fixed scope.
#[derive(Clone, Debug)]
pub struct Instance {
    /// The absolute weight scope.
    pub scope: String,
    /// For an EMA copy: the online instance's scope and the momentum at the first and the
    /// last step.
    pub ema: Option<(String, (f64, f64))>,
}

/// A per-layer choice, resolved for each layer index of a stack.
#[derive(Clone, Debug)]
pub enum LayerRule {
    /// `every(period, offset, then, else = other)`: `then` where `i % period == offset`.
    Every {
        /// The period.
        period: i64,
        /// The offset.
        offset: i64,
        /// Chosen on matching layers.
        then: Value,
        /// Chosen elsewhere.
        other: Value,
    },
    /// `at([i, j], then, else = other)`: `then` on the listed layers.
    At {
        /// The layer indices.
        indices: Vec<i64>,
        /// Chosen on listed layers.
        then: Value,
        /// Chosen elsewhere.
        other: Value,
    },
}

impl LayerRule {
    /// The choice for layer `i`.
    pub fn resolve(&self, i: i64) -> &Value {
        match self {
            LayerRule::Every {
                period,
                offset,
                then,
                other,
            } => {
                if i % period == *offset {
                    then
                } else {
                    other
                }
            }
            LayerRule::At {
                indices,
                then,
                other,
            } => {
                if indices.contains(&i) {
                    then
                } else {
                    other
                }
            }
        }
    }
}

impl BlockValue {
    /// The block's name, its instance scope and bound arguments, e.g. `decoder(heads=4)`.
    pub fn describe(&self) -> String {
        let mut s = match &self.instance {
            Some(i) if !i.scope.is_empty() => format!("{}@{}", self.def.name.name, i.scope),
            _ => self.def.name.name.clone(),
        };
        if !self.bound.is_empty() {
            let args: Vec<String> = self
                .bound
                .iter()
                .map(|(k, v)| format!("{k}={}", v.describe()))
                .collect();
            s = format!("{s}({})", args.join(", "));
        }
        s
    }
}

impl Value {
    /// What kind of value this is, for error messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Value::Int(_) => "an integer",
            Value::Float(_) => "a float",
            Value::Bool(_) => "a bool",
            Value::Str(_) => "a string",
            Value::None => "`none`",
            Value::Dim(_) => "a symbolic dim",
            Value::DType(_) => "a dtype",
            Value::List(_) => "a list",
            Value::Tensor(_) => "a tensor",
            Value::Block(_) => "a block",
            Value::Builtin(_) => "a built-in function",
            Value::Rule(_) => "a layer rule",
        }
    }

    /// The value as a dim, if it is an integer or a symbolic dim.
    pub fn as_dim(&self) -> Option<Dim> {
        match self {
            Value::Int(v) => Some(Dim::constant(*v)),
            Value::Dim(d) => Some(d.clone()),
            _ => None,
        }
    }

    /// A dim as a value: constants become integers.
    pub fn from_dim(d: Dim) -> Value {
        match d.as_const() {
            Some(v) => Value::Int(v),
            None => Value::Dim(d),
        }
    }

    /// A short description of the value for layer-kind names.
    pub fn describe(&self) -> String {
        match self {
            Value::Int(v) => v.to_string(),
            Value::Float(v) => format!("{v:?}"),
            Value::Bool(b) => b.to_string(),
            Value::Str(s) => format!("{s:?}"),
            Value::None => "none".into(),
            Value::Dim(d) => d.to_string(),
            Value::DType(d) => d.to_string(),
            Value::List(items) => {
                let v: Vec<String> = items.iter().map(Value::describe).collect();
                format!("[{}]", v.join(", "))
            }
            Value::Tensor(_) => "tensor".into(),
            Value::Block(b) => b.describe(),
            Value::Builtin(n) => (*n).to_string(),
            Value::Rule(_) => "rule".into(),
        }
    }
}
