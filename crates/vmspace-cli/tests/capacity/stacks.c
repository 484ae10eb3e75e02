/* Places thread stacks until Linux refuses (vmspace capacity cross-check).
 * Usage: stacks HEAP_BYTES STACK_BYTES stack|growsdown
 * Prints its rlimits, brk0, /proc/self/stat and /proc/self/maps, then grows the break by
 * HEAP_BYTES with the raw brk syscall ("heap ok" / "heap refused"), then maps stacks of
 * STACK_BYTES one after the other with hint-less mmap until refused: glibc-style
 * (MAP_STACK, read-write, the lowest page made PROT_NONE as the guard; a refused guard split
 * unmaps the stack and stops, as pthread_create fails) or MAP_GROWSDOWN. Each placed stack
 * prints "s <base hex>"; the end "done <count>". No malloc (static buffers only). */
#define _GNU_SOURCE
#define _FILE_OFFSET_BITS 64
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
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

int main(int argc, char **argv) {
    if (argc < 4) return 2;
    unsigned long heap = strtoul(argv[1], 0, 0), stack = strtoul(argv[2], 0, 0);
    int growsdown = strcmp(argv[3], "growsdown") == 0;
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
    if (heap && raw_brk(cur + heap) != cur + heap) {
        out("heap refused\n");
        return 0;
    }
    out("heap ok\n");
    unsigned long n = 0;
    int flags = MAP_PRIVATE | MAP_ANONYMOUS | (growsdown ? MAP_GROWSDOWN : MAP_STACK);
    for (;;) {
        void *p = mmap(NULL, stack, PROT_READ | PROT_WRITE, flags, -1, 0);
        if (p == MAP_FAILED) break;
        if (!growsdown && stack > 4096 && mprotect(p, 4096, PROT_NONE) != 0) {
            munmap(p, stack);
            break;
        }
        snprintf(line, sizeof line, "s %lx\n", (unsigned long)p);
        out(line);
        n++;
    }
    snprintf(line, sizeof line, "done %lu\n", n);
    out(line);
    return 0;
}
