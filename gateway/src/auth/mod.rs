//! Connect-time authentication (being written).
