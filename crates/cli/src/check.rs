//! `replikv check`: do the replicas of a cluster hold the same data? It compares each node's
//! Merkle digest (see `replikv_core::digest`) with the leader's and names the replicas, the
//! key ranges (hash buckets) and the keys that differ. A leaderless or multi-leader cluster has
//! no leader to compare against: there every replica is compared with every other
//! ([`pairwise`], which shares the digests, the bucket drill-down and the exit statuses below;
//! leaderless only when each node holds every key, n equals the node count). Which way is the cluster file's mode, never
//! a guess from the nodes' answers. The rest of this essay is the leader's way.
//!
//! 1. Ask every node at once for its `GET /api/v1/status`, as `replikv status` does
//!    ([`status::probe_all`]): the node that leads now is the reference ([`status::leader`]: of
//!    those that say they lead, the one of the highest epoch, unless a node is in a newer
//!    epoch still); in a cluster of one node, that node. Whichever node it is: after a failover
//!    n1 is a follower like any other. A node whose status shows it down (a process answering
//!    as another node) is down, whatever its port answers to the digest request.
//! 2. Ask every node at once for `GET /api/v1/digest`: its log position (LSN), live key count,
//!    root hash and the 256 bucket hashes.
//! 3. Replicas compare only at the same log position. While no leader answers, or a node that
//!    is up is at another position than the leader (writes still arriving, a follower catching
//!    up) or gives no digest, ask both again, until `--timeout-secs`. A node whose status does
//!    not answer is down: it is named, and not waited for.
//! 4. For each replica whose root differs from the leader's, walk both trees from the root
//!    down to the differing buckets; for each of the first [`BUCKETS_SHOWN_MAX`] of them, list
//!    both sides' keys (`GET /api/v1/digest/bucket/N`) and name the keys whose entries differ or
//!    that one side lacks.
//!
//! Exit status, as `diff` and `cmp` have it: 0 when every replica that answered holds the same
//! data as the leader (a node that is down is named and does not fail the check); 1 when one
//! differs; 2 when the check could not be made: no leader answered, a replica that is up never
//! reached the leader's position or gave no digest within `--timeout-secs`, or the cluster
//! file could not be read. [`exit_status`] maps the error [`main`] returns.
//!
//! CAVEATS
//! - Each digest is a full scan of that node's keys on its stepper thread (see the digest
//!   module): on a big data set, `check` slows the cluster while it runs.
//! - A bucket listing is one HTTP response of at most 1 MiB (`net::RESPONSE_BYTES_MAX`): a
//!   bucket with more keys than fit is reported as differing without its keys named.
//! - The leader is asked who it is and for its digest in two requests: a failover between them
//!   shows as positions that differ, and the next round asks again.
//! - A node that is down cannot be checked: a check that passes with a node down says nothing
//!   of that node's data.

use crate::cluster::args::{Output, WhichCluster};
use crate::cluster::layout::ClusterDir;
use crate::cluster::net;
use crate::cluster::status::{self, NodeRow};
use crate::output::{out, outln};
use anyhow::{anyhow, bail, Result};
use clap::Args;
use replikv_core::digest::{differing_buckets, Digest, DIGEST_BUCKETS};
use replikv_server::config::{ClusterConfig, ClusterNode};
use serde::Serialize;
use serde_json::Value;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

mod pairwise;

/// Differing buckets whose keys are listed, per replica.
pub const BUCKETS_SHOWN_MAX: usize = 8;

/// Keys named per differing bucket at most.
pub const KEYS_SHOWN_MAX: usize = 10;

/// Milliseconds between two rounds of asking while the check waits.
const POLL_MS: u64 = 200;

/// Compare the data of every replica of a local cluster with the leader's (in a leaderless
/// cluster, each replica with every other).
#[derive(Args, Debug)]
pub struct CheckArgs {
    /// Which cluster.
    #[command(flatten)]
    pub which: WhichCluster,
    /// Seconds to wait for a leader, and for the replicas to reach its log position; in a
    /// leaderless cluster, for every node up to give its digest with no operation in flight.
    #[arg(long, default_value_t = 30)]
    pub timeout_secs: u64,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t = Output::Table)]
    pub output: Output,
}

/// The error [`main`] returns when a replica that answered differs from the leader: exit
/// status 1, where any other error of `check` is 2 (see [`exit_status`]).
#[derive(Debug)]
pub struct Differs(String);

impl std::fmt::Display for Differs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Differs {}

/// The exit status of a `check` that returned `error`: 1 when replicas differ, 2 when the
/// check could not be made.
pub fn exit_status(error: &anyhow::Error) -> u8 {
    if error.is::<Differs>() {
        1
    } else {
        2
    }
}

/// One node's digest, as fetched.
struct Fetched {
    lsn: u64,
    digest: Digest,
}

/// One look at the cluster: which node leads, and what each node answered.
struct Round {
    /// The index of the node that leads now, if one answered.
    leader: Option<usize>,
    /// Per node, in the file's order: whether its status answered, and its digest.
    nodes: Vec<(bool, Result<Fetched>)>,
}

impl Round {
    /// The leader's digest, when a leader answered with one.
    fn reference(&self) -> Option<(usize, &Fetched)> {
        let leader = self.leader?;
        self.nodes[leader].1.as_ref().ok().map(|f| (leader, f))
    }

    /// Whether there is nothing more to wait for: the leader gave its digest, and every other
    /// node either is at its position or is down.
    fn settled(&self) -> bool {
        let Some((_, reference)) = self.reference() else { return false };
        self.nodes.iter().all(|(up, digest)| match digest {
            Ok(f) => f.lsn == reference.lsn,
            Err(_) => !up,
        })
    }
}

/// One replica's verdict.
#[derive(Debug, Serialize)]
pub struct ReplicaReport {
    /// The node's id.
    pub id: String,
    /// Its log position.
    pub lsn: Option<u64>,
    /// Its live keys.
    pub keys: Option<u64>,
    /// Its root hash.
    pub root: Option<String>,
    /// `reference` (the leader), `same`, `differs`, `not comparable` (at another log
    /// position), `no digest` (up, but its digest did not come) or `down`.
    pub verdict: &'static str,
    /// The buckets that differ from the reference, with the keys named.
    pub buckets: Vec<BucketReport>,
    /// Why it gave no digest.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// One differing bucket.
#[derive(Debug, Serialize)]
pub struct BucketReport {
    /// The bucket's number (the first byte of the keys' BLAKE3 hashes).
    pub bucket: usize,
    /// Keys whose entries differ, or that one side lacks: (key, what).
    pub keys: Vec<(String, String)>,
}

/// What a check found: each replica's verdict, and what fails the check.
struct Findings {
    /// Per node, in the file's order.
    reports: Vec<ReplicaReport>,
    /// Replicas that differ from the leader: exit status 1.
    differences: Vec<String>,
    /// Replicas that could not be compared: exit status 2 when nothing differs.
    uncompared: Vec<String>,
}

/// Runs `replikv check`.
pub fn main(args: &CheckArgs) -> Result<()> {
    let dir = ClusterDir::new(&args.which)?;
    let cluster = dir.read_config()?;
    if let Some(nwr) = status::leaderless_nwr(&cluster)? {
        return pairwise::main(args, &dir, &cluster, pairwise::Kind::Leaderless(nwr));
    }
    if cluster.replication.mode == replikv_server::config::ReplicationMode::MultiLeader {
        let datacenters = cluster.datacenters().len();
        return pairwise::main(args, &dir, &cluster, pairwise::Kind::MultiLeader { datacenters });
    }
    let deadline = Instant::now() + Duration::from_secs(args.timeout_secs);
    let round = loop {
        let round = look(&cluster, &dir);
        if round.settled() || Instant::now() >= deadline {
            break round;
        }
        std::thread::sleep(Duration::from_millis(POLL_MS));
    };
    let Some((leader, reference)) = round.reference() else {
        let why = match round.leader {
            None => "no node leads (an election under way, or the leader down: see replikv status)".to_string(),
            Some(i) => format!("the leader {} did not give its digest", cluster.nodes[i].id),
        };
        let errors = round.nodes.iter().zip(&cluster.nodes).filter_map(|((_, d), n)| Some((n, d.as_ref().err()?)));
        let errors: Vec<String> = errors.map(|(n, e)| format!("{}: {e:#}", n.id)).collect();
        bail!("{why} after {} s; nothing to compare against ({})", args.timeout_secs, errors.join("; "));
    };
    let Findings { reports, differences, uncompared } = compare(&cluster, &round, leader, reference, args.timeout_secs);
    let leader_id = &cluster.nodes[leader].id;
    let problems: Vec<&String> = differences.iter().chain(&uncompared).collect();
    match args.output {
        Output::Json => {
            let answer = serde_json::json!({
                "cluster": cluster.name,
                "leader": leader_id,
                "ok": problems.is_empty(),
                "replicas": reports,
                "problems": problems,
            });
            outln!("{}", serde_json::to_string_pretty(&answer)?);
        }
        Output::Table => out!("{}", render(&cluster.name, leader_id, &reports)),
    }
    if !differences.is_empty() {
        bail!(Differs(problems.iter().map(|p| p.as_str()).collect::<Vec<_>>().join("; ")));
    }
    if !uncompared.is_empty() {
        bail!("{}", uncompared.join("; "));
    }
    Ok(())
}

/// Asks every node at once who leads, then every node at once for its digest.
fn look(cluster: &ClusterConfig, dir: &ClusterDir) -> Round {
    let rows = status::probe_all(cluster, &[], &dir.config());
    let leader = match cluster.nodes.len() {
        1 => Some(0),
        _ => status::leader(&rows).and_then(|l| cluster.nodes.iter().position(|n| n.id == l.id)),
    };
    let digests = fetch_all(&cluster.nodes);
    Round { leader, nodes: rows.iter().zip(digests).map(|(row, digest)| node_answer(row, digest)).collect() }
}

/// What a node answered: whether it is up, and its digest. A node whose status showed it down
/// (a process answering as another node, say) is down even if its port gave a digest: that
/// digest is another node's, never compared as this one's.
fn node_answer(row: &NodeRow, digest: Result<Fetched>) -> (bool, Result<Fetched>) {
    match digest {
        Ok(_) if !row.up => (false, Err(anyhow!("{}", row.error.as_deref().unwrap_or("its status did not answer")))),
        digest => (row.up, digest),
    }
}

/// Each node's verdict against the leader's digest, `reference`, and the keys of the buckets
/// that differ (asked of both sides).
fn compare(cluster: &ClusterConfig, round: &Round, leader: usize, reference: &Fetched, waited_secs: u64) -> Findings {
    let leader_node = &cluster.nodes[leader];
    let mut findings = Findings { reports: Vec::new(), differences: Vec::new(), uncompared: Vec::new() };
    for (i, (node, (up, digest))) in cluster.nodes.iter().zip(&round.nodes).enumerate() {
        let mut report = ReplicaReport {
            id: node.id.clone(),
            lsn: None,
            keys: None,
            root: None,
            verdict: "same",
            buckets: Vec::new(),
            error: None,
        };
        match digest {
            Err(e) => {
                let (verdict, error) = without_digest(node, *up, e, waited_secs, &mut findings.uncompared);
                (report.verdict, report.error) = (verdict, Some(error));
            }
            Ok(f) => {
                report.lsn = Some(f.lsn);
                report.keys = Some(f.digest.keys);
                report.root = Some(replikv_core::digest::hex(&f.digest.root));
                if i == leader {
                    report.verdict = "reference";
                } else if f.lsn != reference.lsn {
                    report.verdict = "not comparable";
                    findings.uncompared.push(format!(
                        "{} is at LSN {} and the leader {} at {}: still catching up after {waited_secs} s",
                        node.id, f.lsn, leader_node.id, reference.lsn
                    ));
                } else {
                    let differing = differing_buckets(&reference.digest, &f.digest);
                    if !differing.is_empty() {
                        report.verdict = "differs";
                        findings.differences.push(format!(
                            "{} differs from {} in {} of {DIGEST_BUCKETS} key ranges",
                            node.id,
                            leader_node.id,
                            differing.len()
                        ));
                        for &bucket in differing.iter().take(BUCKETS_SHOWN_MAX) {
                            report.buckets.push(compare_bucket(leader_node, node, bucket));
                        }
                    }
                }
            }
        }
        findings.reports.push(report);
    }
    findings
}

/// The verdict of `node`, which gave no digest (`e` says why), and the reason shown: `down`
/// when its status did not answer either, which fails nothing; else `no digest`, which
/// `uncompared` records (the check could not be made).
fn without_digest(
    node: &ClusterNode,
    up: bool,
    e: &anyhow::Error,
    waited_secs: u64,
    uncompared: &mut Vec<String>,
) -> (&'static str, String) {
    if !up {
        return ("down", format!("{} did not answer: {e:#}", node.id));
    }
    uncompared.push(format!("{} is up but gave no digest after {waited_secs} s", node.id));
    ("no digest", format!("{} is up but gave no digest: {e:#}", node.id))
}

/// The table: one line per replica, then each differing bucket and its keys.
fn render(cluster: &str, leader: &str, reports: &[ReplicaReport]) -> String {
    let mut out = format!("check of cluster {cluster}: each replica's Merkle root against the leader's ({leader})\n");
    for r in reports {
        let dash = || "-".to_string();
        out += &format!(
            "{:<8} lsn {:<10} keys {:<10} root {}  {}\n",
            r.id,
            r.lsn.map_or_else(dash, |l| l.to_string()),
            r.keys.map_or_else(dash, |k| k.to_string()),
            r.root.as_deref().map_or_else(dash, |h| h[..16].to_string()),
            r.verdict
        );
        out += &render_buckets(&r.buckets);
        if let Some(e) = &r.error {
            out += &format!("  {e}\n");
        }
    }
    out
}

/// Each differing bucket, indented, and its keys below it with what differs.
fn render_buckets(buckets: &[BucketReport]) -> String {
    let mut out = String::new();
    for b in buckets {
        out += &format!("  key range {:#04x} differs", b.bucket);
        if b.keys.is_empty() {
            out += "\n";
        } else {
            out += ":\n";
        }
        for (key, what) in &b.keys {
            out += &format!("    {key:?}: {what}\n");
        }
    }
    out
}

/// Asks every node for its digest at once.
fn fetch_all(nodes: &[ClusterNode]) -> Vec<Result<Fetched>> {
    std::thread::scope(|scope| {
        let probes: Vec<_> = nodes.iter().map(|n| scope.spawn(move || fetch(n))).collect();
        probes.into_iter().map(|p| p.join().expect("a digest probe panicked")).collect()
    })
}

/// One node's digest.
fn fetch(node: &ClusterNode) -> Result<Fetched> {
    let body = get_json(node, "/api/v1/digest")?;
    let lsn = body["lsn"].as_u64().ok_or_else(|| anyhow!("no lsn in {body}"))?;
    let keys = body["keys"].as_u64().ok_or_else(|| anyhow!("no keys in {body}"))?;
    let root = unhex(&body["root"])?;
    let buckets =
        body["buckets"].as_array().ok_or_else(|| anyhow!("no buckets"))?.iter().map(unhex).collect::<Result<_>>()?;
    Ok(Fetched { lsn, digest: Digest { keys, root, buckets } })
}

/// GET `path` from `node` as JSON; an error names the node and what it said.
fn get_json(node: &ClusterNode, path: &str) -> Result<Value> {
    let (code, body) = net::get(node.http_addr, path)?;
    let value: Value = serde_json::from_slice(&body).map_err(|e| anyhow!("{} {path}: bad JSON: {e}", node.id))?;
    if code != 200 {
        bail!("{} {path}: HTTP {code}: {}", node.id, value["error"].as_str().unwrap_or(""));
    }
    Ok(value)
}

/// A 32-byte hash from its hex.
fn unhex(value: &Value) -> Result<[u8; 32]> {
    let text = value.as_str().ok_or_else(|| anyhow!("a hash is not a string: {value}"))?;
    let mut out = [0u8; 32];
    if text.len() != 64 {
        bail!("a hash of {} hex digits, not 64", text.len());
    }
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16)?;
    }
    Ok(out)
}

/// Names the keys of `bucket` that differ between `reference` (the leader, or the first of a
/// leaderless pair) and `node`: "missing on" `node`, "only on" `node`, or differing.
fn compare_bucket(reference: &ClusterNode, node: &ClusterNode, bucket: usize) -> BucketReport {
    let path = format!("/api/v1/digest/bucket/{bucket}");
    let entries = |n: &ClusterNode| -> Result<BTreeMap<String, String>> {
        let body = get_json(n, &path)?;
        let entries = body["entries"].as_array().cloned().unwrap_or_default();
        Ok(entries
            .iter()
            .map(|e| (e["key"].as_str().unwrap_or("").to_string(), e["hash"].as_str().unwrap_or("").to_string()))
            .collect())
    };
    let mut keys = Vec::new();
    match (entries(reference), entries(node)) {
        (Ok(a), Ok(b)) => {
            for (key, hash) in &a {
                match b.get(key) {
                    None => keys.push((key.clone(), format!("missing on {}", node.id))),
                    Some(h) if h != hash => keys.push((key.clone(), "value or version differs".to_string())),
                    _ => {}
                }
            }
            for key in b.keys().filter(|k| !a.contains_key(*k)) {
                keys.push((key.clone(), format!("only on {}", node.id)));
            }
            keys.truncate(KEYS_SHOWN_MAX);
        }
        (Err(e), _) | (_, Err(e)) => keys.push((String::new(), format!("keys not listed: {e:#}"))),
    }
    BucketReport { bucket, keys }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_report_names_differing_ranges_and_keys() {
        let reports = vec![
            ReplicaReport {
                id: "n1".into(),
                lsn: Some(5),
                keys: Some(3),
                root: Some("ab".repeat(32)),
                verdict: "reference",
                buckets: vec![],
                error: None,
            },
            ReplicaReport {
                id: "n2".into(),
                lsn: Some(5),
                keys: Some(2),
                root: Some("cd".repeat(32)),
                verdict: "differs",
                buckets: vec![BucketReport { bucket: 31, keys: vec![("k7".into(), "missing on n2".into())] }],
                error: None,
            },
        ];
        let text = render("demo", "n1", &reports);
        assert!(text.contains("n2       lsn 5          keys 2          root cdcdcdcdcdcdcdcd  differs"), "{text}");
        assert!(text.contains("key range 0x1f differs:\n    \"k7\": missing on n2"), "{text}");
    }

    #[test]
    fn the_check_waits_for_a_leader_and_for_the_nodes_that_are_up() {
        /// A node: `None` when down, `Some(None)` when up without a digest, `Some(Some(lsn))`.
        type Answer = Option<Option<u64>>;
        let node = |n: Answer| -> (bool, Result<Fetched>) {
            let digest = Digest { keys: 0, root: [0; 32], buckets: Vec::new() };
            match n {
                None => (false, Err(anyhow!("connection refused"))),
                Some(None) => (true, Err(anyhow!("HTTP 503"))),
                Some(Some(lsn)) => (true, Ok(Fetched { lsn, digest })),
            }
        };
        let table: Vec<(Option<usize>, [Answer; 3], bool)> = vec![
            // Every node at the leader's position, whichever node leads.
            (Some(0), [Some(Some(5)), Some(Some(5)), Some(Some(5))], true),
            (Some(1), [None, Some(Some(7)), Some(Some(7))], true),
            // No leader yet, or its digest did not come.
            (None, [Some(Some(5)), Some(Some(5)), Some(Some(5))], false),
            (Some(1), [Some(Some(5)), Some(None), Some(Some(5))], false),
            (Some(1), [Some(Some(5)), None, Some(Some(5))], false),
            // A follower behind, or up without its digest: wait for it.
            (Some(0), [Some(Some(5)), Some(Some(4)), Some(Some(5))], false),
            (Some(0), [Some(Some(5)), Some(None), None], false),
            // A follower down is not waited for.
            (Some(0), [Some(Some(5)), None, None], true),
        ];
        for (leader, nodes, want) in table {
            let round = Round { leader, nodes: nodes.iter().map(|&n| node(n)).collect() };
            assert_eq!(round.settled(), want, "leader {leader:?}, nodes {nodes:?}");
        }
    }

    #[test]
    fn a_digest_from_a_node_whose_status_showed_it_down_is_not_taken_as_its_own() {
        let fetched = || Ok(Fetched { lsn: 5, digest: Digest { keys: 0, root: [0; 32], buckets: Vec::new() } });
        let mut row = NodeRow { id: "n2".into(), up: true, ..NodeRow::default() };
        assert!(matches!(node_answer(&row, fetched()), (true, Ok(_))));
        row.up = false;
        row.error = Some("127.0.0.1:1 is answered by node \"n3\", not n2".into());
        let (up, digest) = node_answer(&row, fetched());
        assert!(!up);
        assert!(digest.is_err_and(|e| e.to_string().contains("answered by node")));
    }

    #[test]
    fn hashes_round_trip_through_hex_and_bad_ones_are_refused() {
        let hash = [7u8; 32];
        let text = Value::String(replikv_core::digest::hex(&hash));
        assert_eq!(unhex(&text).unwrap(), hash);
        assert!(unhex(&Value::String("zz".repeat(32))).is_err());
        assert!(unhex(&Value::String("ab".into())).is_err());
    }
}
