/*
 * fuzz_record.c -- libFuzzer target: decoding a stored record (format 1, 2 or 3) from arbitrary
 * bytes must end in CAIRN_OK or CAIRN_ECORRUPT, never in a read outside the input; a record
 * that decodes is hashed into the chain (which reads every byte of it) and, for format 2, its
 * subject lies inside the record.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define XXH_INLINE_ALL
#include <xxhash.h>

#include "storage.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    cairn_event ev;
    cairn_rec_info info;
    uint8_t *copy = malloc(size ? size : 1); /* exact-size heap copy: ASan sees any overread */
    if (!copy) return 0;
    if (cairn__chain_init()) abort(); /* sodium_init, once */
    memcpy(copy, data, size);
    /* Odd inputs are sealed with a valid checksum first, so that the fuzzer also reaches
     * the structure checks behind it (lengths, format, position); even ones test the seal. */
    /* format 3 has no stored position (its checksum is seeded with the key): position 1;
     * for the others 0 skips the key check */
    uint64_t pos = size > 8 && copy[8] == 3 ? 1 : 0;
    if (size >= 8 && (data[size - 1] & 1))
        cairn__put_le64(copy, XXH3_64bits_withSeed(copy + 8, size - 8, pos));
    if (cairn__record_decode_ex(copy, size, pos, &ev, &info) == CAIRN_OK) {
        size_t cur = 0, n = 0;
        cairn_slice t;
        volatile size_t sum = 0;
        uint8_t h[32];
        if (info.format < 1 || info.format > 3) abort();
        if (info.format == 2 && (!info.chain || info.chain != copy + 72)) abort();
        if (info.format == 3 && info.chain && info.chain != copy + CAIRN_REC_FIXED) abort();
        if ((const uint8_t *)info.subject.ptr < copy ||
            (const uint8_t *)info.subject.ptr + info.subject.len > copy + size)
            abort();
        for (size_t i = 0; i < info.subject.len; i++) sum += ((const uint8_t *)info.subject.ptr)[i];
        cairn__chain_hash(cairn__chain_genesis(), pos, copy, size, h);
        sum += h[0];
        while (cairn_event_tag(&ev, &cur, &t)) sum += t.len, n++;
        for (size_t i = 0; i < ev.data.len; i++) sum += ((const uint8_t *)ev.data.ptr)[i];
        for (size_t i = 0; i < ev.metadata.len; i++) sum += ((const uint8_t *)ev.metadata.ptr)[i];
        (void)sum;
    }
    free(copy);
    return 0;
}
