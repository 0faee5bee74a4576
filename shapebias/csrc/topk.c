/* Spatial Top-K of shapebias.sparsity for float32 CPU tensors (loaded by shapebias._topk_kernel).
 *
 * A row is the H*W positions of one (sample, channel); its elements are `ss` floats apart.
 * Per row: a histogram of the keys' top byte finds the bin holding the keep-th largest key, an
 * exact radix select among that bin's members finds the key itself, then one pass writes the
 * output and the code of each position. Keys are unsigned integers whose order is the order of |x|
 * (abs) or of x (raw), so the select works on bits. Ties at the threshold go to the lowest index.
 * The code: bit 0 = kept (or, in COMPLEMENT mode, dropped); bit 1 = the position receives the
 * row's mean (mean modes only). What the backward needs is saved as packed bits (one bit per
 * position and code bit). The mean modes sum in the fixed order of tree_sum below, which the
 * Python definition (shapebias.sparsity.tree_sum) restates. */

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif

enum { MODE_TOPK = 0, MODE_COMPLEMENT = 1, MODE_MEAN_NONZERO = 2, MODE_MEAN_RAW = 3 };

#define ALWAYS_INLINE static inline __attribute__((always_inline))

ALWAYS_INLINE uint32_t float_bits(float f) {
  uint32_t v;
  memcpy(&v, &f, 4);
  return v;
}

ALWAYS_INLINE float bits_float(uint32_t v) {
  float f;
  memcpy(&f, &v, 4);
  return f;
}

/* v where the code byte has `bit`, else +0.0 (a bit mask, so that loops vectorise) */
ALWAYS_INLINE float select_bit(float v, uint8_t code, uint8_t bit) {
  return bits_float(float_bits(v) & -(uint32_t)((code & bit) != 0));
}

ALWAYS_INLINE uint32_t key_abs(uint32_t bits) { return bits << 1; } /* drops the sign bit */

ALWAYS_INLINE uint32_t key_raw(uint32_t bits) {
  bits &= -(uint32_t)(bits != 0x80000000u);                   /* -0.0 ranks as +0.0 */
  return bits ^ ((uint32_t)((int32_t)bits >> 31) | 0x80000000u); /* negative: all bits flipped */
}

/* For each byte of a bit mask: the positions of its set bits (then unused), their count, and an
 * all-ones word for each set bit. */
static int32_t lut_pos[256][8];
static uint8_t lut_count[256];
static uint32_t lut_mask[256][8];

__attribute__((constructor)) static void init_luts(void) {
  for (int m = 0; m < 256; ++m) {
    int c = 0;
    for (int j = 0; j < 8; ++j) {
      if (m >> j & 1) lut_pos[m][c++] = j;
      lut_mask[m][j] = (m >> j & 1) ? 0xffffffffu : 0u;
    }
    lut_count[m] = (uint8_t)c;
  }
}

/* The indices i (ascending) with u[i] >> 24 == b into idx; returns how many. idx holds n + 8. */
static int64_t collect_bin(const uint32_t *u, int64_t n, uint32_t b, int32_t *idx) {
  int64_t m = 0, i = 0;
#if defined(__SSE2__)
  const __m128i vb = _mm_set1_epi32((int)b);
  for (; i + 16 <= n; i += 16) {
    __m128i e[4];
    for (int q = 0; q < 4; ++q)
      e[q] = _mm_cmpeq_epi32(_mm_srli_epi32(_mm_loadu_si128((const __m128i *)(u + i + 4 * q)), 24), vb);
    const unsigned mask = (unsigned)_mm_movemask_epi8(
        _mm_packs_epi16(_mm_packs_epi32(e[0], e[1]), _mm_packs_epi32(e[2], e[3])));
    for (int h = 0; h < 2; ++h) {
      const unsigned byte = (mask >> (8 * h)) & 0xffu;
      const __m128i base = _mm_set1_epi32((int)(i + 8 * h));
      const __m128i *pos = (const __m128i *)lut_pos[byte];
      _mm_storeu_si128((__m128i *)(idx + m), _mm_add_epi32(_mm_loadu_si128(pos), base));
      _mm_storeu_si128((__m128i *)(idx + m + 4), _mm_add_epi32(_mm_loadu_si128(pos + 1), base));
      m += lut_count[byte];
    }
  }
#endif
  for (; i < n; ++i) {
    idx[m] = (int32_t)i;
    m += (u[i] >> 24) == b;
  }
  return m;
}

/* Exact `remaining`-th largest of src[0..m) by an MSD radix select over the 8-bit digits from
 * `d0` on (the digits before d0 are equal in all of src; `prefix` holds them). Sets the threshold
 * `t`, how many elements equal to it are kept (`need`; every other kept element is greater) and
 * how many equal it (`equal`). */
static void radix_select(const uint32_t *src, int64_t m, int64_t remaining, int d0, uint32_t prefix,
                         uint32_t *buf_a, uint32_t *buf_b, uint32_t *t_out, int64_t *need_out,
                         int64_t *equal_out) {
  int64_t hist[256];
  for (int d = d0; d < 4; ++d) {
    const int s = 24 - 8 * d;
    memset(hist, 0, sizeof(hist));
    for (int64_t i = 0; i < m; ++i) hist[(src[i] >> s) & 0xffu]++;
    int64_t above = 0;
    int b = 255;
    for (; b > 0; --b) {
      if (above + hist[b] >= remaining) break;
      above += hist[b];
    }
    remaining -= above;
    prefix |= ((uint32_t)b) << s;
    if (d == 3) {
      *equal_out = hist[b]; /* the last digit: every element of bin b equals the threshold */
      break;
    }
    if (hist[b] == remaining) { /* the whole bin is kept: the threshold is its minimum */
      uint32_t lo = 0xffffffffu;
      int64_t eq = 0;
      for (int64_t i = 0; i < m; ++i) {
        const uint32_t v = src[i];
        if (((v >> s) & 0xffu) == (uint32_t)b && v < lo) lo = v;
      }
      for (int64_t i = 0; i < m; ++i) eq += (src[i] == lo);
      *t_out = lo;
      *need_out = eq;
      *equal_out = eq;
      return;
    }
    uint32_t *dst = (src == buf_a) ? buf_b : buf_a;
    int64_t j = 0;
    for (int64_t i = 0; i < m; ++i) { /* keep the candidates of bin b */
      const uint32_t v = src[i];
      dst[j] = v;
      j += (((v >> s) & 0xffu) == (uint32_t)b);
    }
    src = dst;
    m = j;
  }
  *t_out = prefix;
  *need_out = remaining;
}

/* The fixed summation order of the mean modes: the n values of buf padded with +0.0 to the next
 * power of two P, then halved P -> P/2 -> ... -> 1 by adding the upper half to the lower half
 * elementwise. buf holds at least 2 n floats; it is overwritten. */
static float tree_sum(float *buf, int64_t n) {
  int64_t p = 1;
  while (p < n) p <<= 1;
  for (int64_t i = n; i < p; ++i) buf[i] = 0.0f;
  for (int64_t len = p; len > 1; len >>= 1) {
    const int64_t h = len >> 1;
    float *restrict lo = buf;
    const float *restrict hi = buf + h;
    for (int64_t j = 0; j < h; ++j) lo[j] = lo[j] + hi[j];
  }
  return buf[0];
}

/* Per-position codes (lc, contiguous) and out (unless NULL or a mean mode) of a row by comparison
 * of its keys with t: kept when above t, or equal to it unless `strict`. Mean modes: bit 0 kept,
 * bit 1 receives the mean, and sel = the kept values (+0.0 elsewhere). */
ALWAYS_INLINE void write_codes(const float *restrict xr, float *restrict orow, uint8_t *restrict lc,
                               const int64_t ss, int64_t n, const uint32_t *restrict u, uint32_t t,
                               const int strict, uint8_t flip, int mode, float *restrict sel) {
  if (mode == MODE_MEAN_NONZERO || mode == MODE_MEAN_RAW) {
    const int raw = mode == MODE_MEAN_RAW;
    for (int64_t i = 0; i < n; ++i) {
      const uint32_t xb = float_bits(xr[i * ss]);
      const uint32_t kept = strict ? u[i] > t : u[i] >= t;
      const uint32_t nonzero = (xb << 1) != 0;
      lc[i] = (uint8_t)(kept | ((raw ? kept : kept & nonzero) << 1));
      sel[i] = bits_float(xb & -kept); /* the kept values, +0.0 elsewhere: what the mean sums */
    }
  } else if (orow) {
    for (int64_t i = 0; i < n; ++i) {
      const uint8_t pass = (uint8_t)((strict ? u[i] > t : u[i] >= t) ^ flip);
      lc[i] = pass;
      orow[i * ss] = bits_float(float_bits(xr[i * ss]) & -(uint32_t)pass);
    }
  } else {
    for (int64_t i = 0; i < n; ++i) lc[i] = (uint8_t)((strict ? u[i] > t : u[i] >= t) ^ flip);
  }
}

/* bit `shift` of lc[0..n) packed into dst, 8 positions a byte, lowest position in bit 0 */
static void pack_bits(const uint8_t *lc, int64_t n, int shift, uint8_t *dst) {
  int64_t i = 0;
#if defined(__SSE2__)
  const __m128i count = _mm_cvtsi32_si128(7 - shift);
  for (; i + 16 <= n; i += 16) {
    const __m128i v = _mm_sll_epi16(_mm_loadu_si128((const __m128i *)(lc + i)), count);
    const unsigned m = (unsigned)_mm_movemask_epi8(v); /* bit 7 of each byte */
    dst[i / 8] = (uint8_t)m;
    dst[i / 8 + 1] = (uint8_t)(m >> 8);
  }
#endif
  for (; i < n; i += 8) {
    uint8_t byte = 0;
    for (int j = 0; j < 8 && i + j < n; ++j) byte |= (uint8_t)(((lc[i + j] >> shift) & 1u) << j);
    dst[i / 8] = byte;
  }
}

/* One row of shapebias_topk_f32 (see there); work holds 7 n + 32 words. */
ALWAYS_INLINE void row_forward(const float *restrict xr, float *restrict orow, uint8_t *restrict cr,
                               uint8_t *restrict bits, const int64_t ss, int64_t n, int64_t keep,
                               int mode, uint32_t *work) {
  const int raw = mode == MODE_MEAN_RAW;
  const int mean_mode = mode == MODE_MEAN_NONZERO || mode == MODE_MEAN_RAW;
  const uint8_t flip = (uint8_t)(mode == MODE_COMPLEMENT);
  uint32_t *restrict u = work;
  uint32_t *restrict ck = work + n;
  int32_t *restrict idx = (int32_t *)(work + 3 * n); /* n + 8 words: up to tbuf */
  float *restrict tbuf = (float *)(work + 4 * n + 8); /* 2 n words */
  uint8_t *restrict lc = (uint8_t *)(work + 6 * n + 16); /* n bytes */
  for (int64_t i = 0; i < n; ++i) {
    const uint32_t v = float_bits(xr[i * ss]);
    u[i] = raw ? key_raw(v) : key_abs(v);
  }
  /* 1. the top byte's histogram (four interleaved ones, so that runs of equal bytes do not
   *    serialise on one counter) and the bin b holding the threshold */
  uint32_t h4[4][256];
  memset(h4, 0, sizeof(h4));
  int64_t i4 = 0;
  for (; i4 + 4 <= n; i4 += 4)
    for (int j = 0; j < 4; ++j) h4[j][u[i4 + j] >> 24]++;
  for (; i4 < n; ++i4) h4[0][u[i4] >> 24]++;
  uint32_t b = 0;
  int64_t above = 0, in_bin = n;
  if (keep < n) {
    for (b = 255; b > 0; --b) {
      const int64_t c = (int64_t)h4[0][b] + h4[1][b] + h4[2][b] + h4[3][b];
      if (above + c >= keep) {
        in_bin = c;
        break;
      }
      above += c;
    }
    if (b == 0) in_bin = (int64_t)h4[0][0] + h4[1][0] + h4[2][0] + h4[3][0];
  }
  const int64_t remaining = keep - above; /* how many of bin b are kept */
  /* 2. the threshold t: found among bin b's members, unless bin b is kept whole */
  uint32_t t = b << 24;
  int64_t need = 0, equal = 0, m = 0;
  if (remaining != in_bin) {
    m = collect_bin(u, n, b, idx);
    for (int64_t j = 0; j < m; ++j) ck[j] = u[idx[j]];
    radix_select(ck, m, remaining, 1, b << 24, ck + n, (uint32_t *)tbuf, &t, &need, &equal);
  }
  /* 3. one pass: keys above t are kept, and those equal to it unless some of them are dropped;
   *    those ties are then kept by index, lowest first */
  const int ties = need != equal;
  if (ties) write_codes(xr, orow, lc, ss, n, u, t, 1, flip, mode, tbuf);
  else write_codes(xr, orow, lc, ss, n, u, t, 0, flip, mode, tbuf);
  for (int64_t j = 0; ties && j < m && need > 0; ++j) {
    if (ck[j] != t) continue;
    --need;
    const int64_t i = idx[j];
    const uint8_t kept = (uint8_t)(1 ^ flip);
    const uint8_t gets = raw ? 1 : (uint8_t)((float_bits(xr[i * ss]) << 1) != 0);
    lc[i] = mean_mode ? (uint8_t)(1 | (gets << 1)) : kept;
    if (mean_mode) tbuf[i] = xr[i * ss];
    if (orow && !mean_mode) orow[i * ss] = bits_float(float_bits(xr[i * ss]) & -(uint32_t)kept);
  }
  if (cr)
    for (int64_t i = 0; i < n; ++i) cr[i * ss] = lc[i];
  if (bits) {
    const int64_t nb = (n + 7) / 8;
    pack_bits(lc, n, 0, bits);
    if (mean_mode) pack_bits(lc, n, 1, bits + nb);
  }
  if (!mean_mode || !orow) return;
  const float mean = tree_sum(tbuf, n) / (float)keep;
  const uint32_t mean_bits = float_bits(mean);
  for (int64_t i = 0; i < n; ++i) { /* the mean where bit 1, else x where bit 0, else 0 */
    const uint32_t c = lc[i];
    const uint32_t m1 = -(uint32_t)((c >> 1) & 1u), m0 = -(uint32_t)(c & 1u);
    orow[i * ss] = bits_float((mean_bits & m1) | (float_bits(xr[i * ss]) & m0 & ~m1));
  }
}

static void row_forward_any(const float *xr, float *orow, uint8_t *cr, uint8_t *bits, int64_t ss,
                            int64_t n, int64_t keep, int mode, uint32_t *work) {
  if (ss == 1) row_forward(xr, orow, cr, bits, 1, n, keep, mode, work); /* unit stride: vectorised */
  else row_forward(xr, orow, cr, bits, ss, n, keep, mode, work);
}

/* For each of the `rows` (n, c) rows (row r starts at (r / C) * sN + (r % C) * sC; its n positions
 * are `ss` elements apart, in x, out and code alike) select the keep largest keys and write out,
 * code and bits (each skipped when NULL). Modes: TOPK out = x * kept; COMPLEMENT out = x * dropped;
 * MEAN_NONZERO (|x| ranking) out = mean where kept and x != 0, else x where kept, else 0; MEAN_RAW
 * (x ranking) out = mean where kept, else 0; mean = tree_sum(kept x) / keep. `bits` holds, per row,
 * (n + 7) / 8 bytes of bit 0 of the code (kept, or dropped in COMPLEMENT), then in the mean modes as
 * many of bit 1. Returns 0, or 1 when a buffer could not be allocated. */
int shapebias_topk_f32(const float *x, float *out, uint8_t *code, uint8_t *bits, int64_t rows,
                       int64_t C, int64_t sN, int64_t sC, int64_t ss, int64_t n, int64_t keep,
                       int mode, int threads) {
  int failed = 0;
  const int64_t row_bytes = (n + 7) / 8 * ((mode == MODE_MEAN_NONZERO || mode == MODE_MEAN_RAW) ? 2 : 1);
#pragma omp parallel num_threads(threads) reduction(| : failed)
  {
    uint32_t *work = (uint32_t *)malloc(sizeof(uint32_t) * (7 * (size_t)n + 32));
    if (!work) failed = 1;
#pragma omp for schedule(dynamic, 16)
    for (int64_t r = 0; r < rows; ++r) {
      if (!work) continue;
      const int64_t base = (r / C) * sN + (r % C) * sC;
      row_forward_any(x + base, out ? out + base : NULL, code ? code + base : NULL,
                      bits ? bits + r * row_bytes : NULL, ss, n, keep, mode, work);
    }
    free(work);
  }
  return failed;
}

/* One row of the backward: TOPK, COMPLEMENT out = g where bit 0, else 0; mean modes gm =
 * tree_sum(g where bit 1) / keep, out = (bit 1 ? 0 : g) + gm where bit 0, else 0. */
ALWAYS_INLINE void row_backward(const float *restrict gr, const uint8_t *restrict b0,
                                const uint8_t *restrict b1, float *restrict orow, const int64_t ss,
                                int64_t n, int64_t keep, float *restrict buf) {
  /* (loops over whole bytes of the masks, eight positions each, then the rest: they vectorise) */
  const int64_t whole = n / 8 * 8;
  if (!b1) {
    for (int64_t q = 0; q < whole; q += 8) {
      const uint32_t *m0 = lut_mask[b0[q >> 3]];
      for (int j = 0; j < 8; ++j) orow[(q + j) * ss] = bits_float(float_bits(gr[(q + j) * ss]) & m0[j]);
    }
    for (int64_t i = whole; i < n; ++i)
      orow[i * ss] = bits_float(float_bits(gr[i * ss]) & lut_mask[b0[i >> 3]][i & 7]);
    return;
  }
  for (int64_t q = 0; q < whole; q += 8) { /* g where the mean was written, else +0.0 */
    const uint32_t *m1 = lut_mask[b1[q >> 3]];
    for (int j = 0; j < 8; ++j) buf[q + j] = bits_float(float_bits(gr[(q + j) * ss]) & m1[j]);
  }
  for (int64_t i = whole; i < n; ++i) buf[i] = bits_float(float_bits(gr[i * ss]) & lut_mask[b1[i >> 3]][i & 7]);
  const float gm = tree_sum(buf, n) / (float)keep;
  for (int64_t q = 0; q < whole; q += 8) {
    const uint32_t *m0 = lut_mask[b0[q >> 3]], *m1 = lut_mask[b1[q >> 3]];
    for (int j = 0; j < 8; ++j) {
      const float own = bits_float(float_bits(gr[(q + j) * ss]) & ~m1[j]);
      orow[(q + j) * ss] = bits_float(float_bits(own + gm) & m0[j]);
    }
  }
  for (int64_t i = whole; i < n; ++i) {
    const uint32_t m0 = lut_mask[b0[i >> 3]][i & 7], m1 = lut_mask[b1[i >> 3]][i & 7];
    const float own = bits_float(float_bits(gr[i * ss]) & ~m1);
    orow[i * ss] = bits_float(float_bits(own + gm) & m0);
  }
}

static void row_backward_any(const float *gr, const uint8_t *b0, const uint8_t *b1, float *orow,
                             int64_t ss, int64_t n, int64_t keep, float *buf) {
  if (ss == 1) row_backward(gr, b0, b1, orow, 1, n, keep, buf);
  else row_backward(gr, b0, b1, orow, ss, n, keep, buf);
}

/* The backward of every mode, row by row as shapebias_topk_f32, from its `bits`. Returns 0, or 1
 * when a buffer could not be allocated. */
int shapebias_topk_backward_f32(const float *g, const uint8_t *bits, float *out, int64_t rows,
                                int64_t C, int64_t sN, int64_t sC, int64_t ss, int64_t n,
                                int64_t keep, int mode, int threads) {
  int failed = 0;
  const int mean_mode = mode == MODE_MEAN_NONZERO || mode == MODE_MEAN_RAW;
  const int64_t nb = (n + 7) / 8, row_bytes = nb * (mean_mode ? 2 : 1);
#pragma omp parallel num_threads(threads) reduction(| : failed)
  {
    float *buf = (float *)malloc(sizeof(float) * (2 * (size_t)n + 16));
    if (!buf) failed = 1;
#pragma omp for schedule(dynamic, 16)
    for (int64_t r = 0; r < rows; ++r) {
      if (!buf) continue;
      const int64_t base = (r / C) * sN + (r % C) * sC;
      const uint8_t *b0 = bits + r * row_bytes;
      row_backward_any(g + base, b0, mean_mode ? b0 + nb : NULL, out + base, ss, n, keep, buf);
    }
    free(buf);
  }
  return failed;
}
