//! `replikv quorum`: the lecture's quorum exercise as a tool (issue 13), arithmetic only: it
//! talks to no node.
//!
//! For n replicas it lists every quorum (w, r) with `w + r > n`, the lecture's condition for
//! reads to see the newest accepted write, with how many replicas writes and reads tolerate
//! down. `--w` and `--r` keep one configuration (or those with that w or r); a configuration
//! with `w + r <= n` is shown when asked for by both, with what goes wrong (stale reads).
//!
//! `--written 1,2` names the replicas that hold the last accepted write. The tool then says
//! which configurations could have accepted a write on exactly those replicas (those with
//! `w <= |written|`), and for each of those which sets of unavailable replicas still let the
//! next read succeed: at least r replicas up, and any r of them include one that holds the
//! write, since the read keeps the newest version among its answers but does not choose who
//! answers. `--down 3` asks about one set of unavailable replicas only. The arithmetic, and the
//! lecture's case worked by hand, are in `replikv_core::quorum`; `tests/quorum.rs` checks the
//! tool's answer to the lecture's case against `tests/golden/quorum-lecture.txt`.
//!
//! A flag out of range (`--w 4` or `--written 4` with n = 3, `--n 13`) is a usage error, exit
//! status 2 as clap's own, with the flag named.
//!
//! CAVEATS
//! - n is at most `REPLICA_SET_N_MAX` (12): every one of the 2^n sets of unavailable replicas
//!   is tried. The text lists [`LISTED_DOWN_SETS_MAX`] of them per line; `-o json` lists all.
//! - The exercise's model (see `replikv_core::quorum`): a fixed set of unavailable replicas,
//!   no repair meanwhile, no concurrent writes: a leaderless cluster's read repair and late
//!   copies only make reads see the write more often than this says.

use crate::cluster::args::Output;
use crate::output::{out, outln};
use anyhow::Result;
use clap::{Args, CommandFactory};
use replikv_core::quorum::{Nwr, ReadOutcome, ReplicaSet};
use serde::Serialize;

/// Sets of unavailable replicas one line of the text lists at most; `-o json` lists them all.
pub const LISTED_DOWN_SETS_MAX: usize = 32;

/// The lecture's quorum arithmetic: which (w, r) read the newest write, and with which
/// replicas down.
#[derive(Args, Debug)]
#[command(after_help = "Examples:\n  \
replikv quorum --n 3                      # every (w, r) with w + r > 3\n  \
replikv quorum --n 3 --written 1,2        # the lecture's exercise: the last write on replicas 1 and 2\n  \
replikv quorum --written 1,2 --down 3     # ... with replica 3 unavailable\n  \
replikv quorum --w 1 --r 1                # a configuration with w + r <= n, and what goes wrong\n\n\
The next read succeeds when at least r replicas are up and any r of them include one that\n\
holds the write: a read keeps the newest version among its answers, but does not choose\n\
which r replicas answer. A write on exactly the --written replicas was accepted only where\n\
w <= their number; the other configurations are not asked about reads.")]
pub struct QuorumArgs {
    /// Replicas of each key, 1 to 12.
    #[arg(long, default_value_t = 3, value_parser = parse_n)]
    pub n: usize,
    /// Only configurations whose writes wait for this many replicas (1 to n).
    #[arg(long)]
    pub w: Option<usize>,
    /// Only configurations whose reads wait for this many replicas (1 to n).
    #[arg(long)]
    pub r: Option<usize>,
    /// The replicas that hold the last accepted write, numbered 1 to n: 1,2.
    #[arg(long, value_name = "LIST", value_parser = parse_list)]
    pub written: Option<ReplicaList>,
    /// Only this set of unavailable replicas: 3, or 1,3, or '' for none (needs --written).
    #[arg(long, value_name = "LIST", value_parser = parse_list, requires = "written")]
    pub down: Option<ReplicaList>,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t = Output::Table)]
    pub output: Output,
}

/// Replica numbers as given on the command line, checked against n later.
#[derive(Clone, Debug)]
pub struct ReplicaList {
    /// The flag's value as typed, for error messages.
    raw: String,
    /// The numbers.
    replicas: Vec<usize>,
}

/// Parses `--n`: 1 to `REPLICA_SET_N_MAX`.
fn parse_n(s: &str) -> Result<usize, String> {
    let n = s.trim().parse().map_err(|_| format!("{s:?} is not a number of replicas"))?;
    ReplicaSet::all(n)?;
    Ok(n)
}

/// Parses a comma-separated list of replica numbers; the empty string is no replica.
fn parse_list(s: &str) -> Result<ReplicaList, String> {
    let replicas = if s.trim().is_empty() {
        Vec::new()
    } else {
        s.split(',')
            .map(|i| i.trim().parse().map_err(|_| format!("{i:?} is not a replica number (a list is like 1,2)")))
            .collect::<Result<_, _>>()?
    };
    Ok(ReplicaList { raw: s.to_string(), replicas })
}

/// The question, every flag checked against n.
struct Query {
    /// Replicas of each key.
    n: usize,
    /// The configurations asked about.
    configurations: Vec<Nwr>,
    /// The replicas that hold the last accepted write.
    written: Option<ReplicaSet>,
    /// The one set of unavailable replicas asked about.
    down: Option<ReplicaSet>,
}

impl Query {
    /// Checks every flag against n; the error names the flag.
    fn new(args: &QuorumArgs) -> Result<Query, String> {
        let n = args.n;
        for (flag, value) in [("--w", args.w), ("--r", args.r)] {
            if let Some(v) = value.filter(|v| !(1..=n).contains(v)) {
                return Err(format!("{flag} {v}: must be between 1 and n = {n}"));
            }
        }
        let set = |flag: &str, list: &ReplicaList| {
            ReplicaSet::from_replicas(&list.replicas, n).map_err(|e| format!("{flag} {}: {e}", list.raw))
        };
        let written = args.written.as_ref().map(|l| set("--written", l)).transpose()?;
        if written.is_some_and(ReplicaSet::is_empty) {
            return Err("--written '': name the replicas that hold the write, 1 to n (a list is like 1,2)".into());
        }
        let down = args.down.as_ref().map(|l| set("--down", l)).transpose()?;
        let configurations = match (args.w, args.r) {
            (Some(w), Some(r)) => vec![Nwr::new(n, w, r)?],
            (w, r) => Nwr::overlapping(n)
                .into_iter()
                .filter(|q| w.is_none_or(|w| q.w == w) && r.is_none_or(|r| q.r == r))
                .collect(),
        };
        Ok(Query { n, configurations, written, down })
    }
}

/// The whole answer, as `-o json` prints it.
#[derive(Debug, Serialize)]
pub struct Report {
    /// Replicas of each key.
    pub n: usize,
    /// The replicas that hold the last accepted write (`--written`).
    pub written: Option<Vec<usize>>,
    /// The one set of unavailable replicas asked about (`--down`).
    pub down: Option<Vec<usize>>,
    /// The configurations, by w and then r.
    pub configurations: Vec<Configuration>,
}

/// One configuration (w, r) of n replicas.
#[derive(Debug, Serialize)]
pub struct Configuration {
    /// Replicas a write waits for.
    pub w: usize,
    /// Replicas a read waits for.
    pub r: usize,
    /// w + r > n: every read quorum shares a replica with every write quorum.
    pub overlaps: bool,
    /// Replicas that may be down while writes are still accepted (n - w).
    pub write_tolerates: usize,
    /// Replicas that may be down while reads still answer (n - r).
    pub read_tolerates: usize,
    /// With `--written`: whether a write on exactly those replicas could have been accepted
    /// (at least w of them).
    pub accepted: Option<bool>,
    /// With `--written`, when `accepted`: the next read, for each set of unavailable replicas
    /// (or the `--down` one), by size and then by members.
    pub reads: Option<Vec<Read>>,
}

/// The next read with one set of replicas unavailable.
#[derive(Debug, Serialize)]
pub struct Read {
    /// The unavailable replicas.
    pub down: Vec<usize>,
    /// `succeeds` (r up, any r include the write), `too_few_up` (fewer than r up) or
    /// `may_miss_write` (r up replicas lack the write: an older version may be returned).
    pub outcome: &'static str,
    /// The unavailable replicas, for the text.
    #[serde(skip)]
    down_set: ReplicaSet,
    /// The outcome itself, for the text.
    #[serde(skip)]
    detail: ReadOutcome,
}

/// `replikv quorum`.
pub fn main(args: &QuorumArgs) -> Result<()> {
    let query = Query::new(args).unwrap_or_else(|message| usage_error(message));
    let report = report(&query)?;
    match args.output {
        Output::Json => outln!("{}", serde_json::to_string_pretty(&report)?),
        Output::Table => out!("{}", render(&query, &report)),
    }
    Ok(())
}

/// Ends the process as clap does for a flag it refused: the message, the usage line, exit 2.
fn usage_error(message: String) -> ! {
    let mut cli = crate::Cli::command();
    cli.build();
    let quorum = cli.find_subcommand_mut("quorum").expect("the quorum subcommand is registered");
    quorum.error(clap::error::ErrorKind::ValueValidation, message).exit()
}

/// Works the answer out.
fn report(query: &Query) -> Result<Report> {
    let numbers = |set: ReplicaSet| set.replicas().collect::<Vec<_>>();
    let mut configurations = Vec::new();
    for q in &query.configurations {
        let accepted = query.written.map(|written| q.could_accept(written));
        let reads = match query.written {
            Some(written) if q.could_accept(written) => Some(
                q.read_outcomes(written)
                    .map_err(anyhow::Error::msg)?
                    .into_iter()
                    .filter(|(down, _)| query.down.is_none_or(|d| d == *down))
                    .map(|(down, detail)| Read {
                        down: numbers(down),
                        outcome: outcome_name(detail),
                        down_set: down,
                        detail,
                    })
                    .collect(),
            ),
            _ => None,
        };
        configurations.push(Configuration {
            w: q.w,
            r: q.r,
            overlaps: q.overlaps(),
            write_tolerates: q.write_tolerates(),
            read_tolerates: q.read_tolerates(),
            accepted,
            reads,
        });
    }
    Ok(Report { n: query.n, written: query.written.map(numbers), down: query.down.map(numbers), configurations })
}

/// The outcome's name in JSON.
fn outcome_name(outcome: ReadOutcome) -> &'static str {
    match outcome {
        ReadOutcome::Sees { .. } => "succeeds",
        ReadOutcome::TooFewUp { .. } => "too_few_up",
        ReadOutcome::MayMiss { .. } => "may_miss_write",
    }
}

/// The answer for people: a heading, the table of configurations, then the reads.
fn render(query: &Query, report: &Report) -> String {
    let mut out = heading(query);
    out += &table(report);
    if let Some(written) = query.written {
        out.push('\n');
        out += &match query.down {
            Some(down) => reads_with(query, report, written, down),
            None => reads_for_every_down_set(report, written),
        };
    }
    out
}

/// What the table shows, and a warning for a configuration with w + r <= n.
fn heading(query: &Query) -> String {
    let n = query.n;
    let mut out = match query.written {
        Some(written) if written.len() < n => {
            let rest = ReplicaSet::all(n).expect("n was checked").difference(written);
            format!("n = {n} replicas; the last accepted write is on {written}, not on {rest}.\n")
        }
        Some(written) => format!("n = {n} replicas; the last accepted write is on {written}.\n"),
        None => format!("n = {n} replicas.\n"),
    };
    out += "The quorums (w, r) with w + r > n: a read of any r replicas then hears from one of any w that\n\
            accepted a write, and keeps the newest version it hears. Writes go on with n - w replicas down,\n\
            reads with n - r.";
    out.push('\n');
    if let Some(written) = query.written {
        out += &format!("ACCEPTED: could a write on {written} have been accepted (it needs w replicas)?\n");
    }
    for q in query.configurations.iter().filter(|q| !q.overlaps()) {
        out += &format!(
            "w = {w}, r = {r} is not such a quorum: w + r = {sum} is not more than n = {n}, so the r replicas\n\
             a read hears need not include any of the w that accepted the newest write. Answered only by\n\
             replicas that missed it, the read returns an older version without an error (a stale read).\n",
            w = q.w,
            r = q.r,
            sum = q.w + q.r,
        );
    }
    out.push('\n');
    out
}

/// One row per configuration, columns aligned.
fn table(report: &Report) -> String {
    let mut header = vec!["W", "R", "WRITE_TOLERATES", "READ_TOLERATES"];
    if report.written.is_some() {
        header.push("ACCEPTED");
    }
    let mut rows: Vec<Vec<String>> = vec![header.into_iter().map(str::to_string).collect()];
    for c in &report.configurations {
        let mut row =
            vec![c.w.to_string(), c.r.to_string(), c.write_tolerates.to_string(), c.read_tolerates.to_string()];
        if let Some(accepted) = c.accepted {
            row.push(if accepted { "yes" } else { "no" }.to_string());
        }
        rows.push(row);
    }
    let widths: Vec<usize> =
        (0..rows[0].len()).map(|i| rows.iter().map(|row| row[i].len()).max().unwrap_or(0)).collect();
    let mut out = String::new();
    for row in &rows {
        let cells: Vec<String> = row.iter().zip(&widths).map(|(cell, w)| format!("{cell:<w$}")).collect();
        out += cells.join("  ").trim_end();
        out.push('\n');
    }
    if rows.len() == 1 {
        out += "(no configuration with these flags)\n";
    }
    out
}

/// The lecture's question 2: per configuration that could have accepted the write, every set
/// of unavailable replicas with which the next read succeeds.
fn reads_for_every_down_set(report: &Report, written: ReplicaSet) -> String {
    let accepting: Vec<&Configuration> = report.configurations.iter().filter(|c| c.reads.is_some()).collect();
    if accepting.is_empty() {
        return format!(
            "None of these configurations could have accepted a write on {written}: it needs w <= {}.\n",
            written.len()
        );
    }
    let mut out = format!(
        "The next read succeeds when at least r replicas are up and any r of them include one of {written}.\n\
         Unavailable replicas with which it succeeds:\n"
    );
    for c in accepting {
        let reads = c.reads.as_deref().unwrap_or_default();
        let sets = |keep: fn(&ReadOutcome) -> bool| {
            let downs: Vec<ReplicaSet> =
                reads.iter().filter(|read| keep(&read.detail)).map(|read| read.down_set).collect();
            listed(&downs)
        };
        out += &format!("  w={} r={}  {}\n", c.w, c.r, sets(|o| o.succeeds()));
        if reads.iter().any(|read| matches!(read.detail, ReadOutcome::MayMiss { .. })) {
            out += &format!(
                "  {:width$}  may return an older version with {} down: r of the replicas up lack the write\n",
                "",
                sets(|o| matches!(o, ReadOutcome::MayMiss { .. })),
                width = format!("w={} r={}", c.w, c.r).len(),
            );
        }
    }
    out += "With any other replicas unavailable, fewer than r are up and the read fails.\n";
    out
}

/// The answer for the one `--down` set, per configuration that could have accepted the write.
fn reads_with(query: &Query, report: &Report, written: ReplicaSet, down: ReplicaSet) -> String {
    let up = ReplicaSet::all(query.n).expect("n was checked").difference(down);
    let mut out = format!("With {down} unavailable (up: {up}), the next read:\n");
    let mut any = false;
    for c in &report.configurations {
        for read in c.reads.iter().flatten() {
            any = true;
            let verdict = match read.detail {
                ReadOutcome::Sees { up } => format!("succeeds: any {} of {up} include one of {written}", c.r),
                ReadOutcome::TooFewUp { up } => format!("fails: {up} up, fewer than r = {}", c.r),
                ReadOutcome::MayMiss { without } => {
                    format!("may return an older version: {without} lack the write, and {} of them can answer", c.r)
                }
            };
            out += &format!("  w={} r={}  {verdict}\n", c.w, c.r);
        }
    }
    if !any {
        out += &format!("  (none of these configurations could have accepted a write on {written})\n");
    }
    out
}

/// Sets of replicas as `{}, {1}, {2}`, at most [`LISTED_DOWN_SETS_MAX`] of them; "none" for no
/// set.
fn listed(sets: &[ReplicaSet]) -> String {
    if sets.is_empty() {
        return "none".into();
    }
    let shown: Vec<String> = sets.iter().take(LISTED_DOWN_SETS_MAX).map(ReplicaSet::to_string).collect();
    let mut out = shown.join(", ");
    if sets.len() > LISTED_DOWN_SETS_MAX {
        out += &format!(", and {} more (-o json lists them all)", sets.len() - LISTED_DOWN_SETS_MAX);
    }
    out
}
