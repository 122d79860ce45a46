//! parse ∘ print = id: printing an AST and parsing the text gives the same AST (spans aside).

use crate::common;

use archc_compiler::syntax::ast::*;
use archc_compiler::syntax::{parse, print_file, SourceId, Span, KEYWORDS};
use archc_runtime::DType;
use common::{example_source, EXAMPLES};
use proptest::prelude::*;

fn ident() -> impl Strategy<Value = Ident> {
    "[a-zA-Z_][a-zA-Z0-9_]{0,5}"
        .prop_filter("keywords are not names", |s| {
            !KEYWORDS.contains(&s.as_str())
        })
        .prop_map(|name| Ident {
            name,
            span: Span::default(),
        })
}

fn e(kind: ExprKind) -> Expr {
    Expr::new(kind, Span::default())
}

fn scope_path(expr: BoxedStrategy<Expr>) -> impl Strategy<Value = ScopePath> {
    let seg = prop_oneof![
        4 => "[a-zA-Z0-9_]{1,5}".prop_map(ScopeSegment::Name),
        1 => expr.prop_map(ScopeSegment::Expr),
    ];
    prop::collection::vec(seg, 1..4).prop_map(|segments| ScopePath {
        segments,
        span: Span::default(),
    })
}

fn expr() -> BoxedStrategy<Expr> {
    let leaf = prop_oneof![
        (0i64..=i64::MAX).prop_map(|v| e(ExprKind::Int(v))),
        (0.0f64..1e12).prop_map(|v| e(ExprKind::Float(v))),
        prop::sample::select(vec![1e-5, 1e-12, 0.5, 1e300, 5e-324, 3.4028234663852886e38])
            .prop_map(|v| e(ExprKind::Float(v))),
        "[A-Za-z0-9 _.]{0,6}".prop_map(|s| e(ExprKind::Str(s))),
        any::<bool>().prop_map(|b| e(ExprKind::Bool(b))),
        Just(e(ExprKind::None)),
        ident().prop_map(|i| e(ExprKind::Name(i.name))),
    ];
    leaf.prop_recursive(4, 48, 4, |inner| {
        let binop = prop::sample::select(vec![
            BinOp::Or,
            BinOp::And,
            BinOp::Eq,
            BinOp::Ne,
            BinOp::Lt,
            BinOp::Le,
            BinOp::Gt,
            BinOp::Ge,
            BinOp::Add,
            BinOp::Sub,
            BinOp::Mul,
            BinOp::Div,
            BinOp::Rem,
        ]);
        let arg = (prop::option::of(ident()), inner.clone())
            .prop_map(|(name, value)| Arg { name, value });
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(|v| e(ExprKind::List(v))),
            (inner.clone(), ident(), inner.clone())
                .prop_map(|(b, v, i)| { e(ExprKind::Comprehension(Box::new(b), v, Box::new(i))) }),
            (
                prop::sample::select(vec![UnOp::Neg, UnOp::Not]),
                inner.clone()
            )
                .prop_map(|(op, x)| e(ExprKind::Unary(op, Box::new(x)))),
            (binop, inner.clone(), inner.clone()).prop_map(|(op, l, r)| e(ExprKind::Binary(
                op,
                Box::new(l),
                Box::new(r)
            ))),
            (inner.clone(), prop::collection::vec(arg, 0..4))
                .prop_map(|(f, a)| e(ExprKind::Call(Box::new(f), a))),
            (inner.clone(), inner.clone())
                .prop_map(|(x, i)| e(ExprKind::Index(Box::new(x), Box::new(i)))),
            (inner.clone(), ident()).prop_map(|(x, f)| e(ExprKind::Field(Box::new(x), f))),
            (inner.clone(), scope_path(inner.clone()))
                .prop_map(|(x, s)| e(ExprKind::Scoped(Box::new(x), s))),
        ]
    })
    .boxed()
}

fn tensor_type() -> impl Strategy<Value = TensorTypeExpr> {
    (
        prop::option::of(prop::sample::select(DType::ALL.to_vec())),
        prop::collection::vec(expr(), 0..3),
    )
        .prop_map(|(dtype, dims)| TensorTypeExpr {
            dtype,
            dims,
            span: Span::default(),
        })
}

fn stmt() -> impl Strategy<Value = Stmt> {
    let simple = prop_oneof![
        expr().prop_map(Stmt::Return),
        (
            ident(),
            prop::collection::vec(
                (prop::option::of(ident()), expr()).prop_map(|(name, value)| Arg { name, value }),
                0..3
            )
        )
            .prop_map(|(f, a)| Stmt::Call(e(ExprKind::Call(
                Box::new(e(ExprKind::Name(f.name))),
                a
            )))),
        (prop::collection::vec(ident(), 1..3), expr())
            .prop_map(|(targets, value)| Stmt::Assign(Assign { targets, value })),
        (ident(), tensor_type(), prop::option::of(scope_path(expr())))
            .prop_map(|(name, ty, path)| Stmt::Param(ParamDecl { name, ty, path })),
    ];
    simple.prop_recursive(2, 12, 3, |inner| {
        (
            expr(),
            prop::collection::vec(inner.clone(), 0..3),
            prop::option::of(prop::collection::vec(inner, 0..3)),
        )
            .prop_map(|(cond, then, els)| Stmt::If(IfStmt { cond, then, els }))
    })
}

fn block() -> impl Strategy<Value = BlockDef> {
    (
        ident(),
        prop::collection::vec(
            (ident(), prop::option::of(expr()))
                .prop_map(|(name, default)| BlockParam { name, default }),
            0..3,
        ),
        prop::collection::vec(stmt(), 0..4),
    )
        .prop_map(|(name, params, body)| BlockDef {
            name,
            params,
            body,
            span: Span::default(),
        })
}

fn model_item() -> impl Strategy<Value = ModelItem> {
    let binding = || (ident(), expr()).prop_map(|(name, value)| Binding { name, value });
    prop_oneof![
        prop::collection::vec(
            (ident(), expr()).prop_map(|(name, value)| ConfigEntry { name, value }),
            0..3
        )
        .prop_map(|c| ModelItem::Config(c, Span::default())),
        prop::collection::vec(
            (ident(), expr()).prop_map(|(name, value)| ConfigEntry { name, value }),
            0..3
        )
        .prop_map(|c| ModelItem::Train(c, Span::default())),
        (ident(), tensor_type()).prop_map(|(name, ty)| ModelItem::Input(InputDecl { name, ty })),
        block().prop_map(ModelItem::Block),
        binding().prop_map(ModelItem::Shared),
        binding().prop_map(ModelItem::Output),
        stmt().prop_map(ModelItem::Stmt),
    ]
}

fn file() -> impl Strategy<Value = File> {
    let model = (ident(), prop::collection::vec(model_item(), 0..5)).prop_map(|(name, items)| {
        Item::Model(Model {
            name,
            items,
            span: Span::default(),
        })
    });
    prop::collection::vec(prop_oneof![model, block().prop_map(Item::Block)], 0..3)
        .prop_map(|items| File { items })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn print_then_parse_is_identity(f in file()) {
        let text = print_file(&f);
        let back = parse(SourceId(0), &text);
        prop_assert!(back.is_ok(), "printed text does not parse:\n{text}\n{:?}", back.err());
        prop_assert_eq!(back.unwrap(), f, "round trip changed the tree; text:\n{}", text);
    }
}

#[test]
fn examples_round_trip() {
    for name in EXAMPLES {
        let src = example_source(name);
        let ast = parse(SourceId(0), &src).expect("example parses");
        let printed = print_file(&ast);
        assert_eq!(
            parse(SourceId(0), &printed).expect("printed example parses"),
            ast,
            "{name}"
        );
        // Canonical text is a fixed point of print ∘ parse.
        assert_eq!(
            print_file(&parse(SourceId(0), &printed).unwrap()),
            printed,
            "{name}"
        );
    }
}
