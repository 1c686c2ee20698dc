#![doc = include_str!("../README.md")]
//! The benchmarks live in `benches/`; this library is empty.
