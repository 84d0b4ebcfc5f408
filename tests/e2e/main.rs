//! End-to-end tests: the real `sage` binary, real sockets, real key files.
//!
//! Each test makes its own temporary key directories and starts its own
//! nodes on free loopback ports, so tests run in parallel.

// Test code: a panic is the failure report.
#![allow(clippy::unwrap_used)]

mod fixture;
mod util;

mod answers;
mod bench;
mod blobs;
mod body_limit;
mod cli;
mod config_check;
mod delegate;
mod deployment_doc;
mod executors;
mod json_doc;
mod legacy;
mod limits;
mod local_api;
mod manual;
mod openai_api;
mod openai_stream;
mod protocol_doc;
mod reach;
mod refusals;
mod route;
mod route_explain;
mod service;
mod setup;
mod soak;
mod state;
mod stream;
mod systemd;
mod tls;
mod trace;
mod troubleshooting_doc;
