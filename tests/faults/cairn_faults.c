/*
 * cairn_faults.c -- an LD_PRELOAD shim that makes one chosen I/O call on a store's data
 * file fail, for tests/python/test_faults.py.  Built by CMake as build/libcairn_faults.so.
 *
 * Configuration, read at load time from the environment and changeable at run time through
 * cairn_fault_arm() (ctypes: ctypes.CDLL(None).cairn_fault_arm):
 *   CAIRN_FAULT_CALL   fsync | fdatasync | pwrite | pwritev | writev | msync | mmap | write |
 *                      ftruncate | any
 *   CAIRN_FAULT_NTH    fail the Nth matching call from arming (1-based; 0 = disarmed)
 *   CAIRN_FAULT_ERRNO  EIO (default) | ENOSPC | EDQUOT | EROFS | ENOMEM | a number
 *   CAIRN_FAULT_COUNT  how many consecutive matching calls fail from the Nth on (default 1;
 *                      -1 = every one until disarmed)
 *   CAIRN_FAULT_FILE   only calls on a descriptor whose path ends with this (default
 *                      "data.mdb"; "" = any file)
 *
 * A failing write writes nothing; a failing mmap maps nothing.  Calls are counted per
 * name (cairn_fault_calls) and failures too (cairn_fault_fired).
 *
 * Two more test hooks, for what a durability mode or the clock does (not faults):
 *   cairn_fault_dsync_writes()   writes (write/pwrite/writev/pwritev) on a matching file
 *                                opened with O_DSYNC: LMDB's synchronous meta-page writes;
 *                                reset by cairn_fault_arm with the other counters
 *   cairn_fault_clock_step(ns)   moves CLOCK_REALTIME as clock_gettime reports it by ns
 *                                (negative: the wall clock steps back); steps add up
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

enum { F_FSYNC, F_FDATASYNC, F_PWRITE, F_PWRITEV, F_WRITEV, F_MSYNC, F_MMAP, F_WRITE, F_FTRUNCATE, F_N };
static const char *const NAMES[F_N] = {"fsync", "fdatasync", "pwrite", "pwritev", "writev",
                                       "msync", "mmap", "write", "ftruncate"};

static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;
static int g_fn = -1; /* -1 none, F_N any */
static long g_nth, g_seen, g_count = 1;
static int g_err = EIO;
static char g_file[256] = "data.mdb";
static long g_calls[F_N], g_fired;
static long g_dsync_writes;    /* writes on a matching O_DSYNC descriptor */
static long long g_clock_step; /* ns added to CLOCK_REALTIME */
/* the data file's mapping, so that msync (which takes no descriptor) can be matched */
static void *g_map;
static size_t g_map_len;

static int parse_errno(const char *s) {
    if (!s || !*s) return EIO;
    if (!strcmp(s, "EIO")) return EIO;
    if (!strcmp(s, "ENOSPC")) return ENOSPC;
    if (!strcmp(s, "EDQUOT")) return EDQUOT;
    if (!strcmp(s, "EROFS")) return EROFS;
    if (!strcmp(s, "ENOMEM")) return ENOMEM;
    return atoi(s) > 0 ? atoi(s) : EIO;
}

static int parse_fn(const char *s) {
    if (!s || !*s) return -1;
    if (!strcmp(s, "any")) return F_N;
    for (int i = 0; i < F_N; i++)
        if (!strcmp(s, NAMES[i])) return i;
    return -1;
}

/* Arms (nth > 0) or disarms (nth = 0) a fault; resets the counters. */
int cairn_fault_arm(const char *fn, long nth, const char *err, long count) {
    pthread_mutex_lock(&g_lock);
    g_fn = parse_fn(fn);
    g_nth = nth;
    g_seen = 0;
    g_err = parse_errno(err);
    g_count = count ? count : 1;
    g_fired = 0;
    g_dsync_writes = 0;
    memset(g_calls, 0, sizeof g_calls);
    pthread_mutex_unlock(&g_lock);
    return g_fn >= 0 || nth == 0 ? 0 : -1;
}

void cairn_fault_file(const char *suffix) {
    pthread_mutex_lock(&g_lock);
    snprintf(g_file, sizeof g_file, "%s", suffix ? suffix : "");
    pthread_mutex_unlock(&g_lock);
}

long cairn_fault_calls(const char *fn) {
    int i = parse_fn(fn);
    return i >= 0 && i < F_N ? __atomic_load_n(&g_calls[i], __ATOMIC_SEQ_CST) : -1;
}

long cairn_fault_fired(void) { return __atomic_load_n(&g_fired, __ATOMIC_SEQ_CST); }

long cairn_fault_dsync_writes(void) { return __atomic_load_n(&g_dsync_writes, __ATOMIC_SEQ_CST); }

void cairn_fault_clock_step(long long ns) { __atomic_add_fetch(&g_clock_step, ns, __ATOMIC_SEQ_CST); }

__attribute__((constructor)) static void init(void) {
    const char *n = getenv("CAIRN_FAULT_NTH"), *c = getenv("CAIRN_FAULT_COUNT"),
               *f = getenv("CAIRN_FAULT_FILE");
    if (f) snprintf(g_file, sizeof g_file, "%s", f);
    if (getenv("CAIRN_FAULT_CALL"))
        cairn_fault_arm(getenv("CAIRN_FAULT_CALL"), n ? atol(n) : 1, getenv("CAIRN_FAULT_ERRNO"),
                        c ? atol(c) : 1);
}

static int fd_matches(int fd) {
    char link[64], path[512];
    ssize_t n;
    size_t fl;
    if (!g_file[0]) return 1;
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    n = readlink(link, path, sizeof path - 1);
    if (n <= 0) return 0;
    path[n] = 0;
    fl = strlen(g_file);
    return (size_t)n >= fl && strcmp(path + n - fl, g_file) == 0;
}

/* Counts a call on a matching file; returns the errno to fail it with, or 0. */
static int hit(int fn, int matches) {
    int err = 0;
    if (!matches) return 0;
    pthread_mutex_lock(&g_lock);
    g_calls[fn]++;
    if (g_nth > 0 && (g_fn == fn || g_fn == F_N)) {
        g_seen++;
        if (g_seen >= g_nth && (g_count < 0 || g_seen < g_nth + g_count)) {
            err = g_err;
            g_fired++;
        }
    }
    pthread_mutex_unlock(&g_lock);
    return err;
}

/* A write on a matching descriptor opened with O_DSYNC (O_SYNC includes it) is counted. */
static void count_dsync(int fd, int matches) {
    int fl;
    if (!matches) return;
    fl = fcntl(fd, F_GETFL);
    if (fl != -1 && (fl & O_DSYNC) == O_DSYNC) __atomic_add_fetch(&g_dsync_writes, 1, __ATOMIC_SEQ_CST);
}

#define REAL(name)                                                                            \
    static __typeof__(&name) real_##name;                                                     \
    if (!real_##name) real_##name = (__typeof__(&name))dlsym(RTLD_NEXT, #name)

int fsync(int fd) {
    REAL(fsync);
    int err = hit(F_FSYNC, fd_matches(fd));
    if (err) return errno = err, -1;
    return real_fsync(fd);
}

int fdatasync(int fd) {
    REAL(fdatasync);
    int err = hit(F_FDATASYNC, fd_matches(fd));
    if (err) return errno = err, -1;
    return real_fdatasync(fd);
}

ssize_t pwrite(int fd, const void *buf, size_t n, off_t off) {
    REAL(pwrite);
    int match = fd_matches(fd), err = hit(F_PWRITE, match);
    count_dsync(fd, match);
    if (err) return errno = err, -1;
    return real_pwrite(fd, buf, n, off);
}

ssize_t pwrite64(int fd, const void *buf, size_t n, off_t off) { return pwrite(fd, buf, n, off); }

ssize_t pwritev(int fd, const struct iovec *iov, int n, off_t off) {
    REAL(pwritev);
    int match = fd_matches(fd), err = hit(F_PWRITEV, match);
    count_dsync(fd, match);
    if (err) return errno = err, -1;
    return real_pwritev(fd, iov, n, off);
}

ssize_t pwritev64(int fd, const struct iovec *iov, int n, off_t off) { return pwritev(fd, iov, n, off); }

ssize_t writev(int fd, const struct iovec *iov, int n) {
    REAL(writev);
    int match = fd_matches(fd), err = hit(F_WRITEV, match);
    count_dsync(fd, match);
    if (err) return errno = err, -1;
    return real_writev(fd, iov, n);
}

ssize_t write(int fd, const void *buf, size_t n) {
    REAL(write);
    /* stdout/stderr are never the data file: skip the readlink for them */
    int match = fd > 2 && fd_matches(fd), err = match ? hit(F_WRITE, match) : 0;
    count_dsync(fd, match);
    if (err) return errno = err, -1;
    return real_write(fd, buf, n);
}

int ftruncate(int fd, off_t len) {
    REAL(ftruncate);
    int err = hit(F_FTRUNCATE, fd_matches(fd));
    if (err) return errno = err, -1;
    return real_ftruncate(fd, len);
}

int ftruncate64(int fd, off_t len) { return ftruncate(fd, len); }

void *mmap(void *addr, size_t len, int prot, int flags, int fd, off_t off) {
    REAL(mmap);
    int match = fd >= 0 && fd_matches(fd);
    int err = hit(F_MMAP, match);
    void *p;
    if (err) return errno = err, MAP_FAILED;
    p = real_mmap(addr, len, prot, flags, fd, off);
    if (match && p != MAP_FAILED) g_map = p, g_map_len = len;
    return p;
}

void *mmap64(void *addr, size_t len, int prot, int flags, int fd, off_t off) {
    return mmap(addr, len, prot, flags, fd, off);
}

int msync(void *addr, size_t len, int flags) {
    REAL(msync);
    int match = !g_file[0] || (g_map && (char *)addr >= (char *)g_map &&
                               (char *)addr < (char *)g_map + g_map_len);
    int err = hit(F_MSYNC, match);
    (void)len;
    if (err) return errno = err, -1;
    return real_msync(addr, len, flags);
}

int clock_gettime(clockid_t clk, struct timespec *ts) {
    REAL(clock_gettime);
    long long step = __atomic_load_n(&g_clock_step, __ATOMIC_SEQ_CST);
    int rc = real_clock_gettime(clk, ts);
    if (rc == 0 && step && clk == CLOCK_REALTIME) {
        long long ns = (long long)ts->tv_sec * 1000000000LL + ts->tv_nsec + step;
        ts->tv_sec = (time_t)(ns / 1000000000LL);
        ts->tv_nsec = (long)(ns % 1000000000LL);
        if (ts->tv_nsec < 0) ts->tv_sec--, ts->tv_nsec += 1000000000L;
    }
    return rc;
}
