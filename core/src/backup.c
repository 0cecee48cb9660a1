/*
 * backup.c -- a hot copy of a store and the figures of its file: cairn_backup writes one
 * read snapshot of data.mdb, compacted, into a new directory while writers keep writing;
 * cairn_stat reports the file's size, its pages and its free list.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

#include "storage.h"

/* The destination: a directory that is missing (made here) or empty.  Anything else is
 * refused, so that a backup never mixes with or overwrites another store. */
static int dest_prepare(const char *dest, int *made) {
    struct stat st;
    *made = 0;
    if (stat(dest, &st) != 0) {
        if (errno != ENOENT) return cairn__fail(CAIRN_EIO, "%s: %s", dest, strerror(errno));
        if (mkdir(dest, 0775) != 0)
            return cairn__fail(errno == EACCES       ? CAIRN_EREADONLY
                                   : errno == ENOENT ? CAIRN_ENOENT
                                                     : CAIRN_EIO,
                               "dest: %s: %s", dest, strerror(errno));
        *made = 1;
        return CAIRN_OK;
    }
    if (!S_ISDIR(st.st_mode))
        return cairn__fail(CAIRN_EINVAL, "dest: %s exists and is not a directory", dest);
    {
        DIR *d = opendir(dest);
        struct dirent *de;
        int empty = 1;
        if (!d) return cairn__fail(CAIRN_EIO, "dest: %s: %s", dest, strerror(errno));
        while (empty && (de = readdir(d)))
            empty = strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0;
        closedir(d);
        if (!empty) return cairn__fail(CAIRN_EINVAL, "dest: %s is not empty", dest);
    }
    return CAIRN_OK;
}

static int fsync_dir(const char *dir) {
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC), rc = 0;
    if (fd < 0) return errno;
    if (fsync(fd) != 0) rc = errno;
    close(fd);
    return rc;
}

/* LMDB's compacting copy (mdb_env_copyfd2 with MDB_CP_COMPACT) runs in one read
 * transaction of its own: whole commits only, and writers are not held back.  Like every
 * transaction of this process it holds the resize lock shared; a map another process grew
 * makes LMDB's begin fail with MDB_MAP_RESIZED, and the copy starts again with the new size. */
static int copy_snapshot(cairn_env *e, int fd) {
    for (;;) {
        int rc;
        pthread_rwlock_rdlock(&e->resize);
        if (e->unmapped) {
            pthread_rwlock_unlock(&e->resize);
            return cairn__env_check(e);
        }
        rc = mdb_env_copyfd2(e->env, fd, MDB_CP_COMPACT);
        pthread_rwlock_unlock(&e->resize);
        if (rc != MDB_MAP_RESIZED) return rc ? cairn__mdb_fail(rc, "backup") : CAIRN_OK;
        pthread_rwlock_wrlock(&e->resize);
        rc = mdb_env_set_mapsize(e->env, 0);
        if (rc) e->unmapped = 1;
        pthread_rwlock_unlock(&e->resize);
        if (rc) return cairn__mdb_fail(rc, "adopt map size");
        if (ftruncate(fd, 0) != 0 || lseek(fd, 0, SEEK_SET) != 0)
            return cairn__fail(CAIRN_EIO, "backup: %s", strerror(errno));
    }
}

int cairn_backup(cairn_store *s, const char *dest) {
    char file[PATH_MAX];
    int rc, made, fd;

    cairn__clear_error();
    if ((rc = cairn__store_check(s))) return rc;
    if (!dest || !*dest) return cairn__fail(CAIRN_EINVAL, "dest: must not be empty");
    if (snprintf(file, sizeof file, "%s/data.mdb", dest) >= (int)sizeof file)
        return cairn__fail(CAIRN_EINVAL, "dest: path too long");
    if ((rc = dest_prepare(dest, &made))) return rc;
    if ((fd = open(file, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644)) < 0) {
        rc = cairn__fail(CAIRN_EIO, "dest: %s: %s", file, strerror(errno));
        goto undo;
    }
    rc = copy_snapshot(s->env, fd);
    if (rc == CAIRN_OK) rc = cairn__keys_backup(s->env, dest); /* after the snapshot: see there */
    /* durable before it is announced: a backup that a crash can lose is not one */
    if (rc == CAIRN_OK && fsync(fd) != 0)
        rc = cairn__fail(CAIRN_EIO, "backup: fsync %s: %s", file, strerror(errno));
    if (close(fd) != 0 && rc == CAIRN_OK)
        rc = cairn__fail(CAIRN_EIO, "backup: close %s: %s", file, strerror(errno));
    if (rc == CAIRN_OK && (errno = fsync_dir(dest)) != 0)
        rc = cairn__fail(CAIRN_EIO, "backup: fsync %s: %s", dest, strerror(errno));
    if (rc == CAIRN_OK) return CAIRN_OK;
    unlink(file);
    snprintf(file, sizeof file, "%s/keys", dest);
    unlink(file);
undo:
    if (made) rmdir(dest);
    return rc;
}

/* ---------------------------------------------------------------------------------
 * The file's figures.  Free pages are counted as mdb_stat -f does: each record of LMDB's
 * free database (dbi 0) is a list of page numbers whose first word is its length.
 * --------------------------------------------------------------------------------- */
int cairn_stat(cairn_store *s, cairn_filestat *out) {
    MDB_envinfo info;
    MDB_stat st;
    MDB_txn *txn;
    MDB_cursor *c;
    MDB_val k, v;
    struct stat fs;
    char file[PATH_MAX];
    int rc;

    cairn__clear_error();
    if (!out) return cairn__fail(CAIRN_EINVAL, "out: NULL");
    memset(out, 0, sizeof *out);
    if ((rc = cairn__store_check(s))) return rc;
    snprintf(file, sizeof file, "%s/data.mdb", s->env->path);
    if (stat(file, &fs) != 0) return cairn__fail(CAIRN_EIO, "%s: %s", file, strerror(errno));
    out->file_bytes = (uint64_t)fs.st_size;
    if ((rc = cairn__read_begin(s->env, &txn))) return rc;
    if ((rc = mdb_env_info(s->env->env, &info)) || (rc = mdb_env_stat(s->env->env, &st)) ||
        (rc = mdb_cursor_open(txn, 0, &c))) {
        cairn__read_end(s->env, txn);
        return cairn__mdb_fail(rc, "stat");
    }
    out->map_bytes = info.me_mapsize;
    out->page_size = st.ms_psize;
    out->pages_used = (uint64_t)info.me_last_pgno + 1;
    out->txn_id = info.me_last_txnid;
    while ((rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) == 0)
        if (v.mv_size >= sizeof(size_t)) out->pages_free += *(const size_t *)v.mv_data;
    mdb_cursor_close(c);
    cairn__read_end(s->env, txn);
    return rc == MDB_NOTFOUND ? CAIRN_OK : cairn__mdb_fail(rc, "stat: free list");
}
