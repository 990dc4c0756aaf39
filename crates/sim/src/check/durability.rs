//! No acknowledged write is lost: after the faults heal, every key holds a value that an
//! acknowledged write to it does not supersede.
//!
//! A write acknowledged OK must survive: the key's final value must be that write's, or a
//! write's that could have come after it. It is lost when the key is absent at the end, or
//! holds a value whose write completed before the acknowledged write was even invoked (so
//! the acknowledged write, which overwrote it, was rolled back). Indeterminate writes may or
//! may not survive, so they never count as lost, and a final value from an indeterminate
//! write is allowed wherever it could have been applied.
//!
//! Modes that do not promise survival across a failover (async, and semi-sync where K+1 is
//! not a majority) may lose acknowledged writes, but never in silence: the run's verdict then
//! requires each lost write to be in some node's rollback log (see `run`).

use crate::history::{History, Op, Outcome};
use std::collections::BTreeMap;

/// An acknowledged write that did not survive.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lost {
    /// The key written.
    pub key: String,
    /// The value written.
    pub value: u64,
    /// What shows it lost.
    pub why: String,
}

/// Checks `history` against the final `state` (key -> value) of the node that must hold every
/// acknowledged write; an error names the first write lost and what replaced it.
pub fn acknowledged_writes_survive(history: &History, state: &BTreeMap<String, u64>) -> Result<(), String> {
    match lost_writes(history, state).into_iter().next() {
        None => Ok(()),
        Some(lost) => Err(lost.why),
    }
}

/// Every acknowledged write of `history` that the final `state` shows lost (a key holding a
/// value no client wrote is reported too, as value 0).
pub fn lost_writes(history: &History, state: &BTreeMap<String, u64>) -> Vec<Lost> {
    let mut lost = Vec::new();
    let writes: BTreeMap<u64, &crate::history::Event> = history
        .events
        .iter()
        .filter_map(|e| match &e.op {
            Op::Write { value, .. } => Some((*value, e)),
            Op::Read { .. } => None,
        })
        .collect();
    for e in &history.events {
        let (Op::Write { key, value }, Outcome::Ok(_)) = (&e.op, &e.outcome) else { continue };
        let Some(final_value) = state.get(key) else {
            let why =
                format!("acknowledged write of {value} to {key} (client {}) is lost: the key is absent", e.client);
            lost.push(Lost { key: key.clone(), value: *value, why });
            continue;
        };
        let Some(final_write) = writes.get(final_value) else {
            let why = format!("{key} holds {final_value}, which no client wrote");
            lost.push(Lost { key: key.clone(), value: 0, why });
            continue;
        };
        if final_write.complete_ms.is_some_and(|done| done < e.invoke_ms) {
            let why = format!(
                "acknowledged write of {value} to {key} (client {}, invoked at {} ms) is lost: the key holds {final_value}, \
                 written before it (completed at {} ms)",
                e.client,
                e.invoke_ms,
                final_write.complete_ms.unwrap_or_default()
            );
            lost.push(Lost { key: key.clone(), value: *value, why });
        }
    }
    lost
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::Event;

    fn write(client: u32, key: &str, value: u64, invoke: u64, complete: Option<u64>) -> Event {
        let outcome = if complete.is_some() { Outcome::Ok(None) } else { Outcome::Indeterminate };
        Event {
            client,
            node: None,
            op: Op::Write { key: key.into(), value },
            invoke_ms: invoke,
            complete_ms: complete,
            outcome,
        }
    }

    fn state(pairs: &[(&str, u64)]) -> BTreeMap<String, u64> {
        pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
    }

    #[test]
    fn the_last_acknowledged_write_or_a_concurrent_one_may_win() {
        let h = History { events: vec![write(1, "k", 1, 0, Some(5)), write(2, "k", 2, 3, Some(8))] };
        assert!(acknowledged_writes_survive(&h, &state(&[("k", 2)])).is_ok());
        assert!(acknowledged_writes_survive(&h, &state(&[("k", 1)])).is_ok(), "1 and 2 overlap: either order");
    }

    #[test]
    fn a_rolled_back_acknowledged_write_is_caught() {
        let h = History { events: vec![write(1, "k", 1, 0, Some(5)), write(2, "k", 2, 10, Some(12))] };
        let err = acknowledged_writes_survive(&h, &state(&[("k", 1)])).unwrap_err();
        assert!(err.contains("write of 2 to k") && err.contains("holds 1"), "{err}");
        let err = acknowledged_writes_survive(&h, &state(&[])).unwrap_err();
        assert!(err.contains("absent"), "{err}");
    }

    #[test]
    fn indeterminate_writes_may_vanish_or_win() {
        let h = History { events: vec![write(1, "k", 1, 0, Some(5)), write(2, "k", 2, 10, None)] };
        assert!(acknowledged_writes_survive(&h, &state(&[("k", 1)])).is_ok(), "2 may never have happened");
        assert!(acknowledged_writes_survive(&h, &state(&[("k", 2)])).is_ok(), "or it did");
    }
}
