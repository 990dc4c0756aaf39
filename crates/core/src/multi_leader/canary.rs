//! Planted bugs for the simulator to catch (`replikv sim --mode multi-leader --canary ...`):
//! each breaks one promise of the family, and the simulator's checkers must notice within
//! 500 seeds. Every real node runs [`Canary::None`]; the server never sets another.
//!
//! The hooks are one line each, where the promise is kept: [`super::conflict::receive_planted`]
//! (how a conflict is resolved) and the node's applying of a shipment (what it logs and
//! stores).

/// A bug planted in a multi-leader node, to test the simulator's checkers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Canary {
    /// No planted bug.
    #[default]
    None,
    /// Under `lww`, a leader that finds a conflict keeps the state that arrived instead of
    /// the highest version: the outcome depends on arrival order.
    KeepArriving,
    /// Under `lww`, the losers of a conflict are not written to the conflict log.
    LoserNotLogged,
    /// Under `merge`, a leader that finds a conflict applies the arriving values a second
    /// time, as writes of its own.
    AppliedTwice,
}

impl Canary {
    /// Every canary but `None`, for sweeps.
    pub const PLANTED: [Canary; 3] = [Canary::KeepArriving, Canary::LoserNotLogged, Canary::AppliedTwice];

    /// Its `--canary` name.
    pub fn as_str(self) -> &'static str {
        match self {
            Canary::None => "none",
            Canary::KeepArriving => "keep-arriving",
            Canary::LoserNotLogged => "loser-not-logged",
            Canary::AppliedTwice => "applied-twice",
        }
    }
}
