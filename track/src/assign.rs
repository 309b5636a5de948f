//! Minimum-cost one-to-one assignment with gates (Hungarian method, `pathfinding`'s
//! Kuhn–Munkres on scaled integer costs), split into independent blocks first.

use pathfinding::kuhn_munkres::kuhn_munkres_min;
use pathfinding::matrix::Matrix;

/// Cost scale: costs are rounded to 1e-6.
const SCALE: f64 = 1e6;
/// Largest cost accepted (scaled costs stay far from overflow).
const MAX_COST: f64 = 1e3;

/// The pairs `(row, col)` of a minimum-cost assignment among the allowed pairs. `cost(r, c)` is
/// `None` for a pair the gates forbid; allowed costs must be finite and ≥ 0 (others are
/// forbidden). As many pairs as possible are assigned, then the cost is the least. Rows and
/// columns that only share forbidden pairs are solved apart (the result is the same, faster).
/// Deterministic; the pairs come sorted by row.
pub(crate) fn assign(
    rows: usize,
    cols: usize,
    mut cost: impl FnMut(usize, usize) -> Option<f64>,
) -> Vec<(usize, usize)> {
    let mut allowed: Vec<(usize, usize, i64)> = Vec::new();
    for r in 0..rows {
        for c in 0..cols {
            if let Some(v) = cost(r, c) {
                if v.is_finite() && v >= 0.0 {
                    allowed.push((r, c, (v.min(MAX_COST) * SCALE).round() as i64));
                }
            }
        }
    }
    // Connected blocks of rows and columns over the allowed pairs (union-find; columns are
    // numbered after the rows).
    let mut parent: Vec<usize> = (0..rows + cols).collect();
    fn find(parent: &mut [usize], mut x: usize) -> usize {
        while parent[x] != x {
            parent[x] = parent[parent[x]];
            x = parent[x];
        }
        x
    }
    for &(r, c, _) in &allowed {
        let (a, b) = (find(&mut parent, r), find(&mut parent, rows + c));
        if a != b {
            parent[a.max(b)] = a.min(b);
        }
    }
    let mut blocks: std::collections::BTreeMap<usize, Vec<(usize, usize, i64)>> =
        Default::default();
    for &(r, c, v) in &allowed {
        let root = find(&mut parent, r);
        blocks.entry(root).or_default().push((r, c, v));
    }
    let mut out = Vec::new();
    for pairs in blocks.values() {
        solve_block(pairs, &mut out);
    }
    out.sort_unstable();
    out
}

fn solve_block(pairs: &[(usize, usize, i64)], out: &mut Vec<(usize, usize)>) {
    if let [(r, c, _)] = pairs {
        out.push((*r, *c));
        return;
    }
    let mut rs: Vec<usize> = pairs.iter().map(|p| p.0).collect();
    let mut cs: Vec<usize> = pairs.iter().map(|p| p.1).collect();
    rs.sort_unstable();
    rs.dedup();
    cs.sort_unstable();
    cs.dedup();
    let max = pairs.iter().map(|p| p.2).max().unwrap_or(0);
    // A forbidden pair costs more than any assignment of allowed ones: the most pairs first.
    let forbidden = (max + 1).saturating_mul(rs.len().max(cs.len()) as i64 + 1);
    let transpose = rs.len() > cs.len();
    let (nr, nc) = if transpose {
        (cs.len(), rs.len())
    } else {
        (rs.len(), cs.len())
    };
    let mut m = Matrix::new(nr, nc, forbidden);
    for &(r, c, v) in pairs {
        let (ri, ci) = (
            rs.binary_search(&r).unwrap_or(0),
            cs.binary_search(&c).unwrap_or(0),
        );
        let (i, j) = if transpose { (ci, ri) } else { (ri, ci) };
        m[(i, j)] = v;
    }
    let (_, assignment) = kuhn_munkres_min(&m);
    for (i, &j) in assignment.iter().enumerate() {
        if m[(i, j)] >= forbidden {
            continue;
        }
        let (ri, ci) = if transpose { (j, i) } else { (i, j) };
        out.push((rs[ri], cs[ci]));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_the_cheapest_full_assignment() {
        let costs = [[1.0, 0.1, 5.0], [0.2, 1.0, 5.0]];
        assert_eq!(assign(2, 3, |r, c| Some(costs[r][c])), vec![(0, 1), (1, 0)]);
    }

    #[test]
    fn gates_forbid_pairs_and_blocks_solve_apart() {
        // Row 0 may only take column 2; rows 1 and 2 compete for column 0.
        let cost = |r: usize, c: usize| match (r, c) {
            (0, 2) => Some(0.9),
            (1, 0) => Some(0.3),
            (2, 0) => Some(0.1),
            (2, 1) => Some(0.5),
            _ => None,
        };
        // Most pairs first: row 1 gets column 0 and row 2 column 1.
        assert_eq!(assign(3, 3, cost), vec![(0, 2), (1, 0), (2, 1)]);
        assert!(assign(2, 2, |_, _| None).is_empty());
        assert!(assign(0, 4, |_, _| Some(1.0)).is_empty());
        assert!(assign(3, 1, |_, _| Some(f64::NAN)).is_empty());
        assert_eq!(assign(3, 1, |r, _| Some(r as f64 + 1.0)), vec![(0, 0)]);
    }
}
