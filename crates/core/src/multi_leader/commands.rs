//! What a multi-leader node's store answers: string commands over per-key causal states, run
//! by the single-leader machinery inside a datacenter ([`crate::kv::Commands`]).
//!
//! Every key's record holds its [`Siblings`] ([`Siblings::to_bytes`]): the writes that
//! survive and everything the node has seen of the key, so that a change from another leader
//! can be told apart as an overwrite or a conflict ([`super::conflict`]). A read renders the
//! state by the key's rule ([`super::conflict::read`]); a write is stamped by the node's clock
//! after the newest version it replaces and replaces every version this node has seen of the
//! key (`SET key value CONTEXT token` replaces only those its token names, as REPLIKV.SIBLINGS
//! gave it).
//!
//! Commands: GET, MGET, SET (plain, or with CONTEXT), MSET, DEL, EXISTS, REPLIKV.SIBLINGS,
//! DBSIZE, and REPLIKV.CONFLICTS (the conflict log, [`super::conflict_log`]), in database 0. A read-modify-write (INCR, APPEND, SET NX/XX/GET...) and expiry are
//! refused with the reason: the local leader would order it, but the same command in another
//! datacenter would not see it, and no resolution rule makes two increments one.

use super::conflict::{read, Read, Rules};
use super::conflict_log::ConflictEntry;
use crate::causality::{decode_context, siblings_error, siblings_reply, Siblings};
use crate::error::{Error, Result};
use crate::kv::{physical, Commands, Damage, Expiry, Reply, Request, SetCondition, Store};
use crate::storage::{Engine, Record};
use crate::version::NodeId;
use bytes::Bytes;

/// String commands over causal states, resolved by `rules`.
#[derive(Clone, Debug)]
pub struct Causal {
    /// This node: the dots of the writes it makes are its own.
    node: NodeId,
    /// How each key's concurrent writes read.
    rules: Rules,
}

impl Causal {
    /// Commands for `node`, reading keys by `rules`.
    pub fn new(node: NodeId, rules: Rules) -> Causal {
        Causal { node, rules }
    }
}

/// A key's state in `store`, empty when it holds none; or the reply that refuses the request
/// (its record is damaged, or holds no causal state: a data directory of another mode).
pub(super) fn load<E: Engine>(store: &mut Store<E>, key: &Bytes) -> Result<std::result::Result<Siblings, Reply>> {
    let at = physical(0, key);
    let record = match store.engine().get(&at).map_err(|e| e.reading(&at)) {
        Ok(record) => record,
        Err(e) => {
            let Some(damage) = Damage::of(&e) else { return Err(e) };
            store.note_damage(&at, e)?;
            return Ok(Err(damage.reply(key)));
        }
    };
    match record.and_then(|r| r.value) {
        None => Ok(Ok(Siblings::new())),
        Some(bytes) => Ok(Siblings::from_bytes(&bytes).map_err(|e| {
            Reply::err(format!(
                "key {:?} holds no multi-leader state (was this data directory written in another mode?): {e}",
                String::from_utf8_lossy(key)
            ))
        })),
    }
}

/// `state` as the record that stores it; or the reply refusing a state too large.
pub(super) fn encode(state: &Siblings) -> Result<std::result::Result<Record, Reply>> {
    let value = match state.to_bytes() {
        Ok(value) if value.len() <= crate::single_leader::REPLICATED_VALUE_BYTES_MAX => value,
        Ok(value) => {
            return Ok(Err(Reply::err(format!(
                "the key's state would take {} bytes ({} concurrent values), over the {} a replicated value may take",
                value.len(),
                state.values().len(),
                crate::single_leader::REPLICATED_VALUE_BYTES_MAX
            ))))
        }
        Err(Error::InvalidInput(why)) => return Ok(Err(Reply::err(why))),
        Err(e) => return Err(e),
    };
    let version = state.newest_version().unwrap_or_default();
    Ok(Ok(Record { version, value: Some(value), expire_at_ms: None }))
}

impl Causal {
    /// The reply refusing `request`, if this family does not run it.
    fn refused(request: &Request) -> Option<Reply> {
        let refuse =
            |what: &str, why: &str| Some(Reply::err(format!("{what} is not available in multi-leader mode: {why}")));
        let rmw = "a leader in another datacenter would not see it, and no conflict rule makes two of them one \
                   (GET, then SET; or SET with the CONTEXT REPLIKV.SIBLINGS gives)";
        match request {
            Request::Get { .. }
            | Request::MGet { .. }
            | Request::Del { .. }
            | Request::Exists { .. }
            | Request::Siblings { .. }
            | Request::SetContext { .. }
            | Request::Conflicts { .. }
            | Request::DbSize
            | Request::MSet { if_none_exist: false, .. } => None,
            Request::Set { condition: SetCondition::Always, get: false, expiry: Expiry::Clear, .. } => None,
            Request::InDb { .. } => refuse("a database other than 0", "this mode keeps database 0 only"),
            Request::Ttl { .. }
            | Request::Persist { .. }
            | Request::Expire { .. }
            | Request::ExpireIf { .. }
            | Request::ExpireTime { .. }
            | Request::GetEx { .. }
            | Request::SetEx { .. } => refuse("expiry", "keys in a multi-leader cluster do not expire yet"),
            Request::Set { .. } => refuse("SET with NX, XX, GET or an expiry", rmw),
            _ => refuse("this command", rmw),
        }
    }

    /// GET's answer for `key`.
    fn get<E: Engine>(&self, store: &mut Store<E>, key: &Bytes) -> Result<Reply> {
        let state = match load(store, key)? {
            Ok(state) => state,
            Err(reply) => return Ok(reply),
        };
        Ok(match read(&state, self.rules.for_key(key), self.rules.separator()) {
            Read::Nil => Reply::Nil,
            Read::Value(value) => Reply::Bulk(value),
            Read::Siblings { count, deletes } => siblings_error(count, deletes),
        })
    }

    /// Writes `value` (`None` deletes) over `state`, `key`'s, replacing the versions
    /// `context` names (`None`: every version this node has seen); or the reply refusing it.
    fn write<E: Engine>(
        &self,
        store: &mut Store<E>,
        now_ms: u64,
        (key, state): (&Bytes, &mut Siblings),
        value: Option<Bytes>,
        context: Option<&[u8]>,
    ) -> std::result::Result<(), Reply> {
        let context = match context.map(|token| decode_context(key, token)) {
            None => state.context().clone(),
            Some(Ok(context)) => context,
            Some(Err(e)) => return Err(Reply::err(e.to_string())),
        };
        let version = store.stamp(now_ms, state.newest_version());
        state.write(self.node, &context, version, value).map_err(|e| Reply::err(e.to_string()))?;
        if self.rules.for_key(key) == super::Resolve::Lww {
            // Under lww a key keeps one write, here as on every leader that receives it (a
            // context naming less than this node has seen leaves no sibling behind): the new
            // write is the newest, stamped after everything the state holds.
            state.keep_winner();
        }
        Ok(())
    }

    /// True when a read of `key` in `state` finds a value (what EXISTS counts and DEL
    /// deletes): the same answer a GET gives.
    fn exists(&self, key: &[u8], state: &Siblings) -> bool {
        read(state, self.rules.for_key(key), self.rules.separator()) != Read::Nil
    }

    /// Makes every write of a request (key, value or `None` to delete, context token) on the
    /// key's state, in order, then stores each key's new state once; or answers the first
    /// refusal and stores nothing. `Ok(None)` when stored.
    fn store_all<E: Engine>(
        &self,
        store: &mut Store<E>,
        now_ms: u64,
        writes: Vec<(Bytes, Option<Bytes>, Option<Bytes>)>,
    ) -> Result<Option<Reply>> {
        let mut states: Vec<(Bytes, Siblings)> = Vec::with_capacity(writes.len());
        for (key, value, context) in writes {
            let at = match states.iter().position(|(k, _)| *k == key) {
                Some(at) => at,
                None => match load(store, &key)? {
                    Ok(state) => {
                        states.push((key.clone(), state));
                        states.len() - 1
                    }
                    Err(reply) => return Ok(Some(reply)),
                },
            };
            let (key, state) = &mut states[at];
            if let Err(reply) = self.write(store, now_ms, (key, state), value, context.as_deref()) {
                return Ok(Some(reply));
            }
        }
        let mut records = Vec::with_capacity(states.len());
        for (key, state) in states {
            match encode(&state)? {
                Ok(record) => records.push((key, record)),
                Err(reply) => return Ok(Some(reply)),
            }
        }
        for (key, record) in records {
            store.put_record(physical(0, &key), record)?;
        }
        Ok(None)
    }
}

impl<E: Engine> Commands<E> for Causal {
    /// The conflict log and the applied positions: each datacenter keeps its own.
    fn own_record(&self, key: &[u8]) -> bool {
        super::conflict_log::is_own_record(key)
    }

    /// A key's state holds every surviving write's version; its record's version is the
    /// node's own (a merge restamps it so that recovery replays it).
    fn record_versions_differ(&self) -> bool {
        true
    }

    fn execute(&mut self, store: &mut Store<E>, now_ms: u64, request: Request) -> Result<Reply> {
        if let Some(reply) = Self::refused(&request) {
            return Ok(reply);
        }
        let mut request = request;
        if let Some(key) = request.keys_mut().into_iter().find(|key| key.len() > crate::kv::CLIENT_KEY_BYTES_MAX) {
            let (len, max) = (key.len(), crate::kv::CLIENT_KEY_BYTES_MAX);
            return Ok(Reply::err(format!("key is {len} bytes, over the limit of {max} bytes")));
        }
        Ok(match request {
            Request::Get { key } => self.get(store, &key)?,
            Request::MGet { keys } => {
                let mut values = Vec::with_capacity(keys.len());
                for key in &keys {
                    values.push(match self.get(store, key)? {
                        Reply::Error(_) => Reply::Nil,
                        reply => reply,
                    });
                }
                Reply::Array(values)
            }
            Request::Exists { keys } => {
                let mut count = 0;
                for key in &keys {
                    count += i64::from(matches!(load(store, key)?, Ok(state) if self.exists(key, &state)));
                }
                Reply::Int(count)
            }
            Request::Siblings { key } => match load(store, &key)? {
                Ok(state) => siblings_reply(&key, &state),
                Err(reply) => reply,
            },
            Request::Set { key, value, .. } => {
                self.store_all(store, now_ms, vec![(key, Some(value), None)])?.unwrap_or(Reply::Ok)
            }
            Request::SetContext { key, value, context } => {
                self.store_all(store, now_ms, vec![(key, Some(value), Some(context))])?.unwrap_or(Reply::Ok)
            }
            Request::MSet { pairs, .. } => {
                let writes = pairs.into_iter().map(|(key, value)| (key, Some(value), None)).collect();
                self.store_all(store, now_ms, writes)?.unwrap_or(Reply::Ok)
            }
            Request::Del { keys } => {
                let mut writes = Vec::new();
                for key in keys {
                    // A key named twice is deleted (and counted) once, as Redis does.
                    let live = matches!(load(store, &key)?, Ok(state) if self.exists(&key, &state));
                    if live && !writes.iter().any(|(k, _, _): &(Bytes, _, _)| *k == key) {
                        writes.push((key, None, None));
                    }
                }
                let deleted = writes.len() as i64;
                self.store_all(store, now_ms, writes)?.unwrap_or(Reply::Int(deleted))
            }
            Request::DbSize => Reply::Int(store.keyspace().first().map_or(0, |db| db.keys as i64)),
            Request::Conflicts { prefix, count } => {
                let entries = super::conflict_log::list(store, &prefix, count.min(usize::MAX as u64) as usize)?;
                Reply::Array(entries.iter().map(ConflictEntry::reply).collect())
            }
            other => unreachable!("{other:?} is refused above"),
        })
    }
}

#[cfg(test)]
mod tests;
