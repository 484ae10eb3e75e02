//! W-rule tests of the space layer (faults: `fault/guard.rs`; stacks: the simulator).

use super::*;
use crate::space::abi::*;
use crate::space::testutil::*;
use crate::space::{AddressSpace, SpaceConfig, TaskKind};

const R: AllocKind = AllocKind::RESERVE;
const C: AllocKind = AllocKind::COMMIT;
const RW: WinProt = WinProt::READWRITE;
const K: u64 = 1024;

fn q(s: &AddressSpace, a: u64) -> RegionInfo {
    s.virtual_query(a).unwrap()
}

fn ok(s: &AddressSpace) {
    s.check_invariants().unwrap();
    s.win_check_prot().unwrap();
}

#[test]
fn w01_first_64k_never_allocatable_and_page_granularity() {
    let mut s = space();
    assert_eq!(
        s.virtual_alloc(Some(0), 4096, R, RW),
        Err(WinError::InvalidParameter)
    );
    assert_eq!(
        s.virtual_alloc(Some(0xf000), 4096, R, RW),
        Err(WinError::InvalidParameter)
    );
    let a = s.virtual_alloc(None, 1, R, RW).unwrap();
    assert_eq!(a, 0x10000, "lowest fit starts at 64 KiB");
    assert_eq!(q(&s, a).region_size, 4096, "size rounds to one 4 KiB page");
    let f = q(&s, 0);
    assert_eq!((f.state, f.region_size), (MemState::Free, 0x10000));
    ok(&s);
}

#[test]
fn w02_every_nonfree_page_belongs_to_one_allocation() {
    let mut s = space();
    let a = s.virtual_alloc(None, 0x30000, R, RW).unwrap();
    s.commit(a + 0x11000, 0x2000, WinProt::READONLY).unwrap();
    for off in [0, 0x11000, 0x12000, 0x13000, 0x2f000] {
        let r = q(&s, a + off);
        assert_eq!((r.allocation_base, r.allocation_protect), (a, RW));
        assert_eq!(r.mem_type, MEM_PRIVATE);
    }
    assert_eq!(q(&s, a + 0x11000).protect, WinProt::READONLY);
    assert_eq!(q(&s, a + 0x10000).protect, WinProt::NONE);
    ok(&s);
}

#[test]
fn w03_constants() {
    assert_eq!(
        (MEM_COMMIT, MEM_RESERVE, MEM_DECOMMIT, MEM_RELEASE),
        (0x1000, 0x2000, 0x4000, 0x8000)
    );
    assert_eq!(
        (MEM_RESET, MEM_TOP_DOWN, MEM_FREE, MEM_PRIVATE),
        (0x80000, 0x100000, 0x10000, 0x20000)
    );
    assert_eq!(MemState::Free.code(), MEM_FREE);
    assert_eq!(MemState::Reserve.code(), MEM_RESERVE);
    assert_eq!(MemState::Commit.code(), MEM_COMMIT);
    assert_eq!(WinProt::EXECUTE_WRITECOPY.bits(), 0x80);
    assert_eq!(WinProt::WRITECOMBINE.bits(), 0x400);
}

#[test]
fn w04_bottom_up_lowest_fit_top_down_highest_tail_never_starts_another() {
    let mut s = space();
    let a = s.virtual_alloc(None, 0x1000, R, RW).unwrap();
    let b = s.virtual_alloc(None, 0x1000, R, RW).unwrap();
    // The tail of a's 64 KiB block stays free but the next base is the next block.
    assert_eq!((a, b), (0x10000, 0x20000));
    let t = q(&s, a + 0x1000);
    assert_eq!((t.state, t.region_size), (MemState::Free, 0xf000));
    assert_eq!(
        s.virtual_alloc(Some(a + 0x1000), 0x1000, R, RW),
        Err(WinError::InvalidAddress),
        "a reservation cannot start in the tail"
    );
    let top = s
        .virtual_alloc(None, 0x1000, R | AllocKind::TOP_DOWN, RW)
        .unwrap();
    assert_eq!(top % GRANULARITY, 0);
    assert!(top > 0x7f00_0000_0000, "{top:#x}");
    // Nothing free above it in the space that fits another 64 KiB-aligned block but for
    // the main stack's region (none here: an empty space) -> it is the highest block.
    assert_eq!(top, (s.layout().task_size - 0x1000) & !(GRANULARITY - 1));
    // Released ranges are found again, lowest first.
    s.release(a, 0).unwrap();
    assert_eq!(s.virtual_alloc(None, 0x10000, R, RW), Ok(0x10000));
    ok(&s);
}

#[test]
fn w04_placement_respects_linux_mappings() {
    let mut s = space();
    s.mmap(0x10000, 0x4000, PROT_READ, PA | MAP_FIXED, None, 0)
        .unwrap();
    let a = s.virtual_alloc(None, 0x20000, R, RW).unwrap();
    assert_eq!(a, 0x20000);
    // A Linux mmap lands in the tail of the last block; the next reservation skips it.
    let t = s.virtual_alloc(None, 0x11000, R, RW).unwrap();
    assert_eq!(t, 0x40000);
    s.mmap(0x51000, 0x1000, RW_LINUX, PA | MAP_FIXED, None, 0)
        .unwrap();
    assert_eq!(s.virtual_alloc(None, 0x1000, R, RW), Ok(0x60000));
    ok(&s);
}

const RW_LINUX: u64 = PROT_READ | PROT_WRITE;

#[test]
fn w05_reserve_with_address_rounds_down_to_64k() {
    let mut s = space();
    let a = s.virtual_alloc(Some(0x1234_5678), 0x2000, R, RW).unwrap();
    assert_eq!(a, 0x1234_0000);
    // Every page touching [addr, addr + size) -> end = align_up(0x12347678, 4 KiB).
    assert_eq!(q(&s, a).region_size, 0x1234_8000 - 0x1234_0000);
    assert_eq!(
        s.virtual_alloc(Some(0x1234_7000), 0x1000, R, RW),
        Err(WinError::InvalidAddress)
    );
    assert_eq!(
        s.virtual_alloc(Some(0x2000_0000), 0, R, RW),
        Err(WinError::InvalidParameter)
    );
    // A Linux mapping is not free either.
    s.mmap(0x3000_8000, 0x1000, PROT_READ, PA | MAP_FIXED, None, 0)
        .unwrap();
    assert_eq!(
        s.virtual_alloc(Some(0x3000_0000), 0x10000, R, RW),
        Err(WinError::InvalidAddress)
    );
    ok(&s);
}

#[test]
fn w06_commit_one_reservation_already_committed_fine_charge_limit() {
    let mut s = space();
    let a = s.virtual_alloc(None, 0x20000, R, RW).unwrap();
    let b = s.virtual_alloc(None, 0x10000, R, RW).unwrap();
    assert_eq!(
        s.commit(a + 0x10, 0x1000, RW),
        Ok(a),
        "start rounds down to 4 KiB"
    );
    assert_eq!(q(&s, a).region_size, 0x2000, "two pages touched");
    assert_eq!(s.commit_charge(), 2);
    assert_eq!(s.commit(a, 0x3000, RW), Ok(a), "already committed is fine");
    assert_eq!(s.commit_charge(), 3);
    // Across two reservations, or outside any.
    assert_eq!(
        s.commit(b - 0x1000, 0x2000, RW),
        Err(WinError::InvalidAddress)
    );
    assert_eq!(
        s.commit(b + 0x10000, 0x1000, RW),
        Err(WinError::InvalidAddress)
    );
    assert_eq!(
        s.commit(0x7000_0000, 0x1000, RW),
        Err(WinError::InvalidAddress)
    );
    // No overcommit: the charge is taken at commit time against the limit.
    s.set_commit_limit(5);
    assert_eq!(s.commit(b, 0x3000, RW), Err(WinError::CommitmentLimit));
    assert_eq!(s.commit_charge(), 3);
    assert_eq!(s.commit(b, 0x2000, RW), Ok(b));
    assert_eq!(s.commit_charge(), 5);
    assert_eq!(
        s.virtual_alloc(None, 0x1000, R | C, RW),
        Err(WinError::CommitmentLimit)
    );
    s.decommit(a, 0x1000).unwrap();
    assert_eq!(s.commit_charge(), 4);
    s.reset_commit_limit();
    assert_eq!(s.commit_limit(), s.config().total_ram_pages);
    assert!(s.virtual_alloc(None, 0x10000, R | C, RW).is_ok());
    ok(&s);
}

#[test]
fn w07_commit_without_address_reserves_and_commits() {
    let mut s = space();
    let a = s.virtual_alloc(None, 0x3000, C, RW).unwrap();
    let r = q(&s, a);
    assert_eq!(
        (r.allocation_base, r.state, r.protect, r.region_size),
        (a, MemState::Commit, RW, 0x3000)
    );
    assert_eq!(s.commit_charge(), 3);
    assert_eq!(s.find_vma(a).unwrap().perms(), *b"rw-p");
    ok(&s);
}

#[test]
fn w08_demand_zero_and_decommit_recommit_reads_zero() {
    let mut s = space();
    let a = s.virtual_alloc(None, 0x2000, R | C, RW).unwrap();
    assert_eq!(s.touch(a + 5, false, 0), Ok(Some(0)));
    s.touch(a + 5, true, 7).unwrap();
    assert_eq!(s.touch(a + 5, false, 0), Ok(Some(7)));
    s.decommit(a, 0x1000).unwrap();
    assert!(s.touch(a + 5, false, 0).is_err(), "decommitted = reserved");
    s.commit(a, 0x1000, RW).unwrap();
    assert_eq!(s.touch(a + 5, false, 0), Ok(Some(0)));
    ok(&s);
}

#[test]
fn w09_release_needs_size_zero_and_the_base() {
    let mut s = space();
    let a = s.virtual_alloc(None, 0x30000, R, RW).unwrap();
    s.commit(a + 0x5000, 0x3000, RW).unwrap();
    let before = (s.win_table().clone(), s.render_maps());
    assert_eq!(s.release(a, 0x30000), Err(WinError::InvalidParameter));
    assert_eq!(s.release(a + 0x1000, 0), Err(WinError::InvalidAddress));
    assert_eq!(s.release(a + 0x10000, 0), Err(WinError::InvalidAddress));
    assert_eq!((s.win_table().clone(), s.render_maps()), before);
    s.release(a, 0).unwrap();
    assert_eq!(s.commit_charge(), 0);
    assert_eq!(s.map_count(), 0);
    assert_eq!(q(&s, a).state, MemState::Free);
    assert_eq!(s.release(a, 0), Err(WinError::InvalidAddress));
    ok(&s);
}

#[test]
fn w10_decommit_ranges_whole_reservation_and_flag_checks() {
    let mut s = space();
    let a = s.virtual_alloc(None, 0x10000, R | C, RW).unwrap();
    let b = s.virtual_alloc(None, 0x10000, R, RW).unwrap();
    s.decommit(a + 0x1800, 0x1000).unwrap();
    assert_eq!(q(&s, a + 0x1000).state, MemState::Reserve);
    assert_eq!(q(&s, a + 0x1000).region_size, 0x2000);
    assert_eq!(s.commit_charge(), 14);
    // Reserved pages in the range are fine.
    s.decommit(a, 0x3000).unwrap();
    assert_eq!(s.commit_charge(), 13);
    // Across two reservations: refused.
    assert_eq!(
        s.decommit(b - 0x1000, 0x2000),
        Err(WinError::InvalidAddress)
    );
    // Size 0 at the base: the whole reservation; elsewhere: invalid.
    assert_eq!(s.decommit(a + 0x1000, 0), Err(WinError::InvalidParameter));
    s.decommit(a, 0).unwrap();
    assert_eq!(s.commit_charge(), 0);
    assert_eq!(q(&s, a).region_size, 0x10000);
    assert_eq!(
        s.virtual_free(a, 0, MEM_DECOMMIT | MEM_RELEASE),
        Err(WinError::InvalidParameter)
    );
    assert_eq!(s.virtual_free(a, 0, 0), Err(WinError::InvalidParameter));
    s.virtual_free(a, 0, MEM_RELEASE).unwrap();
    ok(&s);
}

#[test]
fn w11_protect_needs_committed_pages_of_one_reservation_returns_old() {
    let mut s = space();
    let a = s.virtual_alloc(None, 0x10000, R, RW).unwrap();
    s.commit(a, 0x3000, WinProt::READONLY).unwrap();
    assert_eq!(
        s.virtual_protect(a + 0x2000, 0x2000, RW),
        Err(WinError::InvalidAddress),
        "a reserved page in the range"
    );
    assert_eq!(
        s.virtual_protect(a + 0x10, 0x1000, RW),
        Ok(WinProt::READONLY)
    );
    assert_eq!(s.virtual_protect(a, 0x3000, WinProt::EXECUTE_READ), Ok(RW));
    assert_eq!(s.find_vma(a).unwrap().perms(), *b"r-xp");
    assert_eq!(
        s.virtual_protect(0x7000_0000, 0x1000, RW),
        Err(WinError::InvalidAddress)
    );
    ok(&s);
}

#[test]
fn w12_query_maximal_runs() {
    let mut s = space();
    let a = s.virtual_alloc(Some(0x4000_0000), 0x14000, R, RW).unwrap();
    s.commit(a + 0x2000, 0x2000, RW).unwrap();
    s.commit(a + 0x4000, 0x1000, WinProt::READONLY).unwrap();
    let r = q(&s, a + 0x2abc);
    assert_eq!(
        r,
        RegionInfo {
            base_address: a + 0x2000,
            allocation_base: a,
            allocation_protect: RW,
            region_size: 0x2000,
            state: MemState::Commit,
            protect: RW,
            mem_type: MEM_PRIVATE,
        }
    );
    // From the middle of a run: to the end of the run.
    assert_eq!(q(&s, a + 0x3000).region_size, 0x1000);
    assert_eq!(q(&s, a + 0x4000).protect, WinProt::READONLY);
    let r = q(&s, a + 0x5000);
    assert_eq!(
        (r.state, r.region_size, r.protect),
        (MemState::Reserve, 0xf000, WinProt::NONE)
    );
    // Free: the maximal free run up to the next VMA.
    s.mmap(0x4010_0000, 0x1000, PROT_READ, PA | MAP_FIXED, None, 0)
        .unwrap();
    let f = q(&s, a + 0x14000);
    assert_eq!(
        (f.state, f.region_size),
        (MemState::Free, 0x4010_0000 - (a + 0x14000))
    );
    assert_eq!(
        (f.allocation_base, f.protect, f.mem_type),
        (0, WinProt::NOACCESS, 0)
    );
    // A Linux mapping reports as such.
    let l = q(&s, 0x4010_0000);
    assert_eq!(
        (l.state, l.protect, l.allocation_base),
        (MemState::Commit, WinProt::READONLY, 0x4010_0000)
    );
    assert_eq!(
        s.virtual_query(s.layout().task_size),
        Err(WinError::InvalidParameter)
    );
    ok(&s);
}

#[test]
fn w14_guard_needs_a_base_other_than_noaccess_and_committed_pages() {
    let mut s = space();
    let a = s.virtual_alloc(None, 0x10000, R, RW).unwrap();
    let g = RW | WinProt::GUARD;
    assert_eq!(
        s.commit(a, 0x1000, WinProt::NOACCESS | WinProt::GUARD),
        Err(WinError::InvalidParameter)
    );
    assert_eq!(
        s.virtual_protect(a, 0x1000, g),
        Err(WinError::InvalidAddress)
    );
    s.commit(a, 0x2000, g).unwrap();
    assert_eq!(q(&s, a).protect, g);
    assert_eq!(
        s.find_vma(a).unwrap().perms(),
        *b"---p",
        "guard pages are not accessible"
    );
    assert_eq!(s.virtual_protect(a, 0x1000, RW), Ok(g));
    assert_eq!(
        s.virtual_protect(a, 0x1000, WinProt::NOACCESS | WinProt::GUARD),
        Err(WinError::InvalidParameter)
    );
    for bad in [
        WinProt(0),
        WinProt(0x06),
        WinProt::WRITECOPY,
        WinProt(0x804),
        RW | WinProt::NOCACHE | WinProt::WRITECOMBINE,
        RW | WinProt::GUARD | WinProt::NOCACHE,
        WinProt::NOACCESS | WinProt::NOCACHE,
    ] {
        assert_eq!(
            s.commit(a, 0x1000, bad),
            Err(WinError::InvalidParameter),
            "{bad:?}"
        );
    }
    assert!(s.commit(a, 0x1000, RW | WinProt::NOCACHE).is_ok());
    ok(&s);
}

#[test]
fn w20_reservation_is_a_prot_none_private_anonymous_vma_without_noreserve() {
    let mut s = space();
    let a = s.virtual_alloc(None, 0x20000, R, RW).unwrap();
    let v = s.find_vma(a).unwrap();
    assert_eq!(v.perms(), *b"---p");
    assert!(v.is_anonymous());
    assert_eq!(v.flags & crate::space::vma::flags::VM_NORESERVE, 0);
    assert_eq!(s.accounting().committed, 0, "reservations are not charged");
    s.commit(a, 0x2000, RW).unwrap();
    assert_eq!(
        s.accounting().committed,
        2,
        "commit charges Linux's VM_ACCOUNT (G16)"
    );
    // Adjacent reservations may share a VMA; the table keeps them apart.
    let b = s.virtual_alloc(None, 0x10000, R, RW).unwrap();
    assert_eq!(b, a + 0x20000);
    assert_eq!(s.find_vma(a + 0x2000).unwrap().end, b + 0x10000);
    assert_eq!(q(&s, a + 0x2000).region_size, 0x1e000);
    s.release(b, 0).unwrap();
    assert_eq!(s.find_vma(a + 0x2000).unwrap().end, a + 0x20000);
    ok(&s);
}

#[test]
fn linux_munmap_or_fixed_mmap_over_a_reservation_ends_it() {
    let mut s = space();
    let a = s.virtual_alloc(None, 0x20000, R, RW).unwrap();
    s.commit(a, 0x3000, RW).unwrap();
    let b = s.virtual_alloc(None, 0x10000, R | C, RW).unwrap();
    s.munmap(a + 0x1000, 0x1000).unwrap();
    assert!(s.win_table().get(a).is_none());
    assert_eq!(s.commit_charge(), 16);
    assert_eq!(s.commit(a, 0x1000, RW), Err(WinError::InvalidAddress));
    // The rest stays mapped as plain Linux memory.
    assert_eq!(q(&s, a).state, MemState::Commit);
    assert_eq!(q(&s, a).mem_type, MEM_PRIVATE);
    // A Linux mapping right above a committed reservation merges with its VMA; the query
    // of the Linux part still starts at the reservation's end.
    let c = s
        .virtual_alloc(Some(0x5000_0000), 0x2000, R | C, RW)
        .unwrap();
    s.mmap(c + 0x2000, 0x1000, RW_LINUX, PA | MAP_FIXED, None, 0)
        .unwrap();
    assert_eq!(s.find_vma(c).unwrap().end, c + 0x3000);
    let l = q(&s, c + 0x2000);
    assert_eq!((l.allocation_base, l.region_size), (c + 0x2000, 0x1000));
    assert_eq!(q(&s, c).region_size, 0x2000);
    s.release(c, 0).unwrap();
    assert_eq!(q(&s, c + 0x2000).allocation_base, c + 0x2000);
    s.mmap(b + 0x4000, 0x1000, PROT_READ, PA | MAP_FIXED, None, 0)
        .unwrap();
    assert!(s.win_table().is_empty());
    assert_eq!(s.commit_charge(), 0);
    s.check_invariants().unwrap();
}

#[test]
fn bad_input_is_typed_and_changes_nothing() {
    let mut s = space();
    let a = s.virtual_alloc(None, 0x30000, R, RW).unwrap();
    let b = s.virtual_alloc(None, 0x10000, R | C, RW).unwrap();
    s.commit(a + 0x4000, 0x2000, RW).unwrap();
    s.commit(a + 0x8000, 0x1000, RW | WinProt::GUARD).unwrap();
    let top = s.layout().task_size;
    let snap = |s: &AddressSpace| {
        (
            s.win_table().clone(),
            s.render_maps(),
            s.accounting().clone(),
        )
    };
    let before = snap(&s);
    let mut errs = alloc::vec::Vec::new();
    let mut t = |r: Result<(), WinError>, want: WinError, s: &AddressSpace| {
        assert_eq!(r, Err(want));
        assert_eq!(snap(s), before);
        errs.push(want);
    };
    t(s.release(a + 0x10000, 0), WinError::InvalidAddress, &s);
    let r = s.release(a, 0x1000);
    t(r, WinError::InvalidParameter, &s);
    let r = s.commit(0x7000_0000, 0x1000, RW).map(|_| ());
    t(r, WinError::InvalidAddress, &s);
    let r = s.commit(b - 0x1000, 0x2000, RW).map(|_| ());
    t(r, WinError::InvalidAddress, &s);
    let r = s
        .virtual_protect(a + 0x4000, 0x1000, WinProt::NOACCESS | WinProt::GUARD)
        .map(|_| ());
    t(r, WinError::InvalidParameter, &s);
    let r = s
        .commit(a, 0x1000, WinProt::NOACCESS | WinProt::GUARD)
        .map(|_| ());
    t(r, WinError::InvalidParameter, &s);
    let r = s.virtual_alloc(None, 0, R, RW).map(|_| ());
    t(r, WinError::InvalidParameter, &s);
    let r = s.commit(a, 0, RW).map(|_| ());
    t(r, WinError::InvalidParameter, &s);
    let r = s.virtual_protect(a + 0x4000, 0, RW).map(|_| ());
    t(r, WinError::InvalidParameter, &s);
    let r = s
        .virtual_alloc(Some(top - 0x1000), 0x2000, R, RW)
        .map(|_| ());
    t(r, WinError::InvalidParameter, &s);
    let r = s
        .virtual_alloc(Some(u64::MAX - 0xfff), 0x2000, R, RW)
        .map(|_| ());
    t(r, WinError::InvalidParameter, &s);
    let r = s.virtual_alloc(None, u64::MAX, R, RW).map(|_| ());
    t(r, WinError::NotEnoughMemory, &s);
    let r = s.virtual_alloc(None, top, R, RW).map(|_| ());
    t(r, WinError::NotEnoughMemory, &s);
    let r = s.commit(a, u64::MAX, RW).map(|_| ());
    t(r, WinError::InvalidParameter, &s);
    let r = s.decommit(u64::MAX - 0xfff, 0x2000);
    t(r, WinError::InvalidParameter, &s);
    let r = s.virtual_protect(a, 0x5000, RW).map(|_| ());
    t(r, WinError::InvalidAddress, &s);
    let r = s
        .virtual_alloc(Some(a), 0x1000, AllocKind(0), RW)
        .map(|_| ());
    t(r, WinError::InvalidParameter, &s);
    let r = s
        .virtual_alloc(Some(a), 0x1000, AllocKind(MEM_RESET), RW)
        .map(|_| ());
    t(r, WinError::InvalidParameter, &s);
    let r = s.virtual_alloc(Some(a), 0x1000, R, RW).map(|_| ());
    t(r, WinError::InvalidAddress, &s);
    let r = s.virtual_free(a, 0, MEM_DECOMMIT | MEM_RELEASE);
    t(r, WinError::InvalidParameter, &s);
    assert!(s.virtual_query(u64::MAX).is_err());
    assert_eq!(errs.len(), 20);
    ok(&s);
}

#[test]
fn linux_limits_roll_back_a_commit() {
    // max_map_count 3: committing a middle page needs two more VMAs -> ENOMEM from the
    // split, rolled back, ERROR_NOT_ENOUGH_MEMORY, nothing changed.
    let mut c = SpaceConfig::linux_default(TaskKind::X86_64);
    c.max_map_count = 2;
    let mut s = AddressSpace::new(c);
    let a = s.virtual_alloc(None, 0x10000, R, RW).unwrap();
    s.commit(a, 0x1000, RW).unwrap();
    let before = (s.win_table().clone(), s.render_maps());
    assert_eq!(
        s.commit(a + 0x4000, 0x1000, WinProt::READONLY),
        Err(WinError::NotEnoughMemory)
    );
    assert_eq!((s.win_table().clone(), s.render_maps()), before);
    ok(&s);
}

#[test]
fn win_prot_debug_and_errors_display() {
    assert_eq!(
        alloc::format!("{:?}", RW | WinProt::GUARD),
        "READWRITE|GUARD"
    );
    assert_eq!(
        alloc::format!("{}", WinError::CommitmentLimit),
        "ERROR_COMMITMENT_LIMIT (1455)"
    );
    assert_eq!(WinError::InvalidAddress.code(), 487);
    assert_eq!(WinError::NotEnoughMemory.code(), 8);
    assert_eq!(WinError::InvalidParameter.code(), 87);
    let _ = K;
}

#[test]
fn compat32_space_has_a_segment_map_of_4_gib() {
    let mut s = AddressSpace::new(SpaceConfig::linux_default(TaskKind::Compat32));
    let a = s
        .virtual_alloc(None, 0x20000, R | AllocKind::TOP_DOWN, RW)
        .unwrap();
    assert!(a < 0xffff_e000);
    s.commit(a, 0x10000, RW).unwrap();
    use crate::range::segment_map::SegState;
    assert_eq!(s.win_table().segment(a), SegState::Committed);
    assert_eq!(s.win_table().segment(a + 0x10000), SegState::Reserved);
    s.commit(a + 0x10000, 0x1000, RW).unwrap();
    assert_eq!(s.win_table().segment(a + 0x10000), SegState::Mixed);
    ok(&s);
}

#[test]
fn huge_reservation_keeps_the_segment_map_cheap_and_exact() {
    use crate::range::segment_map::SegState;
    let mut s = space();
    // 1 TiB: 16M segments, set in a few word fills.
    let a = s.virtual_alloc(None, 1 << 40, R, RW).unwrap();
    assert_eq!(s.win_table().segment(a + (1 << 39)), SegState::Reserved);
    s.commit(a + 0x10000, 0x20000, RW).unwrap();
    s.commit(a + 0x31000, 0x1000, RW | WinProt::GUARD).unwrap();
    assert_eq!(s.win_table().segment(a), SegState::Reserved);
    assert_eq!(s.win_table().segment(a + 0x10000), SegState::Committed);
    assert_eq!(s.win_table().segment(a + 0x20000), SegState::Committed);
    assert_eq!(s.win_table().segment(a + 0x30000), SegState::Mixed);
    assert_eq!(s.win_table().segment(a + 0x40000), SegState::Reserved);
    s.release(a, 0).unwrap();
    assert_eq!(s.win_table().segment(a + (1 << 39)), SegState::Free);
    ok(&s);
}
