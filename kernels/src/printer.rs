//! The deterministic text form of kernels (`archc dump --stage kernels`).

use std::fmt::Write;

use crate::ir::*;

/// Prints one kernel.
pub fn print_kernel(k: &Kernel) -> String {
    let mut out = String::new();
    let params: Vec<String> = k
        .params
        .iter()
        .enumerate()
        .map(|(i, p)| {
            format!(
                "{}{i}:{} {}",
                if p.output { "out " } else { "" },
                elem(p.elem),
                p.name
            )
        })
        .collect();
    let _ = writeln!(out, "kernel {}({}) {{", k.name, params.join(", "));
    if let Some(blocks) = k.occupancy {
        let _ = writeln!(out, "  occupancy {blocks} blocks per multiprocessor");
    }
    for (i, l) in k.arrays().enumerate() {
        let _ = writeln!(
            out,
            "  {} b{}: {}[{}] {}",
            if i < k.locals.len() {
                "local"
            } else {
                "shared"
            },
            k.params.len() + i,
            elem(l.elem),
            l.len,
            l.name
        );
    }
    stmts(&mut out, &k.body, 1);
    out.push_str("}\n");
    out
}

fn elem(e: Elem) -> &'static str {
    match e {
        Elem::F32 => "f32",
        Elem::F16 => "f16",
        Elem::BF16 => "bf16",
        Elem::I64 => "i64",
        Elem::Bool => "bool",
        Elem::Q8_0 => "q8_0",
        Elem::Q4_0 => "q4_0",
        Elem::Q4_1 => "q4_1",
        Elem::Q8_0x16 => "q8_0x16",
        Elem::Q4_0x16 => "q4_0x16",
        Elem::Q4_1x16 => "q4_1x16",
    }
}

fn stmts(out: &mut String, body: &[Stmt], depth: usize) {
    let pad = "  ".repeat(depth);
    for s in body {
        match s {
            Stmt::For {
                var,
                extent,
                kind,
                body,
            } => {
                let _ = writeln!(
                    out,
                    "{pad}{} for v{} in 0..{} {{",
                    axis(*kind),
                    var.0,
                    expr(extent)
                );
                stmts(out, body, depth + 1);
                let _ = writeln!(out, "{pad}}}");
            }
            Stmt::Set(v, e) => {
                let _ = writeln!(out, "{pad}v{} = {}", v.0, expr(e));
            }
            Stmt::Store(b, i, e) => {
                let _ = writeln!(out, "{pad}b{b}[{}] = {}", expr(i), expr(e));
            }
            Stmt::VStore(b, i, e, w) => {
                let _ = writeln!(out, "{pad}b{b}[{}..+{w}] = {}", expr(i), expr(e));
            }
            Stmt::Check(c, code) => {
                let _ = writeln!(out, "{pad}check {} else error {code}", expr(c));
            }
            Stmt::Prefetch(b, block) => {
                let _ = writeln!(out, "{pad}prefetch b{b}.block[{}]", expr(block));
            }
            Stmt::Barrier(scope) => {
                let s = match scope {
                    Scope::Block => "block",
                    Scope::Warp => "warp",
                };
                let _ = writeln!(out, "{pad}barrier {s}");
            }
            Stmt::WarpFold(fold) => {
                let _ = writeln!(
                    out,
                    "{pad}fold.{:?} b{}[{}..+{}] across {} lanes",
                    fold.op,
                    fold.buf,
                    expr(&fold.at),
                    fold.count,
                    fold.lanes
                );
            }
            Stmt::CopyAsync(c) => {
                let _ = writeln!(
                    out,
                    "{pad}cp.async b{}[{}..+{}] ← b{}[{}] (the first {} read, zeros after)",
                    c.dst,
                    expr(&c.dst_at),
                    c.width,
                    c.src,
                    expr(&c.src_at),
                    expr(&c.valid)
                );
            }
            Stmt::AsyncWait(pending) => {
                let _ = writeln!(out, "{pad}cp.async.wait until ≤ {pending} groups in flight");
            }
            Stmt::LoadMatrix(m) => {
                let _ = writeln!(
                    out,
                    "{pad}ldmatrix.x{}{} b{}[{}..+{}] ← b{}[{}] for v{} in block",
                    m.count,
                    if m.trans { ".trans" } else { "" },
                    m.dst.buf,
                    expr(&m.dst.at),
                    2 * m.count,
                    m.src,
                    expr(&m.row),
                    m.thread.0
                );
            }
            Stmt::WarpgroupMma(w) => {
                let tile = |t: &crate::ir::SharedTile| {
                    let major = if t.k_major { "k" } else { "mn" };
                    let layout = match t.swizzle {
                        true => "32-byte swizzle".to_string(),
                        false => format!("lead {}", t.lead),
                    };
                    format!(
                        "b{}[{}] ({major}-major, {layout}, stride {}, step {})",
                        t.buf,
                        expr(&t.at),
                        t.stride,
                        t.step
                    )
                };
                let _ = writeln!(
                    out,
                    "{pad}wgmma.m{}n{}k{} b{}[{}..+{}] += {} · {} (accumulate if {})",
                    w.m,
                    w.n,
                    w.k,
                    w.c.buf,
                    expr(&w.c.at),
                    usize::from(w.m) * usize::from(w.n) / crate::warpgroup::WARPGROUP,
                    tile(&w.a),
                    tile(&w.b),
                    expr(&w.accumulate)
                );
            }
            Stmt::WarpgroupWait(w) => {
                let _ = writeln!(
                    out,
                    "{pad}wgmma.wait until ≤ {} in flight, b{}[{}..+{}]",
                    w.pending,
                    w.c.buf,
                    expr(&w.c.at),
                    w.len
                );
            }
            Stmt::Mma { a, b, c } => {
                let _ = writeln!(
                    out,
                    "{pad}mma.m16n8k16 b{}[{}..+4] += b{}[{}..+8] · b{}[{}..+4]",
                    c.buf,
                    expr(&c.at),
                    a.buf,
                    expr(&a.at),
                    b.buf,
                    expr(&b.at)
                );
            }
        }
    }
}

/// The name of an axis kind, as dumps show it before `for`.
pub fn axis(a: Axis) -> &'static str {
    match a {
        Axis::Serial => "serial",
        Axis::Grid => "grid",
        Axis::Thread => "thread",
        Axis::Reduce => "reduce",
        Axis::Unroll => "unroll",
    }
}

fn ty(t: Ty) -> String {
    match t {
        Ty::F32 => "f32".into(),
        Ty::I64 => "i64".into(),
        Ty::Bool => "bool".into(),
        Ty::F32xN(n) => format!("f32x{n}"),
    }
}

/// Prints one expression.
pub fn expr(e: &Expr) -> String {
    match e {
        Expr::Int(v) => v.to_string(),
        Expr::F32(v) => format!("{:?}f", v.value()),
        Expr::Bool(b) => b.to_string(),
        Expr::Var(v) => format!("v{}", v.0),
        Expr::Dim(i) => format!("d{i}"),
        Expr::Load(b, i) => format!("b{b}[{}]", expr(i)),
        Expr::Un(op, a) => format!("{}({})", format!("{op:?}").to_lowercase(), expr(a)),
        Expr::Bin(op, a, b) => {
            let sym = match op {
                Bin::Add => "+",
                Bin::Sub => "-",
                Bin::Mul => "*",
                Bin::Div => "/",
                Bin::Rem => "%",
                Bin::Eq => "==",
                Bin::Ne => "!=",
                Bin::Lt => "<",
                Bin::Le => "<=",
                Bin::Gt => ">",
                Bin::Ge => ">=",
                Bin::And => "&&",
                Bin::Or => "||",
                Bin::Pow => return format!("pow({}, {})", expr(a), expr(b)),
                Bin::DivEuclid => return format!("div_euclid({}, {})", expr(a), expr(b)),
                Bin::RemEuclid => return format!("rem_euclid({}, {})", expr(a), expr(b)),
                Bin::Max => return format!("max({}, {})", expr(a), expr(b)),
                Bin::Min => return format!("min({}, {})", expr(a), expr(b)),
            };
            format!("({} {sym} {})", expr(a), expr(b))
        }
        Expr::Select(c, a, b) => format!("select({}, {}, {})", expr(c), expr(a), expr(b)),
        Expr::Cast(t, a) => format!("{}({})", ty(*t), expr(a)),
        Expr::VLoad(b, i, w) => format!("b{b}[{}..+{w}]", expr(i)),
        Expr::Splat(a, w) => format!("splat{w}({})", expr(a)),
        Expr::Block(b, i, part) => match part {
            BlockPart::Scale => format!("b{b}.scale[{}]", expr(i)),
            BlockPart::Min => format!("b{b}.min[{}]", expr(i)),
            BlockPart::Quants { at, width } => {
                format!("b{b}.quants[{}][{at}..+{width}]", expr(i))
            }
            BlockPart::Scales { width } => format!("b{b}.scales[{}..+{width}]", expr(i)),
            BlockPart::Mins { width } => format!("b{b}.mins[{}..+{width}]", expr(i)),
            BlockPart::Column { j, width } => format!("b{b}.column{j}[{}..+{width}]", expr(i)),
        },
        Expr::Fma(a, b, c) => format!("fma({}, {}, {})", expr(a), expr(b), expr(c)),
        Expr::Lane(a, l) => format!("{}.{l}", expr(a)),
    }
}
