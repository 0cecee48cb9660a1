/*
 * fuzz_filecheck.c -- libFuzzer target: the input is a data.mdb, checked (filecheck.c) with
 * the tree walk forced.  Whatever the bytes, the check reads only inside the file and its own
 * buffers, ends, and either passes or fails with a message; a pass reaches only pages the
 * file holds.  The corpus holds real stores (4 KiB pages) and small hand-made ones (512-byte
 * pages: the meta page's size field is trusted from 512 up).
 */
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "storage.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static char path[64];
    cairn_filecheck fc;
    int fd, rc;
    if (!path[0]) snprintf(path, sizeof path, "/dev/shm/fuzz-filecheck-%d", (int)getpid());
    if ((fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600)) < 0) abort();
    if (size && write(fd, data, size) != (ssize_t)size) abort();
    close(fd);
    rc = cairn__file_check(path, 1, &fc);
    if (rc != CAIRN_OK && rc != CAIRN_ECORRUPT) abort();
    if (rc == CAIRN_OK && fc.walked && fc.reached > fc.file_bytes / fc.psize) abort();
    if (rc == CAIRN_ECORRUPT && !cairn_errmsg()[0]) abort();
    unlink(path);
    return 0;
}
