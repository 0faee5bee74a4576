/* Spatial Top-K of shapebias.sparsity for float32 CPU tensors (loaded by shapebias._topk_kernel).
 *
 * A row is the H*W positions of one (sample, channel); its elements are `ss` floats apart.
 * Per row: an exact radix select of the keep-th largest key, then one pass that writes the output
 * and a byte per position. Keys are unsigned integers whose order is the order of |x| (ABS) or of
 * x (RAW), so the select works on bits. Ties at the threshold go to the lowest index.
 * The byte (`code`): bit 0 = kept (or, in COMPLEMENT mode, dropped); bit 1 = the position receives
 * the row's mean (mean modes only). The mean modes sum in the fixed order of tree_sum below,
 * which the Python definition (shapebias.sparsity.tree_sum) restates. */

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

enum { MODE_TOPK = 0, MODE_COMPLEMENT = 1, MODE_MEAN_NONZERO = 2, MODE_MEAN_RAW = 3 };

static inline uint32_t key_abs(uint32_t bits) { return bits << 1; } /* drops the sign bit */

static inline uint32_t key_raw(uint32_t bits) {
  if (bits == 0x80000000u) bits = 0; /* -0.0 ranks as +0.0 */
  return (bits & 0x80000000u) ? ~bits : (bits | 0x80000000u);
}

/* Keys of a row into u[0..n) and the histogram of their top byte (four interleaved histograms,
 * so that runs of equal bytes do not serialise on one counter). */
static void load_keys(const float *xr, int64_t ss, int64_t n, int raw, uint32_t *u, int64_t *hist) {
  uint32_t h4[4][256];
  memset(h4, 0, sizeof(h4));
  int64_t i = 0;
  for (; i + 4 <= n; i += 4) {
    for (int j = 0; j < 4; ++j) {
      uint32_t v;
      memcpy(&v, xr + (i + j) * ss, 4);
      v = raw ? key_raw(v) : key_abs(v);
      u[i + j] = v;
      h4[j][v >> 24]++;
    }
  }
  for (; i < n; ++i) {
    uint32_t v;
    memcpy(&v, xr + i * ss, 4);
    v = raw ? key_raw(v) : key_abs(v);
    u[i] = v;
    h4[0][v >> 24]++;
  }
  for (int b = 0; b < 256; ++b) hist[b] = (int64_t)h4[0][b] + h4[1][b] + h4[2][b] + h4[3][b];
}

/* Exact keep-th largest of u[0..n) by an MSD radix select over four 8-bit digits. Sets the
 * threshold `t` and how many elements equal to it are kept (`need`; every other kept element is
 * greater) and how many equal it (`equal`). hist holds the top byte's histogram on entry. */
static void radix_select(const uint32_t *u, int64_t n, int64_t keep, uint32_t *buf_a,
                         uint32_t *buf_b, int64_t *hist, uint32_t *t_out, int64_t *need_out,
                         int64_t *equal_out) {
  const uint32_t *src = u;
  int64_t m = n, remaining = keep;
  uint32_t prefix = 0;
  for (int d = 0; d < 4; ++d) {
    const int s = 24 - 8 * d;
    if (d > 0) {
      memset(hist, 0, 256 * sizeof(int64_t));
      for (int64_t i = 0; i < m; ++i) hist[(src[i] >> s) & 0xffu]++;
    }
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

/* The fixed summation order of the mean modes: the n values (those with `bit` set in code,
 * +0.0 elsewhere) padded with +0.0 to the next power of two P, then halved P -> P/2 -> ... -> 1
 * by adding the upper half to the lower half elementwise. buf holds at least P/2 floats. */
static float tree_sum(const float *v, int64_t ss, const uint8_t *code, int64_t cs, int64_t n,
                      uint8_t bit, float *buf) {
  int64_t p = 1;
  while (p < n) p <<= 1;
  if (p == 1) return (code[0] & bit) ? v[0] + 0.0f : 0.0f;
  const int64_t half = p >> 1;
  int64_t i = 0;
  for (; i + half < n; ++i) {
    const float a = (code[i * cs] & bit) ? v[i * ss] : 0.0f;
    const float b = (code[(i + half) * cs] & bit) ? v[(i + half) * ss] : 0.0f;
    buf[i] = a + b;
  }
  for (; i < half; ++i) buf[i] = ((code[i * cs] & bit) ? v[i * ss] : 0.0f) + 0.0f;
  for (int64_t len = half; len > 1; len >>= 1) {
    const int64_t h = len >> 1;
    for (int64_t j = 0; j < h; ++j) buf[j] = buf[j] + buf[j + h];
  }
  return buf[0];
}

/* For each of the `rows` (n, c) rows (row r starts at (r / C) * sN + (r % C) * sC; its n positions
 * are `ss` elements apart, in x, out and code alike) select the keep largest keys and write code
 * and out (skipped when out is NULL). Modes: TOPK out = x * kept; COMPLEMENT out = x * dropped;
 * MEAN_NONZERO (|x| ranking) out = mean where kept and x != 0, else x * kept; MEAN_RAW (x ranking)
 * out = mean where kept, else x * 0; mean = tree_sum(kept x) / keep. Returns 0, or 1 when a
 * buffer could not be allocated. */
int shapebias_topk_f32(const float *x, float *out, uint8_t *code, int64_t rows, int64_t C,
                       int64_t sN, int64_t sC, int64_t ss, int64_t n, int64_t keep, int mode,
                       int threads) {
  int failed = 0;
  const int raw = mode == MODE_MEAN_RAW;
  const int mean_mode = mode == MODE_MEAN_NONZERO || mode == MODE_MEAN_RAW;
  const uint8_t flip = (uint8_t)(mode == MODE_COMPLEMENT);
#pragma omp parallel num_threads(threads) reduction(| : failed)
  {
    uint32_t *u = (uint32_t *)malloc(sizeof(uint32_t) * 4 * (size_t)n + 64);
    if (!u) failed = 1;
#pragma omp for schedule(dynamic, 16)
    for (int64_t r = 0; r < rows; ++r) {
      if (!u) continue;
      const int64_t base = (r / C) * sN + (r % C) * sC;
      const float *xr = x + base;
      uint8_t *cr = code + base;
      int64_t hist[256];
      load_keys(xr, ss, n, raw, u, hist);
      uint32_t t = 0;
      int64_t need = n, equal = n;
      if (keep < n) radix_select(u, n, keep, u + n, u + 2 * n, hist, &t, &need, &equal);
      if (need == equal && ss == 1) { /* no tie to break (the usual case): a plain compare */
        for (int64_t i = 0; i < n; ++i) cr[i] = (uint8_t)(u[i] >= t) ^ flip;
      } else {
        for (int64_t i = 0; i < n; ++i) {
          const uint32_t v = u[i];
          const int tie = (v == t) & (need > 0);
          need -= tie;
          cr[i * ss] = (uint8_t)((v > t) | tie) ^ flip;
        }
      }
      if (mean_mode) {
        for (int64_t i = 0; i < n; ++i) { /* bit 1: the position receives the mean */
          const uint8_t kept = cr[i * ss];
          const uint8_t gets = raw ? kept : (uint8_t)(kept & (xr[i * ss] != 0.0f));
          cr[i * ss] = (uint8_t)(kept | (gets << 1));
        }
      }
      if (!out) continue;
      float *orow = out + base;
      if (!mean_mode) {
        for (int64_t i = 0; i < n; ++i) orow[i * ss] = xr[i * ss] * (float)cr[i * ss];
        continue;
      }
      const float mean = tree_sum(xr, ss, cr, ss, n, 1, (float *)(u + 2 * n)) / (float)keep;
      for (int64_t i = 0; i < n; ++i) {
        const uint8_t c = cr[i * ss];
        orow[i * ss] = (c & 2) ? mean : xr[i * ss] * (float)(c & 1);
      }
    }
    free(u);
  }
  return failed;
}

/* out = g * pass over `numel` elements of dense tensors with identical strides (the backward of
 * TOPK and COMPLEMENT). */
void shapebias_mask_mul_f32(const float *g, const uint8_t *pass, float *out, int64_t numel,
                            int threads) {
#pragma omp parallel for num_threads(threads) schedule(static)
  for (int64_t i = 0; i < numel; ++i) out[i] = g[i] * (float)pass[i];
}

/* The backward of the mean modes, row by row as shapebias_topk_f32: gm = tree_sum(g where bit 1)
 * / keep; out = (bit 1 ? 0 : g) + gm where bit 0, else 0. Returns 0, or 1 when a buffer could not
 * be allocated. */
int shapebias_topk_mean_backward_f32(const float *g, const uint8_t *code, float *out, int64_t rows,
                                     int64_t C, int64_t sN, int64_t sC, int64_t ss, int64_t n,
                                     int64_t keep, int threads) {
  int failed = 0;
#pragma omp parallel num_threads(threads) reduction(| : failed)
  {
    float *buf = (float *)malloc(sizeof(float) * (size_t)n + 64);
    if (!buf) failed = 1;
#pragma omp for schedule(dynamic, 16)
    for (int64_t r = 0; r < rows; ++r) {
      if (!buf) continue;
      const int64_t base = (r / C) * sN + (r % C) * sC;
      const float *gr = g + base;
      const uint8_t *cr = code + base;
      float *orow = out + base;
      const float gm = tree_sum(gr, ss, cr, ss, n, 2, buf) / (float)keep;
      for (int64_t i = 0; i < n; ++i) {
        const uint8_t c = cr[i * ss];
        const float own = (c & 2) ? 0.0f : gr[i * ss];
        orow[i * ss] = (c & 1) ? own + gm : 0.0f;
      }
    }
    free(buf);
  }
  return failed;
}
