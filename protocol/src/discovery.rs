//! Which programs a node remembers from the mesh.
//!
//! Announcements are cheap to forge: anyone can mint keys and sign valid manifests. The table of
//! known programs is therefore bounded, and a new program is never refused for lack of room;
//! instead the table evicts, so a flood can only churn the flooder's own entries, never lock
//! everyone out of learning a fresh program.
//!
//! * **Pinned** programs (the node's own, those it is a member of or joining) are never evicted and
//!   count against no cap; the node's own actions bound them.
//! * Every other (unpinned) program counts against its owner's cap ([`MAX_PROGRAMS_PER_OWNER`])
//!   and the global cap ([`MAX_UNPINNED_PROGRAMS`]).
//! * A new program is always admitted. If that puts its owner over the per-owner cap, the owner's
//!   oldest program goes; if it puts the table over the global cap, the oldest program of the owner
//!   holding the most unpinned programs goes (ties: the oldest program). "Oldest" is the least
//!   recently (re)announced: a newer announcement of a known program refreshes it. So one key can
//!   only churn its own programs, and many throwaway keys with one program each push out the
//!   least recently announced first: a live program that re-announces survives unless the
//!   attacker mints more than [`MAX_UNPINNED_PROGRAMS`] fresh programs between two of its
//!   announcements.
//! * At start, [`Discovery::restore`] rebuilds the same bounded table from stored rows.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use libp2p_identity::PeerId;

use crate::program::ProgramId;
use crate::Timestamp;

/// Most unpinned programs remembered per owner key.
pub const MAX_PROGRAMS_PER_OWNER: usize = 32;
/// Most unpinned programs remembered in all.
pub const MAX_UNPINNED_PROGRAMS: usize = 4096;

/// The table's caps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Most unpinned programs per owner.
    pub per_owner: usize,
    /// Most unpinned programs in all.
    pub unpinned: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            per_owner: MAX_PROGRAMS_PER_OWNER,
            unpinned: MAX_UNPINNED_PROGRAMS,
        }
    }
}

/// A program the table let go to make room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Evicted {
    /// The program.
    pub id: ProgramId,
    /// Its owner.
    pub owner: PeerId,
}

/// What [`Discovery::offer`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offer {
    /// A program the table did not hold: admitted, possibly evicting another.
    New {
        /// The program that made room, if one had to.
        evicted: Option<Evicted>,
    },
    /// A newer announcement of a known program: its value replaced, its age refreshed.
    Newer,
    /// Not newer than what the table holds: nothing changed.
    Stale,
}

#[derive(Debug, Clone)]
struct Slot<V> {
    owner: PeerId,
    published_at: Timestamp,
    /// Insertion order of the last (re)announcement: smaller is older.
    seq: u64,
    value: V,
}

/// The bounded table of known programs, each with a value `V` (the daemon keeps the verified
/// announcement there).
#[derive(Debug, Clone)]
pub struct Discovery<V> {
    limits: Limits,
    entries: HashMap<ProgramId, Slot<V>>,
    pins: HashSet<ProgramId>,
    /// Unpinned entries per owner, oldest first (by `seq`).
    owners: HashMap<PeerId, BTreeMap<u64, ProgramId>>,
    /// Owners by eviction priority: the last one is evicted from first (most unpinned entries,
    /// then the oldest entry).
    load: BTreeSet<(usize, Reverse<u64>, PeerId)>,
    unpinned: usize,
    next_seq: u64,
}

impl<V> Default for Discovery<V> {
    fn default() -> Self {
        Self::new(Limits::default())
    }
}

impl<V> Discovery<V> {
    /// An empty table with `limits` (each at least 1).
    pub fn new(limits: Limits) -> Self {
        Discovery {
            limits: Limits {
                per_owner: limits.per_owner.max(1),
                unpinned: limits.unpinned.max(1),
            },
            entries: HashMap::new(),
            pins: HashSet::new(),
            owners: HashMap::new(),
            load: BTreeSet::new(),
            unpinned: 0,
            next_seq: 0,
        }
    }

    /// Rebuilds the table from stored rows `(id, owner, published_at, value)`: every pinned row is
    /// kept; the others are offered oldest first, so what remains is what the table would hold had
    /// it seen them in that order (the newest, within the caps). Returns the table and the ids of
    /// the rows left out (the caller deletes them).
    pub fn restore(
        limits: Limits,
        pins: impl IntoIterator<Item = ProgramId>,
        mut rows: Vec<(ProgramId, PeerId, Timestamp, V)>,
    ) -> (Self, Vec<ProgramId>) {
        let mut table = Self::new(limits);
        for id in pins {
            table.pin(id);
        }
        rows.sort_by_key(|(id, _, at, _)| (*at, *id));
        let mut dropped = Vec::new();
        for (id, owner, at, value) in rows {
            match table.offer(id, owner, at, value) {
                Offer::New { evicted: Some(e) } => dropped.push(e.id),
                Offer::Stale => dropped.push(id),
                Offer::New { evicted: None } | Offer::Newer => {}
            }
        }
        // A duplicate row replaced by a newer one is not dropped from the store: it is the same id.
        let kept: HashSet<ProgramId> = table.entries.keys().copied().collect();
        dropped.retain(|id| !kept.contains(id));
        dropped.sort();
        dropped.dedup();
        (table, dropped)
    }

    /// The caps.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Programs held (pinned or not).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when no program is held.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Unpinned programs held.
    pub fn unpinned_len(&self) -> usize {
        self.unpinned
    }

    /// Unpinned programs held of `owner`.
    pub fn owner_len(&self, owner: &PeerId) -> usize {
        self.owners.get(owner).map_or(0, BTreeMap::len)
    }

    /// Whether `id` is held.
    pub fn contains(&self, id: &ProgramId) -> bool {
        self.entries.contains_key(id)
    }

    /// The value held for `id`.
    pub fn get(&self, id: &ProgramId) -> Option<&V> {
        self.entries.get(id).map(|s| &s.value)
    }

    /// When the held announcement of `id` was published.
    pub fn published_at(&self, id: &ProgramId) -> Option<Timestamp> {
        self.entries.get(id).map(|s| s.published_at)
    }

    /// Every program held, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (&ProgramId, &V)> {
        self.entries.iter().map(|(id, s)| (id, &s.value))
    }

    /// Whether `id` is pinned.
    pub fn is_pinned(&self, id: &ProgramId) -> bool {
        self.pins.contains(id)
    }

    /// Offers an announcement of `id` by `owner`. A new program is always admitted (evicting at
    /// most one other); a known one is replaced only by a newer `published_at`.
    pub fn offer(
        &mut self,
        id: ProgramId,
        owner: PeerId,
        published_at: Timestamp,
        value: V,
    ) -> Offer {
        let seq = self.bump();
        if let Some(slot) = self.entries.get_mut(&id) {
            if published_at <= slot.published_at {
                return Offer::Stale;
            }
            let (old_seq, slot_owner) = (slot.seq, slot.owner);
            slot.published_at = published_at;
            slot.value = value;
            slot.seq = seq;
            if !self.pins.contains(&id) {
                self.detach(slot_owner, old_seq);
                self.attach(slot_owner, seq, id);
            }
            return Offer::Newer;
        }
        self.entries.insert(
            id,
            Slot {
                owner,
                published_at,
                seq,
                value,
            },
        );
        if self.pins.contains(&id) {
            return Offer::New { evicted: None };
        }
        self.attach(owner, seq, id);
        Offer::New {
            evicted: self.enforce(owner),
        }
    }

    /// Pins `id` (held or not yet): it is never evicted and counts against no cap until unpinned.
    pub fn pin(&mut self, id: ProgramId) {
        if !self.pins.insert(id) {
            return;
        }
        if let Some((owner, seq)) = self.entries.get(&id).map(|s| (s.owner, s.seq)) {
            self.detach(owner, seq);
        }
    }

    /// Unpins `id`; if that puts the table over a cap, one program is evicted (possibly `id`).
    pub fn unpin(&mut self, id: ProgramId) -> Option<Evicted> {
        if !self.pins.remove(&id) {
            return None;
        }
        let (owner, seq) = self.entries.get(&id).map(|s| (s.owner, s.seq))?;
        self.attach(owner, seq, id);
        self.enforce(owner)
    }

    /// Forgets `id` (its pin stays).
    pub fn remove(&mut self, id: &ProgramId) -> Option<V> {
        let slot = self.entries.remove(id)?;
        if !self.pins.contains(id) {
            self.detach(slot.owner, slot.seq);
        }
        Some(slot.value)
    }

    /// Checks the table's invariants (tests): the caps hold and the indexes agree with the entries.
    pub fn check_bounds(&self) -> Result<(), String> {
        if self.unpinned > self.limits.unpinned {
            return Err(format!(
                "{} unpinned programs, cap {}",
                self.unpinned, self.limits.unpinned
            ));
        }
        let mut counted = 0;
        for (owner, list) in &self.owners {
            if list.is_empty() || list.len() > self.limits.per_owner {
                return Err(format!("owner {owner} holds {} programs", list.len()));
            }
            let first = list.keys().next().copied().unwrap_or(0);
            if !self.load.contains(&(list.len(), Reverse(first), *owner)) {
                return Err(format!("owner {owner} is missing from the eviction order"));
            }
            for (seq, id) in list {
                let ok = self
                    .entries
                    .get(id)
                    .is_some_and(|s| s.seq == *seq && s.owner == *owner)
                    && !self.pins.contains(id);
                if !ok {
                    return Err(format!("index entry {id} disagrees with the table"));
                }
            }
            counted += list.len();
        }
        let unpinned = self
            .entries
            .keys()
            .filter(|id| !self.pins.contains(id))
            .count();
        if counted != self.unpinned
            || unpinned != self.unpinned
            || self.load.len() != self.owners.len()
        {
            return Err("unpinned counts disagree".into());
        }
        Ok(())
    }

    fn bump(&mut self) -> u64 {
        self.next_seq = self.next_seq.saturating_add(1);
        self.next_seq
    }

    /// Evicts until the caps hold again after `owner` gained one unpinned entry (at most one
    /// eviction is ever needed).
    fn enforce(&mut self, owner: PeerId) -> Option<Evicted> {
        if self.owner_len(&owner) > self.limits.per_owner {
            return self.evict_oldest_of(owner);
        }
        if self.unpinned > self.limits.unpinned {
            let (_, _, heaviest) = self.load.last().copied()?;
            return self.evict_oldest_of(heaviest);
        }
        None
    }

    fn evict_oldest_of(&mut self, owner: PeerId) -> Option<Evicted> {
        let (seq, id) = self
            .owners
            .get(&owner)
            .and_then(|l| l.iter().next().map(|(s, id)| (*s, *id)))?;
        self.detach(owner, seq);
        self.entries.remove(&id);
        Some(Evicted { id, owner })
    }

    fn load_key(&self, owner: PeerId) -> Option<(usize, Reverse<u64>, PeerId)> {
        let list = self.owners.get(&owner)?;
        let first = *list.keys().next()?;
        Some((list.len(), Reverse(first), owner))
    }

    fn attach(&mut self, owner: PeerId, seq: u64, id: ProgramId) {
        if let Some(k) = self.load_key(owner) {
            self.load.remove(&k);
        }
        if self
            .owners
            .entry(owner)
            .or_default()
            .insert(seq, id)
            .is_none()
        {
            self.unpinned = self.unpinned.saturating_add(1);
        }
        if let Some(k) = self.load_key(owner) {
            self.load.insert(k);
        }
    }

    fn detach(&mut self, owner: PeerId, seq: u64) {
        if let Some(k) = self.load_key(owner) {
            self.load.remove(&k);
        }
        let Some(list) = self.owners.get_mut(&owner) else {
            return;
        };
        if list.remove(&seq).is_some() {
            self.unpinned = self.unpinned.saturating_sub(1);
        }
        if list.is_empty() {
            self.owners.remove(&owner);
        }
        if let Some(k) = self.load_key(owner) {
            self.load.insert(k);
        }
    }
}

#[cfg(test)]
mod tests;
