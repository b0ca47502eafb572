//! Broadcaster (being written).
