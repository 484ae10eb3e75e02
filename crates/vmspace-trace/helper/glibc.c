/* The glibc Linux-backend helper: the same syscall server as helper/x86_64.rs and
 * helper/i386.c, built as an ordinary dynamically linked PIE (`gcc [-m32] -fPIE -pie`), so that
 * runs start from the layout of a typical program: the executable at ELF_ET_DYN_BASE, ld.so,
 * libc, the vDSO. Protocol: eight little-endian u64 words per request on fd 0, five per reply
 * on fd 1 (see src/linux.rs). After startup it calls no libc function that allocates or buffers:
 * only syscall(2), read(2), write(2) wrappers and sigaction/sigaltstack once before serving. */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <sys/syscall.h>
#include <ucontext.h>
#include <unistd.h>

typedef uint64_t u64;

enum { REQ_SYSCALL = 1, REQ_TOUCH = 2, REQ_READ_FILE = 3, REQ_MEMFD = 4, REQ_DROP_PRIV = 5,
       REQ_EXIT = 6, REQ_MMAP = 7 };

/* Touch probes: the labelled instruction may fault; the handler resumes at the fault label,
 * which returns 0x100. */
#if defined(__x86_64__)
__asm__(".text\n"
        ".globl vmspace_touch_read\n"
        "vmspace_touch_read:\n"
        ".globl vmspace_touch_read_insn\n"
        "vmspace_touch_read_insn:\n"
        "  movzbl (%rdi), %eax\n"
        "  ret\n"
        ".globl vmspace_touch_write\n"
        "vmspace_touch_write:\n"
        ".globl vmspace_touch_write_insn\n"
        "vmspace_touch_write_insn:\n"
        "  movb %sil, (%rdi)\n"
        "  xor %eax, %eax\n"
        "  ret\n"
        ".globl vmspace_touch_fault\n"
        "vmspace_touch_fault:\n"
        "  mov $0x100, %eax\n"
        "  ret\n");
#define PC(uc) ((uc)->uc_mcontext.gregs[REG_RIP])
#else
__asm__(".text\n"
        ".globl vmspace_touch_read\n"
        "vmspace_touch_read:\n"
        "  mov 4(%esp), %ecx\n"
        ".globl vmspace_touch_read_insn\n"
        "vmspace_touch_read_insn:\n"
        "  movzbl (%ecx), %eax\n"
        "  ret\n"
        ".globl vmspace_touch_write\n"
        "vmspace_touch_write:\n"
        "  mov 4(%esp), %ecx\n"
        "  mov 8(%esp), %edx\n"
        ".globl vmspace_touch_write_insn\n"
        "vmspace_touch_write_insn:\n"
        "  movb %dl, (%ecx)\n"
        "  xor %eax, %eax\n"
        "  ret\n"
        ".globl vmspace_touch_fault\n"
        "vmspace_touch_fault:\n"
        "  mov $0x100, %eax\n"
        "  ret\n");
#define PC(uc) ((uc)->uc_mcontext.gregs[REG_EIP])
#endif

unsigned long vmspace_touch_read(unsigned long addr);
unsigned long vmspace_touch_write(unsigned long addr, unsigned long value);
extern char vmspace_touch_read_insn[], vmspace_touch_write_insn[], vmspace_touch_fault[];

static volatile long fault_signo, fault_code;
static volatile unsigned long fault_addr;
static char alt_stack[65536];
static char file_buf[65536];

static void on_fault(int signo, siginfo_t *info, void *ctx) {
    ucontext_t *uc = ctx;
    unsigned long pc = (unsigned long)PC(uc);
    if (pc == (unsigned long)vmspace_touch_read_insn ||
        pc == (unsigned long)vmspace_touch_write_insn) {
        fault_signo = signo;
        fault_code = info->si_code;
        fault_addr = (unsigned long)info->si_addr;
        PC(uc) = (unsigned long)vmspace_touch_fault;
        return;
    }
    syscall(SYS_exit_group, 128 + signo);
}

static int read_exact(void *buf, unsigned long len) {
    unsigned long done = 0;
    while (done < len) {
        long r = syscall(SYS_read, 0, (char *)buf + done, len - done);
        if (r == -1 && errno == EINTR) continue;
        if (r <= 0) return 0;
        done += (unsigned long)r;
    }
    return 1;
}

static void write_all(const void *buf, unsigned long len) {
    unsigned long done = 0;
    while (done < len) {
        long r = syscall(SYS_write, 1, (const char *)buf + done, len - done);
        if (r <= 0) syscall(SYS_exit_group, 3);
        done += (unsigned long)r;
    }
}

/* syscall(2) returns -1 and sets errno; the protocol wants the raw -errno. */
static u64 raw(long r) { return r == -1 ? (u64)(int64_t)-errno : (u64)(unsigned long)r; }

static void stream_file(u64 which) {
    const char *path = which == 0   ? "/proc/self/maps"
                       : which == 1 ? "/proc/self/smaps"
                       : which == 2 ? "/proc/self/stat"
                                    : "/proc/self/auxv";
    long fd = syscall(SYS_openat, -100 /* AT_FDCWD */, path, 02000000 /* O_CLOEXEC */, 0);
    if (fd >= 0) {
        for (;;) {
            long r = syscall(SYS_read, fd, file_buf, sizeof file_buf);
            if (r <= 0) break;
            u64 len = (u64)r;
            write_all(&len, 8);
            write_all(file_buf, (unsigned long)r);
        }
        syscall(SYS_close, fd);
    }
    u64 end = 0;
    write_all(&end, 8);
}

int main(void) {
    stack_t ss = {.ss_sp = alt_stack, .ss_flags = 0, .ss_size = sizeof alt_stack};
    sigaltstack(&ss, 0);
    struct sigaction act = {0};
    act.sa_sigaction = on_fault;
    act.sa_flags = SA_SIGINFO | SA_ONSTACK | SA_NODEFER;
    sigaction(SIGSEGV, &act, 0);
    sigaction(SIGBUS, &act, 0);
    u64 req[8];
    for (;;) {
        if (!read_exact(req, sizeof req)) return 0;
        u64 out[5] = {0, 0, 0, 0, 0};
        switch ((int)req[0]) {
        case REQ_SYSCALL:
            out[0] = raw(syscall((long)req[1], (unsigned long)req[2], (unsigned long)req[3],
                                 (unsigned long)req[4], (unsigned long)req[5],
                                 (unsigned long)req[6], (unsigned long)req[7]));
            break;
        case REQ_MMAP: {
#if defined(__x86_64__)
            out[0] = raw(syscall(SYS_mmap, (unsigned long)req[1], (unsigned long)req[2],
                                 (unsigned long)req[3], (unsigned long)req[4], (long)req[5],
                                 (unsigned long)req[6]));
#else
            /* old_mmap(struct mmap_arg_struct *): byte offsets, EINVAL if unaligned. */
            unsigned long args[6] = {(unsigned long)req[1], (unsigned long)req[2],
                                     (unsigned long)req[3], (unsigned long)req[4],
                                     (unsigned long)req[5], (unsigned long)req[6]};
            out[0] = raw(syscall(SYS_mmap, args));
#endif
            break;
        }
        case REQ_TOUCH: {
            fault_signo = 0;
            unsigned long v = req[2] ? vmspace_touch_write((unsigned long)req[1], (unsigned long)req[3])
                                     : vmspace_touch_read((unsigned long)req[1]);
            if (v == 0x100) {
                out[0] = 1;
                out[2] = (u64)fault_signo;
                out[3] = (u64)(int64_t)fault_code;
                out[4] = (u64)fault_addr;
            } else {
                out[1] = v & 0xff;
            }
            break;
        }
        case REQ_READ_FILE:
            stream_file(req[1]);
            continue;
        case REQ_MEMFD: {
            long fd = syscall(SYS_memfd_create, "trace", 0);
            if (fd >= 0) {
                long r = syscall(SYS_ftruncate, fd, (off_t)req[1]);
                out[0] = r < 0 ? raw(r) : (u64)fd;
            } else {
                out[0] = raw(fd);
            }
            break;
        }
        case REQ_DROP_PRIV: {
            long id = (long)req[1];
#if defined(__x86_64__)
            long r = syscall(SYS_setgroups, 0, 0);
            if (r == 0) r = syscall(SYS_setresgid, id, id, id);
            if (r == 0) r = syscall(SYS_setresuid, id, id, id);
#else
            long r = syscall(SYS_setgroups32, 0, 0);
            if (r == 0) r = syscall(SYS_setresgid32, id, id, id);
            if (r == 0) r = syscall(SYS_setresuid32, id, id, id);
#endif
            if (r == 0) r = syscall(SYS_prctl, 4 /* PR_SET_DUMPABLE */, 1);
            out[0] = raw(r);
            break;
        }
        case REQ_EXIT:
            syscall(SYS_exit_group, 0);
            break;
        default:
            out[0] = (u64)(int64_t)-22;
        }
        write_all(out, sizeof out);
    }
}
