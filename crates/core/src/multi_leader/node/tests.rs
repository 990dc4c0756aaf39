//! Multi-leader nodes in one process: memory engines, in-memory logs, and a hand-driven
//! network that can cut the datacenters apart.

use super::*;
use crate::kv::{parse_command, Reply};
use crate::multi_leader::Resolve;
use crate::node::RequestId;
use crate::replication::Change;
use crate::replication::ReplogOptions;
use crate::single_leader::{ReplicaFiles, Role};
use crate::storage::{MemoryEngine, Record};
use std::collections::BTreeSet;

const START_MS: u64 = 1_000_000;

/// Datacenters `dc1`, `dc2`...: node `n{i}`s, the first of each datacenter its leader.
struct World {
    nodes: Vec<MultiLeader<MemoryEngine>>,
    ids: Vec<NodeId>,
    /// Each node's datacenter, by index.
    dc: Vec<usize>,
    now: u64,
    net: VecDeque<(usize, usize, Message)>,
    replies: BTreeMap<RequestId, Reply>,
    /// The link between datacenters is cut: messages across it are dropped.
    cut: bool,
    /// Nodes that are down: messages to and from them are dropped, and they are not ticked.
    down: BTreeSet<usize>,
    next_id: RequestId,
}

impl World {
    /// `sizes[d]` nodes in datacenter `d`, every key resolved by `rules`; followers
    /// acknowledge `acks_needed` of each datacenter's writes.
    fn new(sizes: &[usize], rules: Rules, acks_needed: usize) -> World {
        World::with(sizes, rules, acks_needed, false)
    }

    /// As [`World::new`], with elections inside each datacenter when `auto_failover`.
    fn with(sizes: &[usize], rules: Rules, acks_needed: usize, auto_failover: bool) -> World {
        World::configured(sizes, rules, acks_needed, auto_failover, ReplogOptions::default(), |_| {})
    }

    /// As [`World::with`], every log with `options`, every node's settings changed by `tweak`.
    fn configured(
        sizes: &[usize],
        rules: Rules,
        acks_needed: usize,
        auto_failover: bool,
        options: ReplogOptions,
        tweak: impl Fn(&mut Settings),
    ) -> World {
        let mut ids = Vec::new();
        let mut dc = Vec::new();
        let mut datacenters = Vec::new();
        for (d, size) in sizes.iter().enumerate() {
            let nodes: Vec<NodeId> =
                (0..*size).map(|k| NodeId::from_name(&format!("n{}", ids.len() + k + 1))).collect();
            ids.extend(nodes.iter().copied());
            dc.extend(std::iter::repeat_n(d, *size));
            datacenters.push(Datacenter { name: format!("dc{}", d + 1), nodes });
        }
        let nodes = (0..ids.len())
            .map(|i| {
                let mine = &datacenters[dc[i]].nodes;
                let role = if mine[0] == ids[i] {
                    Role::Leader { followers: mine[1..].to_vec() }
                } else {
                    Role::Follower { leader: Some(mine[0]), leader_hint: format!("{:?}", mine[0]) }
                };
                let mut local = single_leader::Settings::new(ids[i], role);
                local.common.peers = mine.iter().copied().filter(|n| *n != ids[i]).collect();
                local.common.seed = i as u64;
                local.acks_needed = acks_needed.min(mine.len() - 1);
                local.ack_timeout_ms = 500;
                local.resend_ms = 300;
                local.auto_failover = auto_failover;
                local.election_timeout_ms = 300;
                let files = ReplicaFiles::in_memory(options.clone());
                let inner = SingleLeader::replicated(MemoryEngine::new(), files, local.clone(), START_MS).unwrap();
                let mut settings = Settings {
                    local,
                    datacenters: datacenters.clone(),
                    rules: rules.clone(),
                    max_clock_skew_ms: 1_000,
                    resend_ms: 300,
                    link_timeout_ms: 1_000,
                    store_position_every: crate::multi_leader::POSITION_STORE_EVERY_RECORDS,
                    conflicts_kept_max: crate::multi_leader::CONFLICTS_KEPT_MAX,
                    canary: Canary::None,
                };
                tweak(&mut settings);
                MultiLeader::new(inner, settings).unwrap()
            })
            .collect();
        World {
            nodes,
            ids,
            dc,
            now: START_MS,
            net: VecDeque::new(),
            replies: BTreeMap::new(),
            cut: false,
            down: BTreeSet::new(),
            next_id: 0,
        }
    }

    /// Steps node `i`, makes its writes durable at once, tells it so, and routes its outputs.
    fn step(&mut self, i: usize, input: Input<Message>) {
        let mut outbox = Outbox::default();
        let node = &mut self.nodes[i];
        node.step(self.now, input, &mut outbox).unwrap();
        node.write_out(self.now, &mut outbox).unwrap();
        node.flush(self.now).unwrap();
        let (lsn, resets) = (node.local().last_lsn(), node.local().log_resets());
        node.step(self.now, Input::Durable { lsn, resets }, &mut outbox).unwrap();
        for output in outbox.drain_all() {
            match output {
                Output::Reply { id, reply } => {
                    assert!(self.replies.insert(id, reply).is_none(), "one reply per request")
                }
                Output::Send { to, message: PeerMessage::MultiLeader(message) } => {
                    let to = self.ids.iter().position(|&id| id == to).expect("a known node");
                    let across = self.dc[i] != self.dc[to];
                    let dropped = (across && self.cut) || self.down.contains(&to);
                    if !dropped {
                        self.net.push_back((i, to, message));
                    }
                }
                Output::Send { message, .. } => panic!("a multi-leader node sent {message:?}"),
            }
        }
    }

    fn settle(&mut self) {
        for _ in 0..100_000 {
            let Some((from, to, message)) = self.net.pop_front() else { return };
            if (self.cut && self.dc[from] != self.dc[to]) || self.down.contains(&to) {
                continue;
            }
            let from = self.ids[from];
            self.step(to, Input::Message { from, message });
        }
        panic!("the network never went quiet");
    }

    fn run_for(&mut self, ms: u64) {
        for _ in 0..ms.div_ceil(50) {
            self.now += 50;
            for i in 0..self.nodes.len() {
                if !self.down.contains(&i) {
                    self.step(i, Input::Tick);
                }
            }
            self.settle();
        }
    }

    fn send(&mut self, i: usize, line: &str) -> RequestId {
        let args: Vec<Bytes> = line.split(' ').map(|a| Bytes::copy_from_slice(a.as_bytes())).collect();
        let request = parse_command(&args).expect("a known command").expect("valid arguments");
        self.next_id += 1;
        let id = self.next_id;
        self.step(i, Input::Request { id, request });
        id
    }

    /// Runs `line` on node `i` and returns its reply once the network is quiet.
    fn run(&mut self, i: usize, line: &str) -> Reply {
        let id = self.send(i, line);
        self.settle();
        for _ in 0..20 {
            if let Some(reply) = self.replies.get(&id) {
                return reply.clone();
            }
            self.run_for(50);
        }
        panic!("no reply to {line} on node {i}");
    }
}

fn bulk(text: &str) -> Reply {
    Reply::Bulk(Bytes::copy_from_slice(text.as_bytes()))
}

/// The lecture's example: two datacenters of two nodes each write the same cell while cut
/// off from each other, then the cut heals.
fn lecture(rules: Rules) -> World {
    let mut w = World::new(&[2, 2], rules, 1);
    w.run_for(300);
    assert_eq!(w.run(0, "SET users.1234.picture_url me-old.jpg"), Reply::Ok);
    w.run_for(500);
    assert_eq!(w.run(3, "GET users.1234.picture_url"), bulk("me-old.jpg"), "the other datacenter's follower has it");
    w.cut = true;
    assert_eq!(
        w.run(0, "SET users.1234.picture_url me-new.jpg"),
        Reply::Ok,
        "a local write is acknowledged during the cut"
    );
    w.now += 5;
    assert_eq!(w.run(2, "SET users.1234.picture_url me-old2.jpg"), Reply::Ok);
    w.run_for(300);
    assert_eq!(w.run(1, "GET users.1234.picture_url"), bulk("me-new.jpg"), "dc1 sees its own write");
    assert_eq!(w.run(3, "GET users.1234.picture_url"), bulk("me-old2.jpg"), "dc2 sees its own write");
    w.cut = false;
    w.run_for(1_000);
    w
}

/// Every node's answer to `line`.
fn everywhere(w: &mut World, line: &str) -> Vec<Reply> {
    (0..w.nodes.len()).map(|i| w.run(i, line)).collect()
}

#[test]
fn the_lecture_example_converges_under_lww_and_logs_the_loser() {
    let mut w = lecture(Rules::new(Resolve::Lww));
    let got = everywhere(&mut w, "GET users.1234.picture_url");
    assert_eq!(got, vec![bulk("me-old2.jpg"); 4], "the later-stamped write wins everywhere");
    for i in [0, 2] {
        let status = w.nodes[i].status(w.now).multi_leader.unwrap();
        assert_eq!(status.counters.conflicts, 1, "{}: {status:?}", status.datacenter);
    }
    let entries = super::super::conflict_log::list(w.nodes[0].store(), b"users.", 10).unwrap();
    assert_eq!(entries.len(), 1, "{entries:?}");
    let entry = &entries[0];
    assert_eq!((entry.from_datacenter.as_str(), entry.resolve.as_str()), ("dc2", "lww"));
    let lecture = entry.lecture().unwrap();
    assert_eq!(lecture[0], ("table", "users".to_string()));
    assert_eq!(lecture[1], ("key", "1234".to_string()));
    assert_eq!(lecture[2], ("column", "picture_url".to_string()));
    assert_eq!(lecture[3], ("old_value", "me-new.jpg".to_string()));
    assert_eq!(lecture[4], ("new_value", "me-old2.jpg".to_string()));
    assert_eq!(entry.lost.len(), 1);
    assert_eq!(entry.lost[0].value.as_deref(), Some(&b"me-new.jpg"[..]), "the loser is kept");
    let follower = super::super::conflict_log::list(w.nodes[1].store(), b"", 10).unwrap();
    assert_eq!(follower, entries, "the datacenter's follower holds its conflict log too");
    // Digests cover the clients' keys, not each datacenter's own records.
    let root = |w: &mut World, i: usize| match w.run(i, "REPLIKV.DIGEST") {
        Reply::Array(parts) => (parts[1].clone(), parts[2].clone()),
        other => panic!("{other:?}"),
    };
    let roots: Vec<_> = (0..4).map(|i| root(&mut w, i)).collect();
    assert_eq!(roots[0].0, Reply::Int(1), "one client key");
    assert!(roots.iter().all(|r| *r == roots[0]), "every node's digest alike: {roots:?}");
    let raw = |w: &World, i: usize| crate::digest::digest(w.nodes[i].store().engine()).unwrap().root;
    assert_ne!(raw(&w, 0), raw(&w, 2), "the stores themselves differ in their own records");
}

#[test]
fn the_lecture_example_merges_both_values_under_merge() {
    let mut w = lecture(Rules::new(Resolve::Merge));
    let got = everywhere(&mut w, "GET users.1234.picture_url");
    assert_eq!(got, vec![bulk("me-new.jpg,me-old2.jpg"); 4]);
}

#[test]
fn the_lecture_example_keeps_siblings_under_app_until_one_is_written() {
    let mut w = lecture(Rules::new(Resolve::App));
    for reply in everywhere(&mut w, "GET users.1234.picture_url") {
        assert!(matches!(&reply, Reply::Error(e) if e.starts_with("SIBLINGS the key has 2")), "{reply:?}");
    }
    let Reply::Array(parts) = w.run(2, "REPLIKV.SIBLINGS users.1234.picture_url") else { panic!() };
    assert_eq!(parts[1], Reply::Array(vec![bulk("me-new.jpg"), bulk("me-old2.jpg")]));
    let Reply::Bulk(token) = &parts[0] else { panic!() };
    let token = String::from_utf8(token.to_vec()).unwrap();
    assert_eq!(w.run(2, &format!("SET users.1234.picture_url me-final.jpg CONTEXT {token}")), Reply::Ok);
    w.run_for(1_000);
    assert_eq!(everywhere(&mut w, "GET users.1234.picture_url"), vec![bulk("me-final.jpg"); 4]);
}

#[test]
fn writes_without_conflicts_reach_every_datacenter_once_and_lag_is_shown() {
    let mut w = World::new(&[2, 2], Rules::default(), 1);
    w.run_for(300);
    for k in 0..20 {
        let dc_leader = if k % 2 == 0 { 0 } else { 2 };
        assert_eq!(w.run(dc_leader, &format!("SET k{k} v{k}")), Reply::Ok);
    }
    w.run_for(1_000);
    for k in 0..20 {
        assert_eq!(everywhere(&mut w, &format!("GET k{k}")), vec![bulk(&format!("v{k}")); 4]);
    }
    let status = w.nodes[0].status(w.now).multi_leader.unwrap();
    assert_eq!(status.counters.conflicts, 0);
    assert_eq!(status.counters.received, 10, "each change of dc2 applied once: {status:?}");
    let lag = &status.datacenters[0];
    assert_eq!((lag.name.as_str(), lag.lag_records, lag.lag_ms, lag.up), ("dc2", 0, 0, true), "{lag:?}");
    let ends: Vec<Lsn> = w.nodes.iter().map(|n| n.local().last_lsn()).collect();
    w.run_for(2_000);
    let idle: Vec<Lsn> = w.nodes.iter().map(|n| n.local().last_lsn()).collect();
    assert_eq!(ends, idle, "an idle exchange writes nothing (no shipment answers another)");
    // Cut: the lag grows, in records and in time.
    w.cut = true;
    w.run(0, "SET late 1");
    w.run_for(2_000);
    let lag = w.nodes[0].status(w.now).multi_leader.unwrap().datacenters[0].clone();
    assert!(lag.lag_records >= 1 && lag.lag_ms >= 1_900 && !lag.up, "{lag:?}");
    assert_eq!(w.run(3, "GET late"), Reply::Nil);
    w.cut = false;
    w.run_for(1_000);
    assert_eq!(w.run(3, "GET late"), bulk("1"));
}

#[test]
fn a_datacenter_failover_resumes_the_exchange_from_where_the_other_side_stands() {
    let mut w = World::with(&[1, 3], Rules::default(), 1, true);
    w.run_for(300);
    assert_eq!(w.run(0, "SET a 1"), Reply::Ok);
    assert_eq!(w.run(1, "SET x 1"), Reply::Ok);
    w.run_for(500);
    assert_eq!(w.run(3, "GET a"), bulk("1"));
    // dc2's leader goes down; one of its followers is elected.
    w.down.insert(1);
    assert_eq!(w.run(0, "SET b 2"), Reply::Ok, "dc1 takes writes whatever happens in dc2");
    w.run_for(3_000);
    let leader = (2..4).find(|&i| w.nodes[i].local().is_leader()).expect("dc2 elected a new leader");
    assert_eq!(w.run(leader, "GET b"), bulk("2"), "dc1's shipper found dc2's new leader");
    assert_eq!(w.run(leader, "SET y 2"), Reply::Ok);
    w.run_for(1_000);
    assert_eq!(w.run(0, "GET y"), bulk("2"), "the new leader ships dc2's writes");
    assert_eq!(w.run(0, "GET x"), bulk("1"));
    let status = w.nodes[0].status(w.now).multi_leader.unwrap();
    assert_eq!(status.counters.received, 2, "dc2's changes applied once each, across its failover: {status:?}");
}

#[test]
fn a_shipment_from_a_node_of_another_datacenter_than_it_names_is_refused() {
    let mut w = World::new(&[1, 1], Rules::default(), 0);
    w.run_for(300);
    let forged = Ship {
        origin: dc_id("dc1"),
        after: Position::default(),
        through: Position { lsn: 1, epoch: 1 },
        changes: vec![],
        sent_ms: 0,
        restart: None,
    };
    let from = w.ids[1]; // dc2's node claims to ship dc1's log to dc2... to node 0 of dc1
    w.step(0, Input::Message { from, message: Message::Ship(forged) });
    assert_eq!(w.nodes[0].status(w.now).multi_leader.unwrap().counters.refused, 1);
}

#[test]
fn a_change_stamped_past_the_skew_allowance_waits_until_the_receivers_clock_catches_up() {
    let mut w = World::new(&[1, 1], Rules::default(), 0);
    w.run_for(300);
    // dc1's leader writes with a clock 5 s ahead of everyone's (allowance: 1 s).
    w.now += 5_000;
    w.send(0, "SET k fast");
    w.now -= 5_000;
    w.settle();
    w.run_for(2_000);
    let status = w.nodes[1].status(w.now).multi_leader.unwrap();
    assert!(status.counters.held_back >= 1, "{status:?}");
    assert_eq!(w.run(1, "GET k"), Reply::Nil, "held back while more than the allowance ahead");
    w.run_for(3_000);
    assert_eq!(w.run(1, "GET k"), bulk("fast"), "applied once this clock is within the allowance");
}

#[test]
fn a_merge_that_keeps_the_newest_version_survives_a_crash_that_loses_the_engines_copy() {
    // Regression (found by the simulator): a merged state's record carried its newest
    // sibling's version, so a merge that added an older concurrent write (or only context)
    // logged a record no newer than the one the engine held, and recovery, which replays a
    // logged change only where the engine's version is older, skipped it after a crash.
    let mut w = World::new(&[1, 1], Rules::new(Resolve::App), 0);
    w.run_for(300);
    w.cut = true;
    assert_eq!(w.run(1, "SET k older"), Reply::Ok);
    w.now += 5;
    assert_eq!(w.run(0, "SET k newer"), Reply::Ok);
    let before_merge = w.nodes[0].store().engine().get(b"k").unwrap().expect("n1 holds k");
    w.cut = false;
    w.run_for(1_000);
    let merged = |engine: &MemoryEngine| {
        let record = engine.get(b"k").unwrap().expect("k is stored");
        Siblings::from_bytes(record.value.as_ref().unwrap()).unwrap().values().len()
    };
    assert_eq!(merged(w.nodes[0].store().engine()), 2, "n1 merged dc2's concurrent write");
    // n1 crashes: its log kept the merge, its engine only the state before it.
    let node = w.nodes.remove(0);
    let settings = node.settings().clone();
    let (mut engine, files) = node.into_local().into_parts();
    engine.put(Bytes::from_static(b"k"), before_merge).unwrap();
    let inner = SingleLeader::replicated(engine, files, settings.local.clone(), w.now).unwrap();
    let reopened = MultiLeader::new(inner, settings).unwrap();
    assert_eq!(merged(reopened.store().engine()), 2, "recovery replayed the logged merge");
}

#[test]
fn a_request_bigger_than_a_shipment_is_shipped_whole() {
    let mut w = World::new(&[1, 1], Rules::default(), 0);
    w.run_for(300);
    // 10,001 keys: the request spans two records, the first over SHIP_BYTES_MAX.
    let pad = "x".repeat(100);
    let pairs: Vec<String> = (0..10_001).map(|i| format!("key:{i:06} value-{i:06}{pad}")).collect();
    assert_eq!(w.run(0, &format!("MSET {}", pairs.join(" "))), Reply::Ok);
    w.run_for(1_000);
    assert_eq!(w.run(1, "GET key:010000"), bulk(&format!("value-010000{pad}")));
    assert_eq!(w.run(1, "DBSIZE"), Reply::Int(10_001));
    assert_eq!(w.run(0, "SET after 1"), Reply::Ok);
    w.run_for(500);
    assert_eq!(w.run(1, "GET after"), bulk("1"), "later writes follow it");
}

/// Two datacenters of one node; dc1 wrote twice and dc2 applied both: the world, and dc2's
/// position of dc1's log.
fn two_writes_shipped() -> (World, Position) {
    let mut w = World::new(&[1, 1], Rules::default(), 0);
    w.run_for(300);
    w.run(0, "SET a 1");
    w.run_for(500);
    w.run(0, "SET b 2");
    w.run_for(500);
    let now = w.nodes[1].applied(dc_id("dc1")).unwrap();
    assert!(now.lsn >= 2, "{now:?}");
    (w, now)
}

#[test]
fn a_late_shipment_moves_no_position_back_and_a_key_outside_the_clients_is_skipped() {
    let (mut w, now) = two_writes_shipped();
    let applied = |w: &World| w.nodes[1].applied(dc_id("dc1")).unwrap();
    // A late copy of the first shipment (after nothing, through the first write).
    let change = |key: &'static [u8]| Change {
        key: Bytes::from_static(key),
        record: Record {
            version: Default::default(),
            value: Some(Siblings::new().to_bytes().unwrap()),
            expire_at_ms: None,
        },
    };
    let late = Ship {
        origin: dc_id("dc1"),
        after: Position::default(),
        through: Position { lsn: 1, epoch: now.epoch },
        changes: vec![change(b"a"), change(b"\x00\x02applied/forged")],
        sent_ms: 0,
        restart: None,
    };
    let from = w.ids[0];
    w.step(1, Input::Message { from, message: Message::Ship(late) });
    w.settle();
    assert_eq!(applied(&w), now, "the position did not move back");
    assert_eq!(w.nodes[1].status(w.now).multi_leader.unwrap().counters.refused, 1, "the key in namespace 2");
    assert_eq!(w.run(1, "GET b"), bulk("2"));
}

#[test]
fn a_shipment_is_acknowledged_only_once_a_majority_of_the_receivers_datacenter_holds_it() {
    let mut w = World::new(&[1, 2], Rules::default(), 0);
    w.run_for(300);
    w.down.insert(2); // dc2's follower: its leader's writes are durable on one node of two
    w.run(0, "SET k 1");
    w.run_for(1_000);
    assert!(w.nodes[1].store().engine().get(b"k").unwrap().is_some(), "dc2's leader applied it");
    let lag = |w: &World| w.nodes[0].status(w.now).multi_leader.unwrap().datacenters[0].lag_records;
    assert!(lag(&w) > 0, "not acknowledged while only dc2's leader holds it");
    w.down.remove(&2);
    w.run_for(2_000);
    assert_eq!(lag(&w), 0, "acknowledged once the follower has it too");
}

#[test]
fn a_datacenter_cut_off_past_the_logs_retention_catches_up_from_the_log_held_for_it() {
    let options =
        ReplogOptions { retain_bytes_max: 64 * 1024, segment_bytes_max: 16 * 1024, ..ReplogOptions::default() };
    let mut w = World::configured(&[1, 1], Rules::default(), 0, false, options, |_| {});
    w.run_for(300);
    w.cut = true;
    let value = "v".repeat(1_000);
    for i in 0..300 {
        assert_eq!(w.run(0, &format!("SET k{i} {value}")), Reply::Ok);
        if i % 50 == 0 {
            w.run_for(100);
        }
    }
    w.run_for(500);
    w.cut = false;
    w.run_for(3_000);
    assert_eq!(w.run(1, "DBSIZE"), Reply::Int(300), "dc2 has every write made while it was cut off");
}

#[test]
fn a_position_taken_from_shipments_without_changes_is_stored_now_and_then() {
    let mut w = World::configured(&[1, 1], Rules::default(), 0, false, ReplogOptions::default(), |s| {
        s.store_position_every = 3;
    });
    w.run_for(300);
    for i in 0..10 {
        w.run(0, &format!("SET k{i} v"));
        w.run_for(100);
    }
    // dc2's clients wrote nothing: its log holds only what it applied, which dc1 takes
    // without changes; dc1 stores its position of dc2's log every few such records.
    let stored = w.nodes[0].stored(dc_id("dc2")).unwrap();
    assert!(stored.lsn >= 3, "{stored:?}");
    let lsns: Vec<Lsn> = w.nodes.iter().map(|n| n.local().last_lsn()).collect();
    w.run_for(3_000);
    let idle: Vec<Lsn> = w.nodes.iter().map(|n| n.local().last_lsn()).collect();
    assert_eq!(lsns, idle, "and an idle exchange still writes nothing");
}

#[test]
fn the_conflict_log_keeps_its_newest_entries_in_a_ring_of_its_size() {
    let mut w = World::configured(&[1, 1], Rules::default(), 0, false, ReplogOptions::default(), |s| {
        s.conflicts_kept_max = 3;
    });
    w.run_for(300);
    for i in 0..5 {
        w.cut = true;
        w.run(0, &format!("SET k a{i}"));
        w.now += 1;
        w.run(1, &format!("SET k b{i}"));
        w.cut = false;
        w.run_for(1_000);
    }
    let entries = super::super::conflict_log::list(w.nodes[0].store(), b"", 100).unwrap();
    let numbers: Vec<u64> = entries.iter().map(|e| e.number).collect();
    assert_eq!(numbers, [2, 3, 4], "the three newest, oldest first");
    let status = w.nodes[0].status(w.now).multi_leader.unwrap();
    assert_eq!((status.conflicts_held, status.conflicts_dropped), (Some(3), 2));
}

#[test]
fn a_follower_keeps_what_its_leader_holds_for_a_cut_off_datacenter_and_ships_it_once_elected() {
    let options =
        ReplogOptions { retain_bytes_max: 64 * 1024, segment_bytes_max: 16 * 1024, ..ReplogOptions::default() };
    let mut w = World::configured(&[3, 1], Rules::default(), 1, true, options, |_| {});
    w.run_for(1_000);
    w.cut = true;
    let value = "v".repeat(1_000);
    for i in 0..300 {
        assert_eq!(w.run(0, &format!("SET k{i} {value}")), Reply::Ok);
        if i % 50 == 0 {
            w.run_for(100);
        }
    }
    w.run_for(500);
    assert_eq!(w.nodes[1].local().first_lsn(), 1, "dc1's follower holds what its leader holds for dc2");
    // dc1's leader goes down; a follower is elected and the link heals.
    w.down.insert(0);
    w.run_for(3_000);
    assert!((1..3).any(|i| w.nodes[i].local().is_leader()), "dc1 elected a new leader");
    w.cut = false;
    w.run_for(3_000);
    assert_eq!(w.run(3, "DBSIZE"), Reply::Int(300), "dc2 has every write dc1 made while it was cut off");
}

#[test]
fn a_request_abandoned_in_the_log_is_not_shipped() {
    let change = |key: &'static [u8]| Change {
        key: Bytes::from_static(key),
        record: Record { version: Default::default(), value: Some(Bytes::from_static(b"v")), expire_at_ms: None },
    };
    let record = |lsn, part, parts, key| LogRecord {
        lsn,
        epoch: 1,
        changes: vec![change(key)],
        part,
        parts,
        olds: Vec::new(),
        statement: None,
        physical: None,
    };
    // The request at 2 and 3 never got its third part (its leader died while logging it); 4..=5 is whole.
    let records = vec![
        record(1, 0, 1, b"a"),
        record(2, 0, 3, b"lost1"),
        record(3, 1, 3, b"lost2"),
        record(4, 0, 2, b"b"),
        record(5, 1, 2, b"c"),
    ];
    let (through, changes) = shipment(&records, 5).expect("whole requests");
    assert_eq!(through.lsn, 5);
    let keys: Vec<&[u8]> = changes.iter().map(|c| &c.key[..]).collect();
    assert_eq!(keys, [&b"a"[..], b"b", b"c"], "the abandoned request's parts are not shipped");
}

#[test]
fn a_sender_whose_view_of_a_datacenter_is_past_its_log_asks_again_and_resumes() {
    let options =
        ReplogOptions { retain_bytes_max: 16 * 1024, segment_bytes_max: 4 * 1024, ..ReplogOptions::default() };
    let mut w = World::configured(&[1, 1], Rules::default(), 0, false, options, |_| {});
    w.run_for(300);
    let value = "v".repeat(1_000);
    for i in 0..100 {
        assert_eq!(w.run(0, &format!("SET k{i} {value}")), Reply::Ok);
        w.run_for(50);
    }
    w.run_for(500);
    assert!(w.nodes[0].local().first_lsn() > 2, "retention dropped the oldest records");
    // dc1's view of dc2 goes stale (as after a late answer): it names a position the log no
    // longer holds.
    let out = w.nodes[0].outbound.get_mut(&dc_id("dc2")).unwrap();
    out.applied = Some(Position { lsn: 1, epoch: 1 });
    assert_eq!(w.run(0, "SET late 1"), Reply::Ok);
    w.run_for(2_000);
    assert_eq!(w.run(1, "GET late"), bulk("1"), "dc2's answer to a question resumed the exchange");
}

#[test]
fn a_correction_moves_a_position_back_only_from_the_position_it_corrects() {
    let (mut w, now) = two_writes_shipped();
    let applied = |w: &World| w.nodes[1].applied(dc_id("dc1")).unwrap();
    let correction = |corrects: Position| Ship {
        origin: dc_id("dc1"),
        after: Position::default(),
        through: Position { lsn: 1, epoch: now.epoch },
        changes: vec![],
        sent_ms: 0,
        restart: Some(corrects),
    };
    let from = w.ids[0];
    // A late correction of a position dc2 has since left.
    let left = Position { lsn: now.lsn - 1, epoch: now.epoch };
    w.step(1, Input::Message { from, message: Message::Ship(correction(left)) });
    w.settle();
    assert_eq!(applied(&w), now, "a correction of another position moves nothing");
    w.step(1, Input::Message { from, message: Message::Ship(correction(now)) });
    w.settle();
    assert_eq!(applied(&w).lsn, 1, "a correction of its position moves it back");
}

#[test]
fn a_change_that_cannot_be_merged_is_kept_in_the_conflict_log() {
    use crate::causality::VERSION_VECTOR_ENTRIES_MAX;
    use crate::version::{Timestamp, Version};
    let mut w = World::new(&[1, 1], Rules::default(), 0);
    w.run_for(300);
    w.cut = true;
    assert_eq!(w.run(1, "SET wide mine"), Reply::Ok);
    // A state whose context names as many writers as a context may: joined with dc2's own
    // write of the key, it would name one too many.
    let mut wide = Siblings::new();
    for i in 0..VERSION_VECTOR_ENTRIES_MAX as u64 {
        let version = Version { ts: Timestamp { millis: w.now, logical: i as u32 }, node: NodeId(1_000 + i) };
        let context = wide.context().clone();
        wide.write(NodeId(1_000 + i), &context, version, Some(Bytes::from(format!("v{i}")))).unwrap();
    }
    let applied = w.nodes[1].applied(dc_id("dc1")).unwrap();
    let ship = Ship {
        origin: dc_id("dc1"),
        after: applied,
        through: applied,
        changes: vec![Change {
            key: crate::kv::physical(0, &Bytes::from_static(b"wide")),
            record: Record { version: Default::default(), value: Some(wide.to_bytes().unwrap()), expire_at_ms: None },
        }],
        sent_ms: 0,
        restart: None,
    };
    let from = w.ids[0];
    w.step(1, Input::Message { from, message: Message::Ship(ship) });
    w.settle();
    assert_eq!(w.run(1, "GET wide"), bulk("mine"), "dc2 keeps its own state");
    let entries = super::super::conflict_log::list(w.nodes[1].store(), b"wide", 10).unwrap();
    assert_eq!(entries.len(), 1, "{entries:?}");
    assert_eq!(entries[0].lost.len(), 1, "the arriving write is kept as lost here: {:?}", entries[0]);
}

#[test]
fn a_conflict_entry_that_does_not_decode_is_named_and_stops_nothing() {
    let mut w = lecture(Rules::new(Resolve::Lww));
    let garbage =
        Record { version: Default::default(), value: Some(Bytes::from_static(b"\xff\xff")), expire_at_ms: None };
    let slot = super::super::conflict_log::slot_key(0);
    w.nodes[0].local_mut().leader_write(|store| store.put_record(slot, garbage)).unwrap();
    w.settle();
    assert_eq!(w.run(0, "REPLIKV.CONFLICTS"), Reply::Array(vec![]), "the bad entry is left out, named in the log");
    // The next conflict, at a leader that reads the log's numbering afresh (as after a
    // failover), is logged: the bad entry's slot is written again.
    w.nodes[0].conflicts.forget();
    w.cut = true;
    assert_eq!(w.run(0, "SET users.1.name a"), Reply::Ok);
    w.now += 5;
    assert_eq!(w.run(2, "SET users.1.name b"), Reply::Ok);
    w.cut = false;
    w.run_for(1_000);
    let entries = super::super::conflict_log::list(w.nodes[0].store(), b"", 10).unwrap();
    assert_eq!(entries.len(), 1, "{entries:?}");
    assert_eq!(entries[0].key, Bytes::from_static(b"users.1.name"));
}

#[test]
fn answers_owed_while_a_datacenter_cannot_make_them_durable_are_bounded() {
    let mut w = World::new(&[1, 1], Rules::default(), 0);
    w.run_for(300);
    let (from, origin) = (w.ids[0], dc_id("dc1"));
    let mut outbox = Outbox::default();
    for _ in 0..OWED_ACKS_MAX + 10 {
        w.nodes[1].on_where(from, origin, &mut outbox);
    }
    assert_eq!(w.nodes[1].owed.len(), OWED_ACKS_MAX);
}

#[test]
fn a_history_that_went_another_way_is_shipped_again_from_a_point_both_surely_share() {
    let at = |lsn, epoch| Position { lsn, epoch };
    // This log: epoch 1 at 1..=50, epoch 3 from 51 to 80. The other history reached 100 in
    // epoch 2 (its epoch 1 may have ended anywhere before): only epoch 1's start is sure.
    let runs = [(0, 0), (1, 1), (51, 3)];
    assert_eq!(shared_point(&runs, 1, 80, at(100, 2)), at(0, 0));
    // With a run of epoch 2 here (41..=60), the other history shares it up to its position.
    let runs = [(0, 0), (1, 1), (41, 2), (61, 3)];
    assert_eq!(shared_point(&runs, 1, 80, at(55, 2)), at(55, 2));
    assert_eq!(shared_point(&runs, 1, 80, at(70, 2)), at(60, 2));
    // A history of epoch 3 that is not this one's at 90: this log's epoch 3 ends at 80.
    assert_eq!(shared_point(&runs, 1, 80, at(90, 3)), at(80, 3));
    // A log whose base is 20 (the runs start there): never before it.
    let runs = [(20, 1), (41, 2)];
    assert_eq!(shared_point(&runs, 21, 60, at(70, 1)), at(40, 1));
    assert_eq!(shared_point(&runs, 21, 60, at(70, 3)), at(40, 1));
    assert_eq!(shared_point(&runs[..1], 21, 40, at(70, 2)), at(20, 0));
}
