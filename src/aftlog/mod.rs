//! AFT_LOG (being written).
