//! alarms (being written).
