//! Switchboard gateway: a standalone Socket.IO v4 server that holds every
//! client connection, authenticates it at connect, places it in user and role
//! rooms, and fans out events that API services publish into Redis.
//!
//! The request path, outside in:
//! - [`server`]: the hyper listener, routing (`/socket.io/`, health, metrics,
//!   publish API) and graceful shutdown;
//! - [`engine`]: Engine.IO v4 sessions over polling and websocket, and the
//!   handshake;
//! - [`socketio`]: the Socket.IO v5 layer on top of one Engine.IO session;
//! - [`auth`]: JWT verification and claims-to-rooms mapping at CONNECT;
//! - [`hub`]: the one owner of sockets, rooms, users, expiries and pending acks;
//! - [`bus`]: the Redis (or in-memory) bus that brings events in;
//! - [`metrics`]: Prometheus counters and gauges for all of the above;
//! - [`admin`]: the server side of the official Socket.IO Admin UI;
//! - [`actions`]: what clients may do by `[client]` policy: join, leave and
//!   relay to rooms, forward events to the API (HTTP or a Redis stream);
//! - [`presence`]: who is online and who is in a room, across the fleet.

#![warn(missing_docs)]

pub mod actions;
pub(crate) mod admin;
pub mod api;
pub mod auth;
pub(crate) mod bus;
pub(crate) mod client_ip;
pub(crate) mod cluster;
pub mod config;
pub(crate) mod conn_slot;
pub(crate) mod disconnect;
pub(crate) mod engine;
pub(crate) mod fd_limit;
pub(crate) mod http;
pub(crate) mod hub;
pub(crate) mod log_throttle;
pub mod logging;
pub(crate) mod metrics;
pub(crate) mod peer_directory;
pub mod presence;
pub mod server;
pub(crate) mod socketio;

pub use config::Config;
