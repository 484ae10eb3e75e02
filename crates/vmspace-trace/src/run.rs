//! The backend-independent trace runner: resolves address expressions and ids, applies
//! self-protection and the i386 pointer-size rule, and turns each op into an [`OpResult`].
//! The Linux helper process and the model space both sit behind [`Executor`].

use crate::doc::{Hex, Int, OpResult, Smaps, Vma};
use crate::errno::{code_name, errno_name, signal_name};
use crate::expect::check_expects;
use crate::protect::Protected;
use crate::trace::{AddrExpr, Base, BrkArg, Op, OpKind, Trace};
use crate::value::{hex, MAP_FIXED, MAP_FIXED_NOREPLACE, MREMAP_FIXED};
use serde_json::Value;
use std::collections::HashMap;

/// A syscall of the trace, with resolved integer arguments.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Call {
    Mmap {
        addr: u64,
        len: u64,
        prot: u64,
        flags: u64,
        memfd: bool,
        offset: u64,
    },
    Munmap {
        addr: u64,
        len: u64,
    },
    Mprotect {
        addr: u64,
        len: u64,
        prot: u64,
    },
    Mremap {
        addr: u64,
        old_len: u64,
        new_len: u64,
        flags: u64,
        new_addr: u64,
    },
    Madvise {
        addr: u64,
        len: u64,
        advice: u64,
    },
    Mlock {
        addr: u64,
        len: u64,
        flags: u64,
    },
    Munlock {
        addr: u64,
        len: u64,
    },
    Mseal {
        addr: u64,
        len: u64,
    },
}

/// The outcome of a one-byte access.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Touched {
    /// The access succeeded; for reads, the byte read.
    Ok(u8),
    /// The access raised a signal.
    Fault { signo: i32, code: i32, addr: u64 },
}

/// The backend died (the helper process exited, or its pipe broke).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fatal(pub String);

/// What a backend must provide to run a trace.
pub trait Executor {
    /// Performs a syscall: `Ok(Ok(ret))` or `Ok(Err(errno))`.
    fn call(&mut self, c: &Call) -> Result<Result<u64, i32>, Fatal>;
    /// Raw `brk(target)`; returns the kernel's return value (new or old break).
    fn brk(&mut self, target: u64) -> Result<u64, Fatal>;
    /// Reads or writes one byte.
    fn touch(&mut self, addr: u64, write: bool, value: u8) -> Result<Touched, Fatal>;
    /// The current maps.
    fn maps(&mut self) -> Result<Vec<Vma>, Fatal>;
    /// The current smaps.
    fn smaps(&mut self) -> Result<Vec<Smaps>, Fatal>;
}

/// Facts about the run that the rules need.
#[derive(Clone, Debug)]
pub struct RunContext {
    pub before: Vec<Vma>,
    pub brk0: u64,
    pub start_brk: u64,
    /// i386 task: values must fit in 32 bits.
    pub is_32bit: bool,
    /// Configuration tags for `expect@SEL` (e.g. `x86_64`, `64`, `static`, `topdown`, and the
    /// full name `x86_64-static-topdown`).
    pub tags: Vec<String>,
    pub snapshot_each: bool,
}

/// What a run produced.
#[derive(Clone, Debug, Default)]
pub struct RunOutput {
    pub results: Vec<OpResult>,
    /// Failed `expect` checks, one message each (for test harnesses).
    pub expect_failures: Vec<String>,
    pub fatal: Option<String>,
}

/// Runs every op of `trace` through `exec`.
pub fn run_ops(trace: &Trace, exec: &mut dyn Executor, ctx: &RunContext) -> RunOutput {
    let mut runner = Runner {
        ids: HashMap::new(),
        ctx,
        protected: Protected::new(&ctx.before, ctx.start_brk, ctx.brk0),
    };
    let mut out = RunOutput::default();
    for (i, op) in trace.ops.iter().enumerate() {
        let mut r = OpResult {
            i,
            line: op.line,
            op: op.kind.name().to_string(),
            ..Default::default()
        };
        match runner.run_op(op, &mut r, exec) {
            Ok(()) => {}
            Err(Fatal(f)) => {
                out.results.push(r);
                out.fatal = Some(f);
                return out;
            }
        }
        if ctx.snapshot_each && r.maps.is_none() {
            match exec.maps() {
                Ok(m) => r.maps = Some(m),
                Err(Fatal(f)) => {
                    out.results.push(r);
                    out.fatal = Some(f);
                    return out;
                }
            }
        }
        for e in check_expects(op, &r, &ctx.tags, &|x: &AddrExpr| runner.resolve_static(x)) {
            out.expect_failures
                .push(format!("line {} ({}): {e}", op.line, op.kind.name()));
        }
        out.results.push(r);
    }
    out
}

struct Runner<'a> {
    ids: HashMap<String, u64>,
    ctx: &'a RunContext,
    protected: Protected,
}

enum Skip {
    Unresolved,
    DoesNotFit,
    Protected,
}

impl Skip {
    fn name(&self) -> &'static str {
        match self {
            Skip::Unresolved => "unresolved_ref",
            Skip::DoesNotFit => "does_not_fit_in_pointer",
            Skip::Protected => "protected",
        }
    }
}

fn vma_named<'v>(before: &'v [Vma], name: &str) -> impl DoubleEndedIterator<Item = &'v Vma> {
    let name = name.to_string();
    before.iter().filter(move |v| v.name == name)
}

impl Runner<'_> {
    /// Resolves an expression without `$brk` (which needs the backend): used for expectations.
    fn resolve_static(&self, e: &AddrExpr) -> Option<u64> {
        let base = match &e.base {
            Base::Abs => 0,
            Base::Id(n) => *self.ids.get(n)?,
            Base::Brk0 | Base::Brk => self.ctx.brk0,
            Base::StartBrk => self.ctx.start_brk,
            Base::Stack => vma_named(&self.ctx.before, "[stack]").next()?.start.0,
            Base::StackEnd => vma_named(&self.ctx.before, "[stack]").next()?.end.0,
            Base::Vma(n) => vma_named(&self.ctx.before, n).next()?.start.0,
            Base::VmaEnd(n) => vma_named(&self.ctx.before, n).next_back()?.end.0,
        };
        Some(base.wrapping_add(e.off))
    }

    fn resolve(&self, e: &AddrExpr, exec: &mut dyn Executor) -> Result<Option<u64>, Fatal> {
        if e.base == Base::Brk {
            return Ok(Some(exec.brk(0)?.wrapping_add(e.off)));
        }
        Ok(self.resolve_static(e))
    }

    fn fits(&self, vals: &[u64]) -> bool {
        !self.ctx.is_32bit || vals.iter().all(|&v| v <= u32::MAX as u64)
    }

    /// Truncates to the task's word size (i386: 32 bits).
    fn word(&self, v: u64) -> u64 {
        if self.ctx.is_32bit {
            v & 0xffff_ffff
        } else {
            v
        }
    }

    fn run_op(&mut self, op: &Op, r: &mut OpResult, exec: &mut dyn Executor) -> Result<(), Fatal> {
        macro_rules! res {
            ($e:expr) => {
                match self.resolve($e, exec)? {
                    Some(v) => v,
                    None => {
                        r.skip = Some(Skip::Unresolved.name().into());
                        return Ok(());
                    }
                }
            };
        }
        let unsafe_ = op.unsafe_;
        let bound: Option<u64>;
        match &op.kind {
            OpKind::Let { addr } => {
                let a = res!(addr);
                r.ret = Some(Value::String(hex(a)));
                bound = Some(a);
            }
            OpKind::Snapshot => {
                r.maps = Some(exec.maps()?);
                bound = None;
            }
            OpKind::Query { addr } => {
                let a = res!(addr);
                r.addr = Some(Hex(a));
                let maps = exec.maps()?;
                r.vma = Some(maps.into_iter().find(|v| v.start.0 <= a && a < v.end.0));
                bound = Some(a);
            }
            OpKind::Brk { arg } => {
                let old = exec.brk(0)?;
                let target = match arg {
                    BrkArg::Query => 0,
                    BrkArg::Target(e) => res!(e),
                    BrkArg::Delta(d) => old.wrapping_add(*d),
                };
                r.old = Some(Hex(old));
                r.target = Some(Hex(target));
                if !self.fits(&[target]) {
                    r.skip = Some(Skip::DoesNotFit.name().into());
                    return Ok(());
                }
                let target = self.word(target);
                r.target = Some(Hex(target));
                if !unsafe_ && self.protected.brk_hits(target) {
                    r.skip = Some(Skip::Protected.name().into());
                    return Ok(());
                }
                let ret = exec.brk(target)?;
                r.ret = Some(Value::String(hex(ret)));
                // A query always "succeeds"; otherwise success means the break moved to target.
                bound = if target == 0 || ret == target {
                    Some(ret)
                } else {
                    None
                };
            }
            OpKind::Touch {
                addr,
                write,
                value,
                len,
            } => {
                let a = res!(addr);
                r.addr = Some(Hex(a));
                r.mode = Some(if *write { "w" } else { "r" }.into());
                r.len = len.map(Int);
                if !self.fits(&[a, len.unwrap_or(0)]) {
                    r.skip = Some(Skip::DoesNotFit.name().into());
                    return Ok(());
                }
                let a = self.word(a);
                r.addr = Some(Hex(a));
                if *write && !unsafe_ && self.protected.hits(a, len.unwrap_or(1).max(1)) {
                    r.skip = Some(Skip::Protected.name().into());
                    return Ok(());
                }
                // One byte at addr, then (with len) one at every following page start below
                // addr+len (which cannot pass the top of the task's address space).
                let top = if self.ctx.is_32bit {
                    1u128 << 32
                } else {
                    1u128 << 64
                };
                let end = (a as u128 + len.unwrap_or(0) as u128).min(top);
                let mut outcome = exec.touch(a, *write, *value)?;
                let mut p = (a as u128 & !0xfff) + 4096;
                while p < end && matches!(outcome, Touched::Ok(_)) {
                    outcome = exec.touch(p as u64, *write, *value)?;
                    p += 4096;
                }
                match outcome {
                    Touched::Ok(v) => {
                        r.ret = Some(Value::String("ok".into()));
                        if !*write && len.is_none() {
                            if self.protected.contains(a) {
                                r.val_hidden = Some("baseline".into());
                            } else {
                                r.val = Some(Int(v as u64));
                            }
                        }
                        bound = Some(a);
                    }
                    Touched::Fault { signo, code, addr } => {
                        r.fault = Some(signal_name(signo));
                        r.code = Some(code_name(signo, code));
                        r.fault_addr = Some(Hex(addr));
                        bound = None;
                    }
                }
            }
            kind => {
                let (call, protected_ranges, ret_is_addr) = match kind {
                    OpKind::Mmap {
                        addr,
                        len,
                        prot,
                        flags,
                        memfd,
                        offset,
                    } => {
                        let a = res!(addr);
                        r.addr = Some(Hex(a));
                        if !self.fits(&[a, *len, *prot, *flags, *offset]) {
                            r.skip = Some(Skip::DoesNotFit.name().into());
                            return Ok(());
                        }
                        let a = self.word(a);
                        r.addr = Some(Hex(a));
                        let fixed = flags & MAP_FIXED != 0 && flags & MAP_FIXED_NOREPLACE == 0;
                        let ranges = if fixed { vec![(a, *len)] } else { vec![] };
                        (
                            Call::Mmap {
                                addr: a,
                                len: *len,
                                prot: *prot,
                                flags: *flags,
                                memfd: *memfd,
                                offset: *offset,
                            },
                            ranges,
                            true,
                        )
                    }
                    OpKind::Mremap {
                        addr,
                        old_len,
                        new_len,
                        flags,
                        new_addr,
                    } => {
                        let a = res!(addr);
                        r.addr = Some(Hex(a));
                        let na = match new_addr {
                            Some(e) => {
                                let v = res!(e);
                                r.new_addr = Some(Hex(v));
                                v
                            }
                            None => 0,
                        };
                        if !self.fits(&[a, *old_len, *new_len, *flags, na]) {
                            r.skip = Some(Skip::DoesNotFit.name().into());
                            return Ok(());
                        }
                        let (a, na) = (self.word(a), self.word(na));
                        r.addr = Some(Hex(a));
                        if new_addr.is_some() {
                            r.new_addr = Some(Hex(na));
                        }
                        let mut ranges = vec![(a, *old_len)];
                        if flags & MREMAP_FIXED != 0 {
                            ranges.push((na, *new_len));
                        }
                        (
                            Call::Mremap {
                                addr: a,
                                old_len: *old_len,
                                new_len: *new_len,
                                flags: *flags,
                                new_addr: na,
                            },
                            ranges,
                            true,
                        )
                    }
                    OpKind::Munmap { addr, len }
                    | OpKind::Mprotect { addr, len, .. }
                    | OpKind::Madvise { addr, len, .. }
                    | OpKind::Mlock { addr, len, .. }
                    | OpKind::Munlock { addr, len }
                    | OpKind::Mseal { addr, len } => {
                        let a = res!(addr);
                        r.addr = Some(Hex(a));
                        let extra = match kind {
                            OpKind::Mprotect { prot, .. } => *prot,
                            OpKind::Madvise { advice, .. } => *advice,
                            OpKind::Mlock { flags, .. } => *flags,
                            _ => 0,
                        };
                        if !self.fits(&[a, *len, extra]) {
                            r.skip = Some(Skip::DoesNotFit.name().into());
                            return Ok(());
                        }
                        let a = self.word(a);
                        r.addr = Some(Hex(a));
                        let len = *len;
                        let call = match kind {
                            OpKind::Munmap { .. } => Call::Munmap { addr: a, len },
                            OpKind::Mprotect { prot, .. } => Call::Mprotect {
                                addr: a,
                                len,
                                prot: *prot,
                            },
                            OpKind::Madvise { advice, .. } => Call::Madvise {
                                addr: a,
                                len,
                                advice: *advice,
                            },
                            OpKind::Mlock { flags, .. } => Call::Mlock {
                                addr: a,
                                len,
                                flags: *flags,
                            },
                            OpKind::Munlock { .. } => Call::Munlock { addr: a, len },
                            _ => Call::Mseal { addr: a, len },
                        };
                        (call, vec![(a, len)], false)
                    }
                    _ => unreachable!("handled above"),
                };
                let call = self.word_call(call);
                if !unsafe_
                    && protected_ranges
                        .iter()
                        .any(|&(a, l)| self.protected.hits(a, self.word(l)))
                {
                    r.skip = Some(Skip::Protected.name().into());
                    return Ok(());
                }
                match exec.call(&call)? {
                    Ok(ret) => {
                        if ret_is_addr {
                            r.ret = Some(Value::String(hex(ret)));
                            bound = Some(ret);
                        } else {
                            r.ret = Some(Value::from(0));
                            bound = r.addr.map(|h| h.0);
                        }
                    }
                    Err(e) => {
                        r.err = Some(errno_name(e));
                        bound = None;
                    }
                }
            }
        }
        if let (Some(id), Some(v)) = (&op.id, bound) {
            self.ids.insert(id.clone(), v);
        }
        Ok(())
    }

    fn word_call(&self, c: Call) -> Call {
        let w = |v: u64| self.word(v);
        match c {
            Call::Mmap {
                addr,
                len,
                prot,
                flags,
                memfd,
                offset,
            } => Call::Mmap {
                addr: w(addr),
                len: w(len),
                prot: w(prot),
                flags: w(flags),
                memfd,
                offset: w(offset),
            },
            Call::Munmap { addr, len } => Call::Munmap {
                addr: w(addr),
                len: w(len),
            },
            Call::Mprotect { addr, len, prot } => Call::Mprotect {
                addr: w(addr),
                len: w(len),
                prot: w(prot),
            },
            Call::Mremap {
                addr,
                old_len,
                new_len,
                flags,
                new_addr,
            } => Call::Mremap {
                addr: w(addr),
                old_len: w(old_len),
                new_len: w(new_len),
                flags: w(flags),
                new_addr: w(new_addr),
            },
            Call::Madvise { addr, len, advice } => Call::Madvise {
                addr: w(addr),
                len: w(len),
                advice: w(advice),
            },
            Call::Mlock { addr, len, flags } => Call::Mlock {
                addr: w(addr),
                len: w(len),
                flags: w(flags),
            },
            Call::Munlock { addr, len } => Call::Munlock {
                addr: w(addr),
                len: w(len),
            },
            Call::Mseal { addr, len } => Call::Mseal {
                addr: w(addr),
                len: w(len),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doc::Hex;
    use crate::trace::parse;

    /// A scripted backend: mmap returns increasing addresses or EINVAL for len 0; the break
    /// moves only within [0x10000, 0x20000); touches below 0x1000 fault.
    #[derive(Default)]
    struct Fake {
        next: u64,
        brk: u64,
        calls: Vec<Call>,
        brk_calls: usize,
    }

    impl Executor for Fake {
        fn call(&mut self, c: &Call) -> Result<Result<u64, i32>, Fatal> {
            self.calls.push(c.clone());
            Ok(match c {
                Call::Mmap { len: 0, .. } => Err(22),
                Call::Mmap { len, .. } => {
                    self.next += 0x10000;
                    let _ = len;
                    Ok(self.next)
                }
                _ => Ok(0),
            })
        }
        fn brk(&mut self, target: u64) -> Result<u64, Fatal> {
            self.brk_calls += 1;
            if (0x10000..0x20000).contains(&target) {
                self.brk = target;
            }
            Ok(self.brk)
        }
        fn touch(&mut self, addr: u64, _w: bool, _v: u8) -> Result<Touched, Fatal> {
            Ok(if addr < 0x1000 {
                Touched::Fault {
                    signo: 11,
                    code: 1,
                    addr,
                }
            } else {
                Touched::Ok(9)
            })
        }
        fn maps(&mut self) -> Result<Vec<Vma>, Fatal> {
            Ok(vec![vma(0x5000, 0x6000, "[stack]")])
        }
        fn smaps(&mut self) -> Result<Vec<Smaps>, Fatal> {
            Ok(vec![])
        }
    }

    fn vma(s: u64, e: u64, name: &str) -> Vma {
        Vma {
            start: Hex(s),
            end: Hex(e),
            perms: "rw-p".into(),
            offset: Hex(0),
            dev: "00:00".into(),
            inode: Int(0),
            name: name.into(),
        }
    }

    fn ctx(is_32bit: bool) -> RunContext {
        RunContext {
            before: vec![vma(0x5000, 0x6000, "[stack]")],
            brk0: 0x10000,
            start_brk: 0x10000,
            is_32bit,
            tags: vec!["x86_64".into()],
            snapshot_each: false,
        }
    }

    fn run(text: &str, is_32bit: bool) -> (RunOutput, Fake) {
        let t = parse(text).unwrap();
        let mut f = Fake {
            brk: 0x10000,
            ..Default::default()
        };
        let out = run_ops(&t, &mut f, &ctx(is_32bit));
        (out, f)
    }

    #[test]
    fn failed_ops_keep_ids_and_unbound_ids_skip() {
        let (out, f) = run(
            concat!(
                "{\"op\":\"mmap\",\"len\":4096,\"prot\":\"rw\",\"flags\":[\"private\",\"anonymous\"],\"id\":\"a\"}\n",
                "{\"op\":\"mmap\",\"len\":0,\"prot\":\"rw\",\"flags\":[\"private\",\"anonymous\"],\"id\":\"a\"}\n",
                "{\"op\":\"munmap\",\"addr\":{\"ref\":\"a\",\"pages\":1},\"len\":4096}\n",
                "{\"op\":\"mmap\",\"len\":0,\"prot\":\"rw\",\"flags\":[\"private\",\"anonymous\"],\"id\":\"u\"}\n",
                "{\"op\":\"munmap\",\"addr\":{\"ref\":\"u\"},\"len\":4096}\n",
            ),
            false,
        );
        let r = &out.results;
        assert_eq!(r[1].err.as_deref(), Some("EINVAL"));
        assert_eq!(r[2].addr, Some(Hex(0x11000)));
        assert_eq!(r[4].skip.as_deref(), Some("unresolved_ref"));
        assert_eq!(r[4].addr, None);
        assert_eq!(f.calls.len(), 4, "the skipped op is not executed");
    }

    #[test]
    fn brk_fields_and_specials() {
        let (out, f) = run(
            concat!(
                "{\"op\":\"brk\",\"delta\":4096,\"id\":\"b\"}\n",
                "{\"op\":\"brk\",\"addr\":\"0x90000\",\"id\":\"b\"}\n",
                "{\"op\":\"let\",\"addr\":{\"ref\":\"$brk\",\"off\":1},\"id\":\"x\"}\n",
                "{\"op\":\"query\",\"addr\":{\"ref\":\"b\"},\"expect\":{\"addr\":\"0x11000\"}}\n",
            ),
            false,
        );
        let r = &out.results;
        assert_eq!(
            (r[0].old, r[0].target),
            (Some(Hex(0x10000)), Some(Hex(0x11000)))
        );
        assert_eq!(r[0].ret, Some(Value::String("0x11000".into())));
        assert_eq!(r[0].addr, None);
        assert_eq!(
            r[1].ret,
            Some(Value::String("0x11000".into())),
            "refused brk returns the old break"
        );
        assert_eq!(r[2].ret, Some(Value::String("0x11001".into())));
        assert!(out.expect_failures.is_empty(), "{:?}", out.expect_failures);
        assert!(f.brk_calls >= 5);
    }

    #[test]
    fn self_protection_and_pointer_size() {
        let (out, f) = run(
            concat!(
                "{\"op\":\"munmap\",\"addr\":\"0x4fff\",\"len\":2}\n",
                "{\"op\":\"munmap\",\"addr\":\"0x4000\",\"len\":4096}\n",
                "{\"op\":\"touch\",\"addr\":\"0x5008\",\"mode\":\"w\"}\n",
                "{\"op\":\"touch\",\"addr\":\"0x5008\",\"mode\":\"r\"}\n",
                "{\"op\":\"touch\",\"addr\":\"0x5008\",\"mode\":\"w\",\"unsafe\":true}\n",
                "{\"op\":\"mmap\",\"addr\":\"0x5000\",\"len\":4096,\"prot\":\"rw\",\"flags\":[\"fixed_noreplace\",\"fixed\",\"private\",\"anon\"]}\n",
                "{\"op\":\"mremap\",\"addr\":\"0x9000\",\"old_len\":4096,\"new_len\":4096,\"flags\":[\"maymove\",\"fixed\"],\"new_addr\":\"0x5000\"}\n",
                "{\"op\":\"munmap\",\"addr\":\"0x100000000\",\"len\":4096}\n",
            ),
            false,
        );
        let skips: Vec<_> = out.results.iter().map(|r| r.skip.as_deref()).collect();
        assert_eq!(
            skips,
            [
                Some("protected"),
                None,
                Some("protected"),
                None,
                None,
                None,
                Some("protected"),
                None
            ]
        );
        assert_eq!(out.results[3].val_hidden.as_deref(), Some("baseline"));
        assert_eq!(out.results[3].val, None);
        assert_eq!(f.calls.len(), 3);
        let (out32, _) = run("{\"op\":\"munmap\",\"addr\":\"0x100000000\",\"len\":4096}\n{\"op\":\"munmap\",\"addr\":\"0xfffff000\",\"len\":\"-1\"}\n", true);
        assert_eq!(
            out32.results[0].skip.as_deref(),
            Some("does_not_fit_in_pointer")
        );
        assert_eq!(
            out32.results[1].skip.as_deref(),
            Some("does_not_fit_in_pointer")
        );
    }

    #[test]
    fn touch_with_len_stops_at_the_first_fault() {
        let (out, _) = run("{\"op\":\"touch\",\"addr\":\"0x10\",\"mode\":\"r\",\"len\":8192}\n{\"op\":\"touch\",\"addr\":\"0x2010\",\"mode\":\"r\"}\n{\"op\":\"touch\",\"addr\":\"0x20\",\"mode\":\"r\",\"len\":0}\n", false);
        let r = &out.results;
        assert_eq!(
            (r[0].fault.as_deref(), r[0].code.as_deref()),
            (Some("SIGSEGV"), Some("SEGV_MAPERR"))
        );
        assert_eq!(r[0].fault_addr, Some(Hex(0x10)));
        assert_eq!(r[0].len, Some(Int(8192)));
        assert_eq!(r[1].val, Some(Int(9)));
        assert_eq!(
            r[2].fault.as_deref(),
            Some("SIGSEGV"),
            "len 0 still touches addr"
        );
    }
}
