/* NF4 / FP4 dequantization for CPU: reference.py's dequantize (level[code] * block absmax) in one pass.

   Why C at all: dequantizing is a 16-entry table lookup and a multiply per value. In plain torch that is several
   passes over memory (widen the codes, gather, scale, round to bfloat16); here it is one, as in bitsandbytes'
   native kernel. native.py compiles this file on first use with the system C compiler and checks it against
   reference.py; without a compiler fast.py's torch path runs. tests/test_nf4_fast.py checks both give the same bits.

   Per block of bs values: absmax (from its 8-bit code under double quantization), the 16 products
   level[k] * absmax in float32 (rounded once to bfloat16 for bfloat16 output), then one lookup per 4-bit code.
   With SSSE3 (every x86-64 CPU since ~2008) the lookup is pshufb: the 16 products are split into byte planes,
   and each plane answers 16 lookups in one instruction. Elsewhere, a plain loop does the same. */
#include <stdint.h>
#include <string.h>
#if defined(__SSSE3__) && !defined(NF4_PORTABLE)
#include <tmmintrin.h>
#define NF4_SIMD 1
#endif

#ifdef NF4_SIMD
/* 16 values -> byte planes: plane p holds byte p of every level (little-endian), one pshufb table per plane. */
static inline int planes_f32(__m128i v0, __m128i v1, __m128i v2, __m128i v3, __m128i p[4]) {
  const __m128i m = _mm_setr_epi8(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
  __m128i s0 = _mm_shuffle_epi8(v0, m), s1 = _mm_shuffle_epi8(v1, m), s2 = _mm_shuffle_epi8(v2, m), s3 = _mm_shuffle_epi8(v3, m);
  __m128i t0 = _mm_unpacklo_epi32(s0, s1), t1 = _mm_unpacklo_epi32(s2, s3);
  __m128i t2 = _mm_unpackhi_epi32(s0, s1), t3 = _mm_unpackhi_epi32(s2, s3);
  p[0] = _mm_unpacklo_epi64(t0, t1); p[1] = _mm_unpackhi_epi64(t0, t1);
  p[2] = _mm_unpacklo_epi64(t2, t3); p[3] = _mm_unpackhi_epi64(t2, t3);
  return 4;
}
static inline __m128i bf16_rne4(__m128 v) {  /* float32 -> bfloat16 (round to nearest even), sign-extended to int32 */
  __m128i u = _mm_castps_si128(v);
  __m128i r = _mm_add_epi32(u, _mm_add_epi32(_mm_set1_epi32(0x7FFF), _mm_and_si128(_mm_srli_epi32(u, 16), _mm_set1_epi32(1))));
  return _mm_srai_epi32(r, 16);
}
static inline int planes_bf16(__m128 v0, __m128 v1, __m128 v2, __m128 v3, __m128i p[4]) {
  const __m128i m = _mm_setr_epi8(0, 2, 4, 6, 8, 10, 12, 14, 1, 3, 5, 7, 9, 11, 13, 15);
  __m128i w0 = _mm_shuffle_epi8(_mm_packs_epi32(bf16_rne4(v0), bf16_rne4(v1)), m);
  __m128i w1 = _mm_shuffle_epi8(_mm_packs_epi32(bf16_rne4(v2), bf16_rne4(v3)), m);
  p[0] = _mm_unpacklo_epi64(w0, w1); p[1] = _mm_unpackhi_epi64(w0, w1);
  return 2;
}
#endif

static inline uint16_t bf16_rne(float f) {
  uint32_t u; memcpy(&u, &f, 4);
  return (uint16_t)((u + 0x7FFFu + ((u >> 16) & 1u)) >> 16);
}

void nf4_dequantize_blocks(const uint8_t *codes, const float *levels,
                           const float *absmax, const uint8_t *qabsmax, const float *dmap, const float *dq_scale,
                           float dq_offset, int64_t dq_bs,
                           void *out, int64_t b0, int64_t b1, int64_t bs, int out_bf16) {
  const int64_t nbytes = bs / 2;
  const int width = out_bf16 ? 2 : 4;
#ifdef NF4_SIMD
  const __m128 L0 = _mm_loadu_ps(levels), L1 = _mm_loadu_ps(levels + 4), L2 = _mm_loadu_ps(levels + 8), L3 = _mm_loadu_ps(levels + 12);
  const __m128i m = _mm_set1_epi8(0x0F);
#endif
  int64_t s = b0 / dq_bs, r = b0 % dq_bs;  /* which double-quantization scale; a counter, not a division per block */
  for (int64_t b = b0; b < b1; b++) {
    /* double quantization: two roundings (multiply, then add), like torch; built with -ffp-contract=off */
    const float a = absmax ? absmax[b] : dmap[qabsmax[b]] * dq_scale[s] + dq_offset;
    if (++r == dq_bs) { r = 0; s++; }
    const uint8_t *c = codes + b * nbytes;
    uint8_t *o = (uint8_t *)out + b * bs * width;
#ifdef NF4_SIMD
    const __m128 A = _mm_set1_ps(a);
    __m128 v0 = _mm_mul_ps(L0, A), v1 = _mm_mul_ps(L1, A), v2 = _mm_mul_ps(L2, A), v3 = _mm_mul_ps(L3, A);
    __m128i p[4];
    if (out_bf16) planes_bf16(v0, v1, v2, v3, p);
    else planes_f32(_mm_castps_si128(v0), _mm_castps_si128(v1), _mm_castps_si128(v2), _mm_castps_si128(v3), p);
    for (int64_t j = 0; j < nbytes; j += 16) {  /* bs >= 32, so nbytes is a multiple of 16 */
      __m128i x = _mm_loadu_si128((const __m128i *)(c + j));
      __m128i hi = _mm_and_si128(_mm_srli_epi16(x, 4), m), lo = _mm_and_si128(x, m);
      __m128i idx[2] = {_mm_unpacklo_epi8(hi, lo), _mm_unpackhi_epi8(hi, lo)};  /* the high nibble comes first */
      for (int h = 0; h < 2; h++) {
        __m128i b0v = _mm_shuffle_epi8(p[0], idx[h]), b1v = _mm_shuffle_epi8(p[1], idx[h]);
        __m128i w0 = _mm_unpacklo_epi8(b0v, b1v), w1 = _mm_unpackhi_epi8(b0v, b1v);
        uint8_t *dst = o + (2 * j + 16 * h) * width;
        if (out_bf16) {
          _mm_storeu_si128((__m128i *)dst, w0);
          _mm_storeu_si128((__m128i *)(dst + 16), w1);
        } else {
          __m128i b2v = _mm_shuffle_epi8(p[2], idx[h]), b3v = _mm_shuffle_epi8(p[3], idx[h]);
          __m128i u0 = _mm_unpacklo_epi8(b2v, b3v), u1 = _mm_unpackhi_epi8(b2v, b3v);
          _mm_storeu_si128((__m128i *)dst, _mm_unpacklo_epi16(w0, u0));
          _mm_storeu_si128((__m128i *)(dst + 16), _mm_unpackhi_epi16(w0, u0));
          _mm_storeu_si128((__m128i *)(dst + 32), _mm_unpacklo_epi16(w1, u1));
          _mm_storeu_si128((__m128i *)(dst + 48), _mm_unpackhi_epi16(w1, u1));
        }
      }
    }
#else
    if (out_bf16) {
      uint16_t t[16], *d = (uint16_t *)o;
      for (int k = 0; k < 16; k++) t[k] = bf16_rne(levels[k] * a);
      for (int64_t j = 0; j < nbytes; j++) { d[2 * j] = t[c[j] >> 4]; d[2 * j + 1] = t[c[j] & 15]; }
    } else {
      float t[16], *d = (float *)o;
      for (int k = 0; k < 16; k++) t[k] = levels[k] * a;
      for (int64_t j = 0; j < nbytes; j++) { d[2 * j] = t[c[j] >> 4]; d[2 * j + 1] = t[c[j] & 15]; }
    }
#endif
  }
}
