/* The i386 Linux-backend helper: a static, allocation-free syscall server.
 *
 * The Rust toolchain here has no 32-bit target, so this one helper is C, built by build.rs
 * with `gcc -m32 -static -nostdlib -ffreestanding`. It speaks the same protocol as
 * helper/x86_64.rs (eight little-endian u64 words per request on fd 0, five per reply on
 * fd 1; see src/linux.rs) and uses no libc at all: raw `int $0x80` syscalls only. */

typedef unsigned int u32;
typedef int i32;
typedef unsigned long long u64;

enum { REQ_SYSCALL = 1, REQ_TOUCH = 2, REQ_READ_FILE = 3, REQ_MEMFD = 4, REQ_DROP_PRIV = 5,
       REQ_EXIT = 6, REQ_MMAP = 7 };

static inline u32 sys6(u32 nr, u32 a, u32 b, u32 c, u32 d, u32 e, u32 f) {
    u32 ret;
    /* ebp cannot be named as an operand: pass the sixth argument through memory. */
    u32 args[3] = {a, b, f};
    u32 *p = args;
    __asm__ volatile(
        "push %%ebp\n\t"
        "push %%ebx\n\t"
        "mov 8(%%ecx), %%ebp\n\t"
        "mov 0(%%ecx), %%ebx\n\t"
        "mov 4(%%ecx), %%ecx\n\t"
        "int $0x80\n\t"
        "pop %%ebx\n\t"
        "pop %%ebp\n\t"
        : "=a"(ret), "+c"(p)
        : "a"(nr), "d"(c), "S"(d), "D"(e)
        : "memory");
    return ret;
}

static u32 sys3(u32 nr, u32 a, u32 b, u32 c) { return sys6(nr, a, b, c, 0, 0, 0); }

static void sys_exit(u32 code) {
    for (;;) sys3(252, code, 0, 0);
}

static int read_exact(void *buf, u32 len) {
    u32 done = 0;
    while (done < len) {
        i32 r = (i32)sys3(3, 0, (u32)buf + done, len - done);
        if (r == -4) continue;
        if (r <= 0) return 0;
        done += (u32)r;
    }
    return 1;
}

static void write_all(const void *buf, u32 len) {
    u32 done = 0;
    while (done < len) {
        i32 r = (i32)sys3(4, 1, (u32)buf + done, len - done);
        if (r == -4) continue;
        if (r <= 0) sys_exit(3);
        done += (u32)r;
    }
}

/* Touch probes (see the x86-64 helper): the first instruction may fault; the handler then
 * resumes at vmspace_touch_fault, which returns 0x100. Arguments are on the stack (cdecl). */
__asm__(
    ".text\n"
    ".globl vmspace_touch_read\n"
    "vmspace_touch_read:\n"
    "  mov 4(%esp), %ecx\n"
    "vmspace_touch_read_insn:\n"
    "  movzbl (%ecx), %eax\n"
    "  ret\n"
    ".globl vmspace_touch_write\n"
    "vmspace_touch_write:\n"
    "  mov 4(%esp), %ecx\n"
    "  mov 8(%esp), %edx\n"
    "vmspace_touch_write_insn:\n"
    "  movb %dl, (%ecx)\n"
    "  xor %eax, %eax\n"
    "  ret\n"
    "vmspace_touch_fault:\n"
    "  mov $0x100, %eax\n"
    "  ret\n"
    "vmspace_restorer:\n"
    "  mov $173, %eax\n"
    "  int $0x80\n"
    "  ud2\n");

u32 vmspace_touch_read(u32 addr);
u32 vmspace_touch_write(u32 addr, u32 value);
extern char vmspace_touch_read_insn[], vmspace_touch_write_insn[], vmspace_touch_fault[],
    vmspace_restorer[];

static volatile u32 fault_signo, fault_code, fault_addr;
static char alt_stack[65536];
static char file_buf[65536];

struct ksigaction {
    u32 handler;
    u32 flags;
    u32 restorer;
    u32 mask[2];
};

__attribute__((force_align_arg_pointer))
static void on_fault(int signo, char *info, char *uctx) {
    /* ucontext: uc_flags, uc_link, uc_stack (12 bytes), then sigcontext; eip is its
     * 15th word (gs fs es ds edi esi ebp esp ebx edx ecx eax trapno err eip). siginfo:
     * si_signo, si_errno, si_code, si_addr at 12. */
    u32 *eip = (u32 *)(uctx + 20 + 14 * 4);
    if (*eip == (u32)vmspace_touch_read_insn || *eip == (u32)vmspace_touch_write_insn) {
        fault_signo = (u32)signo;
        fault_code = *(u32 *)(info + 8);
        fault_addr = *(u32 *)(info + 12);
        *eip = (u32)vmspace_touch_fault;
        return;
    }
    sys_exit(128 + (u32)signo);
}

static void install_handlers(void) {
    u32 ss[3] = {(u32)alt_stack, 0, sizeof alt_stack};
    sys3(186, (u32)ss, 0, 0);
    struct ksigaction act = {(u32)on_fault, 4 | 0x08000000 | 0x04000000 | 0x40000000,
                             (u32)vmspace_restorer, {0, 0}};
    sys6(174, 11, (u32)&act, 0, 8, 0, 0);
    sys6(174, 7, (u32)&act, 0, 8, 0, 0);
}

static void stream_file(u32 which) {
    const char *path = which == 0   ? "/proc/self/maps"
                       : which == 1 ? "/proc/self/smaps"
                       : which == 2 ? "/proc/self/stat"
                                    : "/proc/self/auxv";
    i32 fd = (i32)sys3(5, (u32)path, 0x80000 /* O_CLOEXEC */, 0);
    if (fd >= 0) {
        for (;;) {
            i32 r = (i32)sys3(3, (u32)fd, (u32)file_buf, sizeof file_buf);
            if (r == -4) continue;
            if (r <= 0) break;
            u64 len = (u32)r;
            write_all(&len, 8);
            write_all(file_buf, (u32)r);
        }
        sys3(6, (u32)fd, 0, 0);
    }
    u64 end = 0;
    write_all(&end, 8);
}

__attribute__((force_align_arg_pointer, noreturn))
void vmspace_helper_main(void) {
    install_handlers();
    u64 req[8];
    for (;;) {
        if (!read_exact(req, sizeof req)) sys_exit(0);
        u64 out[5] = {0, 0, 0, 0, 0};
        switch ((u32)req[0]) {
        case REQ_SYSCALL:
            out[0] = sys6((u32)req[1], (u32)req[2], (u32)req[3], (u32)req[4], (u32)req[5],
                          (u32)req[6], (u32)req[7]);
            break;
        case REQ_MMAP: {
            /* old_mmap(struct mmap_arg_struct *): keeps byte offsets (EINVAL if unaligned). */
            u32 args[6] = {(u32)req[1], (u32)req[2], (u32)req[3], (u32)req[4], (u32)req[5],
                           (u32)req[6]};
            out[0] = sys3(90, (u32)args, 0, 0);
            break;
        }
        case REQ_TOUCH: {
            fault_signo = 0;
            u32 v = req[2] ? vmspace_touch_write((u32)req[1], (u32)req[3])
                           : vmspace_touch_read((u32)req[1]);
            if (v == 0x100) {
                out[0] = 1;
                out[2] = fault_signo;
                out[3] = (u64)(long long)(i32)fault_code;
                out[4] = fault_addr;
            } else {
                out[1] = v & 0xff;
            }
            break;
        }
        case REQ_READ_FILE:
            stream_file((u32)req[1]);
            continue;
        case REQ_MEMFD: {
            i32 fd = (i32)sys3(356, (u32)"trace", 0, 0);
            if (fd >= 0) {
                /* ftruncate64(fd, low, high) */
                i32 r = (i32)sys3(194, (u32)fd, (u32)req[1], (u32)(req[1] >> 32));
                out[0] = r < 0 ? (u32)r : (u32)fd;
            } else {
                out[0] = (u32)fd;
            }
            break;
        }
        case REQ_DROP_PRIV: {
            u32 id = (u32)req[1];
            i32 r = (i32)sys3(206, 0, 0, 0);              /* setgroups32(0, NULL) */
            if (r == 0) r = (i32)sys3(210, id, id, id); /* setresgid32 */
            if (r == 0) r = (i32)sys3(208, id, id, id); /* setresuid32 */
            if (r == 0) r = (i32)sys3(172, 4, 1, 0);    /* prctl(PR_SET_DUMPABLE, 1) */
            out[0] = (u32)r;
            break;
        }
        case REQ_EXIT:
            sys_exit(0);
            break;
        default:
            out[0] = (u32)-22;
        }
        write_all(out, sizeof out);
    }
}

__asm__(
    ".globl _start\n"
    "_start:\n"
    "  xor %ebp, %ebp\n"
    "  and $-16, %esp\n"
    "  call vmspace_helper_main\n"
    "  ud2\n");
