/* The starting state a Linux cross-check program reports before it acts, shared by the
 * helpers under tests/ (layout/growbrk.c, capacity/stacks.c): its rlimits, the first break,
 * /proc/self/stat and /proc/self/maps, in the line format the Rust side reads
 * ("rlimit_stack N", "brk0 HEX", "stat\n<line>\nend", "maps\n<lines>\nend").
 * No malloc: static buffers only, so the process's own heap stays where exec put it. */
#ifndef VMSPACE_START_STATE_H
#define VMSPACE_START_STATE_H
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

static char buf[65536];
static char line[256];

static void out(const char *s) { write(1, s, strlen(s)); }

static void dump(const char *path, const char *tag) {
    int fd = open(path, O_RDONLY);
    long n, total = 0;
    if (fd < 0) return;
    while ((n = read(fd, buf + total, sizeof buf - 1 - total)) > 0) total += n;
    close(fd);
    buf[total] = 0;
    out(tag);
    out(buf);
    out("end\n");
}

static unsigned long raw_brk(unsigned long a) { return (unsigned long)syscall(SYS_brk, a); }

/* Prints the starting state; returns the first break. */
static unsigned long report_start_state(void) {
    struct rlimit r;
    int res[3] = {RLIMIT_STACK, RLIMIT_DATA, RLIMIT_AS};
    const char *nm[3] = {"stack", "data", "as"};
    for (int i = 0; i < 3; i++) {
        getrlimit(res[i], &r);
        snprintf(line, sizeof line, "rlimit_%s %llu\n", nm[i], (unsigned long long)r.rlim_cur);
        out(line);
    }
    unsigned long cur = raw_brk(0);
    snprintf(line, sizeof line, "brk0 %lx\n", cur);
    out(line);
    dump("/proc/self/stat", "stat\n");
    dump("/proc/self/maps", "maps\n");
    return cur;
}
#endif
