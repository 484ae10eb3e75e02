//! What the `sim_global_*` and `host_global_*` programs share: real Rust work whose every
//! allocation comes from the global allocator, the simulated i386 space, and its maps.
#![allow(dead_code)] // shared by several test programs, each using a part

use std::collections::{BTreeMap, HashMap};
use std::sync::mpsc::channel;
use vmspace::space::{AddressSpace, SpaceConfig, TaskKind};
use vmspace_heap::space::SimSpace;

/// Start of the program break: after a small i386 executable.
pub const START_BRK: u64 = 0x0806_0000;

/// The model: an empty 32-bit task with its break set.
pub fn model() -> AddressSpace {
    let mut m = AddressSpace::new(SpaceConfig::linux_default(TaskKind::Compat32));
    m.set_brk(START_BRK, START_BRK);
    m
}

/// One line of the model's maps: start, end, name.
pub struct Line {
    pub start: u64,
    pub end: u64,
    pub name: String,
}

/// The model's /proc/pid/maps, parsed.
pub fn maps(s: &SimSpace<AddressSpace>) -> Vec<Line> {
    s.with(|m| m.render_maps())
        .lines()
        .map(|l| {
            let mut f = l.split_whitespace();
            let (a, b) = f.next().unwrap().split_once('-').unwrap();
            Line {
                start: u64::from_str_radix(a, 16).unwrap(),
                end: u64::from_str_radix(b, 16).unwrap(),
                name: f.nth(4).unwrap_or("").to_string(),
            }
        })
        .collect()
}

/// Checks that `[p, p + len)` (a host pointer of the program) is inside the space's mirror
/// and inside one mapping of the model; returns that mapping's name.
pub fn assert_in_maps(
    s: &SimSpace<AddressSpace>,
    lines: &[Line],
    p: *const u8,
    len: usize,
) -> String {
    let a = s
        .sim(p)
        .unwrap_or_else(|| panic!("{p:?} is not in the simulated space"));
    assert!(a + len as u64 <= 1 << 32, "not a 32-bit address: {a:#x}");
    let l = lines
        .iter()
        .find(|l| l.start <= a && a + len as u64 <= l.end)
        .unwrap_or_else(|| panic!("{a:#x}+{len:#x} is in no mapping of the model"));
    l.name.clone()
}

/// Everything the work leaves alive, with where its memory is.
pub struct Work {
    pub words: HashMap<String, usize>,
    pub tree: BTreeMap<u64, Vec<u8>>,
    pub big: Vec<Box<[u8]>>,
    pub from_thread: Vec<String>,
}

impl Work {
    /// (pointer, length) of every heap block the work keeps.
    pub fn blocks(&self) -> Vec<(*const u8, usize)> {
        let mut v: Vec<(*const u8, usize)> = Vec::new();
        v.extend(self.words.keys().map(|k| (k.as_ptr(), k.len())));
        v.extend(
            self.tree
                .values()
                .filter(|x| x.capacity() != 0)
                .map(|x| (x.as_ptr(), x.len())),
        );
        v.extend(self.big.iter().map(|b| (b.as_ptr(), b.len())));
        v.extend(self.from_thread.iter().map(|s| (s.as_ptr(), s.len())));
        v
    }

    /// Checks that every value still holds what the work wrote.
    pub fn verify(&self) {
        assert_eq!(self.words["the"], 2 * 3000);
        assert_eq!(self.words["fox"], 3000);
        for (k, v) in &self.tree {
            assert_eq!(v.len(), (*k % 700) as usize);
            assert!(v.iter().all(|&b| b == *k as u8));
        }
        for (i, b) in self.big.iter().enumerate() {
            assert!(b.iter().all(|&x| x == i as u8 + 1));
        }
        assert_eq!(self.from_thread.len(), 2 * 500);
        assert!(self.from_thread.iter().all(|s| s.starts_with("thread")));
    }
}

/// Real work: strings, a HashMap, a BTreeMap of vectors, boxes of up to 300 KB, a sort,
/// and two threads sending strings to this one (freed here: cross-thread frees).
pub fn work() -> Work {
    let text = "the quick brown fox jumps over the lazy dog ".repeat(3000);
    let mut words: HashMap<String, usize> = HashMap::new();
    for w in text.split_whitespace() {
        *words.entry(w.to_string()).or_default() += 1;
    }
    let mut tree = BTreeMap::new();
    for i in 0..20_000u64 {
        tree.insert(i, vec![i as u8; (i % 700) as usize]);
    }
    tree.retain(|k, _| k % 3 == 0);
    let mut names: Vec<String> = (0..5000)
        .map(|i| format!("item-{:05}", i * 7919 % 5000))
        .collect();
    names.sort();
    assert!(names.windows(2).all(|w| w[0] <= w[1]));
    drop(names);
    let big: Vec<Box<[u8]>> = [1000usize, 20_000, 100_000, 300_000]
        .iter()
        .enumerate()
        .map(|(i, &n)| vec![i as u8 + 1; n].into_boxed_slice())
        .collect();
    let (tx, rx) = channel::<Vec<String>>();
    let threads: Vec<_> = (0..2)
        .map(|t| {
            let tx = tx.clone();
            std::thread::spawn(move || {
                let mut m = BTreeMap::new();
                for i in 0..5000u64 {
                    m.insert(i, format!("{t}-{i}"));
                }
                for batch in 0..10 {
                    let v: Vec<String> = (0..50)
                        .map(|j| format!("thread {t} batch {batch} item {j}"))
                        .collect();
                    tx.send(v).unwrap();
                }
                m.len()
            })
        })
        .collect();
    drop(tx);
    let from_thread: Vec<String> = rx.into_iter().flatten().collect();
    for t in threads {
        assert_eq!(t.join().unwrap(), 5000);
    }
    let w = Work {
        words,
        tree,
        big,
        from_thread,
    };
    w.verify();
    w
}
