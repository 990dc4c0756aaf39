//! `replikv check` of a cluster without one leader whose data is the reference: every replica
//! against every other.
//!
//! # Multi-leader
//!
//! Every node of every datacenter holds every key, so once the exchange is idle every digest is
//! equal (a multi-leader digest covers the clients' keys, not each datacenter's own conflict
//! log: see the core's `Commands::own_record`). What there is to wait for is records on their way: a datacenter's
//! leader counts what each other datacenter lacks of its log and what each follower lacks
//! ([`crate::cluster::status::multi_leader_pending`]); a datacenter cut off counts as lacking.
//! `check` asks again, until `--timeout-secs`, while a node has records pending, or while the
//! digests differ (a follower applies what it holds a heartbeat after its leader learns it is
//! durable). Then it compares as below; a node with records still pending makes the check
//! exit 2 as one with operations in flight does.
//!
//! # Leaderless
//!
//! A leaderless cluster has no leader whose data is the reference: every node coordinates
//! writes, and a write is acknowledged once w of its key's n replicas hold it. With n equal to
//! the number of nodes every node is a replica of every key, so once the writes have reached
//! every replica all digests are equal, and two that differ name a pair of replicas and the
//! keys one of them lacks or holds in another state (a key's digest entry hashes its whole
//! stored state: values, versions, causal context, tombstones).
//!
//! 1. The cluster file's n must equal its node count, or `check` refuses at once
//!    ([`check_placement`], exit status 2), naming both: with n fewer than the nodes each node
//!    holds only the keys the ring places on it, so whole-node digests differ by design and
//!    comparing them would say nothing. (Comparing each key across its own n replicas would
//!    take every node's full key listing and the ring; not done.)
//! 2. Ask every node at once for its status ([`status::probe_all`]): whether it is up, and how
//!    many operations it coordinates now (`replication.leaderless.in_flight`); then every node
//!    at once for its digest. A leaderless digest's LSN is always 0: there is no log position
//!    to wait for.
//! 3. What there is to wait for is writes on their way: a coordinator counts a write in flight
//!    until every replica has acknowledged it (or its timeout passed), also after answering it. Ask again, until
//!    `--timeout-secs`, while a node that is up gives no digest or has an operation in flight
//!    ([`Round::settled`]); a node down is named and not waited for. A node that has just
//!    started answers its digest with an error (`BUSY ... rebuilding its Merkle trees`, HTTP
//!    503) until its trees are filled from its store: it counts as giving no digest yet, and is
//!    asked again.
//! 4. Compare every pair of nodes that gave a digest ([`compare`]); for each pair whose roots
//!    differ, walk both trees to the differing buckets and name the keys of the first
//!    [`BUCKETS_SHOWN_MAX`] of them, with the same drill-down as against a leader, the first
//!    node of the pair (in the file's order) as the reference. A node's verdict is `same` when
//!    it matches every other that answered, `differs` (naming the nodes it does not match),
//!    `no digest` or `down`.
//!
//! Exit status as against a leader: 0 when every pair of nodes that answered holds the same
//! data (a node down is named and does not fail the check), 1 when a pair differs, 2 when the
//! check could not be made: n is fewer than the nodes, no node gave a digest, a node up gave
//! none within `--timeout-secs`, or a node still had operations in flight then (its writes may
//! be on their way: the differences seen are shown, but do not count as found).
//!
//! The digests come from the nodes' Merkle trees, the ones anti-entropy compares, kept up to
//! date on every write: a check does not scan the store. A write that reached w replicas but
//! not n (one was cut off or down) is missing from the others until a read of its key repairs
//! them, anti-entropy's next rounds exchange it (every `anti_entropy_interval_ms`, when not 0),
//! or, with `hinted_handoff`, its hint is delivered. `check` naming such a key in between is
//! the right answer, not a false alarm; run it again after a few intervals to watch
//! anti-entropy (or read repair, with `anti_entropy_interval_ms = 0`) do its work. A check is a
//! snapshot: one that passes says the replicas were the same when asked.
//!
//! CAVEATS
//! - A node's status and its digest are two requests: a write that starts after the status
//!   said nothing was in flight, and is still on its way when the digests are taken, shows as
//!   a difference (and a busy node's status can be up to 20 ms old). Run `check` while clients
//!   are quiet.
//! - A read's repairs leave its coordinator as the read ends and are not counted in flight: a
//!   `check` right after a read that repairs may still see the replica it repairs as different,
//!   for the few milliseconds the repair takes.
//! - Pairs grow as the square of the nodes, and a node that differs from several others has
//!   its buckets listed once per pair. Only the first [`PAIRS_SHOWN_MAX`] differing pairs are
//!   drilled into; the others are named with their count of differing key ranges.
//! - The leader's way's caveats on the cost of a digest and the size of a bucket listing hold
//!   here too.

use super::{
    compare_bucket, fetch_all, node_answer, render_buckets, without_digest, BucketReport, CheckArgs, Differs, Fetched,
    BUCKETS_SHOWN_MAX, POLL_MS,
};
use crate::cluster::args::Output;
use crate::cluster::layout::ClusterDir;
use crate::cluster::status::{self, NodeRow};
use crate::output::{out, outln};
use anyhow::{anyhow, bail, Result};
use replikv_core::digest::{differing_buckets, DIGEST_BUCKETS};
use replikv_core::quorum::Nwr;
use replikv_server::config::ClusterConfig;
use serde::Serialize;
use std::time::{Duration, Instant};

/// Differing pairs whose buckets are listed; the pairs beyond are named only.
pub const PAIRS_SHOWN_MAX: usize = 16;

/// What one node answered in one round.
struct Answer {
    /// Whether its status answered as this node.
    up: bool,
    /// Operations it coordinated when its status answered; `None` when it is down or its
    /// status has no leaderless counters.
    in_flight: Option<u64>,
    /// Its digest, or why there is none.
    digest: Result<Fetched>,
}

/// One look at the cluster: what each node answered, in the file's order.
struct Round {
    /// Per node, in the file's order.
    nodes: Vec<Answer>,
}

impl Round {
    /// Whether there is nothing more to wait for: every node is down, or gave its digest with
    /// nothing in flight; in a multi-leader cluster, the digests given are also equal (see the
    /// module's essay).
    fn settled(&self, kind: Kind) -> bool {
        let idle = self.nodes.iter().all(|a| match &a.digest {
            Ok(_) => a.in_flight == Some(0),
            Err(_) => !a.up,
        });
        let mut roots = self.nodes.iter().filter_map(|a| a.digest.as_ref().ok()).map(|f| f.digest.root);
        let first = roots.next();
        idle && (matches!(kind, Kind::Leaderless(_)) || roots.all(|r| Some(r) == first))
    }
}

/// One node's verdict.
#[derive(Debug, Serialize)]
pub struct NodeReport {
    /// The node's id.
    pub id: String,
    /// Its live keys.
    pub keys: Option<u64>,
    /// Its root hash.
    pub root: Option<String>,
    /// Operations it coordinated when last asked.
    pub in_flight: Option<u64>,
    /// `same` (as every other node that answered), `differs`, `no digest` (up, but its digest
    /// did not come) or `down`.
    pub verdict: &'static str,
    /// The nodes whose digest differs from its, in the file's order.
    pub differs_from: Vec<String>,
    /// Why it gave no digest.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A pair of replicas that differ.
#[derive(Debug, Serialize)]
pub struct PairReport {
    /// The two nodes, in the file's order; the first is the reference of the key listing.
    pub replicas: [String; 2],
    /// How many of the [`DIGEST_BUCKETS`] key ranges differ.
    pub ranges: usize,
    /// The first differing buckets, keys named; empty beyond [`PAIRS_SHOWN_MAX`] pairs.
    pub buckets: Vec<BucketReport>,
}

/// What a check found.
#[derive(Default)]
struct Findings {
    /// Per node, in the file's order.
    nodes: Vec<NodeReport>,
    /// The pairs that differ, in the file's order.
    pairs: Vec<PairReport>,
    /// One line per pair that differs: exit status 1.
    differences: Vec<String>,
    /// Nodes that still had operations in flight: exit status 2, differences or not.
    busy: Vec<String>,
    /// Nodes up that gave no digest: exit status 2 when nothing differs.
    uncompared: Vec<String>,
}

/// Which kind of cluster is checked.
#[derive(Clone, Copy, Debug)]
pub(super) enum Kind {
    /// Leaderless, with these quorums.
    Leaderless(Nwr),
    /// Multi-leader, with this many datacenters.
    MultiLeader {
        /// Datacenters in the cluster file.
        datacenters: usize,
    },
}

impl Kind {
    /// What a node waits for, in words: `operation(s) in flight` or `record(s) on their way`.
    fn pending(self) -> &'static str {
        match self {
            Kind::Leaderless(_) => "operation(s) in flight",
            Kind::MultiLeader { .. } => "record(s) still to replicate",
        }
    }
}

/// Runs `replikv check` on a leaderless or multi-leader cluster.
pub(super) fn main(args: &CheckArgs, dir: &ClusterDir, cluster: &ClusterConfig, kind: Kind) -> Result<()> {
    if let Kind::Leaderless(nwr) = kind {
        check_placement(&cluster.name, nwr, cluster.nodes.len())?;
    }
    let deadline = Instant::now() + Duration::from_secs(args.timeout_secs);
    let round = loop {
        let round = look(cluster, dir, kind);
        if round.settled(kind) || Instant::now() >= deadline {
            break round;
        }
        std::thread::sleep(Duration::from_millis(POLL_MS));
    };
    if round.nodes.iter().all(|a| a.digest.is_err()) {
        let errors = round.nodes.iter().zip(&cluster.nodes).filter_map(|(a, n)| Some((n, a.digest.as_ref().err()?)));
        let errors: Vec<String> = errors.map(|(n, e)| format!("{}: {e:#}", n.id)).collect();
        bail!("no node gave its digest after {} s; nothing to compare ({})", args.timeout_secs, errors.join("; "));
    }
    let Findings { nodes, pairs, differences, busy, uncompared } = compare(cluster, &round, args.timeout_secs, kind);
    let problems: Vec<&str> = busy.iter().chain(&differences).chain(&uncompared).map(String::as_str).collect();
    match args.output {
        Output::Json => {
            let mut answer = serde_json::json!({
                "cluster": cluster.name,
                "mode": cluster.replication.mode.to_string(),
                "ok": problems.is_empty(),
                "replicas": nodes,
                "pairs": pairs,
                "problems": problems,
            });
            match kind {
                Kind::Leaderless(nwr) => {
                    for (name, value) in [("n", nwr.n), ("w", nwr.w), ("r", nwr.r)] {
                        answer[name] = value.into();
                    }
                }
                Kind::MultiLeader { datacenters } => answer["datacenters"] = datacenters.into(),
            }
            outln!("{}", serde_json::to_string_pretty(&answer)?);
        }
        Output::Table => out!("{}", render(&cluster.name, kind, &nodes, &pairs)),
    }
    if !busy.is_empty() {
        bail!("{}", problems.join("; "));
    }
    if !differences.is_empty() {
        bail!(Differs(problems.join("; ")));
    }
    if !uncompared.is_empty() {
        bail!("{}", uncompared.join("; "));
    }
    Ok(())
}

/// Refuses a cluster whose nodes do not each hold every key: with n fewer than the nodes,
/// whole-node digests differ by design.
fn check_placement(cluster: &str, nwr: Nwr, nodes: usize) -> Result<()> {
    if nwr.n < nodes {
        bail!(
            "cluster {cluster} is leaderless with n = {} replicas per key on {nodes} nodes: each node holds only the \
             keys the ring places on it, so their whole-node digests differ by design. replikv check compares the \
             replicas of a leaderless cluster only when n equals the number of nodes ({nodes})",
            nwr.n
        );
    }
    Ok(())
}

/// Asks every node at once for its status, then every node at once for its digest.
fn look(cluster: &ClusterConfig, dir: &ClusterDir, kind: Kind) -> Round {
    let rows = status::probe_all(cluster, &[], &dir.config());
    let digests = fetch_all(&cluster.nodes);
    Round { nodes: rows.iter().zip(digests).map(|(row, digest)| answer(row, digest, kind)).collect() }
}

/// What a node answered: whether it is up (see [`node_answer`]), its operations in flight, and
/// its digest. A node up whose status has no leaderless counters does not replicate leaderless
/// (its cluster file says otherwise): its digest is not compared.
fn answer(row: &NodeRow, digest: Result<Fetched>, kind: Kind) -> Answer {
    let (up, digest) = node_answer(row, digest);
    let (in_flight, mode) = match kind {
        Kind::Leaderless(_) => (row.leaderless.as_ref().map(|c| c.in_flight), "leaderless"),
        Kind::MultiLeader { .. } => (row.multi_leader_pending, "multi-leader"),
    };
    let digest = match digest {
        Ok(_) if in_flight.is_none() => Err(anyhow!(
            "its status shows no {mode} replication (its role is {}): it does not replicate {mode}",
            row.role.as_deref().unwrap_or("unknown")
        )),
        digest => digest,
    };
    Answer { up, in_flight, digest }
}

/// Every pair of nodes that gave a digest compared, the keys of the buckets that differ
/// named (asked of both sides), and each node's verdict.
fn compare(cluster: &ClusterConfig, round: &Round, waited_secs: u64, kind: Kind) -> Findings {
    let mut findings = Findings::default();
    let digests: Vec<Option<&Fetched>> = round.nodes.iter().map(|a| a.digest.as_ref().ok()).collect();
    let mut differs_from: Vec<Vec<String>> = vec![Vec::new(); cluster.nodes.len()];
    for i in 0..cluster.nodes.len() {
        for j in i + 1..cluster.nodes.len() {
            let (Some(a), Some(b)) = (digests[i], digests[j]) else { continue };
            let differing = differing_buckets(&a.digest, &b.digest);
            if differing.is_empty() {
                continue;
            }
            let (x, y) = (&cluster.nodes[i], &cluster.nodes[j]);
            differs_from[i].push(y.id.clone());
            differs_from[j].push(x.id.clone());
            findings.differences.push(format!(
                "{} and {} differ in {} of {DIGEST_BUCKETS} key ranges",
                x.id,
                y.id,
                differing.len()
            ));
            let buckets = match findings.pairs.len() < PAIRS_SHOWN_MAX {
                true => differing.iter().take(BUCKETS_SHOWN_MAX).map(|&bucket| compare_bucket(x, y, bucket)).collect(),
                false => Vec::new(),
            };
            findings.pairs.push(PairReport {
                replicas: [x.id.clone(), y.id.clone()],
                ranges: differing.len(),
                buckets,
            });
        }
    }
    for ((node, answer), differs_from) in cluster.nodes.iter().zip(&round.nodes).zip(differs_from) {
        let mut report = NodeReport {
            id: node.id.clone(),
            keys: None,
            root: None,
            in_flight: answer.in_flight,
            verdict: "same",
            differs_from,
            error: None,
        };
        match &answer.digest {
            Err(e) => {
                let (verdict, error) = without_digest(node, answer.up, e, waited_secs, &mut findings.uncompared);
                (report.verdict, report.error) = (verdict, Some(error));
            }
            Ok(fetched) => {
                report.keys = Some(fetched.digest.keys);
                report.root = Some(replikv_core::digest::hex(&fetched.digest.root));
                if !report.differs_from.is_empty() {
                    report.verdict = "differs";
                }
                if let Some(ops) = answer.in_flight.filter(|&ops| ops > 0) {
                    findings.busy.push(match kind {
                        Kind::Leaderless(_) => format!(
                            "{} still coordinated {ops} operation(s) after {waited_secs} s: a difference may be a \
                             write on its way",
                            node.id
                        ),
                        Kind::MultiLeader { .. } => format!(
                            "{} still had {ops} record(s) to replicate after {waited_secs} s (to another datacenter \
                             or a follower, or a datacenter cut off): a difference may be a write on its way",
                            node.id
                        ),
                    });
                }
            }
        }
        findings.nodes.push(report);
    }
    findings
}

/// The table: one line per node, each differing pair with its buckets and keys, and a summary.
fn render(cluster: &str, kind: Kind, nodes: &[NodeReport], pairs: &[PairReport]) -> String {
    let heading = match kind {
        Kind::Leaderless(nwr) => status::leaderless_heading(nwr, nodes.len()),
        Kind::MultiLeader { datacenters } => format!("multi-leader, {datacenters} datacenters"),
    };
    let mut out =
        format!("check of cluster {cluster} ({heading}): every replica's Merkle root against every other's\n");
    for r in nodes {
        let dash = || "-".to_string();
        let mut verdict = match r.verdict {
            "differs" => format!("differs from {}", r.differs_from.join(", ")),
            other => other.to_string(),
        };
        if let Some(ops) = r.in_flight.filter(|&ops| ops > 0) {
            verdict += &format!(" ({ops} {})", kind.pending());
        }
        out += &format!(
            "{:<8} keys {:<10} root {}  {verdict}\n",
            r.id,
            r.keys.map_or_else(dash, |k| k.to_string()),
            r.root.as_deref().map_or_else(dash, |h| h[..16].to_string()),
        );
        if let Some(e) = &r.error {
            out += &format!("  {e}\n");
        }
    }
    for (i, p) in pairs.iter().enumerate() {
        out +=
            &format!("{} and {} differ in {} of {DIGEST_BUCKETS} key ranges", p.replicas[0], p.replicas[1], p.ranges);
        out += match i < PAIRS_SHOWN_MAX {
            true => ":\n",
            false => " (keys not listed: more pairs differ than are drilled into)\n",
        };
        out += &render_buckets(&p.buckets);
    }
    let answered = nodes.iter().filter(|r| r.root.is_some()).count();
    let compared = answered * answered.saturating_sub(1) / 2;
    out += &match (compared, pairs.len()) {
        (0, _) => format!("{answered} replica(s) answered: no pair to compare\n"),
        (_, 0) => format!("{answered} replicas answered: {compared} pair(s) compared, every pair the same\n"),
        (_, d) => format!("{answered} replicas answered: {compared} pair(s) compared, {d} differ\n"),
    };
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::status::Counters;
    use replikv_core::digest::Digest;

    /// A quorum setting, checked.
    fn nwr(n: usize, w: usize, r: usize) -> Nwr {
        Nwr::new(n, w, r).unwrap()
    }

    #[test]
    fn a_cluster_whose_nodes_do_not_each_hold_every_key_is_refused_naming_n_and_the_nodes() {
        assert!(check_placement("demo", nwr(3, 2, 2), 3).is_ok());
        assert!(check_placement("demo", nwr(1, 1, 1), 1).is_ok());
        let err = check_placement("demo", nwr(3, 2, 2), 5).unwrap_err().to_string();
        assert!(err.contains("n = 3 replicas per key on 5 nodes"), "{err}");
        assert!(err.contains("only when n equals the number of nodes (5)"), "{err}");
        assert_eq!(super::super::exit_status(&check_placement("demo", nwr(2, 1, 1), 3).unwrap_err()), 2);
    }

    #[test]
    fn the_check_waits_for_digests_and_for_writes_in_flight_but_not_for_nodes_down() {
        /// A node: `None` when down, `Some(None)` when up without a digest, `Some(Some(ops))`
        /// with its digest and its operations in flight.
        type Node = Option<Option<u64>>;
        let answer = |n: Node| -> Answer {
            let digest = Digest { keys: 0, root: [0; 32], buckets: Vec::new() };
            match n {
                None => Answer { up: false, in_flight: None, digest: Err(anyhow!("connection refused")) },
                Some(None) => Answer { up: true, in_flight: Some(0), digest: Err(anyhow!("HTTP 503")) },
                Some(Some(ops)) => Answer { up: true, in_flight: Some(ops), digest: Ok(Fetched { lsn: 0, digest }) },
            }
        };
        let table: [([Node; 3], bool); 6] = [
            ([Some(Some(0)), Some(Some(0)), Some(Some(0))], true),
            // A node down is not waited for.
            ([Some(Some(0)), None, Some(Some(0))], true),
            ([None, None, None], true),
            // A write still on its way from n2, or a node up without its digest: wait.
            ([Some(Some(0)), Some(Some(1)), Some(Some(0))], false),
            ([Some(Some(0)), Some(None), Some(Some(0))], false),
            ([Some(Some(2)), None, None], false),
        ];
        for (nodes, want) in table {
            let round = Round { nodes: nodes.iter().map(|&n| answer(n)).collect() };
            assert_eq!(round.settled(Kind::Leaderless(nwr(3, 2, 2))), want, "{nodes:?}");
        }
        // Multi-leader: idle is not enough while the digests still differ.
        let mut round = Round { nodes: [Some(Some(0)); 3].iter().map(|&n| answer(n)).collect() };
        let multi = Kind::MultiLeader { datacenters: 2 };
        assert!(round.settled(multi));
        if let Ok(f) = &mut round.nodes[1].digest {
            f.digest.root = [1; 32];
        }
        assert!(!round.settled(multi), "a follower that has not applied yet");
        assert!(round.settled(Kind::Leaderless(nwr(3, 2, 2))), "leaderless compares once idle");
    }

    #[test]
    fn a_node_up_without_leaderless_counters_is_not_compared() {
        let fetched = || Ok(Fetched { lsn: 0, digest: Digest { keys: 0, root: [0; 32], buckets: Vec::new() } });
        let mut row = NodeRow { id: "n2".into(), up: true, role: Some("leader".into()), ..NodeRow::default() };
        let leaderless = Kind::Leaderless(nwr(3, 2, 2));
        let a = answer(&row, fetched(), leaderless);
        assert!(a.up && a.in_flight.is_none());
        assert!(a.digest.is_err_and(|e| e.to_string().contains("its role is leader")));
        row.leaderless = Some(Counters { in_flight: 3, ..Counters::default() });
        let a = answer(&row, fetched(), leaderless);
        assert!(a.up && a.in_flight == Some(3) && a.digest.is_ok());
        let multi = Kind::MultiLeader { datacenters: 2 };
        let a = answer(&row, fetched(), multi);
        assert!(a.digest.is_err_and(|e| e.to_string().contains("does not replicate multi-leader")));
        row.multi_leader_pending = Some(5);
        let a = answer(&row, fetched(), multi);
        assert!(a.in_flight == Some(5) && a.digest.is_ok());
    }

    /// A node's report with a digest.
    fn node(id: &str, keys: u64, root: &str, differs_from: &[&str]) -> NodeReport {
        NodeReport {
            id: id.into(),
            keys: Some(keys),
            root: Some(root.repeat(32)),
            in_flight: Some(0),
            verdict: if differs_from.is_empty() { "same" } else { "differs" },
            differs_from: differs_from.iter().map(|s| s.to_string()).collect(),
            error: None,
        }
    }

    #[test]
    fn a_converged_report_says_every_pair_is_the_same() {
        let nodes = [node("n1", 4, "ab", &[]), node("n2", 4, "ab", &[]), node("n3", 4, "ab", &[])];
        let want = "\
check of cluster demo (leaderless, n = 3, w = 2, r = 2): every replica's Merkle root against every other's
n1       keys 4          root abababababababab  same
n2       keys 4          root abababababababab  same
n3       keys 4          root abababababababab  same
3 replicas answered: 3 pair(s) compared, every pair the same
";
        assert_eq!(render("demo", Kind::Leaderless(nwr(3, 2, 2)), &nodes, &[]), want);
    }

    #[test]
    fn a_differing_report_names_each_pair_its_ranges_and_keys() {
        let mut down = node("n4", 0, "00", &[]);
        (down.keys, down.root, down.in_flight, down.verdict) = (None, None, None, "down");
        down.error = Some("n4 did not answer: connection refused".into());
        let mut busy = node("n1", 4, "ab", &["n3"]);
        busy.in_flight = Some(2);
        let nodes = [busy, node("n2", 4, "ab", &["n3"]), node("n3", 3, "cd", &["n1", "n2"]), down];
        let missing = |on: &str| BucketReport { bucket: 31, keys: vec![("late".into(), format!("missing on {on}"))] };
        let pairs = [
            PairReport { replicas: ["n1".into(), "n3".into()], ranges: 1, buckets: vec![missing("n3")] },
            PairReport { replicas: ["n2".into(), "n3".into()], ranges: 1, buckets: vec![missing("n3")] },
        ];
        let want = "\
check of cluster demo (leaderless, n = 4, w = 3, r = 2): every replica's Merkle root against every other's
n1       keys 4          root abababababababab  differs from n3 (2 operation(s) in flight)
n2       keys 4          root abababababababab  differs from n3
n3       keys 3          root cdcdcdcdcdcdcdcd  differs from n1, n2
n4       keys -          root -  down
  n4 did not answer: connection refused
n1 and n3 differ in 1 of 256 key ranges:
  key range 0x1f differs:
    \"late\": missing on n3
n2 and n3 differ in 1 of 256 key ranges:
  key range 0x1f differs:
    \"late\": missing on n3
3 replicas answered: 3 pair(s) compared, 2 differ
";
        assert_eq!(render("demo", Kind::Leaderless(nwr(4, 3, 2)), &nodes, &pairs), want);
    }
}
