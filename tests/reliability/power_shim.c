/*
 * power_shim.c -- LD_PRELOAD shim of the power-loss harness (tests/reliability/powerloss.py).
 *
 * It keeps an undo journal of every write to the store's files that no flush has made
 * durable yet, so that after the process is killed the harness can put the files back to
 * what a disk would hold had the power gone at that moment.  LMDB reads its pages through
 * a shared mmap of data.mdb, so writes cannot be held back in memory: they go through, and
 * the bytes they overwrite are saved first.  Tracked: every file directly in
 * $CAIRN_POWER_DIR except lock.mdb (data.mdb, keys, notify).  The journal
 * ($CAIRN_POWER_JOURNAL, best on tmpfs) is a sequence of records (struct rec + bytes):
 *   OPEN     a file seen for the first time: its size then (durable: the previous process
 *            ended in a power loss or a clean close), its path
 *   WRITE    before a write: offset, length, the file's size and the bytes it overwrites
 *   TRUNC    before ftruncate: the new size, the old size and the bytes it cuts off
 *   DURABLE  after a write through an O_DSYNC/O_SYNC descriptor (or RWF_DSYNC) returned:
 *            that WRITE reached the disk
 *   SYNC     after fsync/fdatasync returned: every record of the file with seq < upto is
 *            durable, and so is the size it had when the flush began
 *   UNSUPPORTED  a call on a tracked file this model cannot follow (the harness fails)
 *   KILL     CAIRN_POWER_KILL_AT=N: the process killed itself before its Nth write or flush
 * A record is written (under one mutex, with the write it describes) before the write, so
 * the journal's order is the order of the writes; SIGKILL at any moment leaves at most the
 * last record cut short, and the writes after it never happened.  The harness kills the
 * process, then replays the journal backwards (powerloss.py: apply_journal).
 * CAIRN_POWER_IGNORE_FLUSH=1 makes flushes count for nothing (a disk that lies about
 * fdatasync), =NAME those of the store's file NAME only: the harness's self-tests that it
 * detects the damage that follows.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

enum { R_OPEN = 1, R_WRITE, R_TRUNC, R_DURABLE, R_SYNC, R_UNSUPPORTED, R_KILL };
#define FID_ALL 0xffffffffu
#define MAX_FD 65536
#define MAX_FILES 64

struct rec {
    uint32_t type, fid;
    uint64_t seq;  /* WRITE/TRUNC: its number; DURABLE: the WRITE's; SYNC: upto */
    uint64_t off;  /* WRITE: offset; TRUNC: new size */
    uint64_t len;  /* WRITE/DURABLE: length */
    uint64_t size; /* the file's size before the call (SYNC: when the flush began) */
    uint64_t nbytes;
} __attribute__((packed));

static struct file {
    dev_t dev;
    ino_t ino;
    int rfd; /* our own read descriptor: LMDB's meta descriptor is write-only */
    int shared_ok; /* notify: a writable shared mapping holds hints only */
    int ignore;    /* CAIRN_POWER_IGNORE_FLUSH names it: its flushes are not recorded */
} files[MAX_FILES];
static int nfiles;
static int fd_fid[MAX_FD]; /* file index + 1; 0: not tracked */
static unsigned char fd_sync[MAX_FD];
static char dir[PATH_MAX];
static size_t dirlen;
static int jfd = -1;
static const char *ignore_flush; /* "1": every file; else one file's name */
static uint64_t next_seq = 1, nwrites, kill_at;
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;

#define REAL(ret, name, args)                                                                    \
    static ret(*real_##name) args;                                                             \
    static void resolve_##name(void) {                                                         \
        if (!real_##name) real_##name = (ret(*) args)dlsym(RTLD_NEXT, #name);                  \
    }
REAL(int, open, (const char *, int, ...))
REAL(int, openat, (int, const char *, int, ...))
REAL(int, close, (int))
REAL(ssize_t, write, (int, const void *, size_t))
REAL(ssize_t, writev, (int, const struct iovec *, int))
REAL(ssize_t, pwrite, (int, const void *, size_t, off_t))
REAL(ssize_t, pwritev, (int, const struct iovec *, int, off_t))
REAL(ssize_t, pwritev2, (int, const struct iovec *, int, off_t, int))
REAL(int, ftruncate, (int, off_t))
REAL(int, fsync, (int))
REAL(int, fdatasync, (int))
REAL(void *, mmap, (void *, size_t, int, int, int, off_t))
REAL(int, dup, (int))
REAL(int, dup2, (int, int))
REAL(int, dup3, (int, int, int))
REAL(int, fcntl, (int, int, ...))
REAL(int, fallocate, (int, int, off_t, off_t))
REAL(int, syncfs, (int))
REAL(void, sync, (void))

static void die(const char *what) {
    char msg[512];
    int n = snprintf(msg, sizeof msg, "power_shim: %s: %s\n", what, strerror(errno));
    if (n > 0) (void)!write(2, msg, (size_t)n);
    abort();
}

__attribute__((constructor)) static void init(void) {
    const char *d = getenv("CAIRN_POWER_DIR"), *j = getenv("CAIRN_POWER_JOURNAL"), *k;
    resolve_open();
    if (!d || !j) return; /* inert: every call goes straight through */
    if (!realpath(d, dir)) {
        /* the store's directory may not exist yet: its parent's real path and its name
         * (readlink of /proc/self/fd gives absolute, resolved paths) */
        char parent[PATH_MAX], real[PATH_MAX];
        const char *slash = strrchr(d, '/'), *name = slash ? slash + 1 : d;
        if (strlen(d) >= sizeof parent) die("CAIRN_POWER_DIR");
        strcpy(parent, d);
        if (slash)
            parent[slash - d] = 0;
        else
            strcpy(parent, ".");
        int n;
        if (realpath(slash == d ? "/" : parent, real))
            n = snprintf(dir, sizeof dir, "%s/%s", strcmp(real, "/") ? real : "", name);
        else if (*d == '/' || !getcwd(real, sizeof real)) /* no parent either: as given */
            n = snprintf(dir, sizeof dir, "%s", d);
        else
            n = snprintf(dir, sizeof dir, "%s/%s", real, d);
        if (n < 0 || n >= (int)sizeof dir) die("CAIRN_POWER_DIR");
    }
    dirlen = strlen(dir);
    jfd = real_open(j, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (jfd < 0) die(j);
    if ((k = getenv("CAIRN_POWER_KILL_AT"))) kill_at = strtoull(k, NULL, 10);
    ignore_flush = getenv("CAIRN_POWER_IGNORE_FLUSH");
}

/* ---------------------------------------------------------------------------------
 * The journal (callers hold mu)
 * --------------------------------------------------------------------------------- */
static void jput(const void *p, size_t n) {
    const char *c = p;
    resolve_write();
    while (n) {
        ssize_t w = real_write(jfd, c, n);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) die("journal write");
        c += w, n -= (size_t)w;
    }
}

static void jrec(uint32_t type, uint32_t fid, uint64_t seq, uint64_t off, uint64_t len,
                 uint64_t size, const void *bytes, uint64_t nbytes) {
    struct rec r = {type, fid, seq, off, len, size, nbytes};
    /* one write when it is small, so that a kill rarely cuts a record */
    char buf[4096];
    if (sizeof r + nbytes <= sizeof buf) {
        memcpy(buf, &r, sizeof r);
        if (nbytes) memcpy(buf + sizeof r, bytes, nbytes);
        jput(buf, sizeof r + nbytes);
    } else {
        jput(&r, sizeof r);
        jput(bytes, nbytes);
    }
}

static uint64_t file_size(int fid) {
    struct stat st;
    if (fstat(files[fid].rfd, &st) != 0) die("fstat");
    return (uint64_t)st.st_size;
}

/* CAIRN_POWER_KILL_AT=N: the process kills itself before its Nth write or flush of a store
 * file (seq: that write's record, which the harness then ignores; 0 for a flush). */
static void maybe_kill(int fid, uint64_t seq) {
    if (kill_at && ++nwrites == kill_at) {
        jrec(R_KILL, (uint32_t)fid, seq, 0, 0, 0, NULL, 0);
        kill(getpid(), SIGKILL);
        for (;;) pause();
    }
}

/* Saves what [off, off+len) of file fid holds (the part inside the file) in a WRITE record,
 * and kills the process there when this is call number kill_at. */
static uint64_t before_write(int fid, uint64_t off, uint64_t len) {
    uint64_t size = file_size(fid), have = off < size ? size - off : 0, seq = next_seq++;
    char *old = NULL;
    if (have > len) have = len;
    if (have) {
        uint64_t got = 0;
        if (!(old = malloc(have))) die("malloc");
        while (got < have) {
            ssize_t r = pread(files[fid].rfd, old + got, have - got, (off_t)(off + got));
            if (r < 0 && errno == EINTR) continue;
            if (r <= 0) die("pread");
            got += (uint64_t)r;
        }
    }
    jrec(R_WRITE, (uint32_t)fid, seq, off, len, size, old, have);
    free(old);
    maybe_kill(fid, seq);
    return seq;
}

static void unsupported(int fid, const char *what) {
    jrec(R_UNSUPPORTED, (uint32_t)fid, 0, 0, 0, 0, what, strlen(what));
}

/* ---------------------------------------------------------------------------------
 * Descriptors
 * --------------------------------------------------------------------------------- */
static int tracked(int fd) {
    return jfd >= 0 && fd >= 0 && fd < MAX_FD && __atomic_load_n(&fd_fid[fd], __ATOMIC_ACQUIRE);
}

/* After an open that returned fd: is it one of the store's files? */
static void track(int fd, int flags) {
    char link[64], path[PATH_MAX], *base;
    struct stat st;
    ssize_t n;
    int fid;
    if (jfd < 0 || fd < 0 || fd >= MAX_FD) return;
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    if ((n = readlink(link, path, sizeof path - 1)) <= 0) return;
    path[n] = 0;
    if ((size_t)n <= dirlen + 1 || strncmp(path, dir, dirlen) || path[dirlen] != '/') return;
    base = path + dirlen + 1;
    if (strchr(base, '/') || !strcmp(base, "lock.mdb")) return;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) return;
    pthread_mutex_lock(&mu);
    for (fid = 0; fid < nfiles; fid++)
        if (files[fid].dev == st.st_dev && files[fid].ino == st.st_ino) break;
    if (fid == nfiles) {
        if (nfiles == MAX_FILES) die("too many files");
        files[fid].dev = st.st_dev, files[fid].ino = st.st_ino;
        files[fid].shared_ok = !strcmp(base, "notify");
        files[fid].ignore = ignore_flush && (!strcmp(ignore_flush, "1") || !strcmp(ignore_flush, base));
        if ((files[fid].rfd = real_open(path, O_RDONLY | O_CLOEXEC)) < 0) die(path);
        nfiles++;
        jrec(R_OPEN, (uint32_t)fid, 0, 0, 0, file_size(fid), path, strlen(path));
    }
    if (flags & O_TRUNC) unsupported(fid, "open with O_TRUNC");
    if (flags & O_APPEND) unsupported(fid, "open with O_APPEND");
    fd_sync[fd] = (flags & O_DSYNC) != 0; /* O_SYNC includes the O_DSYNC bit */
    __atomic_store_n(&fd_fid[fd], fid + 1, __ATOMIC_RELEASE);
    pthread_mutex_unlock(&mu);
}

static void untrack(int fd) {
    if (!tracked(fd)) return;
    pthread_mutex_lock(&mu);
    __atomic_store_n(&fd_fid[fd], 0, __ATOMIC_RELEASE);
    pthread_mutex_unlock(&mu);
}

static void track_dup(int from, int to) {
    if (to < 0 || to >= MAX_FD) return;
    pthread_mutex_lock(&mu);
    fd_sync[to] = fd_sync[from];
    __atomic_store_n(&fd_fid[to], fd_fid[from], __ATOMIC_RELEASE);
    pthread_mutex_unlock(&mu);
}

static int mode_arg(int flags, va_list ap) {
    return (flags & O_CREAT) || (flags & O_TMPFILE) == O_TMPFILE ? va_arg(ap, int) : 0;
}

int open(const char *path, int flags, ...) {
    va_list ap;
    int mode, fd;
    va_start(ap, flags);
    mode = mode_arg(flags, ap);
    va_end(ap);
    resolve_open();
    fd = real_open(path, flags, mode);
    track(fd, flags);
    return fd;
}
int open64(const char *path, int flags, ...) __attribute__((alias("open")));
int __open_2(const char *path, int flags) { return open(path, flags); }
int __open64_2(const char *path, int flags) { return open(path, flags); }

int openat(int dirfd, const char *path, int flags, ...) {
    va_list ap;
    int mode, fd;
    va_start(ap, flags);
    mode = mode_arg(flags, ap);
    va_end(ap);
    resolve_openat();
    fd = real_openat(dirfd, path, flags, mode);
    track(fd, flags);
    return fd;
}
int openat64(int dirfd, const char *path, int flags, ...) __attribute__((alias("openat")));
int __openat_2(int dirfd, const char *path, int flags) { return openat(dirfd, path, flags); }

int creat(const char *path, mode_t mode) { return open(path, O_CREAT | O_WRONLY | O_TRUNC, mode); }
int creat64(const char *path, mode_t mode) __attribute__((alias("creat")));

int close(int fd) {
    resolve_close();
    untrack(fd);
    return real_close(fd);
}

int dup(int fd) {
    int r;
    resolve_dup();
    r = real_dup(fd);
    if (r >= 0 && tracked(fd)) track_dup(fd, r);
    return r;
}
int dup2(int fd, int to) {
    int r;
    resolve_dup2();
    if (fd != to) untrack(to);
    r = real_dup2(fd, to);
    if (r >= 0 && fd != to && tracked(fd)) track_dup(fd, r);
    return r;
}
int dup3(int fd, int to, int flags) {
    int r;
    resolve_dup3();
    untrack(to);
    r = real_dup3(fd, to, flags);
    if (r >= 0 && tracked(fd)) track_dup(fd, r);
    return r;
}

/* Locks (cairn's OFD writer lock, LMDB's) pass; a duplicate or a changed O_APPEND on a
 * tracked descriptor is beyond the model. */
int fcntl(int fd, int cmd, ...) {
    va_list ap;
    void *arg;
    va_start(ap, cmd);
    arg = va_arg(ap, void *);
    va_end(ap);
    resolve_fcntl();
    if (tracked(fd) && (cmd == F_DUPFD || cmd == F_DUPFD_CLOEXEC ||
                        (cmd == F_SETFL && ((long)arg & O_APPEND)))) {
        pthread_mutex_lock(&mu);
        unsupported(fd_fid[fd] - 1, "fcntl F_DUPFD / F_SETFL O_APPEND");
        pthread_mutex_unlock(&mu);
    }
    return real_fcntl(fd, cmd, arg);
}
int fcntl64(int fd, int cmd, ...) __attribute__((alias("fcntl")));

/* ---------------------------------------------------------------------------------
 * Writes
 * --------------------------------------------------------------------------------- */
static uint64_t iov_len(const struct iovec *iov, int n) {
    uint64_t t = 0;
    for (int i = 0; i < n; i++) t += iov[i].iov_len;
    return t;
}

/* The common path of every write call: journal, write, and for a synchronous descriptor
 * the DURABLE record once the write returned.  off < 0: the descriptor's position. */
#define TRACKED_WRITE(fd, off_in, len, dsync, call)                                              \
    do {                                                                                       \
        int fid_;                                                                              \
        uint64_t seq_;                                                                         \
        off_t off_ = (off_in);                                                                 \
        ssize_t r_;                                                                            \
        pthread_mutex_lock(&mu);                                                               \
        if (!(fid_ = fd_fid[fd])) {                                                            \
            pthread_mutex_unlock(&mu);                                                         \
            return call;                                                                       \
        }                                                                                      \
        fid_--;                                                                                \
        if (off_ < 0) off_ = lseek(fd, 0, SEEK_CUR);                                           \
        seq_ = off_ >= 0 ? before_write(fid_, (uint64_t)off_, (len)) : 0;                      \
        r_ = call;                                                                             \
        if (r_ > 0 && seq_ && (fd_sync[fd] || (dsync)))                                        \
            jrec(R_DURABLE, (uint32_t)fid_, seq_, (uint64_t)off_, (uint64_t)r_, 0, NULL, 0);   \
        if (off_ < 0) unsupported(fid_, "write at an unknown position");                       \
        pthread_mutex_unlock(&mu);                                                             \
        return r_;                                                                             \
    } while (0)

ssize_t write(int fd, const void *buf, size_t n) {
    resolve_write();
    if (!tracked(fd)) return real_write(fd, buf, n);
    TRACKED_WRITE(fd, -1, n, 0, real_write(fd, buf, n));
}

ssize_t writev(int fd, const struct iovec *iov, int cnt) {
    resolve_writev();
    if (!tracked(fd)) return real_writev(fd, iov, cnt);
    TRACKED_WRITE(fd, -1, iov_len(iov, cnt), 0, real_writev(fd, iov, cnt));
}

ssize_t pwrite(int fd, const void *buf, size_t n, off_t off) {
    resolve_pwrite();
    if (!tracked(fd)) return real_pwrite(fd, buf, n, off);
    TRACKED_WRITE(fd, off, n, 0, real_pwrite(fd, buf, n, off));
}
ssize_t pwrite64(int fd, const void *buf, size_t n, off_t off) __attribute__((alias("pwrite")));

ssize_t pwritev(int fd, const struct iovec *iov, int cnt, off_t off) {
    resolve_pwritev();
    if (!tracked(fd)) return real_pwritev(fd, iov, cnt, off);
    TRACKED_WRITE(fd, off, iov_len(iov, cnt), 0, real_pwritev(fd, iov, cnt, off));
}
ssize_t pwritev64(int fd, const struct iovec *iov, int cnt, off_t off)
    __attribute__((alias("pwritev")));

ssize_t pwritev2(int fd, const struct iovec *iov, int cnt, off_t off, int flags) {
    resolve_pwritev2();
    if (!tracked(fd)) return real_pwritev2(fd, iov, cnt, off, flags);
    TRACKED_WRITE(fd, off, iov_len(iov, cnt), flags & (RWF_DSYNC | RWF_SYNC),
                  real_pwritev2(fd, iov, cnt, off, flags));
}
ssize_t pwritev64v2(int fd, const struct iovec *iov, int cnt, off_t off, int flags)
    __attribute__((alias("pwritev2")));

int ftruncate(int fd, off_t len) {
    int fid, r;
    resolve_ftruncate();
    if (!tracked(fd)) return real_ftruncate(fd, len);
    pthread_mutex_lock(&mu);
    if ((fid = fd_fid[fd] - 1) >= 0) {
        uint64_t size = file_size(fid), cut = (uint64_t)len < size ? size - (uint64_t)len : 0;
        char *old = cut ? malloc(cut) : NULL;
        if (cut && (!old || pread(files[fid].rfd, old, cut, len) != (ssize_t)cut))
            die("ftruncate: save");
        jrec(R_TRUNC, (uint32_t)fid, next_seq++, (uint64_t)len, 0, size, old, cut);
        free(old);
    }
    r = real_ftruncate(fd, len);
    pthread_mutex_unlock(&mu);
    return r;
}
int ftruncate64(int fd, off_t len) __attribute__((alias("ftruncate")));

int fallocate(int fd, int mode, off_t off, off_t len) {
    resolve_fallocate();
    if (tracked(fd)) {
        pthread_mutex_lock(&mu);
        unsupported(fd_fid[fd] - 1, "fallocate");
        pthread_mutex_unlock(&mu);
    }
    return real_fallocate(fd, mode, off, len);
}
int fallocate64(int fd, int mode, off_t off, off_t len) __attribute__((alias("fallocate")));

/* A writable shared mapping writes behind our back: only notify's (hints) is allowed. */
void *mmap(void *addr, size_t len, int prot, int flags, int fd, off_t off) {
    resolve_mmap();
    if (tracked(fd) && (prot & PROT_WRITE) && (flags & MAP_SHARED)) {
        pthread_mutex_lock(&mu);
        if (!files[fd_fid[fd] - 1].shared_ok) unsupported(fd_fid[fd] - 1, "writable shared mmap");
        pthread_mutex_unlock(&mu);
    }
    return real_mmap(addr, len, prot, flags, fd, off);
}
void *mmap64(void *addr, size_t len, int prot, int flags, int fd, off_t off)
    __attribute__((alias("mmap")));

/* ---------------------------------------------------------------------------------
 * Flushes
 * --------------------------------------------------------------------------------- */
/* What a flush covers is fixed when it begins: a write made while it runs may miss it. */
static int flush(int fd, int (*real)(int)) {
    int fid, r;
    uint64_t upto = 0, size = 0;
    pthread_mutex_lock(&mu);
    if ((fid = fd_fid[fd] - 1) >= 0) {
        upto = next_seq, size = file_size(fid);
        maybe_kill(fid, 0);
    }
    pthread_mutex_unlock(&mu);
    r = real(fd);
    if (r == 0 && fid >= 0 && !files[fid].ignore) {
        pthread_mutex_lock(&mu);
        jrec(R_SYNC, (uint32_t)fid, upto, 0, 0, size, NULL, 0);
        pthread_mutex_unlock(&mu);
    }
    return r;
}

int fsync(int fd) {
    resolve_fsync();
    return tracked(fd) ? flush(fd, real_fsync) : real_fsync(fd);
}

int fdatasync(int fd) {
    resolve_fdatasync();
    return tracked(fd) ? flush(fd, real_fdatasync) : real_fdatasync(fd);
}

/* sync(2), syncfs(2): every tracked file, at the size it had when the flush began (all of
 * the store's files are on one file system). */
static int flush_all(int (*call)(int), int fd) {
    uint64_t upto, sizes[MAX_FILES];
    int n, r = 0;
    pthread_mutex_lock(&mu);
    upto = next_seq, n = nfiles;
    for (int fid = 0; fid < n; fid++) sizes[fid] = file_size(fid);
    pthread_mutex_unlock(&mu);
    if (call)
        r = call(fd);
    else
        real_sync();
    if (r == 0) {
        pthread_mutex_lock(&mu);
        for (int fid = 0; fid < n; fid++)
            if (!files[fid].ignore) jrec(R_SYNC, (uint32_t)fid, upto, 0, 0, sizes[fid], NULL, 0);
        pthread_mutex_unlock(&mu);
    }
    return r;
}

int syncfs(int fd) {
    resolve_syncfs();
    return jfd < 0 ? real_syncfs(fd) : flush_all(real_syncfs, fd);
}

void sync(void) {
    resolve_sync();
    if (jfd < 0)
        real_sync();
    else
        flush_all(NULL, -1);
}
