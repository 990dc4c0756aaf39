//! The node's open RESP connections: who each one is, what it last did, and a way to close it
//! (`CLIENT LIST`, `CLIENT KILL`, `maxclients`).
//!
//! The accept loop admits each connection ([`Clients::admit`]) and refuses one when
//! `connections_max` are open, so the registry holds at most that many entries (the highest
//! value it has had, after `CONFIG SET maxclients` lowers it). A connection owns its
//! [`Client`] and publishes a copy to its entry after each round of requests
//! ([`Registration::publish`]): one uncontended lock per round, none per request. `CLIENT
//! LIST` reads the copies ([`Clients::list`]), so another connection shows as of the end of
//! its last round. The entry is removed when its connection ends, however it ends, since that
//! drops its [`Registration`].
//!
//! `CLIENT KILL` raises an entry's kill signal ([`Clients::kill`]). The connection watches it
//! while it waits for bytes and checks it after each round, then closes without a word, as
//! Redis closes a killed client. At shutdown the accept loop waits until no entry is left
//! ([`Clients::wait_empty`]).
//!
//! CAVEATS
//! - A killed connection that is waiting for the runtime answers that round first, then
//!   closes; one killed mid-pipeline answers the round it is in.
//! - A busy connection's entry shows the command it ended its previous round with until its
//!   current round ends.

use crate::resp::admin::Client;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use tokio::sync::watch;

/// The open connections, shared by the accept loop, every connection and `CLIENT`.
pub struct Clients {
    inner: Arc<Inner>,
}

/// What [`Clients`] and each [`Registration`] share.
struct Inner {
    /// The open connections by client id.
    entries: Mutex<BTreeMap<u64, Arc<Entry>>>,
    /// How many entries there are, for [`Clients::wait_empty`].
    open: watch::Sender<usize>,
}

/// One open connection.
struct Entry {
    /// Its client as of the end of its last round.
    client: Mutex<Client>,
    /// Raised to make it close.
    kill: watch::Sender<bool>,
}

/// A connection's place in the registry; dropping it removes the entry.
pub struct Registration {
    id: u64,
    entry: Arc<Entry>,
    inner: Arc<Inner>,
    killed: watch::Receiver<bool>,
}

impl Default for Clients {
    fn default() -> Clients {
        Clients::new()
    }
}

impl Clients {
    /// An empty registry.
    pub fn new() -> Clients {
        Clients { inner: Arc::new(Inner { entries: Mutex::new(BTreeMap::new()), open: watch::Sender::new(0) }) }
    }

    /// Registers a new connection's `client`; `None` when `connections_max` are open already.
    pub fn admit(&self, client: Client, connections_max: usize) -> Option<Registration> {
        let mut entries = self.inner.entries.lock().unwrap();
        if entries.len() >= connections_max {
            return None;
        }
        let id = client.id;
        let (kill, killed) = watch::channel(false);
        let entry = Arc::new(Entry { client: Mutex::new(client), kill });
        let previous = entries.insert(id, entry.clone());
        assert!(previous.is_none(), "client id {id} registered twice");
        self.inner.open.send_replace(entries.len());
        Some(Registration { id, entry, inner: self.inner.clone(), killed })
    }

    /// Every open connection's client as last published, by id.
    pub fn list(&self) -> Vec<Client> {
        let entries: Vec<Arc<Entry>> = self.inner.entries.lock().unwrap().values().cloned().collect();
        entries.iter().map(|e| e.client.lock().unwrap().clone()).collect()
    }

    /// Tells every connection whose client `matches` to close; how many were told.
    pub fn kill(&self, matches: impl Fn(&Client) -> bool) -> usize {
        let entries: Vec<Arc<Entry>> = self.inner.entries.lock().unwrap().values().cloned().collect();
        let mut killed = 0;
        for entry in entries {
            if matches(&entry.client.lock().unwrap()) {
                entry.kill.send_replace(true);
                killed += 1;
            }
        }
        killed
    }

    /// How many connections are open.
    pub fn len(&self) -> usize {
        *self.inner.open.borrow()
    }

    /// True when no connection is open.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Waits until every connection has ended.
    pub async fn wait_empty(&self) {
        let mut open = self.inner.open.subscribe();
        // The registry holds the sender, so the channel cannot close while this waits.
        let _ = open.wait_for(|n| *n == 0).await;
    }
}

impl Registration {
    /// Publishes `client` as this connection's entry shows it.
    pub fn publish(&self, client: &Client) {
        self.entry.client.lock().unwrap().clone_from(client);
    }

    /// True once `CLIENT KILL` chose this connection.
    pub fn killed(&self) -> bool {
        *self.killed.borrow()
    }

    /// Resolves once `CLIENT KILL` chooses this connection.
    pub async fn wait_killed(&mut self) {
        // The entry this holds keeps the sender alive, so this cannot fail.
        let _ = self.killed.wait_for(|k| *k).await;
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut entries = self.inner.entries.lock().unwrap();
        entries.remove(&self.id);
        self.inner.open.send_replace(entries.len());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn client(id: u64) -> Client {
        Client::new(id, format!("127.0.0.1:{}", 5000 + id).parse().unwrap(), "127.0.0.1:6380".parse().unwrap(), -1)
    }

    #[test]
    fn admission_is_bounded_and_entries_go_with_their_connection() {
        let clients = Clients::new();
        let first = clients.admit(client(1), 2).unwrap();
        let second = clients.admit(client(2), 2).unwrap();
        assert!(clients.admit(client(3), 2).is_none(), "two open, two at most");
        assert!(clients.admit(client(3), 3).is_some(), "a raised limit admits one more (dropped at once)");
        assert_eq!(clients.len(), 2, "the dropped registration left");
        drop(first);
        assert_eq!(clients.list().iter().map(|c| c.id).collect::<Vec<_>>(), vec![2]);
        let third = clients.admit(client(3), 2).unwrap();
        let mut named = client(2);
        named.name = "worker".into();
        second.publish(&named);
        let listed: Vec<(u64, String)> = clients.list().into_iter().map(|c| (c.id, c.name)).collect();
        assert_eq!(listed, vec![(2, "worker".to_string()), (3, String::new())], "by id, as published");
        drop((second, third));
        assert!(clients.is_empty());
    }

    #[tokio::test]
    async fn kill_signals_only_the_matching_connections_and_shutdown_waits_for_all() {
        let clients = Arc::new(Clients::new());
        let mut one = clients.admit(client(1), 10).unwrap();
        let two = clients.admit(client(2), 10).unwrap();
        assert_eq!(clients.kill(|c| c.id == 1), 1);
        assert!(one.killed() && !two.killed());
        tokio::time::timeout(Duration::from_secs(5), one.wait_killed()).await.expect("signalled");
        assert_eq!(clients.kill(|c| c.id == 99), 0);
        let waiting = tokio::spawn({
            let clients = clients.clone();
            async move { clients.wait_empty().await }
        });
        drop(one);
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiting.is_finished(), "one connection is still open");
        drop(two);
        tokio::time::timeout(Duration::from_secs(5), waiting).await.expect("empty").unwrap();
    }
}
