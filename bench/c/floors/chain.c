/* The hash chain's floor: BLAKE2b (libsodium) and BLAKE3 per record and per commit of 1,000
 * 329-byte records (issue 13's chain target; bench/RESULTS.md, "What the batched targets would
 * need").  Not part of the build; BLAKE3's C sources come from Debian's librust-blake3-dev,
 * unpacked without installing it (it depends on a dozen Rust source packages):
 *   cd /tmp && apt-get download librust-blake3-dev && dpkg-deb -x librust-blake3-dev_*.deb b3
 *   B3=/tmp/b3/usr/share/cargo/registry/blake3-1.3.1/c
 *   cc -O2 -I$B3 bench/c/floors/chain.c $B3/blake3.c $B3/blake3_dispatch.c $B3/blake3_portable.c \
 *      $B3/blake3_*_x86-64_unix.S -lsodium -o /tmp/chain && /tmp/chain
 * (chain_leaves.c the same way, without -lsodium). */
#include "blake3.h"
#include <sodium.h>
#include <stdio.h>
#include <string.h>
#include <stdlib.h>
#include <time.h>
static double now(void){struct timespec t;clock_gettime(CLOCK_MONOTONIC,&t);return t.tv_sec+t.tv_nsec*1e-9;}
int main(void){
  if (sodium_init() < 0) return 1;
  size_t rec=329, n=1000; unsigned char *buf=malloc(rec*n); for(size_t i=0;i<rec*n;i++)buf[i]=i*7;
  unsigned char out[32]; int R=2000; double t;
  /* per-commit blake3 over contiguous */
  t=now(); for(int r=0;r<R;r++){blake3_hasher h; blake3_hasher_init(&h); blake3_hasher_update(&h,buf,rec*n); blake3_hasher_finalize(&h,out,32); buf[0]^=out[0];}
  printf("blake3 commit contiguous: %.1f ns/event\n",(now()-t)/R/n*1e9);
  /* blake3 per-record update into one hasher */
  t=now(); for(int r=0;r<R;r++){blake3_hasher h; blake3_hasher_init(&h); for(size_t i=0;i<n;i++) blake3_hasher_update(&h,buf+i*rec,rec); blake3_hasher_finalize(&h,out,32); buf[0]^=out[0];}
  printf("blake3 commit per-record updates: %.1f ns/event\n",(now()-t)/R/n*1e9);
  /* per-record blake3 one-shot */
  t=now(); for(int r=0;r<R/4;r++){for(size_t i=0;i<n;i++){blake3_hasher h; blake3_hasher_init(&h); blake3_hasher_update(&h,out,32); blake3_hasher_update(&h,buf+i*rec,rec-8); blake3_hasher_finalize(&h,out,32);} }
  printf("blake3 per-record chain: %.1f ns/event\n",(now()-t)/(R/4)/n*1e9);
  t=now(); for(int r=0;r<R/4;r++){for(size_t i=0;i<n;i++){crypto_generichash_state h; crypto_generichash_init(&h,NULL,0,32); crypto_generichash_update(&h,out,32); crypto_generichash_update(&h,buf+i*rec,rec-8); crypto_generichash_final(&h,out,32);} }
  printf("blake2b per-record chain: %.1f ns/event\n",(now()-t)/(R/4)/n*1e9);
  t=now(); for(int r=0;r<R/4;r++){crypto_generichash_state h; crypto_generichash_init(&h,NULL,0,32); crypto_generichash_update(&h,buf,rec*n); crypto_generichash_final(&h,out,32);}
  printf("blake2b commit contiguous: %.1f ns/event\n",(now()-t)/(R/4)/n*1e9);
  t=now(); for(int r=0;r<R;r++){memcpy(buf+1, buf+rec*n/2, rec*n/2-1);}
  printf("memcpy half: %.1f ns/event\n",(now()-t)/R/n*1e9);
  return 0;}
