//! Fixtures shared by the space layer's unit tests.

use super::abi::{MAP_ANONYMOUS, MAP_PRIVATE, PROT_READ, PROT_WRITE};
use super::{AddressSpace, SpaceConfig, TaskKind};

/// `PROT_READ | PROT_WRITE`.
pub(super) const RW: u64 = PROT_READ | PROT_WRITE;
/// `MAP_PRIVATE | MAP_ANONYMOUS`.
pub(super) const PA: u64 = MAP_PRIVATE | MAP_ANONYMOUS;

/// An empty 64-bit space with Linux's default configuration.
pub(super) fn space() -> AddressSpace {
    AddressSpace::new(SpaceConfig::linux_default(TaskKind::X86_64))
}
