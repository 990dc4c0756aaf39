use super::*;
use crate::kv::parse_command;
use crate::multi_leader::conflict::{receive, Resolve};
use crate::storage::MemoryEngine;

/// One leader's store and commands, under `rules`.
struct Leader {
    store: Store<MemoryEngine>,
    commands: Causal,
    now_ms: u64,
}

impl Leader {
    fn new(name: &str, rules: Rules) -> Leader {
        let node = NodeId::from_name(name);
        let mut store = Store::new(MemoryEngine::new(), node);
        store.capture_changes();
        Leader { store, commands: Causal::new(node, rules), now_ms: 1_000 }
    }

    fn run(&mut self, line: &str) -> Reply {
        let args: Vec<Bytes> = line.split(' ').map(|a| Bytes::copy_from_slice(a.as_bytes())).collect();
        self.now_ms += 1;
        let request = parse_command(&args).expect("a known command").expect("valid arguments");
        self.commands.execute(&mut self.store, self.now_ms, request).unwrap()
    }

    fn state(&mut self, key: &str) -> Siblings {
        load(&mut self.store, &Bytes::copy_from_slice(key.as_bytes())).unwrap().unwrap()
    }

    /// Takes `key`'s state from `other`, as the exchange between leaders will.
    fn receive(&mut self, other: &mut Leader, key: &str) {
        let change = other.state(key);
        let mut state = self.state(key);
        receive(&mut state, &change, self.commands.rules.for_key(key.as_bytes())).unwrap();
        let record = encode(&state).unwrap().unwrap();
        self.store.put_record(physical(0, &Bytes::copy_from_slice(key.as_bytes())), record).unwrap();
    }
}

fn bulk(text: &str) -> Reply {
    Reply::Bulk(Bytes::copy_from_slice(text.as_bytes()))
}

#[test]
fn the_lecture_example_under_each_rule() {
    let mut rules = Rules::new(Resolve::Lww);
    rules.add_prefix(b"users.", Resolve::Merge).unwrap();
    rules.add_prefix(b"apps.", Resolve::App).unwrap();
    for (key, expected) in [
        ("pictures.1234.url", bulk("me-old2.jpg")),
        ("users.1234.picture_url", bulk("me-new.jpg,me-old2.jpg")),
        ("apps.1234.picture_url", Reply::Error(String::new())),
    ] {
        let (mut a, mut b) = (Leader::new("dc1", rules.clone()), Leader::new("dc2", rules.clone()));
        assert_eq!(a.run(&format!("SET {key} me-old.jpg")), Reply::Ok);
        b.receive(&mut a, key);
        assert_eq!(b.run(&format!("GET {key}")), bulk("me-old.jpg"));
        // The cut: each datacenter writes the cell.
        a.run(&format!("SET {key} me-new.jpg"));
        b.now_ms += 10; // b's write is stamped later
        b.run(&format!("SET {key} me-old2.jpg"));
        a.receive(&mut b, key);
        b.receive(&mut a, key);
        let (got_a, got_b) = (a.run(&format!("GET {key}")), b.run(&format!("GET {key}")));
        assert_eq!(got_a, got_b, "{key}: both datacenters read alike");
        match expected {
            Reply::Error(_) => {
                let Reply::Error(e) = got_a else { panic!("{key}: {got_a:?}") };
                assert!(e.starts_with("SIBLINGS the key has 2 concurrent values"), "{e}");
                let Reply::Array(parts) = a.run(&format!("REPLIKV.SIBLINGS {key}")) else { panic!() };
                assert_eq!(parts[1], Reply::Array(vec![bulk("me-new.jpg"), bulk("me-old2.jpg")]));
                let Reply::Bulk(token) = &parts[0] else { panic!() };
                let token = String::from_utf8(token.to_vec()).unwrap();
                assert_eq!(a.run(&format!("SET {key} me-final.jpg CONTEXT {token}")), Reply::Ok);
                assert_eq!(a.run(&format!("GET {key}")), bulk("me-final.jpg"));
            }
            expected => assert_eq!(got_a, expected, "{key}"),
        }
    }
}

#[test]
fn writes_replace_what_the_leader_has_seen_and_reads_render_the_state() {
    let mut a = Leader::new("dc1", Rules::new(Resolve::Merge));
    assert_eq!(a.run("GET k"), Reply::Nil);
    a.run("SET k 1");
    a.run("SET k 2");
    assert_eq!(a.run("GET k"), bulk("2"), "a local overwrite is no conflict");
    assert_eq!(a.state("k").values().len(), 1);
    assert_eq!(a.run("MSET k 3 j 4 k 5"), Reply::Ok);
    assert_eq!(a.run("MGET k j missing"), Reply::Array(vec![bulk("5"), bulk("4"), Reply::Nil]));
    assert_eq!(a.state("k").values().len(), 1, "a key named twice in one MSET is written once, its last value");
    assert_eq!(a.run("EXISTS k j missing k"), Reply::Int(3));
    assert_eq!(a.run("DEL k missing k"), Reply::Int(1));
    assert_eq!(a.run("GET k"), Reply::Nil);
    assert_eq!(a.run("EXISTS k"), Reply::Int(0));
    assert_eq!(a.run("DEL k"), Reply::Int(0), "deleting a deleted key writes nothing");
    assert_eq!(a.run("DBSIZE"), Reply::Int(2), "the tombstone stays, for the other leaders");
    let changes = a.store.take_changes();
    let keys: Vec<&[u8]> = changes.iter().map(|c| &c.key[..]).collect();
    assert_eq!(keys, [&b"k"[..], b"k", b"k", b"j", b"k"], "one change per key a request wrote");
}

#[test]
fn commands_that_cannot_be_resolved_are_refused_with_the_reason() {
    let mut a = Leader::new("dc1", Rules::default());
    for line in ["INCR k", "APPEND k x", "SET k v NX", "SET k v GET", "SET k v EX 10", "EXPIRE k 10", "MSETNX k v"] {
        let reply = a.run(line);
        let Reply::Error(e) = &reply else { panic!("{line}: {reply:?}") };
        assert!(e.contains("not available in multi-leader mode"), "{line}: {e}");
    }
    let other_db = Request::InDb { db: 1, request: Box::new(Request::Get { key: Bytes::from_static(b"k") }) };
    let reply = a.commands.execute(&mut a.store, 5_000, other_db).unwrap();
    assert!(matches!(&reply, Reply::Error(e) if e.contains("database other than 0")), "{reply:?}");
    assert!(a.store.take_changes().is_empty(), "a refused command writes nothing");
}

#[test]
fn a_refused_key_stores_none_of_the_request() {
    let mut a = Leader::new("dc1", Rules::default());
    a.run("SET good 1");
    a.store.take_changes();
    // A record that is no causal state (a data directory of another mode).
    let record = Record { version: Default::default(), value: Some(Bytes::from_static(b"plain")), expire_at_ms: None };
    a.store.put_record(Bytes::from_static(b"bad"), record).unwrap();
    a.store.take_changes();
    let reply = a.run("MSET good 2 bad 3");
    let Reply::Error(e) = &reply else { panic!("{reply:?}") };
    assert!(e.contains("key \"bad\" holds no multi-leader state"), "{e}");
    assert!(a.store.take_changes().is_empty());
    assert_eq!(a.run("GET good"), bulk("1"));
    let reply = a.run("SET good 2 CONTEXT 00ff");
    assert!(matches!(&reply, Reply::Error(e) if e.contains("bad causal context")), "{reply:?}");
}

#[test]
fn replikv_conflicts_parses_a_prefix_and_a_count_and_refuses_the_rest() {
    let parse = |line: &str| {
        let args: Vec<Bytes> = line.split(' ').map(|a| Bytes::copy_from_slice(a.as_bytes())).collect();
        parse_command(&args).expect("a known command")
    };
    let conflicts =
        |prefix: &'static str, count| Ok(Request::Conflicts { prefix: Bytes::from_static(prefix.as_bytes()), count });
    assert_eq!(parse("REPLIKV.CONFLICTS"), conflicts("", crate::kv::CONFLICTS_LISTED_DEFAULT));
    assert_eq!(parse("replikv.conflicts users."), conflicts("users.", crate::kv::CONFLICTS_LISTED_DEFAULT));
    assert_eq!(parse("REPLIKV.CONFLICTS COUNT 3"), conflicts("", 3));
    assert_eq!(parse("REPLIKV.CONFLICTS users. count 3"), conflicts("users.", 3));
    assert_eq!(
        parse("REPLIKV.CONFLICTS COUNT COUNT 2"),
        conflicts("COUNT", 2),
        "a prefix spelled COUNT, then the count"
    );
    for bad in ["REPLIKV.CONFLICTS users. COUNT 0", "REPLIKV.CONFLICTS users. LIMIT 3", "REPLIKV.CONFLICTS a b c d"] {
        assert!(matches!(parse(bad), Err(Reply::Error(_))), "{bad}");
    }
    let mut a = Leader::new("dc1", Rules::default());
    assert_eq!(a.run("REPLIKV.CONFLICTS"), Reply::Array(vec![]), "an empty log");
}

#[test]
fn under_lww_a_local_write_leaves_one_version_and_exists_agrees_with_get() {
    let mut a = Leader::new("dc1", Rules::new(Resolve::Lww));
    let mut b = Leader::new("dc2", Rules::new(Resolve::Lww));
    a.run("SET k 1");
    b.receive(&mut a, "k");
    let Reply::Array(parts) = a.run("REPLIKV.SIBLINGS k") else { panic!() };
    let Reply::Bulk(token) = &parts[0] else { panic!() };
    let token = String::from_utf8(token.to_vec()).unwrap();
    b.now_ms += 10;
    b.run("SET k 2");
    a.receive(&mut b, "k");
    // A write with an old context (it names only the first write) still leaves one version.
    assert_eq!(a.run(&format!("SET k 3 CONTEXT {token}")), Reply::Ok);
    assert_eq!(a.state("k").values().len(), 1, "{:?}", a.state("k"));
    assert_eq!(a.run("GET k"), bulk("3"));
    // A delete that loses to a concurrent write under lww: GET finds the write, so do EXISTS
    // and DEL.
    let mut c = Leader::new("dc3", Rules::new(Resolve::Lww));
    c.run("SET j v");
    let mut d = Leader::new("dc4", Rules::new(Resolve::Lww));
    d.run("SET j old");
    d.run("DEL j");
    c.now_ms += 50;
    c.run("SET j newer");
    d.receive(&mut c, "j");
    assert_eq!(d.run("GET j"), bulk("newer"));
    assert_eq!(d.run("EXISTS j"), Reply::Int(1));
}
