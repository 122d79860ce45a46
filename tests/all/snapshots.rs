//! insta snapshots of every stage of every example: `ast`, `graph`, `fused` (after the
//! passes), `kernels` and `plan` (the default pipeline, all passes on), and Mamba's `clif`. A
//! changed snapshot is a claim that the new output is right: review it like code.

use crate::common;

use archc_compiler::graph::print_graph;
use archc_compiler::passes::{lower_optimized, optimize, PassOptions};
use archc_compiler::syntax::print_file;
use archc_compiler::Session;
use common::{example_source, EXAMPLES};

fn dumps(name: &str) -> (String, String) {
    let mut s = Session::new().expect("prelude");
    let id = s.add(format!("examples/{name}.arch"), example_source(name));
    let (ast, graph) = s.compile(id).unwrap_or_else(|d| panic!("{}", s.render(&d)));
    (print_file(&ast), print_graph(&graph))
}

#[test]
fn example_dumps() {
    for name in EXAMPLES {
        let (ast, graph) = dumps(name);
        insta::assert_snapshot!(format!("{name}.ast"), ast);
        insta::assert_snapshot!(format!("{name}.graph"), graph);
    }
}

#[test]
fn dumps_are_deterministic() {
    for name in EXAMPLES {
        assert_eq!(dumps(name), dumps(name), "{name} dumps differ between runs");
    }
}

#[test]
fn example_fused_kernel_and_plan_dumps() {
    for name in EXAMPLES {
        let mut s = Session::new().expect("prelude");
        let id = s.add(format!("examples/{name}.arch"), example_source(name));
        let (_, graph) = s.compile(id).unwrap_or_else(|d| panic!("{}", s.render(&d)));
        let fused = optimize(&graph, &PassOptions::all()).unwrap();
        insta::assert_snapshot!(format!("{name}.fused"), print_graph(&fused));
        let lowered = lower_optimized(&graph, &PassOptions::all()).unwrap();
        let kernels: Vec<String> = lowered
            .kernels
            .iter()
            .map(archc_kernels::print_kernel)
            .collect();
        insta::assert_snapshot!(format!("{name}.kernels"), kernels.join("\n"));
        let dims = graph
            .symbols
            .iter()
            .map(|s| (s.clone(), archc_runtime::default_dim(s)))
            .collect();
        insta::assert_snapshot!(
            format!("{name}.plan"),
            archc_runtime::print_plan(&lowered.plan, &dims)
        );
    }
}

#[test]
fn mamba_clif_dump() {
    let (_, graph) = {
        let mut s = Session::new().expect("prelude");
        let id = s.add("examples/mamba.arch", example_source("mamba"));
        s.compile(id).unwrap_or_else(|d| panic!("{}", s.render(&d)))
    };
    let lowered = lower_optimized(&graph, &PassOptions::all()).unwrap();
    let clif =
        archc_compiler::codegen::object::clif_text(&lowered.kernels, lowered.plan.symbols.len())
            .unwrap();
    insta::assert_snapshot!("mamba.clif", clif);
}
