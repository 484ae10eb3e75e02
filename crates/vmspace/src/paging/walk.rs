//! Walking every entry of a hierarchy, for dumps and checks.

use super::{entry_addr, read_entry, PageTable, TranslateError};
use crate::addr::{PhysAddr, VirtAddr};
use crate::arch::{Arch, Entry};
use crate::phys::{PhysError, PhysMem};

/// One entry met by [`PageTable::walk`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WalkEvent {
    /// Level of the table holding the entry (1 = PTEs).
    pub level: u8,
    /// First virtual address the entry covers.
    pub va: VirtAddr,
    /// Bytes the entry covers.
    pub span: u64,
    /// The raw entry.
    pub raw: u64,
    /// The entry, decoded.
    pub entry: Entry,
}

impl<A: Arch> PageTable<A> {
    /// Calls `visit` for every entry of every table in address order, depth first: a table
    /// entry is reported, then the entries of the table it points to. Empty entries are
    /// reported too (a dump shows holes at the level where they are). The recursive entry is
    /// followed like any table, as the MMU would.
    pub fn walk<M: PhysMem, V: FnMut(&WalkEvent)>(
        &self,
        mem: &M,
        mut visit: V,
    ) -> Result<(), PhysError> {
        self.walk_in(mem, self.root, A::LEVELS, 0, &mut visit)
    }

    fn walk_in<M: PhysMem, V: FnMut(&WalkEvent)>(
        &self,
        mem: &M,
        table: PhysAddr,
        level: u8,
        base: u64,
        visit: &mut V,
    ) -> Result<(), PhysError> {
        let span = A::level_span(level);
        for idx in 0..A::ENTRIES {
            let lin = base + idx as u64 * span;
            let raw = read_entry::<A, M>(mem, table, idx)?;
            let entry = A::decode(level, raw);
            visit(&WalkEvent {
                level,
                va: A::from_linear(lin),
                span,
                raw,
                entry,
            });
            if let Entry::Table { addr, .. } = entry {
                if level > 1 {
                    self.walk_in(mem, addr, level - 1, lin, visit)?;
                }
            }
        }
        Ok(())
    }

    /// The entry at `level` on the path to `va` and its physical address, or `None` if the
    /// path ends above `level` (an empty entry or a larger page).
    pub fn entry<M: PhysMem>(
        &self,
        mem: &M,
        va: VirtAddr,
        level: u8,
    ) -> Result<Option<(PhysAddr, u64)>, TranslateError> {
        if level == 0 || level > A::LEVELS {
            return Ok(None);
        }
        let lin = A::to_linear(va).ok_or(TranslateError::NonCanonical(va))?;
        let (reached, raw, path) = self.descend(mem, lin, level)?;
        if reached != level {
            return Ok(None);
        }
        let (table, idx) = path[level as usize];
        Ok(Some((entry_addr::<A>(table, idx), raw)))
    }

    /// Counts the tables reachable from the root, the root included, without following the
    /// recursive entry or shared root entries (a check of [`PageTable::table_pages`]).
    pub fn count_tables<M: PhysMem>(&self, mem: &M) -> Result<u64, PhysError> {
        let root = self.root().start_address();
        let span = A::level_span(A::LEVELS);
        let mut n = 1;
        for idx in 0..A::ENTRIES {
            if Some(idx) == self.arch().recursive_slot() || self.is_shared_root_entry(idx) {
                continue;
            }
            let raw = read_entry::<A, M>(mem, root, idx)?;
            if let Entry::Table { addr, .. } = A::decode(A::LEVELS, raw) {
                n += 1;
                self.walk_in(mem, addr, A::LEVELS - 1, idx as u64 * span, &mut |ev| {
                    if matches!(ev.entry, Entry::Table { .. }) {
                        n += 1;
                    }
                })?;
            }
        }
        Ok(n)
    }
}

/// A structural invariant of a page-table hierarchy that does not hold (a bug, or tables
/// written by someone else).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InvariantError {
    /// The tables reachable from the root are not as many as [`PageTable::table_pages`].
    TableCount { counted: u64, recorded: u64 },
    /// A table other than the root has no entry left (it should have been freed).
    EmptyTable { table: PhysAddr, level: u8 },
    /// An entry has bits set that must be zero (SDM reserved bits, PS in a PML4E) or that
    /// the walker never writes.
    ReservedBits { va: VirtAddr, level: u8, raw: u64 },
    /// The recursive slot does not point at the root, or grants user access.
    RecursiveSlot { raw: u64 },
    /// Physical memory could not be read.
    Phys(PhysError),
}

impl From<PhysError> for InvariantError {
    fn from(e: PhysError) -> Self {
        InvariantError::Phys(e)
    }
}

impl<A: Arch> PageTable<A> {
    /// Checks the hierarchy: table count, no empty table but the root (and the shared
    /// tables), no reserved or
    /// foreign bits (re-encoding every decoded entry gives it back bit for bit), and the
    /// recursive entry. Reads every table once.
    pub fn check_invariants<M: PhysMem>(&self, mem: &M) -> Result<(), InvariantError> {
        let root = self.root().start_address();
        if let Some(slot) = self.arch().recursive_slot() {
            let raw = read_entry::<A, M>(mem, root, slot)?;
            if raw != A::encode_table(root, false) {
                return Err(InvariantError::RecursiveSlot { raw });
            }
        }
        let counted = self.check_table(mem, root, A::LEVELS, 0, false)?;
        if counted != self.table_pages() {
            return Err(InvariantError::TableCount {
                counted,
                recorded: self.table_pages(),
            });
        }
        Ok(())
    }

    /// Checks `table` at `level` and below; returns the tables counted (itself included).
    /// `shared`: the table lies below a shared root entry (may be empty, is not counted).
    fn check_table<M: PhysMem>(
        &self,
        mem: &M,
        table: PhysAddr,
        level: u8,
        base: u64,
        shared: bool,
    ) -> Result<u64, InvariantError> {
        let span = A::level_span(level);
        let mut tables = 1;
        let mut live = 0;
        for idx in 0..A::ENTRIES {
            let raw = read_entry::<A, M>(mem, table, idx)?;
            if raw == 0 {
                continue;
            }
            live += 1;
            let lin = base + idx as u64 * span;
            if level == A::LEVELS && Some(idx) == self.arch().recursive_slot() {
                continue;
            }
            let va = A::from_linear(lin);
            let bad = InvariantError::ReservedBits { va, level, raw };
            match A::decode(level, raw) {
                Entry::Table { addr, .. } => {
                    let ok =
                        raw == A::encode_table(addr, true) || raw == A::encode_table(addr, false);
                    // The CPU may set A in a table entry.
                    let ok = ok || raw & !(1 << 5) == A::encode_table(addr, true);
                    if !ok {
                        return Err(bad);
                    }
                    let below_shared =
                        shared || level == A::LEVELS && self.is_shared_root_entry(idx);
                    let n = self.check_table(mem, addr, level - 1, lin, below_shared)?;
                    if !below_shared {
                        tables += n;
                    }
                }
                Entry::Page { addr, flags, .. } => {
                    if A::encode_page(level, addr, flags) != raw {
                        return Err(bad);
                    }
                }
                Entry::Empty | Entry::NotPresent(_) => return Err(bad),
            }
        }
        if live == 0 && level != A::LEVELS && !shared {
            return Err(InvariantError::EmptyTable { table, level });
        }
        Ok(tables)
    }
}
