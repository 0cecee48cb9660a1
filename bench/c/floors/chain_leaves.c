/* BLAKE3 leaves of 1,000 records hashed 16 at a time (its internal blake3_hash_many, AVX-512
 * here), then linked one compression per record or once per commit: see chain.c for how to
 * build it. */
#include "blake3.h"
#include "blake3_impl.h"
#include <stdio.h>
#include <string.h>
#include <stdlib.h>
#include <time.h>
static double now(void){struct timespec t;clock_gettime(CLOCK_MONOTONIC,&t);return t.tv_sec+t.tv_nsec*1e-9;}
int main(void){
  size_t rec=384, n=1000; unsigned char *buf=malloc(rec*n); for(size_t i=0;i<rec*n;i++)buf[i]=i*7;
  const uint8_t *in[1000]; for(size_t i=0;i<n;i++) in[i]=buf+i*rec;
  uint8_t *leaves=malloc(32*n); int R=2000; double t;
  t=now(); for(int r=0;r<R;r++){ blake3_hash_many(in,n,rec/64,IV,0,false,0,CHUNK_START,CHUNK_END|ROOT,leaves);}
  printf("hash_many leaves (6 blocks): %.1f ns/event\n",(now()-t)/R/n*1e9);
  /* check equals standard */
  uint8_t o[32]; blake3_hasher h; blake3_hasher_init(&h); blake3_hasher_update(&h,buf+5*rec,rec); blake3_hasher_finalize(&h,o,32);
  printf("equal: %d\n", !memcmp(o,leaves+5*32,32));
  uint32_t cv[8]; memcpy(cv,IV,32); uint8_t blk[64];
  t=now(); for(int r=0;r<R;r++){ for(size_t i=0;i<n;i++){ memcpy(blk,cv,32); memcpy(blk+32,leaves+i*32,32); memcpy(cv,IV,32); blake3_compress_in_place(cv,blk,64,0,CHUNK_START|CHUNK_END|ROOT);} }
  printf("sequential link compress: %.1f ns/event\n",(now()-t)/R/n*1e9);
  t=now(); for(int r=0;r<R;r++){ blake3_hasher_init(&h); blake3_hasher_update(&h,leaves,32*n); blake3_hasher_finalize(&h,o,32);} 
  printf("commit over leaves: %.1f ns/event\n",(now()-t)/R/n*1e9);
  return 0;}
