/*
 * notify.c -- cross-process wake-up of live subscribers.  The store directory holds a
 * small side file `notify`, mapped MAP_SHARED by every process that opens the store: a
 * 32-bit commit counter that doubles as a futex word, a count of sleeping waiters and the
 * last committed head (a hint; readers trust LMDB).  A writer bumps the counter after each
 * commit and calls FUTEX_WAKE only when someone sleeps; one wake serves every waiter of
 * every process.  Futexes on a shared file mapping are keyed by (inode, offset), so the
 * non-private operations reach other processes.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/futex.h>
#include <stdio.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "storage.h"

#define NOTIFY_SIZE 4096
#define POLL_MS 50 /* fallback slice when this process cannot register as a waiter */

typedef struct notify_page {
    uint32_t counter; /* commits seen; the futex word */
    uint32_t waiters; /* threads sleeping on counter, all processes */
    uint64_t head;    /* highest head any commit reported (hint only) */
} notify_page;

/* Maps <path>/notify.  Read-write envs create it (an existing one is reused as is: two
 * processes racing to create it both ftruncate to the same size, zero-filled); read-only
 * envs map it read-only when it exists.  Failure is not fatal: subscribers then poll. */
void cairn__notify_open(cairn_env *e, const char *path) {
    char file[4096];
    struct stat st;
    void *p;
    int fd;

    e->notify = NULL;
    e->notify_rw = 0;
    snprintf(file, sizeof file, "%s/notify", path);
    fd = open(file, e->rdonly ? O_RDONLY | O_CLOEXEC : O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) return;
    if (fstat(fd, &st) != 0 ||
        (st.st_size < NOTIFY_SIZE && (e->rdonly || ftruncate(fd, NOTIFY_SIZE) != 0))) {
        close(fd);
        return;
    }
    p = mmap(NULL, NOTIFY_SIZE, e->rdonly ? PROT_READ : PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    close(fd); /* the mapping keeps the file */
    if (p == MAP_FAILED) return;
    e->notify = p;
    e->notify_rw = !e->rdonly;
}

void cairn__notify_close(cairn_env *e) {
    if (e->notify) munmap(e->notify, NOTIFY_SIZE);
    e->notify = NULL;
}

static long futex(uint32_t *addr, int op, uint32_t val, const struct timespec *ts) {
    return syscall(SYS_futex, addr, op, val, ts, NULL, 0);
}

/* After a successful commit.  The counter is bumped before the waiter count is read (both
 * sequentially consistent), and a waiter registers before the kernel compares the counter:
 * either the writer sees the waiter and wakes it, or the waiter's FUTEX_WAIT sees the new
 * counter and does not sleep. */
void cairn__notify_commit(cairn_env *e, uint64_t head) {
    notify_page *n = e->notify;
    uint64_t h;
    if (!n || !e->notify_rw) return;
    h = __atomic_load_n(&n->head, __ATOMIC_RELAXED);
    while (head > h &&
           !__atomic_compare_exchange_n(&n->head, &h, head, 1, __ATOMIC_RELAXED, __ATOMIC_RELAXED))
        ;
    __atomic_add_fetch(&n->counter, 1, __ATOMIC_SEQ_CST);
    if (__atomic_load_n(&n->waiters, __ATOMIC_SEQ_CST))
        futex(&n->counter, FUTEX_WAKE, INT_MAX, NULL);
}

uint32_t cairn__notify_seen(cairn_env *e) {
    notify_page *n = e->notify;
    return n ? __atomic_load_n(&n->counter, __ATOMIC_SEQ_CST) : 0;
}

/* Sleeps until the counter differs from `seen` or `ms` milliseconds pass (at most; a
 * signal, a spurious wake or the leader's own time-out return early -- callers loop).
 * The first thread of this process to wait sleeps on the shared futex; the others wait for
 * it on the env's condition variable, so a writer wakes one thread per process. */
void cairn__notify_wait(cairn_env *e, uint32_t seen, int ms) {
    notify_page *n = e->notify;
    struct timespec ts;
    if (!n || !e->notify_rw) {
        /* cannot register as a waiter: nobody would wake us; poll in short slices */
        if (ms > POLL_MS) ms = POLL_MS;
        ts.tv_sec = ms / 1000, ts.tv_nsec = (long)(ms % 1000) * 1000000L;
        nanosleep(&ts, NULL);
        return;
    }
    pthread_mutex_lock(&e->nlock);
    if (e->n_leader) {
        uint64_t gen = e->n_gen;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        ts.tv_sec += ms / 1000, ts.tv_nsec += (long)(ms % 1000) * 1000000L;
        if (ts.tv_nsec >= 1000000000L) ts.tv_sec++, ts.tv_nsec -= 1000000000L;
        while (e->n_gen == gen && __atomic_load_n(&n->counter, __ATOMIC_SEQ_CST) == seen &&
               pthread_cond_timedwait(&e->ncond, &e->nlock, &ts) == 0) {}
        pthread_mutex_unlock(&e->nlock);
        return;
    }
    e->n_leader = 1;
    pthread_mutex_unlock(&e->nlock);
    ts.tv_sec = ms / 1000, ts.tv_nsec = (long)(ms % 1000) * 1000000L;
    __atomic_add_fetch(&n->waiters, 1, __ATOMIC_SEQ_CST);
    futex(&n->counter, FUTEX_WAIT, seen, &ts);
    __atomic_sub_fetch(&n->waiters, 1, __ATOMIC_SEQ_CST);
    pthread_mutex_lock(&e->nlock);
    e->n_leader = 0;
    e->n_gen++;
    pthread_cond_broadcast(&e->ncond);
    pthread_mutex_unlock(&e->nlock);
}
