//! Joins that can never fire, found with dominators in O(E log V) so validating a large graph
//! stays cheap (the pairwise fixpoint it replaces was roughly cubic).
//!
//! A `joinMode: all` join whose upstreams `a` and `b` lie on different handles of the same
//! exclusive node (condition, switch, approval) outside any cycle waits forever: only one of
//! them can complete. Each (exclusive node, handle) pair becomes a virtual vertex between the
//! node and that handle's targets; then "every path to `a` takes handle `h` of `c`" means the
//! virtual vertex `(c, h)` dominates `a`, and such a conflict exists exactly when the nearest
//! common dominator of `a` and `b` is `c`, reached through two different virtual children.
//! Sorting a join's upstreams by dominator-tree preorder, each child subtree of `c` holding an
//! upstream borders another at an adjacent pair, so adjacent pairs suffice.

use super::graph::Graph;
use super::nodes;
use std::collections::HashMap;

const NONE: usize = usize::MAX;

/// `(join node, message)` for every `all` join that can never become ready.
pub(super) fn unsatisfiable_joins(graph: &Graph) -> Vec<(String, String)> {
    let Some(start) = graph.start() else {
        return vec![];
    };
    let ids: Vec<&str> = graph.nodes.keys().map(String::as_str).collect();
    let index: HashMap<&str, usize> = ids.iter().enumerate().map(|(i, id)| (*id, i)).collect();
    let n = ids.len();
    // Extended graph: real vertices 0..n, then one virtual vertex per (exclusive node, handle).
    let mut succ: Vec<Vec<usize>> = vec![vec![]; n];
    let mut real_succ: Vec<Vec<usize>> = vec![vec![]; n];
    let mut virtuals: HashMap<(usize, &str), usize> = HashMap::new();
    let mut owner: Vec<(usize, &str)> = vec![];
    let mut upstreams: Vec<Vec<usize>> = vec![vec![]; n];
    for e in &graph.edges {
        let (Some(&s), Some(&t)) = (index.get(e.source.as_str()), index.get(e.target.as_str()))
        else {
            continue;
        };
        real_succ[s].push(t);
        upstreams[t].push(s);
        if graph.nodes[&e.source].node_type.is_exclusive() {
            let v = *virtuals.entry((s, e.handle.as_str())).or_insert_with(|| {
                owner.push((s, e.handle.as_str()));
                succ.push(vec![]);
                succ[s].push(n + owner.len() - 1);
                n + owner.len() - 1
            });
            succ[v].push(t);
        } else {
            succ[s].push(t);
        }
    }
    let idom = dominators(&succ, index[start.id.as_str()]);
    let tree = DomTree::new(&idom, index[start.id.as_str()]);
    let cyclic = in_cycle(&real_succ);
    let virtual_of = |child: usize, parent: usize| child >= n && owner[child - n].0 == parent;

    let mut out = Vec::new();
    for (j, node) in graph.nodes.values().enumerate() {
        let ups = &mut upstreams[j];
        ups.sort_unstable();
        ups.dedup();
        if ups.len() < 2 || nodes::join_mode(&node.config) != "all" {
            continue;
        }
        let mut ordered: Vec<usize> = ups.iter().copied().filter(|&u| tree.reached(u)).collect();
        ordered.sort_unstable_by_key(|&u| tree.tin[u]);
        // Per common dominator: the first virtual child seen and the upstream under it.
        let mut seen: HashMap<usize, (usize, usize)> = HashMap::new();
        'pairs: for pair in ordered.windows(2) {
            let c = tree.lca(pair[0], pair[1]);
            if c >= n || !graph.nodes[ids[c]].node_type.is_exclusive() || cyclic[c] {
                continue;
            }
            for &u in pair {
                let Some(child) = tree.child_toward(c, u).filter(|&ch| virtual_of(ch, c)) else {
                    continue;
                };
                match seen.get(&c) {
                    None => {
                        seen.insert(c, (child, u));
                    }
                    Some(&(other, a)) if other != child => {
                        out.push((
                            node.id.clone(),
                            format!(
                                "join waits for all of {} and {}, but they lie on different branches \
                                 (`{}` and `{}`) of {}; use joinMode `any`",
                                ids[a],
                                ids[u],
                                owner[other - n].1,
                                owner[child - n].1,
                                ids[c]
                            ),
                        ));
                        break 'pairs;
                    }
                    Some(_) => {}
                }
            }
        }
    }
    out
}

/// Immediate dominators from `root` (Lengauer–Tarjan with path compression); `NONE` for the
/// root and for vertices it does not reach. Iterative, so a long chain cannot overflow a stack.
fn dominators(succ: &[Vec<usize>], root: usize) -> Vec<usize> {
    let n = succ.len();
    let mut pred: Vec<Vec<usize>> = vec![vec![]; n];
    for (v, ws) in succ.iter().enumerate() {
        for &w in ws {
            pred[w].push(v);
        }
    }
    // Depth-first preorder; marking on pop with the pusher as parent yields a DFS tree.
    let (mut dfnum, mut parent, mut vertex) = (vec![NONE; n], vec![NONE; n], vec![]);
    let mut stack = vec![(root, NONE)];
    while let Some((v, p)) = stack.pop() {
        if dfnum[v] != NONE {
            continue;
        }
        dfnum[v] = vertex.len();
        vertex.push(v);
        parent[v] = p;
        stack.extend(
            succ[v]
                .iter()
                .rev()
                .filter(|&&w| dfnum[w] == NONE)
                .map(|&w| (w, v)),
        );
    }
    let mut semi = dfnum.clone();
    let (mut ancestor, mut best): (Vec<usize>, Vec<usize>) = (vec![NONE; n], (0..n).collect());
    let (mut idom, mut samedom) = (vec![NONE; n], vec![NONE; n]);
    let mut bucket: Vec<Vec<usize>> = vec![vec![]; n];
    let mut path = Vec::new();
    // The vertex of lowest semidominator on the forest path above `v`, compressing the path.
    let mut eval = |v: usize, ancestor: &mut [usize], best: &mut [usize], semi: &[usize]| {
        path.clear();
        let mut x = v;
        while ancestor[ancestor[x]] != NONE {
            path.push(x);
            x = ancestor[x];
        }
        for &y in path.iter().rev() {
            let a = ancestor[y];
            if semi[best[a]] < semi[best[y]] {
                best[y] = best[a];
            }
            ancestor[y] = ancestor[a];
        }
        best[v]
    };
    for &w in vertex.iter().skip(1).rev() {
        let p = parent[w];
        let mut s = dfnum[p];
        for &v in &pred[w] {
            if dfnum[v] == NONE {
                continue;
            }
            let candidate = if dfnum[v] <= dfnum[w] {
                dfnum[v]
            } else {
                semi[eval(v, &mut ancestor, &mut best, &semi)]
            };
            s = s.min(candidate);
        }
        semi[w] = s;
        bucket[vertex[s]].push(w);
        ancestor[w] = p;
        for v in std::mem::take(&mut bucket[p]) {
            let y = eval(v, &mut ancestor, &mut best, &semi);
            if semi[y] == semi[v] {
                idom[v] = p;
            } else {
                samedom[v] = y;
            }
        }
    }
    for &w in vertex.iter().skip(1) {
        if samedom[w] != NONE {
            idom[w] = idom[samedom[w]];
        }
    }
    idom
}

/// The dominator tree with preorder intervals and binary lifting for ancestor queries.
struct DomTree {
    tin: Vec<usize>,
    tout: Vec<usize>,
    depth: Vec<usize>,
    /// `up[k][v]`: the 2^k-th ancestor of `v` (the root is its own ancestor).
    up: Vec<Vec<usize>>,
}

impl DomTree {
    fn new(idom: &[usize], root: usize) -> Self {
        let n = idom.len();
        let mut children: Vec<Vec<usize>> = vec![vec![]; n];
        for (v, &d) in idom.iter().enumerate() {
            if d != NONE {
                children[d].push(v);
            }
        }
        let (mut tin, mut tout, mut depth) = (vec![NONE; n], vec![NONE; n], vec![0; n]);
        let mut clock = 0;
        let mut stack = vec![(root, false)];
        while let Some((v, exiting)) = stack.pop() {
            if exiting {
                tout[v] = clock;
                continue;
            }
            tin[v] = clock;
            clock += 1;
            stack.push((v, true));
            for &c in &children[v] {
                depth[c] = depth[v] + 1;
                stack.push((c, false));
            }
        }
        let mut parent: Vec<usize> = idom.to_vec();
        parent[root] = root;
        for p in parent.iter_mut().filter(|p| **p == NONE) {
            *p = root;
        }
        let mut up = vec![parent];
        while (1usize << up.len()) < n.max(2) {
            let last = up.last().expect("one level exists");
            up.push(last.iter().map(|&a| last[a]).collect());
        }
        Self {
            tin,
            tout,
            depth,
            up,
        }
    }

    fn reached(&self, v: usize) -> bool {
        self.tin[v] != NONE
    }

    fn is_ancestor(&self, a: usize, v: usize) -> bool {
        self.tin[a] <= self.tin[v] && self.tout[v] <= self.tout[a]
    }

    fn lca(&self, mut a: usize, b: usize) -> usize {
        if self.is_ancestor(a, b) {
            return a;
        }
        for level in self.up.iter().rev() {
            if !self.is_ancestor(level[a], b) {
                a = level[a];
            }
        }
        self.up[0][a]
    }

    /// The child of `ancestor` on the tree path down to `v`; `None` when `v` is `ancestor`.
    fn child_toward(&self, ancestor: usize, mut v: usize) -> Option<usize> {
        if v == ancestor {
            return None;
        }
        for (k, level) in self.up.iter().enumerate().rev() {
            if self.depth[v] >= self.depth[ancestor] + 1 + (1 << k) {
                v = level[v];
            }
        }
        Some(v)
    }
}

/// Whether each vertex lies on a cycle (a strongly connected component of two or more, or a
/// self-loop), by Kosaraju's two passes with explicit stacks.
fn in_cycle(succ: &[Vec<usize>]) -> Vec<bool> {
    let n = succ.len();
    let mut order = Vec::with_capacity(n);
    let mut visited = vec![false; n];
    for root in 0..n {
        if visited[root] {
            continue;
        }
        visited[root] = true;
        let mut stack = vec![(root, 0)];
        while let Some(top) = stack.last_mut() {
            let v = top.0;
            if let Some(&w) = succ[v].get(top.1) {
                top.1 += 1;
                if !visited[w] {
                    visited[w] = true;
                    stack.push((w, 0));
                }
            } else {
                order.push(v);
                stack.pop();
            }
        }
    }
    let mut pred: Vec<Vec<usize>> = vec![vec![]; n];
    for (v, ws) in succ.iter().enumerate() {
        for &w in ws {
            pred[w].push(v);
        }
    }
    let mut component = vec![NONE; n];
    let mut sizes = Vec::new();
    for &root in order.iter().rev() {
        if component[root] != NONE {
            continue;
        }
        let id = sizes.len();
        sizes.push(0usize);
        component[root] = id;
        let mut stack = vec![root];
        while let Some(v) = stack.pop() {
            sizes[id] += 1;
            for &w in &pred[v] {
                if component[w] == NONE {
                    component[w] = id;
                    stack.push(w);
                }
            }
        }
    }
    (0..n)
        .map(|v| sizes[component[v]] > 1 || succ[v].contains(&v))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dominators_of_a_diamond_and_a_loop() {
        // 0 -> 1, 0 -> 2, 1 -> 3, 2 -> 3, 3 -> 4, 4 -> 3; 5 unreachable.
        let succ = vec![vec![1, 2], vec![3], vec![3], vec![4], vec![3], vec![0]];
        let idom = dominators(&succ, 0);
        assert_eq!(idom, [NONE, 0, 0, 0, 3, NONE]);
        let tree = DomTree::new(&idom, 0);
        assert_eq!(tree.lca(1, 2), 0);
        assert_eq!(tree.lca(4, 3), 3);
        assert_eq!(tree.child_toward(0, 4), Some(3));
        assert_eq!(tree.child_toward(3, 3), None);
        assert!(!tree.reached(5));
        assert_eq!(in_cycle(&succ), [false, false, false, true, true, false]);
    }

    /// Dominators by definition: `d` dominates `v` when `v` is unreachable without `d`.
    fn brute_idom(succ: &[Vec<usize>], root: usize) -> Vec<usize> {
        let reach = |skip: usize| {
            let mut seen = vec![false; succ.len()];
            let mut stack = vec![root];
            while let Some(v) = stack.pop() {
                if v == skip || seen[v] {
                    continue;
                }
                seen[v] = true;
                stack.extend(&succ[v]);
            }
            seen
        };
        let all = reach(NONE);
        let doms: Vec<Vec<usize>> = (0..succ.len())
            .map(|d| {
                let without = reach(d);
                (0..succ.len()).filter(|&v| all[v] && !without[v]).collect()
            })
            .collect();
        (0..succ.len())
            .map(|v| {
                if v == root || !all[v] {
                    return NONE;
                }
                // Strict dominators form a chain; the nearest dominates the fewest vertices.
                (0..succ.len())
                    .filter(|&d| d != v && doms[d].contains(&v))
                    .min_by_key(|&d| doms[d].len())
                    .expect("the root dominates every reached vertex")
            })
            .collect()
    }

    #[test]
    fn dominators_match_the_definition_on_random_graphs() {
        let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
        let mut next = |m: usize| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % m as u64) as usize
        };
        for _ in 0..300 {
            let n = 2 + next(12);
            let mut succ = vec![vec![]; n];
            for _ in 0..next(3 * n) {
                let (s, t) = (next(n), next(n));
                succ[s].push(t);
            }
            assert_eq!(dominators(&succ, 0), brute_idom(&succ, 0), "{succ:?}");
        }
    }
}
