//! vmspace traces: the JSON Lines trace format, result documents, the Linux backend (a static
//! helper process run with ASLR off), the model backend (a [`vmspace::space::AddressSpace`]
//! started from a Linux run's before state, run as a process of the simulated machine of
//! `vmspace-sim`), their comparison (ops, maps, and `after_smaps` resident sizes where the
//! trace controls them), and a trace generator.
//!
//! The format is specified in `docs/trace-format.md`; this crate implements it exactly.

pub mod compare;
pub mod doc;
pub mod errno;
pub mod expect;
pub mod gen;
pub mod linux;
pub mod model;
pub mod protect;
pub mod run;
pub mod trace;
pub mod value;
