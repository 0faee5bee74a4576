/* Spatial Top-K of shapebias.sparsity for float32 CPU tensors (loaded by shapebias._topk_kernel).
 *
 * A row is the H*W positions of one (sample, channel); its elements are `ss` floats apart.
 * Keys are unsigned integers whose order is the order of |x| (abs) or of x (raw), so the select
 * works on bits. Per row:
 *   1. the keys, in one pass;
 *   2. the bin (value of the top byte) holding the keep-th largest key: guessed from a sample of
 *      the keys and checked by one counting pass, which also collects the bin's members; where
 *      the guess is wrong (twice), a histogram of every key's top byte finds it;
 *   3. the keep-th largest key itself (the threshold), exactly, by a radix select among the bin's
 *      members, unless the bin is kept whole;
 *   4. one pass writes the output and the packed bits of each position; ties at the threshold go
 *      to the lowest index;
 *   5. mean modes: the tree sum of the kept values, and the mean where it goes.
 * The bits, one plane each, one bit per position (lowest position in bit 0 of a byte): plane 0 =
 * kept (or, in COMPLEMENT mode, dropped); plane 1 (mean modes only) = the position receives the
 * row's mean. They are what the backward reads. The mean modes sum in the fixed order of tree_sum
 * below, which the Python definition (shapebias.sparsity.tree_sum) restates. */

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif
#if defined(__linux__)
#include <sys/mman.h>
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

#if defined(__SSE2__)
/* The lanes of positions 4 q .. 4 q + 3 of a mask byte: all ones where the bit is set. */
ALWAYS_INLINE __m128i byte_lanes(uint8_t byte, int q) {
  return _mm_loadu_si128((const __m128i *)lut_mask[byte] + q);
}
#endif

/* Ask Linux to back a fresh output of `bytes` with transparent huge pages (where the system
 * allows them on request: /sys/kernel/mm/transparent_hugepage/enabled = madvise or always). A
 * fresh tensor of tens of MB is a new anonymous mapping: written in 4 KiB pages it costs one page
 * fault per page, more than the kernel's own work; in 2 MiB pages, one per 512. Only the whole
 * 2 MiB pages inside the buffer are advised; nothing else changes, and a refusal is harmless. */
static void advise_huge_pages(void *p, size_t bytes) {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  const uintptr_t huge = (uintptr_t)1 << 21;
  if (!p || bytes < 2 * huge) return;
  const uintptr_t lo = ((uintptr_t)p + huge - 1) & ~(huge - 1);
  const uintptr_t hi = ((uintptr_t)p + bytes) & ~(huge - 1);
  if (hi > lo) (void)madvise((void *)lo, hi - lo, MADV_HUGEPAGE);
#else
  (void)p;
  (void)bytes;
#endif
}

/* The indices i (ascending) with u[i] >> 24 == b into idx (n + 8 words); returns how many, and
 * sets *above to how many keys have a greater top byte. Where `next` is not NULL, the n floats
 * from next on (the next row) are fetched into the cache on the way, so that its first pass finds
 * them there rather than waiting for memory. */
static int64_t collect_bin(const uint32_t *u, int64_t n, uint32_t b, int32_t *idx, int64_t *above,
                           const float *next) {
  int64_t m = 0, i = 0, greater = 0;
  (void)next; /* used by the SSE2 loop only */
#if defined(__SSE2__)
  const __m128i vb = _mm_set1_epi32((int)b);
  __m128i acc = _mm_setzero_si128(); /* minus the count of greater bytes, per lane */
  for (; i + 16 <= n; i += 16) {
    if (next) __builtin_prefetch(next + i); /* one 64-byte line per 16 floats */
    __m128i e[4];
    for (int q = 0; q < 4; ++q) {
      const __m128i top = _mm_srli_epi32(_mm_loadu_si128((const __m128i *)(u + i + 4 * q)), 24);
      e[q] = _mm_cmpeq_epi32(top, vb);
      acc = _mm_add_epi32(acc, _mm_cmpgt_epi32(top, vb));
    }
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
  int32_t lanes[4];
  _mm_storeu_si128((__m128i *)lanes, acc);
  greater = -((int64_t)lanes[0] + lanes[1] + lanes[2] + lanes[3]);
#endif
  for (; i < n; ++i) {
    idx[m] = (int32_t)i;
    m += (u[i] >> 24) == b;
    greater += (u[i] >> 24) > b;
  }
  *above = greater;
  return m;
}

/* Rows of at least this many positions guess the threshold's bin from a sample of SAMPLE keys. */
#define SAMPLE_ROW 1024
#define SAMPLE 256

/* The bin (top byte) b holding the keep-th largest of the n keys u, by a guess checked by
 * counting: the bin of the (keep * SAMPLE / n)-th largest of SAMPLE evenly spaced keys, then, if
 * that bin is wrong, the next bin of the sample on the side where the count says the threshold
 * is. Returns 1 and sets b, `above` (keys above bin b) and m (keys in bin b, their indices in idx)
 * when one of the two guesses is right; returns 0 otherwise. `next` as collect_bin's. */
static int sampled_bin(const uint32_t *u, int64_t n, int64_t keep, int32_t *idx, uint32_t *b_out,
                       int64_t *above_out, int64_t *m_out, const float *next) {
  uint16_t hist[256];
  memset(hist, 0, sizeof(hist));
  const int64_t step = n / SAMPLE;
  uint32_t top = 0;
  for (int64_t j = 0; j < SAMPLE; ++j) {
    const uint32_t v = u[j * step] >> 24;
    hist[v]++;
    top = v > top ? v : top;
  }
  const int64_t rank = (keep * SAMPLE + n / 2) / n;
  int64_t count = 0;
  uint32_t b = top;
  for (; b > 0; --b) {
    count += hist[b];
    if (count >= rank) break;
  }
  for (int attempt = 0; attempt < 2; ++attempt) {
    int64_t above;
    const int64_t m = collect_bin(u, n, b, idx, &above, attempt == 0 ? next : NULL);
    if (above < keep && keep <= above + m) {
      *b_out = b;
      *above_out = above;
      *m_out = m;
      return 1;
    }
    if (above >= keep) { /* the threshold is in a higher bin */
      if (b == 255) return 0;
      for (++b; b < top && !hist[b];) ++b;
    } else {
      if (b == 0) return 0;
      do --b;
      while (b > 0 && !hist[b]);
    }
  }
  return 0;
}

/* Exact `remaining`-th largest (1 <= remaining <= m) of the few keys src[0..m) by counting, for
 * each, the keys above it and equal to it (m * m comparisons). Sets the threshold `t`, how many
 * elements equal to it are kept (`need`) and how many equal it (`equal`). */
static void small_select(const uint32_t *src, int64_t m, int64_t remaining, uint32_t *t_out,
                         int64_t *need_out, int64_t *equal_out) {
  for (int64_t i = 0; i < m; ++i) {
    const uint32_t v = src[i];
    int64_t above = 0, equal = 0;
    for (int64_t j = 0; j < m; ++j) {
      above += src[j] > v;
      equal += src[j] == v;
    }
    if (above < remaining && remaining <= above + equal) {
      *t_out = v;
      *need_out = remaining - above;
      *equal_out = equal;
      return;
    }
  }
}

/* Candidates at most this many are selected by small_select rather than by another digit. */
#define SMALL_SELECT 24

/* Exact `remaining`-th largest (1 <= remaining <= m) of the m keys u[idx[0..m)], whose top bytes
 * are all `top`, by an MSD radix select over the other three 8-bit digits, down to a few
 * candidates, which small_select finishes. The keys are gathered into keys[0..m) (in idx order)
 * on the way; buf_a and buf_b hold m words each. Sets t, need, equal as small_select. */
static void radix_select(const uint32_t *u, const int32_t *idx, int64_t m, int64_t remaining,
                         uint32_t top, uint32_t *keys, uint32_t *buf_a, uint32_t *buf_b,
                         uint32_t *t_out, int64_t *need_out, int64_t *equal_out) {
  uint32_t hist[256];
  uint32_t prefix = top << 24;
  const uint32_t *src = keys;
  memset(hist, 0, sizeof(hist));
  for (int64_t j = 0; j < m; ++j) { /* the gather and the first digit's histogram */
    const uint32_t v = u[idx[j]];
    keys[j] = v;
    hist[(v >> 16) & 0xffu]++;
  }
  for (int d = 1; d < 4; ++d) {
    const int s = 24 - 8 * d;
    if (m <= SMALL_SELECT) {
      small_select(src, m, remaining, t_out, need_out, equal_out);
      return;
    }
    if (d > 1) {
      memset(hist, 0, sizeof(hist));
      for (int64_t i = 0; i < m; ++i) hist[(src[i] >> s) & 0xffu]++;
    }
    /* the digit b of the remaining-th largest, counting from the nearer end */
    int b;
    int64_t above = 0;
    if (2 * remaining <= m) {
      for (b = 255; b > 0; --b) {
        if (above + hist[b] >= remaining) break;
        above += hist[b];
      }
    } else {
      int64_t below = 0;
      for (b = 0; b < 255; ++b) {
        if (below + hist[b] > m - remaining) break;
        below += hist[b];
      }
      above = m - below - hist[b];
    }
    remaining -= above;
    prefix |= ((uint32_t)b) << s;
    if (d == 3) {
      *equal_out = hist[b]; /* the last digit: every element of bin b equals the threshold */
      break;
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

/* The fixed summation order of the mean modes: n values padded with +0.0 to the next power of
 * two P, then halved P -> P/2 -> ... -> 1 by adding the upper half to the lower half elementwise.
 * tree_halvings does the halvings after the first: buf[0..len), len a power of two, to buf[0].
 * Three at a time while the length allows it: the same additions in the same order, with an
 * eighth of the stores. */
static float tree_halvings(float *buf, int64_t len) {
  for (; len >= 64; len >>= 3) { /* len -> len / 8 */
    const int64_t e = len >> 3;
    float *restrict a = buf;
    const float *restrict c = buf + e;
    for (int64_t j = 0; j < e; ++j) {
      const float l0 = a[j] + c[j + 3 * e], l1 = c[j] + c[j + 4 * e]; /* len / 2 */
      const float l2 = c[j + e] + c[j + 5 * e], l3 = c[j + 2 * e] + c[j + 6 * e];
      a[j] = (l0 + l2) + (l1 + l3); /* len / 4, then len / 8 */
    }
  }
  for (; len > 1; len >>= 1) {
    const int64_t half = len >> 1;
    float *restrict lo = buf;
    const float *restrict hi = buf + half;
    for (int64_t j = 0; j < half; ++j) lo[j] = lo[j] + hi[j];
  }
  return buf[0];
}

/* Half the next power of two P >= n (n >= 2): the length after the first halving. */
ALWAYS_INLINE int64_t tree_half(int64_t n) {
  int64_t p = 1;
  while (p < n) p <<= 1;
  return p >> 1;
}

/* The tree sum of the n values v[0], v[ss], ...: the first halving reads v and writes buf (P/2 <
 * n floats; the padding is added as +0.0, not skipped, since -0.0 + +0.0 is +0.0). */
static float tree_sum(const float *v, int64_t ss, int64_t n, float *buf) {
  if (n == 1) return v[0];
  const int64_t h = tree_half(n);
  for (int64_t j = 0; j < n - h; ++j) buf[j] = v[j * ss] + v[(j + h) * ss];
  for (int64_t j = n - h; j < h; ++j) buf[j] = v[j * ss] + 0.0f;
  return tree_halvings(buf, h);
}

/* The output and the bit planes of positions [i, i + cnt) of a row (cnt <= 8, i a multiple of 8),
 * one position at a time: a key passes when above t, or equal to it unless `strict`; out = x where
 * passed (kept, or dropped when `flip`), else +0.0 (mean modes: x where kept, for the sum). */
ALWAYS_INLINE void codes_scalar(const float *restrict xr, float *restrict orow,
                                const uint32_t *restrict u, const int64_t ss, int64_t i, int cnt,
                                uint32_t t, const int strict, uint32_t flip, int mode,
                                uint8_t *restrict p0, uint8_t *restrict p1) {
  unsigned b0 = 0, b1 = 0;
  for (int j = 0; j < cnt; ++j) {
    const uint32_t xb = float_bits(xr[(i + j) * ss]);
    const uint32_t pass = (strict ? u[i + j] > t : u[i + j] >= t) ^ flip;
    b0 |= pass << j;
    b1 |= (mode == MODE_MEAN_RAW ? pass : pass & ((xb << 1) != 0)) << j;
    if (orow) orow[(i + j) * ss] = bits_float(xb & -pass);
  }
  p0[i >> 3] = (uint8_t)b0;
  if (p1) p1[i >> 3] = (uint8_t)b1;
}

/* codes_scalar for a whole row, eight positions (one byte of each plane) a step; SSE2 where the
 * row is contiguous. p1 is NULL outside the mean modes. */
ALWAYS_INLINE void write_codes(const float *restrict xr, float *restrict orow,
                               const uint32_t *restrict u, const int64_t ss, int64_t n, uint32_t t,
                               const int strict, uint32_t flip, int mode, uint8_t *restrict p0,
                               uint8_t *restrict p1) {
  int64_t i = 0;
#if defined(__SSE2__)
  if (ss == 1) {
    /* unsigned compares as signed ones of the keys with the top bit flipped */
    const __m128i bias = _mm_set1_epi32((int)0x80000000u);
    const __m128i tv = _mm_xor_si128(_mm_set1_epi32((int)t), bias);
    const __m128i fv = _mm_set1_epi32(-(int)flip);
    const __m128i zero = _mm_setzero_si128();
    for (; i + 8 <= n; i += 8) {
      int byte0 = 0, byte1 = 0;
      for (int q = 0; q < 2; ++q) {
        const __m128i uv = _mm_xor_si128(_mm_loadu_si128((const __m128i *)(u + i + 4 * q)), bias);
        const __m128i above = strict ? _mm_cmpgt_epi32(uv, tv)
                                     : _mm_xor_si128(_mm_cmpgt_epi32(tv, uv), _mm_set1_epi32(-1));
        const __m128i pass = _mm_xor_si128(above, fv);
        const __m128i xv = _mm_loadu_si128((const __m128i *)(xr + i + 4 * q));
        if (orow) _mm_storeu_si128((__m128i *)(orow + i + 4 * q), _mm_and_si128(xv, pass));
        byte0 |= _mm_movemask_ps(_mm_castsi128_ps(pass)) << (4 * q);
        if (p1) {
          const __m128i gets =
              mode == MODE_MEAN_RAW
                  ? pass
                  : _mm_andnot_si128(_mm_cmpeq_epi32(_mm_slli_epi32(xv, 1), zero), pass);
          byte1 |= _mm_movemask_ps(_mm_castsi128_ps(gets)) << (4 * q);
        }
      }
      p0[i >> 3] = (uint8_t)byte0;
      if (p1) p1[i >> 3] = (uint8_t)byte1;
    }
  }
#endif
  for (; i < n; i += 8)
    codes_scalar(xr, orow, u, ss, i, n - i < 8 ? (int)(n - i) : 8, t, strict, flip, mode, p0, p1);
}

/* One row of shapebias_topk_f32 (see there); work holds 6 n + 16 words; `next` is the next row
 * of a unit-stride x (or NULL), to be fetched into the cache (collect_bin). */
ALWAYS_INLINE void row_forward(const float *restrict xr, float *restrict orow, uint8_t *restrict cr,
                               uint8_t *restrict bits, const int64_t ss, int64_t n, int64_t keep,
                               int mode, uint32_t *work, const float *next) {
  const int raw = mode == MODE_MEAN_RAW;
  const int mean_mode = mode == MODE_MEAN_NONZERO || mode == MODE_MEAN_RAW;
  const uint32_t flip = mode == MODE_COMPLEMENT;
  const int64_t nb = (n + 7) / 8;
  uint32_t *restrict u = work;
  uint32_t *restrict ck = work + n;                   /* 3 n words: ck, then the select's two */
  int32_t *restrict idx = (int32_t *)(work + 4 * n);  /* n + 8 words */
  float *restrict tbuf = (float *)(work + 5 * n + 8); /* n words */
  uint8_t *restrict p0 = bits, *restrict p1 = mean_mode ? bits + nb : NULL;
  for (int64_t i = 0; i < n; ++i) {
    const uint32_t v = float_bits(xr[i * ss]);
    u[i] = raw ? key_raw(v) : key_abs(v);
  }
  /* 1. the bin b (top byte) holding the keep-th largest key, `above` keys above it and m in it
   *    (their indices in idx when `collected`): guessed from a sample and checked by counting
   *    (long rows), else by the full histogram of the top byte (four interleaved ones, so that
   *    runs of equal bytes do not serialise on one counter) */
  uint32_t b = 0;
  int64_t above = 0, m = n; /* keep == n: every key kept */
  int collected = 0;
  if (keep < n && n >= SAMPLE_ROW) collected = sampled_bin(u, n, keep, idx, &b, &above, &m, next);
  if (keep < n && !collected) {
    uint32_t h4[4][256];
    memset(h4, 0, sizeof(h4));
    int64_t i4 = 0;
    for (; i4 + 4 <= n; i4 += 4)
      for (int j = 0; j < 4; ++j) h4[j][u[i4 + j] >> 24]++;
    for (; i4 < n; ++i4) h4[0][u[i4] >> 24]++;
    above = 0;
    for (b = 255; b > 0; --b) {
      const int64_t c = (int64_t)h4[0][b] + h4[1][b] + h4[2][b] + h4[3][b];
      if (above + c >= keep) break;
      above += c;
    }
    m = (int64_t)h4[0][b] + h4[1][b] + h4[2][b] + h4[3][b];
  }
  const int64_t remaining = keep - above; /* how many of bin b are kept */
  /* 2. the threshold t: found among bin b's members, unless bin b is kept whole */
  uint32_t t = b << 24;
  int64_t need = 0, equal = 0;
  if (remaining != m) {
    if (!collected) {
      int64_t unused;
      m = collect_bin(u, n, b, idx, &unused, NULL);
    }
    radix_select(u, idx, m, remaining, b, ck, ck + n, ck + 2 * n, &t, &need, &equal);
  } else {
    m = 0; /* no select: no ties to resolve */
  }
  /* 3. one pass: keys above t are kept, and those equal to it unless some of them are dropped;
   *    those ties are then kept by index, lowest first */
  const int ties = need != equal;
  if (ties) write_codes(xr, orow, u, ss, n, t, 1, flip, mode, p0, p1);
  else write_codes(xr, orow, u, ss, n, t, 0, flip, mode, p0, p1);
  for (int64_t j = 0; ties && j < m && need > 0; ++j) {
    if (ck[j] != t) continue;
    --need;
    const int64_t i = idx[j];
    const uint8_t bit = (uint8_t)(1u << (i & 7));
    const float xi = xr[i * ss];
    if (flip) p0[i >> 3] &= (uint8_t)~bit; /* a kept tie is not passed in COMPLEMENT mode */
    else p0[i >> 3] |= bit;
    if (p1 && (raw || (float_bits(xi) << 1) != 0)) p1[i >> 3] |= bit;
    if (orow) orow[i * ss] = flip ? 0.0f : xi;
  }
  if (cr)
    for (int64_t i = 0; i < n; ++i)
      cr[i * ss] = (uint8_t)((p0[i >> 3] >> (i & 7) & 1) | (p1 ? (p1[i >> 3] >> (i & 7) & 1) << 1 : 0));
  if (!mean_mode || !orow) return;
  /* 4. mean modes: out holds x where kept, +0.0 elsewhere: its tree sum / keep is the mean, which
   *    then replaces out where plane 1 is set */
  const float mean = tree_sum(orow, ss, n, tbuf) / (float)keep;
  const uint32_t mean_bits = float_bits(mean);
  int64_t i = 0;
#if defined(__SSE2__)
  if (ss == 1) {
    const __m128i mv = _mm_set1_epi32((int)mean_bits);
    for (; i + 8 <= n; i += 8)
      for (int q = 0; q < 2; ++q) {
        const __m128i m1 = byte_lanes(p1[i >> 3], q);
        __m128i *o = (__m128i *)(orow + i + 4 * q);
        _mm_storeu_si128(o, _mm_or_si128(_mm_and_si128(m1, mv), _mm_andnot_si128(m1, _mm_loadu_si128(o))));
      }
  }
#endif
  for (; i < n; ++i) {
    const uint32_t m1 = lut_mask[p1[i >> 3]][i & 7];
    orow[i * ss] = bits_float((mean_bits & m1) | (float_bits(orow[i * ss]) & ~m1));
  }
}

static void row_forward_any(const float *xr, float *orow, uint8_t *cr, uint8_t *bits, int64_t ss,
                            int64_t n, int64_t keep, int mode, uint32_t *work, const float *next) {
  /* one copy per mode and for unit stride, so that the loops specialise and vectorise */
#define ROW_FORWARD(MODE)                                                      \
  if (ss == 1) row_forward(xr, orow, cr, bits, 1, n, keep, MODE, work, next); \
  else row_forward(xr, orow, cr, bits, ss, n, keep, MODE, work, NULL);
  switch (mode) {
    case MODE_TOPK: ROW_FORWARD(MODE_TOPK) break;
    case MODE_COMPLEMENT: ROW_FORWARD(MODE_COMPLEMENT) break;
    case MODE_MEAN_NONZERO: ROW_FORWARD(MODE_MEAN_NONZERO) break;
    default: ROW_FORWARD(MODE_MEAN_RAW) break;
  }
#undef ROW_FORWARD
}

/* How many floats a tensor of `rows` rows laid out as in shapebias_topk_f32 spans from its first
 * element to its last. */
static size_t extent(int64_t rows, int64_t C, int64_t sN, int64_t sC, int64_t ss, int64_t n) {
  if (rows <= 0 || n <= 0) return 0;
  return (size_t)((rows / C - 1) * sN + (C - 1) * sC + (n - 1) * ss + 1);
}

/* Where the bits of a row go when the caller wants none (a mask-only call): after the work. */
#define WORK_WORDS(n) (6 * (size_t)(n) + 16 + ((size_t)(n) + 7) / 8 * 2 / 4 + 2)

/* For each of the `rows` (n, c) rows (row r starts at (r / C) * sN + (r % C) * sC; its n positions
 * are `ss` elements apart, in x, out and code alike) select the keep largest keys and write out,
 * code and bits (each skipped when NULL). Modes: TOPK out = x * kept; COMPLEMENT out = x * dropped;
 * MEAN_NONZERO (|x| ranking) out = mean where kept and x != 0, else x where kept, else 0; MEAN_RAW
 * (x ranking) out = mean where kept, else 0; mean = tree_sum(kept x) / keep. `code` gets plane 0
 * in bit 0 and plane 1 in bit 1. `bits` holds, per row, (n + 7) / 8 bytes of plane 0, then in the
 * mean modes as many of plane 1. When `huge_pages`, huge pages are requested for `out`
 * (advise_huge_pages). Returns 0, or 1 when a buffer could not be allocated. */
int shapebias_topk_f32(const float *x, float *out, uint8_t *code, uint8_t *bits, int64_t rows,
                       int64_t C, int64_t sN, int64_t sC, int64_t ss, int64_t n, int64_t keep,
                       int mode, int threads, int huge_pages) {
  int failed = 0;
  const int64_t row_bytes = (n + 7) / 8 * ((mode == MODE_MEAN_NONZERO || mode == MODE_MEAN_RAW) ? 2 : 1);
  if (out && huge_pages) advise_huge_pages(out, sizeof(float) * extent(rows, C, sN, sC, ss, n));
#pragma omp parallel num_threads(threads) reduction(| : failed)
  {
    uint32_t *work = (uint32_t *)malloc(sizeof(uint32_t) * WORK_WORDS(n));
    if (!work) failed = 1;
#pragma omp for schedule(dynamic, 16)
    for (int64_t r = 0; r < rows; ++r) {
      if (!work) continue;
      const int64_t base = (r / C) * sN + (r % C) * sC;
      uint8_t *row_bits = bits ? bits + r * row_bytes : (uint8_t *)(work + 6 * n + 16);
      const float *next = r + 1 < rows ? x + ((r + 1) / C) * sN + ((r + 1) % C) * sC : NULL;
      row_forward_any(x + base, out ? out + base : NULL, code ? code + base : NULL, row_bits, ss,
                      n, keep, mode, work, next);
    }
    free(work);
  }
  return failed;
}

/* v where bit i of the mask is set, else +0.0 */
ALWAYS_INLINE float masked(float v, const uint8_t *mask, int64_t i) {
  return bits_float(float_bits(v) & lut_mask[mask[i >> 3]][i & 7]);
}

/* One row of the backward: TOPK, COMPLEMENT out = g where plane 0, else 0; mean modes gm =
 * tree_sum(g where plane 1) / keep, out = (plane 1 ? 0 : g) + gm where plane 0, else 0. The mean
 * modes' last pass fetches `next` (the next row of a unit-stride g, or NULL) into the cache, as
 * the forward does: their first pass reads it. */
ALWAYS_INLINE void row_backward(const float *restrict gr, const uint8_t *restrict b0,
                                const uint8_t *restrict b1, float *restrict orow, const int64_t ss,
                                int64_t n, int64_t keep, float *restrict buf, const float *next) {
  int64_t i = 0;
  (void)next; /* used by an SSE2 loop only */
  if (!b1) {
#if defined(__SSE2__)
    if (ss == 1)
      for (; i + 8 <= n; i += 8)
        for (int q = 0; q < 2; ++q) {
          const __m128i g = _mm_loadu_si128((const __m128i *)(gr + i + 4 * q));
          _mm_storeu_si128((__m128i *)(orow + i + 4 * q), _mm_and_si128(g, byte_lanes(b0[i >> 3], q)));
        }
#endif
    for (; i < n; ++i) orow[i * ss] = bits_float(float_bits(gr[i * ss]) & lut_mask[b0[i >> 3]][i & 7]);
    return;
  }
  /* gm: the tree sum of g where the mean was written (else +0.0), the first halving straight
   *     from g (as tree_sum) */
  float gm = masked(gr[0], b1, 0) / (float)keep;
  if (n > 1) {
    const int64_t h = tree_half(n);
    int64_t j = 0;
#if defined(__SSE2__)
    if (ss == 1 && h % 8 == 0) /* positions j and j + h share their place in a mask byte */
      for (; j + 8 <= n - h; j += 8)
        for (int q = 0; q < 2; ++q) {
          const __m128i lo = _mm_and_si128(_mm_loadu_si128((const __m128i *)(gr + j + 4 * q)), byte_lanes(b1[j >> 3], q));
          const __m128i hi =
              _mm_and_si128(_mm_loadu_si128((const __m128i *)(gr + j + h + 4 * q)), byte_lanes(b1[(j + h) >> 3], q));
          _mm_storeu_ps(buf + j + 4 * q, _mm_add_ps(_mm_castsi128_ps(lo), _mm_castsi128_ps(hi)));
        }
#endif
    for (; j < n - h; ++j) buf[j] = masked(gr[j * ss], b1, j) + masked(gr[(j + h) * ss], b1, j + h);
    for (; j < h && (j & 7); ++j) buf[j] = masked(gr[j * ss], b1, j) + 0.0f;
#if defined(__SSE2__)
    if (ss == 1)
      for (; j + 8 <= h; j += 8)
        for (int q = 0; q < 2; ++q) {
          const __m128i lo = _mm_and_si128(_mm_loadu_si128((const __m128i *)(gr + j + 4 * q)), byte_lanes(b1[j >> 3], q));
          _mm_storeu_ps(buf + j + 4 * q, _mm_add_ps(_mm_castsi128_ps(lo), _mm_setzero_ps()));
        }
#endif
    for (; j < h; ++j) buf[j] = masked(gr[j * ss], b1, j) + 0.0f;
    gm = tree_halvings(buf, h) / (float)keep;
  }
#if defined(__SSE2__)
  if (ss == 1) {
    const __m128 gmv = _mm_set1_ps(gm);
    for (; i + 8 <= n; i += 8) {
      if (next && !(i & 15)) __builtin_prefetch(next + i);
      for (int q = 0; q < 2; ++q) {
        const __m128i g = _mm_loadu_si128((const __m128i *)(gr + i + 4 * q));
        const __m128 own = _mm_castsi128_ps(_mm_andnot_si128(byte_lanes(b1[i >> 3], q), g));
        const __m128i sum = _mm_castps_si128(_mm_add_ps(own, gmv));
        _mm_storeu_si128((__m128i *)(orow + i + 4 * q), _mm_and_si128(sum, byte_lanes(b0[i >> 3], q)));
      }
    }
  }
#endif
  for (; i < n; ++i) {
    const uint32_t m0 = lut_mask[b0[i >> 3]][i & 7], m1 = lut_mask[b1[i >> 3]][i & 7];
    const float own = bits_float(float_bits(gr[i * ss]) & ~m1);
    orow[i * ss] = bits_float(float_bits(own + gm) & m0);
  }
}

static void row_backward_any(const float *gr, const uint8_t *b0, const uint8_t *b1, float *orow,
                             int64_t ss, int64_t n, int64_t keep, float *buf, const float *next) {
  if (ss == 1) row_backward(gr, b0, b1, orow, 1, n, keep, buf, next);
  else row_backward(gr, b0, b1, orow, ss, n, keep, buf, NULL);
}

/* The backward of every mode, row by row as shapebias_topk_f32, from its `bits` (and its
 * `huge_pages` for `out`). Returns 0, or 1 when a buffer could not be allocated. */
int shapebias_topk_backward_f32(const float *g, const uint8_t *bits, float *out, int64_t rows,
                                int64_t C, int64_t sN, int64_t sC, int64_t ss, int64_t n,
                                int64_t keep, int mode, int threads, int huge_pages) {
  int failed = 0;
  const int mean_mode = mode == MODE_MEAN_NONZERO || mode == MODE_MEAN_RAW;
  const int64_t nb = (n + 7) / 8, row_bytes = nb * (mean_mode ? 2 : 1);
  if (huge_pages) advise_huge_pages(out, sizeof(float) * extent(rows, C, sN, sC, ss, n));
#pragma omp parallel num_threads(threads) reduction(| : failed)
  {
    float *buf = mean_mode ? (float *)malloc(sizeof(float) * ((size_t)n + 16)) : NULL;
    if (mean_mode && !buf) failed = 1;
#pragma omp for schedule(dynamic, 16)
    for (int64_t r = 0; r < rows; ++r) {
      if (mean_mode && !buf) continue;
      const int64_t base = (r / C) * sN + (r % C) * sC;
      const uint8_t *b0 = bits + r * row_bytes;
      const float *next = r + 1 < rows ? g + ((r + 1) / C) * sN + ((r + 1) % C) * sC : NULL;
      row_backward_any(g + base, b0, mean_mode ? b0 + nb : NULL, out + base, ss, n, keep, buf, next);
    }
    free(buf);
  }
  return failed;
}
