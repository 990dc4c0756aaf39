//! replikv-sim: the deterministic simulator (in progress: issue 5).

pub mod check;
pub mod disk;
pub mod faults;
pub mod history;
pub mod run;
pub mod world;
