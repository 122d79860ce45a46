//! Autoregressive decoding, shared by `archc generate` and built binaries: choose each row's
//! next token from its last position's logits, append it, stop rows at an end-of-sequence
//! token, until every row has stopped or the budget is spent. The model runs behind a
//! [`Forward`] callback: a [`Stateful`] model runs the compiler's derived prefill once and
//! then steps of the new tokens against its [`State`]; a model without a derived step reruns
//! its sequence plan over the whole context.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use std::collections::HashMap;

use crate::sampling::Sampling;
use crate::state::{State, Update};
use crate::{write_tensors, DType, Data, SplitMix64, Tensor};

/// What decoding needs besides the prompts.
#[derive(Clone, Debug)]
pub struct Decoding {
    /// The most tokens each row gets.
    pub max_new: usize,
    /// End-of-sequence tokens are masked until each row has this many.
    pub min_new: usize,
    /// How tokens are chosen.
    pub sampling: Sampling,
    /// Seed of the sampling.
    pub seed: u64,
    /// The end-of-sequence token ids (none: every row gets `max_new` tokens).
    pub eos: Vec<i64>,
    /// What rows that stopped are fed and padded with (default: the first end token).
    pub pad: Option<i64>,
    /// Whether to keep every step's logits (for `step_logits`; a long generation's logits
    /// take `steps × rows × vocab` floats).
    pub keep_logits: bool,
}

/// The tokens and logits of a generation.
pub struct Generated {
    /// Per row, the tokens chosen.
    pub ids: Vec<Vec<i64>>,
    /// Per step, per row, the raw logits the token was chosen from (empty rows when they
    /// were not kept).
    pub logits: Vec<Vec<Vec<f32>>>,
    /// The time of the first step (the prompt).
    pub prefill: Duration,
    /// The time of the other steps.
    pub decode: Duration,
    /// How each step ran, for the summary.
    pub how: &'static str,
}

/// What each step reruns when a model has no derived step.
pub const RERUNS: &str = "each step reruns the whole context";

/// What a derived step runs.
pub const STEPS: &str = "each step runs the new token against the State";

/// One forward pass: the rows of token ids so far → the last position's logits of each.
pub type Forward<'a> = dyn FnMut(&[Vec<i64>]) -> Result<Vec<Vec<f32>>, String> + 'a;

/// Decodes from `context` (the prompts, one row each); `shown` sees the rows' new tokens
/// after every step (to stream text). Rows that reached an end-of-sequence token are fed it
/// from then on, as transformers pads them.
pub fn decode(
    forward: &mut Forward,
    context: Vec<Vec<i64>>,
    d: &Decoding,
    shown: &mut dyn FnMut(&[Vec<i64>]),
) -> Result<Generated, String> {
    let counts = vec![0; context.len()];
    decode_from(forward, context, &counts, d, shown)
}

/// As [`decode`], for rows that already have `counts[r]` tokens of their own (prompts of
/// different lengths that caught up with each other, see [`crate::ragged`]): a row's
/// end-of-sequence mask and budget count them, and a row whose budget is spent is fed and
/// padded as a stopped one is.
pub fn decode_from(
    forward: &mut Forward,
    mut context: Vec<Vec<i64>>,
    counts: &[usize],
    d: &Decoding,
    shown: &mut dyn FnMut(&[Vec<i64>]),
) -> Result<Generated, String> {
    let rows = context.len();
    let mut rng = SplitMix64::new(d.seed, "generate");
    let mut done: Vec<bool> = (0..rows)
        .map(|r| counts.get(r).is_some_and(|&c| c >= d.max_new))
        .collect();
    let mut g = Generated {
        ids: vec![Vec::new(); rows],
        logits: Vec::new(),
        prefill: Duration::ZERO,
        decode: Duration::ZERO,
        how: RERUNS,
    };
    let pad = d.pad.or(d.eos.first().copied()).unwrap_or(0);
    let eos: Vec<usize> = d
        .eos
        .iter()
        .filter_map(|&e| usize::try_from(e).ok())
        .collect();
    let steps = (0..rows)
        .map(|r| {
            d.max_new
                .saturating_sub(counts.get(r).copied().unwrap_or(0))
        })
        .max()
        .unwrap_or(0);
    for step in 0..steps {
        let started = Instant::now();
        let logits = forward(&context)?;
        for (r, row) in logits.iter().enumerate() {
            let had = counts.get(r).copied().unwrap_or(0) + step;
            let banned = if had < d.min_new { &eos[..] } else { &[] };
            let token = if done[r] {
                pad
            } else {
                d.sampling.choose(row, banned, &mut rng) as i64
            };
            g.ids[r].push(token);
            context[r].push(token);
            done[r] = done[r] || d.eos.contains(&token) || had + 1 >= d.max_new;
        }
        g.logits
            .push(if d.keep_logits { logits } else { Vec::new() });
        let spent = started.elapsed();
        if step == 0 {
            g.prefill = spent;
        } else {
            g.decode += spent;
        }
        shown(&g.ids);
        if done.iter().all(|&x| x) {
            break;
        }
    }
    Ok(g)
}

impl Generated {
    /// Writes `generated_ids` (i32 `[batch, n]`) and `step_logits` (f32 `[batch, n, vocab]`);
    /// returns a line saying so.
    pub fn write(&self, path: &Path) -> Result<String, String> {
        let (rows, n) = (self.ids.len(), self.logits.len());
        let ids: Vec<i64> = self.ids.iter().flatten().copied().collect();
        let vocab = self.logits.iter().flatten().next().map_or(0, Vec::len);
        let mut logits = Vec::with_capacity(rows * n * vocab);
        for r in 0..rows {
            for step in &self.logits {
                match step.get(r) {
                    Some(row) => logits.extend(row),
                    // Logits that were not kept are zeros.
                    None => logits.extend(std::iter::repeat_n(0.0, vocab)),
                }
            }
        }
        let tensors = [
            (
                "generated_ids".to_string(),
                Tensor::int(DType::I32, vec![rows, n], ids),
            ),
            (
                "step_logits".to_string(),
                Tensor::f32(vec![rows, n, vocab], logits),
            ),
        ];
        write_tensors(path, &tensors).map_err(|e| e.to_string())?;
        Ok(format!(
            "wrote generated_ids and step_logits to {}\n",
            path.display()
        ))
    }

    /// The rows of several generations as one: shorter ones padded with `pad` and logits of
    /// zeros (prompts of different lengths decoded one after another).
    pub fn concat(parts: Vec<Generated>, pad: i64) -> Generated {
        let steps = parts.iter().map(|g| g.logits.len()).max().unwrap_or(0);
        let vocab = parts
            .iter()
            .find_map(|g| g.logits.iter().flatten().next().map(Vec::len))
            .unwrap_or(0);
        let mut all = Generated {
            ids: Vec::new(),
            logits: vec![Vec::new(); steps],
            prefill: Duration::ZERO,
            decode: Duration::ZERO,
            how: parts.first().map_or(RERUNS, |g| g.how),
        };
        for g in parts {
            all.prefill += g.prefill;
            all.decode += g.decode;
            for (r, mut ids) in g.ids.into_iter().enumerate() {
                ids.resize(steps, pad);
                all.ids.push(ids);
                for (s, step) in all.logits.iter_mut().enumerate() {
                    let row = g.logits.get(s).and_then(|l| l.get(r));
                    step.push(row.cloned().unwrap_or_else(|| vec![0.0; vocab]));
                }
            }
        }
        all
    }

    /// Each row's tokens, a line each (`row 0: 5 17 2`).
    pub fn rows_text(&self) -> String {
        self.ids
            .iter()
            .enumerate()
            .map(|(r, ids)| {
                let shown: Vec<String> = ids.iter().map(i64::to_string).collect();
                format!("row {r}: {}\n", shown.join(" "))
            })
            .collect()
    }

    /// One line on what was generated and how fast.
    pub fn summary(&self, eos: &[i64]) -> String {
        let (rows, n) = (self.ids.len(), self.logits.len());
        let per_s = rows as f64 * n.saturating_sub(1) as f64 / self.decode.as_secs_f64().max(1e-9);
        format!(
            "{n} steps × {rows} rows ({}); first step {:.1} ms, then {per_s:.1} tokens/s ({})\n",
            if eos.is_empty() {
                "no end-of-sequence token known: --eos-token-id sets one".to_string()
            } else {
                format!("end of sequence: {eos:?}")
            },
            self.prefill.as_secs_f64() * 1e3,
            self.how,
        )
    }
}

/// The prompts as rows of token ids.
pub fn prompt_rows(t: &Tensor) -> Result<Vec<Vec<i64>>, String> {
    let Data::I64(v) = &t.data else {
        return Err("input_ids must be i32 or i64".into());
    };
    match t.shape[..] {
        [b, len] if b > 0 && len > 0 => Ok(v.chunks(len).map(<[i64]>::to_vec).collect()),
        _ => Err(format!(
            "input_ids must be [batch, t] with batch and t ≥ 1, not {:?}",
            t.shape
        )),
    }
}

/// The last position's logits of each of `rows` rows of output `output`.
pub fn last_rows(
    out: &[(String, Tensor)],
    output: &str,
    rows: usize,
) -> Result<Vec<Vec<f32>>, String> {
    let t = out
        .iter()
        .find(|(n, _)| n == output)
        .map(|(_, t)| t)
        .ok_or_else(|| format!("the model did not produce `{output}`"))?;
    let vocab = *t.shape.last().unwrap_or(&0);
    let values = t.to_f32();
    let per_row = values.len() / rows.max(1);
    if vocab == 0 || per_row < vocab {
        return Err(format!("`{output}` has no logits to choose from"));
    }
    Ok((0..rows)
        .map(|r| values[r * per_row + per_row - vocab..(r + 1) * per_row].to_vec())
        .collect())
}

/// The special tokens decoding needs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Special {
    /// The end-of-sequence ids.
    pub eos: Vec<i64>,
    /// What rows that stopped are fed (transformers' `pad_token_id`).
    pub pad: Option<i64>,
}

/// The special tokens found beside the weights: a GGUF file's `tokenizer.ggml.eos_token_id`
/// and `padding_token_id`, or `eos_token_id` (a number or a list) and `pad_token_id` of a
/// `generation_config.json`, else a `config.json`, in the weights' directory (where
/// transformers' generation config takes them from).
pub fn special_beside(weights: &[PathBuf]) -> Special {
    let Some(first) = weights.first() else {
        return Special::default();
    };
    if first
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("gguf"))
    {
        let file = crate::gguf::GgufFile::open(first).ok();
        let id = |key: &str| file.as_ref().and_then(|f| f.int(key));
        return Special {
            eos: id("tokenizer.ggml.eos_token_id").into_iter().collect(),
            pad: id("tokenizer.ggml.padding_token_id"),
        };
    }
    let dir = first.parent().unwrap_or(Path::new("."));
    let mut found = Special::default();
    for name in ["generation_config.json", "config.json"] {
        let Ok(text) = crate::files::read_text(&dir.join(name), 1 << 20) else {
            continue;
        };
        let Ok(json) = serde_json::from_str::<serde_json::Value>(&text) else {
            continue;
        };
        if found.eos.is_empty() {
            found.eos = match json.get("eos_token_id") {
                Some(serde_json::Value::Number(n)) => n.as_i64().into_iter().collect(),
                Some(serde_json::Value::Array(a)) => {
                    a.iter().filter_map(serde_json::Value::as_i64).collect()
                }
                _ => Vec::new(),
            };
        }
        if found.pad.is_none() {
            found.pad = json.get("pad_token_id").and_then(serde_json::Value::as_i64);
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(ids: &[i64], vocab: usize) -> Generated {
        Generated {
            ids: vec![ids.to_vec()],
            logits: ids.iter().map(|&i| vec![vec![i as f32; vocab]]).collect(),
            prefill: Duration::from_millis(1),
            decode: Duration::from_millis(2),
            how: STEPS,
        }
    }

    #[test]
    fn rows_of_different_lengths_are_padded_and_special_tokens_found_beside_the_weights() {
        let all = Generated::concat(vec![one(&[5, 2], 3), one(&[7, 8, 9], 3)], 0);
        assert_eq!(all.ids, vec![vec![5, 2, 0], vec![7, 8, 9]]);
        assert_eq!(all.logits[2], vec![vec![0.0; 3], vec![9.0; 3]]);
        assert_eq!(all.prefill, Duration::from_millis(2));
        let dir = std::env::temp_dir().join(format!("archc-special-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("writable");
        let config = r#"{"eos_token_id": [2, 7], "pad_token_id": 0}"#;
        std::fs::write(dir.join("config.json"), config).expect("writable");
        let found = special_beside(&[dir.join("model.safetensors")]);
        assert_eq!(
            found,
            Special {
                eos: vec![2, 7],
                pad: Some(0)
            }
        );
        // generation_config.json comes first.
        std::fs::write(dir.join("generation_config.json"), r#"{"eos_token_id": 3}"#)
            .expect("writable");
        let found = special_beside(&[dir.join("model.safetensors")]);
        assert_eq!(
            found,
            Special {
                eos: vec![3],
                pad: Some(0)
            }
        );
        std::fs::remove_dir_all(&dir).ok();
        assert_eq!(special_beside(&[]), Special::default());
    }
}

/// Which derived graph a [`Stateful`] model runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pass {
    /// The prompt, from an empty State.
    Prefill,
    /// New positions after the State's.
    Step,
}

/// Runs a derived graph: the pass, its inputs (the tokens and the State's parts) and the
/// dims to bind besides the inputs' (`past`) → its outputs.
pub type RunPass<'a> = dyn FnMut(
        Pass,
        &HashMap<String, Tensor>,
        &HashMap<String, i64>,
    ) -> Result<Vec<(String, Tensor)>, String>
    + 'a;

/// A model with a derived step: the first call for a context runs the prefill, later calls
/// whose context extends the last one run a step of the new positions only.
pub struct Stateful<'r, 'a> {
    run: &'r mut RunPass<'a>,
    fresh: State,
    state: State,
    /// The rows the State holds.
    fed: Vec<Vec<i64>>,
    /// A primed prefix and the State after it (see [`Stateful::prime`]).
    prefix: Option<(Vec<Vec<i64>>, State)>,
    input: String,
    output: String,
    dtype: DType,
}

impl<'r, 'a> Stateful<'r, 'a> {
    /// A model whose passes `run` runs, reading tokens of `dtype` at `input` and choosing from
    /// `output`, with a State of this (empty) form.
    pub fn new(
        run: &'r mut RunPass<'a>,
        state: State,
        input: &str,
        output: &str,
        dtype: DType,
    ) -> Stateful<'r, 'a> {
        Stateful {
            run,
            fresh: state.clone(),
            state,
            fed: Vec::new(),
            prefix: None,
            input: input.to_string(),
            output: output.to_string(),
            dtype,
        }
    }

    /// The last position's logits of each row of `context` (see [`Forward`]).
    pub fn forward(&mut self, context: &[Vec<i64>]) -> Result<Vec<Vec<f32>>, String> {
        let extends = |fed: &[Vec<i64>]| {
            !fed.is_empty()
                && fed.len() == context.len()
                && fed
                    .iter()
                    .zip(context)
                    .all(|(f, c)| c.len() > f.len() && c.starts_with(f))
        };
        let extends = if extends(&self.fed) {
            true
        } else if let Some((rows, state)) = self.prefix.as_ref().filter(|(r, _)| extends(r)) {
            // A new context that starts with the primed prefix: its State, then a step.
            self.state.restore(state);
            self.fed = rows.clone();
            true
        } else {
            self.state.restore(&self.fresh);
            self.fed = vec![Vec::new(); context.len()];
            false
        };
        let from = self.fed.first().map_or(0, Vec::len);
        let new = context.first().map_or(0, Vec::len) - from;
        let ids: Vec<i64> = context.iter().flat_map(|r| r[from..].to_vec()).collect();
        // The State's parts are lent to the step, which reads them in place.
        let mut inputs = HashMap::new();
        self.state.lend(&mut inputs);
        inputs.insert(
            self.input.clone(),
            Tensor::int(self.dtype, vec![context.len(), new], ids),
        );
        let (pass, dims) = if extends {
            let past = i64::try_from(self.state.context()).unwrap_or(i64::MAX);
            (Pass::Step, HashMap::from([("past".to_string(), past)]))
        } else {
            (Pass::Prefill, HashMap::new())
        };
        let out = (self.run)(pass, &inputs, &dims);
        self.state.take_back(&mut inputs);
        let out = out?;
        let logits = last_rows(&out, &self.output, context.len())?;
        let mut parts: HashMap<String, Tensor> = out.into_iter().collect();
        self.state
            .absorb(&mut parts, new)
            .map_err(|e| e.to_string())?;
        // The rows grow by the new positions only: no copy of the whole context per step.
        for (f, c) in self.fed.iter_mut().zip(context) {
            f.extend_from_slice(&c[f.len()..]);
        }
        Ok(logits)
    }

    /// The State after the last pass.
    pub fn state(&self) -> &State {
        &self.state
    }

    /// Takes `state` as the State after running `fed` (its rows, as many as its batch), so
    /// that a context extending them steps from it (rows that ran apart, stacked: see
    /// [`crate::ragged`]).
    pub fn adopt(&mut self, state: State, fed: Vec<Vec<i64>>) {
        self.state = state;
        self.fed = fed;
    }

    /// Runs `prefix` (rows that later contexts start with, such as a chat template's system
    /// turn shared by several prompts) once and keeps a snapshot of its State: a context that
    /// extends it starts from the snapshot and steps the rest, instead of a prefill of all.
    pub fn prime(&mut self, prefix: &[Vec<i64>]) -> Result<(), String> {
        if prefix.iter().any(Vec::is_empty) || prefix.is_empty() {
            return Ok(());
        }
        self.fed.clear();
        self.prefix = None;
        self.forward(prefix)?;
        self.prefix = Some((prefix.to_vec(), self.state.snapshot()));
        Ok(())
    }

    /// A line on the State's size: caches and fixed parts, in bytes.
    pub fn state_summary(&self) -> String {
        let (mut caches, mut fixed) = ((0, 0usize), (0, 0usize));
        for ((_, bytes), update) in self.state.bytes().into_iter().zip(self.state.updates()) {
            let sum = match update {
                Update::Append(_) => &mut caches,
                Update::Replace => &mut fixed,
            };
            sum.0 += 1;
            sum.1 += bytes;
        }
        format!(
            "state at {} positions: {} caches {}, {} fixed parts {} (conv windows, scan carries)\n",
            self.state.context(),
            caches.0,
            bytes_text(caches.1),
            fixed.0,
            bytes_text(fixed.1),
        )
    }
}

/// Bytes for people: `1.5 MiB`.
fn bytes_text(b: usize) -> String {
    let b = b as f64;
    if b >= 1024.0 * 1024.0 {
        format!("{:.1} MiB", b / (1024.0 * 1024.0))
    } else if b >= 1024.0 {
        format!("{:.1} KiB", b / 1024.0)
    } else {
        format!("{b} B")
    }
}
