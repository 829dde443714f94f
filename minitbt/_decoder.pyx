# cython: boundscheck=False, wraparound=False, cdivision=True, language_level=3
"""The compiled decoder: a thin wrapper around minitbt/_decoder.h.

Do not build a Decoder directly: minitbt.packed.compiled.compile_model walks a packed model and
gives this class a plain description of it (dicts of numbers and NumPy arrays, the names of the
C struct fields). Every array is kept alive here for as long as the Decoder lives.
"""
cimport numpy as cnp
from libc.stdint cimport int8_t, int32_t, uint8_t, uint64_t
from libc.stdlib cimport calloc, free

import numpy as np

cnp.import_array()

cdef extern from "_decoder.h" nogil:
    ctypedef struct tbt_quant:
        int kind, is_signed, bits, qp, centre, shift_min
        float a, b, clip
    ctypedef struct tbt_norm:
        const float *g
        const float *b
        float eps
    ctypedef struct tbt_linear:
        int K, N, kernel
        tbt_norm in_norm
        tbt_quant in_ "in"
        const float *w
        const uint8_t *sa_idx
        const uint8_t *w_i2
        int Kp2
        const int8_t *w_i8
        int Kp8
        const int32_t *w_sum
        const uint64_t *wb
        int pb, op, act, pa
        const int32_t *coef
        const int32_t *row_coef
        int32_t bias_k
        const float *w_scale
        const float *w_offset
        const float *codes_sum
        int has_offset
        const float *bias
    ctypedef struct tbt_attn:
        tbt_linear q, k, v, o
        tbt_quant qq, kq, vq, pq
    ctypedef struct tbt_layer:
        tbt_attn self_attn
        tbt_norm self_norm
        tbt_attn cross_attn
        tbt_norm cross_norm
        tbt_linear fc1, fc2
        tbt_norm ffn_norm
    ctypedef struct tbt_model:
        int d, H, V, max_len, n_enc, n_dec, pre_ln, act, d_ff_max, pad, bos, eos
        const int8_t *emb_codes
        const float *emb_scale
        const float *emb_offset
        const float *emb_float
        float emb_mul
        const float *pos
        tbt_norm enc_emb_norm, dec_emb_norm, enc_final, dec_final
        const float *head_w
        const float *head_b
        const float *copy_w
        float copy_b
        tbt_layer *enc
        tbt_layer *dec
    ctypedef struct tbt_state:
        float *logits
    int TBT_T_N
    const char *tbt_part_names[]
    double tbt_prof[]
    void tbt_profile(int on)
    int tbt_greedy(const tbt_model *mdl, const int32_t *src, int S, int max_len, int min_len, int32_t *out)
    int tbt_beam(const tbt_model *mdl, const int32_t *src, int S, int k, int max_len, int min_len,
                 double alpha, int32_t *out)
    int tbt_state_new(const tbt_model *mdl, int S, int R, int T, tbt_state *st)
    void tbt_state_free(tbt_state *st)
    int tbt_encode(const tbt_model *mdl, const int32_t *src, tbt_state *st)
    int tbt_decode_step(const tbt_model *mdl, const int32_t *tokens, int R, int t, tbt_state *st)

cdef class Decoder:
    """A packed model in C structs. ``spec``: see minitbt.packed.compiled.describe."""
    cdef tbt_model m
    cdef list keep                         # the arrays the structs point into
    cdef readonly int vocab_size, max_len

    def __cinit__(self):
        self.m.enc = NULL
        self.m.dec = NULL

    def __dealloc__(self):
        free(self.m.enc)
        free(self.m.dec)

    def __init__(self, dict spec):
        self.keep = []
        m = spec["model"]
        self.m.d, self.m.H, self.m.V, self.m.max_len = m["d"], m["H"], m["V"], m["max_len"]
        self.m.n_enc, self.m.n_dec, self.m.pre_ln, self.m.act = m["n_enc"], m["n_dec"], m["pre_ln"], m["act"]
        self.m.d_ff_max, self.m.pad, self.m.bos, self.m.eos = m["d_ff_max"], m["pad"], m["bos"], m["eos"]
        self.m.emb_mul = m["emb_mul"]
        self.m.emb_codes = <const int8_t *>self._ptr(m.get("emb_codes"), np.int8)
        self.m.emb_scale = <const float *>self._ptr(m.get("emb_scale"), np.float32)
        self.m.emb_offset = <const float *>self._ptr(m.get("emb_offset"), np.float32)
        self.m.emb_float = <const float *>self._ptr(m.get("emb_float"), np.float32)
        self.m.pos = <const float *>self._ptr(m["pos"], np.float32)
        self.m.head_w = <const float *>self._ptr(m["head_w"], np.float32)
        self.m.head_b = <const float *>self._ptr(m.get("head_b"), np.float32)
        self.m.copy_w = <const float *>self._ptr(m.get("copy_w"), np.float32)
        self.m.copy_b = m.get("copy_b", 0.0)
        self._norm(&self.m.enc_emb_norm, m.get("enc_emb_norm"))
        self._norm(&self.m.dec_emb_norm, m.get("dec_emb_norm"))
        self._norm(&self.m.enc_final, m.get("enc_final"))
        self._norm(&self.m.dec_final, m.get("dec_final"))
        self.m.enc = <tbt_layer *>calloc(max(1, len(spec["encoder"])), sizeof(tbt_layer))
        self.m.dec = <tbt_layer *>calloc(max(1, len(spec["decoder"])), sizeof(tbt_layer))
        if self.m.enc == NULL or self.m.dec == NULL:
            raise MemoryError("minitbt._decoder: no memory for the layers")
        for i, layer in enumerate(spec["encoder"]):
            self._layer(&self.m.enc[i], layer)
        for i, layer in enumerate(spec["decoder"]):
            self._layer(&self.m.dec[i], layer)
        self.vocab_size, self.max_len = self.m.V, self.m.max_len

    cdef const void *_ptr(self, a, dtype) except? NULL:
        if a is None:
            return NULL
        arr = np.ascontiguousarray(a, dtype=dtype)
        self.keep.append(arr)
        return cnp.PyArray_DATA(arr)

    cdef void _norm(self, tbt_norm *n, spec):
        if spec is None:
            n.g = NULL
            n.b = NULL
            n.eps = 0
            return
        n.g = <const float *>self._ptr(spec["g"], np.float32)
        n.b = <const float *>self._ptr(spec["b"], np.float32)
        n.eps = spec["eps"]

    cdef void _quant(self, tbt_quant *q, spec):
        q.kind = 0 if spec is None else spec["kind"]
        if spec is None:
            return
        q.is_signed, q.bits, q.qp = spec["is_signed"], spec["bits"], spec["qp"]
        q.centre, q.shift_min = spec["centre"], spec["shift_min"]
        q.a, q.b, q.clip = spec["a"], spec["b"], spec["clip"]

    cdef void _linear(self, tbt_linear *L, dict s):
        L.K, L.N, L.kernel = s["K"], s["N"], s["kernel"]
        self._norm(&L.in_norm, s.get("in_norm"))
        self._quant(&L.in_, s.get("quant"))
        L.w = <const float *>self._ptr(s.get("w"), np.float32)
        L.sa_idx = <const uint8_t *>self._ptr(s.get("sa_idx"), np.uint8)
        L.w_i2 = <const uint8_t *>self._ptr(s.get("w_i2"), np.uint8)
        L.w_i8 = <const int8_t *>self._ptr(s.get("w_i8"), np.int8)
        L.w_sum = <const int32_t *>self._ptr(s.get("w_sum"), np.int32)
        L.wb = <const uint64_t *>self._ptr(s.get("wb"), np.uint64)
        L.coef = <const int32_t *>self._ptr(s.get("coef"), np.int32)
        L.row_coef = <const int32_t *>self._ptr(s.get("row_coef"), np.int32)
        L.w_scale = <const float *>self._ptr(s.get("w_scale"), np.float32)
        L.w_offset = <const float *>self._ptr(s.get("w_offset"), np.float32)
        L.codes_sum = <const float *>self._ptr(s.get("codes_sum"), np.float32)
        L.bias = <const float *>self._ptr(s.get("bias"), np.float32)
        L.Kp2, L.Kp8 = s.get("Kp2", 0), s.get("Kp8", 0)
        L.pb, L.op, L.act, L.pa = s.get("pb", 0), s.get("op", 0), s.get("act", 0), s.get("pa", 0)
        L.bias_k, L.has_offset = s.get("bias_k", 0), s.get("has_offset", 0)

    cdef void _attn(self, tbt_attn *A, dict s):
        self._linear(&A.q, s["q"])
        self._linear(&A.k, s["k"])
        self._linear(&A.v, s["v"])
        self._linear(&A.o, s["o"])
        self._quant(&A.qq, s.get("qq"))
        self._quant(&A.kq, s.get("kq"))
        self._quant(&A.vq, s.get("vq"))
        self._quant(&A.pq, s.get("pq"))

    cdef void _layer(self, tbt_layer *L, dict s):
        self._attn(&L.self_attn, s["self_attn"])
        self._norm(&L.self_norm, s["self_norm"])
        if "cross_attn" in s:
            self._attn(&L.cross_attn, s["cross_attn"])
            self._norm(&L.cross_norm, s["cross_norm"])
        self._linear(&L.fc1, s["fc1"])
        self._linear(&L.fc2, s["fc2"])
        self._norm(&L.ffn_norm, s["ffn_norm"])

    def greedy(self, src, int max_len, int min_len=0):
        """Token ids (without <bos>/<eos>) of the greedy output for one source (1-D ids)."""
        return self._search(src, 0, max_len, min_len, 1.0)

    def beam(self, src, int k, int max_len, int min_len=0, double alpha=1.0):
        """Token ids of the best beam-search hypothesis for one source (1-D ids)."""
        return self._search(src, k, max_len, min_len, alpha)

    def _search(self, src, int k, int max_len, int min_len, double alpha):
        """tbt_greedy (k = 0) or tbt_beam with k beams."""
        s = np.ascontiguousarray(src, dtype=np.int32)
        max_len = min(max_len, self.max_len)
        out = np.zeros(max(1, max_len), dtype=np.int32)
        cdef const int32_t *sp = <const int32_t *>cnp.PyArray_DATA(s)
        cdef int32_t *op = <int32_t *>cnp.PyArray_DATA(out)
        cdef int S = s.shape[0], n
        with nogil:
            if k == 0:
                n = tbt_greedy(&self.m, sp, S, max_len, min_len, op)
            else:
                n = tbt_beam(&self.m, sp, S, k, max_len, min_len, alpha, op)
        if n < 0:
            raise MemoryError("minitbt._decoder: no memory for the decoding state")
        return out[:n].tolist()

    def profile(self, bint on):
        """Start (on, the timers reset) or stop the decoder's timers (tbt_mark in _decoder.h)."""
        tbt_profile(on)

    def profile_result(self):
        """{part: seconds} since profile(True) (wall time of each region, one thread)."""
        return {tbt_part_names[i].decode(): tbt_prof[i] for i in range(TBT_T_N)}

    def step_logits(self, src, tokens):
        """Logits (T, V) of each decoder step fed ``tokens`` (1-D, starting with <bos>) one at a
        time with the cache: the teacher-forced outputs, for comparing with the NumPy model."""
        s = np.ascontiguousarray(src, dtype=np.int32)
        t = np.ascontiguousarray(tokens, dtype=np.int32)
        cdef int T = t.shape[0]
        if T > self.max_len:
            raise ValueError(f"{T} tokens exceed max_len {self.max_len}")
        out = np.empty((T, self.vocab_size), dtype=np.float32)
        cdef tbt_state st
        cdef const int32_t *sp = <const int32_t *>cnp.PyArray_DATA(s)
        cdef const int32_t *tp = <const int32_t *>cnp.PyArray_DATA(t)
        cdef float *o = <float *>cnp.PyArray_DATA(out)
        cdef int i, j, rc, V = self.vocab_size
        if tbt_state_new(&self.m, s.shape[0], 1, max(T, 1), &st) != 0:
            raise MemoryError("minitbt._decoder: no memory for the decoding state")
        with nogil:
            rc = tbt_encode(&self.m, sp, &st)
            i = 0
            while rc == 0 and i < T:
                rc = tbt_decode_step(&self.m, tp + i, 1, i, &st)
                j = 0
                while j < V:
                    o[<size_t>i * V + j] = st.logits[j]
                    j += 1
                i += 1
        tbt_state_free(&st)
        if rc != 0:
            raise MemoryError("minitbt._decoder: no memory for a work buffer")
        return out

