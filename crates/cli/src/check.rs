//! `replikv check`: do the replicas of a cluster hold the same data? It compares each node's
//! Merkle digest (see `replikv_core::digest`) with the leader's and names the replicas, the
//! key ranges (hash buckets) and the keys that differ.
//!
//! 1. Ask every node for `GET /api/v1/digest` at once: its log position (LSN), live key count,
//!    root hash and the 256 bucket hashes.
//! 2. Replicas compare only at the same log position. While positions differ (writes still
//!    arriving, a follower catching up), ask again, until `--timeout-secs`.
//! 3. For each replica whose root differs from the leader's (the first node of the file),
//!    walk both trees from the root down to the differing buckets; for each of the first
//!    [`BUCKETS_SHOWN_MAX`] of them, list both sides' keys (`GET /api/v1/digest/bucket/N`) and
//!    name the keys whose entries differ or that one side lacks.
//!
//! Exit status: 0 when every replica matches the leader; 1 when one differs, a node does not
//! answer, or the positions never matched (the output says which).
//!
//! CAVEATS
//! - Each digest is a full scan of that node's keys on its stepper thread (see the digest
//!   module): on a big data set, `check` slows the cluster while it runs.
//! - A bucket listing is one HTTP response of at most 1 MiB (`net::RESPONSE_BYTES_MAX`): a
//!   bucket with more keys than fit is reported as differing without its keys named.

use crate::cluster::args::{Output, WhichCluster};
use crate::cluster::layout::ClusterDir;
use crate::cluster::net;
use anyhow::{anyhow, bail, Result};
use clap::Args;
use replikv_core::digest::{differing_buckets, Digest, DIGEST_BUCKETS};
use replikv_server::config::ClusterNode;
use serde::Serialize;
use serde_json::Value;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// Differing buckets whose keys are listed, per replica.
pub const BUCKETS_SHOWN_MAX: usize = 8;

/// Keys named per differing bucket at most.
pub const KEYS_SHOWN_MAX: usize = 10;

/// Compare the data of every replica of a local cluster.
#[derive(Args, Debug)]
pub struct CheckArgs {
    /// Which cluster.
    #[command(flatten)]
    pub which: WhichCluster,
    /// Seconds to wait for the replicas to reach the same log position.
    #[arg(long, default_value_t = 30)]
    pub timeout_secs: u64,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t = Output::Table)]
    pub output: Output,
}

/// One node's digest, as fetched.
struct Fetched {
    lsn: u64,
    digest: Digest,
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
    /// `same`, `differs`, `reference` or `unreachable`.
    pub verdict: &'static str,
    /// The buckets that differ from the reference, with the keys named.
    pub buckets: Vec<BucketReport>,
    /// Why it is unreachable.
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

/// Runs `replikv check`.
pub fn main(args: &CheckArgs) -> Result<()> {
    let dir = ClusterDir::new(&args.which)?;
    let cluster = dir.read_config()?;
    let deadline = Instant::now() + Duration::from_secs(args.timeout_secs);
    let fetched = loop {
        let fetched = fetch_all(&cluster.nodes);
        let positions: Vec<u64> = fetched.iter().filter_map(|f| f.as_ref().ok().map(|f| f.lsn)).collect();
        let all_up = fetched.iter().all(|f| f.is_ok());
        if (all_up && positions.windows(2).all(|w| w[0] == w[1])) || Instant::now() >= deadline {
            break fetched;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let reference =
        fetched[0].as_ref().map_err(|e| anyhow!("the leader {} did not answer: {e}", cluster.nodes[0].id))?;
    let mut reports = Vec::new();
    let mut problems = Vec::new();
    for (node, f) in cluster.nodes.iter().zip(&fetched) {
        let mut report = ReplicaReport {
            id: node.id.clone(),
            lsn: None,
            keys: None,
            root: None,
            verdict: "same",
            buckets: Vec::new(),
            error: None,
        };
        match f {
            Err(e) => {
                report.verdict = "unreachable";
                report.error = Some(e.to_string());
                problems.push(format!("{} did not answer: {e}", node.id));
            }
            Ok(f) => {
                report.lsn = Some(f.lsn);
                report.keys = Some(f.digest.keys);
                report.root = Some(replikv_core::digest::hex(&f.digest.root));
                if node.id == cluster.nodes[0].id {
                    report.verdict = "reference";
                } else if f.lsn != reference.lsn {
                    report.verdict = "not comparable";
                    problems.push(format!(
                        "{} is at LSN {} and the leader at {}: still catching up after {} s",
                        node.id, f.lsn, reference.lsn, args.timeout_secs
                    ));
                } else {
                    let differing = differing_buckets(&reference.digest, &f.digest);
                    if !differing.is_empty() {
                        report.verdict = "differs";
                        problems.push(format!(
                            "{} differs from {} in {} of {DIGEST_BUCKETS} key ranges",
                            node.id,
                            cluster.nodes[0].id,
                            differing.len()
                        ));
                        for &bucket in differing.iter().take(BUCKETS_SHOWN_MAX) {
                            report.buckets.push(compare_bucket(&cluster.nodes[0], node, bucket));
                        }
                    }
                }
            }
        }
        reports.push(report);
    }
    match args.output {
        Output::Json => {
            let answer = serde_json::json!({ "cluster": cluster.name, "ok": problems.is_empty(), "replicas": reports, "problems": problems });
            println!("{}", serde_json::to_string_pretty(&answer)?);
        }
        Output::Table => print!("{}", render(&cluster.name, &reports)),
    }
    if !problems.is_empty() {
        bail!("{}", problems.join("; "));
    }
    Ok(())
}

/// The table: one line per replica, then each differing bucket and its keys.
fn render(cluster: &str, reports: &[ReplicaReport]) -> String {
    let mut out = format!("check of cluster {cluster}: each replica's Merkle root against the leader's\n");
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
        for b in &r.buckets {
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
        if let Some(e) = &r.error {
            out += &format!("  {e}\n");
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

/// Names the keys of `bucket` that differ between the leader and `node`.
fn compare_bucket(leader: &ClusterNode, node: &ClusterNode, bucket: usize) -> BucketReport {
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
    match (entries(leader), entries(node)) {
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
        let text = render("demo", &reports);
        assert!(text.contains("n2       lsn 5          keys 2          root cdcdcdcdcdcdcdcd  differs"), "{text}");
        assert!(text.contains("key range 0x1f differs:\n    \"k7\": missing on n2"), "{text}");
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
