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
#include <stdlib.h>
#include <sys/mman.h>
#include "../support/start_state.h"

int main(int argc, char **argv) {
    if (argc < 4) return 2;
    unsigned long heap = strtoul(argv[1], 0, 0), stack = strtoul(argv[2], 0, 0);
    int growsdown = strcmp(argv[3], "growsdown") == 0;
    unsigned long cur = report_start_state();
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
