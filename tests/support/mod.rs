//! Shared helpers for the integration tests: real servers started on loopback and stopped on drop.
#![allow(dead_code)]

pub mod node;
pub mod postgres;
pub mod sshd;
