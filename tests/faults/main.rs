//! Proof under faults: the service is made to fail in ways it cannot prevent, and the tests check
//! afterwards that every expected delivery reached its receiver, none was lost, and any duplicate
//! carries the delivery id of the original. Each test appends one line to the file named by
//! `REPDIST_TEST_FAULT_SUMMARY` (when set), which `scripts/faults` turns into the summary table.

mod bad_input;
mod crash;
mod decoders;
mod dependencies;
mod flaky;
mod peers;
mod sinks;
mod stream;
mod summary;

#[path = "../store/backend.rs"]
#[allow(dead_code)]
mod backend;
#[path = "../it/helpers.rs"]
#[allow(dead_code)]
mod helpers;
#[path = "../it/kafka_peer.rs"]
#[allow(dead_code)]
mod kafka_peer;
#[path = "../it/process.rs"]
mod process;
#[path = "../it/receiver.rs"]
#[allow(dead_code)]
mod receiver;
