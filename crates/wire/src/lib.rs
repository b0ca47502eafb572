//! Redis bus wire format (being written).
