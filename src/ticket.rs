//! ticket (being written).
