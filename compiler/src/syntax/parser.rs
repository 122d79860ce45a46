//! Text → AST, with the pest grammar in `grammar/arch.pest`.

use std::sync::LazyLock;

use archc_runtime::DType;
use pest::iterators::{Pair, Pairs};
use pest::pratt_parser::{Assoc, Op, PrattParser};
use pest::Parser as _;

use super::ast::*;
use super::diagnostic::Diagnostic;
use super::source::{SourceId, Span};

#[derive(pest_derive::Parser)]
#[grammar = "../grammar/arch.pest"]
struct ArchParser;

static PRATT: LazyLock<PrattParser<Rule>> = LazyLock::new(|| {
    PrattParser::new()
        .op(Op::infix(Rule::or, Assoc::Left))
        .op(Op::infix(Rule::and, Assoc::Left))
        .op(Op::prefix(Rule::not))
        .op(Op::infix(Rule::eq, Assoc::Left)
            | Op::infix(Rule::ne, Assoc::Left)
            | Op::infix(Rule::lt, Assoc::Left)
            | Op::infix(Rule::le, Assoc::Left)
            | Op::infix(Rule::gt, Assoc::Left)
            | Op::infix(Rule::ge, Assoc::Left))
        .op(Op::infix(Rule::add, Assoc::Left) | Op::infix(Rule::sub, Assoc::Left))
        .op(Op::infix(Rule::mul, Assoc::Left)
            | Op::infix(Rule::div, Assoc::Left)
            | Op::infix(Rule::rem, Assoc::Left))
        .op(Op::prefix(Rule::neg))
});

/// How deeply an expression may nest. Elaboration, printing and dropping the tree recurse over
/// it, so the limit keeps their stack use bounded; no real model comes near it.
pub const MAX_EXPR_DEPTH: u32 = 512;

/// Parses one source text into a [`File`].
pub fn parse(source: SourceId, text: &str) -> Result<File, Diagnostic> {
    super::nesting::check(source, text)?;
    let mut pairs =
        ArchParser::parse(Rule::file, text).map_err(|e| syntax_error(source, text, e))?;
    let b = Builder { source };
    let file = pairs.next().expect("the file rule always yields one pair");
    let mut items = Vec::new();
    for p in file.into_inner() {
        match p.as_rule() {
            Rule::model => items.push(Item::Model(b.model(p)?)),
            Rule::block_def => items.push(Item::Block(b.block(p)?)),
            _ => {}
        }
    }
    Ok(File { items })
}

fn syntax_error(source: SourceId, text: &str, e: pest::error::Error<Rule>) -> Diagnostic {
    use pest::error::{ErrorVariant, InputLocation};
    let (start, end) = match e.location {
        InputLocation::Pos(p) => (p, p),
        InputLocation::Span((s, e)) => (s, e),
    };
    // Point at the whole offending token (up to 24 characters), or at the end of the text.
    let start = start.min(text.len());
    let token_len: usize = text[start..]
        .chars()
        .take_while(|c| !c.is_whitespace())
        .take(24)
        .map(char::len_utf8)
        .sum();
    let end = end.clamp(start, text.len()).max(
        start
            + token_len.max(
                text[start..]
                    .chars()
                    .next()
                    .map(char::len_utf8)
                    .unwrap_or(0),
            ),
    );
    let found = if start >= text.len() {
        "end of file".to_string()
    } else {
        format!("`{}`", &text[start..end].escape_debug())
    };
    let message = match &e.variant {
        ErrorVariant::ParsingError { positives, .. } if !positives.is_empty() => {
            let mut names: Vec<&str> = positives.iter().map(|r| rule_name(*r)).collect();
            names.sort();
            names.dedup();
            format!(
                "syntax error: expected {}, found {found}",
                names.join(" or ")
            )
        }
        ErrorVariant::CustomError { message } => format!("syntax error: {message}"),
        _ => format!("syntax error: unexpected {found}"),
    };
    let d = Diagnostic::new("E0001", Span::new(source, start, end.max(start)), message)
        .label("the parser stopped here");
    let word: String = text[start..]
        .chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect();
    if KEYWORDS.contains(&word.as_str()) {
        return d.note(format!(
            "`{word}` is a keyword and cannot be used as a name"
        ));
    }
    d
}

/// The reserved words of the grammar.
pub const KEYWORDS: &[&str] = &[
    "model", "config", "input", "output", "block", "param", "shared", "if", "else", "return",
    "true", "false", "none", "and", "or", "not", "for", "in",
];

fn rule_name(rule: Rule) -> &'static str {
    match rule {
        Rule::EOI => "end of file",
        Rule::model => "`model`",
        Rule::block_def => "`block`",
        Rule::config => "`config`",
        Rule::train => "`train`",
        Rule::input_decl => "`input`",
        Rule::shared_decl => "`shared`",
        Rule::output_stmt => "`output`",
        Rule::param_decl => "`param`",
        Rule::if_stmt => "`if`",
        Rule::return_stmt => "`return`",
        Rule::assign => "an assignment",
        Rule::ident | Rule::block_param | Rule::config_entry => "a name",
        Rule::tensor_type => "a tensor type like `f32[batch, seq]`",
        Rule::dtype => "a dtype",
        Rule::expr | Rule::arg => "an expression",
        Rule::call_args => "`(`",
        Rule::index | Rule::bracketed => "`[`",
        Rule::list => "`,`",
        Rule::comprehension => "`for`",
        Rule::field => "`.`",
        Rule::scope | Rule::scope_name => "a scope `@name`",
        Rule::body => "`{`",
        Rule::int => "an integer",
        Rule::float => "a number",
        Rule::string => "a string",
        Rule::neg | Rule::not => "an expression",
        Rule::or | Rule::and => "an operator",
        Rule::eq | Rule::ne | Rule::le | Rule::ge | Rule::lt | Rule::gt => "an operator",
        Rule::add | Rule::sub | Rule::mul | Rule::div | Rule::rem => "an operator",
        _ => "a token",
    }
}

struct Builder {
    source: SourceId,
}

type PResult<T> = Result<T, Diagnostic>;

impl Builder {
    fn span(&self, p: &Pair<Rule>) -> Span {
        let s = p.as_span();
        Span::new(self.source, s.start(), s.end())
    }

    fn ident(&self, p: Pair<Rule>) -> Ident {
        Ident {
            name: p.as_str().to_string(),
            span: self.span(&p),
        }
    }

    fn model(&self, p: Pair<Rule>) -> PResult<Model> {
        let span = self.span(&p);
        let mut inner = p.into_inner();
        let name = self.ident(inner.next().expect("model name"));
        let mut items = Vec::new();
        for it in inner {
            let sp = self.span(&it);
            items.push(match it.as_rule() {
                Rule::config => ModelItem::Config(self.entries(it)?, sp),
                Rule::train => ModelItem::Train(self.entries(it)?, sp),
                Rule::input_decl => {
                    let mut ii = it.into_inner();
                    let name = self.ident(ii.next().expect("input name"));
                    let ty = self.tensor_type(ii.next().expect("input type"))?;
                    ModelItem::Input(InputDecl { name, ty })
                }
                Rule::block_def => ModelItem::Block(self.block(it)?),
                Rule::shared_decl => ModelItem::Shared(self.binding(it)?),
                Rule::output_stmt => ModelItem::Output(self.binding(it)?),
                _ => ModelItem::Stmt(self.stmt(it)?),
            });
        }
        Ok(Model { name, items, span })
    }

    /// The `name = expr` entries of a config or a train section.
    fn entries(&self, p: Pair<Rule>) -> PResult<Vec<ConfigEntry>> {
        let mut entries = Vec::new();
        for e in p.into_inner() {
            let mut ei = e.into_inner();
            let name = self.ident(ei.next().expect("entry name"));
            let value = self.expr(ei.next().expect("entry value"))?;
            entries.push(ConfigEntry { name, value });
        }
        Ok(entries)
    }

    fn binding(&self, p: Pair<Rule>) -> PResult<Binding> {
        let mut i = p.into_inner();
        let name = self.ident(i.next().expect("binding name"));
        let value = self.expr(i.next().expect("binding value"))?;
        Ok(Binding { name, value })
    }

    fn tensor_type(&self, p: Pair<Rule>) -> PResult<TensorTypeExpr> {
        let span = self.span(&p);
        let mut dtype = None;
        let mut dims = Vec::new();
        for q in p.into_inner() {
            match q.as_rule() {
                Rule::dtype => dtype = DType::from_name(q.as_str()),
                _ => dims.push(self.expr(q)?),
            }
        }
        Ok(TensorTypeExpr { dtype, dims, span })
    }

    fn block(&self, p: Pair<Rule>) -> PResult<BlockDef> {
        let span = self.span(&p);
        let mut inner = p.into_inner();
        let name = self.ident(inner.next().expect("block name"));
        let mut params = Vec::new();
        let mut body = Vec::new();
        for q in inner {
            match q.as_rule() {
                Rule::block_param => {
                    let mut qi = q.into_inner();
                    let name = self.ident(qi.next().expect("param name"));
                    let default = qi.next().map(|d| self.expr(d)).transpose()?;
                    params.push(BlockParam { name, default });
                }
                _ => body = self.body(q)?,
            }
        }
        Ok(BlockDef {
            name,
            params,
            body,
            span,
        })
    }

    fn body(&self, p: Pair<Rule>) -> PResult<Vec<Stmt>> {
        p.into_inner().map(|s| self.stmt(s)).collect()
    }

    fn stmt(&self, p: Pair<Rule>) -> PResult<Stmt> {
        match p.as_rule() {
            Rule::param_decl => {
                let mut i = p.into_inner();
                let name = self.ident(i.next().expect("param name"));
                let ty = self.tensor_type(i.next().expect("param type"))?;
                let path = i.next().map(|s| self.scope(s)).transpose()?;
                Ok(Stmt::Param(ParamDecl { name, ty, path }))
            }
            Rule::if_stmt => Ok(Stmt::If(self.if_stmt(p)?)),
            Rule::call_stmt => {
                let span = self.span(&p);
                let mut i = p.into_inner();
                let name = self.ident(i.next().expect("callee"));
                let callee = self.node(ExprKind::Name(name.name), name.span)?;
                let args = self.call_args(i.next().expect("arguments"))?;
                Ok(Stmt::Call(
                    self.node(ExprKind::Call(Box::new(callee), args), span)?,
                ))
            }
            Rule::return_stmt => Ok(Stmt::Return(
                self.expr(p.into_inner().next().expect("return value"))?,
            )),
            _ => {
                let mut targets = Vec::new();
                let mut value = None;
                for q in p.into_inner() {
                    match q.as_rule() {
                        Rule::ident => targets.push(self.ident(q)),
                        _ => value = Some(self.expr(q)?),
                    }
                }
                Ok(Stmt::Assign(Assign {
                    targets,
                    value: value.expect("assignment value"),
                }))
            }
        }
    }

    fn if_stmt(&self, p: Pair<Rule>) -> PResult<IfStmt> {
        let mut i = p.into_inner();
        let cond = self.expr(i.next().expect("if condition"))?;
        let then = self.body(i.next().expect("if body"))?;
        let els = match i.next() {
            None => None,
            Some(e) if e.as_rule() == Rule::if_stmt => Some(vec![Stmt::If(self.if_stmt(e)?)]),
            Some(e) => Some(self.body(e)?),
        };
        Ok(IfStmt { cond, then, els })
    }

    fn scope(&self, p: Pair<Rule>) -> PResult<ScopePath> {
        let span = self.span(&p);
        let segments = p
            .into_inner()
            .map(|s| match s.as_rule() {
                Rule::scope_name => Ok(ScopeSegment::Name(s.as_str().to_string())),
                _ => Ok(ScopeSegment::Expr(self.expr(s)?)),
            })
            .collect::<PResult<_>>()?;
        Ok(ScopePath { span, segments })
    }

    fn expr(&self, p: Pair<Rule>) -> PResult<Expr> {
        PRATT
            .map_primary(|q| self.postfix(q))
            .map_prefix(|op, rhs| {
                let rhs = rhs?;
                let span = self.span(&op).to(rhs.span);
                let op = if op.as_rule() == Rule::neg {
                    UnOp::Neg
                } else {
                    UnOp::Not
                };
                self.node(ExprKind::Unary(op, Box::new(rhs)), span)
            })
            .map_infix(|lhs, op, rhs| {
                let (lhs, rhs) = (lhs?, rhs?);
                let op = match op.as_rule() {
                    Rule::or => BinOp::Or,
                    Rule::and => BinOp::And,
                    Rule::eq => BinOp::Eq,
                    Rule::ne => BinOp::Ne,
                    Rule::lt => BinOp::Lt,
                    Rule::le => BinOp::Le,
                    Rule::gt => BinOp::Gt,
                    Rule::ge => BinOp::Ge,
                    Rule::add => BinOp::Add,
                    Rule::sub => BinOp::Sub,
                    Rule::mul => BinOp::Mul,
                    Rule::div => BinOp::Div,
                    _ => BinOp::Rem,
                };
                let span = lhs.span.to(rhs.span);
                self.node(ExprKind::Binary(op, Box::new(lhs), Box::new(rhs)), span)
            })
            .parse(p.into_inner())
    }

    fn postfix(&self, p: Pair<Rule>) -> PResult<Expr> {
        let mut inner: Pairs<Rule> = p.into_inner();
        let mut e = self.primary(inner.next().expect("primary"))?;
        for q in inner {
            let span = e.span.to(self.span(&q));
            let kind = match q.as_rule() {
                Rule::call_args => ExprKind::Call(Box::new(e), self.call_args(q)?),
                Rule::index => ExprKind::Index(
                    Box::new(e),
                    Box::new(self.expr(q.into_inner().next().expect("index"))?),
                ),
                Rule::field => ExprKind::Field(
                    Box::new(e),
                    self.ident(q.into_inner().next().expect("field")),
                ),
                _ => ExprKind::Scoped(Box::new(e), self.scope(q)?),
            };
            e = self.node(kind, span)?;
        }
        Ok(e)
    }

    fn call_args(&self, q: Pair<Rule>) -> PResult<Vec<Arg>> {
        let mut args = Vec::new();
        for a in q.into_inner() {
            let mut ai = a.into_inner();
            let first = ai.next().expect("argument");
            args.push(match ai.next() {
                Some(v) => Arg {
                    name: Some(self.ident(first)),
                    value: self.expr(v)?,
                },
                None => Arg {
                    name: None,
                    value: self.expr(first)?,
                },
            });
        }
        Ok(args)
    }

    fn primary(&self, p: Pair<Rule>) -> PResult<Expr> {
        let span = self.span(&p);
        let text = p.as_str();
        let kind = match p.as_rule() {
            Rule::int => ExprKind::Int(text.parse().map_err(|_| {
                Diagnostic::new(
                    "E0002",
                    span,
                    format!("integer literal `{text}` does not fit in 64 bits"),
                )
                .label("too large")
            })?),
            Rule::float => {
                let v: f64 = text
                    .parse()
                    .map_err(|_| Diagnostic::new("E0002", span, format!("bad number `{text}`")))?;
                if !v.is_finite() {
                    return Err(Diagnostic::new(
                        "E0002",
                        span,
                        format!("number `{text}` is out of range"),
                    )
                    .label("not a finite f64"));
                }
                ExprKind::Float(v)
            }
            Rule::string => ExprKind::Str(text[1..text.len() - 1].to_string()),
            Rule::boolean => ExprKind::Bool(text == "true"),
            Rule::none => ExprKind::None,
            Rule::ident => ExprKind::Name(text.to_string()),
            Rule::bracketed => self.bracketed(p)?,
            _ => return self.expr(p),
        };
        self.node(kind, span)
    }

    /// An expression node, refused when it nests deeper than [`MAX_EXPR_DEPTH`].
    fn node(&self, kind: ExprKind, span: Span) -> PResult<Expr> {
        let e = Expr::new(kind, span);
        if e.depth > MAX_EXPR_DEPTH {
            return Err(Diagnostic::new(
                "E0003",
                span,
                format!("this expression nests more than {MAX_EXPR_DEPTH} levels deep"),
            )
            .label("too deep")
            .note("name the intermediate results: `a = ...` on lines of their own"));
        }
        Ok(e)
    }

    /// `[a, b, ...]` or `[body for var in iter]`: the first expression, then the tail that
    /// tells which.
    fn bracketed(&self, p: Pair<Rule>) -> PResult<ExprKind> {
        let mut i = p.into_inner();
        let Some(first) = i.next() else {
            return Ok(ExprKind::List(Vec::new()));
        };
        let first = self.expr(first)?;
        let tail = i
            .next()
            .expect("a list or comprehension tail follows the first item");
        match tail.as_rule() {
            Rule::comprehension => {
                let mut t = tail.into_inner();
                let var = self.ident(t.next().expect("comprehension variable"));
                let iter = self.expr(t.next().expect("comprehension list"))?;
                Ok(ExprKind::Comprehension(
                    Box::new(first),
                    var,
                    Box::new(iter),
                ))
            }
            _ => {
                let mut items = vec![first];
                for q in tail.into_inner() {
                    items.push(self.expr(q)?);
                }
                Ok(ExprKind::List(items))
            }
        }
    }
}
