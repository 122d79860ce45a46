//! The abstract syntax tree of a `.arch` file.
//!
//! Parentheses leave no trace: the tree records structure only, and the printer puts back the
//! parentheses that precedence needs.

use archc_runtime::DType;

use super::source::Span;

/// A whole source file: models and top-level blocks (the prelude has only blocks).
#[derive(Clone, Debug, PartialEq)]
pub struct File {
    /// Items in source order.
    pub items: Vec<Item>,
}

/// A top-level item.
#[derive(Clone, Debug, PartialEq)]
pub enum Item {
    /// `model name { ... }`
    Model(Model),
    /// `block name(params) { ... }`
    Block(BlockDef),
}

/// A name with its location.
#[derive(Clone, Debug, PartialEq)]
pub struct Ident {
    /// The name.
    pub name: String,
    /// Where it is written.
    pub span: Span,
}

/// `model name { items }`
#[derive(Clone, Debug, PartialEq)]
pub struct Model {
    /// The model's name.
    pub name: Ident,
    /// Config, inputs, blocks, shared instances, statements and outputs in source order.
    pub items: Vec<ModelItem>,
    /// The whole model.
    pub span: Span,
}

/// One item of a model body.
#[derive(Clone, Debug, PartialEq)]
pub enum ModelItem {
    /// `config { name = expr, ... }`
    Config(Vec<ConfigEntry>, Span),
    /// `train { name = expr, ... }`: how `archc train` trains the model.
    Train(Vec<ConfigEntry>, Span),
    /// `input name: dtype[dims]`
    Input(InputDecl),
    /// A block local to this model.
    Block(BlockDef),
    /// `shared name = expr`: a block instance whose weights are bound once.
    Shared(Binding),
    /// `output name = expr`
    Output(Binding),
    /// A dataflow statement.
    Stmt(Stmt),
}

/// `name = expr` in a config or a train section.
#[derive(Clone, Debug, PartialEq)]
pub struct ConfigEntry {
    /// The constant's name.
    pub name: Ident,
    /// Its value, evaluated at compile time.
    pub value: Expr,
}

/// `input name: dtype[dims]`
#[derive(Clone, Debug, PartialEq)]
pub struct InputDecl {
    /// The input's name (the runtime binds tensors by it).
    pub name: Ident,
    /// Its type; unknown names in the dims are symbolic dims.
    pub ty: TensorTypeExpr,
}

/// `dtype[dim, ...]`, where the dtype defaults to f32.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorTypeExpr {
    /// The written dtype, if any.
    pub dtype: Option<DType>,
    /// Dim expressions.
    pub dims: Vec<Expr>,
    /// The whole type.
    pub span: Span,
}

/// `name = expr` for `shared` and `output`.
#[derive(Clone, Debug, PartialEq)]
pub struct Binding {
    /// The bound name.
    pub name: Ident,
    /// The value.
    pub value: Expr,
}

/// `block name(params) { body }`
#[derive(Clone, Debug, PartialEq)]
pub struct BlockDef {
    /// The block's name.
    pub name: Ident,
    /// Parameters, with optional defaults.
    pub params: Vec<BlockParam>,
    /// Statements; one `return` gives the block's value.
    pub body: Vec<Stmt>,
    /// The whole definition.
    pub span: Span,
}

/// One block parameter.
#[derive(Clone, Debug, PartialEq)]
pub struct BlockParam {
    /// Its name.
    pub name: Ident,
    /// Default value, evaluated in the block's scope at each call.
    pub default: Option<Expr>,
}

/// A statement in a block or model body.
#[derive(Clone, Debug, PartialEq)]
pub enum Stmt {
    /// `param name: dtype[dims] @path`: a weight of the enclosing scope.
    Param(ParamDecl),
    /// `if cond { ... } else { ... }`, decided at compile time.
    If(IfStmt),
    /// `return expr`
    Return(Expr),
    /// `a, b = expr`
    Assign(Assign),
    /// `f(args)` for its effect, e.g. `assert(heads % kv_heads == 0, "...")`.
    Call(Expr),
}

/// `param name: type @path`
#[derive(Clone, Debug, PartialEq)]
pub struct ParamDecl {
    /// The local name.
    pub name: Ident,
    /// Shape and dtype.
    pub ty: TensorTypeExpr,
    /// Checkpoint name relative to the current scope; defaults to the local name.
    pub path: Option<ScopePath>,
}

/// `if cond { then } else { els }`
#[derive(Clone, Debug, PartialEq)]
pub struct IfStmt {
    /// A compile-time boolean.
    pub cond: Expr,
    /// Taken when true.
    pub then: Vec<Stmt>,
    /// Taken when false (`else if` nests an `If` here).
    pub els: Option<Vec<Stmt>>,
}

/// `a, b = expr`
#[derive(Clone, Debug, PartialEq)]
pub struct Assign {
    /// One target, or several to unpack a list.
    pub targets: Vec<Ident>,
    /// The value.
    pub value: Expr,
}

/// `@a.b.3` or `@adapters.{i}`: a weight-name scope.
#[derive(Clone, Debug, PartialEq)]
pub struct ScopePath {
    /// Dot-separated segments.
    pub segments: Vec<ScopeSegment>,
    /// Where it is written.
    pub span: Span,
}

/// One segment of a scope path.
#[derive(Clone, Debug, PartialEq)]
pub enum ScopeSegment {
    /// A literal name or number: `layers`, `0`.
    Name(String),
    /// `{expr}`: an integer or string computed at compile time.
    Expr(Expr),
}

/// An expression with its location.
#[derive(Clone, Debug, PartialEq)]
pub struct Expr {
    /// What it is.
    pub kind: ExprKind,
    /// Where it is.
    pub span: Span,
    /// How deeply the expression nests: 1 for a leaf. The passes after the parser recurse
    /// over expressions, so the parser refuses trees deeper than a limit, and knowing each
    /// node's depth as it is built lets it do so without walking the tree again.
    pub depth: u32,
}

impl Expr {
    /// An expression node; its depth comes from its direct children.
    pub fn new(kind: ExprKind, span: Span) -> Expr {
        let mut depth = 0;
        kind.for_each_child(|c| depth = depth.max(c.depth));
        Expr {
            kind,
            span,
            depth: depth.saturating_add(1),
        }
    }
}

impl ExprKind {
    /// Calls `f` on each direct sub-expression, in source order.
    pub fn for_each_child<'a>(&'a self, mut f: impl FnMut(&'a Expr)) {
        match self {
            ExprKind::Int(_)
            | ExprKind::Float(_)
            | ExprKind::Str(_)
            | ExprKind::Bool(_)
            | ExprKind::None
            | ExprKind::Name(_) => {}
            ExprKind::List(items) => items.iter().for_each(f),
            ExprKind::Comprehension(body, _, iter) => {
                f(body);
                f(iter);
            }
            ExprKind::Unary(_, x) | ExprKind::Field(x, _) => f(x),
            ExprKind::Binary(_, a, b) | ExprKind::Index(a, b) => {
                f(a);
                f(b);
            }
            ExprKind::Call(callee, args) => {
                f(callee);
                args.iter().for_each(|a| f(&a.value));
            }
            ExprKind::Scoped(x, path) => {
                f(x);
                for seg in &path.segments {
                    if let ScopeSegment::Expr(e) = seg {
                        f(e);
                    }
                }
            }
        }
    }
}

/// Unary operators.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UnOp {
    /// `-x`
    Neg,
    /// `not x`
    Not,
}

/// Binary operators, loosest first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BinOp {
    /// `or`
    Or,
    /// `and`
    And,
    /// `==`
    Eq,
    /// `!=`
    Ne,
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
    /// `+`
    Add,
    /// `-`
    Sub,
    /// `*`
    Mul,
    /// `/`
    Div,
    /// `%`
    Rem,
}

impl BinOp {
    /// The operator as written.
    pub fn symbol(self) -> &'static str {
        match self {
            BinOp::Or => "or",
            BinOp::And => "and",
            BinOp::Eq => "==",
            BinOp::Ne => "!=",
            BinOp::Lt => "<",
            BinOp::Le => "<=",
            BinOp::Gt => ">",
            BinOp::Ge => ">=",
            BinOp::Add => "+",
            BinOp::Sub => "-",
            BinOp::Mul => "*",
            BinOp::Div => "/",
            BinOp::Rem => "%",
        }
    }

    /// Binding strength: higher binds tighter. All binary operators associate to the left.
    pub fn precedence(self) -> u8 {
        match self {
            BinOp::Or => 1,
            BinOp::And => 2,
            BinOp::Eq | BinOp::Ne | BinOp::Lt | BinOp::Le | BinOp::Gt | BinOp::Ge => 4,
            BinOp::Add | BinOp::Sub => 5,
            BinOp::Mul | BinOp::Div | BinOp::Rem => 6,
        }
    }
}

impl UnOp {
    /// Binding strength, on the same scale as [`BinOp::precedence`].
    pub fn precedence(self) -> u8 {
        match self {
            UnOp::Not => 3,
            UnOp::Neg => 7,
        }
    }
}

/// The forms of expression.
#[derive(Clone, Debug, PartialEq)]
pub enum ExprKind {
    /// `42`
    Int(i64),
    /// `1e-5`, `0.5`
    Float(f64),
    /// `"MMAM"`
    Str(String),
    /// `true`, `false`
    Bool(bool),
    /// `none`
    None,
    /// `[a, b]`
    List(Vec<Expr>),
    /// `[body for name in list]`: one element per item of the list, at compile time.
    Comprehension(Box<Expr>, Ident, Box<Expr>),
    /// A name: a local, a config constant, a block or a built-in.
    Name(String),
    /// `-x`, `not x`
    Unary(UnOp, Box<Expr>),
    /// `a + b`, ...
    Binary(BinOp, Box<Expr>, Box<Expr>),
    /// `f(a, k = b)`
    Call(Box<Expr>, Vec<Arg>),
    /// `xs[i]`
    Index(Box<Expr>, Box<Expr>),
    /// `x.shape`
    Field(Box<Expr>, Ident),
    /// `f(x) @path`: evaluate under a weight scope.
    Scoped(Box<Expr>, ScopePath),
}

/// One call argument, positional or `name = value`.
#[derive(Clone, Debug, PartialEq)]
pub struct Arg {
    /// The keyword, if any.
    pub name: Option<Ident>,
    /// The value.
    pub value: Expr,
}
