/*
 * mdb_error.c -- LMDB and errno codes mapped to CAIRN_E* codes at the storage boundary, with
 * LMDB's text kept in the message (cairn_errmsg) rather than mixing the two code spaces.
 */
#include <errno.h>

#include "storage.h"

int cairn__mdb_fail(int rc, const char *what) {
    switch (rc) {
    case MDB_INVALID:
    case MDB_CORRUPTED:
    case MDB_PAGE_NOTFOUND:
    case MDB_VERSION_MISMATCH:
    case MDB_INCOMPATIBLE:
    case MDB_BAD_DBI: return cairn__fail(CAIRN_ECORRUPT, "%s: %s", what, mdb_strerror(rc));
    case ENOMEM: return cairn__fail(CAIRN_ENOMEM, "%s: out of memory", what);
    case EACCES:
    case EROFS: return cairn__fail(CAIRN_EREADONLY, "%s: %s", what, mdb_strerror(rc));
    case ENOENT: return cairn__fail(CAIRN_ENOENT, "%s: %s", what, mdb_strerror(rc));
    default: return cairn__fail(CAIRN_EIO, "%s: %s", what, mdb_strerror(rc));
    }
}
