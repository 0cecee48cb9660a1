/*
 * filecheck.c -- is data.mdb long enough for what its meta page claims?  Checked with pread
 * before LMDB maps the file, because LMDB trusts the map: a page past the end of a cut file
 * is a SIGBUS on first touch (opening reads the main database's root), not an error.
 *
 * The newer meta page (by txnid) names the last page ever allocated, mm_last_pg.  A file
 * holding pages 0..mm_last_pg passes at once: every page a transaction can reach is at or
 * below it.  A shorter file is not necessarily damaged: LMDB never writes a page that its
 * transaction allocated and freed again (P_LOOSE, skipped by mdb_page_flush), and such a page
 * can be the top one.  So a shorter file is walked: every tree page reachable from the newer
 * meta (the free and main databases, each named database, each DUPSORT sub-database), and
 * every overflow run, must lie inside the file.  The walk reads each branch and leaf page
 * once; it is never needed for a file LMDB wrote whole.
 *
 * Concurrent writers in other processes: the meta pages are read before the file's size,
 * and the file only grows, so a commit landing in between cannot make a healthy file look
 * short.  Pages reachable from meta N stay untouched until commit N + 2 may reuse them, so a
 * walk during which the newer meta's txnid moved by more than one is not trusted and is done
 * again (a few times, then the check gives up rather than refuse a store in use).
 *
 * The layout read here is LMDB 0.9's on 64-bit hosts (mdb.c): a 16-byte page header
 * (pgno u64, pad u16, flags u16, lower/upper u16 or overflow count u32, then the u16 node
 * offsets), nodes of 8 header bytes (lo, hi, flags, ksize), MDB_meta after the header of
 * pages 0 and 1 (magic u32, version u32, address, mapsize, two 48-byte MDB_db, last_pg,
 * txnid), MDB_db's root at byte 40.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "storage.h"

#define META_MAGIC 0xBEEFC0DEu
#define META_VERSION 1u
#define PAGEHDR CAIRN__MDB_PAGEHDR
#define NODEHDR 8u
#define P_INVALID (~(uint64_t)0)
#define P_BRANCH 0x01u
#define P_LEAF 0x02u
#define P_OVERFLOW 0x04u
#define P_LEAF2 0x20u
#define F_BIGDATA 0x01u
#define F_SUBDATA 0x02u
#define DB_SIZE 48u
#define DB_ROOT 40u
#define META_OFF_DBS 24u
#define META_OFF_LAST CAIRN__MDB_META_LAST
#define META_OFF_TXNID CAIRN__MDB_META_TXNID
#define META_SIZE 136u
#define RETRIES 5

static inline uint16_t rd16(const uint8_t *p) {
    uint16_t v;
    memcpy(&v, p, sizeof v);
    return v;
}
static inline uint32_t rd32(const uint8_t *p) {
    uint32_t v;
    memcpy(&v, p, sizeof v);
    return v;
}
static inline uint64_t rd64(const uint8_t *p) {
    uint64_t v;
    memcpy(&v, p, sizeof v);
    return v;
}

typedef struct meta {
    uint32_t psize;
    uint64_t txnid, last;
    uint8_t dbs[2][DB_SIZE]; /* the free and the main database */
} meta;

/* The newer valid meta page, or 0 when the file cannot be judged here (too short for two
 * meta pages, a foreign magic, another version: LMDB's own open reports those). */
static int read_meta(int fd, meta *out) {
    uint8_t m[PAGEHDR + META_SIZE];
    uint32_t psize = 0;
    int found = 0;
    for (int i = 0; i < 2; i++) {
        meta c;
        if (pread(fd, m, sizeof m, i ? (off_t)psize : 0) != (ssize_t)sizeof m) return 0;
        if (rd32(m + PAGEHDR) != META_MAGIC || rd32(m + PAGEHDR + 4) != META_VERSION) return 0;
        c.psize = rd32(m + PAGEHDR + META_OFF_DBS); /* mm_dbs[FREE].md_pad holds it */
        if (c.psize < 512 || c.psize > 65536 || (c.psize & (c.psize - 1))) return 0;
        if (i && c.psize != psize) return 0;
        psize = c.psize;
        memcpy(c.dbs, m + PAGEHDR + META_OFF_DBS, sizeof c.dbs);
        c.last = rd64(m + PAGEHDR + META_OFF_LAST);
        c.txnid = rd64(m + PAGEHDR + META_OFF_TXNID);
        if (!found || c.txnid > out->txnid) *out = c, found = 1;
    }
    return 1;
}

typedef struct walk {
    int fd;
    uint32_t psize;
    uint64_t npages; /* whole pages in the file */
    uint64_t last;   /* the meta's mm_last_pg */
    uint8_t *seen;   /* one bit per page of the file */
    uint64_t *stack;
    size_t n, cap;
    uint8_t *page;
    uint64_t reached, claimed;
    uint64_t bad; /* the page that failed */
    const char *why;
} walk;

static int push(walk *w, uint64_t pg) {
    if (pg == P_INVALID) return 0; /* an empty database */
    if (w->n == w->cap) {
        size_t cap = w->cap ? w->cap * 2 : 256;
        uint64_t *s = realloc(w->stack, cap * sizeof *s);
        if (!s) return -1;
        w->stack = s, w->cap = cap;
    }
    w->stack[w->n++] = pg;
    return 0;
}

static int bad(walk *w, uint64_t pg, const char *why) {
    w->bad = pg, w->why = why;
    return 1;
}

/* The pages `pg .. pg + count - 1` are reachable: inside the file, at most mm_last_pg, and
 * not reached before (a page reached twice is a damaged tree: LMDB's are trees). */
static int reach(walk *w, uint64_t pg, uint64_t count) {
    if (pg > w->last || count > w->last - pg + 1)
        return bad(w, pg, "is past the last page the meta page names");
    if (pg >= w->npages || count > w->npages - pg) return bad(w, pg, "is past the end of the file");
    for (uint64_t p = pg; p < pg + count; p++) {
        if (w->seen[p >> 3] & (1u << (p & 7))) return bad(w, p, "is reached twice");
        w->seen[p >> 3] |= (uint8_t)(1u << (p & 7));
    }
    w->reached += count;
    return 0;
}

/* One MDB_db record (48 bytes): its branch, leaf and overflow page counts, then its root. */
static int database(walk *w, const uint8_t *db) {
    w->claimed += rd64(db + 8) + rd64(db + 16) + rd64(db + 24);
    return push(w, rd64(db + DB_ROOT));
}

/* 0 done, 1 damaged (w->bad, w->why), -1 out of memory or an I/O error (errno). */
static int visit(walk *w, uint64_t pg) {
    uint8_t *p = w->page;
    uint32_t ps = w->psize;
    unsigned flags, lower, upper, n;
    if (reach(w, pg, 1)) return 1;
    errno = 0;
    if (pread(w->fd, p, ps, (off_t)(pg * ps)) != (ssize_t)ps) {
        if (errno == 0) errno = EIO;
        return -1;
    }
    flags = rd16(p + 10), lower = rd16(p + 12), upper = rd16(p + 14);
    if (rd64(p) != pg) return bad(w, pg, "does not carry its own page number");
    if (flags & P_OVERFLOW) return bad(w, pg, "is an overflow page where a tree page belongs");
    if ((flags & (P_BRANCH | P_LEAF)) == 0 || (flags & (P_BRANCH | P_LEAF)) == (P_BRANCH | P_LEAF))
        return bad(w, pg, "is neither a branch nor a leaf page");
    if (lower < PAGEHDR || lower > upper || upper > ps) return bad(w, pg, "has impossible bounds");
    if (flags & P_LEAF2) return 0; /* fixed-size keys only (DUPFIXED): no references */
    n = (lower - PAGEHDR) / 2u;
    for (unsigned i = 0; i < n; i++) {
        unsigned off = rd16(p + PAGEHDR + 2 * i), ks, nflags;
        const uint8_t *node;
        if (off < upper || off + NODEHDR > ps) return bad(w, pg, "has a node outside the page");
        node = p + off;
        nflags = rd16(node + 4), ks = rd16(node + 6);
        if (flags & P_BRANCH) {
            if (push(w,
                     (uint64_t)rd16(node) | (uint64_t)rd16(node + 2) << 16 |
                         (uint64_t)nflags << 32))
                return -1;
        } else if (nflags & F_BIGDATA) { /* the value is an overflow run: its first page */
            uint64_t size = (uint64_t)rd16(node) | (uint64_t)rd16(node + 2) << 16;
            if (off + NODEHDR + ks + 8 > ps) return bad(w, pg, "has a node outside the page");
            if (reach(w, rd64(node + NODEHDR + ks), (PAGEHDR - 1 + size) / ps + 1)) return 1;
        } else if (nflags & F_SUBDATA) { /* a named database or a DUPSORT sub-database */
            if (off + NODEHDR + ks + DB_SIZE > ps) return bad(w, pg, "has a node outside the page");
            if (database(w, node + NODEHDR + ks)) return -1;
        }
    }
    return 0;
}

/* Every page reachable from `m`. */
static int walk_all(walk *w, const meta *m) {
    int rc = 0;
    w->n = 0, w->reached = w->claimed = 0, w->last = m->last;
    memset(w->seen, 0, (size_t)((w->npages + 7) / 8));
    if (database(w, m->dbs[0]) || database(w, m->dbs[1])) return -1;
    while (w->n && !rc) rc = visit(w, w->stack[--w->n]);
    return rc;
}

int cairn__file_check(const char *data, int force_walk, cairn_filecheck *out) {
    walk w = {0};
    meta m, after;
    struct stat st;
    int rc = CAIRN_OK, fd = open(data, O_RDONLY | O_CLOEXEC);

    memset(out, 0, sizeof *out);
    if (fd < 0) return CAIRN_OK; /* missing or unreadable: LMDB's open says which */
    w.fd = fd;
    for (int attempt = 0;; attempt++) {
        int r;
        /* the meta pages first, then the size: a commit in between only adds pages */
        if (!read_meta(fd, &m)) break;
        if (fstat(fd, &st) != 0) {
            rc = cairn__fail(CAIRN_EIO, "%s: %s", data, strerror(errno));
            break;
        }
        out->psize = m.psize, out->txnid = m.txnid, out->last_page = m.last;
        out->file_bytes = (uint64_t)st.st_size;
        w.psize = m.psize, w.npages = (uint64_t)st.st_size / m.psize;
        if (w.npages > m.last && !force_walk) break;
        if (!w.page && !(w.page = malloc(m.psize))) goto nomem;
        free(w.seen);
        if (!(w.seen = malloc((size_t)((w.npages + 7) / 8) + 1))) goto nomem;
        r = walk_all(&w, &m);
        out->walked = 1, out->reached = w.reached, out->claimed = w.claimed;
        if (r < 0 && errno == ENOMEM) goto nomem;
        if (r < 0) {
            rc = cairn__fail(CAIRN_EIO, "%s: %s", data, strerror(errno));
            break;
        }
        if (r == 0) break;
        /* damaged, unless a writer of another process moved on during the walk and may have
         * reused the pages it read */
        if (read_meta(fd, &after) && after.txnid != m.txnid) {
            if (attempt + 1 < RETRIES) continue;
            break; /* a store this busy is being written through; LMDB's open goes ahead */
        }
        out->bad_page = w.bad;
        rc = cairn__fail(CAIRN_ECORRUPT,
                         "%s is damaged: page %llu, reachable from its newest meta page, %s "
                         "(the file holds %llu bytes, %llu pages of %u; the meta page names "
                         "pages up to %llu): it was cut short or overwritten; restore it from "
                         "a backup",
                         data, (unsigned long long)w.bad, w.why, (unsigned long long)st.st_size,
                         (unsigned long long)w.npages, (unsigned)m.psize,
                         (unsigned long long)m.last);
        break;
    }
    close(fd);
    free(w.page), free(w.seen), free(w.stack);
    return rc;
nomem:
    close(fd);
    free(w.page), free(w.seen), free(w.stack);
    return cairn__fail(CAIRN_ENOMEM, "%s: out of memory checking the file", data);
}

/* ---------------------------------------------------------------------------------
 * A new data.mdb whose making the power cut.  LMDB makes a new file by writing its two meta
 * pages (txnid 0, both databases empty, the rest of the two pages zeros) without a flush; the
 * first commit's fdatasync makes them durable, before it writes meta page 1 (txnid 1, through
 * O_DSYNC).  Power lost before that flush leaves each meta header whole or not written (zeros,
 * or past the end of the file: a sector holds one version), and maybe some of the first
 * commit's pages after them.  No commit was durable: nothing was ever stored.  (Both headers
 * whole is such a file too: LMDB opens it, as an environment holding nothing, which a
 * read-only open would call somebody else's.)  A store that committed has a meta page of a
 * commit on the disk (txnid > 0, a database root), since that first flush came before it
 * and meta pages are only ever written through O_DSYNC after it.
 * --------------------------------------------------------------------------------- */
#define META_HDR (PAGEHDR + META_SIZE)
#define P_META 0x08u
/* a new store's first setup makes 4 pages (the two meta pages, two of data); the smallest
 * store holding an event, a backup's compacted copy of one event, has 7 (a backup has no
 * notify file: its meta pages damaged, it must not pass for a creation) */
#define UNMADE_PAGES 6u

/* The meta header of page `pgno`: 1 as LMDB's creation writes it (*psize: its page size),
 * 0 all zeros, -1 anything else. */
static int creation_meta(const uint8_t *p, uint64_t pgno, uint32_t *psize) {
    const uint8_t *m = p + PAGEHDR;
    uint8_t acc = 0;
    for (unsigned i = 0; i < META_HDR; i++) acc |= p[i];
    if (!acc) return 0;
    *psize = rd32(m + META_OFF_DBS);
    if (rd64(p) != pgno || !(rd16(p + 10) & P_META) || rd32(m) != META_MAGIC ||
        rd32(m + 4) != META_VERSION || rd64(m + META_OFF_TXNID) != 0 ||
        rd64(m + META_OFF_LAST) != 1 || rd64(m + META_OFF_DBS + DB_ROOT) != P_INVALID ||
        rd64(m + META_OFF_DBS + DB_SIZE + DB_ROOT) != P_INVALID)
        return -1;
    return 1;
}

int cairn__file_unmade(const char *data) {
    long os = sysconf(_SC_PAGESIZE);
    uint32_t ps = os >= 4096 && os <= 65536 ? (uint32_t)os : 4096, p0 = 0, p1 = 0;
    struct stat st;
    uint8_t *b;
    size_t got = 0;
    int k0, k1, unmade = 0, fd = open(data, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return 0;
    if (fstat(fd, &st) != 0 || st.st_size <= 0 || (uint64_t)st.st_size > UNMADE_PAGES * ps ||
        !(b = calloc(2, ps))) {
        close(fd);
        return 0;
    }
    while (got < 2u * ps) {
        ssize_t n = pread(fd, b + got, 2u * ps - got, (off_t)got);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) break;
        got += (size_t)n;
    }
    k0 = creation_meta(b, 0, &p0);
    k1 = creation_meta(b + ps, 1, &p1);
    if (k0 >= 0 && k1 >= 0 && (!k0 || p0 == ps) && (!k1 || p1 == ps)) {
        uint8_t acc = 0;
        for (size_t i = META_HDR; i < ps; i++) acc |= b[i] | b[ps + i];
        unmade = acc == 0;
    }
    free(b);
    close(fd);
    return unmade;
}

int cairn__file_unmade_reset(const char *path, const char *data) {
    char lk[PATH_MAX], nf[PATH_MAX];
    struct flock fl;
    int lfd, fd, rc = CAIRN_OK;
    snprintf(lk, sizeof lk, "%s/lock.mdb", path);
    snprintf(nf, sizeof nf, "%s/notify", path);
    /* LMDB holds a lock on byte 0 of lock.mdb while a process has the environment open:
     * exclusive while the first one opens it (and makes data.mdb), shared after.  Holding it
     * exclusive, this process is the only one: nobody is making the file meanwhile, and no
     * notify file can appear.  Not granted: another process has the store open or is opening
     * it (maybe resetting it too); once its exclusive lock is gone the file is whole or
     * empty, and LMDB's open reads it.  (A process that found the file empty and reached
     * LMDB's open while the lock here was held makes the file under a shared lock, so this
     * process's open, racing it, may read its meta pages half written and refuse the file:
     * an open that fails, nothing damaged.) */
    if ((lfd = open(lk, O_RDWR | O_CREAT | O_CLOEXEC, 0644)) < 0)
        return cairn__fail(CAIRN_EIO, "%s: %s", lk, strerror(errno));
    memset(&fl, 0, sizeof fl);
    fl.l_type = F_WRLCK, fl.l_whence = SEEK_SET, fl.l_start = 0, fl.l_len = 1;
    if (fcntl(lfd, F_OFD_SETLK, &fl) == 0) {
        if (access(nf, F_OK) != 0 && cairn__file_unmade(data)) {
            if ((fd = open(data, O_WRONLY | O_CLOEXEC)) < 0 || ftruncate(fd, 0) != 0)
                rc = cairn__fail(CAIRN_EIO, "%s: %s", data, strerror(errno));
            if (fd >= 0) close(fd);
        }
    } else {
        fl.l_type = F_RDLCK; /* waits while another process makes or resets the file */
        while (fcntl(lfd, F_OFD_SETLKW, &fl) != 0 && errno == EINTR) {}
    }
    /* the OFD lock goes with it; closing drops this process's POSIX locks on lock.mdb too,
     * and it holds none: its environment of this directory is the one being opened */
    close(lfd);
    return rc;
}
