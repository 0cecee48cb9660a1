/* What one 200-byte event costs to seal with each AEAD libsodium and OpenSSL offer here
 * (issue 13's encryption target; bench/RESULTS.md, "What the batched targets would need").
 * Not part of the build: cc -O2 bench/c/floors/aead.c -lsodium -lcrypto -o /tmp/aead && /tmp/aead */
#include <sodium.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
static double now(void){struct timespec t;clock_gettime(CLOCK_MONOTONIC,&t);return t.tv_sec+t.tv_nsec*1e-9;}
int main(void){
  if (sodium_init() < 0) return 1;
  unsigned char key[32]={1},sub[32], pt[200]={2}, ct[300], ad[28]={3}, n12[12]={0}, n24[24]={0}; unsigned long long clen; int N=1000000; double t;
  crypto_core_hchacha20(sub,n24,key,NULL);
  t=now(); for(int i=0;i<N;i++){n12[4]=i; crypto_aead_chacha20poly1305_ietf_encrypt(ct,&clen,pt,200,ad,28,NULL,n12,sub);} printf("chacha20poly1305 ietf: %.0f ns\n",(now()-t)/N*1e9);
  crypto_aead_aes256gcm_state st; crypto_aead_aes256gcm_beforenm(&st,key);
  t=now(); for(int i=0;i<N;i++){n12[4]=i; crypto_aead_aes256gcm_encrypt_afternm(ct,&clen,pt,200,ad,28,NULL,n12,&st);} printf("sodium aes256gcm afternm: %.0f ns\n",(now()-t)/N*1e9);
  EVP_CIPHER_CTX *c=EVP_CIPHER_CTX_new(); EVP_EncryptInit_ex(c,EVP_aes_256_gcm(),NULL,key,NULL);
  int l; unsigned char tag[16];
  t=now(); for(int i=0;i<N;i++){n12[4]=i; EVP_EncryptInit_ex(c,NULL,NULL,NULL,n12); EVP_EncryptUpdate(c,NULL,&l,ad,28); EVP_EncryptUpdate(c,ct,&l,pt,200); EVP_EncryptFinal_ex(c,ct+l,&l); EVP_CIPHER_CTX_ctrl(c,EVP_CTRL_GCM_GET_TAG,16,tag);} printf("openssl aes256gcm: %.0f ns\n",(now()-t)/N*1e9);
  t=now(); for(int i=0;i<N/10;i++){EVP_EncryptInit_ex(c,NULL,NULL,key,NULL);} printf("openssl key setup: %.0f ns\n",(now()-t)/(N/10)*1e9);
  t=now(); for(int i=0;i<N/10;i++){crypto_generichash(sub,32,n24,24,key,32);} printf("blake2b keyed derive: %.0f ns\n",(now()-t)/(N/10)*1e9);
  return 0;}
