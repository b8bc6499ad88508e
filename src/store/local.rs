//! Local directory store (embedded default).
