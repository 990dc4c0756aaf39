//! The Redis protocol front end: clients speak RESP2 or RESP3 to a node through this module.
//!
//! [`frame`] is the framing layer alone: it cuts requests out of a connection's bytes and turns
//! replies into bytes. [`connection`] runs one client's connection over it; [`admin`] answers
//! the commands a node handles itself. What a key-value command means is decided in the core
//! (`replikv_core::kv`).

pub mod admin;
pub mod connection;
pub mod frame;
