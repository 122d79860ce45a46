//! Every example has exactly the parameter count of the Hugging Face model built from the same
//! config. scripts/hf_param_counts.py recorded the counts with transformers in
//! tests/fixtures/hf_param_counts.json.

use crate::common;

use archc_compiler::graph::ParamKind;
use common::{compile, example_source, repo, EXAMPLES};

/// Trainable parameters outside the training-only scopes that Hugging Face does not ship
/// (I-JEPA's predictor; its EMA target copy is not trainable).
fn hf_comparable_count(name: &str) -> u64 {
    let g = compile(name, &example_source(name)).unwrap_or_else(|(_, r)| panic!("{r}"));
    g.params
        .iter()
        .filter(|(n, (_, kind))| *kind == ParamKind::Trainable && !n.starts_with("predictor."))
        .map(|(_, (node, _))| {
            g.ty(*node)
                .shape
                .iter()
                .map(|d| d.as_const().expect("weights have constant dims") as u64)
                .product::<u64>()
        })
        .sum()
}

#[test]
fn examples_match_transformers_parameter_counts() {
    let text = std::fs::read_to_string(repo("tests/fixtures/hf_param_counts.json")).unwrap();
    let recorded: serde_json::Value = serde_json::from_str(&text).unwrap();
    for name in EXAMPLES {
        let want = recorded[name]["parameters"]
            .as_u64()
            .unwrap_or_else(|| panic!("no recorded count for {name}"));
        let got = hf_comparable_count(name);
        assert_eq!(
            got, want,
            "{name}: archc counts {got}, {} has {want}",
            recorded[name]["class"]
        );
    }
}

#[test]
fn ijepa_ema_target_mirrors_the_encoder() {
    let g = compile("ijepa", &example_source("ijepa")).unwrap_or_else(|(_, r)| panic!("{r}"));
    let (trainable, ema) = g.param_counts();
    assert_eq!(
        ema,
        hf_comparable_count("ijepa"),
        "the EMA copy has the encoder's size"
    );
    assert!(trainable > ema, "the predictor adds trainable weights");
    for (name, (_, kind)) in &g.params {
        if let ParamKind::Ema {
            online, momentum, ..
        } = kind
        {
            assert_eq!(name.strip_prefix("target_encoder."), Some(online.as_str()));
            assert_eq!(*momentum, 0.996);
            assert!(
                g.params.contains_key(online),
                "{online} is an online weight"
            );
        }
    }
}

/// Every Hugging Face fixture's checkpoint holds exactly the weights its imported model
/// declares: a tensor the import forgot (a bias, a head norm) is as much an error as one it
/// invented, and `archc run` only catches the second.
#[test]
fn imported_fixtures_declare_exactly_their_checkpoints_tensors() {
    let dir = repo("tests/fixtures/hf");
    let mut cases: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    cases.sort();
    for case in cases {
        let config = std::fs::read_to_string(case.join("config.json")).unwrap();
        let arch = archc_compiler::import::import_hf(&config, "config.json").unwrap();
        let g = compile("imported", &arch).unwrap_or_else(|(_, r)| panic!("{r}"));
        let mut declared: Vec<(String, Vec<usize>)> = g
            .params
            .iter()
            .map(|(n, (node, _))| {
                let shape = g.ty(*node).shape.iter();
                let dims = shape.map(|d| d.as_const().expect("constant dims") as usize);
                (n.clone(), dims.collect())
            })
            .collect();
        declared.sort();
        let file = archc_runtime::TensorFile::open(&case.join("model.safetensors")).unwrap();
        let stored: Vec<(String, Vec<usize>)> = file
            .names()
            .into_iter()
            .map(|n| {
                let shape = file.read_any(&n).unwrap().shape;
                (n, shape)
            })
            .collect();
        assert_eq!(declared, stored, "{}", case.display());
    }
}
