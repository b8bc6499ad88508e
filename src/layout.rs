//! layout (being written).
