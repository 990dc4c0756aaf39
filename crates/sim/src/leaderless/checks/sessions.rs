//! Leaderless session guarantees, judged from the history alone (no replica's state, no
//! oracle stamp, no session context): read-your-writes and monotonic reads, per session; and,
//! for the sessions promised nothing, how often each anomaly happened.
//!
//! # Which write is certainly not there
//!
//! Real time orders nothing here (a leaderless cluster has no single order of writes, and
//! under `lww` a skewed clock lets an older write win), so the checker reasons as the
//! protocol does, by causality, from what each session's client saw: every write acknowledged
//! in a session left a [`Receipt`] in the history, with the context of the state it made and
//! its dot.
//!
//! A write `F` *replaced* a write `W` when `F`'s receipt says so ([`Receipt::replaced`]): a
//! plain write replaced every other dot its context covers, a write with `CONTEXT` those its
//! token covers. Then no state whose context covers `F`'s can hold `W`:
//!
//! - `F`'s own state does not (its coordinator dropped what it replaced), yet its context
//!   covers `W`'s dot;
//! - a state that covers `F`'s context got `F`'s coordinator's entry from `F`'s state or from
//!   a later write of that coordinator, made on a state that had merged `F`'s; and a merge
//!   keeps a value only when the other side holds it or has not seen it, so once a state has
//!   seen `W` without holding it, no merge brings `W` back.
//!
//! The coordinator answers a session read only from a merge that covers the session's floor.
//! So a read whose floor holds `F`'s context must not return `W`; nor, when `F` was a SET,
//! nothing at all, unless a delete `F` did not replace could have made the nil: its
//! tombstone must be in the state read, so it was invoked before the read ended (a delete
//! whose outcome is indeterminate has no receipt, and counts as not replaced).
//!
//! # The floors
//!
//! Each session keeps, per key and per anomaly, the writes a later read must not be older
//! than (its *floors*):
//!
//! - **read-your-writes**: every write of the key the session had acknowledged (the front
//!   end's `written` joins their contexts);
//! - **monotonic reads**: every write an earlier read of the key returned (a read that holds
//!   a write covers that write's context; the front end's `seen` joins the reads' contexts).
//!
//! A read is *stale* against a floor when it returned a write the floor's write replaced,
//! or nothing where nothing explains it (above). A session is judged only on its own
//! guarantee; every session's reads are counted ([`crate::check::sessions::Figures`]),
//! which is how the sessions promised nothing show the lecture's anomalies.
//!
//! CAVEATS
//! - Sound, not complete: a read that returned a write concurrent with the floor's, or an
//!   older one the floor's write did not replace (a `CONTEXT` write that kept it as a
//!   sibling), is not stale here; nor a read that returned a write without a receipt (its
//!   outcome indeterminate), whose dot the client never learned.
//! - A nil read is no floor: it does not say which delete it saw.
//! - The floors assume what was acknowledged survives: with `fsync = never` a restart can lose
//!   the floor's write while an older one lives on elsewhere, so the run judges sessions only
//!   with `fsync = always` (and counts elsewhere).
//! - A tombstone purged everywhere takes the key's context with it (anti-entropy on); a write
//!   it had replaced could come back only through a replica that never held the tombstone,
//!   which the purge checker rules out.
//! - The dot is learned from the node the client sent its write to: every simulated node
//!   replicates every key, so that node coordinated the write.

use super::super::history::{show_context, LeaderlessHistory, Op, Outcome, Receipt};
use crate::check::sessions::{Anomaly, Judged};
use crate::history::ClientId;
use crate::session::Guarantee;
use std::collections::BTreeMap;

/// The anomalies a leaderless session can be promised against (consistent prefix is not
/// offered), in the order reports list them.
pub const ANOMALIES: [Anomaly; 2] = [Anomaly::StaleOwnWrite, Anomaly::MonotonicRegression];

/// A write as the history shows it.
#[derive(Clone, Copy, Debug)]
struct Write<'a> {
    /// A delete.
    delete: bool,
    /// When it was invoked.
    invoke_ms: u64,
    /// What its session learned when it was acknowledged (`None`: indeterminate, or not in a
    /// session).
    receipt: Option<&'a Receipt>,
}

/// Every write of a history, by number, and the deletes of each key.
struct Writes<'a> {
    /// Write number -> the write.
    all: BTreeMap<u64, Write<'a>>,
    /// Key -> its deletes' numbers.
    deletes: BTreeMap<&'a str, Vec<u64>>,
}

impl<'a> Writes<'a> {
    fn new(history: &'a LeaderlessHistory) -> Writes<'a> {
        let mut writes = Writes { all: BTreeMap::new(), deletes: BTreeMap::new() };
        for e in &history.events {
            let Some(number) = e.op.write() else { continue };
            let delete = matches!(e.op, Op::Del { .. });
            let receipt = match &e.outcome {
                Outcome::Written(receipt) => receipt.as_ref(),
                _ => None,
            };
            writes.all.insert(number, Write { delete, invoke_ms: e.invoke_ms, receipt });
            if delete {
                writes.deletes.entry(e.op.key()).or_default().push(number);
            }
        }
        writes
    }

    /// Why a read of `key` that returned `values` and ended at `complete_ms` certainly did not
    /// see write `floor`, if it did not.
    fn stale(&self, key: &str, floor: u64, values: &[u64], complete_ms: u64) -> Option<String> {
        let f = self.all.get(&floor)?;
        let receipt = f.receipt?;
        for &v in values.iter().filter(|&&v| v != floor) {
            let Some(seen) = self.all.get(&v).and_then(|w| w.receipt) else { continue };
            if receipt.replaced(seen.dot) {
                return Some(format!(
                    "got #{v} (dot {}:{}), which #{floor} (dot {}:{}, context {}) replaced",
                    seen.dot.node,
                    seen.dot.counter,
                    receipt.dot.node,
                    receipt.dot.counter,
                    show_context(&receipt.context)
                ));
            }
        }
        if !values.is_empty() || f.delete {
            return None;
        }
        let explained = self.deletes.get(key).into_iter().flatten().any(|&d| {
            let delete = &self.all[&d];
            delete.invoke_ms < complete_ms && delete.receipt.is_none_or(|r| !receipt.replaced(r.dot))
        });
        (!explained).then(|| {
            format!(
                "got nothing, though #{floor} (dot {}:{}) was a SET and no delete it did not replace was invoked before",
                receipt.dot.node, receipt.dot.counter
            )
        })
    }
}

/// Judges every session in `history` (the clients named in `sessions`; others are ignored).
pub fn check(history: &LeaderlessHistory, sessions: &BTreeMap<ClientId, Guarantee>) -> Judged {
    let writes = Writes::new(history);
    let mut judged = Judged::default();
    for (&client, &guarantee) in sessions {
        let figures = judged.figures.entry(guarantee).or_default();
        figures.sessions += 1;
        let mut events: Vec<_> = history.events.iter().filter(|e| e.client == client).collect();
        // One operation at a time per client: invocation order is the session's order.
        events.sort_by_key(|e| e.invoke_ms);
        let mut floors: BTreeMap<(Anomaly, &str), Vec<u64>> = BTreeMap::new();
        for e in events {
            let key = e.op.key();
            let (seen, complete_ms) = match (&e.op, &e.outcome, e.complete_ms) {
                (Op::Set { write, .. } | Op::Del { write, .. }, Outcome::Written(Some(_)), Some(_)) => {
                    floors.entry((Anomaly::StaleOwnWrite, key)).or_default().push(*write);
                    continue;
                }
                (Op::Read { .. }, Outcome::Read(seen), Some(c)) => (seen, c),
                _ => continue,
            };
            figures.reads += 1;
            for anomaly in ANOMALIES {
                let Some(list) = floors.get(&(anomaly, key)) else { continue };
                let tally = figures.tallies.entry(anomaly).or_default();
                tally.exposed += 1;
                let stale =
                    list.iter().find_map(|&f| writes.stale(key, f, &seen.values, complete_ms).map(|why| (f, why)));
                let Some((floor, why)) = stale else { continue };
                tally.seen += 1;
                if anomaly.guarantee() == guarantee {
                    let which = match anomaly {
                        Anomaly::StaleOwnWrite => "it had made",
                        _ => "it had read",
                    };
                    judged.violations.entry(anomaly).or_default().push(format!(
                        "client {client} ({}) read {key} on n{} at {}..{complete_ms} ms, after write #{floor} {which}, \
                         and {why}",
                        guarantee.name(),
                        e.node.map_or(0, |n| n + 1),
                        e.invoke_ms,
                    ));
                }
            }
            for &v in seen.values.iter().filter(|v| writes.all.get(v).is_some_and(|w| w.receipt.is_some())) {
                let floor = floors.entry((Anomaly::MonotonicRegression, key)).or_default();
                if !floor.contains(&v) {
                    floor.push(v);
                }
            }
        }
    }
    judged
}

#[cfg(test)]
mod tests;
