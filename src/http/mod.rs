//! HTTP front (being written).
