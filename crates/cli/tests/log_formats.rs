//! The replication log as the lecture's logical log, end to end (issue 18): three real
//! processes in sync mode, writes from the `redis` crate, and the log read back with
//! `replikv log show` and `GET /api/v1/log` from the leader and from a follower, also after
//! the follower restarts (its log file holds the old values too).

mod common;

use common::trio::Trio;
use redis::Commands;
use serde_json::Value;

/// Node `i`'s `GET /api/v1/log` answer to `query`, which must be 200.
fn log(trio: &Trio, i: usize, query: &str) -> Vec<Value> {
    let (code, body) = trio.nodes[i].http("GET", &format!("/api/v1/log?{query}"), b"");
    assert_eq!(code, 200, "{}", String::from_utf8_lossy(&body));
    serde_json::from_slice::<Value>(&body).unwrap().as_array().unwrap().clone()
}

#[test]
fn the_log_shows_old_and_new_values_and_transactions_on_every_replica() {
    let mut trio = Trio::start("acks = \"sync\"", &[]);
    let mut con = trio.con(0);
    let _: () = con.set("users.1234.picture_url", "me-old.jpg").unwrap();
    let _: () = con.set("users.1234.picture_url", "me-new.jpg").unwrap();
    let _: () = con.set("other", "x").unwrap();
    // A transaction over two keys: one record, one transaction.
    let _: () =
        redis::pipe().atomic().set("users.1.name", "ann").del("users.1234.picture_url").query(&mut con).unwrap();
    let last = trio.status(0)["replication"]["last_lsn"].as_u64().unwrap();
    trio.wait_applied(2, last);

    let records = log(&trio, 0, "from=1&prefix=users.");
    assert_eq!(log(&trio, 2, "from=1&prefix=users."), records, "the follower's log is the leader's");
    let with_changes: Vec<&Value> = records.iter().filter(|r| !r["changes"].as_array().unwrap().is_empty()).collect();
    assert_eq!(with_changes.len(), 3, "two SETs and the transaction under users.: {records:?}");
    let update = with_changes[1];
    let change = &update["changes"][0];
    assert_eq!(
        (&change["old"], &change["old_value"], &change["new_value"]),
        (&"value".into(), &"me-old.jpg".into(), &"me-new.jpg".into())
    );
    assert_eq!(
        change["old_version"], with_changes[0]["changes"][0]["new_version"],
        "the old version is the first write's"
    );
    let transaction = update["transaction"].as_u64().unwrap();
    assert_eq!(Some(transaction), update["lsn"].as_u64(), "a write's transaction id is its position");
    let multi = with_changes[2];
    assert_eq!((&multi["begins"], &multi["ends"], &multi["parts"]), (&1.into(), &1.into(), &1.into()));
    let keys: Vec<&str> = multi["keys"].as_array().unwrap().iter().map(|k| k.as_str().unwrap()).collect();
    assert_eq!(keys, ["users.1.name", "users.1234.picture_url"], "both writes of the transaction");
    assert_eq!(
        (&multi["changes"][1]["old_value"], &multi["changes"][1]["new_value"]),
        (&"me-new.jpg".into(), &Value::Null)
    );

    // The lecture's record, from a follower, by the command line; and again after it restarts.
    let expected = format!(
        "  table: users  key: 1234  column: picture_url  old_value: me-old.jpg  new_value: me-new.jpg  transaction: {transaction}"
    );
    let show = |trio: &Trio| {
        let (ok, out, err) = trio.replikv(&["log", "show", "--node", "n3", "--key", "users.1234."]);
        assert!(ok, "log show failed: {err}");
        out
    };
    let out = show(&trio);
    assert!(out.lines().any(|l| l == expected), "no lecture record in:\n{out}");
    assert!(out.contains("@n1"), "versions name their node:\n{out}");
    assert!(out.contains("old_value: me-new.jpg  new_value: (deleted)"), "the delete in the transaction:\n{out}");
    assert!(!out.contains("users.1.name") && !out.contains("key: other"), "only keys under the prefix:\n{out}");
    trio.nodes[2].terminate();
    trio.nodes[2].restart();
    assert_eq!(show(&trio), out, "the follower's log file kept the old values");

    // Bad positions are refused with the reason.
    for (query, reason) in [("from=0", "from counts from 1"), ("after=1&from=2", "not both"), ("limit=0", "at least 1")]
    {
        let (code, body) = trio.nodes[0].http("GET", &format!("/api/v1/log?{query}"), b"");
        assert_eq!(code, 400, "{query}");
        assert!(String::from_utf8_lossy(&body).contains(reason), "{query}: {}", String::from_utf8_lossy(&body));
    }
}
