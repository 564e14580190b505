//! End-to-end tests of the `graywatch` binary: real logs and traces in, JSON lines out.

mod black_hole;
mod cli;
mod trainticket;
mod util;
