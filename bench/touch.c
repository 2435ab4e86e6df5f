/* SPDX-License-Identifier: MIT */
/*
 * baton-bench-touch [--pages N] [--runs R]: what a first touch of a page
 * costs on this machine, the cost a standby's warm-up (src/standby.c)
 * takes off an upgrade. Per run, N pages each (default 256, 5 runs):
 *
 *   - the first write of a fresh anonymous page (a fault and a zeroed page);
 *   - the first read of a page of a file in the page cache (a fault, which
 *     maps its neighbours too: fault-around);
 *   - the first read of a page already mapped (MADV_POPULATE_READ), which
 *     on a virtual machine with shadow page tables still costs an exit;
 *   - the first write of an anonymous page populated already
 *     (MADV_POPULATE_WRITE), and of one populated and then read once, after
 *     100 ms asleep: what a standby's warm-up leaves to pay;
 *   - a written page written again after 100 ms asleep: what a warmed
 *     copy pays once it wakes.
 *
 * Prints the median over the runs of each run's mean, in microseconds per
 * page. Timings, never asserted: tests assert behaviour.
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#ifndef MADV_POPULATE_READ
#define MADV_POPULATE_READ  22
#define MADV_POPULATE_WRITE 23
#endif

static double now_us(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e6 + ts.tv_nsec / 1e3;
}

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(double *v, int n)
{
    qsort(v, n, sizeof(*v), cmp);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

/* Microseconds per page to touch n pages from p (write: store a byte). */
static double touch(volatile unsigned char *p, size_t n, size_t page, int write)
{
    double t = now_us();
    unsigned sum = 0;

    for (size_t i = 0; i < n; i++) {
        if (write)
            p[i * page] = 1;
        else
            sum += p[i * page];
    }
    (void)sum;
    return (now_us() - t) / n;
}

int main(int argc, char **argv)
{
    size_t page = (size_t)sysconf(_SC_PAGESIZE), n = 256;
    int runs = 5;
    char path[] = "/tmp/baton-bench-touch-XXXXXX";
    double anon[64], file[64], mapped[64], again[64], pop[64], popread[64];
    unsigned char *buf;
    int fd;

    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--pages"))
            n = (size_t)atol(argv[i + 1]);
        else if (!strcmp(argv[i], "--runs"))
            runs = atoi(argv[i + 1]);
    }
    if (n < 1 || n > 65536 || runs < 1 || runs > 64) {
        fprintf(stderr, "usage: %s [--pages 1..65536] [--runs 1..64]\n", argv[0]);
        return 2;
    }
    /* A file of n pages, in the page cache (just written). */
    fd = mkstemp(path);
    buf = calloc(n, page);
    if (fd < 0 || !buf || write(fd, buf, n * page) != (ssize_t)(n * page)) {
        perror("baton-bench-touch: the test file");
        return 1;
    }
    unlink(path);
    for (int r = 0; r < runs; r++) {
        unsigned char *a =
            mmap(NULL, n * page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        unsigned char *f = mmap(NULL, n * page, PROT_READ, MAP_PRIVATE, fd, 0);
        unsigned char *m = mmap(NULL, n * page, PROT_READ, MAP_PRIVATE, fd, 0);
        unsigned char *pw =
            mmap(NULL, n * page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        unsigned char *pr =
            mmap(NULL, n * page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (a == MAP_FAILED || f == MAP_FAILED || m == MAP_FAILED || pw == MAP_FAILED ||
            pr == MAP_FAILED) {
            perror("baton-bench-touch: mmap");
            return 1;
        }
        anon[r] = touch(a, n, page, 1);
        file[r] = touch(f, n, page, 0);
        if (madvise(m, n * page, MADV_POPULATE_READ) < 0) {
            perror("baton-bench-touch: MADV_POPULATE_READ");
            return 1;
        }
        mapped[r] = touch(m, n, page, 0);
        if (madvise(pw, n * page, MADV_POPULATE_WRITE) < 0 ||
            madvise(pr, n * page, MADV_POPULATE_WRITE) < 0) {
            perror("baton-bench-touch: MADV_POPULATE_WRITE");
            return 1;
        }
        touch(pr, n, page, 0);
        usleep(100 * 1000);
        again[r] = touch(a, n, page, 1);
        pop[r] = touch(pw, n, page, 1);
        popread[r] = touch(pr, n, page, 1);
        munmap(pw, n * page);
        munmap(pr, n * page);
        munmap(a, n * page);
        munmap(f, n * page);
        munmap(m, n * page);
    }
    printf("touch: the first touch of a page, %zu pages, median of %d runs' means, us per page\n",
           n, runs);
    printf("  first write of a fresh anonymous page           %7.2f\n", median(anon, runs));
    printf("  first read of a file page in the page cache     %7.2f\n", median(file, runs));
    printf("  first read of a page mapped already (populated) %7.2f\n", median(mapped, runs));
    printf("  first write of a populated anonymous page       %7.2f\n", median(pop, runs));
    printf("  ... populated, then read once                   %7.2f\n", median(popread, runs));
    printf("  a written page again, after 100 ms asleep       %7.2f\n", median(again, runs));
    close(fd);
    free(buf);
    return 0;
}
