//! Prompts of different lengths decoded as one batch.
//!
//! A derived step runs every row of a batch over the same number of past positions, so rows
//! of different lengths cannot step together at once. They catch up instead: each row runs
//! alone (its prefill, then single steps) until it has fed as many positions as the longest
//! prompt, choosing its own tokens as it goes, exactly as it would alone. From there every
//! row has the same number of positions: their States are stacked along the batch axis
//! ([`State::stack`]) and each step runs all the rows at once, reading each weight once for
//! all of them. A row that stops (an end-of-sequence token, its budget spent) while alone
//! does not join.
//!
//! The cost over batching without masks is one single-row step per token of difference
//! between a prompt and the longest. Greedily, each row's tokens and logits are those of
//! decoding it alone; sampled, each row draws from its own logits, the rows together from one
//! random stream once they step together.

use std::time::Duration;

use crate::generation::{decode, decode_from, Decoding, Generated, Stateful, STEPS};
use crate::state::State;

/// Decodes `prompts` (one row each, of any lengths) with `model` (see the module doc): the
/// rows of the result are the prompts', in order, shorter ones padded as
/// [`Generated::concat`] pads them; and how many rows stepped together.
pub fn decode_ragged(
    model: &mut Stateful,
    prompts: &[Vec<i64>],
    d: &Decoding,
) -> Result<(Generated, usize), String> {
    let longest = prompts.iter().map(Vec::len).max().unwrap_or(0);
    let mut alone = Vec::with_capacity(prompts.len());
    // Rows that join: their index, their State, and their context so far.
    let mut joining: Vec<(usize, State, Vec<i64>)> = Vec::new();
    for (r, prompt) in prompts.iter().enumerate() {
        // The prefill chooses one token; each step after it, one more.
        let catch_up = Decoding {
            max_new: (longest - prompt.len() + 1).min(d.max_new),
            ..d.clone()
        };
        let mut forward = |c: &[Vec<i64>]| model.forward(c);
        let g = decode(&mut forward, vec![prompt.clone()], &catch_up, &mut |_| {})?;
        let ids = g.ids.first().cloned().unwrap_or_default();
        let stopped = ids.iter().any(|t| d.eos.contains(t));
        if !stopped && ids.len() < d.max_new {
            let mut context = prompt.clone();
            context.extend(&ids);
            joining.push((r, model.state().clone(), context));
        }
        alone.push(g);
    }
    let together = match joining.as_slice() {
        [] => None,
        rows => {
            let states: Vec<State> = rows.iter().map(|j| j.1.clone()).collect();
            let stacked = State::stack(&states).map_err(|e| e.to_string())?;
            let contexts: Vec<Vec<i64>> = rows.iter().map(|j| j.2.clone()).collect();
            // Every row has fed all but its last token.
            let fed = contexts.iter().map(|c| c[..c.len() - 1].to_vec()).collect();
            model.adopt(stacked, fed);
            let counts: Vec<usize> = rows.iter().map(|j| alone[j.0].ids[0].len()).collect();
            let mut forward = |c: &[Vec<i64>]| model.forward(c);
            Some(decode_from(
                &mut forward,
                contexts,
                &counts,
                d,
                &mut |_| {},
            )?)
        }
    };
    let joined: Vec<usize> = joining.iter().map(|j| j.0).collect();
    Ok((merge(alone, &joined, together, d), joined.len()))
}

/// Each row's tokens and logits: alone, then (rows `joined`, in order) together, up to the
/// budget; rows padded to the longest.
fn merge(
    alone: Vec<Generated>,
    joined: &[usize],
    together: Option<Generated>,
    d: &Decoding,
) -> Generated {
    let mut rows = Vec::with_capacity(alone.len());
    let (mut prefill, mut rest) = (Duration::ZERO, Duration::ZERO);
    for (r, g) in alone.into_iter().enumerate() {
        prefill += g.prefill;
        rest += g.decode;
        let mut ids = g.ids.into_iter().next().unwrap_or_default();
        let mut logits: Vec<Vec<Vec<f32>>> = g
            .logits
            .into_iter()
            .map(|step| step.into_iter().take(1).collect())
            .collect();
        if let (Some(j), Some(t)) = (joined.iter().position(|&x| x == r), &together) {
            let more = d.max_new.saturating_sub(ids.len());
            ids.extend(t.ids[j].iter().take(more));
            logits.extend(t.logits.iter().take(more).map(|step| match step.get(j) {
                Some(row) => vec![row.clone()],
                None => Vec::new(),
            }));
        }
        rows.push(Generated {
            ids: vec![ids],
            logits,
            prefill: Duration::ZERO,
            decode: Duration::ZERO,
            how: STEPS,
        });
    }
    if let Some(t) = &together {
        rest += t.prefill + t.decode;
    }
    let pad = d.pad.or(d.eos.first().copied()).unwrap_or(0);
    let mut all = Generated::concat(rows, pad);
    all.prefill = prefill;
    all.decode = rest;
    all
}
