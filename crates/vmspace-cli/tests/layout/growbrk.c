/* Grows the program break with the raw brk syscall until refused (vmspace layout cross-check).
 * Prints: its rlimits, brk0, its /proc/self/stat and /proc/self/maps before growing, then
 * "final <hex>" -- the highest break Linux granted. With the argument "mmap" it instead finds
 * the largest single mmap(NULL, len, PROT_NONE, MAP_PRIVATE|MAP_ANONYMOUS|MAP_NORESERVE) by a
 * binary search over page counts and prints "mmap <len hex> <addr hex>".
 * Uses no malloc (static buffers only). */
#define _GNU_SOURCE
#define _FILE_OFFSET_BITS 64
#include <sys/mman.h>
#include "../support/start_state.h"

int main(int argc, char **argv) {
    unsigned long cur = report_start_state();
    if (argc > 1 && strcmp(argv[1], "mmap") == 0) {
        unsigned long long lo = 0, hi = (sizeof(long) == 4 ? (1ULL << 32) : (1ULL << 47)) / 4096 + 1;
        while (hi - lo > 1) {
            unsigned long long mid = lo + (hi - lo) / 2;
            void *p = mmap(NULL, (size_t)(mid * 4096), PROT_NONE,
                           MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
            if (p != MAP_FAILED) {
                munmap(p, (size_t)(mid * 4096));
                lo = mid;
            } else {
                hi = mid;
            }
        }
        unsigned long at = 0;
        if (lo) {
            void *p = mmap(NULL, (size_t)(lo * 4096), PROT_NONE,
                           MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
            at = p == MAP_FAILED ? 0 : (unsigned long)p;
        }
        snprintf(line, sizeof line, "mmap %llx %lx\n", lo * 4096, at);
        out(line);
        return 0;
    }
    /* Same search as the model's: largest power-of-two step first; keep a step while it
     * succeeds, halve it when refused, stop below one page. */
    unsigned long step = 1UL << (sizeof(long) * 8 - 2);
    unsigned long calls = 0;
    while (step >= 4096) {
        unsigned long want = cur + step;
        calls++;
        if (want > cur && raw_brk(want) == want) cur = want;
        else step >>= 1;
    }
    snprintf(line, sizeof line, "calls %lu\nfinal %lx\n", calls, cur);
    out(line);
    return 0;
}
