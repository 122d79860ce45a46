//! "Did you mean …?": the closest names to a misspelt one.

/// How many characters of each name [`edit_distance`] compares. Names come from user files (a
/// safetensors header may hold 50,000-character names); comparing a bounded prefix keeps each
/// comparison to a few thousand steps and a few hundred bytes.
pub const MAX_COMPARED: usize = 64;

/// The Damerau–Levenshtein distance (optimal string alignment: insertions, deletions,
/// substitutions and swaps of neighbours) between the first [`MAX_COMPARED`] characters of `a`
/// and of `b`. Three rows of the table are kept, not the whole table.
pub fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().take(MAX_COMPARED).collect();
    let b: Vec<char> = b.chars().take(MAX_COMPARED).collect();
    // Rows i-2, i-1 and i of the table.
    let mut before: Vec<usize> = vec![0; b.len() + 1];
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut row: Vec<usize> = vec![0; b.len() + 1];
    for i in 1..=a.len() {
        row[0] = i;
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (prev[j] + 1).min(row[j - 1] + 1).min(prev[j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(before[j - 2] + 1);
            }
            row[j] = best;
        }
        std::mem::swap(&mut before, &mut prev);
        std::mem::swap(&mut prev, &mut row);
    }
    prev[b.len()]
}

/// The candidate closest to `name`, if it is close enough to be a typo (a third of the
/// length, at least one edit, or a difference of case only). Candidates whose lengths differ by more than that cannot be
/// close enough and are skipped without comparing them.
pub fn closest<'a>(name: &str, candidates: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    let len = name.chars().count();
    candidates
        .filter_map(|c| {
            // `SEQ` for `seq` is a typo however many letters differ.
            if c.eq_ignore_ascii_case(name) {
                return Some((0, c));
            }
            let clen = c.chars().count();
            let allowed = (len.max(clen) / 3).max(1);
            if len.abs_diff(clen) > allowed || len.max(clen) > MAX_COMPARED {
                return None;
            }
            let d = edit_distance(name, c);
            (d <= allowed).then_some((d, c))
        })
        .min()
        .map(|(_, c)| c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn swaps_count_once_and_strangers_are_not_typos() {
        assert_eq!(edit_distance("haeds", "heads"), 1);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        let names = ["heads", "kv_heads", "rope"];
        assert_eq!(closest("haeds", names.iter().copied()), Some("heads"));
        assert_eq!(closest("causal", names.iter().copied()), None);
    }

    #[test]
    fn long_names_are_compared_in_bounded_time_and_memory() {
        let a = "a".repeat(50_000);
        let b = "b".repeat(50_000);
        assert_eq!(edit_distance(&a, &b), MAX_COMPARED);
        assert_eq!(closest(&a, [b.as_str()].into_iter()), None);
    }
}
