//! What the leaderless world checks of anti-entropy (issue 14 point 7): that the replicas'
//! states agree (the quiet phase's end when it reads nothing), and that every node's Merkle
//! tree says of each key what its store holds (a tree left behind by a repair is invisible
//! to the stores' convergence: anti-entropy would find the trees differ for ever and the
//! states the same).
//!
//! A tombstone purge is seen as a key whose state was tombstones only before a node's step
//! and is gone after it; at that moment every other replica must hold the tombstones (its
//! context covers their dots), have purged them itself, or, if down, have held them when it
//! crashed. Otherwise the key could come back from that replica (Cassandra's
//! `gc_grace_seconds` problem).
//!
//! A node's tree is read through `REPLIKV.DIGEST <bucket>` stepped into it with a request id
//! no client uses, its reply taken from the batch's outputs and never dispatched: the
//! command reads, it changes nothing.

use super::World;
use bytes::Bytes;
use replikv_core::causality::Siblings;
use replikv_core::digest::{hex, DIGEST_BUCKETS};
use replikv_core::kv::{Reply, Request};
use replikv_core::leaderless::tree;
use replikv_core::node::{Input, Outbox, Output, RequestId};

/// The request id of the world's own digest probes; clients count up from 1.
const PROBE_REQUEST: RequestId = RequestId::MAX;

impl World {
    /// Every node is up and holds the same state of every key (none included).
    pub(super) fn states_agree(&self) -> bool {
        self.keys().iter().all(|key| {
            let mut states = self
                .nodes
                .iter()
                .map(|n| n.replica.as_ref().map(|r| r.leaderless().expect("leaderless").state_of(key.as_bytes()).ok()));
            let Some(first) = states.next() else { return true };
            first.is_some() && states.all(|s| s.is_some() && s == first)
        })
    }

    /// Node `i`'s `state` of `key` joined with the tombstones it purged of it, if any.
    pub(super) fn with_purged(&mut self, i: usize, key: &str, state: Option<Siblings>) -> Option<Siblings> {
        let Some(purged) = self.purged.get(&(i, key.to_string())) else { return state };
        let mut joined = state.unwrap_or_default();
        if let Err(e) = joined.merge(purged) {
            self.ground.broken.get_or_insert(format!("n{}'s state of {key} and its purged tombstones: {e}", i + 1));
        }
        Some(joined)
    }

    /// The keys whose state on node `i` is tombstones only, with that state.
    pub(super) fn tombstones_held(&mut self, i: usize) -> Vec<(String, Siblings)> {
        if self.nodes[i].replica.is_none() {
            return Vec::new();
        }
        let keys = self.keys();
        keys.into_iter()
            .filter_map(|k| self.state_of(i, &k).map(|s| (k, s)))
            .filter(|(_, s)| !s.is_empty() && s.values().iter().all(|v| v.is_tombstone()))
            .collect()
    }

    /// Node `i` just stepped, holding `before` (tombstones only) before: each key it no
    /// longer holds was purged; records a violation for each replica that lacked it.
    pub(super) fn check_purges(&mut self, i: usize, before: Vec<(String, Siblings)>) {
        if self.nodes[i].replica.is_none() {
            return;
        }
        for (key, was) in before {
            if self.state_of(i, &key).is_some() {
                continue;
            }
            let covers = |s: &Siblings| was.values().iter().all(|t| s.context().contains(t.dot));
            for j in (0..self.nodes.len()).filter(|&j| j != i) {
                let holds = match self.nodes[j].replica.is_some() {
                    true => self.state_of(j, &key).is_some_and(|s| covers(&s)),
                    false => self.nodes[j].before_crash.get(&key).is_some_and(covers),
                };
                let purged_too =
                    self.purged.get(&(j, key.clone())).is_some_and(|s| s.context().descends(was.context()));
                if !holds && !purged_too {
                    let line = format!("n{} purged {key}'s tombstone while n{} lacked it", i + 1, j + 1);
                    self.trace(line.clone());
                    self.purge_violations.push(line);
                }
            }
            self.trace(format!("n{} purged {key}'s tombstone", i + 1));
            let record = self.purged.entry((i, key)).or_default();
            if let Err(e) = record.merge(&was) {
                self.ground.broken.get_or_insert(format!("n{}'s purged tombstones do not merge: {e}", i + 1));
            }
        }
    }

    /// Every running node's tree holds, for every key, the entry its stored state makes (or
    /// the tombstone it purged, while remembered):
    /// `Err` names the first that does not.
    pub fn trees_match_stores(&mut self) -> Result<(), String> {
        for i in 0..self.nodes.len() {
            if self.nodes[i].replica.is_none() {
                continue;
            }
            for key in self.keys() {
                // A purged tombstone keeps its entry while the node remembers it.
                let stored = match self.state_or_purged(i, &key) {
                    Some(state) => {
                        let bytes = state.to_bytes().map_err(|e| e.to_string())?;
                        Some(hex(&tree::entry_hash(key.as_bytes(), &bytes)))
                    }
                    None => None,
                };
                let in_tree = self.tree_entry(i, &key)?;
                if in_tree != stored {
                    return Err(format!(
                        "n{}'s tree says {key} is {}, its store {}",
                        i + 1,
                        in_tree.as_deref().unwrap_or("absent"),
                        stored.as_deref().unwrap_or("absent")
                    ));
                }
            }
        }
        Ok(())
    }

    /// Node `i`'s tree entry of `key` (hex), from a digest of its bucket.
    fn tree_entry(&mut self, i: usize, key: &str) -> Result<Option<String>, String> {
        let bucket = tree::leaf_of(key.as_bytes()) as usize / (tree::LEAVES as usize / DIGEST_BUCKETS);
        let clock = self.nodes[i].clock.at(self.ground.now);
        let replica = self.nodes[i].replica.as_mut().expect("checked by the caller");
        let mut outbox = Outbox::default();
        let input = Input::Request { id: PROBE_REQUEST, request: Request::Digest { bucket: Some(bucket) } };
        replica.step(clock, input, &mut outbox).map_err(|e| format!("n{}'s digest: {e}", i + 1))?;
        let reply = outbox.drain_all().into_iter().find_map(|o| match o {
            Output::Reply { id: PROBE_REQUEST, reply } => Some(reply),
            _ => None,
        });
        let Some(Reply::Array(parts)) = reply else {
            return Err(format!("n{}'s digest of bucket {bucket}: {reply:?}", i + 1));
        };
        let Some(Reply::Array(entries)) = parts.get(1) else {
            return Err(format!("n{}'s digest of bucket {bucket}: {parts:?}", i + 1));
        };
        let key = Bytes::copy_from_slice(key.as_bytes());
        Ok(entries.iter().find_map(|e| match e {
            Reply::Array(pair) => match pair.as_slice() {
                [Reply::Bulk(k), Reply::Bulk(h)] if *k == key => Some(String::from_utf8_lossy(h).into_owned()),
                _ => None,
            },
            _ => None,
        }))
    }
}
