/*
 * minitbt/_popcount_avx2.h -- the AVX2 path of the popcount GEMMs (included by _popcount.h).
 *
 * The tile of _popcount.h (2 activation rows x 4 weight rows), counted 256 bits at a time by
 * nibble look-up (Mula's method): split every byte into its low and high nibble, look both up
 * in a 16-entry table of popcounts with vpshufb, and add the two byte counts,
 *     popc(x) = sum over bytes of  T[x & 0x0f] + T[x >> 4],   T[i] = popcount of i (0..4).
 * Byte counters hold at most 8 per vector, so they are folded into int32 (vpsadbw) every
 * 31 vectors (31 * 8 = 248 < 256).
 *
 * The activation rows are split into nibbles once per call (tbt_avx2_prepare: per 32-byte
 * vector a lo vector then a hi vector), and a tile's 4 weight rows once per panel (below), so
 * the tile only XORs / ANDs nibbles:
 * (a op b) & 0x0f == (a & 0x0f) op (b & 0x0f) for op in {and, xor}. (Splitting all the weights
 * once per call was measured: no gain at M >= 16, a loss at M = 1.) The words past the
 * last whole vector (W mod 4) go through the scalar tile, inlined here
 * (so its popcount is the popcnt instruction).
 */
#ifndef MINITBT_POPCOUNT_AVX2_H
#define MINITBT_POPCOUNT_AVX2_H
#if TBT_X86_SIMD

#define TBT_CHUNK 31      /* vectors per byte-counter fold */

/* bytes of nibbles per activation row: 2 vectors per whole 256-bit vector of the row */
static inline size_t tbt_avx2_prep_bytes(int W) { return (size_t)(W / 4) * 2 * 32; }

/* Split rows x W words into nibbles: per row, vector v becomes dst[2v] = lo, dst[2v+1] = hi. */
TBT_AVX2 static void tbt_avx2_prepare(const uint64_t *src, size_t rows, int W, void *dst)
{
    const __m256i m4 = _mm256_set1_epi8(0x0f);
    const int V = W / 4;
    __m256i *out = (__m256i *)dst;
    for (size_t r = 0; r < rows; r++)
        for (int v = 0; v < V; v++, out += 2) {
            const __m256i x = _mm256_loadu_si256((const __m256i *)(src + r * W + 4 * v));
            out[0] = _mm256_and_si256(x, m4);
            out[1] = _mm256_and_si256(_mm256_srli_epi16(x, 4), m4);
        }
}

/* op(a, b) for op in {AND, XOR} */
TBT_AVX2 static TBT_ALWAYS_INLINE __m256i tbt_op_avx2(int op, __m256i a, __m256i b)
{
    return op == TBT_XOR ? _mm256_xor_si256(a, b) : _mm256_and_si256(a, b);
}

/* four byte-counter vectors -> their four totals as int32, in one __m128i */
TBT_AVX2 static TBT_ALWAYS_INLINE __m128i tbt_reduce4_avx2(const __m256i c[4])
{
    const __m256i z = _mm256_setzero_si256();
    const __m256i s0 = _mm256_sad_epu8(c[0], z), s1 = _mm256_sad_epu8(c[1], z);  /* 4 x u64 */
    const __m256i s2 = _mm256_sad_epu8(c[2], z), s3 = _mm256_sad_epu8(c[3], z);
    const __m256i x = _mm256_or_si256(s0, _mm256_slli_epi64(s1, 32));   /* (s0, s1) pairs */
    const __m256i y = _mm256_or_si256(s2, _mm256_slli_epi64(s3, 32));   /* (s2, s3) pairs */
    const __m256i t = _mm256_add_epi32(_mm256_unpacklo_epi64(x, y), _mm256_unpackhi_epi64(x, y));
    return _mm_add_epi32(_mm256_castsi256_si128(t), _mm256_extracti128_si256(t, 1));
}

/* o[0..3] = (first ? init : o[0..3]) + r */
TBT_AVX2 static TBT_ALWAYS_INLINE void tbt_put4_avx2(int32_t *o, int32_t init, int first,
                                                     __m128i r)
{
    const __m128i prev = first ? _mm_set1_epi32(init) : _mm_loadu_si128((const __m128i *)o);
    _mm_storeu_si128((__m128i *)o, _mm_add_epi32(prev, r));
}

/* The tile over vectors [v0, v0 + n), n <= 31: as0, as1 the nibbles of the two activation
 * rows (from v0 on); weight row j either split here from b[j] (split = 1) or already split,
 * ws[j] (split = 0). out_i[j] (+)= coef * popc(op(a_i, b_j)) over them. */
TBT_AVX2 static TBT_ALWAYS_INLINE void tbt_tile_avx2(int op, int split, const __m256i *as0,
                                                     const __m256i *as1,
                                                     const uint64_t *const b[TBT_NR],
                                                     const __m256i ws[TBT_NR][2 * TBT_CHUNK],
                                                     int v0, int n, int32_t coef, tbt_dst d)
{
    const __m256i lut = _mm256_setr_epi8(0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4,
                                         0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4);
    const __m256i m4 = _mm256_set1_epi8(0x0f);
    __m256i c0[TBT_NR], c1[TBT_NR];              /* byte counters of rows 0 and 1 */
    for (int j = 0; j < TBT_NR; j++) c0[j] = c1[j] = _mm256_setzero_si256();
    for (ptrdiff_t v = 0; v < n; v++) {
        /* loaded once into registers (GCC folded each into its 4 uses: 16 loads a step) */
        const __m256i a0l = tbt_in_register_avx2(as0[2 * v]);
        const __m256i a0h = tbt_in_register_avx2(as0[2 * v + 1]);
        const __m256i a1l = tbt_in_register_avx2(as1[2 * v]);
        const __m256i a1h = tbt_in_register_avx2(as1[2 * v + 1]);
        for (int j = 0; j < TBT_NR; j++) {
            __m256i yl, yh;                      /* loaded once, for both rows */
            if (split) {
                const __m256i y = tbt_in_register_avx2(
                    _mm256_loadu_si256((const __m256i *)(b[j] + 4 * (v0 + v))));
                yl = _mm256_and_si256(y, m4);
                yh = _mm256_and_si256(_mm256_srli_epi16(y, 4), m4);
            } else {
                yl = tbt_in_register_avx2(ws[j][2 * v]);
                yh = tbt_in_register_avx2(ws[j][2 * v + 1]);
            }
            c0[j] = _mm256_add_epi8(c0[j], _mm256_add_epi8(
                _mm256_shuffle_epi8(lut, tbt_op_avx2(op, a0l, yl)),
                _mm256_shuffle_epi8(lut, tbt_op_avx2(op, a0h, yh))));
            c1[j] = _mm256_add_epi8(c1[j], _mm256_add_epi8(
                _mm256_shuffle_epi8(lut, tbt_op_avx2(op, a1l, yl)),
                _mm256_shuffle_epi8(lut, tbt_op_avx2(op, a1h, yh))));
        }
    }
    const __m128i k = _mm_set1_epi32(coef);
    tbt_put4_avx2(d.o0, d.init0, d.first, _mm_mullo_epi32(tbt_reduce4_avx2(c0), k));
    tbt_put4_avx2(d.o1, d.init1, d.first, _mm_mullo_epi32(tbt_reduce4_avx2(c1), k));
}

/* The panel of _popcount.h, AVX2: whole vectors by nibble look-up, 31 at a time (a chunk),
 * the W mod 4 words past them by the scalar tile. in.prep holds the rows' nibbles
 * (tbt_avx2_prepare). With more than one row pair, the 4 weight rows are split into nibbles
 * once per chunk, into ws (8 KB, stays in L1), for all the row pairs: split in the tile, they
 * cost 12 of the 60 vector instructions of a step, for every row pair (split once: 5-15 %
 * faster at M >= 16). With one row pair (M <= 2) they are split in the tile. */
TBT_AVX2 static TBT_NOINLINE void tbt_panel_avx2(int op, tbt_panel_in in,
                                                 const uint64_t *const b[TBT_NR], int32_t coef,
                                                 int first, int32_t *o, size_t ld,
                                                 int32_t *spare, int32_t bias,
                                                 const int32_t *row_bias)
{
    const int V = in.W / 4;
    const int split = in.rows <= TBT_MR;
    __m256i ws[TBT_NR][2 * TBT_CHUNK];           /* the weight rows' nibbles, one chunk */
    for (int v0 = 0; v0 < V; v0 += TBT_CHUNK) {
        const int n = V - v0 < TBT_CHUNK ? V - v0 : TBT_CHUNK;
        if (!split)
            for (int j = 0; j < TBT_NR; j++) tbt_avx2_prepare(b[j] + 4 * v0, 1, 4 * n, ws[j]);
        for (int r = 0; r < in.rows; r += TBT_MR) {
            const tbt_dst d = tbt_panel_dst(r, in.rows, first && v0 == 0, o, ld, spare, bias,
                                            row_bias);
            const __m256i *s0 = (const __m256i *)in.prep + (size_t)r * 2 * V + 2 * v0;
            const __m256i *s1 = r + 1 < in.rows ? s0 + 2 * V : (const __m256i *)in.zero + 2 * v0;
            if (split && op == TBT_XOR) tbt_tile_avx2(TBT_XOR, 1, s0, s1, b, ws, v0, n, coef, d);
            else if (split)             tbt_tile_avx2(TBT_AND, 1, s0, s1, b, ws, v0, n, coef, d);
            else if (op == TBT_XOR)     tbt_tile_avx2(TBT_XOR, 0, s0, s1, b, ws, v0, n, coef, d);
            else                        tbt_tile_avx2(TBT_AND, 0, s0, s1, b, ws, v0, n, coef, d);
        }
    }
    if (4 * V < in.W)                            /* the words past the last whole vector */
        for (int r = 0; r < in.rows; r += TBT_MR) {
            const tbt_dst d = tbt_panel_dst(r, in.rows, first && V == 0, o, ld, spare, bias,
                                            row_bias);
            const uint64_t *a0 = in.a + (size_t)r * in.W;
            const uint64_t *a1 = r + 1 < in.rows ? a0 + in.W : in.zero;
            if (op == TBT_XOR) tbt_tile_scalar(TBT_XOR, a0, a1, b, 4 * V, in.W, coef, d);
            else               tbt_tile_scalar(TBT_AND, a0, a1, b, 4 * V, in.W, coef, d);
        }
}

#endif /* TBT_X86_SIMD */
#endif /* MINITBT_POPCOUNT_AVX2_H */
