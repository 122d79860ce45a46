//! AST → canonical `.arch` text. Parsing the output gives back the same AST.

use std::fmt::Write;

use super::ast::*;

const INDENT: &str = "  ";

/// Prints a file in canonical form (this is `archc dump --stage ast`).
pub fn print_file(file: &File) -> String {
    let mut p = Printer::default();
    for (i, item) in file.items.iter().enumerate() {
        if i > 0 {
            p.out.push('\n');
        }
        match item {
            Item::Model(m) => p.model(m),
            Item::Block(b) => p.block(b),
        }
    }
    p.out
}

/// Prints one expression in canonical form, with only the parentheses precedence needs.
pub fn print_expr(e: &Expr) -> String {
    let mut s = String::new();
    expr(&mut s, e, 0);
    s
}

#[derive(Default)]
struct Printer {
    out: String,
    depth: usize,
}

impl Printer {
    fn line(&mut self, text: &str) {
        for _ in 0..self.depth {
            self.out.push_str(INDENT);
        }
        self.out.push_str(text);
        self.out.push('\n');
    }

    fn model(&mut self, m: &Model) {
        self.line(&format!("model {} {{", m.name.name));
        self.depth += 1;
        for it in &m.items {
            match it {
                ModelItem::Config(entries, _) | ModelItem::Train(entries, _) => {
                    let head = match it {
                        ModelItem::Train(..) => "train {",
                        _ => "config {",
                    };
                    self.line(head);
                    self.depth += 1;
                    for e in entries {
                        self.line(&format!("{} = {},", e.name.name, print_expr(&e.value)));
                    }
                    self.depth -= 1;
                    self.line("}");
                }
                ModelItem::Input(i) => {
                    self.line(&format!("input {}: {}", i.name.name, tensor_type(&i.ty)))
                }
                ModelItem::Block(b) => self.block(b),
                ModelItem::Shared(b) => self.line(&format!(
                    "shared {} = {}",
                    b.name.name,
                    print_expr(&b.value)
                )),
                ModelItem::Output(b) => self.line(&format!(
                    "output {} = {}",
                    b.name.name,
                    print_expr(&b.value)
                )),
                ModelItem::Stmt(s) => self.stmt(s),
            }
        }
        self.depth -= 1;
        self.line("}");
    }

    fn block(&mut self, b: &BlockDef) {
        let params: Vec<String> = b
            .params
            .iter()
            .map(|p| match &p.default {
                Some(d) => format!("{} = {}", p.name.name, print_expr(d)),
                None => p.name.name.clone(),
            })
            .collect();
        self.line(&format!("block {}({}) {{", b.name.name, params.join(", ")));
        self.stmts(&b.body);
        self.line("}");
    }

    fn stmts(&mut self, body: &[Stmt]) {
        self.depth += 1;
        for s in body {
            self.stmt(s);
        }
        self.depth -= 1;
    }

    fn stmt(&mut self, s: &Stmt) {
        match s {
            Stmt::Param(p) => {
                let path = p
                    .path
                    .as_ref()
                    .map(|s| format!(" @{}", scope_path(s)))
                    .unwrap_or_default();
                self.line(&format!(
                    "param {}: {}{path}",
                    p.name.name,
                    tensor_type(&p.ty)
                ));
            }
            Stmt::Return(e) => self.line(&format!("return {}", print_expr(e))),
            Stmt::Call(e) => self.line(&print_expr(e)),
            Stmt::Assign(a) => {
                let t: Vec<&str> = a.targets.iter().map(|t| t.name.as_str()).collect();
                self.line(&format!("{} = {}", t.join(", "), print_expr(&a.value)));
            }
            Stmt::If(i) => self.if_stmt(i, "if"),
        }
    }

    fn if_stmt(&mut self, i: &IfStmt, keyword: &str) {
        // `else if` chains print flat, the way they are usually written.
        let head = format!("{keyword} {} {{", print_expr(&i.cond));
        if keyword == "if" {
            self.line(&head);
        } else {
            self.out.truncate(self.out.trim_end_matches('\n').len());
            self.out.push(' ');
            self.out.push_str(&head);
            self.out.push('\n');
        }
        self.stmts(&i.then);
        match &i.els {
            None => self.line("}"),
            Some(els) => match els.as_slice() {
                [Stmt::If(inner)] => {
                    self.line("}");
                    self.if_stmt(inner, "else if");
                }
                _ => {
                    self.line("} else {");
                    self.stmts(els);
                    self.line("}");
                }
            },
        }
    }
}

fn scope_path(s: &ScopePath) -> String {
    let parts: Vec<String> = s
        .segments
        .iter()
        .map(|seg| match seg {
            ScopeSegment::Name(n) => n.clone(),
            ScopeSegment::Expr(e) => format!("{{{}}}", print_expr(e)),
        })
        .collect();
    parts.join(".")
}

fn tensor_type(t: &TensorTypeExpr) -> String {
    let dims: Vec<String> = t.dims.iter().map(print_expr).collect();
    let dtype = t.dtype.map(|d| d.name()).unwrap_or("");
    format!("{dtype}[{}]", dims.join(", "))
}

/// Precedence of postfix forms and atoms: above every operator.
const POSTFIX: u8 = 8;

fn prec(e: &Expr) -> u8 {
    match &e.kind {
        ExprKind::Binary(op, ..) => op.precedence(),
        ExprKind::Unary(op, _) => op.precedence(),
        // A scoped expression cannot take further postfixes without parentheses.
        ExprKind::Scoped(..) => POSTFIX - 1,
        _ => POSTFIX,
    }
}

fn paren(out: &mut String, e: &Expr, need: bool) {
    if need {
        out.push('(');
        expr(out, e, 0);
        out.push(')');
    } else {
        expr(out, e, 0);
    }
}

/// Prints the base of a postfix form (`base(...)`, `base[...]`, `base.x`, `base @s`).
fn postfix_base(out: &mut String, e: &Expr) {
    // Number literals are parenthesised so that `(1).x` never reads as the float `1.`.
    let literal = matches!(e.kind, ExprKind::Int(_) | ExprKind::Float(_));
    paren(out, e, prec(e) < POSTFIX || literal);
}

fn expr(out: &mut String, e: &Expr, _min: u8) {
    match &e.kind {
        ExprKind::Int(v) => {
            let _ = write!(out, "{v}");
        }
        ExprKind::Float(v) => {
            let _ = write!(out, "{v:?}");
        }
        ExprKind::Str(s) => {
            let _ = write!(out, "\"{s}\"");
        }
        ExprKind::Bool(b) => {
            let _ = write!(out, "{b}");
        }
        ExprKind::None => out.push_str("none"),
        ExprKind::Name(n) => out.push_str(n),
        ExprKind::List(items) => {
            out.push('[');
            for (i, it) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                expr(out, it, 0);
            }
            out.push(']');
        }
        ExprKind::Comprehension(body, var, iter) => {
            out.push('[');
            expr(out, body, 0);
            let _ = write!(out, " for {} in ", var.name);
            expr(out, iter, 0);
            out.push(']');
        }
        ExprKind::Unary(op, x) => {
            out.push_str(match op {
                UnOp::Neg => "-",
                UnOp::Not => "not ",
            });
            // `--x` would still parse, but `-(-x)` reads better; operands of lower or equal
            // precedence need parentheses.
            paren(out, x, prec(x) <= op.precedence() && prec(x) < POSTFIX);
        }
        ExprKind::Binary(op, l, r) => {
            let p = op.precedence();
            paren(out, l, prec(l) < p);
            let _ = write!(out, " {} ", op.symbol());
            paren(out, r, prec(r) <= p);
        }
        ExprKind::Call(f, args) => {
            postfix_base(out, f);
            out.push('(');
            for (i, a) in args.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                if let Some(n) = &a.name {
                    let _ = write!(out, "{} = ", n.name);
                }
                expr(out, &a.value, 0);
            }
            out.push(')');
        }
        ExprKind::Index(x, i) => {
            postfix_base(out, x);
            out.push('[');
            expr(out, i, 0);
            out.push(']');
        }
        ExprKind::Field(x, f) => {
            postfix_base(out, x);
            let _ = write!(out, ".{}", f.name);
        }
        ExprKind::Scoped(x, s) => {
            postfix_base(out, x);
            let _ = write!(out, " @{}", scope_path(s));
        }
    }
}
