//! The protocol core: pure Matrix algorithms with no I/O.
//!
//! Identifiers, canonical JSON, hashes, signatures, redaction, PDUs per room
//! version, the authorization rules and state resolution. Nothing here knows
//! SQL, HTTP or the clock; callers pass in what a function needs.

pub mod acme;
pub mod appservice;
pub mod auth;
pub mod canonical_json;
pub mod encoding;
pub mod glob;
pub mod hashes;
pub mod identifiers;
pub mod key_backup;
pub mod media;
pub mod pdu;
pub mod power_levels;
pub mod push_rules;
pub mod redaction;
pub mod room_version;
pub mod server_acl;
pub mod signing;
pub mod state_res;
pub mod url_preview;
pub mod x_matrix;

#[cfg(test)]
mod fixtures;
