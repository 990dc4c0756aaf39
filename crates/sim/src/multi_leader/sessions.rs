//! Session guarantees in a multi-leader cluster, judged from the history alone (no replica's
//! state, no stamp, no session position): read-your-writes, monotonic reads and consistent
//! prefix per session, in the vocabulary of the single-leader checker
//! ([`crate::check::sessions`]: its [`Anomaly`], `Figures` and [`Judged`]); and, for the
//! sessions promised nothing, how often each anomaly happened.
//!
//! A session lives in one datacenter: it writes on that datacenter's leader, reads from any
//! of its nodes, and its positions are of that datacenter's log ([`crate::session`]). Its
//! guarantee is about that log's order. Writes of other datacenters come into the log when
//! their shipments are applied, and may then legitimately win (`lww`, even a write invoked
//! earlier, its clock being ahead), join the value (`merge`) or stand beside it (`app`): a
//! read that returns such a write is never called stale here.
//!
//! # Which write is certainly dead
//!
//! Four facts, checked against `replikv_core::multi_leader` and `replikv_core::causality`:
//!
//! 1. **Dead stays dead.** Along a datacenter's log a key's causal context only grows, and a
//!    write whose dot the context covers but which the state no longer holds never comes
//!    back: [`Siblings::merge`](replikv_core::causality::Siblings::merge) keeps an arriving sibling only if this side has not seen its
//!    dot, a local write drops siblings and adds only its own, and `keep_winner` and the
//!    sibling bound only drop. (`receive` merges, then under `lww` keeps the winner; a change
//!    that cannot be merged or stored leaves the state as it was.)
//! 2. **A plain write replaces everything.** A SET without `CONTEXT`, or a DEL, is made with
//!    its leader's whole context of the key (`Causal::write`), so the state right after it
//!    holds that write alone. (A DEL of a key with no live value writes nothing; everything
//!    older was dead already, so the conclusion stands.) (A `SET ... CONTEXT` replaces only what its token names: it
//!    replaces nothing certain, and sets no floor.)
//! 3. **Same-datacenter order.** A write of the session's datacenter acknowledged before time
//!    `t` precedes, in that datacenter's log, every record appended after `t` (the argument
//!    of [`crate::check::sessions`]: it was in its leader's log when acknowledged, and where
//!    acknowledgements survive a failover, every later leader's log holds it first). A write
//!    is appended after its invocation, and so is a shipment applying another datacenter's
//!    write, which was made after that write's invocation.
//! 4. **A read names every live write.** Under `lww` a state holds one sibling (every write
//!    and every arrival keeps only the winner) and GET returns it; under `merge` GET joins
//!    every live value; under `app` REPLIKV.SIBLINGS lists every sibling. Nil means every
//!    surviving write is a delete (a state once written never empties).
//!
//! Call a write **older than `t`** when it is of the session's datacenter and was
//! acknowledged before `t`. Then:
//!
//! - **read-your-writes**: after the session's acknowledged plain write `W` of a key, every
//!   write older than `W`'s invocation is dead (3, 2) in any state holding `W`, which is any
//!   state the session may read (1);
//! - **monotonic reads**: a read that returned the writes `V` (not nil) read a state holding
//!   each (4), so holding every write older than the newest invocation `t` among them (3);
//!   those not in `V` were dead there and stay dead for every later read of the session (1);
//! - **consistent prefix**: that read's state also held, for every key `x`, the newest
//!   (by invocation) plain write `X` of `x` older than `t`, and so killed every write of `x`
//!   older than `X`'s invocation (3, 2, 1): the session must not see `x` without that cause.
//!
//! Each is a *floor* (an invocation time, and for monotonic reads the writes still live). A
//! read is **stale** against a floor when it returns a write older than it (not among those
//! still live), or nil while no DEL of the key had been invoked before the read completed
//! (every floor names a state holding a live write or a delete of the key). A session is
//! judged only on its own guarantee; every session's reads are counted.
//!
//! The same argument holds for all three rules, so each is judged: `lww` by facts that hold
//! of versions as well (a local write is stamped after its state's newest version), `merge`
//! and `app` by the contexts.
//!
//! CAVEATS
//! - Sound, not complete: a stale read that returns another datacenter's write, or a write
//!   concurrent with the floor's, is not seen.
//! - The floors assume acknowledged writes survive a failover inside the datacenter; the run
//!   judges sessions only where they do.
//! - Fact 1 fails where a node lost its data and handed out a dot again (a *clash*, logged
//!   by the node); acknowledged writes are durable, so the simulator does not make one.

use crate::check::sessions::{Anomaly, Judged};
use crate::history::ClientId;
use crate::leaderless::history::{LeaderlessHistory, Op, Outcome};
use crate::session::Guarantee;
use std::collections::BTreeMap;

/// A write as the history shows it.
#[derive(Clone, Copy, Debug)]
struct Write {
    /// Its writer's datacenter.
    dc: usize,
    invoke_ms: u64,
    /// `None`: not acknowledged (indeterminate).
    acked_ms: Option<u64>,
}

/// What a later read of a key must not return: a write older than `invoke_ms`, other than
/// those in `live`; set by `write`.
#[derive(Clone, Debug)]
struct Floor {
    invoke_ms: u64,
    write: u64,
    live: Vec<u64>,
}

/// An acknowledged plain write as the floors look it up: (acknowledged, invocation, number).
type Acked = (u64, u64, u64);

/// The run's writes, indexed for the floors.
struct Writes<'h> {
    /// By number.
    all: BTreeMap<u64, Write>,
    /// Per (key, datacenter), acknowledged plain writes as (acknowledged, invocation,
    /// number), by acknowledgement, the invocation and number the newest by invocation up to
    /// each.
    plain: BTreeMap<(&'h str, usize), Vec<Acked>>,
    /// Per key, when its first DEL was invoked.
    first_del_ms: BTreeMap<&'h str, u64>,
}

impl<'h> Writes<'h> {
    fn new(history: &'h LeaderlessHistory, dc_of: &BTreeMap<ClientId, usize>) -> Writes<'h> {
        let mut writes = Writes { all: BTreeMap::new(), plain: BTreeMap::new(), first_del_ms: BTreeMap::new() };
        for e in &history.events {
            let Some(number) = e.op.write() else { continue };
            let dc = dc_of.get(&e.client).copied().unwrap_or(usize::MAX);
            let acked_ms = e.complete_ms.filter(|_| e.outcome.is_written());
            writes.all.insert(number, Write { dc, invoke_ms: e.invoke_ms, acked_ms });
            if let Op::Del { key, .. } = &e.op {
                let first = writes.first_del_ms.entry(key).or_insert(e.invoke_ms);
                *first = (*first).min(e.invoke_ms);
            }
            if let (Some(acked), true) = (acked_ms, replaces_all(&e.op)) {
                writes.plain.entry((e.op.key(), dc)).or_default().push((acked, e.invoke_ms, number));
            }
        }
        for list in writes.plain.values_mut() {
            list.sort_unstable();
            let mut newest = (0, 0);
            for entry in list.iter_mut() {
                newest = newest.max((entry.1, entry.2));
                (entry.1, entry.2) = newest;
            }
        }
        writes
    }

    /// True when write `number` is of datacenter `dc` and was acknowledged before `t`.
    fn older(&self, number: u64, dc: usize, t: u64) -> bool {
        self.all.get(&number).is_some_and(|w| w.dc == dc && w.acked_ms.is_some_and(|a| a < t))
    }

    /// The newest (by invocation) plain write of `key` by datacenter `dc` acknowledged before
    /// `t`: (invocation, number).
    fn cause(&self, key: &str, dc: usize, t: u64) -> Option<(u64, u64)> {
        let list = self.plain.get(&(key, dc))?;
        let n = list.partition_point(|&(acked, _, _)| acked < t);
        n.checked_sub(1).map(|i| (list[i].1, list[i].2))
    }
}

/// True for a write made with its leader's whole context: a SET without `CONTEXT`, a DEL.
fn replaces_all(op: &Op) -> bool {
    !matches!(op, Op::Set { context: true, .. })
}

/// Judges every session in `history` (the clients named in `sessions`; others are ignored);
/// `dc_of` names every client's datacenter.
pub fn check(
    history: &LeaderlessHistory,
    sessions: &BTreeMap<ClientId, Guarantee>,
    dc_of: &BTreeMap<ClientId, usize>,
) -> Judged {
    let writes = Writes::new(history, dc_of);
    let mut keys: Vec<&str> = history.events.iter().map(|e| e.op.key()).collect();
    keys.sort_unstable();
    keys.dedup();
    let mut judged = Judged::default();
    for (&client, &guarantee) in sessions {
        let dc = dc_of.get(&client).copied().unwrap_or(usize::MAX);
        judged.figures.entry(guarantee).or_default().sessions += 1;
        let mut events: Vec<_> = history.events.iter().filter(|e| e.client == client).collect();
        events.sort_by_key(|e| e.invoke_ms);
        let mut floors: BTreeMap<(Anomaly, &str), Vec<Floor>> = BTreeMap::new();
        for e in events {
            let (Some(complete), key) = (e.complete_ms, e.op.key()) else { continue };
            let seen = match (&e.op, &e.outcome) {
                (op, Outcome::Written(_)) => {
                    if replaces_all(op) {
                        let write = op.write().expect("a write");
                        let floor = Floor { invoke_ms: e.invoke_ms, write, live: Vec::new() };
                        raise(floors.entry((Anomaly::StaleOwnWrite, key)).or_default(), floor);
                    }
                    continue;
                }
                (Op::Read { .. }, Outcome::Read(seen)) => &seen.values,
                _ => continue,
            };
            let figures = judged.figures.get_mut(&guarantee).expect("entered above");
            figures.reads += 1;
            for anomaly in Anomaly::ALL {
                let Some(list) = floors.get(&(anomaly, key)).filter(|l| !l.is_empty()) else { continue };
                let tally = figures.tallies.entry(anomaly).or_default();
                tally.exposed += 1;
                let stale = match seen.as_slice() {
                    [] => writes.first_del_ms.get(key).is_none_or(|&d| d >= complete).then(|| (None, &list[0])),
                    values => values.iter().find_map(|&v| {
                        let floor = list.iter().find(|f| writes.older(v, dc, f.invoke_ms) && !f.live.contains(&v));
                        floor.map(|f| (Some(v), f))
                    }),
                };
                let Some((saw, floor)) = stale else { continue };
                tally.seen += 1;
                if anomaly.guarantee() == guarantee {
                    let why = explain(client, guarantee, anomaly, e.node, key, (e.invoke_ms, complete), saw, floor);
                    judged.violations.entry(anomaly).or_default().push(why);
                }
            }
            // The floors this read sets: the newest invocation among the writes it named.
            let Some((t, newest)) = seen.iter().filter_map(|v| writes.all.get(v).map(|w| (w.invoke_ms, *v))).max()
            else {
                continue;
            };
            let live = seen.iter().copied().filter(|&v| writes.older(v, dc, t)).collect();
            raise(
                floors.entry((Anomaly::MonotonicRegression, key)).or_default(),
                Floor { invoke_ms: t, write: newest, live },
            );
            for &other in &keys {
                if let Some((invoke_ms, write)) = writes.cause(other, dc, t) {
                    let floor = Floor { invoke_ms, write, live: Vec::new() };
                    raise(floors.entry((Anomaly::EffectBeforeCause, other)).or_default(), floor);
                }
            }
        }
    }
    judged
}

/// Adds `floor` to a key's floors: a floor with no live exception replaces a lower one.
fn raise(list: &mut Vec<Floor>, floor: Floor) {
    if floor.live.is_empty() {
        if let Some(plain) = list.iter_mut().find(|f| f.live.is_empty()) {
            if plain.invoke_ms < floor.invoke_ms {
                *plain = floor;
            }
            return;
        }
    }
    list.push(floor);
}

/// A violation, explained.
#[allow(clippy::too_many_arguments)] // the read, its session and the floor it broke, as they are printed
fn explain(
    client: ClientId,
    guarantee: Guarantee,
    anomaly: Anomaly,
    node: Option<usize>,
    key: &str,
    (invoke, complete): (u64, u64),
    saw: Option<u64>,
    floor: &Floor,
) -> String {
    let got = match saw {
        Some(v) => format!("write #{v}, of its datacenter and acknowledged before"),
        None => "nothing (no DEL of it had been invoked), though".to_string(),
    };
    format!(
        "client {client} ({}) read {key} on n{} at {invoke}..{complete} ms and got {got} write #{} was invoked \
         ({} ms), which {}",
        guarantee.name(),
        node.map_or(0, |n| n + 1),
        floor.write,
        floor.invoke_ms,
        match anomaly {
            Anomaly::StaleOwnWrite => "it had written",
            Anomaly::MonotonicRegression => "it had read before",
            Anomaly::EffectBeforeCause => "its datacenter had acknowledged before a write it had read was invoked",
        }
    )
}

#[cfg(test)]
mod tests;
