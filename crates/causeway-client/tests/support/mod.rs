//! Test support shared by the integration tests: scripted fake nodes, real node
//! processes, scratch directories.
#![allow(dead_code)] // each test file uses a different part

pub mod fake_node;
pub mod node;
pub mod temp;
