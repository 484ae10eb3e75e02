//! Per-thread caches (with `std`): which local heap this thread uses for each size-class heap.
//!
//! A thread keeps up to [`ENTRIES`] (heap id, local heap) pairs in a thread-local array, most
//! recently used first, so the hot path is one thread-local load and one compare. Each pair
//! also holds a global slot; a heap's destruction clears its slots, so a thread that outlives
//! a heap never touches it again (heap ids are never reused). When a thread exits, its local
//! heaps are abandoned to their heaps, which hand them (with their segments) to the next
//! thread that needs one. A thread with no free entry or slot, or whose thread-locals are
//! already destroyed, falls back to the heap's locked local heap.

use core::cell::Cell;
use core::sync::atomic::{AtomicPtr, AtomicU64, AtomicUsize, Ordering::*};

/// Heaps a thread can cache at once.
pub(crate) const ENTRIES: usize = 8;
/// (thread, heap) pairs cached at once over the whole process.
const MAX_SLOTS: usize = 1024;

struct Slot {
    heap: AtomicU64,
    local: AtomicPtr<()>,
    abandon: AtomicUsize,
}

#[allow(clippy::declare_interior_mutable_const)]
const EMPTY_SLOT: Slot = Slot {
    heap: AtomicU64::new(0),
    local: AtomicPtr::new(core::ptr::null_mut()),
    abandon: AtomicUsize::new(0),
};

static SLOTS: [Slot; MAX_SLOTS] = [EMPTY_SLOT; MAX_SLOTS];
static SLOT_LOCK: spin::Mutex<()> = spin::Mutex::new(());

#[derive(Clone, Copy)]
struct Entry {
    heap: u64,
    slot: usize,
    local: *mut (),
}

/// The heap id of an unused entry: no heap has it (ids count up from 1), nor does a heap
/// handle not yet set up (id 0), so a look-up never finds an unused entry.
const NO_HEAP: u64 = u64::MAX;

const EMPTY_ENTRY: Entry = Entry {
    heap: NO_HEAP,
    slot: 0,
    local: core::ptr::null_mut(),
};

struct ThreadCache {
    e: [Cell<Entry>; ENTRIES],
}

/// Abandons this thread's local heaps (run by [`Guard`]'s destructor at thread exit).
fn abandon_all(cache: &ThreadCache) {
    {
        let _g = SLOT_LOCK.lock();
        for c in &cache.e {
            let e = c.get();
            if e.heap != NO_HEAP && SLOTS[e.slot].heap.load(Acquire) == e.heap {
                let f = SLOTS[e.slot].abandon.load(Relaxed);
                // SAFETY: `f` was stored from an `unsafe fn(*mut ())` in `register`, and the
                // slot still belongs to the live heap that created `e.local` (its destruction
                // would have cleared the slot under SLOT_LOCK, which we hold).
                unsafe {
                    let f: unsafe fn(*mut ()) = core::mem::transmute(f);
                    f(e.local);
                }
                SLOTS[e.slot].heap.store(0, Release);
            }
            c.set(EMPTY_ENTRY);
        }
    }
}

/// Registered on a thread's first local heap; its destructor abandons them all.
struct Guard;

impl Drop for Guard {
    fn drop(&mut self) {
        CACHE.with(abandon_all);
    }
}

std::thread_local! {
    // No destructor: access is a plain thread-pointer-relative load, valid until the thread
    // is gone (also while other thread-locals are destroyed).
    static CACHE: ThreadCache = const {
        ThreadCache { e: [const { Cell::new(EMPTY_ENTRY) }; ENTRIES] }
    };
    static GUARD: Guard = const { Guard };
}

/// This thread's local heap for heap `heap`, if it has one and thread-locals still work
/// (never for id 0, a heap not set up yet).
#[inline(always)]
pub(crate) fn lookup(heap: u64) -> Option<*mut ()> {
    CACHE.with(|c| {
        let e = c.e[0].get();
        if e.heap == heap {
            return Some(e.local);
        }
        lookup_rest(c, heap)
    })
}

/// Like [`lookup`], but only the most recently used entry (the hot paths' check).
#[inline(always)]
pub(crate) fn lookup_first(heap: u64) -> Option<*mut ()> {
    CACHE.with(|c| {
        let e = c.e[0].get();
        (e.heap == heap).then_some(e.local)
    })
}

#[inline(never)]
fn lookup_rest(c: &ThreadCache, heap: u64) -> Option<*mut ()> {
    for i in 1..ENTRIES {
        let e = c.e[i].get();
        if e.heap == heap {
            // Move to the front: the next lookup of this heap is one compare.
            c.e[i].set(c.e[0].get());
            c.e[0].set(e);
            return Some(e.local);
        }
    }
    None
}

/// Gives this thread a local heap for `heap`: `create` makes (or adopts) one, `abandon` is
/// called with it when the thread exits. `None` when thread-locals are gone or no entry or
/// slot is free (the caller then uses the heap's locked local heap).
pub(crate) fn register(
    heap: u64,
    create: impl FnOnce() -> Option<*mut ()>,
    abandon: unsafe fn(*mut ()),
) -> Option<*mut ()> {
    // Registering the guard fails once the thread's destructors have started.
    GUARD.try_with(|_| ()).ok()?;
    CACHE
        .try_with(|c| {
            let _g = SLOT_LOCK.lock();
            let idx = (0..ENTRIES).find(|&i| {
                let e = c.e[i].get();
                e.heap == NO_HEAP || SLOTS[e.slot].heap.load(Acquire) != e.heap
            })?;
            let slot = (0..MAX_SLOTS).find(|&s| SLOTS[s].heap.load(Acquire) == 0)?;
            let local = create()?;
            SLOTS[slot].local.store(local, Relaxed);
            SLOTS[slot].abandon.store(abandon as usize, Relaxed);
            SLOTS[slot].heap.store(heap, Release);
            c.e[idx].set(c.e[0].get());
            c.e[0].set(Entry { heap, slot, local });
            Some(local)
        })
        .ok()
        .flatten()
}

/// Forgets every thread's cache entry for `heap` (called when the heap is destroyed, while
/// no thread uses it).
pub(crate) fn forget_heap(heap: u64) {
    let _g = SLOT_LOCK.lock();
    for s in &SLOTS {
        if s.heap.load(Acquire) == heap {
            s.heap.store(0, Release);
        }
    }
}
