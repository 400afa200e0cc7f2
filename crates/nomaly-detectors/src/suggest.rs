//! "Did you mean" for names typed by hand (algorithms, options): the closest valid name by edit
//! distance, so `ntrees` points at `n_trees` instead of leaving the user to scan the list.

/// The candidate nearest to `name` (case-insensitive), if it is near enough to be a typo: at most
/// one edit for names up to 4 characters, two up to 8, three beyond; or one name contains the other.
pub fn closest<'a>(name: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let name = name.trim().to_ascii_lowercase();
    let allowed = match name.chars().count() {
        0 => return None,
        1..=4 => 1,
        5..=8 => 2,
        _ => 3,
    };
    let mut best: Option<(usize, &'a str)> = None;
    for candidate in candidates {
        let lower = candidate.to_ascii_lowercase();
        let contains = name.len() >= 3 && (lower.contains(&name) || name.contains(&lower));
        let distance = if contains {
            // rank containment after a real one-edit typo, before anything further away
            1.max(edit_distance(&name, &lower).min(allowed))
        } else {
            edit_distance(&name, &lower)
        };
        if distance <= allowed && best.is_none_or(|(d, _)| distance < d) {
            best = Some((distance, candidate));
        }
    }
    best.map(|(_, c)| c)
}

/// Optimal-string-alignment distance: insertions, deletions, substitutions and swaps of two
/// neighbouring characters each cost one.
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    // rows i-2, i-1 and i of the dynamic-programming table
    let mut before: Vec<usize> = vec![0; b.len() + 1];
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    let mut current = vec![0; b.len() + 1];
    for i in 1..=a.len() {
        current[0] = i;
        for j in 1..=b.len() {
            let substitution = usize::from(a[i - 1] != b[j - 1]);
            let mut d = (previous[j] + 1)
                .min(current[j - 1] + 1)
                .min(previous[j - 1] + substitution);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                d = d.min(before[j - 2] + 1);
            }
            current[j] = d;
        }
        std::mem::swap(&mut before, &mut previous);
        std::mem::swap(&mut previous, &mut current);
    }
    previous[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_near_names_only() {
        assert_eq!(edit_distance("ntrees", "n_trees"), 1);
        assert_eq!(edit_distance("ecdo", "ecod"), 1);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        let options = ["contamination", "threshold", "seed", "n_trees", "n_bins"];
        assert_eq!(closest("ntrees", options), Some("n_trees"));
        assert_eq!(closest("Contamnation", options), Some("contamination"));
        assert_eq!(closest("trees", options), Some("n_trees"));
        assert_eq!(closest("bins", options), Some("n_bins"));
        assert_eq!(closest("sede", options), Some("seed"));
        assert_eq!(closest("lof", ["zscore", "iforest", "ecod", "copod"]), None);
        assert_eq!(closest("x", options), None);
        assert_eq!(closest("", options), None);
    }
}
