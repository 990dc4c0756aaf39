use super::*;
use crate::faults::Faults;
use crate::run::swarm_faults;

/// A run of `seed`: 2 datacenters of 2 nodes (sync inside), `resolve`, 6 clients on 3 keys,
/// 2 s of faults.
fn config(seed: u64, resolve: Resolve, faults: Faults) -> Config {
    Config {
        seed,
        datacenters: 2,
        dc_nodes: 2,
        acks_needed: 1,
        acks_label: "sync".into(),
        resolve,
        clients: 6,
        keys: 3,
        safety_ms: 2_000,
        quiet_ms: 10_000,
        faults,
        canary: Canary::None,
    }
}

#[test]
fn a_calm_run_passes_every_check() {
    for resolve in [Resolve::Lww, Resolve::Merge, Resolve::App] {
        let report = run(config(1, resolve, Faults::none()));
        assert!(!report.failed(), "{resolve}: {:?}\nreplay: {}", report.judgement.verdicts, report.replay());
        assert!(report.written > 50, "{resolve}: the clients got work done: {report:?}");
    }
}

#[test]
#[ignore]
fn explore() {
    let n: u64 = std::env::var("SEEDS").ok().and_then(|s| s.parse().ok()).unwrap_or(20);
    let canary = match std::env::var("CANARY").as_deref() {
        Ok("keep-arriving") => Canary::KeepArriving,
        Ok("loser-not-logged") => Canary::LoserNotLogged,
        Ok("applied-twice") => Canary::AppliedTwice,
        _ => Canary::None,
    };
    for resolve in [Resolve::Lww, Resolve::Merge, Resolve::App] {
        let mut failed = 0;
        for seed in 0..n {
            let mut c = config(seed, resolve, swarm_faults(seed));
            c.canary = canary;
            let report = run(c);
            if report.failed() {
                failed += 1;
                if failed <= 3 {
                    eprintln!("{resolve} seed {seed}: {:?}\n  {}", report.judgement.failures(), report.replay());
                    for (name, v) in &report.judgement.verdicts {
                        if let crate::run::Verdict::Fail(why) = v {
                            eprintln!("    {name}: {}", &why[..why.len().min(600)]);
                        }
                    }
                }
            }
        }
        eprintln!("{resolve}: {failed}/{n} failed");
    }
}
