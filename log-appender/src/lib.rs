//! `berth-log-appender`: forwards container logs to Kafka without ever
//! blocking the container. Inputs read lines into a byte-bounded memory
//! queue; one router sends them to Kafka under a rate limit or appends them
//! to a crash-safe disk spill, replayed in order once Kafka is healthy.
//!
//! Modules: `app` (the program without its command line: inputs,
//! fallbacks, spill, metrics, reload, signals); `config` (`/etc/berth/log-appender.yaml`); `input`, `lines`
//! and `record` (what is read and how it is wrapped); `queue` and `spill`
//! (the buffers); `deadletter` (records Kafka can never take); `kafka`, `limiter` and `router` (where records go);
//! `metrics` and `reload` (operating it); `supervise` (the binary logger's
//! two processes); `docker` (the Docker logging plugin).

pub mod app;
pub mod config;
pub mod deadletter;
pub mod docker;
pub mod input;
pub mod kafka;
pub mod limiter;
pub mod lines;
pub mod metrics;
pub mod queue;
pub mod record;
pub mod reload;
pub mod router;
pub mod spill;
pub mod supervise;
