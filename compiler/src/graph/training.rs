//! How a model is trained: what its `train { ... }` section says, checked and resolved against
//! its weights (the elaborator builds it; `archc train` reads it, its flags overriding it).
//!
//! The section is part of the model's meaning, like its EMA links, so the graph carries it and
//! the graph dump prints it (`train ...` lines after the EMA links).

use std::fmt::Write;

use archc_runtime::optim::Optimizer;

/// The optimiser of a `train` section: its kind with its own hyperparameters, and the two
/// every kind has.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct OptimizerSpec {
    /// SGD with its momentum, or AdamW with its betas and ε.
    pub kind: Optimizer,
    /// The peak learning rate.
    pub lr: f64,
    /// Weight decay (AdamW: decoupled; SGD: added to the gradient).
    pub weight_decay: f64,
}

/// The learning-rate schedule: linear warmup, then constant or a half cosine to 0.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ScheduleSpec {
    /// Steps of linear warmup from 0.
    pub warmup: u64,
    /// Decay along a half cosine after the warmup.
    pub cosine: bool,
}

/// A parameter group: the weights whose checkpoint names match one of `patterns` (a weight
/// belongs to the first group that matches it), trained differently from the rest.
#[derive(Clone, Debug, PartialEq)]
pub struct ParamGroup {
    /// Glob patterns over checkpoint names: `*` any run of characters (dots included), `?`
    /// one character.
    pub patterns: Vec<String>,
    /// The group's learning rate is the schedule's times this.
    pub lr_scale: f64,
    /// The group's weight decay, when not the optimiser's.
    pub weight_decay: Option<f64>,
    /// Not trained at all: no gradient is derived for these weights.
    pub frozen: bool,
}

/// A model's `train` section.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Training {
    /// The output minimised (a `loss = expr` entry is checked always, and added as output
    /// `loss` when the model is compiled for training).
    pub loss: Option<String>,
    /// Whether the section computes its loss (`loss = expr`) rather than naming an output.
    pub loss_computed: bool,
    /// The optimiser.
    pub optimizer: Option<OptimizerSpec>,
    /// The learning-rate schedule.
    pub schedule: Option<ScheduleSpec>,
    /// The largest global L2 norm of the gradients; larger ones are scaled down to it.
    pub clip: Option<f64>,
    /// Parameter groups, first match wins.
    pub groups: Vec<ParamGroup>,
}

impl Training {
    /// The group weight `name` belongs to, if any.
    pub fn group_of(&self, name: &str) -> Option<&ParamGroup> {
        self.groups
            .iter()
            .find(|g| g.patterns.iter().any(|p| glob_matches(p, name)))
    }

    /// Whether weight `name` is frozen by its group.
    pub fn is_frozen(&self, name: &str) -> bool {
        self.group_of(name).is_some_and(|g| g.frozen)
    }

    /// The deterministic text of the section, one `train` line per entry.
    pub fn print(&self, out: &mut String) {
        if let Some(l) = &self.loss {
            let how = if self.loss_computed {
                " (computed by the section's expression)"
            } else {
                ""
            };
            let _ = writeln!(out, "train loss={l}{how}");
        }
        if let Some(o) = &self.optimizer {
            let kind = match o.kind {
                Optimizer::Sgd { momentum } => format!("sgd momentum={momentum:?}"),
                Optimizer::AdamW { beta1, beta2, eps } => {
                    format!("adamw betas=({beta1:?}, {beta2:?}) eps={eps:?}")
                }
            };
            let _ = writeln!(
                out,
                "train optimizer {kind} lr={:?} weight_decay={:?}",
                o.lr, o.weight_decay
            );
        }
        if let Some(s) = &self.schedule {
            let shape = if s.cosine { "cosine" } else { "constant" };
            let _ = writeln!(out, "train schedule {shape} warmup={}", s.warmup);
        }
        if let Some(c) = self.clip {
            let _ = writeln!(out, "train clip={c:?}");
        }
        for g in &self.groups {
            let decay = g
                .weight_decay
                .map_or(String::new(), |d| format!(" weight_decay={d:?}"));
            let frozen = if g.frozen { " frozen" } else { "" };
            let _ = writeln!(
                out,
                "train group {} lr_scale={:?}{decay}{frozen}",
                g.patterns.join(" "),
                g.lr_scale
            );
        }
    }
}

/// Whether `name` matches the glob `pattern` (`*`: any run, `?`: one character). Linear in
/// practice: a `*` is retried from one remembered position only, as in the classic wildcard
/// matcher, so no pattern takes exponential time.
pub fn glob_matches(pattern: &str, name: &str) -> bool {
    let (p, n): (Vec<char>, Vec<char>) = (pattern.chars().collect(), name.chars().collect());
    let (mut i, mut j) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while j < n.len() {
        if i < p.len() && (p[i] == '?' || p[i] == n[j]) {
            i += 1;
            j += 1;
        } else if i < p.len() && p[i] == '*' {
            star = Some((i, j));
            i += 1;
        } else if let Some((si, sj)) = star {
            i = si + 1;
            j = sj + 1;
            star = Some((si, sj + 1));
        } else {
            return false;
        }
    }
    p[i..].iter().all(|&c| c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_names_with_dots() {
        assert!(glob_matches("*.bias", "encoder.layer0.fc1.bias"));
        assert!(!glob_matches("*norm*", "encoder.layer0.ln1.weight"));
        assert!(glob_matches("*ln?.*", "encoder.layer0.ln1.weight"));
        assert!(glob_matches("predictor.*", "predictor.pos"));
        assert!(!glob_matches("predictor.*", "encoder.pos"));
        assert!(glob_matches("*", ""));
        assert!(!glob_matches("a*b*c", "abca"));
        assert!(glob_matches("a*b*c", "aXbYbZc"));
    }

    #[test]
    fn the_first_matching_group_wins() {
        let group = |p: &str, frozen: bool| ParamGroup {
            patterns: vec![p.to_string()],
            lr_scale: 1.0,
            weight_decay: None,
            frozen,
        };
        let t = Training {
            groups: vec![group("embed.*", true), group("*", false)],
            ..Training::default()
        };
        assert!(t.is_frozen("embed.weight"));
        assert!(!t.is_frozen("head.weight"));
        assert!(t.group_of("x").is_some_and(|g| g.patterns == ["*"]));
    }
}
