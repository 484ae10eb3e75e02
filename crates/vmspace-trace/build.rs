//! Builds the Linux-backend helpers into OUT_DIR: the x86-64 one from `helper/x86_64.rs` with
//! `$RUSTC` (no_std, no libc, static), the i386 one from `helper/i386.c` with `gcc -m32`
//! (skipped with a recorded reason when no 32-bit C toolchain is installed).

use std::path::PathBuf;
use std::process::Command;

fn main() {
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("OUT_DIR"));
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    println!("cargo:rerun-if-changed=helper/x86_64.rs");
    println!("cargo:rerun-if-changed=helper/i386.c");
    println!("cargo:rerun-if-env-changed=CC_I386");

    let h64 = out.join("helper-x86_64");
    let status = Command::new(&rustc)
        .args([
            "--edition",
            "2021",
            "-C",
            "opt-level=2",
            "-C",
            "panic=abort",
            "-C",
            "debuginfo=0",
        ])
        .args([
            "-C",
            "relocation-model=static",
            "-C",
            "link-arg=-nostartfiles",
        ])
        .args([
            "-C",
            "link-arg=-nostdlib",
            "-C",
            "link-arg=-static",
            "-C",
            "strip=symbols",
        ])
        .args([
            "--crate-type",
            "bin",
            "--crate-name",
            "vmspace_trace_helper",
        ])
        .arg("-o")
        .arg(&h64)
        .arg("helper/x86_64.rs")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .status()
        .expect("running rustc for the x86-64 helper");
    assert!(status.success(), "building the x86-64 trace helper failed");

    let h32 = out.join("helper-i386");
    let cc = std::env::var("CC_I386").unwrap_or_else(|_| "gcc".into());
    let built = Command::new(&cc)
        .args([
            "-m32",
            "-static",
            "-nostdlib",
            "-ffreestanding",
            "-fno-builtin",
            "-fno-pic",
            "-no-pie",
        ])
        .args(["-fno-stack-protector", "-O2", "-s", "-o"])
        .arg(&h32)
        .arg("helper/i386.c")
        .output();
    let reason = match built {
        Ok(o) if o.status.success() => String::new(),
        Ok(o) => format!(
            "`{cc} -m32` failed (install gcc-multilib): {}",
            String::from_utf8_lossy(&o.stderr).trim()
        ),
        Err(e) => format!("`{cc}` not runnable (install gcc-multilib): {e}"),
    };
    if !reason.is_empty() {
        println!(
            "cargo:warning=i386 trace helper not built: {}",
            reason.lines().next().unwrap_or("")
        );
        std::fs::write(&h32, b"").expect("writing the empty i386 helper");
    }
    std::fs::write(out.join("helper-i386.why"), reason).expect("writing helper-i386.why");

    // Dynamically linked glibc PIE helpers (optional: the `pie` build of the Linux backend).
    println!("cargo:rerun-if-changed=helper/glibc.c");
    for (name, m32) in [("x86_64", false), ("i386", true)] {
        let target = out.join(format!("helper-{name}-pie"));
        let mut c = Command::new(&cc);
        if m32 {
            c.arg("-m32");
        }
        let built = c
            .args(["-O2", "-fPIE", "-pie", "-s", "-o"])
            .arg(&target)
            .arg("helper/glibc.c")
            .output();
        let reason = match built {
            Ok(o) if o.status.success() => String::new(),
            Ok(o) => format!(
                "`{cc}` could not build the glibc helper: {}",
                String::from_utf8_lossy(&o.stderr).trim()
            ),
            Err(e) => format!("`{cc}` not runnable: {e}"),
        };
        if !reason.is_empty() {
            std::fs::write(&target, b"").expect("writing an empty pie helper");
        }
        std::fs::write(out.join(format!("helper-{name}-pie.why")), reason)
            .expect("writing the reason");
    }
}
