//! The Switchboard benchmark suite: a raw Engine.IO v4 / Socket.IO v5 load
//! generator (`sb-load`), floor servers that bound what any server could do
//! on this machine (`sb-floor`), and the report `bench/run.sh` writes to
//! `docs/benchmarks.md`.
//!
//! * [`proto`]: the Engine.IO / Socket.IO frames the generator speaks.
//! * [`hist`]: a lock-free log-linear latency histogram.
//! * [`procfs`]: RSS and CPU time of a process from `/proc`.
//! * [`client`]: connecting and authenticating one client, source addresses.
//! * [`redisinfo`]: Redis' command counters and CPU time.
//! * [`report`]: results as JSON lines and the markdown table.
//! * [`scale`]: files the `scale` generators and coordinator exchange.
//! * [`lean`]: the small-footprint websocket client the `scale` generators hold sessions with.
//! * [`scale_gen`], [`scale_coord`]: one `scale` generator, and the coordinator.
//! * [`scale_probes`]: the rolling restart's probe accounting (on time, late, lost).

pub mod client;
pub mod hist;
pub mod lean;
pub mod procfs;
pub mod proto;
pub mod redisinfo;
pub mod report;
pub mod scale;
pub mod scale_coord;
pub mod scale_gen;
pub mod scale_probes;
