//! hearth: a Matrix homeserver for small devices.
#![forbid(unsafe_code)]
#![allow(dead_code)]

mod protocol;

fn main() {}
