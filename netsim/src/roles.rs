//! Node roles and the selectors scenarios use to name nodes (`owner`, `worker:3`, `worker:0..4`,
//! `members`, comma-separated lists).

use serde::Serialize;

use crate::scenario::Scenario;
use crate::world::NodeIx;

/// What a node does in a scenario.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Publishes the program, approves, hosts the KB.
    Owner,
    /// Relay server.
    Relay,
    /// Member that submits results.
    Worker,
    /// Member that is revoked by the timeline.
    Revoked,
    /// Denied join; probes the KB.
    NonMember,
    /// Gossip only.
    Observer,
    /// A peer with its own client that attacks the owner (`hostile.attacks`).
    Hostile,
}

impl Role {
    /// Whether the node joins the program.
    pub fn is_member(self) -> bool {
        matches!(self, Role::Worker | Role::Revoked)
    }

    fn name(self) -> &'static str {
        match self {
            Role::Owner => "owner",
            Role::Relay => "relay",
            Role::Worker => "worker",
            Role::Revoked => "revoked",
            Role::NonMember => "non_member",
            Role::Observer => "observer",
            Role::Hostile => "hostile",
        }
    }
}

/// Which index holds which role.
#[derive(Debug, Clone)]
pub struct Layout {
    roles: Vec<Role>,
    /// Indices of workers without a listen address.
    unreachable: Vec<NodeIx>,
}

impl Layout {
    /// The layout of `s`: owner, relays, workers, revoked, non-members, observers, hostile.
    pub fn new(s: &Scenario) -> Layout {
        let n = &s.nodes;
        let mut roles = vec![Role::Owner];
        for (role, count) in [
            (Role::Relay, n.relays),
            (Role::Worker, n.workers),
            (Role::Revoked, n.revoked),
            (Role::NonMember, n.non_members),
            (Role::Observer, n.observers),
            (Role::Hostile, n.hostile),
        ] {
            roles.extend(std::iter::repeat_n(role, count));
        }
        let first_worker = 1 + n.relays;
        let unreachable = (first_worker + n.workers - n.unreachable_workers.min(n.workers)
            ..first_worker + n.workers)
            .collect();
        Layout { roles, unreachable }
    }

    /// Number of nodes.
    pub fn len(&self) -> usize {
        self.roles.len()
    }

    /// True when there are no nodes.
    pub fn is_empty(&self) -> bool {
        self.roles.is_empty()
    }

    /// The role of node `ix`.
    pub fn role(&self, ix: NodeIx) -> Role {
        self.roles.get(ix).copied().unwrap_or(Role::Observer)
    }

    /// Whether node `ix` has no listen address.
    pub fn unreachable(&self, ix: NodeIx) -> bool {
        self.unreachable.contains(&ix)
    }

    /// Indices with `role`, in order.
    pub fn with_role(&self, role: Role) -> Vec<NodeIx> {
        (0..self.roles.len())
            .filter(|&i| self.roles.get(i) == Some(&role))
            .collect()
    }

    /// A short label, e.g. `worker:3` (index within the role).
    pub fn label(&self, ix: NodeIx) -> String {
        let role = self.role(ix);
        let k = self.with_role(role).iter().position(|&i| i == ix);
        match (role, k) {
            (Role::Owner, _) => "owner".into(),
            (_, Some(k)) => format!("{}:{k}", role.name()),
            _ => format!("node:{ix}"),
        }
    }

    /// Resolves a selector to node indices (sorted, deduplicated).
    pub fn select(&self, selector: &str) -> Result<Vec<NodeIx>, String> {
        let mut out = Vec::new();
        for part in selector.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (name, range) = match part.split_once(':') {
                Some((n, r)) => (n, Some(r)),
                None => (part, None),
            };
            let pool: Vec<NodeIx> = match name {
                "owner" => self.with_role(Role::Owner),
                "relay" | "relays" => self.with_role(Role::Relay),
                "worker" | "workers" => self.with_role(Role::Worker),
                "revoked" => self.with_role(Role::Revoked),
                "non_member" | "non_members" => self.with_role(Role::NonMember),
                "observer" | "observers" => self.with_role(Role::Observer),
                "hostile" => self.with_role(Role::Hostile),
                "members" => (0..self.len())
                    .filter(|&i| self.role(i).is_member())
                    .collect(),
                "all" => (0..self.len()).collect(),
                "node" => (0..self.len()).collect(),
                other => return Err(format!("unknown node selector {other:?} in {selector:?}")),
            };
            let picked: Vec<NodeIx> = match range {
                None => pool,
                Some(r) => {
                    let (lo, hi) = match r.split_once("..") {
                        Some((a, b)) => (parse_ix(a, selector)?, parse_ix(b, selector)?),
                        None => {
                            let k = parse_ix(r, selector)?;
                            (k, k + 1)
                        }
                    };
                    if lo >= hi || hi > pool.len() {
                        return Err(format!(
                            "{part:?} is out of range: there are {} {name} nodes",
                            pool.len()
                        ));
                    }
                    pool.get(lo..hi).map(<[_]>::to_vec).unwrap_or_default()
                }
            };
            out.extend(picked);
        }
        if out.is_empty() {
            return Err(format!("selector {selector:?} names no node"));
        }
        out.sort_unstable();
        out.dedup();
        Ok(out)
    }
}

fn parse_ix(s: &str, selector: &str) -> Result<usize, String> {
    s.trim()
        .parse()
        .map_err(|_| format!("bad index {s:?} in selector {selector:?}"))
}
