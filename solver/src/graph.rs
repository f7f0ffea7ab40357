//! The build graph: a petgraph DAG of vertices, each with a caller-supplied definition digest,
//! ordered inputs (parents) and an [`Op`] to run.
//!
//! The graph knows nothing of Dockerfiles: a vertex is a name for progress and errors, a digest
//! of what it does, the vertices whose results it consumes, and the op that produces its own
//! result. Edges go from a parent (input) to the vertex that consumes it.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::Arc;

use petgraph::algo::{tarjan_scc, toposort};
use petgraph::graph::{DiGraph, NodeIndex};
use petgraph::visit::EdgeRef;
use petgraph::Direction;

use crate::digest::Digest;
use crate::schedule::Op;
use crate::{Error, Result};

/// Identifies a vertex of one [`Graph`]. Cheap to copy; meaningless in another graph.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct VertexId(pub(crate) NodeIndex<u32>);

impl VertexId {
    /// Position of the vertex in insertion order (stable for the life of the graph).
    pub fn index(self) -> usize {
        self.0.index()
    }
}

impl fmt::Display for VertexId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "v{}", self.0.index())
    }
}

impl fmt::Debug for VertexId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// What the caller knows about one step of the build.
pub struct Vertex<T> {
    /// Shown in progress events and errors, e.g. `[build 3/5] RUN make`.
    pub name: Arc<str>,
    /// Stable digest of the op's fully expanded definition (see
    /// [`DigestBuilder`](crate::DigestBuilder)). Two vertices with equal definitions and equal
    /// inputs are the same vertex and run once.
    pub definition: Digest,
    /// Runs the step and may supply an input-content digest.
    pub op: Arc<dyn Op<T>>,
    /// Never look this vertex up in the cache and never record it (it still runs only once per
    /// build).
    pub never_cache: bool,
}

impl<T> Vertex<T> {
    pub fn new(name: impl Into<Arc<str>>, definition: Digest, op: Arc<dyn Op<T>>) -> Self {
        Vertex {
            name: name.into(),
            definition,
            op,
            never_cache: false,
        }
    }

    /// Sets [`Vertex::never_cache`].
    pub fn never_cache(mut self, never: bool) -> Self {
        self.never_cache = never;
        self
    }
}

impl<T> Clone for Vertex<T> {
    fn clone(&self) -> Self {
        Vertex {
            name: self.name.clone(),
            definition: self.definition,
            op: self.op.clone(),
            never_cache: self.never_cache,
        }
    }
}

pub(crate) struct Node<T> {
    pub(crate) vertex: Vertex<T>,
    /// Parents in input order; a parent may appear more than once.
    pub(crate) inputs: Vec<VertexId>,
}

/// A DAG of build vertices. Built by the caller, then handed to
/// [`Solver::solve`](crate::Solver::solve), which rejects cycles.
pub struct Graph<T> {
    pub(crate) g: DiGraph<Node<T>, ()>,
}

impl<T> Default for Graph<T> {
    fn default() -> Self {
        Graph { g: DiGraph::new() }
    }
}

impl<T> Graph<T> {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a vertex whose inputs are `inputs`, in order.
    ///
    /// Errors with [`Error::UnknownVertex`] if an input is not a vertex of this graph.
    pub fn add(&mut self, vertex: Vertex<T>, inputs: &[VertexId]) -> Result<VertexId> {
        for &i in inputs {
            self.check(i)?;
        }
        let id = VertexId(self.g.add_node(Node {
            vertex,
            inputs: inputs.to_vec(),
        }));
        for &i in inputs {
            self.g.add_edge(i.0, id.0, ());
        }
        Ok(id)
    }

    /// Appends `parent` to the inputs of `vertex`. Unlike [`Graph::add`] this can refer to a
    /// vertex added later, so it can create a cycle; [`Graph::check_acyclic`] (called by the
    /// solver) reports it.
    pub fn add_input(&mut self, vertex: VertexId, parent: VertexId) -> Result<()> {
        self.check(vertex)?;
        self.check(parent)?;
        self.g.add_edge(parent.0, vertex.0, ());
        self.g[vertex.0].inputs.push(parent);
        Ok(())
    }

    pub fn vertex(&self, id: VertexId) -> Option<&Vertex<T>> {
        self.g.node_weight(id.0).map(|n| &n.vertex)
    }

    /// The inputs of `id` in order (empty for an unknown id).
    pub fn inputs(&self, id: VertexId) -> &[VertexId] {
        self.g.node_weight(id.0).map_or(&[], |n| &n.inputs)
    }

    pub fn len(&self) -> usize {
        self.g.node_count()
    }

    pub fn is_empty(&self) -> bool {
        self.g.node_count() == 0
    }

    /// All vertex ids in insertion order.
    pub fn ids(&self) -> impl Iterator<Item = VertexId> + '_ {
        self.g.node_indices().map(VertexId)
    }

    fn check(&self, id: VertexId) -> Result<()> {
        if self.g.node_weight(id.0).is_some() {
            Ok(())
        } else {
            Err(Error::UnknownVertex { vertex: id })
        }
    }

    /// Errors with [`Error::Cycle`] naming the vertices of one cycle, in dependency order
    /// (each vertex is an input of the next; the first is repeated at the end).
    pub fn check_acyclic(&self) -> Result<()> {
        if toposort(&self.g, None).is_ok() {
            return Ok(());
        }
        for scc in tarjan_scc(&self.g) {
            let self_loop = scc.len() == 1 && self.g.contains_edge(scc[0], scc[0]);
            if scc.len() > 1 || self_loop {
                let cycle = self.cycle_path(&scc);
                let names = cycle
                    .iter()
                    .map(|n| self.g[*n].vertex.name.to_string())
                    .collect();
                return Err(Error::Cycle { names });
            }
        }
        // toposort failed, so tarjan must have found a cycle; keep a defensive answer anyway
        Err(Error::Cycle { names: Vec::new() })
    }

    /// A concrete cycle inside a strongly connected component: walk edges that stay in the
    /// component until a node repeats, then cut the path at its first occurrence.
    fn cycle_path(&self, scc: &[NodeIndex<u32>]) -> Vec<NodeIndex<u32>> {
        let members: HashSet<_> = scc.iter().copied().collect();
        // start from the lowest index so the answer is deterministic
        let start = scc.iter().copied().min_by_key(|n| n.index());
        let Some(mut cur) = start else {
            return Vec::new();
        };
        let mut path = vec![cur];
        let mut seen: HashMap<NodeIndex<u32>, usize> = HashMap::from([(cur, 0)]);
        loop {
            let next = self
                .g
                .edges_directed(cur, Direction::Outgoing)
                .map(|e| e.target())
                .filter(|t| members.contains(t))
                .min_by_key(|t| t.index());
            let Some(next) = next else {
                return path;
            };
            if let Some(&at) = seen.get(&next) {
                let mut cycle = path.split_off(at);
                cycle.push(next);
                return cycle;
            }
            seen.insert(next, path.len());
            path.push(next);
            cur = next;
        }
    }

    /// The vertices `targets` need (targets and their transitive inputs).
    pub(crate) fn needed(&self, targets: &[VertexId]) -> Result<HashSet<VertexId>> {
        let mut seen = HashSet::new();
        let mut stack = Vec::new();
        for &t in targets {
            self.check(t)?;
            stack.push(t);
        }
        while let Some(v) = stack.pop() {
            if seen.insert(v) {
                stack.extend(self.inputs(v).iter().copied());
            }
        }
        Ok(seen)
    }

    /// Vertex ids in an order where every input precedes its consumers. Requires a DAG.
    pub(crate) fn topo_order(&self) -> Result<Vec<VertexId>> {
        self.check_acyclic()?;
        toposort(&self.g, None)
            .map(|v| v.into_iter().map(VertexId).collect())
            .map_err(|_| Error::Cycle { names: Vec::new() })
    }
}
