//! repdist: report distribution as a timely/differential dataflow.
//!
//! Layout: [`api`] (REST/WebSocket) and [`grpc`] → [`runtime`] (sequencer, workers, dispatcher) → [`store`]
//! (durable state); the dataflow itself lives in the `dataflows` crate and the channels in `sinks`.

pub mod analytics;
pub mod api;
pub mod auth;
pub mod bench;
pub mod cache;
pub mod bus;
pub mod config;
pub mod content;
pub mod demo;
pub mod grpc;
pub mod runtime;
pub mod server;
pub mod store;
